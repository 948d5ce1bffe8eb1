"""esp_https_ota as the simulated device runs it, against a real HTTPS server on 127.0.0.1:
the requests it sends, the events it posts and the ESP-IDF errors it ends with; and
driven by hand, without a device: its state checks."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from custom_components.esp_ota.espota.errors import ImageError
from custom_components.esp_ota.espota.protocol import EventType, ImageState, OtaState
from simulator import https_ota
from simulator.efuse import EFuse
from simulator.esp_err import (
    ESP_ERR_HTTP_NOT_MODIFIED,
    ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE,
    ESP_ERR_INVALID_STATE,
    ESP_ERR_INVALID_VERSION,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from simulator.faults import FaultPlan
from simulator.flash import SECTOR_SIZE, Flash
from simulator.hardware import Hardware
from simulator.http_client import USER_AGENT
from simulator.https_ota import EspHttpsOta
from simulator.model import OtaRequest
from simulator.ota_ops import OtaOps
from simulator.ota_task import OtaTaskConfig
from simulator.otadata import OtaImgState, OtaSelectEntry
from simulator.pace import Pace, Timing
from simulator.partitions import ADVANCED_HTTPS_OTA_TABLE

from .conftest import (
    PARTIAL,
    SUCCESS_EVENTS,
    DeviceFactory,
    assert_failed,
    make_image,
    request_for,
    run_ota,
    types_of,
)
from .firmware_server import FirmwareServer

E = EventType
OTA_0, OTA_1 = ADVANCED_HTTPS_OTA_TABLE.ota_apps


class Recorder:
    """An OtaListener that keeps everything."""

    def __init__(self) -> None:
        self.events: list[tuple[EventType, dict[str, Any]]] = []
        self.phases: list[OtaState] = []
        self.progress: list[int] = []

    def on_event(self, event_type: EventType, **fields: Any) -> None:
        self.events.append((event_type, fields))

    def on_phase(self, state: OtaState) -> None:
        self.phases.append(state)

    def on_progress(self, bytes_written: int, image_size: int | None) -> None:
        self.progress.append(bytes_written)


def make_ops() -> OtaOps:
    flash = Flash()
    flash.write(OTA_0.offset, make_image("1.0.0"))
    hardware = Hardware(
        flash=flash, table=ADVANCED_HTTPS_OTA_TABLE, efuse=EFuse(), chip_id=0, chip_revision=301
    )
    ops = OtaOps(hardware, timing=Timing(Pace.UNTHROTTLED), running=OTA_0)
    ops.otadata.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    return ops


def session_for(ops: OtaOps, request: OtaRequest, recorder: Recorder, **config: Any) -> EspHttpsOta:
    settings = {"timeout_ms": 500, "partial_http_download": True, **config}
    return EspHttpsOta(
        OtaTaskConfig().with_settings(**settings).download_config(request, 0),
        ota_ops=ops,
        timing=Timing(Pace.UNTHROTTLED),
        faults=FaultPlan(),
        events=recorder,
    )


async def test_partial_download_updates_and_reboots_into_pending_verify(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=150_000)
    request = request_for(firmware_server, "/fw.bin", image, "1.1.0", headers={"X-Token": "t0k"})
    status, events = await run_ota(device, request)
    assert status.state is OtaState.SUCCEEDED
    assert status.bytes_written == len(image)
    assert types_of(events) == SUCCESS_EVENTS
    # The exact requests esp_https_ota makes with partial_http_download and 64 KiB chunks.
    assert [(r.method, r.range) for r in firmware_server.requests] == [
        ("HEAD", None),
        ("GET", "bytes=0-65535"),
        ("GET", "bytes=65536-131071"),
        ("GET", "bytes=131072-"),
    ]
    assert all(r.headers["User-Agent"] == USER_AGENT for r in firmware_server.requests)
    assert all(r.headers["X-Token"] == "t0k" for r in firmware_server.requests)
    assert all("Accept-Encoding" not in r.headers for r in firmware_server.requests)
    written = [e.bytes_written or 0 for e in events if e.type is E.WRITE_FLASH]
    assert written == sorted(written)
    assert written[0] == 1024  # the header esp_https_ota read first
    assert written[-1] == len(image)
    assert {e.image_size for e in events if e.type is E.WRITE_FLASH} == {len(image)}
    connected = next(e for e in events if e.type is E.CONNECTED)
    assert connected.image_size == len(image)
    description = next(e for e in events if e.type is E.GET_IMG_DESC)
    assert (description.project, description.version) == ("esp-ota-demo", "1.1.0")
    assert next(e for e in events if e.type is E.FINISH).error is None
    info = device.info()
    assert info.version == "1.1.0"
    assert info.running_partition == "ota_1"
    assert info.image_state is ImageState.PENDING_VERIFY
    assert info.reset_reason == "ESP_RST_SW"
    assert info.last_ota == status
    # otadata: seq 2 in sector 1, PENDING_VERIFY after the boot.
    raw = device.flash.read(device.table.otadata.offset + SECTOR_SIZE, 32)
    entry = OtaSelectEntry.unpack(raw)
    assert (entry.seq, entry.state) == (2, OtaImgState.PENDING_VERIFY)
    assert device.flash.read(device.table.ota_apps[1].offset, len(image)) == image


async def test_image_smaller_than_one_chunk_is_fetched_without_range(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=40_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/s.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert [(r.method, r.range) for r in firmware_server.requests] == [
        ("HEAD", None),
        ("GET", None),
    ]


async def test_chunk_size_and_buffer_size_are_configurable(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(
        ota={**PARTIAL, "max_http_request_size": 16384, "buffer_size": 512},
        progress_event_interval_s=0,  # every WRITE_FLASH an event
    )
    image = make_image("1.1.0", size=40_000)
    status, events = await run_ota(device, request_for(firmware_server, "/c.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert firmware_server.ranges() == ["bytes=0-16383", "bytes=16384-32767", "bytes=32768-"]
    sizes = [e.bytes_written or 0 for e in events if e.type is E.WRITE_FLASH]
    # buffer_size below 1024 is raised to 1024, esp_https_ota's minimum buffer.
    assert max(b - a for a, b in itertools.pairwise(sizes)) == 1024


async def test_bulk_flash_erase(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(ota={**PARTIAL, "bulk_flash_erase": True})
    image = make_image("1.1.0", size=100_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/b.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.info().version == "1.1.0"


async def test_without_partial_download_one_get(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(ota={"partial_http_download": False, "ota_resumption": False})
    image = make_image("1.1.0", size=100_000)
    status, events = await run_ota(device, request_for(firmware_server, "/n.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert [(r.method, r.range) for r in firmware_server.requests] == [("GET", None)]
    assert next(e for e in events if e.type is E.CONNECTED).image_size == len(image)


async def test_resumption_without_partial_download_asks_bytes_0(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(ota={"partial_http_download": False})
    image = make_image("1.1.0", size=60_000)
    status, events = await run_ota(device, request_for(firmware_server, "/r.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert firmware_server.ranges() == ["bytes=0-"]
    assert next(e for e in events if e.type is E.CONNECTED).image_size == len(image)


async def test_resumption_falls_back_when_the_server_ignores_range(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.support_range = False
    device = await make_device(ota={"partial_http_download": False})
    image = make_image("1.1.0", size=60_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/r.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    # 200 to "bytes=0-" means no Range support: start over without resumption.
    assert firmware_server.ranges() == ["bytes=0-", None]


async def test_partial_download_from_a_server_without_range_support(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.support_range = False
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=150_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/nr.bin", image, "1.1.0"))
    # The first chunk request gets the whole file with 200, which completes the image.
    assert status.state is OtaState.SUCCEEDED
    assert firmware_server.ranges() == ["bytes=0-65535"]


async def test_head_refused_falls_back_to_range_0_0(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.head_status = 405
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=100_000)
    status, events = await run_ota(device, request_for(firmware_server, "/h.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert [(r.method, r.range) for r in firmware_server.requests] == [
        ("HEAD", None),
        ("GET", "bytes=0-0"),
        ("GET", "bytes=0-65535"),
        ("GET", "bytes=65536-"),
    ]
    assert next(e for e in events if e.type is E.CONNECTED).image_size == len(image)


async def test_head_refused_and_range_ignored_uses_content_length(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.head_status = 501
    firmware_server.behaviour.support_range = False
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=50_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/h2.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


async def test_head_without_length_fails(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.head_without_length = True
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/l.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "Failed to get image length from http response"
    assert types_of(events) == [E.START, E.ABORT]


@pytest.mark.parametrize(
    "case",
    [
        (404, True, ESP_FAIL, "File not found(404)"),
        (403, False, ESP_FAIL, "File not found(403)"),
        (418, False, ESP_FAIL, "Client error (418)"),
        (500, True, ESP_FAIL, "Server error (500)"),
        (304, True, ESP_ERR_HTTP_NOT_MODIFIED, None),
        (304, False, ESP_ERR_HTTP_NOT_MODIFIED, None),
        (416, True, ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE, None),
        (416, False, ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE, None),
        (204, True, ESP_FAIL, "Received incorrect http status 204"),
    ],
)
async def test_http_error_statuses(
    case: tuple[int, bool, str, str | None],
    make_device: DeviceFactory,
    firmware_server: FirmwareServer,
) -> None:
    code, partial, error, message = case
    firmware_server.behaviour.status = code
    device = await make_device(ota={"partial_http_download": partial})
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/e.bin", image, "1.1.0"))
    assert_failed(device, status, events, error)
    if message is not None:
        assert status.message == message
    assert types_of(events) == [E.START, E.ABORT]


async def test_missing_file_is_file_not_found(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(ota=PARTIAL)
    request = request_for(firmware_server, "/there.bin", make_image("1.1.0"), "1.1.0")
    request = replace(request, url=f"{firmware_server.base_url}/missing.bin")
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "File not found(404)"
    assert [(r.method, r.range) for r in firmware_server.requests] == [
        ("HEAD", None),
        ("GET", "bytes=0-0"),
    ]


async def test_resumption_refused_with_416_restarts_from_zero(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.refuse_ranges = {"bytes=99328-150000"}
    device = await make_device(faults=FaultPlan(drop_at_byte=100_000), ota=PARTIAL)
    image = make_image("1.1.0", size=150_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert firmware_server.ranges() == [
        "bytes=0-65535",
        "bytes=65536-131071",
        "bytes=99328-150000",  # 416: resumption refused...
        "bytes=0-65535",  # ...so the download starts over
        "bytes=65536-131071",
        "bytes=131072-",
    ]


async def test_next_chunk_request_failing_is_a_transport_error(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.fail_after_requests = 2  # HEAD and the first chunk
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=150_000)
    status, events = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    aborts = [e for e in events if e.type is E.ABORT]
    assert aborts[0].bytes_written == 65536  # the chunk request failed: resumption tried
    assert status.message == "Server error (500)"  # and its HEAD failed: final


async def test_not_an_image(make_device: DeviceFactory, firmware_server: FirmwareServer) -> None:
    device = await make_device()
    page = b"<html>" + b"x" * 4000
    status, events = await run_ota(device, request_for(firmware_server, "/p.html", page, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "Incorrect app descriptor magic"
    assert types_of(events) == [E.START, E.CONNECTED, E.GET_IMG_DESC, E.ABORT]
    assert next(e for e in events if e.type is E.GET_IMG_DESC).version is None


async def test_file_shorter_than_the_header(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    short = make_image("1.1.0")[:600]
    request = request_for(firmware_server, "/short.bin", short, "1.1.0", size=2048)
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "Complete headers were not received"
    # A complete response that is too short is final (no resumption attempts).
    assert types_of(events) == [E.START, E.CONNECTED, E.GET_IMG_DESC, E.ABORT]


async def test_unreadable_descriptor(
    make_device: DeviceFactory, firmware_server: FirmwareServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_head: bytes) -> Any:
        raise ImageError("segment count 99 is above 16")

    monkeypatch.setattr(https_ota, "read_app_descriptor", refuse)
    device = await make_device()
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "unreadable app descriptor: segment count 99 is above 16"


async def test_wrong_image_magic_fails_on_the_first_write(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = bytearray(make_image("1.1.0"))
    image[0] = 0xE8
    status, events = await run_ota(
        device, request_for(firmware_server, "/m.bin", bytes(image), "1.1.0")
    )
    assert_failed(device, status, events, ESP_ERR_OTA_VALIDATE_FAILED)
    assert "invalid magic byte" in (status.message or "")
    assert types_of(events) == [
        E.START,
        E.CONNECTED,
        E.GET_IMG_DESC,
        E.VERIFY_CHIP_ID,
        E.VERIFY_CHIP_REVISION,
        E.WRITE_FLASH,
        E.ABORT,
    ]
    assert next(e for e in events if e.type is E.WRITE_FLASH).bytes_written == 0


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        ({"chip": "esp32c3"}, "mismatch chip ID"),
        ({"min_chip_rev_full": 302}, "Required >= v3.2"),
        ({"max_chip_rev_full": 300}, "Required <= v3.0"),
    ],
)
async def test_image_for_another_chip_or_revision(
    build: dict[str, Any],
    needle: str,
    make_device: DeviceFactory,
    firmware_server: FirmwareServer,
) -> None:
    device = await make_device(chip_revision=301)
    image = make_image("1.1.0", **build)
    status, events = await run_ota(
        device, request_for(firmware_server, "/chip.bin", image, "1.1.0")
    )
    assert_failed(device, status, events, ESP_ERR_INVALID_VERSION)
    assert needle in (status.message or "")
    assert types_of(events)[-3:] == [E.VERIFY_CHIP_ID, E.VERIFY_CHIP_REVISION, E.ABORT]
    # Refused before a single byte reached flash.
    assert E.WRITE_FLASH not in types_of(events)


async def test_corrupted_chip_id_is_caught_before_writing(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(corrupt_at_byte=12))
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/c.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_INVALID_VERSION)


async def test_corrupt_image_fails_esp_ota_end(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = bytearray(make_image("1.1.0"))
    image[20_000] ^= 0x55  # segment data: checksum and SHA-256 no longer match
    request = request_for(firmware_server, "/bad.bin", bytes(image), "1.1.0")
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_ERR_OTA_VALIDATE_FAILED)
    assert status.message is not None
    assert status.message.startswith("New image failed verification")
    # esp_https_ota_finish posts FINISH even when esp_ota_end failed.
    assert types_of(events)[-2:] == [E.WRITE_FLASH, E.FINISH]


async def test_calls_out_of_order_are_invalid_state(firmware_server: FirmwareServer) -> None:
    ops = make_ops()
    request = request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0")
    session = session_for(ops, request, Recorder())
    with pytest.raises(EspError) as caught:
        await session.perform()
    assert caught.value.name == ESP_FAIL
    with pytest.raises(EspError) as caught:
        await session.get_img_desc()
    assert caught.value.name == ESP_ERR_INVALID_STATE
    assert not session.is_complete_data_received()
    plain = session_for(ops, request, Recorder(), partial_http_download=False)
    with pytest.raises(EspError) as caught:
        plain.is_complete_data_received()  # no HTTP client yet
    assert caught.value.name == ESP_ERR_INVALID_STATE


async def test_a_whole_session_by_hand(firmware_server: FirmwareServer) -> None:
    ops = make_ops()
    image = make_image("1.1.0", size=70_000)
    request = request_for(firmware_server, "/f.bin", image, "1.1.0")
    recorder = Recorder()
    session = session_for(ops, request, recorder)
    await session.begin()
    app = await session.get_img_desc()
    assert app.version == "1.1.0"
    while await session.perform():
        pass
    assert session.is_complete_data_received()
    with pytest.raises(EspError) as caught:
        await session.perform()  # esp_https_ota_perform after SUCCESS: invalid state
    assert caught.value.name == ESP_FAIL
    info = await session.finish()
    assert info is not None
    assert info.app.version == "1.1.0"
    assert ops.boot_partition() == OTA_1
    types = [event for event, _ in recorder.events]
    assert types[-2:] == [E.UPDATE_BOOT_PARTITION, E.FINISH]
    assert recorder.progress[-1] == len(image)


async def test_finish_before_the_download_completed_does_not_switch(
    firmware_server: FirmwareServer,
) -> None:
    ops = make_ops()
    image = make_image("1.1.0", size=70_000)
    recorder = Recorder()
    session = session_for(ops, request_for(firmware_server, "/f.bin", image, "1.1.0"), recorder)
    await session.begin()
    await session.get_img_desc()
    assert await session.perform()  # the first 1024 bytes
    with pytest.raises(EspError) as caught:
        await session.finish()  # esp_ota_end on a partial image
    assert caught.value.name == ESP_ERR_OTA_VALIDATE_FAILED
    assert ops.boot_partition() == OTA_0
    assert recorder.events[-1] == (E.FINISH, {"error": ESP_ERR_OTA_VALIDATE_FAILED})


async def test_finish_right_after_begin_does_nothing(firmware_server: FirmwareServer) -> None:
    ops = make_ops()
    recorder = Recorder()
    request = request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0")
    session = session_for(ops, request, recorder)
    await session.begin()
    assert await session.finish() is None
    assert ops.boot_partition() == OTA_0
