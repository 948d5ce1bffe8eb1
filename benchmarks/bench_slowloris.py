"""FirmwareServer under a slowloris flood: what the server holds, and whether a device
with a valid token still downloads.

Run from the repository root: .venv/bin/python -m benchmarks.bench_slowloris
[--connections N] [--hold-seconds S] [--fd-limit F] [--sources K] [--reconnect]

The serving process (this one) starts a FirmwareServer on 127.0.0.1 with one granted
1 MiB image. A child process opens N TLS connections to it (50 handshakes at a time) from
K loopback addresses (127.0.0.2 .. 127.0.0.K+1; 127.0.0.1 is the host itself, which the
server caps by the total only), sends each a request line and then one header byte every
few seconds, never finishing the headers; with --reconnect, a client refused or cut comes
back half a second later, as a determined attacker would. After the flood has been held
for S seconds (30 by default) this process counts the sockets it still has open (from
/proc/self/fd, and the server's own count when it keeps one), the growth of its RSS and
the log records written (every logger, INFO and above, and their bytes); then the child
downloads the whole image with the valid token from another address (127.0.0.200, a
device), during the flood, and says how long that took. `--fd-limit` lowers this
process's open-file limit (Home Assistant's is 2048) to see what happens when the flood
reaches it; by default the limit is raised to the hard one and N stays under it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import resource
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from custom_components.esp_ota.espota.certificates import make_server_certificate
from custom_components.esp_ota.espota.firmware_server import FirmwareServer
from custom_components.esp_ota.espota.firmware_store import StoredImage
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import build_app_image

IMAGE_SIZE = 1024 * 1024
CONNECTIONS = 500
HOLD_S = 30.0
DRIP_S = 5.0  # a header byte this often: well under any per-read timeout
HANDSHAKES_AT_ONCE = 50
_GATE = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
RECONNECT_S = 0.5  # with --reconnect: a refused or closed client tries again this soon
DEVICE_ADDRESS = "127.0.0.200"  # the device is not one of the flood's addresses
DOWNLOAD_TIMEOUT_S = 60.0


# Descriptors kept aside so that measuring works when the flood took all the others: one
# is closed just before a measure and opened again just after, in the same step of the
# event loop, so the server cannot take it in between.
_SPARE: list[int] = []


@contextlib.contextmanager
def spare_descriptor() -> Iterator[None]:
    """Give one kept-aside descriptor back for the duration of the block."""
    if _SPARE:
        os.close(_SPARE.pop())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            _SPARE.append(os.open(os.devnull, os.O_RDONLY))


def rss_kib() -> int:
    """Resident set size of this process in KiB (Linux)."""
    with spare_descriptor():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_sockets() -> int:
    """Sockets this process holds open (Linux)."""
    count = 0
    with spare_descriptor():
        for entry in os.scandir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if str(Path(entry.path).readlink()).startswith("socket:"):
                    count += 1
    return count


class CountingHandler(logging.Handler):
    """Counts what would be written to a log file, and its size."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records = 0
        self.bytes = 0
        self.by_logger: dict[str, int] = {}
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s (%(name)s) %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        self.bytes += len(self.format(record)) + 1
        self.by_logger[record.name] = self.by_logger.get(record.name, 0) + 1


