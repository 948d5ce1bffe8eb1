"""The conformance harness itself, without any device build: what the C device's flash
file holds, the fault proxy, and the C device's process handling (against a stand-in
program that reads the flash file as the C device does and answers TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from custom_components.esp_ota.espota.image import parse_image

from .devices import (
    FLASH_FILE,
    HOST_PARTITION_TABLE,
    REPO_ROOT,
    DeviceFailureError,
    DeviceOptions,
    HostDevice,
)
from .fault_proxy import FaultProxy, Rule
from .provisioning import (
    MIB,
    PARTITION_ENTRY,
    PARTITION_MAGIC,
    PARTITION_MD5_MAGIC,
    PARTITION_TABLE_OFFSET,
    build_flash,
    make_nvs_image,
    parse_partition_table,
    read_nvs,
)

# firmware/examples/esp_ota_device/partitions.csv: (label, type, subtype, offset, size)
EXAMPLE_PARTITIONS = [
    ("nvs", 0x01, 0x02, 0x9000, 0x6000),
    ("otadata", 0x01, 0x00, 0xF000, 0x2000),
    ("phy_init", 0x01, 0x01, 0x11000, 0x1000),
    ("ota_0", 0x00, 0x10, 0x20000, 1700 * 1024),
    ("ota_1", 0x00, 0x11, 0x1D0000, 1700 * 1024),
]


def pack_partition_table(
    entries: list[tuple[str, int, int, int, int]], *, md5: bool = True
) -> bytes:
    """What gen_esp32part.py writes: 32-byte entries, the MD5 entry, 0xFF to 0xC00."""
    table = b"".join(
        PARTITION_ENTRY.pack(PARTITION_MAGIC, type_, subtype, offset, size, label.encode(), 0)
        for label, type_, subtype, offset, size in entries
    )
    if md5:
        table += struct.pack("<H", PARTITION_MD5_MAGIC) + b"\xff" * 14
        table += hashlib.md5(table[: len(entries) * 32], usedforsecurity=False).digest()
    return table.ljust(0xC00, b"\xff")


@pytest.fixture
def partition_table(tmp_path: Path) -> Path:
    """The example's partition table as a binary file."""
    path = tmp_path / "partition-table.bin"
    path.write_bytes(pack_partition_table(EXAMPLE_PARTITIONS))
    return path


@pytest.mark.parametrize("md5", [True, False])
def test_partition_table_parses(md5: bool) -> None:
    """Entries in order, MD5 entry skipped, the partitions the flash is laid out by."""
    table = parse_partition_table(pack_partition_table(EXAMPLE_PARTITIONS, md5=md5))
    assert [(e.label, e.type, e.subtype, e.offset, e.size) for e in table.entries] == (
        EXAMPLE_PARTITIONS
    )
    assert (table.nvs.offset, table.otadata.offset, table.ota_0.offset) == (
        0x9000,
        0xF000,
        0x20000,
    )
    assert table.flash_size() == 4 * MIB
    with pytest.raises(ValueError, match="no partition"):
        parse_partition_table(b"\xff" * 0xC00)


def test_the_built_partition_table_is_the_example_one() -> None:
    """The C build's table (when built) is what this harness expects."""
    if not HOST_PARTITION_TABLE.is_file():
        pytest.skip("C host device not built")
    table = parse_partition_table(HOST_PARTITION_TABLE.read_bytes())
    assert [(e.label, e.type, e.subtype, e.offset, e.size) for e in table.entries] == (
        EXAMPLE_PARTITIONS
    )


@pytest.mark.parametrize("secret", ["s3cret-Key_with.symbols~", ""])
def test_nvs_image_holds_secret_and_port(secret: str) -> None:
    """esp-idf-nvs-partition-gen's image reads back: namespace esp_ota, secret, port."""
    image = make_nvs_image(secret, 61234, 0x6000)
    assert len(image) == 0x6000
    assert read_nvs(image) == {"esp_ota": {"secret": secret, "port": 61234}}
    broken = bytearray(image)
    broken[64 + 32 + 10] ^= 1  # a byte of the first entry after the namespace's
    with pytest.raises(ValueError, match="CRC"):
        read_nvs(bytes(broken))


