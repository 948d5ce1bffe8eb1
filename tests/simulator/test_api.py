"""The device API (protocol v1) over real HTTPS, driven by the library's client."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest

from custom_components.esp_ota.espota import device_client
from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import (
    CertificateMismatchError,
    DeviceBusyError,
    DeviceRefusedError,
    DeviceUnauthorizedError,
    DeviceUnreachableError,
)
from custom_components.esp_ota.espota.protocol import DeviceEvent, EventType, ImageState, OtaState
from simulator import api as api_module
from simulator.api import DeviceApiServer
from simulator.api_counters import EVENT_STREAM_REQUEST, ApiCounters
from simulator.device import SimulatedDevice
from simulator.tls import make_device_certificate

from .conftest import DeviceFactory, make_image, wait_until
from .firmware_server import FirmwareServer

SECRET = "s3cret-device-key"
ENDPOINTS = [
    ("GET", "/api/v1/info"),
    ("GET", "/api/v1/ota"),
    ("POST", "/api/v1/ota"),
    ("POST", "/api/v1/ota/abort"),
    ("POST", "/api/v1/ota/confirm"),
    ("POST", "/api/v1/ota/rollback"),
    ("POST", "/api/v1/reboot"),
    ("GET", "/api/v1/events"),
]


@dataclass
class ServedDevice:
    """A simulated device, its API server and a pinned client."""

    device: SimulatedDevice
    server: DeviceApiServer
    client: DeviceClient
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"


ServeDevice = Callable[..., Awaitable[ServedDevice]]


@pytest.fixture
async def serve(make_device: DeviceFactory, socket_enabled: None) -> AsyncIterator[ServeDevice]:
    """Start devices with their API on 127.0.0.1 and a pinned client each."""
    servers: list[DeviceApiServer] = []
    session = aiohttp.ClientSession()

    async def factory(**config: Any) -> ServedDevice:
        device = await make_device(**{"secret": SECRET, **config})
        certificate = make_device_certificate(device.config.mac, "esp-ota-test.local")
        server = DeviceApiServer(device, certificate)
        servers.append(server)
        await server.go_online()
        client = DeviceClient(
            session, "127.0.0.1", server.port, SECRET, cert_fingerprint=certificate.fingerprint
        )
        return ServedDevice(device, server, client, session)

    yield factory
    for server in servers:
        await server.close()
    await session.close()


async def test_info_over_pinned_https(serve: ServeDevice) -> None:
    """Trust on first use gives the served certificate; info reads the device's state."""
    served = await serve()
    unpinned = DeviceClient(served.session, "127.0.0.1", served.server.port, SECRET)
    assert await unpinned.fetch_certificate_fingerprint() == served.server.certificate.fingerprint
    info = await served.client.info()
    assert info.api == 1
    assert info.mac == served.device.config.mac
    assert (info.chip, info.chip_revision) == ("esp32", 301)
    assert (info.project, info.version) == ("esp-ota-demo", "1.0.0")
    assert info.running_partition == info.boot_partition == "ota_0"
    assert info.image_state is ImageState.VALID  # the bootloader's first boot writes seq 1
    assert info.last_ota.state is OtaState.IDLE
    assert info.reset_reason == "ESP_RST_POWERON"
    assert len(info.app_elf_sha256) == 64
    assert (await served.client.ota_status()).state is OtaState.IDLE


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {SECRET}"])
async def test_unauthenticated_requests_get_401_and_do_nothing(
    serve: ServeDevice, firmware_server: FirmwareServer, authorization: str | None
) -> None:
    """Every endpoint answers 401 without the secret, and nothing happens."""
    served = await serve()
    image = make_image("2.0.0")
    body = {
        "url": firmware_server.add("/fw.bin", image),
        "sha256": hashlib.sha256(image).hexdigest(),
        "size": len(image),
        "version": "2.0.0",
        "cert_pem": firmware_server.cert_pem,
        "headers": {},
    }
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in ENDPOINTS:
        async with served.session.request(
            method,
            served.url + path,
            json=body if method == "POST" else None,
            headers=headers,
            ssl=aiohttp.Fingerprint(bytes.fromhex(served.server.certificate.fingerprint)),
        ) as response:
            assert response.status == 401, path
            assert (await response.json())["error"] == "HTTPD_401_UNAUTHORIZED"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert served.device.online
    assert served.device.ota_status().state.value == "idle"
    assert firmware_server.requests == []
    wrong = DeviceClient(
        served.session,
        "127.0.0.1",
        served.server.port,
        "wrong",
        cert_fingerprint=served.server.certificate.fingerprint,
    )
    with pytest.raises(DeviceUnauthorizedError):
        await wrong.info()