def raise_fd_limit(limit: int | None) -> int:
    """Set the soft open-file limit (to the hard one by default); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if limit is None else min(limit, hard)
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


# --- the child: slow clients, then one device ---------------------------------------------


async def slow_client(
    job: dict[str, Any], context: ssl.SSLContext, state: dict[str, int], number: int
) -> None:
    """One slowloris connection from its source address: a request line, then a header
    byte every DRIP_S; with `reconnect`, a new one whenever it is refused or closed."""
    source = f"127.0.0.{2 + number % job['sources']}"  # 127.0.0.1 is the host itself
    while True:
        await drip_once(job["port"], context, state, source)
        if not job["reconnect"]:
            return
        await asyncio.sleep(RECONNECT_S)


async def drip_once(port: int, context: ssl.SSLContext, state: dict[str, int], source: str) -> None:
    try:
        async with _GATE:  # paces the handshakes, not the drip
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=context,
                    server_hostname="127.0.0.1",
                    local_addr=(source, 0),
                ),
                30,
            )
    except OSError, TimeoutError, ssl.SSLError:
        state["refused"] += 1
        return
    state["open"] += 1
    opened = time.monotonic()
    try:
        writer.write(b"GET /firmware/flood.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nX")
        closed = asyncio.ensure_future(reader.read(65536))
        while True:
            done, _ = await asyncio.wait({closed}, timeout=DRIP_S)
            if done:
                break
            writer.write(b"x")
            await writer.drain()
    except OSError, ssl.SSLError:
        pass
    finally:
        state["open"] -= 1
        state["closed_by_server"] += 1
        state["longest_held_s"] = max(state["longest_held_s"], round(time.monotonic() - opened))
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def download(url: str, token: str, context: ssl.SSLContext) -> dict[str, Any]:
    """The device: GET the image with its token; bytes, seconds, and whether it is whole."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    received = 0
    error = None
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=context, force_close=True, local_addr=(DEVICE_ADDRESS, 0)
                ),
                timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S),
            ) as session,
            session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(65536):
                received += len(chunk)
                digest.update(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        error = f"{type(err).__name__}: {err}"
    return {
        "bytes": received,
        "sha256": digest.hexdigest(),
        "seconds": time.perf_counter() - started,
        "error": error,
    }


async def client_main(job: dict[str, Any]) -> None:
    """Open the flood, report, wait for "download", report that, wait for "stop"."""
    raise_fd_limit(None)
    context = ssl.create_default_context(cadata=job["cert_pem"])
    state = {"open": 0, "refused": 0, "closed_by_server": 0, "longest_held_s": 0}
    started = time.perf_counter()
    flood = [
        asyncio.ensure_future(slow_client(job, context, state, number))
        for number in range(job["connections"])
    ]
    while state["open"] + state["refused"] + state["closed_by_server"] < job["connections"]:
        if time.perf_counter() - started > 120:
            break
        await asyncio.sleep(0.1)
    print(json.dumps({"flood": dict(state), "seconds": time.perf_counter() - started}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (line := (await reader.readline()).strip()) != b"stop":
        if line == b"download":
            result = await download(job["url"], job["token"], context)
            print(json.dumps({"download": result, "flood": dict(state)}), flush=True)
        elif line == b"state":
            print(json.dumps({"flood": dict(state)}), flush=True)
        elif not line:
            break
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


# --- the serving process -------------------------------------------------------------------


class Flood:
    """The child process of slow clients, driven line by line."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        assert child.stdin is not None
        assert child.stdout is not None
        self.child, self._stdin, self._stdout = child, child.stdin, child.stdout

    async def ask(self, line: str) -> dict[str, Any]:
        self._stdin.write(line.encode() + b"\n")
        await self._stdin.drain()
        answer: dict[str, Any] = json.loads(await self._stdout.readline())
        return answer

    async def stop(self) -> None:
        self._stdin.write(b"stop\n")
        await self._stdin.drain()
        await self.child.wait()


async def flood_server(server: FirmwareServer, job: dict[str, Any], hold_s: float) -> str:
    """Flood, hold, measure, download during the flood; the download's verdict."""
    sockets_before, rss_before = open_sockets(), rss_kib()
    flood = Flood(
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.bench_slowloris",
            "--client",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
    )
    opened = await flood.ask(json.dumps(job))
    peak_sockets, peak_rss = open_sockets(), rss_kib()
    print(
        f"flood opened in {opened['seconds']:.1f} s: client sees "
        f"{opened['flood']['open']} open, {opened['flood']['refused']} refused, "
        f"{opened['flood']['closed_by_server']} already closed by the server"
    )
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        peak_sockets = max(peak_sockets, open_sockets())
        peak_rss = max(peak_rss, rss_kib())
    held = open_sockets() - sockets_before
    own_count = getattr(server, "connection_count", None)
    state = (await flood.ask("state"))["flood"]
    print(
        f"after {hold_s:.0f} s: server holds {held} sockets"
        + (f" (its own count: {own_count})" if own_count is not None else "")
        + f", peak {peak_sockets - sockets_before}; client sees {state['open']} open, "
        f"{state['refused']} refused, {state['closed_by_server']} closed by the server"
        + (f" (the longest after {state['longest_held_s']} s)" if state["closed_by_server"] else "")
    )
    print(
        f"RSS: {rss_before / 1024:.1f} MiB before, peak {peak_rss / 1024:.1f} MiB "
        f"(+{(peak_rss - rss_before) / 1024:.1f} MiB)"
    )
    result = (await flood.ask("download"))["download"]
    await flood.stop()
    if result["bytes"] == IMAGE_SIZE and result["sha256"] == job["sha256"]:
        return f"whole image ({IMAGE_SIZE // 1024} KiB) in {result['seconds']:.2f} s"
    return f"FAILED after {result['seconds']:.2f} s, {result['bytes']} bytes ({result['error']})"


async def serve(arguments: argparse.Namespace) -> None:
    """Serve one granted image, flood it, print the figures."""
    connections, hold_s = arguments.connections, arguments.hold_seconds
    limit = raise_fd_limit(arguments.fd_limit)
    _SPARE.extend(os.open(os.devnull, os.O_RDONLY) for _ in range(2))
    counting = CountingHandler()
    logging.getLogger().addHandler(counting)
    logging.getLogger().setLevel(logging.INFO)
    certificate = make_server_certificate(["127.0.0.1"])
    data = build_app_image(size=IMAGE_SIZE, version="bench")
    print(
        f"{connections} slow TLS clients (a header byte every {DRIP_S:.0f} s) from "
        f"{arguments.sources} address(es)"
        + (", reconnecting" if arguments.reconnect else "")
        + f", against FirmwareServer on 127.0.0.1; open-file limit {limit}; held {hold_s:.0f} s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-slowloris-") as folder:
        sha256 = hashlib.sha256(data).hexdigest()
        path = Path(folder) / f"{sha256}.bin"
        path.write_bytes(data)
        image = StoredImage(path=path, sha256=sha256, size=len(data), info=parse_image(data))
        server = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
        await server.start()
        try:
            grant = server.grant(image, device_id="bench-device", ttl_s=3600)
            job = {
                "port": server.port,
                "cert_pem": certificate.cert_pem,
                "connections": connections,
                "url": server.url(grant, "127.0.0.1"),
                "token": grant.token,
                "sha256": sha256,
                "sources": arguments.sources,
                "reconnect": arguments.reconnect,
            }
            verdict = await flood_server(server, job, hold_s)
            print(f"a device with a valid token during the flood: {verdict}")
        finally:
            await server.close()
    top = sorted(counting.by_logger.items(), key=lambda item: -item[1])[:3]
    print(
        f"log records (INFO and above): {counting.records}, {counting.bytes / 1024:.1f} KiB"
        + (f"; by logger: {', '.join(f'{name} {n}' for name, n in top)}" if top else "")
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--hold-seconds", type=float, default=HOLD_S)
    parser.add_argument(
        "--fd-limit", type=int, default=None, help="this process's open-file limit (soft)"
    )
    parser.add_argument(
        "--sources", type=int, default=1, help="flood from 127.0.0.2 .. 127.0.0.N+1 (N <= 100)"
    )
    parser.add_argument(
        "--reconnect", action="store_true", help="a refused or closed client comes back"
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.client:
        asyncio.run(client_main(json.loads(sys.stdin.readline())))
    else:
        asyncio.run(serve(arguments))
