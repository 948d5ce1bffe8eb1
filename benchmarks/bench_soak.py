"""Soak: rounds of "Update all" through Home Assistant on a fleet with random faults;
installs by outcome, stuck jobs, unbootable devices, Home Assistant's RSS, sockets and file
descriptors round after round.

Run from the repository root: .venv/bin/python -m benchmarks.bench_soak [--count 200]
    [--rounds 3] [--seed N] [--size-kib 512] [--log FILE]
As bench_install.py's second phase: a real Home Assistant core (benchmarks/ha_harness.py)
with one esp_ota entry per simulated device on an http feed (bench_install's FeedServer),
max_parallel_installs at the options' maximum (50; the others queue), its firmware server on
127.0.0.1; the devices in a child process (benchmarks/soak_fleet.py: unthrottled, 0.5 s
reboots), so every figure below is Home Assistant's process alone (the feed server aside,
which runs in it).

The job's bounds are shortened so that a round takes a minute or two: TIMEOUTS
(installer.INSTALL_TIMEOUTS patched: start 10 s, stall 6 s, confirm 10 s, total 60 s, poll
1 s) and each entry's reboot time limit (its option) 15 s.

Each round:
1. The feed publishes a new release (2.0.0, 3.0.0, ...; an image of --size-kib) and every
   feed coordinator is refreshed; the round waits until every update entity offers it.
2. Each device gets a fault from simulator/faults.py's FaultPlan or none (seeded: about a
   third healthy, the rest evenly over FAULTS, offsets random in the image).
3. Update all: update.install on every update entity at once. An install has ended when
   its service call returned; one still running STUCK_AFTER_S after its job left the queue
   (the job's own bound, total + confirm + one request's floor, plus STUCK_GRACE_S) is
   stuck, and so is one still queued once no install runs within its bound. Its outcome is
   the job's last record (the device's DeviceState.job).
4. The fleet clears every fault and checks every device (soak_fleet's "check": a device
   still offline is power-cycled, as its owner would); bootable = it answers
   GET /api/v1/info and runs a valid or pending_verify image.
5. Home Assistant settles: every update entity available again and its open files back to
   the idle kinds (at most SETTLE_S); then, after gc.collect(), RSS and open files.
The idle figures are taken once before round 1 (every entry loaded and offering, the
firmware server not started yet: its listening socket, while it listens after a round, is
counted apart). Sockets are told apart from /proc/self/net/tcp{,6} by state and port.

Targets: no stuck job and no unbootable device in any round; sockets and file descriptors
after every round at most the idle counts (the firmware server's listening socket aside);
RSS in use after each later round within TARGET_RSS_GROWTH_MB of its value after round 1
(round 1 warms up what every install uses: the firmware server, its TLS context, code paths;
the image cache is on disk, so it adds no RSS). "In use": measured again after glibc's
malloc_trim(0) hands the heap's freed pages back, since the raw RSS also keeps what malloc
retains after a burst of TLS connections and worker-thread reads (tracemalloc saw Python's
own allocations grow by 0.7 MB over a round while the raw RSS grew by 30). Both are printed.
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant.components.update.const import DOMAIN as UPDATE_DOMAIN
from homeassistant.components.update.const import SERVICE_INSTALL
from homeassistant.const import ATTR_ENTITY_ID, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from benchmarks.bench_firmware_server import rss_kib
from benchmarks.bench_ha_startup import entry_for, update_entity_ids, wait_until
from benchmarks.bench_install import CHIP, PROJECT, FeedServer
from benchmarks.ha_harness import offering, on_loopback, running_home_assistant, wait_offered
from benchmarks.procfs import tcp_sockets
from custom_components.esp_ota import installer
from custom_components.esp_ota.const import CONF_MAX_PARALLEL_INSTALLS, CONF_REBOOT_TIMEOUT
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.job_record import UpdateJobRecord, UpdateStep
from custom_components.esp_ota.espota.update_job import JobTimeouts
from custom_components.esp_ota.feed_coordinator import FEED_COORDINATORS
from custom_components.esp_ota.firmware import FIRMWARE_SERVICE
from simulator.fleet import FleetDevice

# stall_s well under the simulated device's own watchdog (15 s without a byte, counted from
# the last byte where the job counts from the last flash write): a long stall is the job's.
TIMEOUTS = JobTimeouts(start_s=10, stall_s=6, reboot_s=15, confirm_s=10, total_s=60, poll_s=1)
REQUEST_FLOOR_S = min(5.0, TIMEOUTS.start_s)  # update_job: each request's last attempt
STUCK_GRACE_S = 20.0  # two CPUs shared with other work: a late end is not a stuck job
STUCK_AFTER_S = TIMEOUTS.total_s + TIMEOUTS.confirm_s + REQUEST_FLOOR_S + STUCK_GRACE_S
OFFER_WAIT_S = 120.0
# Up to EVENT_RECONNECT_MAX_S (30 s) passes before an event stream is tried again.
SETTLE_S = 45.0
SETTLE_POLL_S = 0.5
IDLE_STABLE_S = 3.0
IDLE_WAIT_S = 60.0
HEALTHY_SHARE = 1 / 3
TARGET_RSS_GROWTH_MB = 8.0  # MB = 10**6 bytes; 40 KB per install at 200 devices
FLEET_REBOOT_S = 0.5

# The stall that the job outlasts (under the device's 5 s read timeout), and the one it
# aborts (its stall_s in between; the device's own watchdog gives up after 15 s).
SHORT_STALL_S = 2.0
LONG_STALL_S = 30.0
# The options' maximum of installs at once (config_flow's NumberSelector).
MAX_PARALLEL_INSTALLS = 50

# Fault label -> what the job should end with. None of them may leave a device unbootable.
FAULTS: dict[str, str] = {
    "drop_at_byte": "succeeded",  # resumed with a Range request
    "corrupt_at_byte": "failed: download_failed",
    "truncate_at_byte": "failed: download_failed",
    f"stall_at_byte {SHORT_STALL_S:g} s": "succeeded",
    f"stall_at_byte {LONG_STALL_S:g} s": "failed: stalled",
    "slow_link_bytes_per_s": "succeeded",
    "wrong_certificate": "failed: download_failed",
    "power_loss_at_byte": "failed: download_failed",
    "crash_on_next_boot": "rolled_back",
    "crash_versions": "rolled_back",
    "never_come_back": "failed: not_back",
    "unhealthy": "failed: confirm_failed",
}
HEALTHY = "none"
EXPECTED = {HEALTHY: "succeeded", **FAULTS}


def fault_plan(label: str, rng: random.Random, size: int, version: str) -> dict[str, Any]:
    """The FaultPlan fields (JSON-ready) of a fault label, its offsets drawn from `rng`."""
    name = label.split(maxsplit=1)[0]
    if name in ("drop_at_byte", "truncate_at_byte", "power_loss_at_byte"):
        return {name: rng.randrange(1, size)}
    if name == "corrupt_at_byte":
        return {name: rng.randrange(0, size)}
    if name == "stall_at_byte":
        seconds = LONG_STALL_S if label.endswith(f"{LONG_STALL_S:g} s") else SHORT_STALL_S
        return {name: rng.randrange(1, size), "stall_seconds": seconds}
    if name == "slow_link_bytes_per_s":
        return {name: size / rng.uniform(5.0, 20.0)}  # a 5 to 20 s download
    if name == "crash_versions":
        return {name: [version]}
    return {name: True}


def choose_faults(rng: random.Random, count: int) -> list[str]:
    """Each device's fault label for one round."""
    labels = list(FAULTS)
    return [HEALTHY if rng.random() < HEALTHY_SHARE else rng.choice(labels) for _ in range(count)]


