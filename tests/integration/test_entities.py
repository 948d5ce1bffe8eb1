"""Entities against a simulated device and a real feed: states, push, polling, availability."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from unittest.mock import patch

import pytest
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.translation import async_get_translations
from pytest_homeassistant_custom_component.common import snapshot_platform
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from custom_components.esp_ota.const import DOMAIN
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.job_record import (
    FailureReason,
    UpdateJobRecord,
    UpdateStep,
    new_record,
)
from custom_components.esp_ota.sensor import LAST_ERRORS
from tests.simulator.firmware_server import FirmwareServer, start_firmware_server

from .conftest import (
    CHIP,
    PROJECT,
    FeedServer,
    SimDevice,
    make_entry,
    setup_entry,
    start_device_update,
    wait_for_event_stream,
)

FIRMWARE = "update.garden_34_56_firmware"
FIRMWARE_BETA = "update.garden_34_56_firmware_beta_channel"
OTA_STATE = "sensor.garden_34_56_update_state"
OTA_PROGRESS = "sensor.garden_34_56_update_progress"
LAST_RESULT = "sensor.garden_34_56_last_update_result"
LAST_ERROR = "sensor.garden_34_56_last_update_error"
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


async def test_few_entities_are_enabled_by_default(
    hass: HomeAssistant, sim_device: SimDevice, entity_registry: er.EntityRegistry
) -> None:
    """Each entity enabled costs every device tens of KB of Home Assistant's memory
    (docs/architecture.md, "What an idle device costs"): the update entity and the three
    sensors that say how updates went are enabled; the rest (the progress the update
    entity shows too, and the diagnostics) are there to enable."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    entities = er.async_entries_for_config_entry(entity_registry, entry.entry_id)
    enabled = sorted(entity.entity_id for entity in entities if not entity.disabled)
    assert enabled == [
        "sensor.garden_34_56_last_update_error",
        "sensor.garden_34_56_last_update_result",
        "sensor.garden_34_56_update_state",
        FIRMWARE,
    ]
    assert len(entities) == 12


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


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_progress_is_pushed_and_the_new_firmware_shows(
    hass: HomeAssistant, sim_device: SimDevice, firmware_server: FirmwareServer
) -> None:
    """The device's events move the sensors; after its reboot the new version shows."""
    await setup_entry(hass, make_entry(sim_device))
    sim_device.device.faults.slow_link_bytes_per_s = 256 * 1024
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=192 * 1024)
    await start_device_update(sim_device, firmware_server, image)
    seen_states: set[str] = set()
    progress: list[str] = []
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
                progress.append(percentage.state)
            installed = hass.states.get(FIRMWARE)
            assert installed is not None
            if installed.attributes.get("installed_version") == "1.1.0":
                break
    assert "downloading" in seen_states
    # Whole percent (the device's share of its image has decimals: 8 KiB of 192 KiB).
    assert all(state.isdigit() for state in progress), progress
    percents = [int(state) for state in progress]
    assert percents == sorted(percents)
    assert any(0 < value < 100 for value in percents), percents
    assert percents[-1] == 100
    image_state = hass.states.get(IMAGE_STATE)
    assert image_state is not None
    assert image_state.state == "pending_verify"
    partition = hass.states.get(RUNNING_PARTITION)
    assert partition is not None
    assert partition.state == "ota_1"
    result = hass.states.get(LAST_RESULT)
    assert result is not None
    assert result.state == "succeeded"
    # The device page says what the device runs now, not what it ran when added.
    entry_id = hass.config_entries.async_entries(DOMAIN)[0].entry_id
    device = dr.async_get(hass).async_get_device_by_identifier((DOMAIN, sim_device.mac), entry_id)
    assert device is not None
    assert device.sw_version == "1.1.0"


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


