"""The devices under test: the Python simulator and the C host device, behind one interface.

Tests see a `DeviceUnderTest`: where it listens, its secret and certificate fingerprint, a
pinned `DeviceClient`, `wait_online()`, `power_cycle()` and `close()`. Nothing in a test
knows which device it talks to; what differs (how the device is built, started, powered)
lives here.

- `SimulatorDevice`: `SimulatedDevice` + `DeviceApiServer` in the test's event loop,
  unthrottled, with a short reboot.
- `HostDevice`: build/firmware-host/esp_ota_device.elf (the esp_ota_agent component built
  for ESP-IDF's linux target) in its own process, with a flash file written as
  `idf.py flash` and NVS provisioning would (see provisioning.py). A restart
  (esp_restart) re-executes the program in the same process; killing it is a power cut.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

import aiohttp

from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import DeviceError
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import DeviceInfo
from simulator.api import DeviceApiServer
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.faults import FaultPlan
from simulator.fleet import hostname_for
from simulator.ota_task import OtaTaskConfig
from simulator.tls import make_device_certificate

from .provisioning import build_flash

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
HOST_BUILD: Final = REPO_ROOT / "build" / "firmware-host"
HOST_PROGRAM: Final = HOST_BUILD / "esp_ota_device.elf"
HOST_PARTITION_TABLE: Final = HOST_BUILD / "partition_table" / "partition-table.bin"
FLASH_FILE: Final = "flash.bin"
HOST_NOT_BUILT: Final = (
    "C host device not built: run script/build-firmware "
    "(needs ESP-IDF for linux: ../shared/bin/ensure-esp-idf)"
)
DEVICE_KINDS: Final = ("simulator", "c")

DEFAULT_PROJECT: Final = "esp-ota-demo"
FACTORY_VERSION: Final = "1.0.0"
IMAGE_SIZE: Final = 48 * 1024
IDF_VER: Final = "v5.5.1"
# How long a restart keeps a device off the network (both kinds).
REBOOT_DELAY_S: Final = 0.1
# Both devices give up a download that receives nothing for this long (the simulator's
# OtaTaskConfig.stall_abort_ms; the C host build's CONFIG_ESP_OTA_AGENT_STALL_TIMEOUT_MS in
# firmware/examples/esp_ota_device/sdkconfig.defaults.linux).
STALL_S: Final = 3.0
# Both devices send something on an open event stream at least this often (the
# simulator's DeviceConfig.event_heartbeat_s; the C host build's
# CONFIG_ESP_OTA_AGENT_KEEPALIVE_S in sdkconfig.defaults.linux): the protocol's 15 s,
# shortened so the suite sees several heartbeats in seconds.
HEARTBEAT_S: Final = 2.0
# From process start (or power-on) to the API answering a TLS handshake.
START_TIMEOUT_S: Final = 15.0
CLIENT_TIMEOUT_S: Final = 5.0
POLL_CLIENT_TIMEOUT_S: Final = 2.0
POLL_S: Final = 0.03
LOG_TAIL_LINES: Final = 80

_MAC_NUMBERS: Final = itertools.count(1)


def next_mac() -> str:
    """A MAC no other device of this test run has (Espressif's OUI)."""
    number = next(_MAC_NUMBERS)
    return f"24:0a:c4:{os.getpid() & 0xFF:02x}:{(number >> 8) & 0xFF:02x}:{number & 0xFF:02x}"


@dataclass(frozen=True, slots=True)
class DeviceOptions:
    """How a device under test is built."""

    chip: str = "esp32"
    chip_revision: int = 301  # major * 100 + minor
    project: str = DEFAULT_PROJECT  # of the factory image
    version: str = FACTORY_VERSION  # of the factory image
    secure_version: int = 0  # of the factory image
    anti_rollback: bool = True  # CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    crash_versions: frozenset[str] = frozenset()  # app versions that panic at boot
    secret: str | None = None  # None: a random one
    image_size: int = IMAGE_SIZE  # of the factory image
    idf_ver: str = IDF_VER  # of the factory image
    healthy: bool = True  # False: the firmware's health check refuses every confirm


def image_seed(*parts: object) -> int:
    """A deterministic payload seed, different for different firmware."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def factory_image_for(options: DeviceOptions) -> bytes:
    """The image flashed into ota_0 before the first power-on."""
    return build_app_image(
        project=options.project,
        version=options.version,
        chip=options.chip,
        secure_version=options.secure_version,
        size=options.image_size,
        idf_ver=options.idf_ver,
        seed=image_seed("factory", options.project, options.version, options.chip),
    )


class DeviceFailureError(AssertionError):
    """The device under test died, did not start, or did not answer in time."""


class DeviceUnderTest(ABC):
    """One device speaking docs/protocol.md on 127.0.0.1."""

    kind: ClassVar[str]
    host: Final = "127.0.0.1"

    def __init__(self, options: DeviceOptions, session: aiohttp.ClientSession) -> None:
        self.options = options
        self.session = session
        self.mac = next_mac()
        self.secret = options.secret if options.secret is not None else secrets.token_urlsafe(18)
        self.factory_image = factory_image_for(options)
        self.port = 0
        self.cert_fingerprint = ""
        self._client: DeviceClient | None = None
        self._poll_client: DeviceClient | None = None

    def __str__(self) -> str:
        return f"{self.kind} device {self.mac} on {self.host}:{self.port}"

    @property
    def client(self) -> DeviceClient:
        """A DeviceClient pinned to the device's certificate."""
        if self._client is None:
            raise RuntimeError(f"{self} is not started")
        return self._client

    @property
    def poll_client(self) -> DeviceClient:
        """The same, with a short timeout: for polling a device that may be rebooting."""
        if self._poll_client is None:
            raise RuntimeError(f"{self} is not started")
        return self._poll_client

    def new_client(
        self, session: aiohttp.ClientSession, timeout: float = CLIENT_TIMEOUT_S
    ) -> DeviceClient:
        """Another pinned client of this device, over `session`."""
        return DeviceClient(
            session,
            self.host,
            self.port,
            self.secret,
            cert_fingerprint=self.cert_fingerprint,
            timeout=timeout,
        )

    @abstractmethod
    async def start(self) -> None:
        """Power on a factory-fresh device and wait until it answers a TLS handshake."""

    @abstractmethod
    async def power_cycle(self) -> None:
        """Cut the power and restore it; returns once the device answers a TLS handshake."""

    @abstractmethod
    async def close(self) -> None:
        """Switch the device off for good (idempotent)."""

    @abstractmethod
    def check_alive(self) -> None:
        """Raise DeviceFailureError if the device cannot answer any more (process gone)."""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str | None:
        """The end of the device's own log, if it has one."""
        return None

    async def wait_online(self, within_s: float = 10.0) -> DeviceInfo:
        """Poll GET /api/v1/info until the device answers (e.g. after a reboot)."""
        last_error: Exception | None = None
        try:
            async with asyncio.timeout(within_s):
                while True:
                    self.check_alive()
                    try:
                        return await self.poll_client.info()
                    except DeviceError as err:
                        last_error = err
                    await asyncio.sleep(POLL_S)
        except TimeoutError:
            raise DeviceFailureError(
                f"{self} did not answer GET /api/v1/info within {within_s} s "
                f"(last error: {last_error})"
            ) from None

    async def _pin_certificate(self, within_s: float) -> None:
        """Trust on first use: a bare TLS handshake (no secret sent) until one succeeds."""
        probe = DeviceClient(self.session, self.host, self.port, "", timeout=POLL_CLIENT_TIMEOUT_S)
        deadline = time.monotonic() + within_s
        last_error: Exception | None = None
        while True:
            self.check_alive()
            try:
                fingerprint = await probe.fetch_certificate_fingerprint()
                break
            except DeviceError as err:
                last_error = err
            if time.monotonic() >= deadline:
                raise DeviceFailureError(
                    f"{self} did not answer a TLS handshake within {within_s} s "
                    f"(last error: {last_error})" + self._log_suffix()
                )
            await asyncio.sleep(0.05)
        if self.cert_fingerprint and fingerprint != self.cert_fingerprint:
            raise DeviceFailureError(
                f"{self} came back with another certificate: {fingerprint}, "
                f"pinned {self.cert_fingerprint}"
            )
        self.cert_fingerprint = fingerprint
        self._client = self.new_client(self.session)
        self._poll_client = self.new_client(self.session, POLL_CLIENT_TIMEOUT_S)

    def _log_suffix(self) -> str:
        tail = self.log_tail()
        return f"\n--- device log (last lines) ---\n{tail}" if tail else ""


class SimulatorDevice(DeviceUnderTest):
    """The Python simulator (simulator/), served in the test's event loop."""

    kind = "simulator"

    def __init__(self, options: DeviceOptions, session: aiohttp.ClientSession) -> None:
        super().__init__(options, session)
        self._device: SimulatedDevice | None = None
        self._server: DeviceApiServer | None = None

    async def start(self) -> None:
        options = self.options
        certificate = await asyncio.to_thread(
            make_device_certificate, self.mac, hostname_for(self.mac)
        )
        device = self._device = SimulatedDevice(
            DeviceConfig(
                mac=self.mac,
                chip=options.chip,
                chip_revision=options.chip_revision,
                secret=self.secret,
                factory_image=self.factory_image,
                reboot_time_s=REBOOT_DELAY_S,
                ota=OtaTaskConfig(stall_abort_ms=round(STALL_S * 1000)),
                event_heartbeat_s=HEARTBEAT_S,
                anti_rollback=options.anti_rollback,
                faults=FaultPlan(
                    crash_versions=set(options.crash_versions), unhealthy=not options.healthy
                ),
            )
        )
        server = self._server = DeviceApiServer(device, certificate)
        await device.start()  # boots, then the server listens
        self.port = server.port
        await self._pin_certificate(START_TIMEOUT_S)

    async def power_cycle(self) -> None:
        device = self._device
        if device is None:
            raise RuntimeError(f"{self} is not started")
        await device.power_cycle()
        try:
            await device.wait_online(START_TIMEOUT_S)
        except TimeoutError:
            raise DeviceFailureError(f"{self} did not come back after a power cycle") from None
        await self._pin_certificate(START_TIMEOUT_S)

    def check_alive(self) -> None:
        if self._device is None:
            raise DeviceFailureError(f"{self} is switched off")

    async def close(self) -> None:
        server, self._server = self._server, None
        device, self._device = self._device, None
        if server is not None:
            await server.close()
        if device is not None:
            await device.close()


# Processes still running when the interpreter exits (a crash of the test run, a second
# Ctrl-C during teardown) are killed then; each is also killed by the kernel when its
# parent dies (PR_SET_PDEATHSIG, kept across esp_restart's exec).
_LIVE_PIDS: Final[set[int]] = set()
_PR_SET_PDEATHSIG: Final = 1


def _kill_leftovers() -> None:
    for pid in list(_LIVE_PIDS):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _LIVE_PIDS.clear()


atexit.register(_kill_leftovers)


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class HostDevice(DeviceUnderTest):
    """The C device: esp_ota_agent built for ESP-IDF's linux target, one process."""

    kind = "c"

    def __init__(
        self,
        options: DeviceOptions,
        session: aiohttp.ClientSession,
        state_dir: Path,
        *,
        program: Path = HOST_PROGRAM,
        partition_table: Path = HOST_PARTITION_TABLE,
    ) -> None:
        super().__init__(options, session)
        self.state_dir = state_dir
        self.program = program
        self.partition_table = partition_table
        self.log_path = state_dir / "device.log"
        self._process: asyncio.subprocess.Process | None = None
        self._starts = 0

    def environment(self) -> dict[str, str]:
        """The process's environment: the parent's, minus ESP_OTA_LINUX_* it may carry,
        plus this device's configuration."""
        options = self.options
        env = {k: v for k, v in os.environ.items() if not k.startswith("ESP_OTA_LINUX_")}
        env.update(
            {
                "ESP_OTA_LINUX_STATE_DIR": str(self.state_dir),
                "ESP_OTA_LINUX_MAC": self.mac,
                "ESP_OTA_LINUX_CHIP": options.chip,
                "ESP_OTA_LINUX_CHIP_REVISION": str(options.chip_revision),
                "ESP_OTA_LINUX_CRASH_VERSIONS": ",".join(sorted(options.crash_versions)),
                "ESP_OTA_LINUX_ANTI_ROLLBACK": "1" if options.anti_rollback else "0",
                "ESP_OTA_LINUX_REBOOT_DELAY_MS": str(round(REBOOT_DELAY_S * 1000)),
            }
        )
        return env

    async def start(self) -> None:
        if not self.program.is_file() or not self.partition_table.is_file():
            raise DeviceFailureError(HOST_NOT_BUILT)
        await self.provision(self.partition_table.read_bytes())
        await self._power_on()

    async def provision(self, partition_table: bytes) -> None:
        """Write the fresh flash file (`idf.py flash` plus NVS provisioning), choosing the
        API port."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        flash = await asyncio.to_thread(
            build_flash,
            partition_table,
            secret=self.secret,
            port=self.port,
            factory_image=self.factory_image,
            healthy=self.options.healthy,
        )
        await asyncio.to_thread((self.state_dir / FLASH_FILE).write_bytes, flash)

    async def _power_on(self) -> None:
        self._starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== power-on {self._starts} ===\n".encode())
            log.flush()
            self._process = await asyncio.create_subprocess_exec(
                self.program,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.state_dir,
                preexec_fn=_die_with_parent,  # only prctl()
            )
        _LIVE_PIDS.add(self._process.pid)
        try:
            await self._pin_certificate(START_TIMEOUT_S)
        except BaseException:
            await self._kill()
            raise

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await asyncio.shield(asyncio.wait_for(process.wait(), 10.0))
        finally:
            _LIVE_PIDS.discard(process.pid)

    @property
    def pid(self) -> int | None:
        """The process's id while it runs."""
        return self._process.pid if self._process is not None else None

    def check_alive(self) -> None:
        process = self._process
        if process is None:
            raise DeviceFailureError(f"{self} is not running")
        if process.returncode is not None:
            raise DeviceFailureError(
                f"{self}: the process exited with status {process.returncode}" + self._log_suffix()
            )

    async def power_cycle(self) -> None:
        await self._kill()
        await self._power_on()

    async def close(self) -> None:
        await self._kill()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str | None:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        tail = "\n".join(text.splitlines()[-lines:])
        return f"({self.log_path})\n{tail}"


def create_device(
    kind: str, options: DeviceOptions, session: aiohttp.ClientSession, state_dir: Path
) -> DeviceUnderTest:
    """A device of `kind` ("simulator" or "c"), not started yet."""
    if kind == "simulator":
        return SimulatorDevice(options, session)
    if kind == "c":
        return HostDevice(options, session, state_dir)
    raise ValueError(f"unknown device kind {kind!r}")
