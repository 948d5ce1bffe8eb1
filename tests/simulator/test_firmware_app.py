"""The firmware app behind the device API: confirm, rollback and reboot, starting and
aborting OTA jobs, the last OTA record it keeps in NVS, and its event ring."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from custom_components.esp_ota.espota.protocol import EventType, ImageState, OtaState
from simulator import firmware_app
from simulator.esp_err import (
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_SIZE,
    ESP_ERR_INVALID_STATE,
    ESP_ERR_OTA_ROLLBACK_FAILED,
    ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
    ESP_FAIL,
)
from simulator.faults import FaultPlan
from simulator.model import DeviceRefusedError
from simulator.otadata import OtaImgState

from .conftest import (
    DeviceFactory,
    events_of,
    make_image,
    request_for,
    run_ota,
    types_of,
    wait_until,
)
from .firmware_server import FirmwareServer

E = EventType


async def test_confirm_makes_the_new_image_valid_and_burns_the_efuse(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.1.0", secure_version=3)
    status, _ = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.info().image_state is ImageState.PENDING_VERIFY
    assert device.efuse.secure_version == 0
    device.confirm()
    info = device.info()
    assert info.image_state is ImageState.VALID
    assert info.secure_version == 3
    assert device.efuse.secure_version == 3
    # Confirmed: a reboot keeps the new image.
    await device.reboot()
    await device.wait_idle(5)
    assert device.info().version == "1.1.0"
    # And the next update goes back into ota_0, with seq 3.
    image2 = make_image("1.2.0", secure_version=3)
    status, _ = await run_ota(device, request_for(firmware_server, "/g.bin", image2, "1.2.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.info().running_partition == "ota_0"
    assert device.ops.otadata.read()[0].seq == 3


async def test_confirm_refused(make_device: DeviceFactory, firmware_server: FirmwareServer) -> None:
    device = await make_device()
    image = make_image("1.1.0", secure_version=40)  # more than the 32-bit eFuse field holds
    await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    with pytest.raises(DeviceRefusedError) as caught:
        device.confirm()
    assert caught.value.error == ESP_ERR_INVALID_ARG
    assert "Max secure version is 32" in caught.value.message


async def test_image_state_without_an_otadata_entry_is_undefined(
    make_device: DeviceFactory,
) -> None:
    device = await make_device()
    device.ops.otadata.erase_entry(0)
    assert device.info().image_state is ImageState.UNDEFINED


async def test_auto_confirm(make_device: DeviceFactory, firmware_server: FirmwareServer) -> None:
    device = await make_device(auto_confirm=True)
    await run_ota(device, request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0"))
    assert device.info().image_state is ImageState.VALID


async def test_rollback_marks_invalid_and_reboots(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    with pytest.raises(DeviceRefusedError) as caught:
        await device.rollback()
    assert caught.value.error == ESP_ERR_OTA_ROLLBACK_FAILED
    image = make_image("1.1.0")
    await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await device.rollback()
    assert not device.online
    await device.wait_idle(5)
    info = device.info()
    assert (info.version, info.last_invalid_partition) == ("1.0.0", "ota_1")
    assert device.ops.state_of(device.table.ota_apps[1]) is OtaImgState.INVALID


async def test_start_ota_refusals(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=50_000))
    image = make_image("1.1.0")
    good = request_for(firmware_server, "/f.bin", image, "1.1.0")
    bad_requests = {
        "http": (replace(good, url=good.url.replace("https://", "http://")), ESP_ERR_INVALID_ARG),
        "no host": (replace(good, url="https:///fw.bin"), ESP_ERR_INVALID_ARG),
        "sha": (replace(good, sha256="xyz"), ESP_ERR_INVALID_ARG),
        "tiny": (replace(good, size=100), ESP_ERR_INVALID_ARG),
        "huge": (replace(good, size=1700 * 1024 + 1), ESP_ERR_INVALID_SIZE),
        "version": (replace(good, version=""), ESP_ERR_INVALID_ARG),
        "long version": (replace(good, version="v" * 32), ESP_ERR_INVALID_ARG),
        "no cert": (replace(good, cert_pem="  "), ESP_ERR_INVALID_ARG),
        "bad cert": (
            replace(good, cert_pem="-----BEGIN CERTIFICATE-----\nxx"),
            ESP_ERR_INVALID_ARG,
        ),
        "header": (replace(good, headers={"X": "a\r\nb"}), ESP_ERR_INVALID_ARG),
    }
    for name, (request, error) in bad_requests.items():
        with pytest.raises(DeviceRefusedError) as caught:
            await device.start_ota(request)
        assert caught.value.error == error, name
        assert caught.value.message
    assert device.ota_status().state is OtaState.IDLE
    ota_id = await device.start_ota(good)
    assert device.ota_status().ota_id == ota_id
    assert device.ota_status().state in (OtaState.CONNECTING, OtaState.DOWNLOADING)
    with pytest.raises(DeviceRefusedError) as caught:
        await device.start_ota(good)
    assert caught.value.error == ESP_ERR_INVALID_STATE
    await device.abort_ota()


async def test_pending_verify_device_refuses_the_next_update(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    await run_ota(device, request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0"))
    with pytest.raises(DeviceRefusedError) as caught:
        await device.start_ota(request_for(firmware_server, "/g.bin", make_image("1.2.0"), "1.2.0"))
    assert caught.value.error == ESP_ERR_OTA_ROLLBACK_INVALID_STATE


async def test_abort_keeps_the_boot_partition(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=100_000))
    with pytest.raises(DeviceRefusedError) as caught:
        await device.abort_ota()
    assert caught.value.error == ESP_ERR_INVALID_STATE
    queue = device.subscribe()
    image = make_image("1.1.0", size=100_000)
    ota_id = await device.start_ota(request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await wait_until(lambda: device.ota_status().bytes_written >= 10_000)
    await device.abort_ota()
    status = device.ota_status()
    assert (status.state, status.ota_id, status.error) == (OtaState.ABORTED, ota_id, None)
    assert status.message == "aborted on request"
    events = events_of(queue)
    assert types_of(events)[-1] is E.ABORT
    assert events[-1].error is None
    info = device.info()
    assert (info.version, info.boot_partition) == ("1.0.0", "ota_0")
    assert device.ops.open_handles == 0
    await device.wait_idle(1)
    assert device.online
    # A new job can start right away, and the staged slot is simply rewritten.
    device.faults.clear()
    status, _ = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


async def test_reboot_during_an_update_is_reported_after_the_boot(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=100_000))
    queue = device.subscribe()
    image = make_image("1.1.0", size=100_000)
    ota_id = await device.start_ota(request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await wait_until(lambda: device.ota_status().bytes_written >= 5_000)
    await device.reboot()
    await device.wait_idle(5)
    status = device.ota_status()
    assert (status.state, status.ota_id, status.error) == (OtaState.FAILED, ota_id, ESP_FAIL)
    assert status.message == "the OTA was interrupted by a reset (ESP_RST_SW)"
    events = events_of(queue)
    assert E.ABORT not in types_of(events)  # a reset sends nothing
    assert types_of(events)[-1] is E.REBOOT
    assert device.info().version == "1.0.0"


async def test_events_since_and_subscribers(
    make_device: DeviceFactory, firmware_server: FirmwareServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(firmware_app, "SUBSCRIBER_QUEUE_SIZE", 4)
    device = await make_device(reboot_time_s=30)
    small = device.subscribe()
    gone = device.subscribe()
    device.unsubscribe(gone)
    image = make_image("1.1.0", size=40_000)
    await device.start_ota(request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await wait_until(lambda: any(e.type is E.REBOOT for e in device.events_since(0)))
    ring = device.events_since(0)
    ids = [e.id for e in ring]
    assert ids == list(range(1, len(ring) + 1))
    assert [e.type for e in ring][-1] is E.REBOOT
    assert device.events_since(ids[-3]) == ring[-2:]
    assert device.events_since(ids[-1]) == []
    assert device.events_since(10**9) == ring  # a client of an earlier run gets everything
    assert gone.empty()
    kept = events_of(small)
    assert kept == ring[-4:]  # the small queue dropped the oldest
    device.reboot_time_s = 0
    await device.power_cycle()
    await device.wait_idle(5)
    assert device.events_since(0) == []  # the ring is RAM: gone after the reset
    await device.reboot()
    await device.wait_idle(5)
    assert device.events_since(0) == []
    assert events_of(small)[0].id == ids[-1] + 1  # ids keep counting


async def test_progress_events_are_paced(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    """WRITE_FLASH (one per 4 KiB written) becomes an event at most every
    progress_event_interval_s, the first and the completing one always; 0 forwards all."""
    image = make_image("1.1.0", size=120_000)
    request = request_for(firmware_server, "/f.bin", image, "1.1.0")
    counts: dict[float, int] = {}
    for interval in (0.0, 0.2):
        device = await make_device(
            progress_event_interval_s=interval, faults=FaultPlan(slow_link_bytes_per_s=200_000)
        )
        began = time.monotonic()
        status, events = await run_ota(device, request)
        took = time.monotonic() - began
        assert status.state is OtaState.SUCCEEDED
        written = [e.bytes_written or 0 for e in events if e.type is E.WRITE_FLASH]
        assert written[-1] == len(image)
        assert written == sorted(written)
        counts[interval] = len(written)
        if interval:
            assert 2 <= len(written) <= took / interval + 2
    assert counts[0.0] >= len(image) // 4096  # every buffer written
    assert counts[0.0] > 3 * counts[0.2]