# --- the fleet, in a child process -------------------------------------------------------


class SoakFleet:
    """benchmarks/soak_fleet.py in a child process, driven over its stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process, members: list[FleetDevice]) -> None:
        self.process = process
        self.members = members

    @classmethod
    async def start(cls, count: int) -> SoakFleet:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "benchmarks.soak_fleet", "--count", str(count)),
            *("--reboot-time", str(FLEET_REBOOT_S)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 2**20,  # a check's reply is one line for every device
        )
        fleet = cls(process, [])
        async with asyncio.timeout(180):
            first = await fleet._read()
        fleet.members = [FleetDevice(**member) for member in first["members"]]
        return fleet

    async def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fleet ended (exit status {await self.process.wait()})")
        message: dict[str, Any] = json.loads(line)
        return message

    async def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._read()

    async def set_faults(self, faults: dict[int, dict[str, Any]]) -> None:
        await self._command({"op": "faults", "faults": faults})

    async def check(self) -> list[dict[str, Any]]:
        reply = await self._command({"op": "check"})
        devices: list[dict[str, Any]] = reply["devices"]
        return devices

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(RuntimeError, ConnectionError):
                await self._command({"op": "stop"})
        async with asyncio.timeout(60):
            await self.process.wait()


# --- Home Assistant's open files ---------------------------------------------------------


@dataclass(frozen=True)
class OpenFiles:
    """This process's file descriptors by kind (/proc/self/fd)."""

    kinds: Counter[str]

    @property
    def fds(self) -> int:
        return sum(self.kinds.values())

    @property
    def sockets(self) -> int:
        return sum(n for kind, n in self.kinds.items() if kind.startswith("socket"))

    @property
    def server_listening(self) -> int:
        """The firmware server's listening sockets (it starts with the first install)."""
        return self.kinds["socket tcp firmware server listen"]

    def describe(self) -> str:
        kinds = sorted(self.kinds.items())
        return ", ".join(f"{kind.removeprefix('socket ')} {n}" for kind, n in kinds)


