"""The device coordinator against a simulated device: pushed events, polling, reauth.

Each update is started on the simulated device itself (as another tool would start it), so
these tests see what the device reports, not what an install in Home Assistant intended.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from homeassistant.config_entries import SOURCE_REAUTH
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.esp_ota.const import DOMAIN
from custom_components.esp_ota.coordinator import EspOtaDeviceCoordinator
from custom_components.esp_ota.espota.image_builder import (
    Defect,
    build_app_image,
    build_broken_image,
)
from custom_components.esp_ota.espota.job_record import UpdateStep
from custom_components.esp_ota.espota.protocol import EventType
from tests.simulator.firmware_server import FirmwareServer, start_firmware_server

from .conftest import (
    CHIP,
    PROJECT,
    SimDevice,
    make_entry,
    setup_entry,
    start_device_update,
    wait_for,
    wait_for_event_stream,
)

FIRMWARE = "update.garden_34_56_firmware"
OTA_STATE = "sensor.garden_34_56_update_state"
LAST_RESULT = "sensor.garden_34_56_last_update_result"
LAST_ERROR = "sensor.garden_34_56_last_update_error"
RESET_REASON = "sensor.garden_34_56_reset_reason"
LAST_BOOT = "sensor.garden_34_56_last_boot"

type Seen = list[tuple[EventType | None, UpdateStep]]


@pytest.fixture
async def firmware_server(socket_enabled: None) -> AsyncIterator[FirmwareServer]:
    """An HTTPS firmware server (the device pulls from it)."""
    server = await start_firmware_server()
    yield server
    await server.close()


async def loaded(hass: HomeAssistant, sim: SimDevice) -> MockConfigEntry:
    """The device's entry, loaded, with its event stream open on the device."""
    entry = make_entry(sim)
    await setup_entry(hass, entry)
    await wait_for_event_stream(sim)
    return entry


def record_phases(coordinator: EspOtaDeviceCoordinator) -> Seen:
    """The (last event, phase) pair at every update the coordinator hands its entities."""
    seen: Seen = []

    def listener() -> None:
        event = coordinator.data.last_event
        seen.append((event.type if event else None, coordinator.data.live.step))

    coordinator.async_add_listener(listener)
    return seen


def state(hass: HomeAssistant, entity_id: str) -> str:
    """An entity's state (it must exist)."""
    current = hass.states.get(entity_id)
    assert current is not None, entity_id
    return current.state


async def test_rollback_after_a_crashing_image_is_reported(
    hass: HomeAssistant, sim_device: SimDevice, firmware_server: FirmwareServer
) -> None:
    """The new image panics before it is confirmed; the bootloader goes back to 1.0.0."""
    entry = await loaded(hass, sim_device)
    coordinator = entry.runtime_data.device
    seen = record_phases(coordinator)
    sim_device.device.faults.crash_on_next_boot = True
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=64 * 1024)
    await start_device_update(sim_device, firmware_server, image)
    await wait_for(lambda: (EventType.REBOOT, UpdateStep.REBOOTING) in seen)
    assert (EventType.UPDATE_BOOT_PARTITION, UpdateStep.VERIFYING) in seen
    await sim_device.device.wait_idle(10)
    await coordinator.async_refresh()  # what the next poll reads
    await hass.async_block_till_done()

    assert coordinator.data.info.last_ota.target_version == "1.1.0"
    assert coordinator.data.info.version == "1.0.0"
    assert state(hass, OTA_STATE) == "rolled_back"
    assert state(hass, LAST_RESULT) == "rolled_back"
    firmware = hass.states.get(FIRMWARE)
    assert firmware is not None
    assert firmware.attributes["installed_version"] == "1.0.0"


async def test_an_image_the_device_rejects_at_the_end_fails(
    hass: HomeAssistant, sim_device: SimDevice, firmware_server: FirmwareServer
) -> None:
    """An image that downloads but fails esp_ota_end: FINISH carries the error."""
    entry = await loaded(hass, sim_device)
    coordinator = entry.runtime_data.device
    seen = record_phases(coordinator)
    image = build_broken_image(
        Defect.BAD_SHA256, project=PROJECT, version="1.1.0", chip=CHIP, size=64 * 1024
    )
    await start_device_update(sim_device, firmware_server, image)
    await wait_for(lambda: any(event is EventType.FINISH for event, _ in seen))
    assert (EventType.FINISH, UpdateStep.FAILED) in seen
    assert coordinator.data.last_event is not None
    error = coordinator.data.last_event.error
    assert error is not None
    assert error.startswith("ESP_ERR_")
    await sim_device.device.wait_idle(10)
    await hass.async_block_till_done()
    assert state(hass, OTA_STATE) == "failed"
    assert state(hass, LAST_RESULT) == "failed"
    assert state(hass, LAST_ERROR) == "download_failed"
    last_error = hass.states.get(LAST_ERROR)
    assert last_error is not None
    assert last_error.attributes["error_code"] == error  # the device's own name for it

    # A failed update stays failed across the device's next restart.
    await sim_device.device.reboot()
    await wait_for(lambda: seen[-1][0] is EventType.REBOOT)
    assert seen[-1] == (EventType.REBOOT, UpdateStep.FAILED)
    await sim_device.device.wait_online(10)
    await coordinator.async_refresh()
    assert coordinator.data.live.step is UpdateStep.FAILED


