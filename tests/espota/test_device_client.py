"""The library's device client against hand-made HTTPS servers (no simulator).

A stub device answers whatever a test tells it, so the client's handling of every answer
protocol v1 allows, and of those it does not, is pinned down exactly: models, typed
errors, certificate pinning, the event stream's parsing, reconnection and backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from custom_components.esp_ota.espota import device_client
from custom_components.esp_ota.espota.device_client import MAX_ANSWER_BYTES, DeviceClient
from custom_components.esp_ota.espota.errors import (
    CertificateMismatchError,
    DeviceBusyError,
    DeviceError,
    DeviceProtocolError,
    DeviceRefusedError,
    DeviceTimeoutError,
    DeviceUnauthorizedError,
    DeviceUnreachableError,
    EspOtaError,
)
from custom_components.esp_ota.espota.protocol import (
    DeviceEvent,
    DeviceInfo,
    EventType,
    ImageState,
    OtaState,
    OtaStatus,
)
from tests.simulator.firmware_server import make_certificate

SECRET = "stub-secret"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS = {
    "state": "downloading",
    "ota_id": "abc123",
    "target_version": "2.0.0",
    "bytes_written": 4096,
    "image_size": 65536,
    "error": None,
    "message": None,
}
INFO = {
    "api": 1,
    "mac": "24:0a:c4:00:00:01",
    "chip": "esp32",
    "chip_revision": 301,
    "project": "garden",
    "version": "1.2.0",
    "idf_ver": "v5.5.1",
    "app_elf_sha256": "ab" * 32,
    "secure_version": 2,
    "running_partition": "ota_1",
    "boot_partition": "ota_1",
    "image_state": "pending_verify",
    "last_invalid_partition": None,
    "last_ota": STATUS,
    "reset_reason": "ESP_RST_SW",
    "uptime_s": 12,
}


def sse(event_id: int, event_type: str, **fields: Any) -> bytes:
    """One server-sent event as a device writes it."""
    data = json.dumps({"id": event_id, "type": event_type, "ota_id": "abc123", **fields})
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n".encode()


@dataclass
class StubDevice:
    """An HTTPS server on 127.0.0.1 whose answers the test sets per path."""

    port: int
    fingerprint: str
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[web.Request] = field(default_factory=list)

    def answer(self, path: str, body: Any, status: int = 200) -> None:
        """Answer `path` with a JSON body (or raw bytes)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if isinstance(body, bytes):
                return web.Response(status=status, body=body, content_type="text/html")
            return web.json_response(body, status=status)

        self.routes[f"/api/v1{path}"] = handler

    def stream(self, *bodies: bytes | None) -> None:
        """GET /api/v1/events: one body per connection (None: answer 503), then 503."""
        remaining = list(bodies)

        async def handler(request: web.Request) -> web.StreamResponse:
            body = remaining.pop(0) if remaining else None
            if body is None:
                return web.Response(status=503)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(body)
            return response

        self.routes["/api/v1/events"] = handler


@pytest.fixture
async def stub(socket_enabled: None) -> AsyncIterator[StubDevice]:
    """A stub device with its own self-signed certificate."""
    certificate = make_certificate("stub device")
    der = x509.load_pem_x509_certificate(certificate.cert_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    device = StubDevice(port=0, fingerprint=hashlib.sha256(der).hexdigest())

    async def dispatch(request: web.Request) -> web.StreamResponse:
        device.requests.append(request)
        handler = device.routes.get(request.path)
        if handler is None:
            return web.json_response({"error": "ESP_ERR_NOT_FOUND", "message": "?"}, status=404)
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=certificate.server_context())
    await site.start()
    device.port = runner.addresses[0][1]
    yield device
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The injected session (the client never makes its own)."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def client_of(stub: StubDevice, session: aiohttp.ClientSession, **kwargs: Any) -> DeviceClient:
    """A client pinned to the stub's certificate."""
    kwargs.setdefault("cert_fingerprint", stub.fingerprint)
    return DeviceClient(session, "127.0.0.1", stub.port, SECRET, **kwargs)


def free_port() -> int:
    """A port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect pauses of 10 ms doubling to 40 ms."""
    monkeypatch.setattr(device_client, "EVENT_RECONNECT_MIN_S", 0.01)
    monkeypatch.setattr(device_client, "EVENT_RECONNECT_MAX_S", 0.04)


