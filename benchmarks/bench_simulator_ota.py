"""How long a simulated 1.5 MB OTA takes, and how much memory a fleet of idle devices needs.

    .venv/bin/python -m benchmarks.bench_simulator_ota            # everything (~1 min)
    .venv/bin/python -m benchmarks.bench_simulator_ota --quick    # skip the realistic runs

Prints:
- one 1.5 MB update at the REALISTIC pace (sector erases, the default) and with
  bulk_flash_erase, and UNTHROTTLED: wall time from start_ota to the new image running;
- 200 idle devices built from one 1.5 MB factory image: Python heap (tracemalloc) and RSS;
- optionally (--fleet) 200 devices updating at once, UNTHROTTLED, from one server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import time
import tracemalloc
from pathlib import Path

from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import OtaState
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.flash import pooled_sector_count
from simulator.model import OtaRequest
from simulator.ota_task import OtaTaskConfig
from simulator.pace import Pace
from tests.simulator.firmware_server import FirmwareServer, start_firmware_server

IMAGE_SIZE = 1_500_000
FLEET_SIZE = 200


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def image(version: str, seed: int) -> bytes:
    return build_app_image(
        project="esp-ota-demo", version=version, chip="esp32", size=IMAGE_SIZE, seed=seed
    )


def request_for(server: FirmwareServer, data: bytes, version: str) -> OtaRequest:
    return OtaRequest(
        url=server.add(f"/fw-{version}.bin", data),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        version=version,
        cert_pem=server.cert_pem,
    )


async def one_update(
    server: FirmwareServer, factory: bytes, new: bytes, pace: Pace, ota: OtaTaskConfig
) -> float:
    device = SimulatedDevice(
        DeviceConfig(mac="bench", factory_image=factory, pace=pace, reboot_time_s=0, ota=ota)
    )
    await device.start()
    try:
        started = time.monotonic()
        await device.start_ota(request_for(server, new, "2.0.0"))
        await device.wait_idle()
        elapsed = time.monotonic() - started
        status = device.ota_status()
        if status.state is not OtaState.SUCCEEDED or device.info().version != "2.0.0":
            raise RuntimeError(f"update failed: {status}")
        return elapsed
    finally:
        await device.close()


async def idle_fleet_memory(factory: bytes) -> None:
    gc.collect()
    tracemalloc.start()
    rss_before = rss_bytes()
    heap_before, _ = tracemalloc.get_traced_memory()
    devices = [
        SimulatedDevice(
            DeviceConfig(mac=f"24:0a:c4:00:{i // 256:02x}:{i % 256:02x}", factory_image=factory)
        )
        for i in range(FLEET_SIZE)
    ]
    for device in devices:
        await device.start()
    gc.collect()
    heap_after, heap_peak = tracemalloc.get_traced_memory()
    rss_after = rss_bytes()
    tracemalloc.stop()
    per_device = (heap_after - heap_before) / FLEET_SIZE
    print(
        f"{FLEET_SIZE} idle devices (one {len(factory) / 1e6:.1f} MB factory image): "
        f"Python heap +{(heap_after - heap_before) / 2**20:.1f} MiB "
        f"({per_device / 1024:.1f} KiB/device, peak +{(heap_peak - heap_before) / 2**20:.1f} MiB), "
        f"RSS +{(rss_after - rss_before) / 2**20:.1f} MiB; "
        f"distinct flash sectors in memory: {pooled_sector_count()}"
    )
    for device in devices:
        await device.close()


async def fleet_update(server: FirmwareServer, factory: bytes, new: bytes) -> None:
    devices = [
        SimulatedDevice(DeviceConfig(mac=f"fleet-{i}", factory_image=factory, reboot_time_s=0))
        for i in range(FLEET_SIZE)
    ]
    for device in devices:
        await device.start()
    request = request_for(server, new, "2.0.0")
    rss_before = rss_bytes()
    started = time.monotonic()
    for device in devices:
        await device.start_ota(request)
    await asyncio.gather(*(device.wait_idle() for device in devices))
    elapsed = time.monotonic() - started
    ok = sum(d.ota_status().state is OtaState.SUCCEEDED for d in devices)
    print(
        f"{FLEET_SIZE} devices updating at once (UNTHROTTLED, one server): {elapsed:.1f} s, "
        f"{ok}/{FLEET_SIZE} succeeded, RSS +{(rss_bytes() - rss_before) / 2**20:.1f} MiB "
        f"(new image sectors are shared once written)"
    )
    for device in devices:
        await device.close()


async def main(quick: bool, fleet: bool) -> None:
    # Different seeds: two builds share no payload bytes (and so no flash sectors).
    factory = image("1.0.0", seed=1)
    new = image("2.0.0", seed=2)
    server = await start_firmware_server()
    try:
        plain = OtaTaskConfig()
        elapsed = await one_update(server, factory, new, Pace.UNTHROTTLED, plain)
        print(f"1.5 MB OTA, UNTHROTTLED: {elapsed:.2f} s")
        if not quick:
            elapsed = await one_update(server, factory, new, Pace.REALISTIC, plain)
            print(f"1.5 MB OTA, REALISTIC (4 KiB sector erases): {elapsed:.1f} s")
            bulk = plain.with_settings(bulk_flash_erase=True)
            elapsed = await one_update(server, factory, new, Pace.REALISTIC, bulk)
            print(f"1.5 MB OTA, REALISTIC (bulk_flash_erase): {elapsed:.1f} s")
        await idle_fleet_memory(factory)
        if fleet:
            await fleet_update(server, factory, new)
    finally:
        await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the realistic-pace runs")
    parser.add_argument("--fleet", action="store_true", help="also update 200 devices at once")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.quick, arguments.fleet))