async def test_a_download_that_breaks_aborts_with_the_device_error(
    hass: HomeAssistant, sim_device: SimDevice, firmware_server: FirmwareServer
) -> None:
    """A corrupted download: the device aborts, and ABORT's error is what the sensor shows."""
    entry = await loaded(hass, sim_device)
    coordinator = entry.runtime_data.device
    seen = record_phases(coordinator)
    sim_device.device.faults.corrupt_at_byte = 1000
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=64 * 1024)
    await start_device_update(sim_device, firmware_server, image)
    await wait_for(lambda: any(event is EventType.ABORT for event, _ in seen))
    assert (EventType.ABORT, UpdateStep.FAILED) in seen
    assert coordinator.data.live.error == "ESP_ERR_OTA_VALIDATE_FAILED"
    await sim_device.device.wait_idle(10)
    await hass.async_block_till_done()
    assert state(hass, LAST_ERROR) == "download_failed"
    last_error = hass.states.get(LAST_ERROR)
    assert last_error is not None
    assert last_error.attributes["error_code"] == "ESP_ERR_OTA_VALIDATE_FAILED"


async def test_a_poll_during_the_download_keeps_the_pushed_progress(
    hass: HomeAssistant, sim_device: SimDevice, firmware_server: FirmwareServer
) -> None:
    """Polling mid-download does not replace the live progress; an abort ends it failed."""
    entry = await loaded(hass, sim_device)
    coordinator = entry.runtime_data.device
    seen = record_phases(coordinator)
    sim_device.device.faults.slow_link_bytes_per_s = 64 * 1024
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=192 * 1024)
    await start_device_update(sim_device, firmware_server, image)
    await wait_for(lambda: coordinator.data.live.bytes_written > 0)
    live = coordinator.data.live
    assert live.step is UpdateStep.DOWNLOADING
    await coordinator.async_refresh()
    assert coordinator.data.live is live
    assert coordinator.data.info.last_ota.state.value == "downloading"

    await sim_device.device.abort_ota()  # someone else stops it
    await wait_for(lambda: any(event is EventType.ABORT for event, _ in seen))
    assert (EventType.ABORT, UpdateStep.FAILED) in seen
    await hass.async_block_till_done()
    assert state(hass, OTA_STATE) == "failed"
    assert state(hass, LAST_ERROR) == "aborted"  # on request: the only end without an error


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_a_restart_is_pushed_and_read_when_the_stream_returns(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """The reboot event shows at once; what the device is like afterwards is read as soon
    as its event stream is back (its event ring starts empty: no event would tell), not
    at the next poll."""
    entry = await loaded(hass, sim_device)
    coordinator = entry.runtime_data.device
    assert state(hass, RESET_REASON) == "esp_rst_poweron"
    booted = state(hass, LAST_BOOT)
    await sim_device.device.reboot()
    await wait_for(lambda: state(hass, OTA_STATE) == "rebooting")
    await sim_device.device.wait_online(10)
    await wait_for(lambda: state(hass, OTA_STATE) == "idle")
    assert sim_device.server.open_streams == 1
    assert coordinator.last_update_success is True
    assert state(hass, RESET_REASON) == "esp_rst_sw"
    assert dt_util.parse_datetime(state(hass, LAST_BOOT)) is not None
    assert state(hass, LAST_BOOT) >= booted


async def test_a_secret_changed_while_listening_asks_for_the_new_one(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """The stream is refused after a restart: the poll it triggers starts reauth at once."""
    entry = await loaded(hass, sim_device)
    sim_device.device.config = dataclasses.replace(sim_device.device.config, secret="rotated")
    await sim_device.device.reboot()  # drops the stream; the reconnect meets a 401

    def reauth_started() -> bool:
        flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        return [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]

    await wait_for(reauth_started)
    await hass.async_block_till_done()
    assert entry.runtime_data.device.last_update_success is False
    assert state(hass, FIRMWARE) == STATE_UNAVAILABLE
