"""The firmware a simulated ESP32 runs: an advanced_https_ota-style app behind the device API.

Built with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (and anti-rollback): an update is pulled by
the OTA task (simulator/ota_task.py), the device restarts by itself after a successful one
and comes back running the new image in PENDING_VERIFY; it stays there until confirm() (or,
with auto_confirm, until it has booted), and a reboot before that rolls it back in the
bootloader. The app keeps its last OTA record in NVS and its events in a RAM ring (gone at
every reset). Everything is asyncio; the HTTP API (simulator/api.py) is a thin layer over
the public methods here. The board (simulator/board.py) starts and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from custom_components.esp_ota.espota.image import AppDescriptor
from custom_components.esp_ota.espota.protocol import (
    DeviceEvent,
    DeviceInfo,
    EventType,
    ImageState,
    OtaState,
    OtaStatus,
)

from .board import ESP_RST_POWERON, ESP_RST_SW, Board
from .bootloader import BootResult
from .esp_err import (
    ESP_ERR_INVALID_STATE,
    ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
    ESP_FAIL,
    EspError,
)
from .model import DeviceRefusedError, OtaRequest
from .ota_ops import OtaOps, PowerLossError
from .ota_task import RunningApp, run_firmware_ota, validate_request
from .otadata import OtaImgState
from .partitions import Partition

if TYPE_CHECKING:
    from .device_config import DeviceConfig

_LOGGER = logging.getLogger(__name__)

API_VERSION: Final = 1
EVENT_RING_SIZE: Final = 1024  # events kept for Last-Event-ID resumption
SUBSCRIBER_QUEUE_SIZE: Final = 2048  # a subscriber that falls this far behind loses the oldest
# What an event carries besides its id, type and ota_id (None where it does not apply).
_EVENT_DATA: Final = ("bytes_written", "image_size", "project", "version", "error")

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
_IDLE: Final = OtaStatus(OtaState.IDLE, None, None, 0, None, None, None)


class FirmwareApp:
    """The running firmware of one device: its API's state, its OTA task, its events."""

    def __init__(self, config: DeviceConfig, board: Board) -> None:
        self.config = config
        self.board = board
        self.faults = config.faults
        self._ops: OtaOps | None = None
        self._running_app: AppDescriptor | None = None
        self._status = _IDLE
        self._job_task: asyncio.Task[None] | None = None
        self._abort_requested = False
        self._dying = False  # RAM is going away: events of a dying job are never sent
        self._next_event_id = 1
        self._events: deque[DeviceEvent] = deque(maxlen=EVENT_RING_SIZE)
        self._subscribers: set[asyncio.Queue[DeviceEvent]] = set()

    # --- started and stopped by the board ----------------------------------------------------

    def start(self, boot: BootResult, reset_reason: str) -> None:
        """app_main: esp_ota_ops on the booted slot, the last OTA record from NVS, and with
        auto_confirm the new image confirmed at once."""
        self._dying = False
        self._running_app = boot.image.app
        self._ops = OtaOps(self.board.hardware, timing=self.board.timing, running=boot.partition)
        self._next_event_id = int(self.board.nvs.get("next_event_id", self._next_event_id))
        self._events.clear()  # RAM: the event ring does not survive a reset
        self._status = self._status_after_reset(reset_reason)
        if self.config.auto_confirm and self._ops.state_of(boot.partition) is (
            OtaImgState.PENDING_VERIFY
        ):
            with contextlib.suppress(EspError):
                self._ops.mark_app_valid_cancel_rollback()

    def halt(self) -> None:
        """The chip is going down: nothing of a dying job is reported any more."""
        self._dying = True

    async def stop(self) -> None:
        """The OTA task ends with the chip."""
        job = self._job_task
        if job is not None and job is not asyncio.current_task() and not job.done():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        self._job_task = None

    def esp_restart(self, reason: str, *, ota_id: str | None = None, event: bool = True) -> None:
        """esp_restart(), announced with a REBOOT event unless `event` is False; a restart
        already under way wins."""
        if event and not self.board.restarting:
            self.emit(EventType.REBOOT, ota_id=ota_id)
        self.board.restart(reason)

    async def wait_idle(self, within_s: float | None = None) -> None:
        """Wait until no OTA job and no restart is running (tests, fleet runner);
        TimeoutError after `within_s` seconds."""
        async with asyncio.timeout(within_s):
            while True:
                running = (self._job_task, self.board.restart_task)
                tasks = [task for task in running if task and not task.done()]
                if not tasks:
                    return
                await asyncio.wait(tasks)

    # --- identity and state ------------------------------------------------------------------

    def _require_online(self) -> None:
        if not self.board.online:
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
            chip=self.board.chip,
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
            reset_reason=self.board.reset_reason,
            uptime_s=round(self.board.uptime_s, 3),
        )

    def ota_status(self) -> OtaStatus:
        """GET /api/v1/ota: the current or last OTA job."""
        return self._status

    # --- confirm / rollback / reboot -----------------------------------------------------------

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
        self.board.request_save()

    async def rollback(self) -> None:
        """esp_ota_mark_app_invalid_rollback_and_reboot(): the running image becomes
        INVALID and the device reboots into the other slot."""
        self._require_online()
        try:
            self.ops.mark_app_invalid_rollback()
        except EspError as err:
            raise DeviceRefusedError(err.name, err.message) from err
        self.esp_restart(ESP_RST_SW)

    async def reboot(self) -> None:
        """esp_restart(): the device goes offline now and boots again (ESP_RST_SW)."""
        self._require_online()
        self.esp_restart(ESP_RST_SW)

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
            secure_version_efuse=self.board.efuse.secure_version,
            anti_rollback=self.config.anti_rollback,
        )
        try:
            await run_firmware_ota(
                ota_ops=ops,
                config=self.config.ota,
                request=request,
                running=running,
                timing=self.board.timing,
                faults=self.faults,
                listener=listener,
            )
        except PowerLossError:
            self.faults.power_loss_at_byte = None
            _LOGGER.info("%s: power lost during OTA %s", self.config.mac, ota_id)
            self._job_task = None
            self.board.restart(ESP_RST_POWERON)
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
        self.emit(EventType.REBOOT, ota_id=ota_id)
        await self.board.timing.restart_delay()
        self._job_task = None
        self.esp_restart(ESP_RST_SW, event=False)

    # --- status in NVS ---------------------------------------------------------------------

    def _set_status(self, status: OtaStatus) -> None:
        self._status = status
        self._store_status(status)

    def _store_status(self, status: OtaStatus) -> None:
        self.board.nvs["last_ota"] = {
            "state": status.state.value,
            "ota_id": status.ota_id,
            "target_version": status.target_version,
            "bytes_written": status.bytes_written,
            "image_size": status.image_size,
            "error": status.error,
            "message": status.message,
        }
        if status.state is not OtaState.DOWNLOADING:
            self.board.request_save()

    def _status_after_reset(self, reason: str) -> OtaStatus:
        """The firmware reads its last OTA record from NVS at start."""
        record = self.board.nvs.get("last_ota")
        if not isinstance(record, dict):
            return _IDLE
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

    # --- events ----------------------------------------------------------------------------

    def emit(self, event_type: EventType, *, ota_id: str | None, **data: Any) -> None:
        """Post an event to the ring and every subscriber; `data` holds what it carries
        (bytes_written, image_size, project, version, error)."""
        event = DeviceEvent(
            self._next_event_id, event_type, ota_id, **{**dict.fromkeys(_EVENT_DATA), **data}
        )
        self._next_event_id += 1
        # Kept in NVS: event ids never go back, across resets and simulator runs.
        self.board.nvs["next_event_id"] = self._next_event_id
        self._events.append(event)
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[DeviceEvent]:
        """A queue that receives every event from now on (bounded: a subscriber that falls
        behind loses the oldest ones; ids show the gap)."""
        queue: asyncio.Queue[DeviceEvent] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[DeviceEvent]) -> None:
        """Stop delivering events to `queue`."""
        self._subscribers.discard(queue)

    def events_since(self, last_event_id: int) -> list[DeviceEvent]:
        """Events after `last_event_id` still in the ring (for SSE Last-Event-ID).

        An id newer than any this device issued (a client of an earlier simulator run)
        gets everything the ring holds.
        """
        if last_event_id >= self._next_event_id:
            return list(self._events)
        return [event for event in self._events if event.id > last_event_id]


