"""The entry's device: kept while the entry follows it, stale ones removed, never the live one."""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.esp_ota.const import DOMAIN

from .conftest import SimDevice, make_entry, setup_entry, wait_for_event_stream

STALE_MAC = "24:0a:c4:00:00:99"


async def test_removing_the_entry_removes_its_device(
    hass: HomeAssistant, sim_device: SimDevice, device_registry: dr.DeviceRegistry
) -> None:
    """The device goes with its entry."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    await wait_for_event_stream(sim_device)
    device = device_registry.async_get_device_by_identifier(
        (DOMAIN, sim_device.mac), entry.entry_id
    )
    assert device is not None
    assert await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert device_registry.async_get(device.id) is None


async def test_stale_devices_of_the_entry_are_removed_at_setup(
    hass: HomeAssistant, sim_device: SimDevice, device_registry: dr.DeviceRegistry
) -> None:
    """A device of the entry that is not its ESP32 is cleaned up; the ESP32 stays."""
    entry = make_entry(sim_device)
    entry.add_to_hass(hass)
    stale = device_registry.async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={(DOMAIN, STALE_MAC)},
        connections={(dr.CONNECTION_NETWORK_MAC, STALE_MAC)},
        name="old garden",
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await wait_for_event_stream(sim_device)
    assert device_registry.async_get(stale.id) is None
    devices = dr.async_entries_for_config_entry(device_registry, entry.entry_id)
    assert [device.identifiers for device in devices] == [{(DOMAIN, sim_device.mac)}]


async def test_user_may_remove_a_stale_device_but_not_the_live_one(
    hass: HomeAssistant,
    sim_device: SimDevice,
    device_registry: dr.DeviceRegistry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """The device page's delete button: refused for the ESP32, allowed for a stale device."""
    assert await async_setup_component(hass, "config", {})
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    await wait_for_event_stream(sim_device)
    live = device_registry.async_get_device_by_identifier((DOMAIN, sim_device.mac), entry.entry_id)
    assert live is not None
    stale = device_registry.async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, STALE_MAC)}, name="old garden"
    )
    client = await hass_ws_client(hass)

    await client.send_json({"id": 1, "type": "config/device_registry/remove", "device_id": live.id})
    response = await client.receive_json()
    assert response["success"] is False
    assert "rejected by integration" in response["error"]["message"]
    assert device_registry.async_get(live.id) is not None

    await client.send_json(
        {"id": 2, "type": "config/device_registry/remove", "device_id": stale.id}
    )
    response = await client.receive_json()
    assert response["success"] is True
    assert device_registry.async_get(stale.id) is None
    assert device_registry.async_get(live.id) is not None
