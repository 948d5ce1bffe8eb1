"""50 devices updated at once with a 4 MiB image through Home Assistant, against a bare
aiohttp static-file server over TLS: time, bytes/s, peak RSS growth, worst event-loop lag.

Run from the repository root: .venv/bin/python -m benchmarks.bench_install [--count N]
    [--size-mib N] [--in-process] [--baseline-rounds N] [--profile out.prof]
On 127.0.0.1: a fleet of simulated devices (simulator/fleet.py, unthrottled, instant
reboots, the 16 MB partition table with 7 MiB OTA slots), an http feed server listing one
release (a 4 MiB image built with espota.image_builder), and for the second phase a real
Home Assistant core (as in bench_ha_startup.py) with one esp_ota entry per device on that
feed, max_parallel_installs = the device count, and its firmware server on 127.0.0.1, any
free port. The fleet runs in a child process (`python -m simulator`), so the figures are
the server's (or Home Assistant's) alone, as bench_firmware_server.py measures its
clients; --in-process runs it in this process instead, where the devices' own work (TLS,
flash writes, image checks, their event streams) shares the event loop, the CPU and the
RSS with what is measured.

1. Baseline, no Home Assistant: the same image, as a file, from aiohttp's web.FileResponse
   over TLS (a self-signed certificate the devices pin); each device is told to pull it
   directly (POST /api/v1/ota, or SimulatedDevice.start_ota with --in-process). Ends
   when every device runs the new image (pending_verify: the baseline confirms nothing). A
   reboot without a confirm then rolls every device back to the factory image (the
   bootloader's rollback), so the same devices can take the same image again. This runs
   --baseline-rounds times (3); the median round by bytes/s is the baseline.
2. Home Assistant: update.install on every update entity at once (blocking service calls,
   gathered). Ends when every call has returned; then each entity's installed_version must
   be the new version and each device must run it, confirmed valid. The first install
   fetches the image from the feed into Home Assistant's cache (one download and
   verification for all devices): that time is reported separately (the feed server's
   image request to its last byte).

Figures, the same for both phases:
- total: from the start requests (baseline) or the service calls (Home Assistant) to the
  end described above;
- download phase and bytes/s: with --in-process from the devices' progress (bytes written to
  flash, read from every device each tick), first byte written by any device to the last
  device having written the whole image; otherwise from the servers' side
  (FirmwareServer.bytes_served of each grant; for FileResponse when its first response
  began and its last one was sent); bytes/s = devices x image size / that span;
- peak RSS growth: VmRSS (/proc/self/status) sampled each tick, peak minus the value at the
  phase's start;
- worst event-loop lag: a ticker sleeps 10 ms and records the worst overshoot.
Each phase begins after a full garbage collection (gc.collect()), so one owed by what ran
before it does not land in its figures.
Targets: Home Assistant's bytes/s at least 0.8 of the baseline's, peak RSS growth under
32 MB, worst lag under 100 ms. Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import hashlib
import json
import logging
import pstats
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from homeassistant.components.update.const import ATTR_INSTALLED_VERSION, SERVICE_INSTALL
from homeassistant.components.update.const import DOMAIN as UPDATE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from benchmarks.bench_firmware_server import rss_kib
from benchmarks.bench_ha_startup import entry_for, update_entity_ids
from benchmarks.ha_harness import on_loopback, running_home_assistant, wait_offered
from custom_components.esp_ota.const import CONF_MAX_PARALLEL_INSTALLS
from custom_components.esp_ota.espota.certificates import make_server_certificate
from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import DeviceError
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import OtaState
from custom_components.esp_ota.firmware import FIRMWARE_SERVICE
from simulator.fleet import Fleet, FleetDevice, FleetOptions
from simulator.model import OtaRequest
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
STATE_POLL_S = 0.1

# Per device: bytes of the phase's image delivered so far, None while not started.
type Progress = Callable[[], list[int | None]]


@dataclass
class Watch:
    """Each tick: the loop's lag, RSS, and every device's progress on the new image."""

    progress: Progress
    count: int
    size: int
    started: float = field(default_factory=time.perf_counter)
    start_rss_kib: int = field(default_factory=rss_kib)
    peak_rss_kib: int = 0
    worst_lag_s: float = 0.0
    first_start: float | None = None  # a device began the download
    first_byte: float | None = None  # the first byte of it was delivered
    done_at: dict[int, float] = field(default_factory=dict)  # device index -> all delivered
    running: bool = True

    def sample(self) -> None:
        now = time.perf_counter()
        self.peak_rss_kib = max(self.peak_rss_kib, rss_kib())
        for index, delivered in enumerate(self.progress()):
            if delivered is None or index in self.done_at:
                continue
            if self.first_start is None:
                self.first_start = now
            if delivered > 0 and self.first_byte is None:
                self.first_byte = now
            if delivered >= self.size:
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
    finished: int  # devices that received the whole image
    count: int
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
        if not watch.done_at:
            raise RuntimeError(f"{name}: no device received the whole image")
        return cls(
            name=name,
            finished=len(watch.done_at),
            count=watch.count,
            total_s=ended - watch.started,
            first_start_s=watch.first_start - watch.started,
            first_byte_s=watch.first_byte - watch.started,
            download_s=max(watch.done_at.values()) - watch.first_byte,
            total_bytes=len(watch.done_at) * watch.size,
            rss_growth_kib=watch.peak_rss_kib - watch.start_rss_kib,
            worst_lag_s=watch.worst_lag_s,
        )


async def watched(
    name: str,
    progress: Progress,
    count: int,
    size: int,
    run: Callable[[], Coroutine[Any, Any, None]],
) -> Phase:
    """Run `run()` under a Watch; the phase's figures."""
    # A full collection owed by what ran before (Home Assistant's start, the last phase)
    # would otherwise land in this phase's lag; one caused by the phase itself still does.
    gc.collect()
    watch = Watch(progress, count, size)
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