def test_error_hierarchy() -> None:
    """Every client error is a DeviceError and an EspOtaError; busy is a refusal."""
    for error in (
        DeviceUnreachableError,
        DeviceTimeoutError,
        DeviceUnauthorizedError,
        DeviceBusyError,
        DeviceRefusedError,
        DeviceProtocolError,
        CertificateMismatchError,
    ):
        assert issubclass(error, DeviceError)
        assert issubclass(error, EspOtaError)
    assert issubclass(DeviceTimeoutError, DeviceUnreachableError)
    assert issubclass(DeviceBusyError, DeviceRefusedError)
    refused = DeviceRefusedError("ESP_ERR_INVALID_ARG", "bad url")
    assert (refused.error, refused.message, str(refused)) == (
        "ESP_ERR_INVALID_ARG",
        "bad url",
        "ESP_ERR_INVALID_ARG: bad url",
    )


async def test_models_and_requests(stub: StubDevice, session: aiohttp.ClientSession) -> None:
    """Each method sends the documented request and returns typed, frozen models."""
    client = client_of(stub, session)
    assert client.base_url == f"https://127.0.0.1:{stub.port}/api/v1"
    stub.answer("/info", INFO)
    stub.answer("/ota", STATUS)
    info = await client.info()
    assert info == DeviceInfo(
        api=1,
        mac="24:0a:c4:00:00:01",
        chip="esp32",
        chip_revision=301,
        project="garden",
        version="1.2.0",
        idf_ver="v5.5.1",
        app_elf_sha256="ab" * 32,
        secure_version=2,
        running_partition="ota_1",
        boot_partition="ota_1",
        image_state=ImageState.PENDING_VERIFY,
        last_invalid_partition=None,
        last_ota=OtaStatus(OtaState.DOWNLOADING, "abc123", "2.0.0", 4096, 65536, None, None),
        reset_reason="ESP_RST_SW",
        uptime_s=12.0,
    )
    with pytest.raises(AttributeError):
        info.version = "9"  # type: ignore[misc]
    assert await client.ota_status() == info.last_ota

    captured: list[Any] = []

    async def start(request: web.Request) -> web.Response:
        captured.append(await request.json())
        return web.json_response({"ota_id": "job-1"}, status=202)

    stub.routes["/api/v1/ota"] = start
    ota_id = await client.start_ota(
        url="https://fw.local/a.bin",
        sha256="cd" * 32,
        size=4096,
        version="2.0.0",
        cert_pem="PEM",
        headers={"X-Token": "t"},
    )
    assert ota_id == "job-1"
    assert captured == [
        {
            "url": "https://fw.local/a.bin",
            "sha256": "cd" * 32,
            "size": 4096,
            "version": "2.0.0",
            "cert_pem": "PEM",
            "headers": {"X-Token": "t"},
        }
    ]
    for path in ("/ota/abort", "/ota/confirm", "/ota/rollback", "/reboot"):
        stub.answer(path, {"ok": True})
    await client.abort_ota()
    await client.confirm()
    await client.rollback()
    await client.reboot()
    sent = [(request.method, request.path) for request in stub.requests]
    assert sent[-4:] == [
        ("POST", "/api/v1/ota/abort"),
        ("POST", "/api/v1/ota/confirm"),
        ("POST", "/api/v1/ota/rollback"),
        ("POST", "/api/v1/reboot"),
    ]
    assert {request.headers["Authorization"] for request in stub.requests} == {f"Bearer {SECRET}"}


async def test_refusals_are_typed(stub: StubDevice, session: aiohttp.ClientSession) -> None:
    """401 -> unauthorized; 409 ESP_ERR_INVALID_STATE on POST /ota -> busy; others refused."""
    client = client_of(stub, session)
    stub.answer("/info", {"error": "HTTPD_401_UNAUTHORIZED", "message": "no"}, status=401)
    with pytest.raises(DeviceUnauthorizedError):
        await client.info()
    stub.answer("/ota", {"error": "ESP_ERR_INVALID_STATE", "message": "OTA x runs"}, status=409)
    with pytest.raises(DeviceBusyError) as busy:
        await client.start_ota(url="u", sha256="s", size=1, version="v", cert_pem="c")
    assert (busy.value.error, busy.value.message) == ("ESP_ERR_INVALID_STATE", "OTA x runs")
    stub.answer("/ota", {"error": "ESP_ERR_OTA_ROLLBACK_INVALID_STATE", "message": "m"}, 409)
    with pytest.raises(DeviceRefusedError) as pending:
        await client.start_ota(url="u", sha256="s", size=1, version="v", cert_pem="c")
    assert not isinstance(pending.value, DeviceBusyError)
    assert pending.value.error == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
    stub.answer("/ota/abort", {"error": "ESP_ERR_INVALID_STATE", "message": "nothing"}, 409)
    with pytest.raises(DeviceRefusedError) as nothing:
        await client.abort_ota()
    assert not isinstance(nothing.value, DeviceBusyError)
    stub.answer("/ota/confirm", {"error": "ESP_ERR_NOT_FOUND"}, status=404)
    with pytest.raises(DeviceRefusedError) as missing:
        await client.confirm()
    assert (missing.value.error, missing.value.message) == ("ESP_ERR_NOT_FOUND", "")


