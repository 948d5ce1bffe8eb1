"""Entities against a simulated device and a real feed: states, push, polling, availability."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from unittest.mock import patch

import pytest
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import snapshot_platform
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from custom_components.esp_ota.espota.image_builder import build_app_image
from simulator.model import OtaRequest
from tests.simulator.firmware_server import FirmwareServer, start_firmware_server

from .conftest import (
    CHIP,
    PROJECT,
    FeedServer,
    SimDevice,
    make_entry,
    setup_entry,
    wait_for_event_stream,
)

FIRMWARE = "update.garden_34_56_firmware"
FIRMWARE_BETA = "update.garden_34_56_firmware_beta_channel"
OTA_STATE = "sensor.garden_34_56_update_state"
OTA_PROGRESS = "sensor.garden_34_56_update_progress"
LAST_RESULT = "sensor.garden_34_56_last_update_result"
IMAGE_STATE = "sensor.garden_34_56_image_state"
RUNNING_PARTITION = "sensor.garden_34_56_running_partition"


@pytest.fixture
async def firmware_server(socket_enabled: None) -> AsyncIterator[FirmwareServer]:
    """An HTTPS firmware server (the device pulls from it)."""
    server = await start_firmware_server()
    yield server
    await server.close()


async def test_update_offered_from_the_feed(
    hass: HomeAssistant,
    sim_device: SimDevice,
    feed_server: FeedServer,
    entity_registry: er.EntityRegistry,
) -> None:
    """Stable offers 1.1.0; the beta entity, disabled by default, offers 1.2.0b1."""
    entry = make_entry(sim_device, feed_url=feed_server.url)
    await setup_entry(hass, entry)
    state = hass.states.get(FIRMWARE)
    assert state is not None
    assert state.state == STATE_ON
    assert state.attributes["installed_version"] == "1.0.0"
    assert state.attributes["latest_version"] == "1.1.0"
    assert state.attributes["release_summary"] == "Garden 1.1.0"
    assert state.attributes["release_url"] == "https://example.com/garden/1.1.0"
    assert state.attributes["in_progress"] is False

    beta = entity_registry.async_get(FIRMWARE_BETA)
    assert beta is not None
    assert beta.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    entity_registry.async_update_entity(FIRMWARE_BETA, disabled_by=None)
    await wait_for_event_stream(sim_device)  # not reloading mid-handshake
    await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    beta_state = hass.states.get(FIRMWARE_BETA)
    assert beta_state is not None
    assert beta_state.attributes["latest_version"] == "1.2.0b1"


async def test_release_notes(
    hass: HomeAssistant, sim_device: SimDevice, feed_server: FeedServer, hass_ws_client: object
) -> None:
    """The release notes are markdown with the summary, date and link."""
    entry = make_entry(sim_device, feed_url=feed_server.url)
    await setup_entry(hass, entry)
    client = await hass_ws_client(hass)  # type: ignore[operator]
    await client.send_json({"id": 1, "type": "update/release_notes", "entity_id": FIRMWARE})
    result = await client.receive_json()
    assert result["success"] is True
    assert result["result"] == (
        "**garden 1.1.0** for esp32c3\n\nGarden 1.1.0\n\nPublished 2026-11-20.\n\n"
        "[Release notes](https://example.com/garden/1.1.0)"
    )


async def test_no_feed_shows_the_firmware_only(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """Without a feed the device works: its firmware is shown, nothing is offered."""
    await setup_entry(hass, make_entry(sim_device))
    state = hass.states.get(FIRMWARE)
    assert state is not None
    assert state.state == STATE_OFF
    assert state.attributes["latest_version"] == state.attributes["installed_version"] == "1.0.0"
    assert state.attributes["release_summary"] is None


async def test_feed_without_a_fitting_release(
    hass: HomeAssistant, sim_device: SimDevice, feed_server: FeedServer
) -> None:
    """Releases for other chips or projects are never offered."""
    feed_server.body = feed_server.body.replace(CHIP.encode(), b"esp32s3")
    await setup_entry(hass, make_entry(sim_device, feed_url=feed_server.url))
    state = hass.states.get(FIRMWARE)
    assert state is not None
    assert state.state == STATE_OFF
    assert state.attributes["release_url"] is None


async def test_progress_is_pushed_and_the_new_firmware_shows(
    hass: HomeAssistant, sim_device: SimDevice, firmware_server: FirmwareServer
) -> None:
    """The device's events move the sensors; after its reboot the new version shows."""
    await setup_entry(hass, make_entry(sim_device))
    sim_device.device.faults.slow_link_bytes_per_s = 256 * 1024
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=192 * 1024)
    await sim_device.device.start_ota(
        OtaRequest(
            url=firmware_server.add("/fw.bin", image),
            sha256=hashlib.sha256(image).hexdigest(),
            size=len(image),
            version="1.1.0",
            cert_pem=firmware_server.cert_pem,
        )
    )
    seen_states: set[str] = set()
    progress: list[float] = []
    async with asyncio.timeout(20):
        while True:
            await asyncio.sleep(0.05)
            await hass.async_block_till_done()
            state = hass.states.get(OTA_STATE)
            assert state is not None
            seen_states.add(state.state)
            percentage = hass.states.get(OTA_PROGRESS)
            assert percentage is not None
            if percentage.state not in ("unknown", "unavailable"):
                progress.append(float(percentage.state))
            installed = hass.states.get(FIRMWARE)
            assert installed is not None
            if installed.attributes.get("installed_version") == "1.1.0":
                break
    assert "downloading" in seen_states
    assert progress == sorted(progress)
    assert 0 < progress[0] < 100
    assert progress[-1] == 100
    image_state = hass.states.get(IMAGE_STATE)
    assert image_state is not None
    assert image_state.state == "pending_verify"
    partition = hass.states.get(RUNNING_PARTITION)
    assert partition is not None
    assert partition.state == "ota_1"
    result = hass.states.get(LAST_RESULT)
    assert result is not None
    assert result.state == "succeeded"


