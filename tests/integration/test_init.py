"""Loading the integration against simulated devices: setup, failures, devices, unloading."""

from __future__ import annotations

import json

from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import CONF_MAC
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.loader import async_get_integration
from PIL import Image
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.esp_ota.const import CONF_CERT_FINGERPRINT, CONF_SECRET, DOMAIN
from tests.conftest import REPO_ROOT

from .conftest import SimDevice, make_entry, setup_entry, wait_for_event_stream


async def test_manifest_is_valid_for_a_custom_integration(hass: HomeAssistant) -> None:
    """Home Assistant finds the integration and reads its version from the manifest."""
    integration = await async_get_integration(hass, DOMAIN)
    manifest = json.loads((REPO_ROOT / "custom_components" / DOMAIN / "manifest.json").read_text())
    assert integration.domain == DOMAIN
    assert integration.name == "ESP OTA"
    assert str(integration.version) == manifest["version"]
    assert integration.config_flow is True
    assert manifest["zeroconf"] == ["_esp-ota._tcp.local."]
    assert manifest["dhcp"] == [{"registered_devices": True}]
    # hassfest's order for custom integrations: domain, name, then alphabetical.
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])


def test_brand_icons_have_the_sizes_hacs_and_home_assistant_expect() -> None:
    """brand/icon.png is 256x256 and icon@2x.png 512x512, both with transparency."""
    brand = REPO_ROOT / "custom_components" / DOMAIN / "brand"
    for name, size in (("icon.png", 256), ("icon@2x.png", 512)):
        with Image.open(brand / name) as icon:
            assert icon.size == (size, size)
            assert icon.mode == "RGBA"


def state_of(entry: MockConfigEntry) -> ConfigEntryState:
    """The entry's state, read fresh (mypy would keep an earlier narrowing otherwise)."""
    state: ConfigEntryState = entry.state
    return state


async def test_setup_creates_the_device_and_unloads(
    hass: HomeAssistant, sim_device: SimDevice, device_registry: dr.DeviceRegistry
) -> None:
    """The device is registered by MAC with chip, firmware and address; unload is clean."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    assert state_of(entry) is ConfigEntryState.LOADED
    devices = dr.async_entries_for_config_entry(device_registry, entry.entry_id)
    assert len(devices) == 1
    device = devices[0]
    assert (dr.CONNECTION_NETWORK_MAC, sim_device.mac) in device.connections
    assert (DOMAIN, sim_device.mac) in device.identifiers
    assert device.manufacturer == "Espressif"
    assert device.model == "ESP32-C3"
    assert device.model_id == "garden"
    assert device.sw_version == "1.0.0"
    assert device.hw_version == "v0.4"
    assert device.configuration_url == f"https://127.0.0.1:{sim_device.port}/"

    await wait_for_event_stream(sim_device)  # not unloading mid-handshake
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert state_of(entry) is ConfigEntryState.NOT_LOADED


async def test_device_offline_at_start_is_retried(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """An unreachable device makes the entry wait and retry, not fail."""
    entry = make_entry(sim_device)
    await sim_device.server.go_offline()
    await setup_entry_expecting(hass, entry, ConfigEntryState.SETUP_RETRY)


async def setup_entry_expecting(
    hass: HomeAssistant, entry: MockConfigEntry, expected: ConfigEntryState
) -> None:
    """Add an entry whose setup is expected to end in `expected`."""
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert state_of(entry) is expected


async def test_wrong_secret_starts_reauth(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """A refused secret fails setup and asks the user for the new one."""
    entry = make_entry(sim_device)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_SECRET: "old"})
    await setup_entry_expecting(hass, entry, ConfigEntryState.SETUP_ERROR)
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]


async def test_certificate_change_is_refused_and_reported(
    hass: HomeAssistant, sim_device: SimDevice, issue_registry: ir.IssueRegistry
) -> None:
    """Another certificate at the device's address is never accepted; a repair says so."""
    entry = make_entry(sim_device)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        entry, data={**entry.data, CONF_CERT_FINGERPRINT: "ab" * 32}
    )
    await setup_entry_expecting(hass, entry, ConfigEntryState.SETUP_RETRY)
    issue = issue_registry.async_get_issue(DOMAIN, f"certificate_mismatch_{entry.entry_id}")
    assert issue is not None
    assert issue.translation_placeholders == {"name": entry.title, "host": "127.0.0.1"}
    assert entry.data[CONF_MAC] == sim_device.mac


async def test_removing_a_device_removes_its_repair_issues(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """A removed entry leaves no repair issue behind (its flows would have nothing to fix);
    another entry's issues stay."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    await wait_for_event_stream(sim_device)
    for issue in ("update_rolled_back", "update_not_back", "certificate_mismatch"):
        for entry_id in (entry.entry_id, "another_entry"):
            ir.async_create_issue(
                hass,
                DOMAIN,
                f"{issue}_{entry_id}",
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key=issue,
            )
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    left = {issue_id for domain, issue_id in ir.async_get(hass).issues if domain == DOMAIN}
    assert left == {
        "update_rolled_back_another_entry",
        "update_not_back_another_entry",
        "certificate_mismatch_another_entry",
    }