# --- the devices: in this process or in a child ------------------------------------------


class Devices(Protocol):
    """The fleet as the phases use it."""

    members: list[FleetDevice]

    async def start_ota(self, request: OtaRequest) -> None:
        """Have every device pull the image the request names."""

    async def states(self) -> list[tuple[str, str]]:
        """Every device's (running version, image state); ("", "offline") while away."""

    async def reboot(self) -> None:
        """Restart every device."""

    def progress(self) -> Progress | None:
        """From now on: bytes written by each device for a new job (None: not visible)."""

    async def stop(self) -> None:
        """Stop the fleet."""


class InProcessDevices:
    """The fleet in this process, read and driven through the simulator's own API."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.members = fleet.members

    async def start_ota(self, request: OtaRequest) -> None:
        await asyncio.gather(*(device.start_ota(request) for device in self.fleet.devices))

    async def states(self) -> list[tuple[str, str]]:
        out = []
        for device in self.fleet.devices:
            if device.online:
                info = device.info()
                out.append((info.version, info.image_state.value))
            else:
                out.append(("", "offline"))
        return out

    async def reboot(self) -> None:
        await asyncio.gather(*(device.reboot() for device in self.fleet.devices))

    def progress(self) -> Progress:
        devices = self.fleet.devices
        earlier = [device.ota_status().ota_id for device in devices]  # an earlier phase's

        def written() -> list[int | None]:
            out: list[int | None] = []
            for device, before in zip(devices, earlier, strict=True):
                status = device.ota_status()
                started = status.ota_id != before and status.state is not OtaState.IDLE
                out.append(status.bytes_written if started else None)
            return out

        return written

    async def stop(self) -> None:
        await self.fleet.stop()


class ChildProcessDevices:
    """The fleet in a child process (`python -m simulator`), over its HTTPS API."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        members: list[FleetDevice],
        session: aiohttp.ClientSession,
    ) -> None:
        self.process = process
        self.members = members
        self.session = session
        self.clients = [
            DeviceClient(session, m.host, m.port, m.secret, cert_fingerprint=m.cert_fingerprint)
            for m in members
        ]

    @classmethod
    async def start(cls, count: int, folder: Path) -> ChildProcessDevices:
        listing = folder / "fleet.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulator",
            *("--count", str(count), "--project", PROJECT, "--chip", CHIP),
            *("--version", FACTORY, "--pace", Pace.UNTHROTTLED.value, "--reboot-time", "0"),
            *("--partition-table", PartitionScheme.LARGE_OTA_16MB.value),
            *("--json", str(listing)),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        async with asyncio.timeout(120):
            while b"running" not in await process.stdout.readline():
                if process.returncode is not None:
                    raise RuntimeError("the simulator did not start")
        # Drain what it prints from now on, so it never blocks on a full pipe.
        asyncio.get_running_loop().create_task(process.stdout.read())
        document = json.loads(await asyncio.to_thread(listing.read_text))
        members = [FleetDevice(**member) for member in document]
        return cls(process, members, aiohttp.ClientSession())

    async def start_ota(self, request: OtaRequest) -> None:
        await asyncio.gather(
            *(
                client.start_ota(
                    url=request.url,
                    sha256=request.sha256,
                    size=request.size,
                    version=request.version,
                    cert_pem=request.cert_pem,
                    headers=request.headers,
                )
                for client in self.clients
            )
        )

    async def states(self) -> list[tuple[str, str]]:
        async def one(client: DeviceClient) -> tuple[str, str]:
            try:
                info = await client.info()
            except DeviceError:
                return "", "offline"
            return info.version, info.image_state.value

        return list(await asyncio.gather(*(one(client) for client in self.clients)))

    async def reboot(self) -> None:
        await asyncio.gather(*(client.reboot() for client in self.clients))

    def progress(self) -> None:
        return None

    async def stop(self) -> None:
        await self.session.close()
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await self.process.wait()


