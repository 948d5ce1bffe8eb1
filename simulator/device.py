"""One simulated ESP32: flash, eFuse, bootloader, the running firmware and its OTA task.

The firmware behaves like ESP-IDF's advanced_https_ota example built with
CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (and anti-rollback): an update is pulled with
esp_https_ota, the device restarts by itself after a successful one and comes back running
the new image in PENDING_VERIFY; it stays there until confirm() (or, with auto_confirm, until
it has booted), and a reboot before that rolls it back in the bootloader.

Everything is asyncio and nothing blocks the loop; the HTTP API (simulator/api.py) is a thin
layer over the public methods here. While the device reboots it is offline: it asks the
attached network (attach_network) to close its listening socket for reboot_time_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol

from yarl import URL

from custom_components.esp_ota.espota.chips import CHIP_IDS, normalize_chip_name
from custom_components.esp_ota.espota.image import DESCRIPTOR_READ_SIZE, AppDescriptor

from .bootloader import Bootloader, BootResult, NoBootableAppError
from .esp_err import (
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_SIZE,
    ESP_ERR_INVALID_STATE,
    ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
    ESP_FAIL,
    EspError,
)
from .faults import FaultPlan
from .flash import Flash
from .https_ota import OtaConfig, RunningApp, pinned_ssl_context, run_firmware_ota
from .model import (
    DeviceInfo,
    DeviceRefusedError,
    ImageState,
    OtaEvent,
    OtaEventType,
    OtaRequest,
    OtaState,
    OtaStatus,
)
from .ota_ops import EFuse, OtaOps, PowerLossError
from .otadata import OtaImgState
from .pace import DEFAULT_REBOOT_TIME_S, Pace, Timing
from .partitions import Partition, PartitionScheme, PartitionTable
from .persistence import DeviceState, DeviceStore

_LOGGER = logging.getLogger(__name__)

API_VERSION: Final = 1
EVENT_RING_SIZE: Final = 1024  # events kept for Last-Event-ID resumption
SUBSCRIBER_QUEUE_SIZE: Final = 2048  # a subscriber that falls this far behind loses the oldest
# The firmware forwards esp_https_ota's WRITE_FLASH (one per buffer written, 1024 for a
# 4 MiB image) at most this often, and always the one that completes the image: the
# event ring then holds a whole job, and neither the device nor Home Assistant spends
# its CPU on thousands of progress messages per download.
PROGRESS_EVENT_INTERVAL_S: Final = 0.25
BOOT_LOOP_LIMIT: Final = 8  # consecutive panics after which the simulation stops retrying

# esp_reset_reason_t names.
ESP_RST_POWERON: Final = "ESP_RST_POWERON"
ESP_RST_SW: Final = "ESP_RST_SW"
ESP_RST_PANIC: Final = "ESP_RST_PANIC"

_IN_PROGRESS: Final = frozenset(
    {OtaState.CONNECTING, OtaState.DOWNLOADING, OtaState.VERIFYING, OtaState.REBOOTING}
)
_ABORTABLE: Final = frozenset({OtaState.CONNECTING, OtaState.DOWNLOADING})
_IMAGE_STATES: Final = {
    OtaImgState.NEW: ImageState.NEW,
    OtaImgState.PENDING_VERIFY: ImageState.PENDING_VERIFY,
    OtaImgState.VALID: ImageState.VALID,
    OtaImgState.INVALID: ImageState.INVALID,
    OtaImgState.ABORTED: ImageState.ABORTED,
    OtaImgState.UNDEFINED: ImageState.UNDEFINED,
}


class DeviceNetwork(Protocol):
    """The device's network presence (its HTTP API server)."""

    async def go_offline(self) -> None:
        """Stop answering: the device is rebooting."""

    async def go_online(self) -> None:
        """Answer again: the device has booted."""


