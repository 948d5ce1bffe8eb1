"""esp_http_client as the OTA download uses it, against a real HTTPS server on 127.0.0.1:
certificate pinning, redirects, Basic auth, timeouts, chunked bodies, and the faults
injected on what it receives."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from custom_components.esp_ota.espota.protocol import OtaState
from simulator.esp_err import (
    ESP_ERR_HTTP_CONNECT,
    ESP_ERR_HTTP_EAGAIN,
    ESP_ERR_HTTP_MAX_REDIRECT,
    ESP_ERR_HTTP_REDIRECT_DOWNGRADE,
    ESP_ERR_INVALID_ARG,
    ESP_ERR_NOT_SUPPORTED,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from simulator.faults import FaultPlan
from simulator.http_client import (
    EspHttpClient,
    HttpClientConfig,
    _content_range_start,
    _content_range_total,
    pinned_ssl_context,
)
from simulator.pace import Pace, Timing

from .conftest import PARTIAL, DeviceFactory, assert_failed, make_image, request_for, run_ota
from .firmware_server import FirmwareServer, make_certificate, start_firmware_server


def test_content_range_helpers() -> None:
    assert _content_range_total(None) == -1
    assert _content_range_total("bytes 0-0/1234") == 1234
    assert _content_range_total("bytes */99") == 99
    assert _content_range_total("garbage") == -1
    assert _content_range_start(None) == 0
    assert _content_range_start("bytes 100-200/300") == 100
    assert _content_range_start("garbage") == 0


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


async def test_pinning_a_leaf_certificate_works(
    make_device: DeviceFactory, socket_enabled: None
) -> None:
    # mbedTLS trusts whatever certificate is pinned, CA or not.
    server = await start_firmware_server(make_certificate(ca=False))
    try:
        device = await make_device()
        image = make_image("1.1.0")
        status, _ = await run_ota(device, request_for(server, "/f.bin", image, "1.1.0"))
        assert status.state is OtaState.SUCCEEDED
    finally:
        await server.close()


async def test_wrong_certificate_fault(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(wrong_certificate=True))
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/w.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_HTTP_CONNECT)
    assert firmware_server.requests == []
    device.faults.wrong_certificate = False
    status, _ = await run_ota(device, request_for(firmware_server, "/w.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


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


async def test_server_closing_before_the_headers(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.drop_before_headers = True
    device = await make_device()
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_FAIL)
    assert "response headers" in (status.message or "")


async def test_chunked_download_succeeds(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    firmware_server.behaviour.chunked = True
    device = await make_device(ota={"partial_http_download": False, "ota_resumption": False})
    image = make_image("1.1.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/ch.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


async def test_slow_link(make_device: DeviceFactory, firmware_server: FirmwareServer) -> None:
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=100_000))
    image = make_image("1.1.0", size=60_000)
    started = time.monotonic()
    status, _ = await run_ota(device, request_for(firmware_server, "/s.bin", image, "1.1.0"))
    elapsed = time.monotonic() - started
    assert status.state is OtaState.SUCCEEDED
    assert 0.55 <= elapsed < 3  # 60 kB at 100 kB/s


async def test_corrupted_byte_fails_verification(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(corrupt_at_byte=70_000), ota=PARTIAL)
    image = make_image("1.1.0", size=100_000)
    status, events = await run_ota(device, request_for(firmware_server, "/c.bin", image, "1.1.0"))
    assert_failed(device, status, events, ESP_ERR_OTA_VALIDATE_FAILED)
    assert device.faults.corrupt_at_byte == 70_000  # persistent
    staged = device.flash.read(device.table.ota_apps[1].offset + 70_000, 1)
    assert staged == bytes([image[70_000] ^ 0xFF])


def test_pinned_context_refuses_garbage() -> None:
    with pytest.raises(EspError) as caught:
        pinned_ssl_context("not a certificate")
    assert caught.value.name == ESP_ERR_INVALID_ARG


def test_http_client_refuses_plain_http() -> None:
    with pytest.raises(EspError) as caught:
        EspHttpClient(
            HttpClientConfig(url="http://127.0.0.1/fw.bin", cert_pem=make_certificate().cert_pem),
            timing=Timing(Pace.UNTHROTTLED),
            faults=FaultPlan(),
        )
    assert caught.value.name == ESP_ERR_INVALID_ARG
