"""esp_https_ota driven directly (no device): state checks, server-side failures, helpers."""

from __future__ import annotations

from typing import Any

import pytest

from custom_components.esp_ota.espota.errors import ImageError
from simulator import https_ota
from simulator.esp_err import (
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_STATE,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from simulator.faults import FaultPlan
from simulator.flash import Flash
from simulator.https_ota import (
    EspHttpsOta,
    OtaConfig,
    RunningApp,
    _content_range_start,
    _content_range_total,
    run_firmware_ota,
)
from simulator.model import OtaEventType, OtaRequest, OtaState
from simulator.ota_ops import EFuse, OtaOps
from simulator.otadata import OtaImgState, OtaSelectEntry
from simulator.pace import Pace, Timing
from simulator.partitions import ADVANCED_HTTPS_OTA_TABLE

from .conftest import DeviceFactory, make_image, request_for
from .firmware_server import FirmwareServer
from .test_https_ota import PARTIAL, assert_failed, run_ota, types_of

E = OtaEventType
OTA_0, OTA_1 = ADVANCED_HTTPS_OTA_TABLE.ota_apps
RUNNING = RunningApp(
    project="esp-ota-demo", version="1.0.0", secure_version_efuse=0, anti_rollback=True
)


class Recorder:
    """An OtaListener that keeps everything."""

    def __init__(self) -> None:
        self.events: list[tuple[OtaEventType, dict[str, Any]]] = []
        self.phases: list[OtaState] = []
        self.progress: list[int] = []

    def on_event(self, event_type: OtaEventType, **fields: Any) -> None:
        self.events.append((event_type, fields))

    def on_phase(self, state: OtaState) -> None:
        self.phases.append(state)

    def on_progress(self, bytes_written: int, image_size: int | None) -> None:
        self.progress.append(bytes_written)


def make_ops() -> OtaOps:
    flash = Flash()
    flash.write(OTA_0.offset, make_image("1.0.0"))
    ops = OtaOps(
        flash=flash,
        table=ADVANCED_HTTPS_OTA_TABLE,
        efuse=EFuse(),
        chip_id=0,
        chip_revision=301,
        timing=Timing(Pace.UNTHROTTLED),
        running=OTA_0,
    )
    ops.otadata.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    return ops


def session_for(ops: OtaOps, request: OtaRequest, recorder: Recorder, **config: Any) -> EspHttpsOta:
    return EspHttpsOta(
        ota_ops=ops,
        config=OtaConfig(**{"timeout_ms": 500, "partial_http_download": True, **config}),
        request=request,
        timing=Timing(Pace.UNTHROTTLED),
        faults=FaultPlan(),
        listener=recorder,
    )


def test_content_range_helpers() -> None:
    assert _content_range_total(None) == -1
    assert _content_range_total("bytes 0-0/1234") == 1234
    assert _content_range_total("bytes */99") == 99
    assert _content_range_total("garbage") == -1
    assert _content_range_start(None) == 0
    assert _content_range_start("bytes 100-200/300") == 100
    assert _content_range_start("garbage") == 0


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


async def test_begin_without_a_certificate(firmware_server: FirmwareServer) -> None:
    ops = make_ops()
    request = request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0", cert_pem="")
    recorder = Recorder()
    with pytest.raises(EspError) as caught:
        await run_firmware_ota(
            ota_ops=ops,
            config=OtaConfig(),
            request=request,
            running=RUNNING,
            timing=Timing(Pace.UNTHROTTLED),
            faults=FaultPlan(),
            listener=recorder,
        )
    assert caught.value.name == ESP_ERR_INVALID_ARG
    assert [event for event, _ in recorder.events] == [E.START, E.ABORT]
    assert recorder.phases == [OtaState.CONNECTING]


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


async def test_server_closing_before_the_headers(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.drop_before_headers = True
    device = await make_device()
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert "response headers" in (status.message or "")


async def test_server_dying_mid_body_is_resumed(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.cut_body_at = 90_000
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=150_000)
    status, events = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert types_of(events).count(E.ABORT) == 1
    assert firmware_server.ranges()[-1].startswith("bytes=")  # type: ignore[union-attr]
    resumed = firmware_server.ranges()[2]
    assert resumed is not None
    assert int(resumed.split("=")[1].split("-")[0]) % 1024 == 0


async def test_short_header_after_a_broken_connection_is_retried(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(truncate_at_byte=500))
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "Complete headers were not received"
    assert types_of(events).count(E.START) == 4


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