@dataclass(frozen=True, slots=True)
class FactoryFirmware:
    """Parameters for building the factory image when no image bytes are given."""

    project: str = "esp-ota-demo"
    version: str = "1.0.0"
    secure_version: int = 0
    size: int = 256 * 1024
    idf_ver: str = "v5.5.1"
    min_chip_rev_full: int = 0
    max_chip_rev_full: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """How one simulated device is built. Only `mac` is required."""

    mac: str
    chip: str = "esp32"
    chip_revision: int = 301  # major * 100 + minor (v3.1)
    secret: str = ""  # the device's API secret (the HTTP API checks it)
    factory_image: bytes | None = None  # flashed into ota_0 at first power-on
    factory: FactoryFirmware = field(default_factory=FactoryFirmware)  # if no factory_image
    pace: Pace = Pace.UNTHROTTLED
    reboot_time_s: float | None = None  # None: DEFAULT_REBOOT_TIME_S if realistic, else 0
    state_dir: Path | None = None
    ota: OtaConfig = field(default_factory=OtaConfig)
    anti_rollback: bool = True  # CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    auto_confirm: bool = False  # confirm the new image as soon as it has booted
    efuse_secure_version: int = 0  # the eFuse value of a brand-new chip
    # The partition table, and with it the flash size.
    partition_table: PartitionScheme = PartitionScheme.ADVANCED_HTTPS_OTA
    faults: FaultPlan = field(default_factory=FaultPlan, compare=False, hash=False)
    # 0: every WRITE_FLASH becomes an event.
    progress_event_interval_s: float = PROGRESS_EVENT_INTERVAL_S


@lru_cache(maxsize=32)
def _built_factory_image(chip: str, firmware: FactoryFirmware) -> bytes:
    # Only needed when no factory image bytes are given.
    from custom_components.esp_ota.espota.image_builder import (  # noqa: PLC0415
        build_app_image,
    )

    return build_app_image(
        project=firmware.project,
        version=firmware.version,
        chip=chip,
        min_chip_rev_full=firmware.min_chip_rev_full,
        max_chip_rev_full=firmware.max_chip_rev_full,
        secure_version=firmware.secure_version,
        size=firmware.size,
        idf_ver=firmware.idf_ver,
    )


def validate_request(request: OtaRequest, slot_size: int) -> None:
    """Refuse a request the firmware cannot act on (EspError with the reason)."""
    try:
        url = URL(request.url)
        host = url.host  # yarl checks the authority (port, brackets) when it is read
    except ValueError:
        host = None
    if not host or url.scheme != "https":
        raise EspError(ESP_ERR_INVALID_ARG, f"url must be an https:// URL, got {request.url!r}")
    digest = request.sha256.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise EspError(ESP_ERR_INVALID_ARG, "sha256 must be 64 hex digits")
    if request.size < DESCRIPTOR_READ_SIZE:
        raise EspError(
            ESP_ERR_INVALID_ARG,
            f"size {request.size} is below {DESCRIPTOR_READ_SIZE} bytes, the least "
            "esp_https_ota reads before anything else",
        )
    if request.size > slot_size:
        raise EspError(
            ESP_ERR_INVALID_SIZE,
            f"the image ({request.size} bytes) does not fit the OTA slot ({slot_size} bytes)",
        )
    if not request.version or len(request.version.encode()) > 31:
        raise EspError(ESP_ERR_INVALID_ARG, "version must be 1..31 bytes (esp_app_desc_t)")
    if not request.cert_pem.strip():
        raise EspError(ESP_ERR_INVALID_ARG, "cert_pem is required (the device pins it)")
    pinned_ssl_context(request.cert_pem)
    for name, value in request.headers.items():
        if not name or any(c in name + value for c in "\r\n"):
            raise EspError(ESP_ERR_INVALID_ARG, f"bad header {name!r}")