async def test_a_device_without_a_secret_refuses_everyone(serve: ServeDevice) -> None:
    """An empty secret is not a password everyone knows."""
    served = await serve(secret="")
    blank = DeviceClient(
        served.session,
        "127.0.0.1",
        served.server.port,
        "",
        cert_fingerprint=served.server.certificate.fingerprint,
    )
    with pytest.raises(DeviceUnauthorizedError):
        await blank.info()


async def collect(
    client: DeviceClient, until: Callable[[DeviceEvent], bool], within_s: float = 20
) -> list[DeviceEvent]:
    """Events from the client's stream until `until` holds for one."""
    seen: list[DeviceEvent] = []
    async with asyncio.timeout(within_s):
        async for event in client.events():
            seen.append(event)
            if until(event):
                break
    return seen


async def test_full_update_through_the_api(
    serve: ServeDevice, firmware_server: FirmwareServer
) -> None:
    """Start, follow the events across the reboot, find the new image pending, confirm."""
    served = await serve(reboot_time_s=0.3)
    image = make_image("2.0.0")
    stream = asyncio.create_task(
        collect(served.client, lambda event: event.type is EventType.REBOOT)
    )
    await asyncio.sleep(0.1)  # the stream is open before the update starts
    ota_id = await served.client.start_ota(
        url=firmware_server.add("/fw-2.0.0.bin", image),
        sha256=hashlib.sha256(image).hexdigest(),
        size=len(image),
        version="2.0.0",
        cert_pem=firmware_server.cert_pem,
        headers={"X-Download-Token": "t0k3n"},
    )
    events = await stream
    types = [event.type for event in events]
    assert types[0] is EventType.START
    for expected in (
        EventType.CONNECTED,
        EventType.GET_IMG_DESC,
        EventType.VERIFY_CHIP_ID,
        EventType.VERIFY_CHIP_REVISION,
        EventType.WRITE_FLASH,
        EventType.UPDATE_BOOT_PARTITION,
        EventType.FINISH,
        EventType.REBOOT,
    ):
        assert expected in types
    writes = [event.bytes_written or 0 for event in events if event.type is EventType.WRITE_FLASH]
    assert writes == sorted(writes)
    assert writes[-1] == len(image)
    assert all(event.ota_id == ota_id for event in events if event.ota_id)
    description = next(event for event in events if event.type is EventType.GET_IMG_DESC)
    assert (description.project, description.version) == ("esp-ota-demo", "2.0.0")
    assert firmware_server.requests[-1].headers.get("X-Download-Token") == "t0k3n"

    # Rebooting: the API is really down (connection refused) until the device is back.
    with pytest.raises(DeviceUnreachableError):
        await served.client.info()
    await served.device.wait_online(within_s=10)
    info = await served.client.info()
    assert info.version == "2.0.0"
    assert info.running_partition == "ota_1"
    assert info.image_state is ImageState.PENDING_VERIFY
    assert info.last_ota.state is OtaState.SUCCEEDED

    # While pending verify, the next update is refused with ESP-IDF's name.
    with pytest.raises(DeviceRefusedError) as refused:
        await served.client.start_ota(
            url=firmware_server.add("/fw-3.bin", image),
            sha256=hashlib.sha256(image).hexdigest(),
            size=len(image),
            version="3.0.0",
            cert_pem=firmware_server.cert_pem,
        )
    assert refused.value.error == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"

    await served.client.confirm()
    assert (await served.client.info()).image_state is ImageState.VALID


