"""Where an idle device's memory goes in Home Assistant: tracemalloc snapshots, RSS, gc
objects and sockets of a fleet of N idle devices, diffed against a fleet of 1.

Run from the repository root:
    .venv/bin/python -m benchmarks.profile_idle [--sizes 1 200] [--settle 40]
        [--tree PATH] [--pace realistic] [--frames 25] [--top 20] [--keep DIR] [--no-plain]
    .venv/bin/python -m benchmarks.profile_idle --keep DIR --report   (print a kept run again)

Each measurement is a fresh child process (this file, --measure N) with the code of --tree
(default: the repository this file is in) first on its path: a real Home Assistant core
(benchmarks/ha_harness.py) with one esp_ota entry per simulated device, all on one feed
(bench_ha_startup's FeedServer, in Home Assistant's process; one request in all). The
devices run in a grandchild process (`python -m simulator`, at --pace), so that none of
their allocations, TLS buffers or sockets are counted. Once every entry is loaded and
every update entity offers the feed's release, the child waits --settle seconds (the
polls and event streams run as they do at home), then for a moment when no connection to
a device is open beside one per device (no poll in flight; at most QUIET_WAIT_S), so that
both sizes are measured at the same kind of moment; then gc.collect() and it measures.

Two runs per size: a traced one (tracemalloc started before Home Assistant, --frames
frames per allocation) for the allocation sites, and a plain one (no tracemalloc, whose
own memory would be in the RSS) for RSS, sockets, gc objects and CPU; --no-plain takes
those from the traced run (RSS then minus tracemalloc's own memory).

Per added device = (figure at the largest size - figure at the smallest) / (difference in
devices). Printed: RSS (raw, and after glibc's malloc_trim(0)), Python's traced memory,
the sockets Home Assistant holds by peer and TCP state, CPU ticks per 30 s over the
settle time, asyncio's SSLProtocol objects and their read buffers, the allocation sites
that grow, grouped four ways (by where the allocation happened, the innermost frame in
aiohttp, asyncio, ssl, Home Assistant or ours, and which frame of ours, else of Home
Assistant, caused it: by file and by line; by the allocating line; by whole traceback,
its telling frames shown), and the gc-tracked objects by type.

tracemalloc sees Python's allocations only: OpenSSL's (its SSL objects, BIO and record
buffers) go to malloc directly. They are estimated two ways: RSS growth minus Python's
traced growth (which also holds allocator slack), and glibc's mallinfo2 (bytes malloc
hands out, in the plain run) minus Python's traced blocks above pymalloc's 512-byte limit
(the ones Python takes from malloc, in the traced run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import linecache
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
FEED_OFFERED_WITHIN_S = 300.0
FLEET_START_S = 300.0
FLEET_STOP_S = 60.0
# After the settle time, at most this long for a moment with no poll in flight (only the
# event streams connected), so that two runs are compared at the same kind of moment.
QUIET_WAIT_S = 30.0
QUIET_POLL_S = 0.1
PYMALLOC_LIMIT = 512  # bytes: larger blocks come from malloc (Objects/obmalloc.c)
# Where an allocation "happens": the innermost frame in one of these (else the innermost).
SITE_PACKAGES = ("aiohttp", "asyncio", "ssl", "homeassistant", "custom_components")
# What "caused" it: the innermost frame of ours, else of Home Assistant.
CAUSE_PACKAGES = ("custom_components", "homeassistant")
# (The same table as benchmarks/procfs.py: this script imports nothing of the project at
# the top, since it also runs as a file with another tree on its path, e.g. a pristine one.)
TCP_STATES = {
    "01": "established",
    "02": "syn_sent",
    "03": "syn_recv",
    "04": "fin_wait1",
    "05": "fin_wait2",
    "06": "time_wait",
    "07": "close",
    "08": "close_wait",
    "09": "last_ack",
    "0A": "listen",
    "0B": "closing",
}


# --- measuring, in the child -------------------------------------------------------------


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (2.33 and later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def malloc_in_use() -> int | None:
    """Bytes malloc has handed out and not had back (every arena, mmapped chunks too)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = MallInfo2
    info: MallInfo2 = libc.mallinfo2()
    return int(info.uordblks) + int(info.hblkhd)


