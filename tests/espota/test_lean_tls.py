"""LeanTlsConnector: aiohttp's TLS connections with a 4 KiB read buffer, over real sockets
to a simulated device on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import (
    CertificateMismatchError,
    DeviceUnreachableError,
)
from custom_components.esp_ota.espota.lean_tls import TLS_READ_BUFFER_BYTES, LeanTlsConnector
from custom_components.esp_ota.espota.protocol import EventType
from simulator.api import DeviceApiServer
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.tls import DeviceCertificate, make_device_certificate
from tests.simulator.conftest import wait_until

SECRET = "lean-secret"
STREAMS = 20


@dataclass
class Served:
    device: SimulatedDevice
    server: DeviceApiServer
    certificate: DeviceCertificate


@pytest.fixture
async def served(socket_enabled: None) -> AsyncIterator[Served]:
    device = SimulatedDevice(
        DeviceConfig(mac="24:0a:c4:00:11:22", secret=SECRET, event_heartbeat_s=0.05)
    )
    certificate = make_device_certificate(device.config.mac, "lean.local")
    server = DeviceApiServer(device, certificate)
    await device.start()
    yield Served(device, server, certificate)
    await server.close()
    await device.close()


def client_on(session: aiohttp.ClientSession, served: Served, fingerprint: str) -> DeviceClient:
    return DeviceClient(
        session, "127.0.0.1", served.server.port, SECRET, cert_fingerprint=fingerprint
    )


async def open_streams(client: DeviceClient, count: int) -> list[asyncio.Task[None]]:
    async def follow() -> None:
        async for _ in client.events():
            pass

    return [asyncio.create_task(follow()) for _ in range(count)]


async def traced_bytes_per_stream(connector: aiohttp.TCPConnector, served: Served) -> float:
    """Python's memory held per open event stream (both ends are in this process; the
    device's end is the same for either connector)."""
    async with aiohttp.ClientSession(connector=connector) as session:
        client = client_on(session, served, served.certificate.fingerprint)
        await client.info()  # warm up what every connection shares
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tasks = await open_streams(client, STREAMS)
            await wait_until(lambda: served.server.open_streams == STREAMS, 20)
            await asyncio.sleep(0.2)  # several heartbeats on every stream
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await wait_until(lambda: served.server.open_streams == 0)
    return held / STREAMS


async def test_a_stream_holds_a_small_read_buffer_not_asyncios(served: Served) -> None:
    """asyncio's TLS protocol holds 256 KiB per connection; through LeanTlsConnector the
    client end holds its 4 KiB buffer and little else."""
    lean = await traced_bytes_per_stream(LeanTlsConnector(limit=0), served)
    default = await traced_bytes_per_stream(aiohttp.TCPConnector(limit=0), served)
    # Each includes the device's own end (asyncio's 256 KiB buffer and its stream).
    # (Other allocations vary by tens of KiB from run to run: three quarters of the buffer.)
    assert default - lean >= 0.75 * (256 * 1024 - TLS_READ_BUFFER_BYTES), (default, lean)


async def test_requests_and_events_over_the_lean_connector(served: Served) -> None:
    """Answers, a stream with its heartbeats and a reboot's events read as through aiohttp's
    own connector; the pinned certificate is still checked."""
    async with aiohttp.ClientSession(connector=LeanTlsConnector()) as session:
        client = client_on(session, served, served.certificate.fingerprint)
        assert (await client.info()).mac == served.device.config.mac
        seen: list[EventType] = []

        async def follow() -> None:
            stream = client.events(reconnect=False)
            async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
                async for event in events:
                    seen.append(event.type)
                    if event.type is EventType.REBOOT:
                        return

        following = asyncio.create_task(follow())
        await wait_until(lambda: served.server.open_streams == 1)
        await asyncio.sleep(0.2)  # heartbeats pass; the stream stays open
        await served.device.reboot()
        await asyncio.wait_for(following, 10)
        assert seen == [EventType.REBOOT]
        await served.device.wait_online(10)
        stranger = client_on(session, served, "00" * 32)
        with pytest.raises(CertificateMismatchError):
            await stranger.info()


async def test_a_peer_that_is_no_tls_server_is_unreachable(socket_enabled: None) -> None:
    """A handshake that fails (plain HTTP on the port) is the client's unreachable error;
    a plain http:// request passes through aiohttp unchanged."""

    async def plain(_: web.Request) -> web.Response:
        return web.Response(text="plain")

    app = web.Application()
    app.router.add_get("/plain", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(connector=LeanTlsConnector()) as session:
            client = DeviceClient(session, "127.0.0.1", port, SECRET, cert_fingerprint="ab" * 32)
            with pytest.raises(DeviceUnreachableError):
                await client.info()
            async with session.get(f"http://127.0.0.1:{port}/plain") as response:
                assert await response.text() == "plain"
    finally:
        await runner.cleanup()


async def test_a_handshake_that_never_ends_is_bounded_by_the_connect_timeout(
    socket_enabled: None,
) -> None:
    """A peer that takes the connection and says nothing: the handshake is given up at the
    request's connect timeout, as aiohttp's own connector does."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession(connector=LeanTlsConnector()) as session:
            client = DeviceClient(
                session, "127.0.0.1", port, SECRET, cert_fingerprint="ab" * 32, timeout=0.3
            )
            with pytest.raises(DeviceUnreachableError):
                await client.info()
    finally:
        server.close()
        await server.wait_closed()
