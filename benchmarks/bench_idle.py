"""What an idle device costs, on both sides (issue 13): Home Assistant's memory, sockets and
CPU per device, and the requests and TLS handshakes each device serves per hour.

Run from the repository root:
    .venv/bin/python -m benchmarks.bench_idle [--sizes 1,200,500] [--settle 40] [--window 30]

Measured as a new user would, with the demo (demo/stack.py): real Home Assistant as a child
process (`hass -c`, a fresh config folder per fleet size), a signed feed, simulated devices
at the realistic pace, each added through the config flow over REST (several flows at a
time: --add-concurrency). For each fleet size: every entry loaded and offering the feed's
release, --settle seconds of settling, then a --window of idle time, over which it reads
Home Assistant's RSS and anonymous memory (/proc/<pid>/status, smaps_rollup), the sockets
it holds (its fds, classified with /proc/<pid>/net/tcp{,6}: connected to a device's port or
not), its CPU ticks (utime+stime), and the devices' own counters (simulator/api_counters.py).
For the sizes in --startup-sizes it then restarts Home Assistant on the same config folder
and times its start-up with every entry, counting the feed server's requests meanwhile.
Prints a table and the issue's targets with PASS/FAIL. CPU figures only mean something on a
quiet machine: the load average is printed beside them.

--ha-tree DIR runs Home Assistant with the integration of another checkout (e.g. a pristine
clone) against this checkout's simulator, to compare before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import aiohttp

from benchmarks.procfs import tcp_sockets
from demo.hass import HassApi
from demo.stack import REPO_ROOT, DemoOptions, DemoStack, entry_title
from simulator.api_counters import ApiCounters

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"
# The targets.
MAX_RSS_PER_DEVICE_KIB = 150
MAX_CPU_TICKS_PER_30S = 10
CPU_TARGET_SIZE = 200
MAX_STARTUP_S = 10.0


def say(message: str) -> None:
    """A progress line, at once (a person watches a run of many minutes)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages."""
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


# --- Home Assistant's process, from /proc ---------------------------------------------------


def status_kib(pid: int, field_name: str) -> int:
    """A kB field of /proc/<pid>/status (VmRSS, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise LookupError(f"{field_name} not in /proc/{pid}/status")


def anonymous_kib(pid: int) -> int:
    """Anonymous memory (heap, not file-backed pages) from /proc/<pid>/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (every thread), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


@dataclass(frozen=True, slots=True)
class SocketCensus:
    """The sockets a process holds, sorted by what they are connected to."""

    to_devices: int
    devices_with_one: int  # devices that have exactly one socket from the process
    other: Counter[str]


def socket_census(pid: int, device_ports: set[int], names: dict[int, str]) -> SocketCensus:
    """Count the process's socket fds: TCP to a device's port, or something else (`names`:
    what else is on a port: the feed server, Home Assistant's own HTTP port)."""
    inodes: list[str] = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since listed
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.append(target[len("socket:[") : -1])
    tcp = tcp_sockets(pid)
    per_device: Counter[int] = Counter()
    other: Counter[str] = Counter()
    for inode in inodes:
        row = tcp.get(inode)
        if row is None:
            other["not TCP (unix, UDP, netlink)"] += 1
        elif row.state == TCP_LISTEN:
            other["TCP listening"] += 1
        elif row.remote_port in device_ports and row.remote_ip == "127.0.0.1":
            per_device[row.remote_port] += 1
        elif row.local_port in names:
            other[names[row.local_port]] += 1
        elif row.remote_port in names:
            other[names[row.remote_port]] += 1
        else:
            other[f"TCP to {row.remote_ip}:{row.remote_port}"] += 1
    ones = sum(1 for port in device_ports if per_device[port] == 1)
    return SocketCensus(sum(per_device.values()), ones, other)


# --- one fleet size ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupFigures:
    """Home Assistant restarted with every entry: seconds from the process's start."""

    http_s: float
    loaded_s: float  # every entry loaded
    entities_s: float  # ... and every device's update entity present
    offered_s: float | None  # ... and offering the feed's release (None: not within the wait)
    feed_requests: int
    other_feed_server_requests: Counter[str]


@dataclass(slots=True)
class Measurement:
    """One fleet size's idle window."""

    count: int
    window_s: float
    rss_kib: int
    anon_kib: int
    sockets: SocketCensus
    cpu_ticks: int
    load_before: str
    load_after: str
    window: ApiCounters  # the fleet's totals over the window
    devices_requested: int  # devices that served any request in the window
    add_s: float  # from the demo's start to every device added and offered
    startup: StartupFigures | None = None
    # Settled again after a restart on the same folder (no config flow since): the memory
    # a Home Assistant that has run for a while holds, without what adding the devices
    # left in the allocator.
    restarted_rss_kib: int | None = None
    restarted_anon_kib: int | None = None

    def per_device_hour(self, value: int) -> float:
        """A fleet total over the window, per device per hour."""
        return value / self.count * 3600 / self.window_s

    @property
    def cpu_per_30s(self) -> float:
        """CPU ticks over the window, scaled to 30 s."""
        return self.cpu_ticks * 30 / self.window_s


def free_port() -> int:
    """A TCP port nobody listens on now (Home Assistant's, so a running demo is left alone)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def ticking[T](label: str, work: Awaitable[T], status: Callable[[], str]) -> T:
    """Await `work`, printing `label` and `status()` every 15 s."""
    started = time.monotonic()
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=15)
        if done:
            return task.result()
        say(f"  {label}: {time.monotonic() - started:.0f} s; {status()}")


async def measure_size(count: int, args: argparse.Namespace) -> Measurement:
    """Start the demo with `count` devices, settle, measure the idle window, stop."""
    config_dir = Path(tempfile.mkdtemp(prefix=f"bench-idle-{count}-"))
    options = DemoOptions(
        config_dir=config_dir,
        port=free_port(),
        count=count,
        fresh=True,
        add_concurrency=args.add_concurrency,
        offer_timeout_s=60 + count * 0.5,
        start_timeout_s=600,
        integration_repo=args.ha_tree.resolve(),
    )
    stack = DemoStack(options, lambda message: say(f"  demo {message}"))

    def status() -> str:
        fleet = stack.fleet
        streams = fleet.total_counters().open_streams if fleet is not None else 0
        pid = stack.hass.pid
        rss = f"HA RSS {status_kib(pid, 'VmRSS') / 1024:.0f} MiB" if pid else "HA not running"
        return f"{streams}/{count} event streams open, {rss}, load {load_average()}"

    say(f"fleet of {count}: starting Home Assistant and the demo in {config_dir}")
    added = time.monotonic()
    try:
        info = await ticking("starting", stack.start(), status)
        add_s = time.monotonic() - added
        say(f"fleet of {count}: every entry loaded and offered in {add_s:.0f} s; settling")
        await ticking("settling", asyncio.sleep(args.settle), status)
        assert stack.fleet is not None
        assert stack.hass.pid is not None
        pid, fleet = stack.hass.pid, stack.fleet
        ports = {member.port for member in fleet.members}
        assert stack.feed_server is not None
        names = {
            options.port: "HTTP clients of Home Assistant (this benchmark's)",
            stack.feed_server.port: "to the feed server",
        }
        say(f"fleet of {count}: measuring over {args.window:.0f} s (load {load_average()})")
        load_before = load_average()
        counters_before, ticks_before = fleet.counters(), cpu_ticks(pid)
        await ticking("measuring", asyncio.sleep(args.window), status)
        ticks, counters_after = cpu_ticks(pid) - ticks_before, fleet.counters()
        load_after = load_average()
        per_device = [
            after.since(before)
            for after, before in zip(counters_after, counters_before, strict=True)
        ]
        measurement = Measurement(
            count=count,
            window_s=args.window,
            rss_kib=status_kib(pid, "VmRSS"),
            anon_kib=anonymous_kib(pid),
            sockets=socket_census(pid, ports, names),
            cpu_ticks=ticks,
            load_before=load_before,
            load_after=load_after,
            window=ApiCounters.sum(per_device),
            devices_requested=sum(1 for c in per_device if c.total_requests),
            add_s=add_s,
        )
        say(f"fleet of {count}: {describe(measurement)}")
        if count in args.startup_sizes or args.restarted_rss:
            startup = await measure_startup(stack, info.feed_url, count)
            if count in args.startup_sizes:
                measurement.startup = startup
                say(f"fleet of {count}: {describe_startup(startup)}")
        if args.restarted_rss:
            await ticking("settling after the restart", asyncio.sleep(args.settle), status)
            measure_restarted(measurement, stack)
    except BaseException:
        say(f"Home Assistant's output ends with:\n{await stack.hass.log_tail()}")
        raise
    finally:
        say(f"fleet of {count}: stopping")
        await stack.stop()
        if not args.keep:
            await asyncio.to_thread(shutil.rmtree, config_dir, True)
    return measurement


def measure_restarted(measurement: Measurement, stack: DemoStack) -> None:
    """Home Assistant's memory, settled after a restart."""
    pid = stack.hass.pid
    assert pid is not None
    measurement.restarted_rss_kib = status_kib(pid, "VmRSS")
    measurement.restarted_anon_kib = anonymous_kib(pid)
    say(
        f"fleet of {measurement.count}: after a restart, RSS "
        f"{measurement.restarted_rss_kib / 1024:.1f} MiB "
        f"(anon {measurement.restarted_anon_kib / 1024:.1f} MiB)"
    )


async def measure_startup(stack: DemoStack, feed_url: str, count: int) -> StartupFigures:
    """Stop Home Assistant, start it on the same folder, time it until every entry loaded
    and every update entity present (and offering); count the feed server's requests."""
    assert stack.info is not None
    assert stack.feed_server is not None
    titles = {
        f"{entry_title(stack.options.project, d.fleet.mac)} Firmware" for d in stack.info.devices
    }
    say(f"fleet of {count}: restarting Home Assistant to time its start-up")
    await stack.hass.stop()
    feed_server = stack.feed_server
    requests_before = Counter(feed_server.requests)
    async with aiohttp.ClientSession() as session:
        api = HassApi(session, stack.url)
        started = time.monotonic()
        await stack.hass.start()
        await api.wait_for_http(stack.hass, 300)
        http_s = time.monotonic() - started
        await api.login(stack.info.owner)
        loaded_s = entities_s = offered_s = None
        deadline = started + 300
        while offered_s is None and time.monotonic() < deadline:
            now = time.monotonic() - started
            if loaded_s is None:
                entries = await api.entries()
                if len(entries) >= count and all(e["state"] == "loaded" for e in entries):
                    loaded_s = now
            if loaded_s is not None:
                updates = {
                    state["attributes"].get("friendly_name"): state["state"]
                    for state in await api.states()
                    if state["entity_id"].startswith("update.")
                }
                if entities_s is None and titles <= updates.keys():
                    entities_s = now
                if entities_s is not None and all(updates[t] == "on" for t in titles):
                    offered_s = now
            await asyncio.sleep(0.2)
        if loaded_s is None or entities_s is None:
            raise RuntimeError("Home Assistant did not load every entry within 300 s")
    requests = Counter(feed_server.requests)
    requests.subtract(requests_before)
    feed_path = urlparse(feed_url).path
    feed_requests = requests.pop(feed_path, 0)
    return StartupFigures(http_s, loaded_s, entities_s, offered_s, feed_requests, +requests)


# --- the report --------------------------------------------------------------------------------


def describe(m: Measurement) -> str:
    """One size's figures in a line."""
    requests = ", ".join(f"{name}: {n}" for name, n in m.window.requests.items()) or "none"
    return (
        f"RSS {m.rss_kib / 1024:.1f} MiB (anon {m.anon_kib / 1024:.1f} MiB); sockets "
        f"{m.sockets.to_devices} to devices ({m.sockets.devices_with_one} devices with exactly "
        f"one), other {dict(m.sockets.other)}; CPU {m.cpu_ticks} ticks over {m.window_s:.0f} s "
        f"(load {m.load_before} -> {m.load_after}); in the window: {m.window.tls_handshakes} "
        f"handshakes, requests {requests} ({m.devices_requested} devices asked), "
        f"{m.window.keepalives_sent} keep-alives, {m.window.open_streams} streams open; "
        f"the demo took {m.add_s:.0f} s to add them"
    )


def describe_startup(s: StartupFigures) -> str:
    """The restart's figures in a line."""
    offered = f"{s.offered_s:.1f} s" if s.offered_s is not None else "not within 300 s"
    return (
        f"start-up: HTTP {s.http_s:.1f} s, every entry loaded {s.loaded_s:.1f} s, every update "
        f"entity present {s.entities_s:.1f} s, offering {offered}; feed requests "
        f"{s.feed_requests} (other feed-server requests: {dict(s.other_feed_server_requests)})"
    )


def rss_growth_kib(m: Measurement, base: Measurement | None) -> float | None:
    """RSS growth per device against the smallest fleet measured."""
    if base is None or m.count == base.count:
        return None
    return (m.rss_kib - base.rss_kib) / (m.count - base.count)


def restarted_growth_kib(m: Measurement, base: Measurement | None) -> float | None:
    """RSS growth per device after a restart, against the smallest fleet measured."""
    if base is None or m.count == base.count:
        return None
    if m.restarted_rss_kib is None or base.restarted_rss_kib is None:
        return None
    return (m.restarted_rss_kib - base.restarted_rss_kib) / (m.count - base.count)


def report(results: list[Measurement]) -> None:
    """The issue's table and its targets, line by line."""
    base = min(results, key=lambda m: m.count) if results else None
    print()
    print(
        "| fleet | HA RSS (anon) | RSS per device vs "
        f"{base.count if base else '-'} | sockets to devices / other | CPU ticks per 30 s "
        "(load 1/5/15 min) | requests/h/device beyond the stream | handshakes/h/device "
        "| streams open |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for m in results:
        growth = rss_growth_kib(m, base)
        print(
            f"| {m.count} | {m.rss_kib / 1024:.1f} MiB ({m.anon_kib / 1024:.1f} MiB) | "
            + (f"{growth:.0f} KiB" if growth is not None else "-")
            + f" | {m.sockets.to_devices} / {sum(m.sockets.other.values())} | "
            f"{m.cpu_per_30s:.0f} ({m.load_after}) | "
            f"{m.per_device_hour(m.window.total_requests):.1f} | "
            f"{m.per_device_hour(m.window.tls_handshakes):.1f} | "
            f"{m.window.open_streams}/{m.count} |"
        )
    for m in results:
        if m.restarted_rss_kib is not None and m.restarted_anon_kib is not None:
            growth = restarted_growth_kib(m, base)
            print(
                f"After a restart, {m.count} devices: RSS {m.restarted_rss_kib / 1024:.1f} MiB "
                f"(anon {m.restarted_anon_kib / 1024:.1f} MiB)"
                + (f", {growth:.0f} KiB per device" if growth is not None else "")
            )
    print(
        "Per hour: the window's counts extrapolated. Entries added within a minute poll in "
        "step, so a poll period near the window skews them: a longer --window evens it out."
    )
    print()
    print("Targets:")
    for m in results:
        growth = rss_growth_kib(m, base)
        if growth is not None and base is not None and base.count == 1:
            verdict(
                "RSS growth per device",
                f"1 -> {m.count}",
                f"{growth:.0f} KiB",
                growth <= MAX_RSS_PER_DEVICE_KIB,
                f"<= {MAX_RSS_PER_DEVICE_KIB} KiB",
            )
        growth = restarted_growth_kib(m, base)
        if growth is not None and base is not None and base.count == 1:
            verdict(
                "RSS growth per device after a restart",
                f"1 -> {m.count}",
                f"{growth:.0f} KiB",
                growth <= MAX_RSS_PER_DEVICE_KIB,
                f"<= {MAX_RSS_PER_DEVICE_KIB} KiB",
            )
        if m.count == CPU_TARGET_SIZE:
            verdict(
                "CPU of Home Assistant",
                str(m.count),
                f"{m.cpu_per_30s:.0f} ticks/30 s (load {m.load_after})",
                m.cpu_per_30s <= MAX_CPU_TICKS_PER_30S,
                f"<= {MAX_CPU_TICKS_PER_30S}",
            )
        one_each = m.sockets.to_devices == m.count == m.sockets.devices_with_one
        verdict(
            "one socket per device",
            str(m.count),
            f"{m.sockets.to_devices} sockets, {m.sockets.devices_with_one} devices with one",
            one_each,
            "exactly 1 each",
        )
        requests = m.per_device_hour(m.window.total_requests)
        verdict(
            "requests beyond the stream",
            str(m.count),
            f"{requests:.1f}/h/device",
            m.window.total_requests == 0,
            "0",
        )
        handshakes = m.per_device_hour(m.window.tls_handshakes)
        verdict(
            "TLS handshakes",
            str(m.count),
            f"{handshakes:.1f}/h/device",
            m.window.tls_handshakes == 0,
            "0",
        )
        if m.startup is not None:
            verdict(
                "start-up with every entry",
                str(m.count),
                f"{m.startup.entities_s:.1f} s",
                m.startup.entities_s < MAX_STARTUP_S,
                f"< {MAX_STARTUP_S:.0f} s",
            )
            verdict(
                "feed requests during start-up",
                str(m.count),
                str(m.startup.feed_requests),
                m.startup.feed_requests == 1,
                "exactly 1",
            )


def verdict(what: str, fleet: str, value: str, passed: bool, target: str) -> None:
    """One target's line."""
    print(f"  {'PASS' if passed else 'FAIL'}  {what} ({fleet} devices): {value} (target {target})")


# --- the command line ----------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    """ "1,200,500" as [1, 200, 500]."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("fleet sizes are positive integers, e.g. 1,200,500")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=sizes, default=[1, 200, 500], help="default 1,200,500")
    parser.add_argument("--settle", type=float, default=40.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument(
        "--startup-sizes",
        type=sizes,
        default=[500],
        help="sizes whose Home Assistant start-up is timed (default 500)",
    )
    parser.add_argument(
        "--add-concurrency",
        type=int,
        default=8,
        help="config flows at a time while adding devices (default 8)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the config folders")
    parser.add_argument(
        "--no-restarted-rss",
        dest="restarted_rss",
        action="store_false",
        help="skip the memory measured again after a restart on the same folder",
    )
    parser.add_argument(
        "--ha-tree",
        type=Path,
        default=REPO_ROOT,
        help="run Home Assistant with the integration of this checkout (default: this one)",
    )
    return parser


async def run(args: argparse.Namespace) -> None:
    """Every size in turn, then the report."""
    results: list[Measurement] = []
    for count in args.sizes:
        results.append(await measure_size(count, args))
        report(results)  # so far: a long run that fails later still printed something
    if len(results) > 1:
        print("\nDone.")


def main(argv: list[str] | None = None) -> None:
    """Raise the fd limit, point the demo at the integration, run."""
    args = build_parser().parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # Home Assistant inherits it
    integration = (args.ha_tree / "custom_components" / "esp_ota").resolve()
    say(
        f"integration under test: {integration}; fd limit {soft} -> {hard}; "
        f"load {load_average()}; {os.cpu_count()} CPUs"
    )
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
