"""The app's OTA task: its checks of the request and of the image, the resumption of a
broken download, and its stall watchdog."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from custom_components.esp_ota.espota.protocol import EventType, OtaState
from simulator.esp_err import (
    ESP_ERR_HTTP_READ_TIMEOUT,
    ESP_ERR_INVALID_ARG,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from simulator.faults import FaultPlan
from simulator.http_client import EspHttpClient
from simulator.https_ota import HttpsOtaConfig
from simulator.model import OtaRequest
from simulator.ota_task import OtaTaskConfig, RunningApp, run_firmware_ota, validate_request
from simulator.pace import Pace, Timing

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
from .firmware_server import FirmwareServer, make_certificate
from .test_https_ota import Recorder, make_ops

E = EventType
RUNNING = RunningApp(
    project="esp-ota-demo", version="1.0.0", secure_version_efuse=0, anti_rollback=True
)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:99999/fw.bin",  # a port out of range
        "https://[::1/fw.bin",  # an unclosed IPv6 bracket
        "https://user@/fw.bin",  # no host
        "https://:443/fw.bin",
        "https:///fw.bin",
    ],
)
def test_a_url_without_a_usable_host_is_an_invalid_argument(url: str) -> None:
    """URLs yarl cannot read are refused like any other bad URL (400), not a server error."""
    request = OtaRequest(
        url=url,
        sha256="00" * 32,
        size=4096,
        version="2.0.0",
        cert_pem=make_certificate().cert_pem,
    )
    with pytest.raises(EspError) as refused:
        validate_request(request, 1024 * 1024)
    assert refused.value.name == ESP_ERR_INVALID_ARG


def test_request_digest_helper() -> None:
    data = b"abc"
    assert hashlib.sha256(data).hexdigest().startswith("ba7816bf")


async def test_begin_without_a_certificate(firmware_server: FirmwareServer) -> None:
    ops = make_ops()
    request = request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0", cert_pem="")
    recorder = Recorder()
    with pytest.raises(EspError) as caught:
        await run_firmware_ota(
            ota_ops=ops,
            config=OtaTaskConfig(),
            request=request,
            running=RUNNING,
            timing=Timing(Pace.UNTHROTTLED),
            faults=FaultPlan(),
            listener=recorder,
        )
    assert caught.value.name == ESP_ERR_INVALID_ARG
    assert [event for event, _ in recorder.events] == [E.START, E.ABORT]
    assert recorder.phases == [OtaState.CONNECTING]


@pytest.mark.parametrize(
    ("image_kwargs", "version", "needle"),
    [
        ({"project": "someone-else"}, "1.1.0", "project name"),
        ({}, "1.0.0", "Current running version is the same as a new"),
        ({"secure_version": 0}, "1.1.0", "security version is less than eFuse"),
    ],
)
async def test_validate_image_header_refusals(
    image_kwargs: dict[str, Any],
    version: str,
    needle: str,
    make_device: DeviceFactory,
    firmware_server: FirmwareServer,
) -> None:
    device = await make_device(
        efuse_secure_version=1, factory_image=make_image("1.0.0", secure_version=1)
    )
    image = make_image(version, **image_kwargs)
    status, events = await run_ota(device, request_for(firmware_server, "/v.bin", image, version))
    assert_failed(device, status, events, ESP_FAIL)
    assert needle in (status.message or "")
    assert types_of(events) == [E.START, E.CONNECTED, E.GET_IMG_DESC, E.ABORT]


async def test_image_version_must_be_the_requested_one(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.2.0")
    status, events = await run_ota(device, request_for(firmware_server, "/v.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert "not the requested '1.1.0'" in (status.message or "")


async def test_downgrade_is_allowed(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("0.9.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/d.bin", image, "0.9.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.info().version == "0.9.0"


async def test_announced_size_must_match_the_request(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.1.0")
    request = request_for(firmware_server, "/s.bin", image, "1.1.0", size=len(image) + 1)
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_ERR_OTA_VALIDATE_FAILED)
    assert "announces" in (status.message or "")


async def test_received_size_must_match_the_request(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    # Chunked, without resumption or partial download: the length is only known at the end.
    firmware_server.behaviour.chunked = True
    device = await make_device(ota={"partial_http_download": False, "ota_resumption": False})
    image = make_image("1.1.0")
    request = request_for(firmware_server, "/s.bin", image, "1.1.0", size=len(image) + 4)
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_ERR_OTA_VALIDATE_FAILED)
    assert "received" in (status.message or "")
    assert next(e for e in events if e.type is E.CONNECTED).image_size is None


async def test_sha256_must_match_the_request(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.1.0")
    request = request_for(firmware_server, "/h.bin", image, "1.1.0", sha256="ab" * 32)
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_ERR_OTA_VALIDATE_FAILED)
    assert "SHA-256 of the staged image" in (status.message or "")
    assert types_of(events)[-2:] == [E.WRITE_FLASH, E.ABORT]


async def test_trailing_bytes_after_the_image_are_downloaded_and_hashed(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    data = make_image("1.1.0", size=30_000) + b"\x00" * 5000
    status, _ = await run_ota(device, request_for(firmware_server, "/t.bin", data, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert status.bytes_written == len(data)


async def test_dropped_connection_is_resumed_with_a_range_request(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(drop_at_byte=100_000), ota=PARTIAL)
    image = make_image("1.1.0", size=150_000)
    status, events = await run_ota(device, request_for(firmware_server, "/d.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.faults.drop_at_byte is None  # one-shot
    # The broken attempt ends with ABORT, the resumed one starts over with START.
    assert types_of(events) == [
        *SUCCESS_EVENTS[:6],
        E.ABORT,
        E.START,
        E.CONNECTED,
        E.GET_IMG_DESC,
        E.WRITE_FLASH,
        *SUCCESS_EVENTS[6:],
    ]
    abort = next(e for e in events if e.type is E.ABORT)
    assert (abort.error, abort.bytes_written) == (ESP_FAIL, 100_000)
    # Resumed from the written length in whole KiB (97 * 1024 = 99328), and the first
    # request of the resumed attempt shows esp_https_ota's quirk: it asks for
    # image_length (150000), not image_length - 1, when one request covers the rest.
    assert [(r.method, r.range) for r in firmware_server.requests] == [
        ("HEAD", None),
        ("GET", "bytes=0-65535"),
        ("GET", "bytes=65536-131071"),
        ("HEAD", None),
        ("GET", "bytes=99328-150000"),
    ]
    assert device.flash.program_conflicts == 0
    assert device.info().version == "1.1.0"


async def test_resumption_across_several_chunks(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(drop_at_byte=20_000), ota=PARTIAL)
    image = make_image("1.1.0", size=150_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/d.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert firmware_server.ranges() == ["bytes=0-65535", "bytes=19456-84991", "bytes=84992-"]


async def test_drop_before_1_kib_restarts_from_zero(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(drop_at_byte=500), ota=PARTIAL)
    image = make_image("1.1.0", size=40_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/d.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert firmware_server.ranges() == [None, None]


async def test_dropped_connection_without_partial_download(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(
        faults=FaultPlan(drop_at_byte=50_000), ota={"partial_http_download": False}
    )
    image = make_image("1.1.0", size=80_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/d.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert firmware_server.ranges() == ["bytes=0-", "bytes=49152-"]


async def test_dropped_connection_without_resumption_fails(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(drop_at_byte=30_000), ota={"ota_resumption": False})
    image = make_image("1.1.0", size=40_000)
    status, events = await run_ota(device, request_for(firmware_server, "/d.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert types_of(events).count(E.START) == 1


async def test_resuming_against_a_server_without_range_support_fails(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.support_range = False
    device = await make_device(faults=FaultPlan(drop_at_byte=30_000), ota=PARTIAL)
    image = make_image("1.1.0", size=40_000)
    status, events = await run_ota(device, request_for(firmware_server, "/d.bin", image, "1.1.0"))
    # The ranged request of the resumed attempt gets the whole file with 200; written at
    # the resume offset it overshoots the image, so the download never completes.
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "Complete data was not received."


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


async def test_truncated_responses_fail_after_the_resume_attempts(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(truncate_at_byte=30_000), ota=PARTIAL)
    image = make_image("1.1.0", size=40_000)
    status, events = await run_ota(device, request_for(firmware_server, "/t.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert status.message == "Connection closed before complete data was received!"
    assert types_of(events).count(E.START) == 1 + device.config.ota.max_resume_attempts
    assert firmware_server.ranges() == [
        None,
        "bytes=29696-40000",
        "bytes=29696-40000",
        "bytes=29696-40000",
    ]


async def test_long_stall_trips_the_firmware_watchdog(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(
        faults=FaultPlan(stall_at_byte=20_000, stall_seconds=30),
        ota={"timeout_ms": 100, "stall_abort_ms": 400},
    )
    image = make_image("1.1.0", size=40_000)
    started = time.monotonic()
    status, events = await run_ota(device, request_for(firmware_server, "/s.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_HTTP_READ_TIMEOUT)
    assert 0.35 < time.monotonic() - started < 5
    assert status.bytes_written == 20_000


async def test_stall_during_the_header_trips_the_watchdog(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(
        faults=FaultPlan(stall_at_byte=100, stall_seconds=30),
        ota={"timeout_ms": 100, "stall_abort_ms": 300},
    )
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/s.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_HTTP_READ_TIMEOUT)


async def test_short_stall_is_waited_out(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(
        faults=FaultPlan(stall_at_byte=20_000, stall_seconds=0.35),
        ota={"timeout_ms": 100, "stall_abort_ms": 2000},
    )
    image = make_image("1.1.0", size=40_000)
    started = time.monotonic()
    status, _ = await run_ota(device, request_for(firmware_server, "/s.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert time.monotonic() - started >= 0.35
    assert device.faults.stall_at_byte is None


def test_settings_go_where_esp_idf_keeps_them() -> None:
    """Flat settings land in esp_http_client_config_t, esp_https_ota_config_t or the
    task's own limits; each download adds its URL, certificate, headers and offset."""
    config = OtaTaskConfig().with_settings(
        timeout_ms=700, partial_http_download=True, stall_abort_ms=900
    )
    assert config.stall_abort_ms == 900
    assert config.ota_config.partial_http_download
    assert config.ota_config.ota_resumption  # the firmware's own choice, kept
    http_config = config.ota_config.http_config
    assert (http_config.timeout_ms, http_config.buffer_size) == (700, 4096)
    assert HttpsOtaConfig().http_config.buffer_size == 512  # ESP-IDF's default
    with pytest.raises(TypeError):
        OtaTaskConfig().with_settings(no_such_setting=1)
    request = OtaRequest(
        url="https://127.0.0.1/fw.bin",
        sha256="00" * 32,
        size=4096,
        version="2.0.0",
        cert_pem=make_certificate().cert_pem,
        headers={"X-Token": "t0k"},
    )
    download = config.download_config(request, 2048)
    assert (download.http_config.url, download.http_config.cert_pem) == (
        request.url,
        request.cert_pem,
    )
    assert download.ota_image_bytes_written == 2048

    client = EspHttpClient(
        download.http_config, timing=Timing(Pace.UNTHROTTLED), faults=FaultPlan()
    )
    assert download.http_client_init_cb is not None
    download.http_client_init_cb(client)
    assert client.custom_headers == {"X-Token": "t0k"}