async def test_availability_by_polling_logged_once(
    hass: HomeAssistant, sim_device: SimDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """A device that goes away is unavailable (logged once) and comes back (logged once)."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    coordinator = entry.runtime_data.device
    caplog.set_level(logging.INFO)
    await sim_device.server.go_offline()
    for _ in range(3):
        await coordinator.async_refresh()
        await hass.async_block_till_done()
    state = hass.states.get(FIRMWARE)
    assert state is not None
    assert state.state == STATE_UNAVAILABLE
    went = [r for r in caplog.records if "Cannot reach the device" in r.getMessage()]
    assert len(went) == 1

    await sim_device.server.go_online()
    for _ in range(2):  # the first attempt may meet a connection the pool kept from before
        await coordinator.async_refresh()
        await hass.async_block_till_done()
    state = hass.states.get(FIRMWARE)
    assert state is not None
    assert state.state == STATE_OFF
    back = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(back) == 1


async def test_diagnostics_redact_secrets(
    hass: HomeAssistant,
    sim_device: SimDevice,
    feed_server: FeedServer,
    hass_client: ClientSessionGenerator,
) -> None:
    """Secret, certificate pin and feed key never leave in a diagnostics download."""
    entry = make_entry(sim_device, feed_url=feed_server.url, public_key="")
    await setup_entry(hass, entry)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    text = str(diagnostics)
    assert sim_device.device.config.secret not in text
    assert sim_device.certificate.fingerprint not in text
    assert diagnostics["entry"]["data"]["secret"] == "**REDACTED**"
    assert diagnostics["entry"]["data"]["cert_fingerprint"] == "**REDACTED**"
    assert diagnostics["device"]["version"] == "1.0.0"
    assert diagnostics["feed"]["releases"] == 3
    assert diagnostics["feed"]["requests"] == 1


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize("platform", [Platform.SENSOR, Platform.UPDATE])
@pytest.mark.freeze_time("2026-11-25 12:00:30+00:00")
async def test_entities_snapshot(
    hass: HomeAssistant,
    sim_device: SimDevice,
    *,
    feed_server: FeedServer,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    platform: Platform,
) -> None:
    """Every entity of a device offered 1.1.0, as registered and as its state reads."""
    entry = make_entry(sim_device, feed_url=feed_server.url)
    with patch("custom_components.esp_ota.PLATFORMS", [platform]):
        await setup_entry(hass, entry)
    await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)
