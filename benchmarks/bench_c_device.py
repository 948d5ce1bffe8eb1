"""What the esp_ota_agent component costs a device, measured on the C host build.

    script/build-firmware                      # once: build/firmware-host/esp_ota_device.elf
    .venv/bin/python -m benchmarks.bench_c_device [--image-kib 1024] [--runs 3]

The device is the example firmware built for ESP-IDF's linux target with the test-only
linux layer, which counts every heap allocation of the program (ESP-IDF's code, mbedtls,
the agent) and writes the count to <state dir>/heap.json (in_use, peak since a reset).
Prints, for the whole example firmware (NVS, the default event loop and the agent):

- heap in use when idle, with no connection, and with Home Assistant's one event stream;
- peak heap of one API request (a TLS handshake and GET /api/v1/info) on top of that;
- peak heap during an update as Home Assistant follows it (its event stream open, the
  request that starts it, the download's TLS client; no request meanwhile), and of the
  download alone; the time the update took (paced by the proxy);
- open sockets (from /proc) idle, with a stream, and during the download;
- the agent's code and static data (size(1) of its objects) and the stacks of its tasks.

Sizes are the PC's (64-bit pointers); docs in firmware/components/esp_ota_agent/README.md
say how they translate to an ESP32.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shlex
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conformance.devices import (
    HOST_NOT_BUILT,
    HOST_PARTITION_TABLE,
    HOST_PROGRAM,
    DeviceOptions,
    HostDevice,
)
from tests.conformance.fault_proxy import Rule
from tests.conformance.support import FirmwareHost, make_image, start_update, wait_job_end

AGENT_SOURCES = Path(__file__).resolve().parents[1] / "firmware" / "components" / "esp_ota_agent"
SDKCONFIG = HOST_PROGRAM.parent / "config" / "sdkconfig.h"
# About a LAN ESP32's pace (docs: 50-100 KB/s) times ten: long enough to measure within.
DOWNLOAD_BYTES_PER_S = 512 * 1024


@dataclass(frozen=True, slots=True)
class HeapReading:
    """One heap.json: bytes the program's own code holds now, and at most since a reset."""

    in_use: int
    peak: int
    peak_resets: int
    stacks_chip: int  # the live tasks' stacks, as large as on a chip


def read_heap(state_dir: Path) -> HeapReading:
    data = json.loads((state_dir / "heap.json").read_text())
    return HeapReading(
        int(data["in_use"]), int(data["peak"]), int(data["peak_resets"]), int(data["stacks_chip"])
    )


async def settle_heap(state_dir: Path) -> HeapReading:
    """A reading taken after the layer's 200 ms writer has seen the current state."""
    await asyncio.sleep(0.5)
    return read_heap(state_dir)


async def reset_peak(state_dir: Path) -> None:
    """Ask the layer to start a new peak from what is in use now, and wait until it did."""
    before = read_heap(state_dir).peak_resets
    (state_dir / "heap-reset").write_text("")
    async with asyncio.timeout(5):
        while read_heap(state_dir).peak_resets == before:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def sockets_of(pid: int) -> int:
    """Open sockets of a process (its /proc fd links to socket:[...])."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if str(fd.readlink()).startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def agent_code_size(optimization: str) -> tuple[int, int, int]:
    """text, data, bss of the agent's objects (GNU size), compiled as the host build does
    but without the gcov instrumentation nvs_flash adds on linux, at `optimization`."""
    commands = json.loads((HOST_PROGRAM.parent / "compile_commands.json").read_text())
    totals = [0, 0, 0]
    with tempfile.TemporaryDirectory(prefix="agent-size-") as folder:
        for entry in commands:
            if not entry["file"].startswith(f"{AGENT_SOURCES}/"):
                continue
            argv = [
                part
                for part in shlex.split(entry["command"])
                if part != "--coverage" and not re.fullmatch(r"-O[0-3sgz]", part)
            ]
            output = Path(folder) / (Path(entry["file"]).stem + ".o")
            argv[argv.index("-o") + 1] = str(output)
            argv.append(optimization)
            subprocess.run(argv, cwd=entry["directory"], check=True, capture_output=True)
            sizes = (
                subprocess.run(["size", str(output)], capture_output=True, text=True, check=True)
                .stdout.splitlines()[-1]
                .split()
            )
            for index in range(3):
                totals[index] += int(sizes[index])
    return totals[0], totals[1], totals[2]


def config_value(name: str) -> int:
    match = re.search(rf"#define {name} (\d+)", SDKCONFIG.read_text())
    return int(match.group(1)) if match else 0


async def open_stream(device: HostDevice) -> tuple[aiohttp.ClientResponse, asyncio.Task[None]]:
    """Home Assistant's one event stream, read in the background."""
    response = await device.session.get(
        f"https://127.0.0.1:{device.port}/api/v1/events",
        headers={"Authorization": f"Bearer {device.secret}"},
        ssl=aiohttp.Fingerprint(bytes.fromhex(device.cert_fingerprint)),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    )

    async def drain() -> None:
        async for _ in response.content.iter_any():
            pass

    return response, asyncio.create_task(drain())


