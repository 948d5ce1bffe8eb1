"""FirmwareServer against aiohttp's own FileResponse, both over TLS, 50 devices at once.

Run from the repository root: .venv/bin/python benchmarks/bench_firmware_server.py
Each round, 50 concurrent TLS clients (aiohttp, pinned to the server's certificate, each
on its own connection) download a 4 MiB built image from FirmwareServer (one grant, and
so one Bearer token, per client), then the same file from a bare aiohttp static-file
server (web.FileResponse) with the same certificate. The clients run in a child process,
so the server's event loop, memory and CPU are measured alone, as Home Assistant's would
be. Printed per round and for the best round: wall time, bytes/s, the ratio, peak RSS
growth of the serving process, and the worst event-loop lag (a ticker's sleep overshoot).
Target: FirmwareServer keeps at least 0.8 of FileResponse's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp import web

from custom_components.esp_ota.espota.certificates import make_server_certificate
from custom_components.esp_ota.espota.firmware_server import CHUNK_SIZE, FirmwareServer
from custom_components.esp_ota.espota.firmware_store import StoredImage
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import build_app_image

IMAGE_SIZE = 4 * 1024 * 1024
CLIENTS = 50
ROUNDS = 3
TARGET_RATIO = 0.8
TICK_S = 0.005


def rss_kib() -> int:
    """Resident set size of this process in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Watch:
    """A ticker measuring event-loop lag and sampling RSS while a phase runs."""

    worst_lag_s: float = 0.0
    peak_rss_kib: int = 0
    running: bool = True

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        while self.running:
            before = loop.time()
            await asyncio.sleep(TICK_S)
            self.worst_lag_s = max(self.worst_lag_s, loop.time() - before - TICK_S)
            self.peak_rss_kib = max(self.peak_rss_kib, rss_kib())


@dataclass(frozen=True)
class Phase:
    """What one phase measured."""

    seconds: float
    total_bytes: int
    rss_growth_kib: int
    worst_lag_s: float

    @property
    def rate(self) -> float:
        return self.total_bytes / self.seconds


async def run_clients(jobs: list[tuple[str, dict[str, str]]], cert_file: Path) -> Phase:
    """Run the clients in a child process while watching this process's loop and RSS."""
    watch = Watch(peak_rss_kib=rss_kib())
    baseline = watch.peak_rss_kib
    ticker = asyncio.create_task(watch.tick())
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        str(cert_file),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out, _ = await child.communicate(json.dumps(jobs).encode())
    watch.running = False
    await ticker
    if child.returncode != 0:
        raise RuntimeError(f"client process failed ({child.returncode})")
    result = json.loads(out)
    return Phase(
        seconds=result["seconds"],
        total_bytes=result["bytes"],
        rss_growth_kib=watch.peak_rss_kib - baseline,
        worst_lag_s=watch.worst_lag_s,
    )


async def client_main(cert_file: Path) -> None:
    """The child: download every job at once, print seconds and bytes as JSON."""
    jobs = json.loads(sys.stdin.read())
    context = ssl.create_default_context(cafile=cert_file)
    connector = aiohttp.TCPConnector(ssl=context, limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str, headers: dict[str, str]) -> int:
            received = 0
            async with session.get(url, headers=headers) as response:
                response.raise_for_status()
                async for chunk in response.content.iter_chunked(256 * 1024):
                    received += len(chunk)
            if received != IMAGE_SIZE:
                raise RuntimeError(f"{url}: {received} bytes")
            return received

        started = time.perf_counter()
        sizes = await asyncio.gather(*(one(url, headers) for url, headers in jobs))
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": sum(sizes)}))