def job_record(step: UpdateStep, **changes: object) -> UpdateJobRecord:
    """A record of our install of 1.1.0 on the garden device, at `step`."""
    record = new_record(mac="24:0a:c4:12:34:56", from_version="1.0.0", to_version="1.1.0",
                        from_partition="ota_0")  # fmt: skip
    return replace(record, step=step, **changes)  # type: ignore[arg-type]


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_progress_reads_in_whole_percent(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """4 KiB of a 4 MiB image is 0.09765625 %: the update entity and the progress sensor
    both say 0, then 50 half way (whole percent, rounded down, so 100 means done)."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    coordinator = entry.runtime_data.device
    size = 4 * 1024 * 1024
    for written, shown in ((4096, 0), (size // 2 + 4096, 50), (size - 1, 99)):
        job = job_record(UpdateStep.DOWNLOADING, size=size, bytes_written=written)
        coordinator.publish_job(job, installing=True, progress_only=False)
        await hass.async_block_till_done()
        firmware = hass.states.get(FIRMWARE)
        progress = hass.states.get(OTA_PROGRESS)
        assert firmware is not None
        assert progress is not None
        assert firmware.attributes["in_progress"] is True
        assert firmware.attributes["update_percentage"] == shown
        assert type(firmware.attributes["update_percentage"]) is int
        assert progress.state == str(shown)


async def test_last_error_is_a_reason_with_the_error_code_beside(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """A failed install's error reads as its reason (one of the sensor's options, so
    translated); ESP-IDF's name and message are attributes. It stays while the next
    install runs, and reads "none" once that one succeeded."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    coordinator = entry.runtime_data.device

    def shown() -> tuple[str, str, dict[str, object]]:
        error = hass.states.get(LAST_ERROR)
        result = hass.states.get(LAST_RESULT)
        assert error is not None
        assert result is not None
        assert error.attributes["options"] == LAST_ERRORS
        assert error.state in LAST_ERRORS
        details = {
            name: error.attributes[name]
            for name in ("error_code", "message")
            if name in error.attributes
        }
        return error.state, result.state, details

    assert shown() == ("none", "none", {})  # a fresh device: no update yet, no error

    failed = job_record(
        UpdateStep.FAILED,
        reason=FailureReason.DOWNLOAD_FAILED,
        error="ESP_ERR_OTA_VALIDATE_FAILED",
        message="sha256 mismatch",
    )
    coordinator.publish_job(failed, installing=False, progress_only=False)
    await hass.async_block_till_done()
    failure = (
        "download_failed",
        "failed",
        {"error_code": "ESP_ERR_OTA_VALIDATE_FAILED", "message": "sha256 mismatch"},
    )
    assert shown() == failure

    for step in (UpdateStep.QUEUED, UpdateStep.DOWNLOADING, UpdateStep.REBOOTING):
        coordinator.publish_job(job_record(step), installing=True, progress_only=False)
        await hass.async_block_till_done()
        assert shown() == failure, step  # the last end, while the next install runs

    coordinator.publish_job(job_record(UpdateStep.SUCCEEDED), installing=False,
                            progress_only=False)  # fmt: skip
    await hass.async_block_till_done()
    assert shown() == ("none", "succeeded", {})

    rolled_back = job_record(UpdateStep.ROLLED_BACK, reason=FailureReason.ROLLED_BACK)
    coordinator.publish_job(rolled_back, installing=False, progress_only=False)
    await hass.async_block_till_done()
    assert shown() == ("rolled_back", "rolled_back", {})


async def test_last_error_of_an_update_the_device_ran_itself(
    hass: HomeAssistant, sim_device: SimDevice, firmware_server: FirmwareServer
) -> None:
    """An update started on the device without us, that fails there: the device's
    failure reads as download_failed, its ESP-IDF error name and message as attributes."""
    await setup_entry(hass, make_entry(sim_device))
    sim_device.device.faults.corrupt_at_byte = 50_000
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=96 * 1024)
    await start_device_update(sim_device, firmware_server, image)
    async with asyncio.timeout(20):
        while (state := hass.states.get(LAST_RESULT)) is None or state.state != "failed":
            await asyncio.sleep(0.05)
            await hass.async_block_till_done()
    error = hass.states.get(LAST_ERROR)
    assert error is not None
    reported = sim_device.device.info().last_ota
    assert reported.error is not None
    assert reported.error.startswith("ESP_")
    assert error.state == "download_failed"
    assert error.attributes["error_code"] == reported.error
    assert error.attributes["message"] == reported.message


async def test_states_of_a_fresh_device_read_in_words(hass: HomeAssistant) -> None:
    """Before any update: "No update yet" and "No error", not a bare None."""
    translations = await async_get_translations(hass, "en", "entity", {DOMAIN})
    prefix = f"component.{DOMAIN}.entity.sensor"
    assert translations[f"{prefix}.last_result.state.none"] == "No update yet"
    assert translations[f"{prefix}.last_error.state.none"] == "No error"
    for option in LAST_ERRORS:
        text = translations[f"{prefix}.last_error.state.{option}"]
        assert text, option
        assert "_" not in text, option