async def measure_update(
    device: HostDevice, firmware: FirmwareHost, image_kib: int, idle: HeapReading
) -> dict[str, float]:
    """An update as Home Assistant follows it (its stream is open): peaks and sockets."""
    state, pid = device.state_dir, device.pid
    assert pid is not None
    streaming = read_heap(state)
    firmware.proxy.default_rule = Rule(bytes_per_s=DOWNLOAD_BYTES_PER_S)
    offer = firmware.publish(make_image("2.0.0", size=image_kib * 1024), "2.0.0")
    await reset_peak(state)
    started = time.perf_counter()
    boot = json.loads((state / "heap.json").read_text())["boot"]
    ota_id = await start_update(device, offer)
    # The download alone, once the request that started it is answered and its session
    # closed: a new peak from there (the proxy paces the download to DOWNLOAD_BYTES_PER_S
    # so that this moment is well inside it).
    await asyncio.sleep(0.5)
    update_peak_so_far = read_heap(state).peak
    await reset_peak(state)
    # No request meanwhile (Home Assistant polls only when events stop). The peak is read
    # until the restart's last heap.json ("final"), before the new boot starts a new count.
    peak, stacks, sockets = 0, idle.stacks_chip, 0
    async with asyncio.timeout(60):
        while True:
            data = json.loads((state / "heap.json").read_text())
            if data["boot"] != boot:
                break
            peak = max(peak, int(data["peak"]))
            stacks = max(stacks, int(data["stacks_chip"]))
            with contextlib.suppress(OSError):
                sockets = max(sockets, sockets_of(pid))
            if data["final"]:
                break
            await asyncio.sleep(0.02)
    final = await wait_job_end(device, ota_id, within_s=60)
    assert final.state.value == "succeeded", final
    return {
        "update_peak": max(peak, update_peak_so_far),
        "download_peak_over_stream": peak - streaming.in_use,
        "update_stacks": stacks,
        "download_sockets": sockets,
        "update_s": time.perf_counter() - started,
    }


async def one_run(image_kib: int, workdir: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        device = HostDevice(DeviceOptions(), session, workdir / "device")
        firmware = FirmwareHost(workdir / "firmware")
        await firmware.start()
        await device.start()
        try:
            pid = device.pid
            assert pid is not None
            state = device.state_dir
            await device.client.info()
            idle = await settle_heap(state)
            figures["idle_heap"] = idle.in_use
            figures["idle_stacks"] = idle.stacks_chip
            figures["idle_sockets"] = sockets_of(pid)

            await reset_peak(state)
            await device.client.info()
            request = await settle_heap(state)
            figures["request_peak_over_idle"] = request.peak - idle.in_use

            response, drain = await open_stream(device)
            streaming = await settle_heap(state)
            figures["stream_heap"] = streaming.in_use
            figures["stream_sockets"] = sockets_of(pid)

            figures.update(await measure_update(device, firmware, image_kib, idle))
            drain.cancel()
            response.close()
        finally:
            await device.close()
            await firmware.close()
    return figures


def kib(value: float) -> str:
    return f"{value / 1024:.1f} KiB"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-kib", type=int, default=1024, help="update image size")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (HOST_PROGRAM.is_file() and HOST_PARTITION_TABLE.is_file()):
        raise SystemExit(HOST_NOT_BUILT)

    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-c-device-") as workdir:
            runs.append(await one_run(args.image_kib, Path(workdir)))

    def figure(name: str) -> str:
        values = [run[name] for run in runs]
        low, high = min(values), max(values)
        if name.endswith("sockets"):
            return f"{low:.0f}" if low == high else f"{low:.0f}-{high:.0f}"
        if name.endswith("_s"):
            return f"{statistics.median(values):.2f} s (median of {len(values)})"
        return kib(low) if low == high else f"{kib(low)} - {kib(high)}"

    sizes = {level: agent_code_size(level) for level in ("-O2", "-Os")}
    print(f"esp_ota_agent on the C host build, {args.runs} runs, update image {args.image_kib} KiB")
    print("heap without task stacks (the whole example firmware: NVS, event loop, agent;")
    print("64-bit sizes):")
    print(f"  idle, no connection              {figure('idle_heap')}")
    print(f"  one event stream open            {figure('stream_heap')}")
    print(f"  one API request (peak over idle) {figure('request_peak_over_idle')}")
    print(f"  during an update (peak, with the  {figure('update_peak')}")
    print("    request that started it)")
    print(f"  the download alone (peak over    {figure('download_peak_over_stream')}")
    print("    the idle stream)")
    print("sockets (the process, incl. httpd's listener and control socket):")
    print(f"  idle                             {figure('idle_sockets')}")
    print(f"  one event stream                 {figure('stream_sockets')}")
    print(f"  during the download              {figure('download_sockets')}")
    print(f"update time                        {figure('update_s')}")
    print("agent code and static data (x86-64, its objects without gcov; size(1)):")
    for level, (text, data, bss) in sizes.items():
        print(f"  {level}  text {text} B, data {data} B, bss {bss} B")
    print("task stacks (their size on a chip, where they come from the heap too):")
    print(f"  all tasks, idle                  {figure('idle_stacks')}")
    print(f"  all tasks, during the update     {figure('update_stacks')}")
    server_stack = config_value("CONFIG_ESP_OTA_AGENT_SERVER_TASK_STACK")
    print(
        f"  of which the HTTPS server        {kib(server_stack)}, the update task "
        f"{kib(config_value('CONFIG_ESP_OTA_AGENT_OTA_TASK_STACK'))} (only while it runs)"
    )


if __name__ == "__main__":
    asyncio.run(main())