async def test_the_flash_file_parses_back(
    session: aiohttp.ClientSession, partition_table: Path, tmp_path: Path
) -> None:
    """HostDevice.provision writes what `idf.py flash` and NVS provisioning would: 4 MiB
    erased, the table at 0x8000, NVS with secret and port, the factory image in ota_0,
    otadata and everything else erased."""
    device = HostDevice(
        DeviceOptions(project="garden", version="0.9.0", secure_version=1),
        session,
        tmp_path / "device",
        partition_table=partition_table,
    )
    table_bytes = await asyncio.to_thread(partition_table.read_bytes)
    await device.provision(table_bytes)
    flash = await asyncio.to_thread((tmp_path / "device" / FLASH_FILE).read_bytes)
    assert len(flash) == 4 * MIB
    assert flash[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + 0xC00] == table_bytes
    table = parse_partition_table(flash[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + 0xC00])
    nvs, otadata, ota_0 = table.nvs, table.otadata, table.ota_0
    settings = read_nvs(flash[nvs.offset : nvs.end])
    assert settings == {"esp_ota": {"secret": device.secret, "port": device.port}}
    assert 0 < device.port < 65536
    image = flash[ota_0.offset : ota_0.offset + len(device.factory_image)]
    assert image == device.factory_image
    app = parse_image(image).app
    assert (app.project_name, app.version, app.secure_version) == ("garden", "0.9.0", 1)
    assert set(flash[otadata.offset : otadata.end]) == {0xFF}
    written = [
        (PARTITION_TABLE_OFFSET, PARTITION_TABLE_OFFSET + len(table_bytes)),
        (nvs.offset, nvs.end),
        (ota_0.offset, ota_0.offset + len(device.factory_image)),
    ]
    erased = bytearray(flash)
    for start, end in written:
        erased[start:end] = b"\xff" * (end - start)
    assert erased.count(0xFF) == len(flash), "bytes outside table, NVS and ota_0 are not 0xFF"


def test_build_flash_refuses_what_does_not_fit(partition_table: Path) -> None:
    """A factory image larger than ota_0 is refused."""
    with pytest.raises(ValueError, match="does not fit"):
        build_flash(
            partition_table.read_bytes(), secret="x", port=1, factory_image=b"\xe9" * (2 * MIB)
        )


# --- the C device's process handling, with a stand-in program -------------------------

STAND_IN = """
import asyncio, os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from simulator.tls import load_or_create_certificate
from tests.conformance.provisioning import parse_partition_table, read_nvs

state = Path(os.environ["ESP_OTA_LINUX_STATE_DIR"])
flash = (state / "flash.bin").read_bytes()
table = parse_partition_table(flash[0x8000:0x8C00])
settings = read_nvs(flash[table.nvs.offset:table.nvs.end])["esp_ota"]
print("I (0) stand-in: pid", os.getpid(), "port", settings["port"], flush=True)
for name in sorted(os.environ):
    if name.startswith("ESP_OTA_LINUX_"):
        print(f"I (0) stand-in: {{name}}={{os.environ[name]}}", flush=True)
if os.environ.get("STAND_IN_MODE") == "exit":
    print("E (1) stand-in: giving up", flush=True)
    sys.exit(3)
if os.environ.get("STAND_IN_MODE") == "silent":
    time.sleep(3600)
certificate = load_or_create_certificate(state / "cert", os.environ["ESP_OTA_LINUX_MAC"], "x")
context = certificate.server_context()

async def main():
    await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", settings["port"], ssl=context)
    print("I (2) stand-in: listening", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """An executable that plays the C device's process: reads its flash file, serves TLS
    on the provisioned port (keeping its certificate in the state folder)."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN.format(repo=str(REPO_ROOT)))
    program = tmp_path / "stand-in"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    program.chmod(0o755)
    return program


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_host_device_process_lifecycle(
    session: aiohttp.ClientSession, stand_in: Path, partition_table: Path, tmp_path: Path
) -> None:
    """start: flash written, process configured by env vars, up once TLS answers; a power
    cycle is a new process on the same flash (same certificate); close leaves nothing."""
    device = HostDevice(
        DeviceOptions(
            chip="esp32c3",
            chip_revision=4,
            crash_versions=frozenset({"2.0.0", "1.1.0"}),
            anti_rollback=False,
        ),
        session,
        tmp_path / "device",
        program=stand_in,
        partition_table=partition_table,
    )
    try:
        await device.start()
        first_pid = device.pid
        assert first_pid is not None
        assert _running(first_pid)
        assert len(device.cert_fingerprint) == 64
        flash = (tmp_path / "device" / FLASH_FILE).read_bytes()
        log = device.log_tail() or ""
        assert f"port {device.port}" in log
        for line in (
            f"ESP_OTA_LINUX_STATE_DIR={tmp_path / 'device'}",
            f"ESP_OTA_LINUX_MAC={device.mac}",
            "ESP_OTA_LINUX_CHIP=esp32c3",
            "ESP_OTA_LINUX_CHIP_REVISION=4",
            "ESP_OTA_LINUX_CRASH_VERSIONS=1.1.0,2.0.0",
            "ESP_OTA_LINUX_ANTI_ROLLBACK=0",
            "ESP_OTA_LINUX_REBOOT_DELAY_MS=100",
        ):
            assert line in log, (line, log)

        fingerprint = device.cert_fingerprint
        await device.power_cycle()
        assert device.pid is not None
        assert device.pid != first_pid
        assert not _running(first_pid)
        assert device.cert_fingerprint == fingerprint
        assert (tmp_path / "device" / FLASH_FILE).read_bytes() == flash
        assert (device.log_tail() or "").count("listening") == 2
    finally:
        last_pid = device.pid
        await device.close()
    assert last_pid is not None
    assert not _running(last_pid)
    assert device.pid is None


