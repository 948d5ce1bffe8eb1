"""Fixtures for the Home Assistant layer's tests: real simulated devices, a real feed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import PropertyMock, patch

import pytest
from aiohttp import web
from homeassistant.const import CONF_HOST, CONF_MAC, CONF_PORT
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

from custom_components.esp_ota.const import (
    CONF_CERT_FINGERPRINT,
    CONF_CHANNEL,
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_REBOOT_TIMEOUT,
    CONF_SECRET,
    DOMAIN,
)
from custom_components.esp_ota.espota.image_builder import build_app_image
from simulator.api import DeviceApiServer
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.model import OtaRequest
from simulator.tls import DeviceCertificate, make_device_certificate
from tests.simulator.firmware_server import FirmwareServer

SECRET = "garden-secret"
PROJECT = "garden"
CHIP = "esp32c3"


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Snapshots through Home Assistant's serializer (stable ids, no timestamps).

    The plugin defines the same fixture, but syrupy's own one wins over it."""
    return snapshot.use_extension(HomeAssistantSnapshotExtension)


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Register every entity enabled, those disabled by default too (as core's tests do)."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


@dataclass
class SimDevice:
    """A simulated ESP32 with its HTTPS API on 127.0.0.1."""

    device: SimulatedDevice
    server: DeviceApiServer
    certificate: DeviceCertificate

    @property
    def mac(self) -> str:
        return self.device.config.mac

    @property
    def port(self) -> int:
        return self.server.port

    def entry_data(self) -> dict[str, Any]:
        """Config entry data as the config flow stores it."""
        return {
            CONF_HOST: "127.0.0.1",
            CONF_PORT: self.port,
            CONF_SECRET: self.device.config.secret,
            CONF_CERT_FINGERPRINT: self.certificate.fingerprint,
            CONF_MAC: self.mac,
        }


StartDevice = Callable[..., Awaitable[SimDevice]]


@pytest.fixture
async def start_device(socket_enabled: None) -> AsyncIterator[StartDevice]:
    """Start simulated devices (closed at the end of the test)."""
    started: list[SimDevice] = []
    counter = iter(range(0x10, 0xFF))

    async def factory(
        *,
        mac: str | None = None,
        version: str = "1.0.0",
        certificate: DeviceCertificate | None = None,
        **config: Any,
    ) -> SimDevice:
        mac = mac or f"24:0a:c4:12:34:{next(counter):02x}"
        device = SimulatedDevice(
            DeviceConfig(
                mac=mac,
                chip=CHIP,
                chip_revision=4,
                secret=config.pop("secret", SECRET),
                factory_image=build_app_image(
                    project=PROJECT, version=version, chip=CHIP, size=64 * 1024
                ),
                reboot_time_s=config.pop("reboot_time_s", 0.0),
                **config,
            )
        )
        certificate = certificate or make_device_certificate(mac, "esp-ota-test.local")
        server = DeviceApiServer(device, certificate)
        await device.start()
        sim = SimDevice(device, server, certificate)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        await sim.server.close()
        await sim.device.close()


@pytest.fixture
async def sim_device(start_device: StartDevice) -> SimDevice:
    """One simulated garden sensor (ESP32-C3 rev v0.4) running 1.0.0."""
    return await start_device(mac="24:0a:c4:12:34:56")


def feed_document(*versions: str) -> bytes:
    """A native feed with garden releases for the ESP32-C3."""
    releases = [
        {
            "project": PROJECT,
            "chip": CHIP,
            "version": version,
            "channel": "beta" if "b" in version else "stable",
            "url": f"garden-{version}.bin",
            "size": 65536,
            "sha256": hashlib.sha256(version.encode()).hexdigest(),
            "summary": f"Garden {version}",
            "release_notes_url": f"https://example.com/garden/{version}",
            "published": "2026-11-20T10:00:00+00:00",
        }
        for version in versions
    ]
    return json.dumps(
        {"format": "esp-ota-feed", "format_version": 1, "releases": releases}
    ).encode()


@dataclass
class FeedServer:
    """A feed server whose answers the test changes."""

    url: str = ""
    body: bytes = field(default_factory=lambda: feed_document("1.0.0", "1.1.0", "1.2.0b1"))
    signature: bytes | None = None
    status: int = 200
    feed_requests: int = 0

    async def feed(self, request: web.Request) -> web.Response:
        self.feed_requests += 1
        if self.status != 200:
            return web.Response(status=self.status)
        etag = f'"{hashlib.sha256(self.body).hexdigest()[:16]}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(body=self.body, headers={"ETag": etag})

    async def sig(self, request: web.Request) -> web.Response:
        if self.signature is None:
            return web.Response(status=404)
        return web.Response(body=self.signature)


@contextlib.asynccontextmanager
async def serving(*routes: web.RouteDef) -> AsyncIterator[int]:
    """An aiohttp app of `routes` on 127.0.0.1, on a free port (yielded)."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
async def feed_server(socket_enabled: None) -> AsyncIterator[FeedServer]:
    """A feed server on 127.0.0.1."""
    server = FeedServer()
    async with serving(
        web.get("/feed.json", server.feed), web.get("/feed.json.sig", server.sig)
    ) as port:
        server.url = f"http://127.0.0.1:{port}/feed.json"
        yield server


def make_entry(
    sim: SimDevice, *, feed_url: str = "", public_key: str = "", channel: str = "stable"
) -> MockConfigEntry:
    """A config entry for a simulated device, with feed options."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="garden 34:56",
        unique_id=sim.mac,
        data=sim.entry_data(),
        options={
            CONF_FEED_URL: feed_url,
            CONF_FEED_PUBLIC_KEY: public_key,
            CONF_CHANNEL: channel,
            CONF_REBOOT_TIMEOUT: 180,
        },
    )


