"""esp_https_ota as the simulated device runs it, against a real HTTPS server on 127.0.0.1:
the requests it sends, the events it emits, and every ESP-IDF error it can end with."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from typing import Any

import pytest

from simulator.device import SimulatedDevice
from simulator.esp_err import (
    ESP_ERR_HTTP_CONNECT,
    ESP_ERR_HTTP_EAGAIN,
    ESP_ERR_HTTP_MAX_REDIRECT,
    ESP_ERR_HTTP_NOT_MODIFIED,
    ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE,
    ESP_ERR_HTTP_REDIRECT_DOWNGRADE,
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_VERSION,
    ESP_ERR_NOT_SUPPORTED,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from simulator.faults import FaultPlan
from simulator.flash import SECTOR_SIZE
from simulator.https_ota import USER_AGENT, EspHttpClient, OtaConfig, pinned_ssl_context
from simulator.model import ImageState, OtaEvent, OtaEventType, OtaRequest, OtaState, OtaStatus
from simulator.otadata import OtaImgState, OtaSelectEntry
from simulator.pace import Pace, Timing

from .conftest import DeviceFactory, events_of, make_image, request_for
from .firmware_server import FirmwareServer, make_certificate

E = OtaEventType
# esp_https_ota's partial_http_download (off by default, as in ESP-IDF).
PARTIAL: dict[str, Any] = {"partial_http_download": True}


async def run_ota(device: SimulatedDevice, request: OtaRequest) -> tuple[OtaStatus, list[OtaEvent]]:
    """Start an OTA, wait for it (and any reboot) to end; the final status and events."""
    queue = device.subscribe()
    ota_id = await device.start_ota(request)
    await device.wait_idle(20)
    device.unsubscribe(queue)
    events = events_of(queue)
    assert all(event.ota_id in (ota_id, None) for event in events)
    return device.ota_status(), events


def types_of(events: list[OtaEvent]) -> list[OtaEventType]:
    """Event types with consecutive WRITE_FLASH collapsed into one."""
    out: list[OtaEventType] = []
    for event in events:
        if event.type is E.WRITE_FLASH and out and out[-1] is E.WRITE_FLASH:
            continue
        out.append(event.type)
    return out


SUCCESS_EVENTS = [
    E.START,
    E.CONNECTED,
    E.GET_IMG_DESC,
    E.VERIFY_CHIP_ID,
    E.VERIFY_CHIP_REVISION,
    E.WRITE_FLASH,
    E.UPDATE_BOOT_PARTITION,
    E.FINISH,
    E.REBOOT,
]


def assert_failed(
    device: SimulatedDevice, status: OtaStatus, events: list[OtaEvent], error: str
) -> None:
    """The job failed with `error`, announced by a terminal ABORT or FINISH, boot untouched."""
    assert status.state is OtaState.FAILED, status
    assert status.error == error, status
    terminal = [e for e in events if e.type in (E.ABORT, E.FINISH)]
    assert terminal, events
    assert terminal[-1].error == error
    assert E.UPDATE_BOOT_PARTITION not in types_of(events)
    assert E.REBOOT not in types_of(events)
    info = device.info()
    assert info.running_partition == "ota_0"
    assert info.boot_partition == "ota_0"
    assert info.version == "1.0.0"
    assert device.online


# --- the happy path and the requests it makes ---------------------------------------


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


async def test_trailing_bytes_after_the_image_are_downloaded_and_hashed(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    data = make_image("1.1.0", size=30_000) + b"\x00" * 5000
    status, _ = await run_ota(device, request_for(firmware_server, "/t.bin", data, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert status.bytes_written == len(data)


async def test_downgrade_is_allowed(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("0.9.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/d.bin", image, "0.9.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.info().version == "0.9.0"


# --- HTTP behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_are_followed(
    code: int, make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.redirect_hops = 2
    firmware_server.behaviour.redirect_status = code
    device = await make_device(ota=PARTIAL)
    image = make_image("1.1.0", size=100_000)
    status, _ = await run_ota(device, request_for(firmware_server, "/r.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    paths = [(r.method, r.path, r.range) for r in firmware_server.requests]
    assert paths == [
        ("HEAD", "/r.bin", None),
        ("HEAD", "/r.bin?hop=1", None),
        ("HEAD", "/r.bin?hop=2", None),
        # The client keeps the redirected URL for every later request.
        ("GET", "/r.bin?hop=2", "bytes=0-65535"),
        ("GET", "/r.bin?hop=2", "bytes=65536-"),
    ]


async def test_redirects_on_the_get_are_followed(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.redirect_hops = 1
    device = await make_device(ota={"partial_http_download": False, "ota_resumption": False})
    image = make_image("1.1.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/g.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert [r.path for r in firmware_server.requests] == ["/g.bin", "/g.bin?hop=1"]


async def test_redirect_from_https_to_http_is_refused(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.redirect_hops = 1
    firmware_server.behaviour.redirect_to_http = True
    device = await make_device()
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/x.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_HTTP_REDIRECT_DOWNGRADE)
    assert len(firmware_server.requests) == 1  # nothing was fetched over http


@pytest.mark.parametrize("partial", [True, False])
async def test_endless_redirects(
    partial: bool, make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.redirect_hops = 1000
    device = await make_device(ota={"partial_http_download": partial, "ota_resumption": False})
    image = make_image("1.1.0")
    status, events = await run_ota(
        device, request_for(firmware_server, "/loop.bin", image, "1.1.0")
    )
    assert_failed(device, status, events, ESP_ERR_HTTP_MAX_REDIRECT)
    assert len(firmware_server.requests) == 11  # the first request and 10 redirects


async def test_redirect_without_location(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.redirect_hops = 1
    firmware_server.behaviour.redirect_location = ""
    device = await make_device()
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/nl.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_INVALID_ARG)


async def test_redirect_to_credentials_uses_them(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    behaviour = firmware_server.behaviour
    behaviour.redirect_hops = 1
    behaviour.redirect_location = (
        f"https://bob:secret@127.0.0.1:{firmware_server.port}/cred.bin?hop=1"
    )
    behaviour.basic_auth = ("bob", "secret")
    device = await make_device()
    image = make_image("1.1.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/cred.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


@pytest.mark.parametrize("partial", [True, False])
async def test_basic_auth_after_401_with_url_credentials(
    partial: bool, make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.basic_auth = ("ota", "p4ss")
    device = await make_device(ota={"partial_http_download": partial})
    image = make_image("1.1.0", size=100_000)
    request = request_for(firmware_server, "/a.bin", image, "1.1.0")
    request = replace(request, url=request.url.replace("https://", "https://ota:p4ss@"))
    status, _ = await run_ota(device, request)
    assert status.state is OtaState.SUCCEEDED
    first, second, *rest = firmware_server.requests
    # esp_http_client sends credentials only after the server asked for them.
    assert first.authorization is None
    assert second.authorization == "Basic b3RhOnA0c3M="
    assert all(r.authorization == "Basic b3RhOnA0c3M=" for r in rest)


async def test_401_without_credentials_gives_up_after_the_retries(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.basic_auth = ("ota", "p4ss")
    device = await make_device(ota={"max_authorization_retries": 2})
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/a.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert "max_authorization_retries" in (status.message or "")
    assert len(firmware_server.requests) == 3


@pytest.mark.parametrize("challenge", [None, 'Digest realm="x", nonce="y"'])
async def test_401_with_unsupported_authentication(
    challenge: str | None, make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.basic_auth = ("ota", "p4ss")
    firmware_server.behaviour.auth_challenge = challenge
    device = await make_device(ota={"partial_http_download": False, "ota_resumption": False})
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/a.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_NOT_SUPPORTED)


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


async def test_server_certificate_not_the_pinned_one(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.1.0")
    other = make_certificate("someone else").cert_pem
    request = request_for(firmware_server, "/c.bin", image, "1.1.0", cert_pem=other)
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_ERR_HTTP_CONNECT)
    assert firmware_server.requests == []  # the handshake failed: no request was sent


async def test_connection_refused(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    request = request_for(firmware_server, "/c.bin", make_image("1.1.0"), "1.1.0")
    await firmware_server.close()
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_ERR_HTTP_CONNECT)


async def test_headers_that_never_come_are_eagain(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.header_delay_s = 2.0
    device = await make_device(ota={"timeout_ms": 200})
    request = request_for(firmware_server, "/slow.bin", make_image("1.1.0"), "1.1.0")
    status, events = await run_ota(device, request)
    assert_failed(device, status, events, ESP_ERR_HTTP_EAGAIN)


# --- the image checks -------------------------------------------------------------------


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


async def test_chunked_download_succeeds(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.chunked = True
    device = await make_device(ota={"partial_http_download": False, "ota_resumption": False})
    image = make_image("1.1.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/ch.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


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


# --- pieces tested directly ---------------------------------------------------------------


def test_pinned_context_refuses_garbage() -> None:
    with pytest.raises(EspError) as caught:
        pinned_ssl_context("not a certificate")
    assert caught.value.name == ESP_ERR_INVALID_ARG


def test_http_client_refuses_plain_http() -> None:
    with pytest.raises(EspError) as caught:
        EspHttpClient(
            url="http://127.0.0.1/fw.bin",
            cert_pem=make_certificate().cert_pem,
            headers={},
            config=OtaConfig(),
            timing=Timing(Pace.UNTHROTTLED),
            faults=FaultPlan(),
        )
    assert caught.value.name == ESP_ERR_INVALID_ARG


def test_request_digest_helper() -> None:
    data = b"abc"
    assert hashlib.sha256(data).hexdigest().startswith("ba7816bf")