def open_files(hass: HomeAssistant, device_ports: set[int], feed_port: int) -> OpenFiles:
    """Count this process's file descriptors, sockets by what they connect."""
    service = hass.data.get(FIRMWARE_SERVICE)
    server = service.server if service is not None else None
    server_port: int | None = None
    if server is not None:
        with contextlib.suppress(RuntimeError):  # not listening (stopped while idle)
            server_port = server.port
    tcp = tcp_sockets()
    kinds: Counter[str] = Counter()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if not target.startswith("socket:["):
            kinds[target.split(":", 1)[0] if ":" in target else "file"] += 1
            continue
        inode = target[len("socket:[") : -1]
        if inode not in tcp:
            kinds["socket other (unix, udp, netlink)"] += 1
            continue
        row = tcp[inode]
        if row.local_port == server_port:
            peer = "firmware server"
        elif row.remote_port in device_ports:
            peer = "to devices"
        elif feed_port in (row.local_port, row.remote_port):
            peer = "feed"
        else:
            peer = "other"
        kinds[f"socket tcp {peer} {row.state_name}"] += 1
    return OpenFiles(kinds)


# --- one round ---------------------------------------------------------------------------


def outcome(record: UpdateJobRecord) -> str:
    """succeeded, failed: <reason>, or rolled_back."""
    if record.step is UpdateStep.FAILED:
        return f"failed: {record.reason}"
    return str(record.step)


@dataclass
class DeviceRound:
    """One device in one round."""

    fault: str
    plan: dict[str, Any]
    record: UpdateJobRecord | None = None
    call_error: str | None = None  # the service call's exception when no job of the round ran
    stuck: bool = False
    stuck_at: str = ""  # where a stuck job was when the round gave up on it
    check: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def outcome(self) -> str:
        if self.stuck:
            step = self.record.step if self.record is not None else "?"
            return f"stuck at {step}"
        if self.record is None:
            return f"not started: {self.call_error}"
        return outcome(self.record)

    @property
    def bootable(self) -> bool:
        return self.check.get("error") is None and self.check.get("image_state") in (
            "valid",
            "pending_verify",
        )


