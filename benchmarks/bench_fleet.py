"""A fleet of 200 simulated devices in one process: start-up time and memory.

Run from the repository root: .venv/bin/python -m benchmarks.bench_fleet [--count N]
Each device has its own HTTPS API on a 127.0.0.1 port and its own certificate; all share
one 256 KiB factory image. Prints start-up time, RSS growth and Python heap growth (the
heap is traced during start-up only, so the start-up time includes tracemalloc's cost),
checks every device answers /api/v1/info through the library's pinned client, and times
the shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
from pathlib import Path

import aiohttp

from custom_components.esp_ota.espota.device_client import DeviceClient
from simulator.fleet import Fleet, FleetOptions


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main(count: int) -> None:
    """Start, measure, query every device, stop."""
    rss_before = rss_mib()
    tracemalloc.start()
    started = time.perf_counter()
    fleet = Fleet(FleetOptions(count=count))
    members = await fleet.start()
    startup_s = time.perf_counter() - started
    heap, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_mib()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
            queried = time.perf_counter()
            infos = await asyncio.gather(
                *(
                    DeviceClient(
                        session, m.host, m.port, m.secret, cert_fingerprint=m.cert_fingerprint
                    ).info()
                    for m in members
                )
            )
            query_s = time.perf_counter() - queried
    finally:
        stopping = time.perf_counter()
        await fleet.stop()
        stop_s = time.perf_counter() - stopping
    print(f"devices:              {count}")
    print(f"start-up:             {startup_s:.2f} s ({startup_s / count * 1000:.1f} ms/device)")
    growth = rss_after - rss_before
    print(f"RSS growth:           {growth:.1f} MiB (process total {rss_after:.0f} MiB)")
    print(f"Python heap growth:   {heap / 2**20:.1f} MiB ({heap / count / 1024:.0f} KiB/device)")
    print(f"/info from all:       {query_s:.2f} s, {len(infos)} answers over pinned HTTPS")
    print(f"stop:                 {stop_s:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    asyncio.run(main(parser.parse_args().count))