async def test_a_process_that_exits_fails_the_start_with_its_log(
    session: aiohttp.ClientSession,
    stand_in: Path,
    partition_table: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start fails at once, naming the exit status and showing the log's end."""
    monkeypatch.setenv("STAND_IN_MODE", "exit")
    device = HostDevice(
        DeviceOptions(), session, tmp_path / "d", program=stand_in, partition_table=partition_table
    )
    started = time.monotonic()
    with pytest.raises(DeviceFailureError, match="exited with status 3") as failure:
        await device.start()
    assert time.monotonic() - started < 10
    assert "giving up" in str(failure.value)
    assert device.pid is None


async def test_a_cancelled_start_leaves_no_process(
    session: aiohttp.ClientSession,
    stand_in: Path,
    partition_table: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that never answers, its start cancelled (Ctrl-C, a test timeout): killed."""
    monkeypatch.setenv("STAND_IN_MODE", "silent")
    device = HostDevice(
        DeviceOptions(), session, tmp_path / "d", program=stand_in, partition_table=partition_table
    )
    starting = asyncio.create_task(device.start())
    pid = None
    async with asyncio.timeout(10):
        while pid is None:
            await asyncio.sleep(0.05)
            pid = device.pid
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    assert not _running(pid)
    assert device.pid is None


# --- the fault proxy ------------------------------------------------------------------


class _Upstream:
    """A TCP server answering a line "<n>" with n bytes, then closing."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        self.server.close_clients()
        await self.server.wait_closed()

    @staticmethod
    async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            count = int(await reader.readline())
            writer.write(bytes(range(256)) * (count // 256) + bytes(count % 256))
            await writer.drain()
        writer.close()


async def _fetch(port: int, count: int, *, read_for: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{count}\n".encode())
    received = bytearray()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(read_for):
            while data := await reader.read(65536):
                received += data
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return bytes(received)


async def test_proxy_passes_through_and_cuts(socket_enabled: None) -> None:
    """Unchanged bytes; a per-connection cut delivers exactly N bytes, then the end."""
    async with _Upstream() as upstream:
        proxy = FaultProxy("127.0.0.1", upstream)
        await proxy.start()
        try:
            proxy.set_rule(2, Rule(cut_after=10_000))
            whole = await _fetch(proxy.port, 100_000)
            cut = await _fetch(proxy.port, 100_000)
            again = await _fetch(proxy.port, 100_000)
        finally:
            await proxy.close()
    assert len(whole) == 100_000
    assert again == whole
    assert cut == whole[:10_000]
    stats = proxy.connections
    assert [(s.number, s.cut, s.to_device) for s in stats] == [
        (1, False, 100_000),
        (2, True, 10_000),
        (3, False, 100_000),
    ]
    assert all(s.to_server == len("100000\n") for s in stats)


async def test_proxy_one_shot_cut_waits_for_a_connection_that_long(
    socket_enabled: None,
) -> None:
    """A short connection (a HEAD, a size probe) does not use up the one-shot cut."""
    async with _Upstream() as upstream:
        proxy = FaultProxy("127.0.0.1", upstream)
        await proxy.start()
        try:
            proxy.cut_once_after(20_000)
            probe = await _fetch(proxy.port, 1_000)
            assert proxy.cut_once_pending
            cut = await _fetch(proxy.port, 50_000)
            whole = await _fetch(proxy.port, 50_000)
        finally:
            await proxy.close()
    assert (len(probe), len(cut), len(whole)) == (1_000, 20_000, 50_000)
    assert not proxy.cut_once_pending


async def test_proxy_throttles_and_stalls(socket_enabled: None) -> None:
    """A throttled connection takes its time (after its fast start); a stalled one
    delivers its first bytes, then nothing, until the client hangs up."""
    async with _Upstream() as upstream:
        proxy = FaultProxy("127.0.0.1", upstream)
        await proxy.start()
        try:
            proxy.set_rule(1, Rule(bytes_per_s=100_000, slow_after=10_000))
            proxy.set_rule(2, Rule(stall_after=4_000))
            started = time.monotonic()
            slow = await _fetch(proxy.port, 40_000)
            took = time.monotonic() - started
            stalled = await _fetch(proxy.port, 40_000, read_for=0.5)
            async with asyncio.timeout(5):
                while not proxy.connections[1].closed:  # noqa: ASYNC110 - a plain flag
                    await asyncio.sleep(0.01)
        finally:
            await proxy.close()
    assert len(slow) == 40_000
    assert 0.25 <= took < 2.0, took  # 30_000 throttled bytes at 100 kB/s
    assert len(stalled) == 4_000
    assert proxy.connections[1].stalled