@dataclass
class RoundFigures:
    """What one round measured."""

    number: int
    version: str
    devices: list[DeviceRound]
    not_offered: int
    installs_s: float
    round_s: float
    rss_before_kib: int
    rss_after_kib: int
    rss_in_use_kib: int | None  # after malloc_trim(0); None without glibc
    cache_bytes: int
    files_after: OpenFiles
    settled: bool


async def refresh_feeds(hass: HomeAssistant) -> None:
    """Every feed coordinator fetches now (they would in an hour)."""
    for coordinator in list(hass.data[FEED_COORDINATORS].coordinators.values()):
        await coordinator.async_refresh()


async def settle(
    hass: HomeAssistant,
    entries: list[MockConfigEntry],
    idle: OpenFiles,
    files: Callable[[], OpenFiles],
) -> tuple[OpenFiles, bool]:
    """Until every update entity is available and the open files are the idle ones (the
    firmware server's listening socket aside), at most SETTLE_S; the files then, and
    whether they settled."""
    entity_ids = update_entity_ids(hass, entries)
    deadline = time.monotonic() + SETTLE_S
    while True:
        now = files()
        available = all(
            (state := hass.states.get(entity_id)) is not None and state.state != STATE_UNAVAILABLE
            for entity_id in entity_ids
        )
        kinds = now.kinds.copy()
        kinds.pop("socket tcp firmware server listen", None)
        if available and +kinds == +idle.kinds:
            return now, True
        if time.monotonic() >= deadline:
            return now, False
        await asyncio.sleep(SETTLE_POLL_S)


async def quiet_files(files: Callable[[], OpenFiles]) -> OpenFiles:
    """The open files once they stay the same for IDLE_STABLE_S with no connection to the
    feed left (a kept-alive one closes after 15 s), at most IDLE_WAIT_S."""
    deadline = time.monotonic() + IDLE_WAIT_S
    last = files()
    while time.monotonic() < deadline:
        await asyncio.sleep(IDLE_STABLE_S)
        now = files()
        feed_connections = sum(
            n for kind, n in now.kinds.items() if "feed" in kind and not kind.endswith("listen")
        )
        if now.kinds == last.kinds and not feed_connections:
            return now
        last = now
    raise RuntimeError(f"Home Assistant's open files never settled: {last.describe()}")


async def wait_installs(
    calls: dict[asyncio.Task[Any], int], entries: list[MockConfigEntry], version: str
) -> tuple[set[asyncio.Task[Any]], set[asyncio.Task[Any]]]:
    """Until every call returned, or none left can end: (done, stuck). An install can end
    while its job runs within STUCK_AFTER_S of leaving the queue (started_at); a queued one
    while another runs within its bound or has just ended (its slot goes to the next)."""
    done: set[asyncio.Task[Any]] = set()
    pending = set(calls)
    while pending:
        ended, pending = await asyncio.wait(pending, timeout=1.0)
        done |= ended
        now = time.time()  # started_at is wall clock (epoch seconds)
        records = [entries[calls[task]].runtime_data.device.data.job for task in pending]
        running_in_bound = any(
            record is not None
            and record.to_version == version
            and record.started_at is not None
            and now - record.started_at <= STUCK_AFTER_S
            for record in records
        )
        if pending and not ended and not running_in_bound:
            break
    return done, pending


@dataclass
class Soak:
    """What every round works with."""

    hass: HomeAssistant
    entries: list[MockConfigEntry]
    fleet: SoakFleet
    feed: FeedServer
    rng: random.Random
    size: int
    idle: OpenFiles
    files: Callable[[], OpenFiles]