class _JobListener:
    """Turns the OTA task's callbacks into the app's events and status."""

    def __init__(self, app: FirmwareApp, ota_id: str) -> None:
        self.app = app
        self.ota_id = ota_id
        self._last_progress_event: float | None = None  # time.monotonic() of the last one

    def on_event(self, event_type: EventType, **data: int | str | None) -> None:
        if self.app._dying:
            return
        if event_type is EventType.WRITE_FLASH and data.get("bytes_written") != data.get(
            "image_size"
        ):
            now = time.monotonic()
            interval = self.app.config.progress_event_interval_s
            if self._last_progress_event is not None and now - self._last_progress_event < interval:
                return
            self._last_progress_event = now
        self.app.emit(event_type, ota_id=self.ota_id, **data)

    def on_phase(self, state: OtaState) -> None:
        app = self.app
        if app._dying:
            return
        app._set_status(replace(app.ota_status(), state=state))

    def on_progress(self, bytes_written: int, image_size: int | None) -> None:
        app = self.app
        # The plan may change mid-download (armed now by a test): the next write sees it.
        app.ops.power_loss_at_byte = app.faults.power_loss_at_byte
        status = app.ota_status()
        app._status = replace(
            status,
            bytes_written=bytes_written,
            image_size=image_size if image_size is not None else status.image_size,
        )
