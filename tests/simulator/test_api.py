"""The device API (protocol v1) over real HTTPS, driven by the library's client."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from custom_components.esp_ota.espota.device_client import (
    CertificateMismatchError,
    DeviceBusyError,
    DeviceClient,
    DeviceEvent,
    DeviceProtocolError,
    DeviceRefusedError,
    DeviceTimeoutError,
    DeviceUnauthorizedError,
    DeviceUnreachableError,
    EventType,
    ImageState,
    OtaState,
)
from simulator import api as api_module
from simulator.api import DeviceApiServer
from simulator.device import SimulatedDevice
from simulator.model import OtaState as SimOtaState
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


def free_port() -> int:
    """A port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


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
            assert (await response.json())["error"] == "UNAUTHORIZED"
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
    assert refused.value.error_name == "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"

    await served.client.confirm()
    assert (await served.client.info()).image_state is ImageState.VALID


async def test_event_stream_survives_a_reboot(serve: ServeDevice) -> None:
    """The client's stream reconnects after the device restarts and resumes by id."""
    served = await serve(reboot_time_s=0.2)
    stream = asyncio.create_task(
        collect(served.client, lambda event: event.type is EventType.REBOOT, within_s=15)
    )
    await asyncio.sleep(0.1)
    await served.client.reboot()
    events = await stream
    assert events[-1].type is EventType.REBOOT
    await served.device.wait_online(within_s=10)
    # A second reboot is seen by a stream opened before the first one.
    second = asyncio.create_task(
        collect(served.client, lambda event: event.type is EventType.REBOOT, within_s=15)
    )
    await asyncio.sleep(0.1)
    await served.client.reboot()
    await served.device.wait_online(within_s=10)
    assert (await second)[-1].type is EventType.REBOOT


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
    await wait_until(lambda: served.device.ota_status().state is SimOtaState.FAILED)
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
        while text.count(b"\n\n") < len(missed) - 1:
            text += await asyncio.wait_for(response.content.readany(), 5)
    ids = [int(line[4:]) for line in text.decode().splitlines() if line.startswith("id: ")]
    assert ids == [event.id for event in missed[1:]]


async def test_keep_alive_comments(serve: ServeDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle stream sends comments, which the client skips."""
    monkeypatch.setattr(api_module, "KEEPALIVE_S", 0.05)
    served = await serve()
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
    assert busy.value.error_name == "ESP_ERR_INVALID_STATE"
    await served.client.abort_ota()
    await wait_until(lambda: served.device.ota_status().state.value == "aborted")
    assert (await served.client.ota_status()).state is OtaState.ABORTED
    with pytest.raises(DeviceRefusedError) as not_running:
        await served.client.abort_ota()
    assert not_running.value.error_name == "ESP_ERR_INVALID_STATE"
    assert not isinstance(not_running.value, DeviceBusyError)

    with pytest.raises(DeviceRefusedError) as invalid:
        await start("http://127.0.0.1/x.bin")
    assert invalid.value.error_name == "ESP_ERR_INVALID_ARG"
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
    assert failed.value.error_name == "ESP_ERR_OTA_ROLLBACK_FAILED"


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

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        silent_port = server.sockets[0].getsockname()[1]
        slow = DeviceClient(session, "127.0.0.1", silent_port, SECRET, timeout=0.2)
        with pytest.raises(DeviceTimeoutError):
            await slow.fetch_certificate_fingerprint()
        slow.cert_fingerprint = "00" * 32
        with pytest.raises(DeviceTimeoutError):
            await slow.info()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def garbage_server(socket_enabled: None) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
    """An HTTPS server that answers whatever the test sets, for protocol violations."""
    certificate = make_device_certificate("00:00:00:00:00:00", "garbage.local")
    answers: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        status, body, content_type = answers[request.path]
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, content_type=content_type)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=certificate.server_context()).start()
    yield runner.addresses[0][1], certificate.fingerprint, answers
    await runner.cleanup()


async def test_protocol_violations(garbage_server: tuple[int, str, dict[str, Any]]) -> None:
    """Answers protocol v1 does not allow are DeviceProtocolError, never a crash."""
    port, fingerprint, answers = garbage_server
    async with aiohttp.ClientSession() as session:
        client = DeviceClient(session, "127.0.0.1", port, SECRET, cert_fingerprint=fingerprint)
        answers["/api/v1/info"] = (200, b"<html>", "text/html")
        with pytest.raises(DeviceProtocolError, match="not JSON"):
            await client.info()
        answers["/api/v1/info"] = (200, [1, 2], None)
        with pytest.raises(DeviceProtocolError, match="expected a JSON object"):
            await client.info()
        answers["/api/v1/ota"] = (200, {"state": "exploded", "bytes_written": 0}, None)
        with pytest.raises(DeviceProtocolError, match="unknown value 'exploded'"):
            await client.ota_status()
        answers["/api/v1/ota"] = (200, {"state": "idle", "bytes_written": "lots"}, None)
        with pytest.raises(DeviceProtocolError, match="bytes_written"):
            await client.ota_status()
        answers["/api/v1/ota/confirm"] = (500, {"message": "no error name"}, None)
        with pytest.raises(DeviceProtocolError, match="error"):
            await client.confirm()
        answers["/api/v1/events"] = (200, b"data: not json\n\n", "text/event-stream")
        with pytest.raises(DeviceProtocolError, match="not JSON"):
            async for _ in client.events(reconnect=False):
                pass
        answers["/api/v1/events"] = (503, b"", "text/plain")
        with pytest.raises(DeviceProtocolError, match="HTTP 503"):
            async for _ in client.events(reconnect=False):
                pass
        answers["/api/v1/events"] = (401, b"", "text/plain")
        with pytest.raises(DeviceUnauthorizedError):
            async for _ in client.events():
                pass
        answers["/api/v1/events"] = (
            200,
            b': hello\nid: 1\nevent: start\ndata: {"id": 1, "type": "start", "ota_id": "x"}\n\n',
            "text/event-stream",
        )
        events = [event async for event in client.events(reconnect=False)]
        assert [(event.id, event.type) for event in events] == [(1, EventType.START)]