async def test_protocol_violations(stub: StubDevice, session: aiohttp.ClientSession) -> None:
    """Answers protocol v1 does not allow are DeviceProtocolError, never a crash."""
    client = client_of(stub, session)
    stub.answer("/info", b"<html>")
    with pytest.raises(DeviceProtocolError, match="not JSON"):
        await client.info()
    stub.answer("/info", [1, 2])
    with pytest.raises(DeviceProtocolError, match="expected a JSON object"):
        await client.info()
    stub.answer("/info", {**INFO, "last_ota": "none"})
    with pytest.raises(DeviceProtocolError, match=r"info\.last_ota: expected a JSON object"):
        await client.info()
    stub.answer("/info", {**INFO, "uptime_s": "long"})
    with pytest.raises(DeviceProtocolError, match=r"info\.uptime_s"):
        await client.info()
    stub.answer("/info", {**INFO, "api": True})  # a bool is not a number here
    with pytest.raises(DeviceProtocolError, match=r"info\.api"):
        await client.info()
    stub.answer("/ota", {**STATUS, "state": "exploded"})
    with pytest.raises(DeviceProtocolError, match="unknown value 'exploded'"):
        await client.ota_status()
    stub.answer("/ota", {**STATUS, "bytes_written": "lots"})
    with pytest.raises(DeviceProtocolError, match="bytes_written"):
        await client.ota_status()
    stub.answer("/ota", {"ota": 5}, status=202)
    with pytest.raises(DeviceProtocolError, match="ota_id"):
        await client.start_ota(url="u", sha256="s", size=1, version="v", cert_pem="c")
    stub.answer("/ota/confirm", {"message": "no error name"}, status=500)
    with pytest.raises(DeviceProtocolError, match="error"):
        await client.confirm()
    stub.answer("/reboot", b"", status=200)
    with pytest.raises(DeviceProtocolError, match="not JSON"):
        await client.reboot()


async def test_event_stream_parsing(stub: StubDevice, session: aiohttp.ClientSession) -> None:
    """Comments, id/event lines and CRLF are skipped; several data lines join."""
    client = client_of(stub, session)
    stub.stream(
        b": connected\r\n\r\n"
        + sse(1, "start")
        + b'id: 2\r\nevent: write_flash\r\ndata: {"id": 2, "type": "write_flash",\r\n'
        b'data: "bytes_written": 4096, "image_size": 8192}\r\n\r\n'
        + sse(3, "abort", error="ESP_FAIL")
        + b"id: 4\n\n"  # no data: not an event
    )
    events = [event async for event in client.events(reconnect=False)]
    assert events == [
        DeviceEvent(1, EventType.START, "abc123", None, None, None, None, None),
        DeviceEvent(2, EventType.WRITE_FLASH, None, 4096, 8192, None, None, None),
        DeviceEvent(3, EventType.ABORT, "abc123", None, None, None, None, "ESP_FAIL"),
    ]
    assert stub.requests[-1].headers["Accept"] == "text/event-stream"
    assert "Last-Event-ID" not in stub.requests[-1].headers


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"data: not json\n\n", "not JSON"),
        (b'data: {"id": 1, "type": "teleport"}\n\n', "unknown value 'teleport'"),
        (b"data: " + b"x" * 40_000 + b"\ndata: " + b"x" * 40_000 + b"\n", "larger than"),
        (b"data: " + b"x" * 300_000, "unreadable stream"),
    ],
    ids=["not-json", "unknown-type", "too-large", "endless-line"],
)
async def test_event_stream_violations(
    stub: StubDevice, session: aiohttp.ClientSession, body: bytes, match: str
) -> None:
    """Garbage on the event stream is a DeviceProtocolError."""
    stub.stream(body)
    with pytest.raises(DeviceProtocolError, match=match):
        async for _ in client_of(stub, session).events(reconnect=False):
            pass