async def one_round(soak: Soak, number: int) -> RoundFigures:
    """Publish, fault, Update all, check, settle (the module docstring's steps)."""
    hass, entries, fleet, size = soak.hass, soak.entries, soak.fleet, soak.size
    version = f"{number + 1}.0.0"
    started = time.perf_counter()
    image = await asyncio.to_thread(
        build_app_image, project=PROJECT, version=version, chip=CHIP, size=size
    )
    soak.feed.publish(version, image)
    await refresh_feeds(hass)

    def all_offered() -> bool:
        return len(offering(hass, entries, version)) == len(entries)

    with contextlib.suppress(TimeoutError):
        await wait_until(all_offered, OFFER_WAIT_S)
    offered = set(offering(hass, entries, version))
    entity_ids = update_entity_ids(hass, entries)

    labels = choose_faults(soak.rng, len(entries))
    devices = [
        DeviceRound(label, fault_plan(label, soak.rng, size, version) if label != HEALTHY else {})
        for label in labels
    ]
    await fleet.set_faults({i: d.plan for i, d in enumerate(devices) if d.plan})

    gc.collect()
    rss_before = rss_kib()
    called = time.perf_counter()
    calls = {
        asyncio.create_task(
            hass.services.async_call(
                UPDATE_DOMAIN, SERVICE_INSTALL, {ATTR_ENTITY_ID: entity_id}, blocking=True
            )
        ): index
        for index, entity_id in enumerate(entity_ids)
        if entity_id in offered
    }
    done, pending = await wait_installs(calls, entries, version)
    installs_s = time.perf_counter() - called
    for task in pending:
        stuck = devices[calls[task]]
        stuck.stuck = True
        record = entries[calls[task]].runtime_data.device.data.job
        if record is not None and record.to_version == version:
            stuck.stuck_at = (
                f"{time.time() - record.step_since:.0f} s at {record.step}, "
                f"{record.bytes_written} of {record.size} bytes, job {record.job_id}"
            )
        task.cancel()  # the call only: the job runs on, shielded
    for task in done:
        if (error := task.exception()) is not None:
            devices[calls[task]].call_error = str(error)
    for index, (entry, device) in enumerate(zip(entries, devices, strict=True)):
        record = entry.runtime_data.device.data.job
        if record is not None and record.to_version == version:
            device.record = record
        elif index not in calls.values():
            device.call_error = "the release was not offered"

    for check in await fleet.check():
        devices[check["index"]].check = check
    files_after, settled = await settle(hass, entries, soak.idle, soak.files)
    gc.collect()
    return RoundFigures(
        number=number,
        version=version,
        devices=devices,
        not_offered=len(entries) - len(offered),
        installs_s=installs_s,
        round_s=time.perf_counter() - started,
        rss_before_kib=rss_before,
        rss_after_kib=rss_kib(),
        rss_in_use_kib=trimmed_rss_kib(),
        cache_bytes=hass.data[FIRMWARE_SERVICE].store.total_bytes,
        files_after=files_after,
        settled=settled,
    )


# --- the report --------------------------------------------------------------------------


