"""Pressing Install while Home Assistant's firmware cache is out of space: the install
ends, with the translated "no space" error, the record finished as failed/no_space, and
the device never told to start. The full disk is simulated (FullDisk: the store's writes
fail with ENOSPC) rather than made."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir

from custom_components.esp_ota import installer as installer_module
from custom_components.esp_ota.const import DOMAIN
from custom_components.esp_ota.espota.firmware_store import FirmwareStore
from custom_components.esp_ota.espota.job_record import FailureReason, UpdateStep
from custom_components.esp_ota.firmware import FIRMWARE_SERVICE
from tests.espota.test_firmware_store import FillingFile, FullDisk

from .conftest import ReleaseServer, SimDevice
from .test_install import (
    FIRMWARE,
    IMAGE_SIZE,
    LAST_RESULT,
    TEST_TIMEOUTS,
    StartCounter,
    entry_for,
    finished_events,
    image_of,
    install,
    load,
    state_attr,
    state_of,
)


@pytest.fixture(autouse=True)
def short_job_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The firmware server on 127.0.0.1 should a test get that far; short job bounds."""
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_PORT", 0)
    monkeypatch.setattr(installer_module, "INSTALL_TIMEOUTS", TEST_TIMEOUTS)


@pytest.fixture(params=["first write", "flush"])
def full_cache(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> FullDisk:
    """The image cache's writes (or its final flush, where a full disk used to escape as
    a bare OSError) fail with ENOSPC, every time: its folder holds no other image to
    delete, so making room cannot help."""
    disk = FullDisk(stage=request.param, failures=1_000)
    make_temporary = FirmwareStore._temporary_file

    def temporary_file(store: FirmwareStore, *args: Any) -> tuple[Any, Path]:
        file, path = make_temporary(store, *args)
        return FillingFile(file, disk), path

    monkeypatch.setattr(FirmwareStore, "_temporary_file", temporary_file)
    return disk


async def test_an_install_with_the_cache_out_of_space_fails_with_no_space(
    hass: HomeAssistant,
    sim_device: SimDevice,
    *,
    release_server: ReleaseServer,
    full_cache: FullDisk,
    hass_storage: dict[str, Any],
    issue_registry: ir.IssueRegistry,
) -> None:
    release_server.publish("1.1.0", image_of("1.1.0"))
    starts = StartCounter(sim_device)
    entry = entry_for(sim_device, release_server)
    await load(hass, entry)
    events = finished_events(hass)

    with pytest.raises(HomeAssistantError) as failed:
        await install(hass)

    assert full_cache.hits  # the cache did meet the full disk
    assert failed.value.translation_key == "install_no_space"
    placeholders = failed.value.translation_placeholders or {}
    assert placeholders["name"] == entry.title
    assert placeholders["version"] == "1.1.0"
    assert placeholders["error"].startswith("FirmwareStorageError (not enough space in ")
    assert f"for the {IMAGE_SIZE}-byte image" in placeholders["error"]
    # Translated: the message is the string's, with the space needed in it.
    assert str(failed.value).startswith("Home Assistant has no room to store firmware 1.1.0")
    assert f"{IMAGE_SIZE}-byte image" in str(failed.value)

    record = entry.runtime_data.device.data.job
    assert record is not None
    assert record.finished
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.NO_SPACE)
    assert record.error == "FirmwareStorageError"
    assert not record.start_sent
    await hass.data[FIRMWARE_SERVICE].jobs.async_flush()
    stored = hass_storage[f"{DOMAIN}.jobs"]["data"][sim_device.mac]
    assert (stored["step"], stored["reason"]) == ("failed", "no_space")
    assert [(event.data["result"], event.data["reason"]) for event in events] == [
        ("failed", "no_space")
    ]
    assert not entry.runtime_data.installer.in_progress
    assert state_attr(hass, FIRMWARE, "in_progress") is False
    assert state_of(hass, FIRMWARE) == STATE_ON  # 1.1.0 still offered
    assert state_of(hass, LAST_RESULT) == "failed"
    assert not any(domain == DOMAIN for (domain, _) in issue_registry.issues)

    # The device was never asked: no start, still the old firmware, nothing written.
    assert starts() == 0
    info = sim_device.device.info()
    assert (info.version, info.running_partition, info.boot_partition) == (
        "1.0.0",
        "ota_0",
        "ota_0",
    )
    cache = hass.data[FIRMWARE_SERVICE].store
    assert cache.cached() == []
    assert [path.name for path in cache.folder.iterdir()] == []  # no partial file left


@pytest.mark.parametrize(
    ("error", "reason"), [(errno.ENOSPC, "no_space"), (errno.EIO, "image_unavailable")]
)
async def test_a_bare_os_error_from_preparing_still_ends_the_install(
    hass: HomeAssistant,
    sim_device: SimDevice,
    release_server: ReleaseServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    error: int,
    reason: str,
) -> None:
    """Should the image's preparation let a bare OSError through (its contract is the
    library's errors), the job still ends, failed, instead of staying "preparing"."""

    async def fetch(*args: Any) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(FirmwareStore, "fetch", fetch)
    release_server.publish("1.1.0", image_of("1.1.0"))
    starts = StartCounter(sim_device)
    entry = entry_for(sim_device, release_server)
    await load(hass, entry)
    with pytest.raises(HomeAssistantError) as failed:
        await install(hass)
    assert failed.value.translation_key == f"install_{reason}"
    record = entry.runtime_data.device.data.job
    assert record is not None
    assert (record.step, record.reason, record.error) == (UpdateStep.FAILED, reason, "OSError")
    assert starts() == 0