async def test_event_stream_survives_a_reboot(
    serve: ServeDevice, firmware_server: FirmwareServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client stream across a reboot: it reconnects, and Last-Event-ID brings the
    events the device sent while the client was away."""
    # The client waits 1 s before reconnecting; the device is back after 0.2 s.
    monkeypatch.setattr(device_client, "EVENT_RECONNECT_MIN_S", 1.0)
    served = await serve(reboot_time_s=0.2)
    image = make_image("2.0.0")
    stream = asyncio.create_task(
        collect(served.client, lambda event: event.error is not None, within_s=15)
    )
    await asyncio.sleep(0.1)
    await served.client.reboot()
    await served.device.wait_online(within_s=10)
    # While the client is still away: a job that fails at the end (wrong SHA-256).
    ota_id = await served.client.start_ota(
        url=firmware_server.add("/fw.bin", image),
        sha256="00" * 32,
        size=len(image),
        version="2.0.0",
        cert_pem=firmware_server.cert_pem,
    )
    events = await stream
    assert events[0].type is EventType.REBOOT
    assert events[1].type is EventType.START
    assert events[1].ota_id == ota_id
    ids = [event.id for event in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # nothing lost, nothing twice


async def test_last_event_id_replays_missed_events(
    serve: ServeDevice, firmware_server: FirmwareServer
) -> None:
    """A client that reconnects with Last-Event-ID gets what it missed, in order."""
    served = await serve()
    image = make_image("2.0.0")
    # A wrong expected SHA-256: the job runs to the end and fails there, without a reboot
    # (a reboot would clear the device's event ring, which lives in RAM).
    await served.client.start_ota(
        url=firmware_server.add("/fw.bin", image),
        sha256="00" * 32,
        size=len(image),
        version="2.0.0",
        cert_pem=firmware_server.cert_pem,
    )
    await wait_until(lambda: served.device.ota_status().state is OtaState.FAILED)
    missed = served.device.events_since(0)
    assert len(missed) > 3
    assert missed[-1].error is not None
    async with served.session.get(
        served.url + "/api/v1/events",
        headers={"Authorization": f"Bearer {SECRET}", "Last-Event-ID": str(missed[0].id)},
        ssl=aiohttp.Fingerprint(bytes.fromhex(served.server.certificate.fingerprint)),
    ) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        text = b""
        # The ": connected" comment, then the events after the one the client names.
        while text.count(b"\n\n") < len(missed):
            text += await asyncio.wait_for(response.content.readany(), 5)
    assert text.startswith(b": connected\n\n")
    ids = [int(line[4:]) for line in text.decode().splitlines() if line.startswith("id: ")]
    assert ids == [event.id for event in missed[1:]]


async def test_keep_alive_comments(serve: ServeDevice) -> None:
    """An idle stream sends comments, which the client skips."""
    served = await serve(event_heartbeat_s=0.05)
    async with served.session.get(
        served.url + "/api/v1/events",
        headers={"Authorization": f"Bearer {SECRET}"},
        ssl=aiohttp.Fingerprint(bytes.fromhex(served.server.certificate.fingerprint)),
    ) as response:
        text = b""
        while b": keep-alive" not in text:
            text += await asyncio.wait_for(response.content.readany(), 5)
    assert text.startswith(b": connected")


async def test_busy_and_bad_requests(serve: ServeDevice, firmware_server: FirmwareServer) -> None:
    """A second start is busy; malformed requests are refused with ESP_ERR_INVALID_ARG."""
    served = await serve()
    image = make_image("2.0.0", size=256 * 1024)
    served.device.faults.slow_link_bytes_per_s = 64 * 1024
    url = firmware_server.add("/fw.bin", image)
    sha256 = hashlib.sha256(image).hexdigest()

    async def start(url: str = url) -> str:
        return await served.client.start_ota(
            url=url, sha256=sha256, size=len(image), version="2.0.0",
            cert_pem=firmware_server.cert_pem,
        )  # fmt: skip

    arguments: dict[str, object] = {
        "url": url,
        "sha256": sha256,
        "size": len(image),
        "version": "2.0.0",
        "cert_pem": firmware_server.cert_pem,
    }
    await start()
    with pytest.raises(DeviceBusyError) as busy:
        await start()
    assert busy.value.error == "ESP_ERR_INVALID_STATE"
    await served.client.abort_ota()
    await wait_until(lambda: served.device.ota_status().state.value == "aborted")
    assert (await served.client.ota_status()).state is OtaState.ABORTED
    with pytest.raises(DeviceRefusedError) as not_running:
        await served.client.abort_ota()
    assert not_running.value.error == "ESP_ERR_INVALID_STATE"
    assert not isinstance(not_running.value, DeviceBusyError)

    with pytest.raises(DeviceRefusedError) as invalid:
        await start("http://127.0.0.1/x.bin")
    assert invalid.value.error == "ESP_ERR_INVALID_ARG"
    for broken in ({"url": 5}, {"headers": {"a": 1}}, {"size": True}):
        async with served.session.post(
            served.url + "/api/v1/ota",
            json={**arguments, **broken},
            headers={"Authorization": f"Bearer {SECRET}"},
            ssl=aiohttp.Fingerprint(bytes.fromhex(served.server.certificate.fingerprint)),
        ) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "ESP_ERR_INVALID_ARG"


async def test_rollback_over_the_api(serve: ServeDevice, firmware_server: FirmwareServer) -> None:
    """Rollback from a pending image boots the old one and reports the invalid slot."""
    served = await serve()
    image = make_image("2.0.0")
    await served.client.start_ota(
        url=firmware_server.add("/fw.bin", image),
        sha256=hashlib.sha256(image).hexdigest(),
        size=len(image),
        version="2.0.0",
        cert_pem=firmware_server.cert_pem,
    )
    await wait_until(lambda: served.device.online and served.device.info().version == "2.0.0")
    await served.client.rollback()
    await wait_until(
        lambda: served.device.online and served.device.info().version == "1.0.0", within_s=10
    )
    info = await served.client.info()
    assert info.last_invalid_partition == "ota_1"
    assert info.running_partition == "ota_0"
    with pytest.raises(DeviceRefusedError) as failed:
        await served.client.rollback()
    assert failed.value.error == "ESP_ERR_OTA_ROLLBACK_FAILED"


async def test_certificate_pinning(serve: ServeDevice) -> None:
    """Another fingerprint, or none, is refused before any request is sent."""
    served = await serve()
    impostor = DeviceClient(
        served.session, "127.0.0.1", served.server.port, SECRET, cert_fingerprint="00" * 32
    )
    with pytest.raises(CertificateMismatchError, match="other than the pinned"):
        await impostor.info()
    with pytest.raises(CertificateMismatchError):
        async for _ in impostor.events():
            pass
    unpinned = DeviceClient(served.session, "127.0.0.1", served.server.port, SECRET)
    with pytest.raises(CertificateMismatchError, match="no certificate is pinned"):
        await unpinned.confirm()


def auth(served: ServedDevice, secret: str = SECRET) -> dict[str, Any]:
    """Request options: the secret and the device's pinned certificate."""
    return {
        "headers": {"Authorization": f"Bearer {secret}"},
        "ssl": aiohttp.Fingerprint(bytes.fromhex(served.server.certificate.fingerprint)),
    }


async def test_http_errors_are_json_with_esp_idf_names(serve: ServeDevice) -> None:
    """No such endpoint, wrong method, oversized body: JSON errors; 401 before any of them."""
    served = await serve()
    cases = [
        ("GET", "/api/v1/nothing", None, 404, "ESP_ERR_NOT_FOUND"),
        ("DELETE", "/api/v1/info", None, 405, "ESP_ERR_NOT_SUPPORTED"),
        ("POST", "/api/v1/ota", b"{" + b" " * api_module.MAX_BODY_BYTES + b"}", 413,
         "ESP_ERR_INVALID_SIZE"),
        ("POST", "/api/v1/ota", b"not json", 400, "ESP_ERR_INVALID_ARG"),
        ("POST", "/api/v1/ota", b"[1]", 400, "ESP_ERR_INVALID_ARG"),
    ]  # fmt: skip
    for method, path, body, status, error in cases:
        async with served.session.request(
            method, served.url + path, data=body, **auth(served)
        ) as response:
            assert (response.status, (await response.json())["error"]) == (status, error), path
        async with served.session.request(
            method, served.url + path, data=body, **auth(served, "wrong")
        ) as response:
            assert response.status == 401, path
    assert served.device.ota_status().state is OtaState.IDLE


async def test_a_closed_server_stays_closed(serve: ServeDevice) -> None:
    """close() during a reboot: the device comes back, its port does not."""
    served = await serve(reboot_time_s=0.2)
    await served.client.reboot()
    await served.server.close()
    await served.device.wait_online(within_s=10)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", served.server.port)


async def test_a_reboot_ends_open_streams_after_the_reboot_event(serve: ServeDevice) -> None:
    """A raw stream gets the reboot event, then the end of the response, then refusals."""
    served = await serve(reboot_time_s=0.5)
    async with served.session.get(served.url + "/api/v1/events", **auth(served)) as response:
        assert await response.content.readuntil(b"\n\n") == b": connected\n\n"
        assert served.server.open_streams == 1
        await served.client.reboot()
        async with asyncio.timeout(5):
            rest = await response.content.read()  # up to the end of the stream
    assert b"event: reboot\n" in rest
    assert served.server.open_streams == 0
    with pytest.raises(DeviceUnreachableError):
        await served.client.ota_status()
    await served.device.wait_online(within_s=10)
    assert (await served.client.info()).reset_reason == "ESP_RST_SW"


async def test_a_client_that_leaves_is_forgotten(serve: ServeDevice) -> None:
    """A stream whose client went away is dropped at the next event, not kept forever."""
    served = await serve()
    async with served.session.get(served.url + "/api/v1/events", **auth(served)) as response:
        await response.content.readuntil(b"\n\n")
        assert served.server.open_streams == 1
        response.connection.transport.abort()  # type: ignore[union-attr]
    # The device notices on its next write: give it events until it has.
    async with asyncio.timeout(10):
        while served.server.open_streams:
            served.device.app.emit(EventType.REBOOT, ota_id=None)  # any event will do
            await asyncio.sleep(0.02)
    assert served.device.online


async def test_a_client_that_leaves_mid_handshake_ends_quietly(serve: ServeDevice) -> None:
    """A client that resets its connection during the TLS handshake (a cancelled request,
    Home Assistant stopping) ends that connection only: no event-loop error (asyncio
    reports one for servers made with ssl=, in debug mode), and the device serves on."""
    served = await serve()
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    loop.set_debug(True)
    try:
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
            writer.write(b"\x16\x03\x01\x00\xc8\x01")  # the start of a ClientHello
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, mid-handshake
        await asyncio.sleep(0.2)
    finally:
        loop.set_debug(False)
        loop.set_exception_handler(None)
    assert errors == []
    assert (await served.client.info()).version == served.device.info().version


async def test_replay_and_live_events_are_not_sent_twice(
    serve: ServeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event emitted while a resuming stream starts is in the replay and the queue:
    it goes out once."""
    served = await serve()
    served.device.app.emit(EventType.START, ota_id="a")
    replay = served.device.events_since

    def events_since_while_emitting(last_id: int) -> list[Any]:
        served.device.app.emit(EventType.CONNECTED, ota_id="a")
        return replay(last_id)

    monkeypatch.setattr(served.device, "events_since", events_since_while_emitting)
    first = replay(0)[0].id
    headers = {**auth(served)["headers"], "Last-Event-ID": str(first - 1)}
    async with served.session.get(
        served.url + "/api/v1/events", headers=headers, ssl=auth(served)["ssl"]
    ) as response:
        assert await response.content.readuntil(b"\n\n") == b": connected\n\n"
        text = await response.content.readuntil(b"\n\n")
        text += await response.content.readuntil(b"\n\n")
        served.device.app.emit(EventType.FINISH, ota_id="a")
        text += await response.content.readuntil(b"\n\n")
    ids = [int(line[4:]) for line in text.decode().splitlines() if line.startswith("id: ")]
    assert ids == [first, first + 1, first + 2]


async def test_close_while_the_port_opens_leaves_it_closed(
    make_device: DeviceFactory, socket_enabled: None
) -> None:
    """close() racing the first go_online: the port ends up closed, not half open."""
    device = await make_device(secret=SECRET)
    server = DeviceApiServer(device, make_device_certificate(device.config.mac, "x.local"))
    opening = asyncio.create_task(server.go_online())
    await asyncio.sleep(0)  # go_online is making its TLS context in a thread
    await server.close()
    await opening
    assert server.port != 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_a_taken_port_fails_and_can_be_retried(
    make_device: DeviceFactory, socket_enabled: None
) -> None:
    """The port is in use: go_online raises; once it is free, the same server opens it."""
    device = await make_device(secret=SECRET)
    certificate = make_device_certificate(device.config.mac, "x.local")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = DeviceApiServer(device, certificate, port=port)
        with pytest.raises(OSError, match="address already in use"):
            await server.go_online()
    await server.go_online()
    try:
        async with aiohttp.ClientSession() as session:
            client = DeviceClient(
                session, "127.0.0.1", port, SECRET, cert_fingerprint=certificate.fingerprint
            )
            assert (await client.info()).mac == device.config.mac
    finally:
        await server.close()


async def test_counters_count_handshakes_and_requests_by_method_and_path(
    serve: ServeDevice,
) -> None:
    """Each request on a new connection is one TLS handshake and one request of its method
    and path, refused or not; nothing else moves."""
    served = await serve()
    assert served.server.counters() == ApiCounters()
    # A connection per request, as Home Assistant's polls make them.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for path, secret in [("/info", SECRET), ("/info", "wrong"), ("/ota", SECRET)]:
            async with session.get(served.url + "/api/v1" + path, **auth(served, secret)):
                pass
        async with session.post(served.url + "/api/v1/nothing", **auth(served)) as response:
            assert response.status == 404
    counters = served.server.counters()
    assert counters.tls_handshakes == 4
    assert dict(counters.requests) == {
        "GET /api/v1/info": 2,
        "GET /api/v1/ota": 1,
        "POST /api/v1/nothing": 1,
    }
    assert (counters.total_requests, counters.stream_requests) == (4, 0)
    assert (counters.open_streams, counters.keepalives_sent) == (0, 0)


async def test_a_stream_is_one_request_and_one_handshake_however_long_it_lives(
    serve: ServeDevice,
) -> None:
    """An event stream counts once when it opens; its keep-alive comments are counted
    apart, and it is an open stream until the client leaves."""
    served = await serve(event_heartbeat_s=0.02)
    async with served.session.get(served.url + "/api/v1/events", **auth(served)) as response:
        text = b""
        while text.count(b": keep-alive") < 5:
            text += await asyncio.wait_for(response.content.readany(), 5)
        during = served.server.counters()
        assert (during.tls_handshakes, dict(during.requests)) == (1, {EVENT_STREAM_REQUEST: 1})
        assert during.open_streams == 1
        assert during.keepalives_sent >= 5
        response.connection.transport.abort()  # type: ignore[union-attr]
    await wait_until(lambda: served.server.open_streams == 0)  # the next keep-alive fails
    after = served.server.counters()
    assert (after.tls_handshakes, after.total_requests, after.open_streams) == (1, 1, 0)


def test_counters_since_and_sum() -> None:
    """A window's counts are a later snapshot minus an earlier one; a fleet's are the sum."""
    earlier = ApiCounters(1, MappingProxyType({EVENT_STREAM_REQUEST: 1}), 1, 3)
    later = ApiCounters(3, MappingProxyType({EVENT_STREAM_REQUEST: 1, "GET /api/v1/info": 2}), 0, 7)
    window = later.since(earlier)
    assert (window.tls_handshakes, dict(window.requests)) == (2, {"GET /api/v1/info": 2})
    assert (window.open_streams, window.keepalives_sent) == (0, 4)
    total = ApiCounters.sum([earlier, later])
    assert (total.tls_handshakes, total.total_requests, total.stream_requests) == (4, 4, 2)
    assert (total.open_streams, total.keepalives_sent) == (1, 10)
    assert ApiCounters.sum([]) == ApiCounters()