def trimmed_rss_kib() -> int | None:
    """RSS once glibc's malloc_trim(0) has handed freed heap pages back; None without it."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return None
    libc.malloc_trim(0)
    return rss_kib()


def mb(kib: int) -> float:
    return kib * 1024 / 1e6


def print_round(figures: RoundFigures, idle: OpenFiles, members: list[FleetDevice]) -> None:
    devices = figures.devices
    print(
        f"\nround {figures.number}: {figures.version} to {len(devices)} devices, "
        f"{figures.round_s:.1f} s (installs {figures.installs_s:.1f} s)"
    )
    if figures.not_offered:
        print(f"  NOT OFFERED to {figures.not_offered} devices within {OFFER_WAIT_S:g} s")
    by_outcome = Counter(device.outcome for device in devices)
    print("  installs: " + ", ".join(f"{n} {what}" for what, n in by_outcome.most_common()))
    print(f"  {'fault':<26} {'n':>4}  outcomes (expected)")
    by_fault: dict[str, Counter[str]] = {}
    for device in devices:
        by_fault.setdefault(device.fault, Counter())[device.outcome] += 1
    for fault in [HEALTHY, *FAULTS]:
        if fault not in by_fault:
            continue
        outcomes = by_fault[fault]
        mark = "" if set(outcomes) == {EXPECTED[fault]} else "  <- unlike expected"
        listed = ", ".join(f"{n} {what}" for what, n in outcomes.most_common())
        print(f"  {fault:<26} {outcomes.total():>4}  {listed} ({EXPECTED[fault]}){mark}")
    unexpected = [
        (i, d) for i, d in enumerate(devices) if d.outcome != EXPECTED[d.fault] and not d.stuck
    ]
    for index, device in unexpected[:10]:
        record = device.record
        print(
            f"    device {index} ({members[index].mac}), {device.fault} {device.plan}: "
            f"{device.outcome}"
            + (f", {record.error}: {record.message}" if record is not None else "")
        )
    stuck = [(i, d) for i, d in enumerate(devices) if d.stuck]
    print(f"  stuck jobs: {len(stuck)} (target 0)")
    for index, device in stuck:
        print(
            f"    device {index} ({members[index].mac}), {device.fault} {device.plan}: "
            f"{device.stuck_at or 'no job of this round'}"
        )
    unbootable = [(i, d) for i, d in enumerate(devices) if not d.bootable]
    power_cycled = Counter(d.fault for d in devices if d.check.get("power_cycled"))
    print(f"  devices left unbootable: {len(unbootable)} (target 0)")
    for index, device in unbootable:
        print(
            f"    device {index} ({members[index].mac}), {device.fault} {device.plan}, "
            f"install {device.outcome}: {device.check}"
        )
    if power_cycled:
        print(
            "  power-cycled by the check (offline once healthy again): "
            + ", ".join(f"{n} {fault}" for fault, n in power_cycled.most_common())
        )
    states = Counter(
        f"{d.check.get('version')} {d.check.get('image_state')}" for d in devices if d.bootable
    )
    print("  devices run: " + ", ".join(f"{n} {state}" for state, n in states.most_common()))
    print(
        f"  Home Assistant RSS {mb(figures.rss_before_kib):.1f} MB before, "
        f"{mb(figures.rss_after_kib):.1f} MB after"
        + (
            f" ({mb(figures.rss_in_use_kib):.1f} MB in use: after malloc_trim)"
            if figures.rss_in_use_kib is not None
            else ""
        )
        + "; image cache "
        f"{figures.cache_bytes / 1e6:.1f} MB (on disk)"
    )
    after = figures.files_after
    server = after.server_listening
    print(
        f"  open sockets {after.sockets} (idle {idle.sockets}; +{server} the firmware server's "
        f"listening), file descriptors {after.fds} (idle {idle.fds})"
        + ("" if figures.settled else f"; NOT settled within {SETTLE_S:g} s")
    )
    if not figures.settled:
        print(f"    now:  {after.describe()}")
        print(f"    idle: {idle.describe()}")


def targets(rounds: list[RoundFigures], idle: OpenFiles) -> bool:
    """Print each target, met or not; True if all are met."""
    stuck = sum(d.stuck for f in rounds for d in f.devices)
    unbootable = sum(not d.bootable for f in rounds for d in f.devices)
    checks = [
        (f"stuck jobs: {stuck} in {len(rounds)} rounds (target 0)", stuck == 0),
        (
            f"devices left unbootable: {unbootable} in {len(rounds)} rounds (target 0)",
            unbootable == 0,
        ),
    ]
    for figures in rounds[1:]:
        raw = mb(figures.rss_after_kib - rounds[0].rss_after_kib)
        in_use, first = figures.rss_in_use_kib, rounds[0].rss_in_use_kib
        growth = mb(in_use - first) if in_use is not None and first is not None else raw
        checks.append(
            (
                f"RSS in use after round {figures.number} {growth:+.1f} MB against after "
                f"round 1 (limit +{TARGET_RSS_GROWTH_MB:g} MB; raw RSS {raw:+.1f} MB)",
                growth <= TARGET_RSS_GROWTH_MB,
            )
        )
    for figures in rounds:
        after = figures.files_after
        sockets = after.sockets - after.server_listening
        fds = after.fds - after.server_listening
        checks.append(
            (
                f"after round {figures.number}: {sockets} sockets, {fds} file descriptors "
                f"(the firmware server's listening socket aside) against idle "
                f"{idle.sockets} and {idle.fds}",
                sockets <= idle.sockets and fds <= idle.fds,
            )
        )
    for text, met in checks:
        print(f"  {'met   ' if met else 'MISSED'} {text}")
    return all(met for _, met in checks)


class LogCounter(logging.Handler):
    """Counts Home Assistant's warnings and errors by logger; keeps the first errors."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.first_errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[(record.levelname, record.name)] += 1
        if record.levelno >= logging.ERROR and len(self.first_errors) < 5:
            self.first_errors.append(self.format(record)[:400])