class SimulatedDevice:
    """A simulated ESP32 running an advanced_https_ota-style firmware.

    Call `await start()` (power-on) before use and `await close()` at the end.
    """

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.chip = normalize_chip_name(config.chip)
        self.chip_id = CHIP_IDS[self.chip]
        scheme = PartitionScheme(config.partition_table)  # ValueError for an unknown name
        self.table: PartitionTable = scheme.table
        self.flash = Flash(scheme.flash_size)
        self.efuse = EFuse(secure_version=config.efuse_secure_version)
        if self.chip != "esp32":
            # CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD is 16 bits on the newer chips.
            self.efuse.secure_version_bits = 16
        self.timing = Timing(config.pace)
        if config.reboot_time_s is not None:
            self.reboot_time_s = config.reboot_time_s
        else:
            self.reboot_time_s = DEFAULT_REBOOT_TIME_S if self.timing.realistic else 0.0
        self.bootloader = Bootloader(
            flash=self.flash,
            table=self.table,
            efuse=self.efuse,
            chip_id=self.chip_id,
            chip_revision=config.chip_revision,
            anti_rollback=config.anti_rollback,
        )
        self._store = (
            DeviceStore(config.state_dir, config.mac) if config.state_dir is not None else None
        )
        self._ops: OtaOps | None = None
        self._running_app: AppDescriptor | None = None
        self._online = False
        self._started = False
        self._flash_ready = False  # restored or flashed: worth saving from now on
        self._closed = False
        self._booted_at = time.monotonic()
        self.reset_reason = ESP_RST_POWERON
        self.boot_count = 0
        self.boot_loop = False  # panicking on every boot; the simulation stopped retrying
        self.last_boot: BootResult | None = None
        self._net: DeviceNetwork | None = None
        self._nvs: dict[str, Any] = {}
        self._status = OtaStatus(OtaState.IDLE, None, None, 0, None, None, None)
        self._job_task: asyncio.Task[None] | None = None
        self._abort_requested = False
        self._restart_task: asyncio.Task[None] | None = None
        self._dying = False  # RAM is going away: events of a dying job are never sent
        self._next_event_id = 1
        self._events: deque[OtaEvent] = deque(maxlen=EVENT_RING_SIZE)
        self._subscribers: set[asyncio.Queue[OtaEvent]] = set()
        self._online_changed = asyncio.Event()
        self._save_task: asyncio.Task[None] | None = None
        self._save_again = False

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Power on: restore saved state (or flash the factory image) and boot."""
        if self._started:
            return
        self._started = True
        state = await self._store.load() if self._store is not None else None
        if state is not None:
            if state.flash_size != self.flash.size:
                raise ValueError(
                    f"{self.config.mac}: the saved state is of a {state.flash_size} byte flash, "
                    f"this device has {self.flash.size} (another partition table?)"
                )
            self.flash.restore(state.sectors)
            self.efuse.secure_version = state.efuse_secure_version
            self._nvs = dict(state.nvs)
            self._next_event_id = int(self._nvs.get("next_event_id", 1))
        else:
            await self._flash_factory_image()
        self._flash_ready = True
        await self._boot_sequence(ESP_RST_POWERON, first_power_on=True)

    async def _flash_factory_image(self) -> None:
        image = self.config.factory_image
        if image is None:
            image = await asyncio.to_thread(_built_factory_image, self.chip, self.config.factory)
        slot = self.table.ota_apps[0]
        if len(image) > slot.size:
            raise ValueError(f"factory image ({len(image)} bytes) does not fit {slot.label}")
        # What `idf.py flash` does: the app into ota_0, otadata erased.
        self.flash.erase_range(slot.offset, slot.size)
        self.flash.write(slot.offset, image)
        self.flash.erase_range(self.table.otadata.offset, self.table.otadata.size)
        self.flash.freeze()

    async def close(self) -> None:
        """Stop every background task and save the state."""
        if self._closed:
            return
        self._closed = True
        self._dying = True
        for task in (self._job_task, self._restart_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._online = False
        if self._save_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._save_task
        await self._save_now()

    def attach_network(self, net: DeviceNetwork) -> None:
        """The object whose go_offline()/go_online() the device calls around a reboot."""
        self._net = net

    @property
    def online(self) -> bool:
        """True while the firmware runs and the device answers on the network."""
        return self._online

    async def wait_online(self, within_s: float | None = None) -> None:
        """Wait until the device is online (tests, fleet runner); TimeoutError after
        `within_s` seconds."""
        async with asyncio.timeout(within_s):
            while not self._online:
                self._online_changed.clear()
                await self._online_changed.wait()

    def _set_online(self, online: bool) -> None:
        self._online = online
        self._online_changed.set()

    # --- boot -----------------------------------------------------------------------------

    async def _boot_sequence(self, reason: str, *, first_power_on: bool = False) -> None:
        """Bootloader, app start (or panic and again), then online (unless the
        never_come_back fault holds it back after a reboot)."""
        self._dying = False
        panics = 0
        while True:
            self.reset_reason = reason
            self.boot_count += 1
            try:
                boot = self.bootloader.boot()
            except NoBootableAppError as err:
                _LOGGER.warning("%s: no bootable app: %s", self.config.mac, err)
                self.boot_loop = True
                self._request_save()
                return
            self.last_boot = boot
            app = boot.image.app
            crash = app.version in self.faults.crash_versions
            if self.faults.crash_on_next_boot and boot.first_boot_of_new_image:
                self.faults.crash_on_next_boot = False
                crash = True
            if not crash:
                break
            _LOGGER.info("%s: %s %s panics at boot", self.config.mac, app.project_name, app.version)
            panics += 1
            if panics >= BOOT_LOOP_LIMIT:
                self.boot_loop = True
                self._request_save()
                return
            reason = ESP_RST_PANIC
            await self._sleep(self.reboot_time_s)
        self.boot_loop = False
        self._running_app = boot.image.app
        self._ops = OtaOps(
            flash=self.flash,
            table=self.table,
            efuse=self.efuse,
            chip_id=self.chip_id,
            chip_revision=self.config.chip_revision,
            timing=self.timing,
            running=boot.partition,
            anti_rollback=self.config.anti_rollback,
        )
        self._booted_at = time.monotonic()
        self._events.clear()  # RAM: the event ring does not survive a reset
        self._status = self._status_after_reset(reason)
        if self.config.auto_confirm and self._ops.state_of(boot.partition) is (
            OtaImgState.PENDING_VERIFY
        ):
            with contextlib.suppress(EspError):
                self._ops.mark_app_valid_cancel_rollback()
        self._request_save()
        if self.faults.never_come_back and not first_power_on:
            _LOGGER.info("%s: booted but never comes back online (fault)", self.config.mac)
            return
        # Listening first, then "online": whoever waits for online can connect at once.
        if self._net is not None:
            await self._net.go_online()
        self._set_online(True)

    def _status_after_reset(self, reason: str) -> OtaStatus:
        """The firmware reads its last OTA record from NVS at start."""
        record = self._nvs.get("last_ota")
        if not isinstance(record, dict):
            return OtaStatus(OtaState.IDLE, None, None, 0, None, None, None)
        status = OtaStatus(
            state=OtaState(record["state"]),
            ota_id=record.get("ota_id"),
            target_version=record.get("target_version"),
            bytes_written=int(record.get("bytes_written", 0)),
            image_size=record.get("image_size"),
            error=record.get("error"),
            message=record.get("message"),
        )
        if status.state is OtaState.REBOOTING:
            status = replace(status, state=OtaState.SUCCEEDED)
        elif status.state in _IN_PROGRESS:
            status = replace(
                status,
                state=OtaState.FAILED,
                error=ESP_FAIL,
                message=f"the OTA was interrupted by a reset ({reason})",
            )
        self._store_status(status)
        return status

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _schedule_restart(
        self, reason: str, *, ota_id: str | None = None, event: bool = True
    ) -> None:
        """esp_restart() (or a power cut): offline now, back after reboot_time_s."""
        if self._restart_task is not None and not self._restart_task.done():
            return
        if event:
            self._emit(OtaEventType.REBOOT, ota_id=ota_id)
        self._set_online(False)
        self._dying = True
        self._restart_task = asyncio.create_task(
            self._restart(reason), name=f"esp-ota-sim restart {self.config.mac}"
        )

    async def _restart(self, reason: str) -> None:
        current = asyncio.current_task()
        job = self._job_task
        if job is not None and job is not current and not job.done():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        self._job_task = None
        if self._net is not None:
            await self._net.go_offline()
        self._request_save()
        await self._sleep(self.reboot_time_s)
        await self._boot_sequence(reason)

    async def reboot(self) -> None:
        """esp_restart(): the device goes offline now and boots again (ESP_RST_SW)."""
        self._require_online()
        self._schedule_restart(ESP_RST_SW)

    async def power_cycle(self) -> None:
        """Unplug and plug back in (ESP_RST_POWERON); works even on a device that is stuck
        offline (boot loop, never_come_back, bricked) once its faults are cleared."""
        if self._restart_task is not None and not self._restart_task.done():
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart_task
        self._restart_task = None
        self._schedule_restart(ESP_RST_POWERON, event=False)

    async def wait_idle(self, within_s: float | None = None) -> None:
        """Wait until no OTA job and no restart is running (tests, fleet runner);
        TimeoutError after `within_s` seconds."""
        async with asyncio.timeout(within_s):
            while True:
                tasks = [t for t in (self._job_task, self._restart_task) if t and not t.done()]
                if not tasks:
                    return
                await asyncio.wait(tasks)

    # --- identity and state ------------------------------------------------------------------

    def _require_online(self) -> None:
        if not self._online:
            raise DeviceRefusedError(ESP_ERR_INVALID_STATE, "the device is offline")

    @property
    def ops(self) -> OtaOps:
        """esp_ota_ops of the running firmware."""
        if self._ops is None:
            raise DeviceRefusedError(ESP_ERR_INVALID_STATE, "the device has not booted")
        return self._ops

    @property
    def running_app(self) -> AppDescriptor:
        """esp_app_get_description() of the running firmware."""
        if self._running_app is None:
            raise DeviceRefusedError(ESP_ERR_INVALID_STATE, "the device has not booted")
        return self._running_app

    @property
    def running_partition(self) -> Partition:
        """esp_ota_get_running_partition()."""
        return self.ops.running

    @property
    def uptime_s(self) -> float:
        """Seconds since the running firmware started."""
        return time.monotonic() - self._booted_at

    def image_state(self) -> ImageState:
        """The running partition's otadata state (UNDEFINED when otadata has none)."""
        state = self.ops.state_of(self.ops.running)
        if isinstance(state, OtaImgState):
            return _IMAGE_STATES[state]
        return ImageState.UNDEFINED

    def info(self) -> DeviceInfo:
        """GET /api/v1/info."""
        app = self.running_app
        ops = self.ops
        last_invalid = ops.last_invalid_partition()
        return DeviceInfo(
            api=API_VERSION,
            mac=self.config.mac,
            chip=self.chip,
            chip_revision=self.config.chip_revision,
            project=app.project_name,
            version=app.version,
            idf_ver=app.idf_ver,
            app_elf_sha256=app.app_elf_sha256,
            secure_version=app.secure_version,
            running_partition=ops.running.label,
            boot_partition=ops.boot_partition().label,
            image_state=self.image_state(),
            last_invalid_partition=last_invalid.label if last_invalid else None,
            last_ota=self.ota_status(),
            reset_reason=self.reset_reason,
            uptime_s=round(self.uptime_s, 3),
        )

    def ota_status(self) -> OtaStatus:
        """GET /api/v1/ota: the current or last OTA job."""
        return self._status

    # --- confirm / rollback --------------------------------------------------------------------

    def confirm(self) -> None:
        """esp_ota_mark_app_valid_cancel_rollback(): the running image is VALID from now on
        (and its secure_version is burnt into the eFuse)."""
        self._require_online()
        if self.faults.unhealthy and self.image_state() is ImageState.PENDING_VERIFY:
            # The firmware's health check (esp_ota_agent_config_t.health_check) said no.
            raise DeviceRefusedError(ESP_FAIL, "the firmware's health check failed: ESP_FAIL")
        try:
            self.ops.mark_app_valid_cancel_rollback()
        except EspError as err:
            raise DeviceRefusedError(err.name, err.message) from err
        self._request_save()

    async def rollback(self) -> None:
        """esp_ota_mark_app_invalid_rollback_and_reboot(): the running image becomes
        INVALID and the device reboots into the other slot."""
        self._require_online()
        try:
            self.ops.mark_app_invalid_rollback()
        except EspError as err:
            raise DeviceRefusedError(err.name, err.message) from err
        self._schedule_restart(ESP_RST_SW)

    # --- OTA jobs --------------------------------------------------------------------------

    async def start_ota(self, request: OtaRequest) -> str:
        """Start pulling an image; returns the job's ota_id at once."""
        self._require_online()
        if self._status.state in _IN_PROGRESS:
            raise DeviceRefusedError(
                ESP_ERR_INVALID_STATE, f"OTA {self._status.ota_id} is in progress"
            )
        try:
            validate_request(request, self.ops.next_update_partition().size)
        except EspError as err:
            raise DeviceRefusedError(err.name, err.message) from err
        if self.image_state() is ImageState.PENDING_VERIFY:
            raise DeviceRefusedError(
                ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
                "Running app has not confirmed state (ESP_OTA_IMG_PENDING_VERIFY): "
                "confirm or roll back first",
            )
        ota_id = uuid.uuid4().hex[:12]
        self._abort_requested = False
        self._set_status(
            OtaStatus(OtaState.CONNECTING, ota_id, request.version, 0, request.size, None, None)
        )
        self._job_task = asyncio.create_task(
            self._run_job(ota_id, request), name=f"esp-ota-sim ota {self.config.mac} {ota_id}"
        )
        return ota_id

    async def abort_ota(self) -> None:
        """esp_https_ota_abort(): stop the running download; boot partition unchanged."""
        self._require_online()
        task = self._job_task
        if task is None or task.done() or self._status.state not in _ABORTABLE:
            raise DeviceRefusedError(
                ESP_ERR_INVALID_STATE,
                f"no OTA download to abort (state {self._status.state.value})",
            )
        self._abort_requested = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run_job(self, ota_id: str, request: OtaRequest) -> None:
        ops = self.ops
        ops.power_loss_at_byte = self.faults.power_loss_at_byte
        listener = _JobListener(self, ota_id)
        app = self.running_app
        running = RunningApp(
            project=app.project_name,
            version=app.version,
            secure_version_efuse=self.efuse.secure_version,
            anti_rollback=self.config.anti_rollback,
        )
        try:
            await run_firmware_ota(
                ota_ops=ops,
                config=self.config.ota,
                request=request,
                running=running,
                timing=self.timing,
                faults=self.faults,
                listener=listener,
            )
        except PowerLossError:
            self.faults.power_loss_at_byte = None
            _LOGGER.info("%s: power lost during OTA %s", self.config.mac, ota_id)
            self._job_task = None
            self._schedule_restart(ESP_RST_POWERON, event=False)
            return
        except EspError as err:
            self._set_status(
                replace(self._status, state=OtaState.FAILED, error=err.name, message=err.message)
            )
            return
        except asyncio.CancelledError:
            if self._abort_requested and not self._dying:
                self._set_status(
                    replace(
                        self._status,
                        state=OtaState.ABORTED,
                        error=None,
                        message="aborted on request",
                    )
                )
            raise
        finally:
            ops.power_loss_at_byte = None
        self._set_status(replace(self._status, state=OtaState.REBOOTING))
        self._emit(OtaEventType.REBOOT, ota_id=ota_id)
        await self.timing.restart_delay()
        self._job_task = None
        self._schedule_restart(ESP_RST_SW, ota_id=ota_id, event=False)

    # --- status, NVS, persistence ----------------------------------------------------------

    def _set_status(self, status: OtaStatus) -> None:
        self._status = status
        self._store_status(status)

    def _store_status(self, status: OtaStatus) -> None:
        self._nvs["last_ota"] = {
            "state": status.state.value,
            "ota_id": status.ota_id,
            "target_version": status.target_version,
            "bytes_written": status.bytes_written,
            "image_size": status.image_size,
            "error": status.error,
            "message": status.message,
        }
        if status.state is not OtaState.DOWNLOADING:
            self._request_save()

    def _request_save(self) -> None:
        if self._store is None or self._closed:
            return
        if self._save_task is not None and not self._save_task.done():
            self._save_again = True
            return
        self._save_task = asyncio.create_task(
            self._save_loop(), name=f"esp-ota-sim save {self.config.mac}"
        )

    async def _save_loop(self) -> None:
        while True:
            self._save_again = False
            await self._save_now()
            if not self._save_again:
                return

    async def _save_now(self) -> None:
        if self._store is None or not self._flash_ready:
            return
        self._nvs["next_event_id"] = self._next_event_id
        state = DeviceState(
            flash_size=self.flash.size,
            sectors=self.flash.snapshot(),
            efuse_secure_version=self.efuse.secure_version,
            nvs=dict(self._nvs),
        )
        await self._store.save(state)

    # --- events ----------------------------------------------------------------------------

    def _emit(self, event_type: OtaEventType, **fields: Any) -> None:
        event = OtaEvent(id=self._next_event_id, type=event_type, **fields)
        self._next_event_id += 1
        self._events.append(event)
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[OtaEvent]:
        """A queue that receives every event from now on (bounded: a subscriber that falls
        behind loses the oldest ones; ids show the gap)."""
        queue: asyncio.Queue[OtaEvent] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[OtaEvent]) -> None:
        """Stop delivering events to `queue`."""
        self._subscribers.discard(queue)

    def events_since(self, last_event_id: int) -> list[OtaEvent]:
        """Events after `last_event_id` still in the ring (for SSE Last-Event-ID).

        An id newer than any this device issued (a client of an earlier simulator run)
        gets everything the ring holds.
        """
        if last_event_id >= self._next_event_id:
            return list(self._events)
        return [event for event in self._events if event.id > last_event_id]


