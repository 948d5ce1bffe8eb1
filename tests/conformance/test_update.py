"""An update from start to confirm, and what may happen during its download: a dropped
connection (resumed), a second start (busy), an abort, a power cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from custom_components.esp_ota.espota.errors import DeviceBusyError, DeviceRefusedError
from custom_components.esp_ota.espota.protocol import EventType, ImageState, OtaState, OtaStatus

from .devices import STALL_S, DeviceUnderTest
from .fault_proxy import Rule
from .support import (
    API,
    STATE_ORDER,
    EventRecorder,
    FirmwareHost,
    assert_on,
    descriptor,
    make_image,
    raw_request,
    start_update,
    update,
    update_successfully,
    wait_downloading,
    wait_job_end,
    wait_status,
)

# Slow enough to see every state and to act mid-download, fast enough for the suite.
SLOW_BYTES_PER_S = 48 * 1024
# The first bytes at full speed (the device is downloading at once), then a crawl that
# leaves seconds to act mid-download.
CRAWL = Rule(bytes_per_s=8 * 1024, slow_after=16 * 1024)
EXPECTED_EVENTS = [
    "start",
    "connected",
    "get_img_desc",
    "verify_chip_id",
    "verify_chip_revision",
    "write_flash",
    "update_boot_partition",
    "finish",
    "reboot",
]


async def _watch_states(dut: DeviceUnderTest, ota_id: str, seen: list[OtaStatus]) -> None:
    """Poll GET /ota until the job ends, keeping each change."""
    final = await wait_status(
        dut,
        f"end of {ota_id}",
        lambda status: (
            _keep(seen, status)
            and status.ota_id == ota_id
            and status.state in (OtaState.SUCCEEDED, OtaState.FAILED, OtaState.ABORTED)
        ),
        within_s=30,
    )
    assert final.state is OtaState.SUCCEEDED, final


def _keep(seen: list[OtaStatus], status: OtaStatus) -> bool:
    if not seen or seen[-1] != status:
        seen.append(status)
    return True


async def test_update_confirm_and_its_events(dut: DeviceUnderTest, firmware: FirmwareHost) -> None:
    """202 with a 12-hex ota_id at once; the events and GET /ota go through every step; the
    device comes back on the new image from ota_1 in pending_verify, refuses another update
    until it is confirmed, and confirming (twice) makes it valid."""
    image = make_image("1.1.0")
    offer = firmware.publish(image, "1.1.0")
    firmware.proxy.default_rule = Rule(bytes_per_s=SLOW_BYTES_PER_S)
    async with EventRecorder(dut) as recorder:
        before = time.monotonic()
        started = await raw_request(
            dut, "POST", f"{API}/ota", body=json.dumps(offer.body()).encode()
        )
        answered = time.monotonic() - before
        assert started.status == 202, started
        assert list(started.json()) == ["ota_id"], started.json()
        ota_id = started.json()["ota_id"]
        assert isinstance(ota_id, str), ota_id
        assert answered < 2.0, f"POST /ota took {answered:.2f} s: it must answer at once"
        assert len(ota_id) == 12, ota_id
        assert all(c in "0123456789abcdef" for c in ota_id), ota_id

        seen: list[OtaStatus] = []
        await _watch_states(dut, ota_id, seen)
        await recorder.wait_for("reboot", lambda e: e.type is EventType.REBOOT)
        events = recorder.job(ota_id)

    # GET /ota: states only move forward; bytes never go back; the new boot says succeeded.
    order = [STATE_ORDER.index(status.state) for status in seen if status.ota_id == ota_id]
    assert order == sorted(order), [s.state.value for s in seen]
    states = {status.state for status in seen if status.ota_id == ota_id}
    assert OtaState.DOWNLOADING in states, seen
    written = [s.bytes_written for s in seen if s.ota_id == ota_id]
    assert written == sorted(written), seen
    assert max(written) == offer.size, seen
    for status in seen:
        if status.ota_id == ota_id:
            assert status.target_version == "1.1.0"
            assert status.image_size in (None, offer.size)
            assert status.error is None, status
            assert 0 <= status.bytes_written <= offer.size
    final = seen[-1]
    assert (final.state, final.bytes_written, final.image_size) == (
        OtaState.SUCCEEDED,
        offer.size,
        offer.size,
    )
    assert (final.target_version, final.error, final.message) == ("1.1.0", None, None)

    # The event stream: one job, in esp_https_ota's order, then the reboot.
    assert recorder.types(events) == EXPECTED_EVENTS, recorder.types(events)
    ids = [event.id for event in recorder.events]
    assert ids == sorted(set(ids)), f"event ids repeat or go back: {ids}"
    assert events[0].ota_id == ota_id
    assert events[-1].ota_id == ota_id
    desc = next(e for e in events if e.type is EventType.GET_IMG_DESC)
    assert (desc.project, desc.version) == ("esp-ota-demo", "1.1.0")
    progress = [e for e in events if e.type is EventType.WRITE_FLASH]
    counts = [e.bytes_written or 0 for e in progress]
    assert all(e.bytes_written is not None for e in progress), progress
    assert counts == sorted(counts), counts
    assert counts[-1] == offer.size, counts
    assert all(e.image_size == offer.size for e in progress), progress
    finish = next(e for e in events if e.type is EventType.FINISH)
    assert finish.error is None

    info = await dut.client.info()
    new = descriptor(image)
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.PENDING_VERIFY)
    assert (info.app_elf_sha256, info.idf_ver) == (new.app_elf_sha256, new.idf_ver)
    assert info.secure_version == new.secure_version
    assert info.reset_reason == "ESP_RST_SW"
    assert info.last_invalid_partition is None
    assert info.last_ota == final

    with pytest.raises(DeviceRefusedError) as refused:
        await start_update(dut, firmware.publish(make_image("1.2.0"), "1.2.0"))
    assert not isinstance(refused.value, DeviceBusyError)
    assert refused.value.error == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
    assert (await dut.client.ota_status()) == final

    await dut.client.confirm()
    info = await dut.client.info()
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.VALID)
    again = await raw_request(dut, "POST", f"{API}/ota/confirm")  # already valid: a no-op
    assert (again.status, again.json()) == (200, {"ok": True})
    assert (await dut.client.info()).image_state is ImageState.VALID


async def test_progress_events_are_paced(dut: DeviceUnderTest, firmware: FirmwareHost) -> None:
    """WRITE_FLASH is forwarded for the first write, then at most every 250 ms, and for the
    write that completes the image."""
    offer = firmware.publish(make_image("1.1.0", size=64 * 1024), "1.1.0")
    async with EventRecorder(dut) as recorder:
        started = time.monotonic()
        ota_id = await start_update(dut, offer)
        await recorder.wait_for("finish", lambda e: e.type is EventType.FINISH)
        took = time.monotonic() - started
        progress = [e for e in recorder.job(ota_id) if e.type is EventType.WRITE_FLASH]
    assert progress[-1].bytes_written == offer.size
    assert len(progress) <= 2 + took / 0.25, f"{len(progress)} WRITE_FLASH in {took:.2f} s"
    assert (await wait_job_end(dut, ota_id)).state is OtaState.SUCCEEDED


async def test_a_dropped_connection_is_resumed(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """The download connection is cut mid-image: the device asks for the rest
    (Range: bytes=<written>-), not the whole image again, and installs the exact image; the
    job posts abort (ESP_FAIL) and a new start, and ends succeeded."""
    image = make_image("1.1.0")
    offer = firmware.publish(image, "1.1.0")
    cut_at = 32 * 1024
    firmware.proxy.cut_once_after(cut_at)
    async with EventRecorder(dut) as recorder:
        ota_id, status, info = await update(dut, offer)
        events = recorder.job(ota_id)
    assert status.state is OtaState.SUCCEEDED, status
    assert not firmware.proxy.cut_once_pending, "the connection was never cut"
    connections = firmware.proxy.connections
    cut = next(c for c in connections if c.cut)
    after = sum(c.to_device for c in connections if c.number > cut.number)
    assert after < offer.size, (
        f"after the cut the server sent {after} bytes for a {offer.size}-byte image: "
        f"the device downloaded it again instead of resuming ({connections})"
    )
    gets = [s for s in firmware.served if s.method == "GET"]
    resumed = [s for s in gets if s.status == 206 and 0 < s.first < offer.size]
    assert resumed, f"no Range: bytes=<written>- request reached the server: {gets}"
    assert resumed[-1].last == offer.size - 1, gets
    assert sum(s.last - s.first + 1 for s in gets) < 2 * offer.size, gets
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.PENDING_VERIFY)
    assert info.app_elf_sha256 == descriptor(image).app_elf_sha256
    assert info.last_ota.bytes_written == offer.size
    types = [e.type for e in events]
    abort = types.index(EventType.ABORT)
    assert events[abort].error == "ESP_FAIL", events[abort]
    assert EventType.START in types[abort:], recorder.types(events)
    assert types[-1] is EventType.REBOOT


async def test_a_second_start_while_downloading_is_busy(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """409 ESP_ERR_INVALID_STATE (DeviceBusyError); the running job goes on untouched."""
    firmware.proxy.default_rule = CRAWL
    offer = firmware.publish(make_image("1.1.0"), "1.1.0")
    ota_id = await start_update(dut, offer)
    await wait_downloading(dut, ota_id)
    with pytest.raises(DeviceBusyError) as busy:
        await start_update(dut, firmware.publish(make_image("1.2.0"), "1.2.0"))
    assert busy.value.error == "ESP_ERR_INVALID_STATE"
    status = await dut.client.ota_status()
    assert (status.ota_id, status.state, status.target_version) == (
        ota_id,
        OtaState.DOWNLOADING,
        "1.1.0",
    )
    await dut.client.abort_ota()
    assert (await wait_job_end(dut, ota_id)).state is OtaState.ABORTED


async def test_abort(dut: DeviceUnderTest, firmware: FirmwareHost) -> None:
    """Nothing to abort: 409 ESP_ERR_INVALID_STATE. During a download: 200, the job reads
    aborted, the boot partition is unchanged, and the next update works."""
    with pytest.raises(DeviceRefusedError) as refused:
        await dut.client.abort_ota()
    assert refused.value.error == "ESP_ERR_INVALID_STATE"

    firmware.proxy.default_rule = CRAWL
    offer = firmware.publish(make_image("1.1.0"), "1.1.0")
    async with EventRecorder(dut) as recorder:
        ota_id = await start_update(dut, offer)
        await wait_downloading(dut, ota_id)
        aborted = await raw_request(dut, "POST", f"{API}/ota/abort")
        assert (aborted.status, aborted.json()) == (200, {"ok": True})
        status = await wait_job_end(dut, ota_id, within_s=5)
        await recorder.wait_for("abort", lambda e: e.type is EventType.ABORT)
        events = recorder.job(ota_id)
    assert status.state is OtaState.ABORTED, status
    assert status.bytes_written < offer.size
    assert EventType.UPDATE_BOOT_PARTITION not in [e.type for e in events]
    assert EventType.REBOOT not in [e.type for e in events]
    info = await dut.client.info()
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.last_ota == status
    with pytest.raises(DeviceRefusedError) as again:
        await dut.client.abort_ota()
    assert again.value.error == "ESP_ERR_INVALID_STATE"

    firmware.proxy.default_rule = Rule()
    info = await update_successfully(dut, offer)
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.PENDING_VERIFY)


async def test_power_loss_mid_download(dut: DeviceUnderTest, firmware: FirmwareHost) -> None:
    """Power cut during a download: back on the old firmware (ESP_RST_POWERON), boot
    partition unchanged, the job failed with ESP_FAIL "interrupted by a reset"; a new
    update then succeeds."""
    firmware.proxy.default_rule = CRAWL
    offer = firmware.publish(make_image("1.1.0"), "1.1.0")
    ota_id = await start_update(dut, offer)
    await wait_downloading(dut, ota_id, at_least=4096)
    await dut.power_cycle()
    info = await dut.wait_online()
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.reset_reason == "ESP_RST_POWERON"
    assert info.last_invalid_partition is None
    last = info.last_ota
    assert (last.ota_id, last.state, last.error) == (ota_id, OtaState.FAILED, "ESP_FAIL"), last
    assert last.message is not None, last
    assert "interrupted by a reset" in last.message, last
    assert await dut.client.ota_status() == last

    firmware.proxy.default_rule = Rule()
    with contextlib.suppress(asyncio.CancelledError):
        info = await update_successfully(dut, offer)
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.PENDING_VERIFY)


# The server sends part of the image (two 16 KiB TLS records of the 48 KiB one), then
# nothing (the connection stays open).
STALL_MID_IMAGE = Rule(stall_after=40 * 1024)


async def test_a_stalled_download_fails_and_changes_nothing(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """esp_https_ota retries a read timeout for ever; the firmware gives up a download that
    receives nothing for its bound (ESP_ERR_HTTP_READ_TIMEOUT), not resumed, and the boot
    partition is unchanged."""
    firmware.proxy.default_rule = STALL_MID_IMAGE
    offer = firmware.publish(make_image("1.1.0"), "1.1.0")
    ota_id = await start_update(dut, offer)
    status = await wait_job_end(dut, ota_id, within_s=STALL_S + 10)
    assert (status.state, status.error) == (OtaState.FAILED, "ESP_ERR_HTTP_READ_TIMEOUT"), status
    assert 0 < status.bytes_written < offer.size
    assert len(firmware.proxy.connections) == 1  # a stall is not resumed
    info = await dut.client.info()
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)


async def test_abort_ends_a_stalled_download_at_once(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """An abort while the download waits for bytes that do not come answers without
    waiting for the stall bound, and the job reads aborted."""
    firmware.proxy.default_rule = STALL_MID_IMAGE
    offer = firmware.publish(make_image("1.1.0"), "1.1.0")
    ota_id = await start_update(dut, offer)
    await wait_downloading(dut, ota_id)
    async with asyncio.timeout(10):
        while not any(connection.stalled for connection in firmware.proxy.connections):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    started = time.monotonic()
    aborted = await raw_request(dut, "POST", f"{API}/ota/abort")
    waited = time.monotonic() - started
    assert (aborted.status, aborted.json()) == (200, {"ok": True})
    assert waited < STALL_S, f"the abort waited {waited:.1f} s, as long as the stall bound"
    status = await wait_job_end(dut, ota_id, within_s=5)
    assert status.state is OtaState.ABORTED, status
    info = await dut.client.info()
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