# --- main --------------------------------------------------------------------------------


async def main(count: int, rounds: int, seed: int, size: int) -> int:
    rng = random.Random(seed)
    first_image = await asyncio.to_thread(
        build_app_image, project=PROJECT, version="2.0.0", chip=CHIP, size=size
    )
    feed = FeedServer(first_image)
    began = time.perf_counter()
    fleet = await SoakFleet.start(count)
    fleet_s = time.perf_counter() - began
    results: list[RoundFigures] = []
    try:
        await feed.start()  # lists round 1's release (2.0.0) already
        entries = [
            entry_for(
                member,
                feed.url,
                **{
                    CONF_MAX_PARALLEL_INSTALLS: min(count, MAX_PARALLEL_INSTALLS),
                    CONF_REBOOT_TIMEOUT: TIMEOUTS.reboot_s,
                },
            )
            for member in fleet.members
        ]
        device_ports = {member.port for member in fleet.members}
        feed_port = int(feed.url.split(":")[2].split("/")[0])
        with (
            on_loopback(),
            patch.object(installer, "INSTALL_TIMEOUTS", TIMEOUTS),
        ):
            async with running_home_assistant(entries, "esp-ota-bench-soak-") as hass:
                await wait_offered(hass, entries, "2.0.0", OFFER_WAIT_S)

                def files() -> OpenFiles:
                    return open_files(hass, device_ports, feed_port)

                idle = await quiet_files(files)
                print(
                    f"{count} devices (a child process, started in {fleet_s:.1f} s), "
                    f"{size // 1024} KiB images, seed {seed}, "
                    f"{min(count, MAX_PARALLEL_INSTALLS)} installs at once; job bounds: "
                    f"{TIMEOUTS}; stuck after {STUCK_AFTER_S:g} s out of the queue"
                )
                print(
                    f"idle Home Assistant: RSS {mb(rss_kib()):.1f} MB, {idle.sockets} sockets, "
                    f"{idle.fds} file descriptors ({idle.describe()})"
                )
                soak = Soak(hass, entries, fleet, feed, rng, size, idle, files)
                for number in range(1, rounds + 1):
                    figures = await one_round(soak, number)
                    results.append(figures)
                    print_round(figures, idle, fleet.members)
    finally:
        await feed.stop()
        with contextlib.suppress(TimeoutError):
            await fleet.stop()
    print("\ntargets (Home Assistant's figures):")
    return 0 if targets(results, idle) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--size-kib", type=int, default=512, help="image size in KiB")
    parser.add_argument("--log", type=Path, help="write Home Assistant's log (INFO) here")
    arguments = parser.parse_args()
    log_counter = LogCounter()
    logging.basicConfig(
        level=logging.INFO if arguments.log else logging.WARNING,
        filename=arguments.log or os.devnull,
        filemode="w",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().addHandler(log_counter)
    status = asyncio.run(
        main(arguments.count, arguments.rounds, arguments.seed, arguments.size_kib * 1024)
    )
    print(
        "Home Assistant's log: "
        + (
            ", ".join(
                f"{n} {level} {name}" for (level, name), n in log_counter.counts.most_common(8)
            )
            or "no warnings"
        )
    )
    for text in log_counter.first_errors:
        print(f"  {text}")
    raise SystemExit(status)