def malloc_trim() -> None:
    """Hand malloc's free pages back to the kernel (glibc)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_ticks() -> int:
    """User + system clock ticks this process has used (/proc/self/stat)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def tcp_sockets() -> dict[str, tuple[str, int, int]]:
    """Socket inode -> (TCP state, local port, remote port), /proc/self/net/tcp{,6}."""
    out: dict[str, tuple[str, int, int]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/self/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                out[fields[9]] = (
                    TCP_STATES.get(fields[3], fields[3]),
                    int(fields[1].rsplit(":", 1)[1], 16),
                    int(fields[2].rsplit(":", 1)[1], 16),
                )
    return out


def sockets_by_peer(device_ports: set[int], feed_port: int) -> Counter[str]:
    """This process's sockets, by what they connect to and their TCP state."""
    tcp = tcp_sockets()
    kinds: Counter[str] = Counter()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if not target.startswith("socket:["):
            continue
        found = tcp.get(target[len("socket:[") : -1])
        if found is None:
            kinds["other (unix, udp, netlink)"] += 1
            continue
        state, local, remote = found
        if remote in device_ports:
            peer = "to devices"
        elif feed_port in (local, remote):
            peer = "feed"
        else:
            peer = "other tcp"
        kinds[f"{peer} {state}"] += 1
    return kinds


def objects_by_type() -> Counter[str]:
    """gc-tracked objects by type (containers only: str, bytes, int are not tracked)."""
    counts: Counter[str] = Counter()
    for item in gc.get_objects():
        kind = type(item)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts


def ssl_protocols() -> tuple[int, int]:
    """asyncio's SSLProtocol objects alive, and the bytes of their read buffers."""
    import asyncio.sslproto  # noqa: PLC0415 - only here, where it is measured

    count = total = 0
    for item in gc.get_objects():
        if isinstance(item, asyncio.sslproto.SSLProtocol):
            count += 1
            buffer = getattr(item, "_ssl_buffer", b"")
            total += len(buffer)
    return count, total


def frame_kind(filename: str) -> str:
    """Which package a source file is part of: custom_components, homeassistant, aiohttp,
    asyncio, ssl, another package's name, or 'stdlib'/'other'."""
    path = filename.replace("\\", "/")
    if "/custom_components/" in path:
        return "custom_components"
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(str(STDLIB) + "/"):
        relative = path[len(str(STDLIB)) + 1 :]
        if relative.startswith("asyncio/"):
            return "asyncio"
        if relative == "ssl.py":
            return "ssl"
        return "stdlib"
    return "other"


def short_name(filename: str, tree: Path) -> str:
    """A source file's name relative to its package's root."""
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    for root in (STDLIB, tree.resolve(), REPOSITORY):
        prefix = str(root) + "/"
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def innermost(frames: Sequence[tracemalloc.Frame], kinds: Iterable[str]) -> str | None:
    """The innermost frame (file:line) whose package is one of `kinds`, or None."""
    wanted = set(kinds)
    for frame in reversed(frames):  # a Traceback runs from oldest to most recent
        if frame_kind(frame.filename) in wanted:
            return f"{frame.filename}:{frame.lineno}"
    return None


def aggregate(snapshot: tracemalloc.Snapshot) -> dict[str, dict[str, list[int]]]:
    """Python's live allocations by line, by (site, cause) and by whole traceback:
    key -> [bytes, blocks]; frames spelled filename:lineno, innermost last."""
    by_line: dict[str, list[int]] = {}
    by_site: dict[str, list[int]] = {}
    by_traceback: dict[str, list[int]] = {}

    def add(table: dict[str, list[int]], key: str, size: int) -> None:
        entry = table.setdefault(key, [0, 0])
        entry[0] += size
        entry[1] += 1

    for trace in snapshot.traces:
        frames = list(trace.traceback)  # oldest first
        if not frames:
            continue
        last = frames[-1]
        add(by_line, f"{last.filename}:{last.lineno}", trace.size)
        site = innermost(frames, SITE_PACKAGES) or f"{last.filename}:{last.lineno}"
        cause = innermost(frames, CAUSE_PACKAGES[:1]) or innermost(frames, CAUSE_PACKAGES[1:])
        add(by_site, f"{site} <- {cause or '-'}", trace.size)
        add(by_traceback, "|".join(f"{f.filename}:{f.lineno}" for f in frames), trace.size)
    return {"lineno": by_line, "site": by_site, "traceback": by_traceback}


async def fleet_running(process: asyncio.subprocess.Process) -> None:
    """Until the simulator says every device runs; RuntimeError if it ends first."""
    assert process.stdout is not None
    while b"device(s) running" not in (line := await process.stdout.readline()):
        if not line:
            raise RuntimeError(f"the fleet ended: exit status {await process.wait()}")


async def start_fleet(
    count: int, pace: str, tree: Path, workdir: Path
) -> tuple[asyncio.subprocess.Process, list[dict[str, Any]]]:
    """`python -m simulator` of `tree` in its own process; its members once all answer."""
    members_file = workdir / f"fleet-{count}-{os.getpid()}.json"
    with (workdir / f"fleet-{count}-{os.getpid()}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "simulator", "--count", str(count), "--pace", pace),
            *("--json", str(members_file)),
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        async with asyncio.timeout(FLEET_START_S):
            await fleet_running(process)
    except BaseException:
        await stop_fleet(process)
        raise
    members: list[dict[str, Any]] = json.loads(members_file.read_text())
    return process, members


async def stop_fleet(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (the simulator stops its devices), SIGKILL if it does not end."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(FLEET_STOP_S):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


def aiohttp_connections() -> tuple[int, int]:
    """Connections of every aiohttp connector alive (Home Assistant's shared session's and
    any other): (idle in a pool, in use)."""
    import aiohttp  # noqa: PLC0415 - only here, where it is measured

    pooled = in_use = 0
    for item in gc.get_objects():
        if isinstance(item, aiohttp.BaseConnector):
            pooled += sum(len(idle) for idle in getattr(item, "_conns", {}).values())
            in_use += len(getattr(item, "_acquired", ()))
    return pooled, in_use


def sockets_to_devices(device_ports: set[int]) -> int:
    """This process's sockets connected to a device, in any state."""
    kinds = sockets_by_peer(device_ports, feed_port=-1)
    return sum(n for kind, n in kinds.items() if kind.startswith("to devices"))


async def wait_quiet(device_ports: set[int]) -> float:
    """Until no connection to a device is open beside one per device (its event stream),
    at most QUIET_WAIT_S; how long that took."""
    began = time.perf_counter()
    deadline = began + QUIET_WAIT_S
    # Whoever opens them (any session), the kernel's table says: look every QUIET_POLL_S.
    while sockets_to_devices(device_ports) > len(device_ports):
        if time.perf_counter() >= deadline:
            break
        await asyncio.sleep(QUIET_POLL_S)
    return time.perf_counter() - began


def idle_figures(
    entries: Sequence[Any], traced: bool, device_ports: set[int], feed_port: int
) -> tuple[dict[str, Any], tracemalloc.Snapshot | None]:
    """Home Assistant's figures now, after gc.collect(); the snapshot first, so that none
    of what measuring allocates is in it."""
    from homeassistant.config_entries import ConfigEntryState  # noqa: PLC0415

    gc.collect()
    figures: dict[str, Any] = {"rss_kib": rss_kib(), "malloc_in_use": malloc_in_use()}
    snapshot: tracemalloc.Snapshot | None = None
    if traced:
        figures["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        figures["tracemalloc_own_bytes"] = tracemalloc.get_tracemalloc_memory()
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
    figures["sockets"] = dict(sockets_by_peer(device_ports, feed_port))
    figures["ssl_protocols"], figures["ssl_buffer_bytes"] = ssl_protocols()
    figures["pooled_connections"], figures["acquired_connections"] = aiohttp_connections()
    figures["objects"] = dict(objects_by_type())
    figures["loaded_entries"] = sum(entry.state is ConfigEntryState.LOADED for entry in entries)
    malloc_trim()
    figures["rss_trimmed_kib"] = rss_kib()
    return figures, snapshot


async def measure(
    count: int, *, settle_s: float, pace: str, frames: int, traced: bool, tree: Path, workdir: Path
) -> tuple[dict[str, Any], tracemalloc.Snapshot | None]:
    """One fleet of `count` idle devices against Home Assistant: its figures, and the
    tracemalloc snapshot of a traced run."""
    import custom_components.esp_ota  # noqa: PLC0415
    from benchmarks.bench_ha_startup import OFFERED, FeedServer, entry_for  # noqa: PLC0415
    from benchmarks.ha_harness import (  # noqa: PLC0415
        on_loopback,
        running_home_assistant,
        wait_offered,
    )
    from simulator.fleet import FleetDevice  # noqa: PLC0415

    result: dict[str, Any] = {
        "count": count,
        "traced": traced,
        "code": str(Path(custom_components.esp_ota.__file__).parent),
    }
    fleet, raw_members = await start_fleet(count, pace, tree, workdir)
    feed = FeedServer()
    try:
        members = [FleetDevice(**member) for member in raw_members]
        await feed.start()
        entries = [entry_for(member, feed.url) for member in members]
        device_ports = {member.port for member in members}
        feed_port = int(feed.url.split(":")[2].split("/")[0])
        if traced:
            tracemalloc.start(frames)
        started = time.perf_counter()
        with on_loopback():
            async with running_home_assistant(entries, "esp-ota-profile-idle-") as hass:
                await wait_offered(hass, entries, OFFERED, FEED_OFFERED_WITHIN_S)
                result["loaded_s"] = time.perf_counter() - started
                ticks = cpu_ticks()
                await asyncio.sleep(settle_s)
                result["cpu_ticks_per_30s"] = (cpu_ticks() - ticks) * 30.0 / settle_s
                result["quiet_wait_s"] = await wait_quiet(device_ports)
                figures, snapshot = idle_figures(entries, traced, device_ports, feed_port)
                result.update(figures, feed_requests=feed.requests)
    finally:
        await feed.stop()
        await stop_fleet(fleet)
    return result, snapshot


def measure_and_save(arguments: argparse.Namespace) -> None:
    """The child's work: measure, then aggregate the snapshot and write it all."""
    out: Path = arguments.out
    result, snapshot = asyncio.run(
        measure(
            arguments.measure,
            settle_s=arguments.settle,
            pace=arguments.pace,
            frames=arguments.frames,
            traced=arguments.traced,
            tree=arguments.tree,
            workdir=out.parent,
        )
    )
    if snapshot is not None:
        snapshot = snapshot.filter_traces(
            [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
        )
        result["python_malloc_bytes"] = sum(
            trace.size for trace in snapshot.traces if trace.size > PYMALLOC_LIMIT
        )
        result["allocations"] = aggregate(snapshot)
        snapshot.dump(str(out.with_suffix(".snapshot")))
    out.write_text(json.dumps(result))


# --- diffing and printing, in the driver -------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One child's figures."""

    figures: dict[str, Any]

    @property
    def count(self) -> int:
        return int(self.figures["count"])

    def sockets(self, prefix: str = "") -> int:
        return sum(n for kind, n in self.figures["sockets"].items() if kind.startswith(prefix))


def run_child(
    count: int, traced: bool, arguments: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """This file with --measure in a fresh process; its figures."""
    out = workdir / f"{'traced' if traced else 'plain'}-{count}.json"
    tree: Path = arguments.tree
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        *("--measure", str(count), "--settle", str(arguments.settle)),
        *("--pace", arguments.pace, "--frames", str(arguments.frames)),
        *("--tree", str(tree), "--out", str(out)),
        *(["--traced"] if traced else []),
    ]
    began = time.monotonic()
    with (workdir / f"{out.stem}.log").open("w") as log:
        status = subprocess.run(
            command,
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if status != 0:
        raise RuntimeError(f"{out.stem} failed (exit {status}); see {workdir / out.stem}.log")
    figures: dict[str, Any] = json.loads(out.read_text())
    print(
        f"  {out.stem}: {time.monotonic() - began:.0f} s, {figures['loaded_entries']} entries "
        f"loaded in {figures['loaded_s']:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return figures


def source_line(location: str) -> str:
    """The source text at filename:lineno."""
    filename, _, lineno = location.rpartition(":")
    return linecache.getline(filename, int(lineno)).strip() if lineno.isdigit() else ""


def spell(location: str, tree: Path) -> str:
    """filename:lineno with the filename relative to its package's root."""
    filename, _, lineno = location.rpartition(":")
    return f"{short_name(filename, tree)}:{lineno}" if filename else location


def diff_table(
    small: dict[str, list[int]], large: dict[str, list[int]], devices: int, top: int
) -> list[tuple[str, float, float]]:
    """The `top` keys that grew most in bytes: (key, bytes per device, blocks per device)."""
    rows = []
    for key in small.keys() | large.keys():
        size_0, count_0 = small.get(key, [0, 0])
        size_1, count_1 = large.get(key, [0, 0])
        rows.append((key, (size_1 - size_0) / devices, (count_1 - count_0) / devices))
    rows.sort(key=lambda row: (-row[1], row[0]))
    return rows[:top]


def kib(value: float) -> str:
    return f"{value / 1024:9.1f} KiB"


def print_per_device(
    traced: tuple[Run, Run], plain: tuple[Run, Run], arguments: argparse.Namespace
) -> None:
    """The totals per added device."""
    small, large = traced
    devices = large.count - small.count

    def per_device(key: str, runs: tuple[Run, Run] = plain) -> float:
        return (float(runs[1].figures[key]) - float(runs[0].figures[key])) / devices

    def rss_bytes(run: Run, key: str) -> float:
        own = 0 if arguments.plain else run.figures["tracemalloc_own_bytes"]
        return float(run.figures[key]) * 1024 - own

    def rss_per_device(key: str) -> float:
        return (rss_bytes(plain[1], key) - rss_bytes(plain[0], key)) / devices

    def malloc_outside_python(run: Run, python_run: Run) -> float:
        own = run.figures["tracemalloc_own_bytes"] if run.figures["traced"] else 0
        return float(run.figures["malloc_in_use"] - python_run.figures["python_malloc_bytes"] - own)

    print(f"\nper device, {large.count} devices against {small.count}:")
    rss = rss_per_device("rss_kib")
    python = per_device("traced_bytes", traced)
    rss_note = "" if arguments.plain else " (traced runs: minus tracemalloc's own memory)"
    print(f"  RSS                              {kib(rss)}{rss_note}")
    print(f"  RSS after malloc_trim(0)         {kib(rss_per_device('rss_trimmed_kib'))}")
    print(f"  Python's traced memory           {kib(python)}  (tracemalloc)")
    print(
        f"  not seen by tracemalloc          {kib(rss - python)}  (RSS growth minus traced: "
        "OpenSSL's memory plus allocator slack)"
    )
    if small.figures.get("malloc_in_use") is not None:
        outside = [malloc_outside_python(*runs) for runs in zip(plain, traced, strict=True)]
        print(
            f"  malloc outside Python            {kib((outside[1] - outside[0]) / devices)}  "
            "(mallinfo2 minus Python's blocks > 512 B: mostly OpenSSL)"
        )
    print(
        f"  asyncio SSLProtocol objects      {per_device('ssl_protocols'):9.2f}      "
        f"their read buffers {kib(per_device('ssl_buffer_bytes')).strip()} "
        "(asyncio/sslproto.py, SSLProtocol.max_size each)"
    )
    sockets = (plain[1].sockets() - plain[0].sockets()) / devices
    to_devices = (plain[1].sockets("to devices") - plain[0].sockets("to devices")) / devices
    print(f"  sockets held                     {sockets:9.2f}      (to devices: {to_devices:.2f})")
    runs = (*plain, *traced) if arguments.plain else traced
    in_flight = ", ".join(
        f"{run.sockets('to devices') - run.count} ({'traced' if run.figures['traced'] else 'plain'}"
        f" {run.count})"
        for run in runs
    )
    print(
        f"  connections to devices beside one per device at the snapshots: {in_flight} "
        "(a poll in flight holds one)"
    )
    print(
        f"  CPU ticks per 30 s idle          {per_device('cpu_ticks_per_30s'):9.3f}      "
        f"({plain[1].figures['cpu_ticks_per_30s']:.0f} in all at {large.count} devices, "
        f"over the settle time only: a poll burst may fall in it or not)"
    )


def print_runs(runs: Iterable[Run]) -> None:
    """Each run's own figures."""
    print("\nruns (plain: RSS, sockets, CPU, objects; traced: Python's memory):")
    for run in runs:
        figures = run.figures
        kind = "traced" if figures["traced"] else "plain "
        extra = (
            f", traced {figures['traced_bytes'] / 2**20:.1f} MiB "
            f"(tracemalloc's own {figures['tracemalloc_own_bytes'] / 2**20:.1f} MiB)"
            if figures["traced"]
            else ""
        )
        print(
            f"  {kind} {run.count:>4} devices: RSS {figures['rss_kib'] / 1024:.1f} MiB "
            f"({figures['rss_trimmed_kib'] / 1024:.1f} trimmed){extra}, "
            f"CPU {figures['cpu_ticks_per_30s']:.0f} ticks/30 s, "
            f"SSLProtocol {figures['ssl_protocols']}, aiohttp connectors: "
            f"{figures['pooled_connections']} idle, {figures['acquired_connections']} in use; "
            f"feed requests {figures['feed_requests']}; entries loaded "
            f"{figures['loaded_entries']} in {figures['loaded_s']:.1f} s; snapshot after "
            f"{figures['quiet_wait_s']:.1f} s more waiting for no request in flight"
        )
        sockets = ", ".join(f"{kind} {n}" for kind, n in sorted(figures["sockets"].items()))
        print(f"      sockets: {sockets}")


def telling_frames(frames: Sequence[str]) -> list[str]:
    """Of a traceback (oldest first): the allocating frame, then the innermost frame of
    asyncio, aiohttp, homeassistant and ours, each once, innermost first."""
    shown = [frames[-1]]
    for kinds in (("asyncio", "ssl"), ("aiohttp",), ("homeassistant",), ("custom_components",)):
        for location in reversed(frames):
            if frame_kind(location.rpartition(":")[0]) in kinds:
                if location not in shown:
                    shown.append(location)
                break
    return shown


def by_file(table: dict[str, list[int]], tree: Path) -> dict[str, list[int]]:
    """A (site <- cause) table summed by the files of site and cause (lines dropped)."""
    out: dict[str, list[int]] = {}
    for key, (size, blocks) in table.items():
        site, _, cause = key.partition(" <- ")
        files = [
            short_name(part.rpartition(":")[0], tree) if part != "-" else "-"
            for part in (site, cause)
        ]
        entry = out.setdefault(" <- ".join(files), [0, 0])
        entry[0] += size
        entry[1] += blocks
    return out


def print_allocations(small: Run, large: Run, tree: Path, top: int) -> None:
    """The allocation sites that grow most, four ways."""
    devices = large.count - small.count
    tables = (small.figures["allocations"], large.figures["allocations"])
    print(f"\ntop {top} files where <- files that caused it, per added device (the sums of")
    print("the (where <- cause) table below by file):")
    files = [by_file(table["site"], tree) for table in tables]
    for key, size, blocks in diff_table(files[0], files[1], devices, top):
        print(f"  {kib(size)} {blocks:8.1f} blocks  {key}")

    print(f"\ntop {top} allocation lines, bytes and blocks per added device (tracemalloc):")
    for key, size, blocks in diff_table(tables[0]["lineno"], tables[1]["lineno"], devices, top):
        print(f"  {kib(size)} {blocks:8.1f} blocks  {spell(key, tree)}")
        print(f"  {'':>26}{source_line(key)[:100]}")

    print(
        f"\ntop {top} by where (innermost frame in {', '.join(SITE_PACKAGES)}) "
        "<- what caused it (innermost frame of ours, else of homeassistant):"
    )
    for key, size, blocks in diff_table(tables[0]["site"], tables[1]["site"], devices, top):
        site, _, cause = key.partition(" <- ")
        print(f"  {kib(size)} {blocks:8.1f} blocks  {spell(site, tree)}")
        print(f"  {'':>26}{source_line(site)[:100]}")
        if cause not in ("-", site):
            print(f"  {'':>26}<- {spell(cause, tree)}: {source_line(cause)[:80]}")

    print(f"\ntop {top} tracebacks; the allocating frame, then asyncio's, aiohttp's, Home")
    print("Assistant's and ours (the innermost of each):")
    for key, size, blocks in diff_table(
        tables[0]["traceback"], tables[1]["traceback"], devices, top
    ):
        print(f"  {kib(size)} {blocks:8.1f} blocks")
        for location in telling_frames(key.split("|")):
            print(f"      {spell(location, tree)}: {source_line(location)[:90]}")


def print_objects(small: Run, large: Run, top: int) -> None:
    """The gc-tracked types that grow most."""
    devices = large.count - small.count
    before, after = small.figures["objects"], large.figures["objects"]
    grown = sorted(
        ((name, (after[name] - before.get(name, 0)) / devices) for name in after),
        key=lambda row: row[1],
        reverse=True,
    )
    print(f"\ntop {top} gc-tracked object types, objects per added device:")
    for name, per in grown[:top]:
        print(f"  {per:9.2f}  {name}")


def git_head(tree: Path) -> str:
    """The tree's commit and whether it has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--short", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except OSError, subprocess.CalledProcessError:
        return "not a git tree"
    return f"{head}{' with uncommitted changes' if dirty else ''}"


def main(arguments: argparse.Namespace) -> int:
    sizes = sorted(set(arguments.sizes))
    if len(sizes) < 2:
        raise SystemExit("--sizes needs two fleet sizes at least")
    if arguments.report and arguments.keep is None:
        raise SystemExit("--report prints what --keep DIR holds")
    workdir = arguments.keep or Path(tempfile.mkdtemp(prefix="esp-ota-profile-idle-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"idle profile of {arguments.tree} ({git_head(arguments.tree)}): fleets of "
        f"{', '.join(map(str, sizes))} devices ({arguments.pace} pace, in their own process), "
        f"{arguments.settle:g} s settled after every entry is loaded and offered the feed's "
        f"release; tracemalloc {arguments.frames} frames; Python {sys.version.split()[0]}; "
        f"children's logs in {workdir}"
    )

    def run(size: int, traced: bool) -> Run:
        if arguments.report:  # the children's figures of an earlier --keep
            name = f"{'traced' if traced else 'plain'}-{size}.json"
            return Run(json.loads((workdir / name).read_text()))
        return Run(run_child(size, traced, arguments, workdir))

    traced = {size: run(size, True) for size in sizes}
    plain = {size: run(size, False) for size in sizes} if arguments.plain else traced
    smallest = sizes[0]
    for size in sizes[1:]:
        print_per_device(
            (traced[smallest], traced[size]), (plain[smallest], plain[size]), arguments
        )
    runs = [*plain.values(), *traced.values()] if arguments.plain else list(traced.values())
    print_runs(runs)
    print_allocations(traced[smallest], traced[sizes[-1]], arguments.tree, arguments.top)
    print_objects(plain[smallest], plain[sizes[-1]], arguments.top)
    print(
        "\nnote: tracemalloc sees Python's allocations only; OpenSSL's own (SSL objects, "
        "BIOs, record buffers) are in the 'not seen' and 'malloc outside Python' lines, "
        "estimates that also hold the allocator's slack."
    )
    return 0


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 200])
    parser.add_argument("--settle", type=float, default=40.0, help="seconds idle before")
    parser.add_argument("--tree", type=Path, default=REPOSITORY, help="the code to profile")
    parser.add_argument("--pace", default="realistic", help="the simulated devices' pace")
    parser.add_argument("--frames", type=int, default=25, help="tracemalloc frames")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="keep snapshots and logs here")
    parser.add_argument(
        "--report", action="store_true", help="only print the figures kept in --keep"
    )
    parser.add_argument(
        "--no-plain",
        dest="plain",
        action="store_false",
        help="no run without tracemalloc (RSS from the traced runs)",
    )
    # The child's own arguments.
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    arguments.tree = arguments.tree.resolve()
    return arguments


if __name__ == "__main__":
    parsed = parse_arguments()
    if parsed.measure is None:
        raise SystemExit(main(parsed))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    measure_and_save(parsed)