async def serve_phase(kind: str, chunk_size: int) -> None:
    """One phase in a fresh process (so its RSS growth is its own): serve, measure, print."""
    certificate = make_server_certificate(["127.0.0.1"])
    data = build_app_image(size=IMAGE_SIZE, version="bench")
    with tempfile.TemporaryDirectory(prefix="bench-firmware-") as folder:
        sha256 = hashlib.sha256(data).hexdigest()
        path = Path(folder) / f"{sha256}.bin"
        path.write_bytes(data)
        cert_file = Path(folder) / "cert.pem"
        cert_file.write_text(certificate.cert_pem)
        image = StoredImage(path=path, sha256=sha256, size=len(data), info=parse_image(data))
        del data
        if kind == "firmware":
            server = FirmwareServer(
                host="127.0.0.1", port=0, certificate=certificate, chunk_size=chunk_size
            )
            await server.start()
            try:
                grants = [
                    server.grant(image, device_id=f"bench-{n}", ttl_s=600) for n in range(CLIENTS)
                ]
                jobs = [(server.url(grant, "127.0.0.1"), server.headers(grant)) for grant in grants]
                phase = await run_clients(jobs, cert_file)
                if any(server.bytes_served(grant.token) != IMAGE_SIZE for grant in grants):
                    raise RuntimeError("bytes_served does not account for every byte")
            finally:
                await server.close()
        else:
            app = web.Application()

            async def static(_request: web.Request) -> web.FileResponse:
                return web.FileResponse(path)

            app.router.add_get("/firmware.bin", static)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                context = await asyncio.to_thread(certificate.ssl_context)
                await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
                url = f"https://127.0.0.1:{runner.addresses[0][1]}/firmware.bin"
                phase = await run_clients([(url, {})] * CLIENTS, cert_file)
            finally:
                await runner.cleanup()
    print(json.dumps(asdict(phase)))


def run_phase(kind: str, chunk_size: int) -> Phase:
    """Run one phase in a child process and read what it measured."""
    out = subprocess.run(
        [sys.executable, __file__, "--phase", kind, "--chunk-size", str(chunk_size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Phase(**json.loads(out.strip().splitlines()[-1]))


def main(chunk_size: int) -> int:
    """Print the figures; exit 1 if the target is missed."""
    print(
        f"{CLIENTS} TLS clients x {IMAGE_SIZE // (1024 * 1024)} MiB; FirmwareServer chunk "
        f"{chunk_size // 1024} KiB; {ROUNDS} rounds; each phase a fresh serving process, "
        "its clients in another"
    )
    print(
        f"{'round':>5}  {'server':<16} {'seconds':>8} {'MiB/s':>8} "
        f"{'RSS +MiB':>9} {'max lag ms':>11}"
    )
    best: tuple[Phase, Phase] | None = None
    for round_number in range(1, ROUNDS + 1):
        ours = run_phase("firmware", chunk_size)
        theirs = run_phase("static", chunk_size)
        for name, phase in (("FirmwareServer", ours), ("FileResponse", theirs)):
            print(
                f"{round_number:>5}  {name:<16} {phase.seconds:>8.2f} "
                f"{phase.rate / 2**20:>8.1f} {phase.rss_growth_kib / 1024:>9.1f} "
                f"{phase.worst_lag_s * 1000:>11.1f}"
            )
        if best is None or ours.rate / theirs.rate > best[0].rate / best[1].rate:
            best = (ours, theirs)
    assert best is not None
    ours, theirs = best
    ratio = ours.rate / theirs.rate
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(
        f"best round: FirmwareServer {ours.rate / 2**20:.1f} MiB/s, FileResponse "
        f"{theirs.rate / 2**20:.1f} MiB/s, ratio {ratio:.2f} (target >= {TARGET_RATIO}): "
        f"{verdict}"
    )
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["firmware", "static"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--chunk-size", type=int, default=CHUNK_SIZE, help="FirmwareServer's read size (bytes)"
    )
    arguments = parser.parse_args()
    if arguments.client is not None:
        asyncio.run(client_main(arguments.client))
        raise SystemExit(0)
    if arguments.phase is not None:
        asyncio.run(serve_phase(arguments.phase, arguments.chunk_size))
        raise SystemExit(0)
    raise SystemExit(main(arguments.chunk_size))