async def setup_entry(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Add and load an entry."""
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def wait_for(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Let the event loop run until `condition` holds (TimeoutError after `within_s`)."""
    async with asyncio.timeout(within_s):
        # Polled: what the tests wait for comes from several tasks (listener, polls, device).
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def wait_for_event_stream(sim: SimDevice) -> None:
    """Wait until Home Assistant follows the device's events.

    Unloading an entry while its listener is still in the TLS handshake resets that
    connection, which asyncio reports as an error in debug mode (the tests' mode)."""
    await wait_for(lambda: sim.server.open_streams == 1)


@dataclass
class ReleaseServer:
    """A feed and its images on 127.0.0.1 (http, as a LAN file server often is)."""

    url: str = ""
    releases: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    image_requests: int = 0
    image_delay_s: float = 0.0  # a slow file server: the install stays in "preparing"

    def publish(
        self,
        version: str,
        image: bytes,
        *,
        sha256: str | None = None,
        chip: str = CHIP,
        url: str | None = None,
    ) -> None:
        """List a release (sha256 and chip as the feed claims them) and serve its image."""
        name = f"garden-{version}.bin"
        self.files[name] = image
        self.releases.append(
            {
                "project": PROJECT,
                "chip": chip,
                "version": version,
                "channel": "stable",
                "url": url or name,
                "size": len(image),
                "sha256": sha256 or hashlib.sha256(image).hexdigest(),
                "summary": f"Garden {version}",
            }
        )

    async def feed(self, request: web.Request) -> web.Response:
        body = {"format": "esp-ota-feed", "format_version": 1, "releases": self.releases}
        return web.json_response(body)

    async def file(self, request: web.Request) -> web.StreamResponse:
        self.image_requests += 1
        await asyncio.sleep(self.image_delay_s)
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")


@pytest.fixture
async def release_server(socket_enabled: None) -> AsyncIterator[ReleaseServer]:
    """Serves /feed.json and the images it lists."""
    server = ReleaseServer()
    async with serving(web.get("/feed.json", server.feed), web.get("/{name}", server.file)) as port:
        server.url = f"http://127.0.0.1:{port}/feed.json"
        yield server


async def start_device_update(
    sim: SimDevice, server: FirmwareServer, image: bytes, version: str = "1.1.0"
) -> None:
    """Tell the device to pull `image` itself, without Home Assistant (an update someone
    else started; its request carries the image's own SHA-256)."""
    await sim.device.start_ota(
        OtaRequest(
            url=server.add(f"/{version}.bin", image),
            sha256=hashlib.sha256(image).hexdigest(),
            size=len(image),
            version=version,
            cert_pem=server.cert_pem,
        )
    )
