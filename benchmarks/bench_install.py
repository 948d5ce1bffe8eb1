"""50 devices updated at once with a 4 MiB image through Home Assistant, against a bare
aiohttp static-file server over TLS: time, bytes/s, peak RSS growth, worst event-loop lag.

Run from the repository root: .venv/bin/python -m benchmarks.bench_install [--count N]
    [--size-mib N] [--profile out.prof]
Everything runs in this one process, on 127.0.0.1: a fleet of simulated devices
(simulator/fleet.py, unthrottled, instant reboots, the 16 MB partition table with 7 MiB OTA
slots), an http feed server listing one release (a 4 MiB image built with
espota.image_builder), and for the second phase a real Home Assistant core (as in
bench_ha_startup.py) with one esp_ota entry per device on that feed, max_parallel_installs =
the device count, and its firmware server on 127.0.0.1, any free port.

1. Baseline, no Home Assistant: the same image, as a file, from aiohttp's web.FileResponse
   over TLS (a self-signed certificate the devices pin); each device is told to pull it
   through the simulator's own API (SimulatedDevice.start_ota). Ends when every device runs
   the new image (pending_verify; the baseline confirms nothing). A reboot without a
   confirm then rolls every device back to the factory image (bootloader rollback), so the
   same devices can take the same image again.
2. Home Assistant: update.install on every update entity at once (blocking service calls,
   gathered). Ends when every call has returned, each device's installed_version is the new
   version and the device runs it confirmed valid. The first install fetches the image from
   the feed into Home Assistant's cache (one download and verification for all devices):
   that time is reported separately (from the feed server's side).

Figures, the same for both phases:
- total: from the first start request (baseline) or the service calls (Home Assistant) to
  the end described above;
- download phase and bytes/s: from the devices' progress (bytes written to flash, read from
  every device each tick): from the first byte any device wrote to the moment the last
  device had written the whole image; bytes/s = devices x image size / that span;
- peak RSS growth: VmRSS (/proc/self/status) sampled each tick, peak minus the value at the
  phase's start (this process holds the devices too: their flash is part of it);
- worst event-loop lag: a ticker sleeps 10 ms and records the worst overshoot.
Targets: Home Assistant's bytes/s at least 0.8 of the baseline's, peak RSS growth under
32 MB, worst lag under 100 ms. Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import logging
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

from aiohttp import web
from aiohttp.resolver import AsyncResolver
from homeassistant import loader
from homeassistant.components.update.const import ATTR_INSTALLED_VERSION, SERVICE_INSTALL
from homeassistant.components.update.const import DOMAIN as UPDATE_DOMAIN
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_ENTITY_ID, CONF_HOST, CONF_MAC, CONF_PORT, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import frame
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
)

from custom_components.esp_ota import const
from custom_components.esp_ota.const import (
    CONF_CERT_FINGERPRINT,
    CONF_CHANNEL,
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_MAX_PARALLEL_INSTALLS,
    CONF_REBOOT_TIMEOUT,
    CONF_SECRET,
    DOMAIN,
)
from custom_components.esp_ota.espota.certificates import make_server_certificate
from custom_components.esp_ota.espota.image_builder import build_app_image
from simulator.device import SimulatedDevice
from simulator.fleet import Fleet, FleetDevice, FleetOptions
from simulator.model import ImageState, OtaRequest, OtaState
from simulator.pace import Pace
from simulator.partitions import PartitionScheme

PROJECT = "esp-ota-demo"
CHIP = "esp32"
FACTORY = "1.0.0"
NEW = "2.0.0"
TICK_S = 0.010
TARGET_RATIO = 0.8
TARGET_RSS_MB = 32.0  # MB as the issue says: 10**6 bytes
TARGET_LAG_S = 0.100
PHASE_LIMIT_S = 600.0


def rss_kib() -> int:
    """Resident set size of this process in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Watch:
    """Each tick: the loop's lag, RSS, and every device's progress on the new image."""

    devices: list[SimulatedDevice]
    size: int
    started: float = field(default_factory=time.perf_counter)
    start_rss_kib: int = field(default_factory=rss_kib)
    peak_rss_kib: int = 0
    worst_lag_s: float = 0.0
    first_start: float | None = None  # a device began an OTA to the new version
    first_byte: float | None = None  # a device wrote the first byte of it
    done_at: dict[int, float] = field(default_factory=dict)  # device index -> all written
    running: bool = True
    # The job each device showed before the phase (an earlier phase's, finished).
    earlier_ota_ids: list[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.earlier_ota_ids = [device.ota_status().ota_id for device in self.devices]

    def sample(self) -> None:
        now = time.perf_counter()
        self.peak_rss_kib = max(self.peak_rss_kib, rss_kib())
        for index, device in enumerate(self.devices):
            if index in self.done_at:
                continue
            status = device.ota_status()
            if (
                status.ota_id == self.earlier_ota_ids[index]
                or status.target_version != NEW
                or status.state is OtaState.IDLE
            ):
                continue
            if self.first_start is None:
                self.first_start = now
            if status.bytes_written > 0 and self.first_byte is None:
                self.first_byte = now
            if status.bytes_written >= self.size:
                self.done_at[index] = now

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        self.peak_rss_kib = self.start_rss_kib
        while self.running:
            before = loop.time()
            await asyncio.sleep(TICK_S)
            self.worst_lag_s = max(self.worst_lag_s, loop.time() - before - TICK_S)
            self.sample()


@dataclass(frozen=True)
class Phase:
    """What one phase measured (seconds from the phase's start)."""

    name: str
    total_s: float
    first_start_s: float
    first_byte_s: float
    download_s: float
    total_bytes: int
    rss_growth_kib: int
    worst_lag_s: float

    @property
    def rate(self) -> float:
        """Bytes per second during the download phase."""
        return self.total_bytes / self.download_s

    @classmethod
    def of(cls, name: str, watch: Watch, ended: float) -> Phase:
        if watch.first_start is None or watch.first_byte is None:
            raise RuntimeError(f"{name}: no device downloaded anything")
        if len(watch.done_at) != len(watch.devices):
            raise RuntimeError(f"{name}: {len(watch.done_at)} of {len(watch.devices)} finished")
        return cls(
            name=name,
            total_s=ended - watch.started,
            first_start_s=watch.first_start - watch.started,
            first_byte_s=watch.first_byte - watch.started,
            download_s=max(watch.done_at.values()) - watch.first_byte,
            total_bytes=len(watch.devices) * watch.size,
            rss_growth_kib=watch.peak_rss_kib - watch.start_rss_kib,
            worst_lag_s=watch.worst_lag_s,
        )


async def watched(
    name: str, devices: list[SimulatedDevice], size: int, run: Callable[[], Any]
) -> Phase:
    """Run `run()` (a coroutine function) under a Watch; the phase's figures."""
    watch = Watch(devices, size)
    ticker = asyncio.create_task(watch.tick())
    try:
        async with asyncio.timeout(PHASE_LIMIT_S):
            await run()
        ended = time.perf_counter()
        watch.sample()  # a device that finished after the last tick
    finally:
        watch.running = False
        await ticker
    return Phase.of(name, watch, ended)


async def wait_until(condition: Callable[[], bool], within_s: float) -> None:
    """Poll `condition` every 5 ms."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - device and entity state have no event here
            await asyncio.sleep(0.005)


# --- the feed ---------------------------------------------------------------------------


class FeedServer:
    """An http feed on 127.0.0.1 listing one release, and its image; records when the
    image was asked for and when its last byte went out."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.url = ""
        self.image_requests: list[tuple[float, float]] = []
        self._runner: web.AppRunner | None = None
        self._body = b""

    async def _feed(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._body, content_type="application/json")

    async def _image(self, request: web.Request) -> web.StreamResponse:
        asked = time.perf_counter()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(self.image)
        await response.prepare(request)
        await response.write(self.image)
        await response.write_eof()
        self.image_requests.append((asked, time.perf_counter()))
        return response

    async def start(self) -> None:
        """Listen on a free 127.0.0.1 port."""
        app = web.Application()
        app.router.add_get("/feed.json", self._feed)
        app.router.add_get("/image.bin", self._image)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.url = f"{base}/feed.json"
        release = {
            "project": PROJECT,
            "chip": CHIP,
            "version": NEW,
            "channel": "stable",
            "url": f"{base}/image.bin",
            "size": len(self.image),
            "sha256": hashlib.sha256(self.image).hexdigest(),
            "summary": f"{PROJECT} {NEW}",
        }
        self._body = json.dumps(
            {"format": "esp-ota-feed", "format_version": 1, "releases": [release]}
        ).encode()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


# --- phase 1: a bare static-file server --------------------------------------------------


async def baseline(devices: list[SimulatedDevice], image: bytes, folder: Path) -> Phase:
    """Every device pulls the image from web.FileResponse over TLS, started directly."""
    path = folder / "firmware.bin"
    await asyncio.to_thread(path.write_bytes, image)
    certificate = await asyncio.to_thread(make_server_certificate, ["127.0.0.1"])
    context = await asyncio.to_thread(certificate.ssl_context)

    async def static(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/firmware.bin", static)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    request = OtaRequest(
        url=f"https://127.0.0.1:{runner.addresses[0][1]}/firmware.bin",
        sha256=hashlib.sha256(image).hexdigest(),
        size=len(image),
        version=NEW,
        cert_pem=certificate.cert_pem,
    )

    def all_running_it() -> bool:
        return all(
            device.online
            and device.info().version == NEW
            and device.info().image_state is ImageState.PENDING_VERIFY
            for device in devices
        )

    async def run() -> None:
        await asyncio.gather(*(device.start_ota(request) for device in devices))
        await wait_until(all_running_it, PHASE_LIMIT_S)

    try:
        return await watched("FileResponse (TLS)", devices, len(image), run)
    finally:
        await runner.cleanup()


async def roll_back(devices: list[SimulatedDevice]) -> None:
    """Reboot without confirming: the bootloader rolls every device back to the factory
    image, and the slot the baseline wrote is free for the next install."""
    await asyncio.gather(*(device.reboot() for device in devices))
    await asyncio.gather(*(device.wait_idle(60) for device in devices))
    await wait_until(lambda: all(device.online for device in devices), 60)
    versions = {device.info().version for device in devices}
    if versions != {FACTORY}:
        raise RuntimeError(f"after the rollback the devices run {versions}")


# --- phase 2: through Home Assistant -----------------------------------------------------


def plain_resolver() -> AsyncResolver:
    """aiohttp's resolver, closable the way Home Assistant closes its own one."""
    resolver = AsyncResolver()
    resolver.real_close = resolver.close  # type: ignore[attr-defined]
    return resolver


def entry_for(member: FleetDevice, feed_url: str, count: int) -> MockConfigEntry:
    """A config entry as the config flow stores it, on the feed, all installs at once."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"{PROJECT} {member.mac[-5:]}",
        unique_id=member.mac,
        data={
            CONF_HOST: member.host,
            CONF_PORT: member.port,
            CONF_SECRET: member.secret,
            CONF_CERT_FINGERPRINT: member.cert_fingerprint,
            CONF_MAC: member.mac,
        },
        options={
            CONF_FEED_URL: feed_url,
            CONF_FEED_PUBLIC_KEY: "",
            CONF_CHANNEL: "stable",
            CONF_REBOOT_TIMEOUT: 180,
            CONF_MAX_PARALLEL_INSTALLS: count,
        },
    )


def update_entity_ids(hass: HomeAssistant, entries: list[MockConfigEntry]) -> list[str]:
    """The firmware update entity of every entry, in entry order."""
    registry = er.async_get(hass)
    return [
        item.entity_id
        for entry in entries
        for item in er.async_entries_for_config_entry(registry, entry.entry_id)
        if item.domain == "update" and item.unique_id.endswith("_firmware")
    ]


async def through_home_assistant(
    fleet: Fleet, feed: FeedServer, size: int, profile: Path | None
) -> tuple[Phase, float]:
    """Home Assistant installs the release on every device; the phase and the cache fetch
    time (the feed's image request to its last byte sent)."""
    members, devices = fleet.members, fleet.devices
    count = len(members)
    with tempfile.TemporaryDirectory(prefix="esp-ota-bench-install-") as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            # What the plugin's enable_custom_integrations fixture does.
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            frame.async_setup(hass)  # as Home Assistant's bootstrap (and the plugin) does
            entries = [entry_for(member, feed.url, count) for member in members]
            for entry in entries:
                entry.add_to_hass(hass)
            assert await async_setup_component(hass, DOMAIN, {})

            def all_offered() -> bool:
                ids = update_entity_ids(hass, entries)
                return len(ids) == count and all(
                    (state := hass.states.get(entity_id)) is not None
                    and state.state == STATE_ON
                    and state.attributes.get("latest_version") == NEW
                    for entity_id in ids
                )

            await wait_until(all_offered, 120)
            if any(entry.state is not ConfigEntryState.LOADED for entry in entries):
                raise RuntimeError("not every entry loaded")
            entity_ids = update_entity_ids(hass, entries)

            async def run() -> None:
                await asyncio.gather(
                    *(
                        hass.services.async_call(
                            UPDATE_DOMAIN,
                            SERVICE_INSTALL,
                            {ATTR_ENTITY_ID: entity_id},
                            blocking=True,
                        )
                        for entity_id in entity_ids
                    )
                )

            profiler = cProfile.Profile() if profile else None
            if profiler:
                profiler.enable()
            phase = await watched("Home Assistant", devices, size, run)
            if profiler and profile:
                profiler.disable()
                profiler.dump_stats(profile)
            installed = {
                state.attributes.get(ATTR_INSTALLED_VERSION)
                for entity_id in entity_ids
                if (state := hass.states.get(entity_id)) is not None
            }
            if installed != {NEW}:
                raise RuntimeError(f"installed versions after the installs: {installed}")
            for device in devices:
                info = device.info()
                if info.version != NEW or info.image_state is not ImageState.VALID:
                    raise RuntimeError(f"{info.mac}: {info.version} {info.image_state}")
            await hass.async_stop(force=True)
    if len(feed.image_requests) != 1:
        raise RuntimeError(f"the feed's image was asked for {len(feed.image_requests)} times")
    asked, sent = feed.image_requests[0]
    return phase, sent - asked


# --- the report --------------------------------------------------------------------------


def print_phases(phases: list[Phase], count: int, size: int) -> None:
    print(f"{count} devices x {size / 2**20:g} MiB, unthrottled, one process, 127.0.0.1")
    print(
        f"{'':<20} {'total s':>8} {'1st start':>10} {'1st byte':>9} {'download s':>11} "
        f"{'MiB/s':>7} {'RSS +MB':>8} {'max lag ms':>11}"
    )
    for phase in phases:
        print(
            f"{phase.name:<20} {phase.total_s:>8.2f} {phase.first_start_s:>10.2f} "
            f"{phase.first_byte_s:>9.2f} {phase.download_s:>11.2f} {phase.rate / 2**20:>7.1f} "
            f"{phase.rss_growth_kib * 1024 / 1e6:>8.1f} {phase.worst_lag_s * 1000:>11.1f}"
        )


def verdicts(ours: Phase, theirs: Phase) -> bool:
    """Print each target against Home Assistant's figures; True if all are met."""
    ratio = ours.rate / theirs.rate
    rss_mb = ours.rss_growth_kib * 1024 / 1e6
    checks = [
        (
            f"throughput ratio {ratio:.2f} of the baseline (target >= {TARGET_RATIO})",
            ratio >= TARGET_RATIO,
        ),
        (
            f"peak RSS growth {rss_mb:.1f} MB = {rss_mb / TARGET_RSS_MB:.2f} of the "
            f"{TARGET_RSS_MB:g} MB limit",
            rss_mb < TARGET_RSS_MB,
        ),
        (
            f"worst event-loop lag {ours.worst_lag_s * 1000:.1f} ms = "
            f"{ours.worst_lag_s / TARGET_LAG_S:.2f} of the {TARGET_LAG_S * 1000:g} ms limit",
            ours.worst_lag_s < TARGET_LAG_S,
        ),
    ]
    for text, met in checks:
        print(f"  {'met   ' if met else 'MISSED'} {text}")
    return all(met for _, met in checks)


async def main(count: int, size: int, profile: Path | None) -> int:
    """Both phases on the same devices and the same image; exit status 1 if a target is
    missed."""
    image = await asyncio.to_thread(
        build_app_image, project=PROJECT, version=NEW, chip=CHIP, size=size
    )
    fleet = Fleet(
        FleetOptions(
            count=count,
            project=PROJECT,
            chip=CHIP,
            version=FACTORY,
            pace=Pace.UNTHROTTLED,
            reboot_time_s=0.0,
            partition_table=PartitionScheme.LARGE_OTA_16MB,
        )
    )
    feed = FeedServer(image)
    await fleet.start()
    await feed.start()
    try:
        with tempfile.TemporaryDirectory(prefix="esp-ota-bench-file-") as folder:
            theirs = await baseline(fleet.devices, image, Path(folder))
        await roll_back(fleet.devices)
        # Home Assistant's resolver asks zeroconf (multicast on every interface); every
        # address here is an IP literal: aiohttp's own resolver, as the plugin's
        # mock_zeroconf_resolver fixture does.
        with (
            patch.object(const, "FIRMWARE_SERVER_HOST", "127.0.0.1"),
            patch.object(const, "FIRMWARE_SERVER_PORT", 0),
            patch(
                "homeassistant.helpers.aiohttp_client._async_make_resolver",
                return_value=plain_resolver(),
            ),
        ):
            ours, fetch_s = await through_home_assistant(fleet, feed, size, profile)
    finally:
        await feed.stop()
        await fleet.stop()
    print_phases([theirs, ours], count, size)
    print(
        "download phase: from the devices' progress (bytes written to flash), first byte "
        "of any device to the last device done"
    )
    print(
        f"Home Assistant's cache fetch (feed image request to last byte sent, once for all): "
        f"{fetch_s:.2f} s; first device started {ours.first_start_s:.2f} s after the calls"
    )
    print("targets (Home Assistant's figures):")
    met = verdicts(ours, theirs)
    if profile:
        print(f"profile of the Home Assistant phase written to {profile}; top by own time:")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(30)
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size-mib", type=float, default=4.0, help="image size in MiB")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the HA phase")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(
        asyncio.run(main(arguments.count, int(arguments.size_mib * 2**20), arguments.profile))
    )