async def test_event_stream_refusals(stub: StubDevice, session: aiohttp.ClientSession) -> None:
    """401 ends the stream even with reconnect; another status is a protocol error."""
    client = client_of(stub, session)
    stub.stream(None)
    with pytest.raises(DeviceProtocolError, match="HTTP 503"):
        async for _ in client.events(reconnect=False):
            pass

    async def unauthorized(request: web.Request) -> web.Response:
        return web.json_response({"error": "HTTPD_401_UNAUTHORIZED", "message": "no"}, status=401)

    stub.routes["/api/v1/events"] = unauthorized
    with pytest.raises(DeviceUnauthorizedError):
        async for _ in client.events():
            pass


async def test_reconnects_with_last_event_id(
    stub: StubDevice, session: aiohttp.ClientSession, fast_reconnect: None
) -> None:
    """A stream that ends is reopened with Last-Event-ID of the last event seen."""
    stub.stream(sse(1, "start") + sse(2, "connected"), None, sse(3, "reboot"))
    client = client_of(stub, session)
    seen: list[int] = []
    changes: list[tuple[bool, int]] = []  # (up, events seen) at each change of the stream
    stream = client.events(on_stream=lambda up: changes.append((up, len(seen))))
    async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
        async for event in events:
            seen.append(event.id)
            if event.type is EventType.REBOOT:
                break
    assert seen == [1, 2, 3]
    last_ids = [request.headers.get("Last-Event-ID") for request in stub.requests]
    assert last_ids == [None, "2", "2"]
    # Up at the first connection, down when it ended (once, though the next attempt was
    # refused with 503 as well), up again at the one accepted again.
    assert changes == [(True, 0), (False, 2), (True, 2)]


async def test_a_stream_that_cannot_open_is_told_down_once(
    stub: StubDevice, session: aiohttp.ClientSession, fast_reconnect: None
) -> None:
    """The first attempt failing says "down" once; later failures say nothing more."""
    stub.stream(None, None, None, sse(1, "reboot"))
    client = client_of(stub, session)
    changes: list[bool] = []
    stream = client.events(on_stream=changes.append)
    async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
        async for _ in events:
            break
    assert len(stub.requests) == 4
    assert changes == [False, True]


@pytest.mark.parametrize(
    ("settled_s", "expected"),
    [
        # The empty stream counts as a good one: the pauses start again.
        (0.0, [0.01, 0.02, 0.04, 0.04, 0.01, 0.02]),
        # It ended before it settled (a device dropping every stream at once): they
        # keep growing.
        (60.0, [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]),
    ],
)
@pytest.mark.usefixtures("fast_reconnect")
async def test_backoff_doubles_to_its_bound_and_resets(
    stub: StubDevice,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    *,
    settled_s: float,
    expected: list[float],
) -> None:
    """Pauses double up to EVENT_RECONNECT_MAX_S and start again after a stream that
    lived EVENT_STREAM_SETTLED_S."""
    monkeypatch.setattr(device_client, "EVENT_STREAM_SETTLED_S", settled_s)
    stub.stream(None, None, None, None, b"", None, sse(1, "reboot"))
    caplog.set_level(logging.DEBUG, logger=device_client.__name__)
    client = client_of(stub, session)
    async with contextlib.aclosing(client.events()) as events:  # type: ignore[type-var]
        async for _ in events:
            break
    pauses = [
        record.args[1]
        for record in caplog.records
        if "reconnecting" in record.getMessage() and isinstance(record.args, tuple)
    ]
    assert pauses == expected


async def test_stopping_the_stream_closes_the_connection(
    stub: StubDevice, session: aiohttp.ClientSession, fast_reconnect: None
) -> None:
    """Cancelling the consumer (or closing the iterator) ends the device's stream."""
    stream_opened = asyncio.Event()
    left: list[asyncio.Event] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        stream_opened.set()
        left.append(gone := asyncio.Event())
        try:
            while True:
                await response.write(b": keep-alive\n\n")
                await asyncio.sleep(0.02)
        except ConnectionResetError:
            gone.set()
        return response

    stub.routes["/api/v1/events"] = endless
    client = client_of(stub, session)

    async def consume() -> None:
        async for _ in client.events():
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(stream_opened.wait(), 5)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await asyncio.wait_for(left[0].wait(), 5)

    # While it waits to reconnect, too.
    stub.stream(None)
    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer


async def test_certificate_pinning(stub: StubDevice, session: aiohttp.ClientSession) -> None:
    """Trust on first use reads the fingerprint; any other pin is refused, as is none."""
    stub.answer("/info", INFO)
    unpinned = DeviceClient(session, "127.0.0.1", stub.port, SECRET)
    assert await unpinned.fetch_certificate_fingerprint() == stub.fingerprint
    assert stub.requests == []  # reading the certificate sends no request (and no secret)
    with pytest.raises(CertificateMismatchError, match="no certificate is pinned"):
        await unpinned.info()
    unpinned.cert_fingerprint = stub.fingerprint
    assert (await unpinned.info()).mac == INFO["mac"]
    openssl_spelling = ":".join(
        stub.fingerprint[i : i + 2].upper() for i in range(0, len(stub.fingerprint), 2)
    )
    assert (await client_of(stub, session, cert_fingerprint=openssl_spelling).info()).api == 1
    for malformed in ("zz" * 32, "ab" * 20):
        with pytest.raises(CertificateMismatchError, match="is not a SHA-256"):
            await client_of(stub, session, cert_fingerprint=malformed).info()
    impostor = client_of(stub, session, cert_fingerprint="00" * 32)
    with pytest.raises(CertificateMismatchError, match="other than the pinned"):
        await impostor.info()
    with pytest.raises(CertificateMismatchError):
        async for _ in impostor.events():
            pass
    assert len(stub.requests) == 2  # the impostor's requests never left the TLS handshake


async def test_unreachable_and_timeouts(socket_enabled: None) -> None:
    """Nobody listening, or a server that never answers, become typed errors."""
    port = free_port()
    async with aiohttp.ClientSession() as session:
        client = DeviceClient(session, "127.0.0.1", port, SECRET, cert_fingerprint="00" * 32)
        with pytest.raises(DeviceUnreachableError):
            await client.info()
        with pytest.raises(DeviceUnreachableError):
            await client.fetch_certificate_fingerprint()
        with pytest.raises(DeviceUnreachableError):
            async for _ in client.events(reconnect=False):
                pass

        hang_up = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hang_up.wait()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        silent_port = server.sockets[0].getsockname()[1]
        slow = DeviceClient(session, "127.0.0.1", silent_port, SECRET, timeout=0.2)
        with pytest.raises(DeviceTimeoutError):
            await slow.fetch_certificate_fingerprint()
        slow.cert_fingerprint = "00" * 32
        with pytest.raises(DeviceTimeoutError):
            await slow.info()
        hang_up.set()
        server.close()
        await server.wait_closed()