async def wait_for_states(
    devices: Devices, version: str, image_state: str | None, within_s: float
) -> None:
    """Poll the devices until each one runs `version` (in `image_state`, if given)."""
    async with asyncio.timeout(within_s):
        while not all(  # noqa: ASYNC110 - the devices' state is only there to be read
            running == version and image_state in (None, state)
            for running, state in await devices.states()
        ):
            await asyncio.sleep(STATE_POLL_S)


# --- the feed ---------------------------------------------------------------------------


class FeedServer:
    """An http feed on 127.0.0.1 listing one release, and its image; records when the
    image was asked for and when its last byte went out."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.url = ""
        self.image_requests: list[tuple[float, float]] = []
        self._runner: web.AppRunner | None = None
        self._base = ""
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
        self._base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.url = f"{self._base}/feed.json"
        self.publish(NEW, self.image)

    def publish(self, version: str, image: bytes) -> None:
        """From now on the feed lists `version` alone, and serves `image` for it."""
        self.image = image
        release = {
            "project": PROJECT,
            "chip": CHIP,
            "version": version,
            "channel": "stable",
            "url": f"{self._base}/image.bin",
            "size": len(image),
            "sha256": hashlib.sha256(image).hexdigest(),
            "summary": f"{PROJECT} {version}",
        }
        self._body = json.dumps(
            {"format": "esp-ota-feed", "format_version": 1, "releases": [release]}
        ).encode()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


# --- phase 1: a bare static-file server --------------------------------------------------


async def baseline(devices: Devices, image: bytes, folder: Path) -> Phase:
    """Every device pulls the image from web.FileResponse over TLS, started directly."""
    path = folder / "firmware.bin"
    await asyncio.to_thread(path.write_bytes, image)
    certificate = await asyncio.to_thread(make_server_certificate, ["127.0.0.1"])
    context = await asyncio.to_thread(certificate.ssl_context)
    began: list[float] = []  # a response started
    sent: list[float] = []  # a response's last byte went out

    class TimedFileResponse(web.FileResponse):
        """web.FileResponse, noting when it starts and when it has sent the file."""

        async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
            if self.prepared:  # aiohttp prepares a returned response again: a no-op
                return None
            began.append(time.perf_counter())
            writer = await super().prepare(request)
            sent.append(time.perf_counter())
            return writer

    async def static(_request: web.Request) -> web.FileResponse:
        return TimedFileResponse(path)

    def served() -> list[int | None]:
        # FileResponse counts nothing while it sends: started (1 byte) or done.
        count = len(devices.members)
        done, started = len(sent), len(began) - len(sent)
        return [len(image)] * done + [1] * started + [None] * (count - done - started)

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

    async def run() -> None:
        await devices.start_ota(request)
        await wait_for_states(devices, NEW, "pending_verify", PHASE_LIMIT_S)

    try:
        progress = devices.progress() or served
        return await watched("FileResponse (TLS)", progress, len(devices.members), len(image), run)
    finally:
        await runner.cleanup()


async def roll_back(devices: Devices) -> None:
    """Reboot without confirming: the bootloader rolls every device back to the factory
    image, and the slot the baseline wrote is free for the next install."""
    await devices.reboot()
    await wait_for_states(devices, FACTORY, None, 60)


# --- phase 2: through Home Assistant -----------------------------------------------------


def served_by_home_assistant(hass: HomeAssistant, entries: list[MockConfigEntry]) -> Progress:
    """Bytes the firmware server has sent each device (its grant's bytes_served)."""

    def served() -> list[int | None]:
        service = hass.data.get(FIRMWARE_SERVICE)
        server = service.server if service is not None else None
        out: list[int | None] = []
        for entry in entries:
            record = entry.runtime_data.device.data.job
            token = record.download.token if record and record.download else None
            if server is None or token is None:
                out.append(None)
            else:
                out.append(server.bytes_served(token))
        return out

    return served


async def through_home_assistant(
    devices: Devices, feed: FeedServer, size: int, profile: Path | None
) -> tuple[Phase, float]:
    """Home Assistant installs the release on every device; the phase and the cache fetch
    time (the feed's image request to its last byte sent)."""
    members = devices.members
    count = len(members)
    entries = [
        entry_for(member, feed.url, **{CONF_MAX_PARALLEL_INSTALLS: count}) for member in members
    ]
    async with running_home_assistant(entries, "esp-ota-bench-install-") as hass:
        await wait_offered(hass, entries, NEW, 120)
        entity_ids = update_entity_ids(hass, entries)

        failures: list[BaseException] = []

        async def run() -> None:
            results = await asyncio.gather(
                *(
                    hass.services.async_call(
                        UPDATE_DOMAIN,
                        SERVICE_INSTALL,
                        {ATTR_ENTITY_ID: entity_id},
                        blocking=True,
                    )
                    for entity_id in entity_ids
                ),
                return_exceptions=True,
            )
            failures.extend(r for r in results if isinstance(r, BaseException))

        progress = devices.progress() or served_by_home_assistant(hass, entries)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        phase = await watched("Home Assistant", progress, count, size, run)
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        installed = [
            state.attributes.get(ATTR_INSTALLED_VERSION)
            for entity_id in entity_ids
            if (state := hass.states.get(entity_id)) is not None
        ]
        states = await devices.states()
        succeeded = sum(state == (NEW, "valid") for state in states)
        if failures:
            reasons = Counter(str(failure).split(": ", 1)[-1][:120] for failure in failures)
            print(f"{len(failures)} of {count} installs FAILED:")
            for reason, times in reasons.most_common():
                print(f"  {times} x {reason}")
        elif installed.count(NEW) != count or succeeded != count:
            raise RuntimeError(f"installed {installed}, the devices {states}")
    if len(feed.image_requests) != 1:
        raise RuntimeError(f"the feed's image was asked for {len(feed.image_requests)} times")
    asked, sent = feed.image_requests[0]
    return phase, sent - asked


# --- the report --------------------------------------------------------------------------


def print_phases(phases: list[Phase], count: int, size: int, where: str) -> None:
    print(f"{count} devices x {size / 2**20:g} MiB, unthrottled, 127.0.0.1, {where}")
    print(
        f"{'':<20} {'total s':>8} {'1st start':>10} {'1st byte':>9} {'download s':>11} "
        f"{'MiB/s':>7} {'RSS +MB':>8} {'max lag ms':>11}"
    )
    for phase in phases:
        if phase.finished != phase.count:
            print(f"{phase.name}: only {phase.finished} of {phase.count} received the image")
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
    if ours.finished != ours.count:
        checks.append((f"{ours.count - ours.finished} devices never got the image", False))
    for text, met in checks:
        print(f"  {'met   ' if met else 'MISSED'} {text}")
    return all(met for _, met in checks)


async def start_devices(count: int, child: bool, folder: Path) -> Devices:
    """The fleet, in this process or in a child."""
    if child:
        return await ChildProcessDevices.start(count, folder)
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
    await fleet.start()
    return InProcessDevices(fleet)


async def main(count: int, size: int, child: bool, rounds: int, profile: Path | None) -> int:
    """Both phases on the same devices and the same image; exit status 1 if a target is
    missed."""
    image = await asyncio.to_thread(
        build_app_image, project=PROJECT, version=NEW, chip=CHIP, size=size
    )
    feed = FeedServer(image)
    with tempfile.TemporaryDirectory(prefix="esp-ota-bench-file-") as folder:
        devices = await start_devices(count, child, Path(folder))
        try:
            await feed.start()
            baselines = []
            for _ in range(rounds):
                baselines.append(await baseline(devices, image, Path(folder)))
                await roll_back(devices)
            with on_loopback():
                ours, fetch_s = await through_home_assistant(devices, feed, size, profile)
        finally:
            await feed.stop()
            with contextlib.suppress(TimeoutError):
                await devices.stop()
    where = "devices in a child process" if child else "devices in this process"
    # The median round (by bytes/s) is the baseline: one host's noise, not its best moment.
    theirs = sorted(baselines, key=lambda phase: phase.rate)[len(baselines) // 2]
    print_phases([*baselines, ours], count, size, where)
    if rounds > 1:
        print(
            f"baseline: the median of {rounds} FileResponse rounds, {theirs.rate / 2**20:.1f} MiB/s"
        )
    if child:
        print(
            "download phase: from the servers' side (FirmwareServer.bytes_served per grant; "
            "FileResponse's first response begun to its last sent)"
        )
    else:
        print(
            "download phase: from the devices' progress (bytes written to flash), first "
            "byte of any device to the last device done"
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
    parser.add_argument("--in-process", action="store_true", help="run the devices in this process")
    parser.add_argument(
        "--baseline-rounds", type=int, default=3, help="FileResponse rounds (the median counts)"
    )
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the HA phase")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(
        asyncio.run(
            main(
                arguments.count,
                int(arguments.size_mib * 2**20),
                not arguments.in_process,
                max(1, arguments.baseline_rounds),
                arguments.profile,
            )
        )
    )
