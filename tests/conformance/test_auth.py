"""Authentication first, on every path and method; then 404, 405 and 413."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import pytest

from custom_components.esp_ota.espota.protocol import ImageState, OtaState

from .conftest import DutFactory
from .devices import DeviceOptions, DeviceUnderTest
from .support import (
    API,
    ENDPOINTS,
    UNAUTHORIZED,
    WWW_AUTHENTICATE,
    FirmwareHost,
    assert_not_rebooted,
    assert_on,
    make_image,
    mark_uptime,
    raw_request,
    update_successfully,
)

UNKNOWN = (
    ("GET", "/"),
    ("GET", f"{API}/nope"),
    ("POST", f"{API}/nope"),
    ("GET", "/api/v2/info"),
    ("POST", f"{API}/info"),  # a known path, a wrong method
    ("GET", f"{API}/reboot"),
    ("PUT", f"{API}/ota"),
)
SAMPLE_PATHS = (("GET", f"{API}/info"), ("POST", f"{API}/reboot"), ("GET", f"{API}/nope"))
MAX_BODY = 16 * 1024


def _bad_authorizations(secret: str) -> dict[str, str | None]:
    return {
        "none": None,
        "wrong secret": "Bearer not-the-secret",
        "secret with a suffix": f"Bearer {secret}x",
        "secret prefix": f"Bearer {secret[:-1]}",
        "basic scheme": f"Basic {secret}",
        "no scheme": secret,
        "empty secret": "Bearer ",
        "bare scheme": "Bearer",
    }


async def _refused_everywhere(
    dut: DeviceUnderTest,
    authorization: str | None,
    body: bytes,
    paths: tuple[tuple[str, str], ...] | None = None,
) -> None:
    for method, path in paths or (*ENDPOINTS, *UNKNOWN):
        response = await raw_request(
            dut,
            method,
            path,
            authorization=authorization,
            body=body if method in ("POST", "PUT") else None,
        )
        where = f"{method} {path} with Authorization {authorization!r}"
        assert response.status == 401, f"{where}: HTTP {response.status} {response.body[:200]!r}"
        assert response.error() == UNAUTHORIZED, where
        assert response.headers.get("WWW-Authenticate") == WWW_AUTHENTICATE, (
            where,
            dict(response.headers),
        )


async def test_unauthenticated_requests_get_401_and_do_nothing(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """Every missing or wrong credential, every path and method (unknown ones too): 401
    HTTPD_401_UNAUTHORIZED with the Bearer challenge. On a device whose new image waits
    for confirmation, nothing happens: no confirmation, no rollback, no reboot, no update."""
    await update_successfully(dut, firmware.publish(make_image("1.1.0"), "1.1.0"))
    before = await dut.client.info()
    connections = len(firmware.proxy.connections)
    offer = firmware.publish(make_image("2.0.0"), "2.0.0")
    body = json.dumps(offer.body()).encode()
    mark = await mark_uptime(dut)
    # Every path and method without credentials and with a wrong secret; the other
    # spellings on a few paths (each request is a TLS handshake: slow on a device).
    for name, authorization in _bad_authorizations(dut.secret).items():
        paths = None if name in ("none", "wrong secret") else SAMPLE_PATHS
        await _refused_everywhere(dut, authorization, body, paths)
    oversized = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
    response = await raw_request(
        dut, "POST", f"{API}/ota", authorization="Bearer wrong", body=oversized
    )
    assert (response.status, response.error()) == (401, UNAUTHORIZED)

    info = await assert_not_rebooted(dut, mark)
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.PENDING_VERIFY)
    assert info.last_ota == before.last_ota
    assert await dut.client.ota_status() == before.last_ota
    assert len(firmware.proxy.connections) == connections, "an update started"


async def test_a_device_with_an_empty_secret_refuses_everyone(make_dut: DutFactory) -> None:
    """An empty provisioned secret matches nothing, not even an empty Bearer token."""
    dut = await make_dut(DeviceOptions(secret=""))
    for authorization in ("Bearer ", "Bearer", None, "Bearer x"):
        response = await raw_request(dut, "GET", f"{API}/info", authorization=authorization)
        assert (response.status, response.error()) == (401, UNAUTHORIZED), authorization
        assert response.headers.get("WWW-Authenticate") == WWW_AUTHENTICATE


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/", 404, "ESP_ERR_NOT_FOUND"),
        ("GET", f"{API}/nope", 404, "ESP_ERR_NOT_FOUND"),
        ("POST", f"{API}/ota/nope", 404, "ESP_ERR_NOT_FOUND"),
        ("GET", "/api/v2/info", 404, "ESP_ERR_NOT_FOUND"),
        ("POST", f"{API}/info", 405, "ESP_ERR_NOT_SUPPORTED"),
        ("GET", f"{API}/reboot", 405, "ESP_ERR_NOT_SUPPORTED"),
        ("GET", f"{API}/ota/confirm", 405, "ESP_ERR_NOT_SUPPORTED"),
        ("PUT", f"{API}/ota", 405, "ESP_ERR_NOT_SUPPORTED"),
        ("DELETE", f"{API}/ota", 405, "ESP_ERR_NOT_SUPPORTED"),
        ("POST", f"{API}/events", 405, "ESP_ERR_NOT_SUPPORTED"),
    ],
)
async def test_unknown_paths_and_wrong_methods(
    dut: DeviceUnderTest, method: str, path: str, status: int, error: str
) -> None:
    """Authenticated: 404 ESP_ERR_NOT_FOUND for no such endpoint, 405
    ESP_ERR_NOT_SUPPORTED for a method the endpoint does not have."""
    body = b"{}" if method in ("POST", "PUT") else None
    response = await raw_request(dut, method, path, body=body)
    assert response.status == status, f"{method} {path}: {response.status} {response.body!r}"
    assert response.error() == error
    assert response.headers["Content-Type"].startswith("application/json")


async def test_request_bodies_over_16_kib_get_413(dut: DeviceUnderTest) -> None:
    """A body of 16 KiB is read (and refused for what it says); one byte more is 413
    ESP_ERR_INVALID_SIZE."""
    prefix, suffix = b'{"pad": "', b'"}'
    exact = prefix + b"x" * (MAX_BODY - len(prefix) - len(suffix)) + suffix
    assert len(exact) == MAX_BODY
    response = await raw_request(dut, "POST", f"{API}/ota", body=exact)
    assert (response.status, response.error()) == (400, "ESP_ERR_INVALID_ARG")
    over = prefix + b"x" * (MAX_BODY + 1 - len(prefix) - len(suffix)) + suffix
    response = await raw_request(dut, "POST", f"{API}/ota", body=over)
    assert (response.status, response.error()) == (413, "ESP_ERR_INVALID_SIZE")
    status = await dut.client.ota_status()
    assert status.state is OtaState.IDLE


# docs/protocol.md: a request body must arrive within 10 s of the request's headers.
BODY_DEADLINE_S = 10.0


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "trickled"])
async def test_a_body_that_does_not_arrive_is_dropped(dut: DeviceUnderTest, trickle: bool) -> None:
    """A client announces a body and sends only its start, then nothing or a byte a
    second: the device waits for it no longer than the contract's bound, drops the
    connection without an answer, and serves the next client."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the device's own certificate; this is not DeviceClient
    reader, writer = await asyncio.open_connection(dut.host, dut.port, ssl=context)

    async def trickle_bytes() -> None:
        while True:
            await asyncio.sleep(1.0)
            writer.write(b"a")
            await writer.drain()

    trickler = asyncio.create_task(trickle_bytes()) if trickle else None
    try:
        writer.write(
            b"POST /api/v1/ota HTTP/1.1\r\nHost: device\r\n"
            + f"Authorization: Bearer {dut.secret}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"url": "https://'
        )
        await writer.drain()
        started = time.monotonic()
        async with asyncio.timeout(BODY_DEADLINE_S + 10):
            answer = await reader.read()  # until the device closes the connection
        waited = time.monotonic() - started
    finally:
        if trickler is not None:
            trickler.cancel()
            await asyncio.gather(trickler, return_exceptions=True)
        writer.close()
    assert answer == b""
    assert waited < BODY_DEADLINE_S + 5, f"the connection was held {waited:.1f} s"
    info = await dut.client.info()
    assert info.last_ota.state is OtaState.IDLE


@pytest.mark.parametrize("path", [f"{API}/ota", f"{API}/no-such-endpoint"])
async def test_a_refused_request_with_a_body_is_not_read(dut: DeviceUnderTest, path: str) -> None:
    """Without the secret, a request that announces a body of 100 MB gets its 401 and its
    connection closed: the device does not read (nor discard) what it was never going to
    take, however long the client keeps sending."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the device's own certificate; this is not DeviceClient
    reader, writer = await asyncio.open_connection(dut.host, dut.port, ssl=context)
    chunk = b"x" * 65536

    async def keep_sending() -> None:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: device\r\nAuthorization: Bearer wrong\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
        )
        while True:
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(keep_sending())
    answer = b""
    try:
        async with asyncio.timeout(10):  # the device closes the connection before this
            while chunk_read := await reader.read(4096):
                answer += chunk_read
    except ConnectionResetError:
        pass  # closed with the client's bytes unread: the kernel answers them with a reset
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    # The 401 may be lost to that reset; what did arrive is the 401.
    assert not answer or answer.startswith(b"HTTP/1.1 401"), answer[:80]