async def test_a_silent_event_stream_times_out(
    stub: StubDevice, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No byte (not even a keep-alive) for EVENT_STREAM_READ_TIMEOUT: DeviceTimeoutError."""
    monkeypatch.setattr(device_client, "EVENT_STREAM_READ_TIMEOUT", 0.1)

    release, done = asyncio.Event(), asyncio.Event()

    async def mute(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await release.wait()
        done.set()
        return response

    stub.routes["/api/v1/events"] = mute
    with pytest.raises(DeviceTimeoutError, match="went silent"):
        async for _ in client_of(stub, session).events(reconnect=False):
            pass
    release.set()
    await asyncio.wait_for(done.wait(), 5)


async def test_the_stream_ends_when_its_session_closes(
    stub: StubDevice, fast_reconnect: None
) -> None:
    """Closing the injected session (Home Assistant stopping) ends the iteration quietly,
    whether a stream is open or the client waits to reconnect; a closed session opens none."""
    stream_opened = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(1, "start"))
        stream_opened.set()
        with contextlib.suppress(ConnectionResetError):
            while True:
                await response.write(b": keep-alive\n\n")
                await asyncio.sleep(0.02)
        return response

    stub.routes["/api/v1/events"] = endless
    session = aiohttp.ClientSession()
    client = client_of(stub, session)
    seen: list[int] = []

    async def consume() -> None:
        seen.extend([event.id async for event in client.events()])

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(stream_opened.wait(), 5)
    await session.close()
    await asyncio.wait_for(consumer, 5)  # ends without an error
    assert seen == [1]

    requests_before = len(stub.requests)
    assert [event async for event in client.events()] == []
    assert len(stub.requests) == requests_before


async def test_other_runtime_errors_are_not_hidden(
    stub: StubDevice, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a closed session turns aiohttp's RuntimeError into the end of the stream."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(session, "get", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        async for _ in client_of(stub, session).events():
            pass


async def test_each_request_closes_its_connection(
    stub: StubDevice, session: aiohttp.ClientSession
) -> None:
    """A request asks to close its connection and gets a fresh one each time: no idle TLS
    session is left holding one of the device's few sockets."""
    client = client_of(stub, session)
    peers: list[Any] = []

    async def info(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response(INFO)

    stub.routes["/api/v1/info"] = info
    await client.info()
    await client.info()
    assert [request.keep_alive for request in stub.requests[-2:]] == [False, False]
    assert peers[0] != peers[1]  # a new connection, from its own port, each time


# --- what a hostile device answers ----------------------------------------------------


def endless(chunk: bytes, *, status: int = 200, pause_s: float = 0.0) -> Handler:
    """A handler that writes `chunk` again and again (no Content-Length) until the client
    goes away; `sent` (its attribute) counts the bytes it wrote."""
    sent = [0]

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(chunk)
                sent[0] += len(chunk)
                await asyncio.sleep(pause_s)
        return response

    handler.sent = sent  # type: ignore[attr-defined]
    return handler


def padded(document: dict[str, Any], size: int) -> bytes:
    """The document as JSON of exactly `size` bytes (a pad field filling the rest)."""
    bare = json.dumps({**document, "pad": ""}).encode()
    return json.dumps({**document, "pad": "x" * (size - len(bare))}).encode()


async def test_an_answer_is_read_up_to_the_cap(
    stub: StubDevice, session: aiohttp.ClientSession
) -> None:
    """A body of MAX_ANSWER_BYTES is read; one byte more, declared or streamed without an
    end, is a DeviceProtocolError naming the cap, long before the request's timeout, on
    every request (answers, refusals, the start)."""
    client = client_of(stub, session, timeout=30)
    assert len(padded(INFO, MAX_ANSWER_BYTES)) == MAX_ANSWER_BYTES
    stub.answer("/info", json.loads(padded(INFO, MAX_ANSWER_BYTES)))
    assert (await client.info()).mac == INFO["mac"]
    stub.answer("/info", json.loads(padded(INFO, MAX_ANSWER_BYTES + 1)))  # Content-Length
    with pytest.raises(DeviceProtocolError, match=f"{MAX_ANSWER_BYTES} at most"):
        await client.info()

    flood = endless(b"[" * 4096)
    for path in ("/info", "/ota", "/ota/abort"):
        stub.routes[f"/api/v1{path}"] = flood
    stub.routes["/api/v1/ota/confirm"] = endless(b" " * 4096, status=409)
    requests: list[Callable[[], Awaitable[Any]]] = [
        client.info,
        client.ota_status,
        client.abort_ota,
        client.confirm,
        lambda: client.start_ota(url="u", sha256="s", size=1, version="v", cert_pem="c"),
    ]
    for request in requests:
        with pytest.raises(DeviceProtocolError, match=f"larger than {MAX_ANSWER_BYTES} bytes"):
            await request()
    # The device was cut off: what it wrote is the cap and the sockets' buffers, not what
    # it could write in the 30 s timeout.
    assert flood.sent[0] < 4 * len(requests) * 1024 * 1024  # type: ignore[attr-defined]


async def test_a_dripping_answer_ends_at_the_timeout(
    stub: StubDevice, session: aiohttp.ClientSession
) -> None:
    """A body that never ends but comes a byte at a time ends with the request's timeout."""
    stub.routes["/api/v1/info"] = endless(b" ", pause_s=0.02)
    with pytest.raises(DeviceTimeoutError):
        await client_of(stub, session, timeout=0.3).info()


DEEP = b"[" * 200_000 + b"]" * 200_000  # 400 KB of nested arrays


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (DEEP, "larger than|at most"),
        (
            json.dumps({**INFO, "extra": "@"}).encode().replace(b'"@"', b"[" * 20 + b"]" * 20),
            "nested deeper than 16",
        ),
        (
            json.dumps({**INFO, "uptime_s": "@"}).encode().replace(b'"@"', b"9" * 400),
            "integer of 400 digits",
        ),
        (
            json.dumps({**INFO, "last_ota": {**STATUS, "bytes_written": 10**30}}).encode(),
            "integer of 31 digits",
        ),
        (
            json.dumps({**INFO, "uptime_s": "@"}).encode().replace(b'"@"', b"1e999"),
            "beyond a float",
        ),
        (json.dumps({**INFO, "extra": float("nan")}).encode(), "NaN"),
        (
            json.dumps({**INFO, "project": "\u00e9"}, ensure_ascii=False).encode("latin-1"),
            "not UTF-8",
        ),
        (json.dumps(INFO).encode()[:-1] + b', "mac": "24:0a:c4:00:00:02"}', "key 'mac' twice"),
        (json.dumps({**INFO, "version": "\ud800"}).encode(), r"info\.version: not Unicode"),
        (b"null", "expected a JSON object"),
        (b"\xef\xbb\xbf" + json.dumps(INFO).encode(), "not JSON"),
    ],
    ids=[
        "deep-400KB",
        "deep-field",
        "huge-integer",
        "integer-beyond-64-bits",
        "huge-float",
        "nan",
        "latin-1",
        "duplicate-key",
        "lone-surrogate",
        "null",
        "bom",
    ],
)
async def test_hostile_json_is_a_protocol_error(
    stub: StubDevice, session: aiohttp.ClientSession, body: bytes, match: str
) -> None:
    """JSON no device sends (or text that is not JSON) is a DeviceProtocolError, never a
    RecursionError, OverflowError, UnicodeDecodeError or a model holding it."""
    stub.answer("/info", body)
    with pytest.raises(DeviceProtocolError, match=match):
        await client_of(stub, session).info()