class _JobListener:
    """Turns the OTA task's callbacks into the device's events and status."""

    def __init__(self, device: SimulatedDevice, ota_id: str) -> None:
        self.device = device
        self.ota_id = ota_id
        self._last_progress_event: float | None = None  # time.monotonic() of the last one

    def on_event(
        self,
        event_type: OtaEventType,
        *,
        bytes_written: int | None = None,
        image_size: int | None = None,
        project: str | None = None,
        version: str | None = None,
        error: str | None = None,
    ) -> None:
        if self.device._dying:
            return
        if event_type is OtaEventType.WRITE_FLASH and bytes_written != image_size:
            now = time.monotonic()
            interval = self.device.config.progress_event_interval_s
            if self._last_progress_event is not None and now - self._last_progress_event < interval:
                return
            self._last_progress_event = now
        self.device._emit(
            event_type,
            ota_id=self.ota_id,
            bytes_written=bytes_written,
            image_size=image_size,
            project=project,
            version=version,
            error=error,
        )

    def on_phase(self, state: OtaState) -> None:
        device = self.device
        if device._dying:
            return
        device._set_status(replace(device.ota_status(), state=state))

    def on_progress(self, bytes_written: int, image_size: int | None) -> None:
        device = self.device
        status = device.ota_status()
        device._status = replace(
            status,
            bytes_written=bytes_written,
            image_size=image_size if image_size is not None else status.image_size,
        )


__all__ = [
    "API_VERSION",
    "ESP_RST_PANIC",
    "ESP_RST_POWERON",
    "ESP_RST_SW",
    "DeviceConfig",
    "DeviceNetwork",
    "FactoryFirmware",
    "SimulatedDevice",
    "validate_request",
]