async def test_actions_and_refusals_answer_objects(
    stub: StubDevice, session: aiohttp.ClientSession
) -> None:
    """Every answer is a JSON object: an action answered with another value, or a refusal
    whose body is not an object, is a protocol error."""
    client = client_of(stub, session)
    stub.answer("/ota/abort", [])
    with pytest.raises(DeviceProtocolError, match="expected a JSON object"):
        await client.abort_ota()
    stub.answer("/reboot", 5)
    with pytest.raises(DeviceProtocolError, match="expected a JSON object"):
        await client.reboot()
    stub.answer("/ota/confirm", ["ESP_FAIL"], status=409)
    with pytest.raises(DeviceProtocolError, match="expected a JSON object"):
        await client.confirm()


async def test_redirects_and_compression_are_not_followed(
    stub: StubDevice, session: aiohttp.ClientSession
) -> None:
    """A device answers; it never sends the client (and its secret) elsewhere, and never
    compresses (the client asks for identity, and reads bodies as they are: a compressed
    one could inflate past the cap)."""
    client = client_of(stub, session)

    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/api/v1/elsewhere")

    stub.routes["/api/v1/ota"] = moved
    stub.answer("/elsewhere", STATUS)
    with pytest.raises(DeviceProtocolError, match="HTTP 302"):
        await client.ota_status()
    assert [request.path for request in stub.requests] == ["/api/v1/ota"]

    async def compressed(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(json.dumps(INFO).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    stub.routes["/api/v1/info"] = compressed
    with pytest.raises(DeviceProtocolError, match=r"not UTF-8|not JSON"):
        await client.info()
    assert stub.requests[-1].headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"id": 1, "type": "start", "x": ' + b"[" * 17 + b"]" * 17 + b"}", "deeper"),
        (b'{"id": 1' + b"0" * 400 + b', "type": "start"}', "integer of 401 digits"),
        (b'{"id": 1, "type": "start", "ota_id": "\xff"}', "not UTF-8"),
        (b'{"id": 1, "type": "start", "type": "reboot"}', "twice"),
        (b'{"id": 1, "type": "start", "ota_id": "\\udfff"}', "not Unicode"),
    ],
    ids=["deep", "huge-id", "not-utf-8", "duplicate-key", "lone-surrogate"],
)
async def test_hostile_events_are_protocol_errors(
    stub: StubDevice, session: aiohttp.ClientSession, data: bytes, match: str
) -> None:
    """An event's data is decoded as strictly as an answer."""
    stub.stream(b"data: " + data + b"\n\n")
    with pytest.raises(DeviceProtocolError, match=match):
        async for _ in client_of(stub, session).events(reconnect=False):
            pass
