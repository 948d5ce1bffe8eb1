"""One firmware update of one device, as a resumable state machine.

An UpdateJob drives a device through one update with a DeviceClient: the image source
prepares the image (PREPARING), the device is told to pull it (STARTING), its download is
followed by events and by polling (DOWNLOADING, VERIFYING), its reboot waited for
(REBOOTING), and the new image checked and confirmed (CONFIRMING). It always ends, within
JobTimeouts.total_s (and one last look at the device), in SUCCEEDED, FAILED (with a
FailureReason) or ROLLED_BACK.

Everything the job needs to go on after the process running it restarted is in its
UpdateJobRecord, which the caller stores whenever `on_change` is called. A job resumed from
a stored record asks the device where it is instead of starting again: the device never
receives a second start for the same job.

docs/architecture.md ("The update job") has the steps, timeouts and resume rules.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final, NamedTuple, NoReturn, Protocol

from .device_client import DeviceClient
from .errors import (
    DeviceBusyError,
    DeviceRefusedError,
    DeviceTimeoutError,
    DeviceUnauthorizedError,
    DeviceUnreachableError,
    EspOtaError,
    FirmwareIntegrityError,
    FirmwareMismatchError,
    ImageError,
)
from .protocol import DeviceEvent, DeviceInfo, EventType, ImageState, OtaState, OtaStatus

_LOGGER = logging.getLogger(__name__)

# The version of UpdateJobRecord.to_dict()'s layout.
RECORD_FORMAT: Final = 1
# A request gets at least this long (or start_s, if shorter) even when its wait's deadline
# has (nearly) passed: one last attempt, long enough for an ESP32's TLS handshake (1-3 s).
LAST_ATTEMPT_S: Final = 5.0
# on_change during a download: when the bytes moved by 1 % of the image, or at most once
# a second while they move.
PROGRESS_NOTIFY_FRACTION: Final = 0.01
PROGRESS_NOTIFY_S: Final = 1.0

_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_RUNNING: Final = frozenset({OtaState.CONNECTING, OtaState.DOWNLOADING, OtaState.VERIFYING})
_ABORTABLE: Final = frozenset({OtaState.CONNECTING, OtaState.DOWNLOADING})


class UpdateStep(StrEnum):
    """Where an update job is."""

    QUEUED = "queued"
    PREPARING = "preparing"
    STARTING = "starting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    REBOOTING = "rebooting"
    CONFIRMING = "confirming"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"

    @property
    def finished(self) -> bool:
        """True for the three ends: succeeded, failed, rolled back."""
        return self in _FINISHED


_FINISHED: Final = frozenset({UpdateStep.SUCCEEDED, UpdateStep.FAILED, UpdateStep.ROLLED_BACK})
_FOLLOWING: Final = frozenset({UpdateStep.DOWNLOADING, UpdateStep.VERIFYING})
_AFTER_DOWNLOAD: Final = frozenset(
    {UpdateStep.REBOOTING, UpdateStep.CONFIRMING, UpdateStep.SUCCEEDED}
)


class FailureReason(StrEnum):
    """Why a job ended FAILED (or ROLLED_BACK). Values are translation keys."""

    IMAGE_UNAVAILABLE = "image_unavailable"  # the image could not be prepared
    IMAGE_INVALID = "image_invalid"  # corrupt, wrong size or sha256
    IMAGE_MISMATCH = "image_mismatch"  # does not fit the device (or the release)
    DEVICE_BUSY = "device_busy"  # the device already runs another OTA
    DEVICE_REFUSED = "device_refused"  # the device refused (error name in record.error)
    DEVICE_UNREACHABLE = "device_unreachable"  # could not reach it while it should be there
    DOWNLOAD_FAILED = "download_failed"  # the device's OTA failed (ESP-IDF error name)
    STALLED = "stalled"  # no progress for stall_s: the device's OTA was aborted
    NOT_BACK = "not_back"  # not back within reboot_s after rebooting
    WRONG_FIRMWARE = "wrong_firmware"  # back, but not running what was sent
    CONFIRM_FAILED = "confirm_failed"  # confirm refused, or the image not valid after it
    ROLLED_BACK = "rolled_back"  # the bootloader went back to the old image
    TIMED_OUT = "timed_out"  # the whole job took longer than total_s
    INTERRUPTED = "interrupted"  # a resumed job the device shows no trace of


class UpdateJobRecordError(EspOtaError):
    """A stored update job record is not one: the message names the field and why."""


@dataclass
class UpdateJobRecord:
    """Everything an update job needs to go on after a restart (JSON via to_dict)."""

    job_id: str
    mac: str
    from_version: str
    to_version: str
    sha256: str  # of the image ("" until prepared)
    size: int  # of the image (0 until prepared)
    app_elf_sha256: str | None  # expected, from the image's descriptor (None: unknown)
    from_partition: str | None  # the running partition when the job started
    step: UpdateStep
    reason: FailureReason | None
    error: str | None  # ESP-IDF error name (or the client error's type) when failed
    message: str | None  # what happened, for people
    ota_id: str | None  # the device's id of the job, once it answered the start
    start_sent: bool  # set and stored before the start request goes out
    bytes_written: int  # never goes back
    created_at: float  # epoch seconds
    step_since: float  # epoch seconds
    download: dict[str, Any] | None  # the image source's own (re-arming a download)
    # The device's last_ota.ota_id before the start: a job found on the device after an
    # unanswered start is adopted only if it is not this one.
    ota_id_before: str | None = None
    # When the job left QUEUED (epoch seconds): total_s counts from here, so time spent
    # waiting in a queue of updates does not count.
    started_at: float | None = None

    @property
    def finished(self) -> bool:
        """True once the job has ended (succeeded, failed or rolled back)."""
        return self.step.finished

    @property
    def percentage(self) -> float | None:
        """Download progress 0..100 while downloading or verifying, 100 after that."""
        if self.step in _AFTER_DOWNLOAD:
            return 100.0
        if self.step not in _FOLLOWING or self.size <= 0:
            return None
        return min(100.0, self.bytes_written * 100.0 / self.size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy (from_dict reads it back equal)."""
        data: dict[str, Any] = {"format": RECORD_FORMAT}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, dict):
                value = _json_copy(value, item.name)
            data[item.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Any) -> UpdateJobRecord:
        """Read a record stored by to_dict; anything else is an UpdateJobRecordError."""
        if not isinstance(data, Mapping):
            raise UpdateJobRecordError("an update job record must be a JSON object")
        reader = _RecordReader(data)
        if data.get("format") != RECORD_FORMAT:
            raise UpdateJobRecordError(
                f"format: expected {RECORD_FORMAT}, got {data.get('format')!r}"
            )
        sha256 = reader.text("sha256")
        if sha256 and not _SHA256.match(sha256):
            raise UpdateJobRecordError("sha256: not 64 lowercase hex digits")
        elf = reader.optional_text("app_elf_sha256")
        if elf is not None and not _SHA256.match(elf):
            raise UpdateJobRecordError("app_elf_sha256: not 64 lowercase hex digits")
        download = data.get("download")
        if download is not None and not isinstance(download, dict):
            raise UpdateJobRecordError("download: must be an object or null")
        record = cls(
            job_id=reader.text("job_id", required=True),
            mac=reader.text("mac", required=True),
            from_version=reader.text("from_version"),
            to_version=reader.text("to_version", required=True),
            sha256=sha256,
            size=reader.count("size"),
            app_elf_sha256=elf,
            from_partition=reader.optional_text("from_partition"),
            step=reader.choice("step", UpdateStep),
            reason=reader.optional_choice("reason", FailureReason),
            error=reader.optional_text("error"),
            message=reader.optional_text("message"),
            ota_id=reader.optional_text("ota_id"),
            start_sent=reader.flag("start_sent"),
            bytes_written=reader.count("bytes_written"),
            created_at=reader.time("created_at"),
            step_since=reader.time("step_since"),
            download=_json_copy(download, "download") if download is not None else None,
            ota_id_before=reader.optional_text("ota_id_before"),
            started_at=reader.optional_time("started_at"),
        )
        _check_consistent(record)
        return record


class _RecordReader:
    """Typed access to a stored record's fields; anything else is UpdateJobRecordError."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def _get(self, name: str, kinds: tuple[type, ...], optional: bool) -> Any:
        if name not in self._data and not optional:
            raise UpdateJobRecordError(f"{name}: missing")
        value = self._data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise UpdateJobRecordError(f"{name}: of the wrong type ({type(value).__name__})")
        return value

    def text(self, name: str, *, required: bool = False) -> str:
        value: str = self._get(name, (str,), optional=False)
        if required and not value:
            raise UpdateJobRecordError(f"{name}: empty")
        return value

    def optional_text(self, name: str) -> str | None:
        value: str | None = self._get(name, (str,), optional=True)
        return value

    def count(self, name: str) -> int:
        value: int = self._get(name, (int,), optional=False)
        if value < 0:
            raise UpdateJobRecordError(f"{name}: negative")
        return value

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, (bool,), optional=False)
        return value

    def time(self, name: str) -> float:
        value = float(self._get(name, (int, float), optional=False))
        if not math.isfinite(value) or value < 0:
            raise UpdateJobRecordError(f"{name}: not a time")
        return value

    def optional_time(self, name: str) -> float | None:
        # Optional, and may be missing: records stored before the field existed.
        return None if self._data.get(name) is None else self.time(name)

    def choice[E: StrEnum](self, name: str, enum: type[E]) -> E:
        value = self.text(name)
        try:
            return enum(value)
        except ValueError as err:
            raise UpdateJobRecordError(f"{name}: unknown value {value!r}") from err

    def optional_choice[E: StrEnum](self, name: str, enum: type[E]) -> E | None:
        if self._data.get(name) is None:
            return None
        return self.choice(name, enum)


def _json_copy(value: Any, where: str) -> Any:
    """A deep copy of JSON data (objects with string keys, arrays, scalars)."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise UpdateJobRecordError(f"{where}: object keys must be strings")
        return {key: _json_copy(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item, f"{where}[]") for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise UpdateJobRecordError(f"{where}: {value} is not JSON")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise UpdateJobRecordError(f"{where}: {type(value).__name__} is not JSON")


def _check_consistent(record: UpdateJobRecord) -> None:
    """Refuse combinations a job never stores."""
    if record.step is UpdateStep.FAILED and record.reason is None:
        raise UpdateJobRecordError("reason: a failed job has one")
    if record.step is UpdateStep.ROLLED_BACK and record.reason is not FailureReason.ROLLED_BACK:
        raise UpdateJobRecordError("reason: a rolled back job has reason rolled_back")
    if not record.step.finished and record.reason is not None:
        raise UpdateJobRecordError(f"reason: a {record.step} job has none")
    if record.step is UpdateStep.SUCCEEDED and record.reason is not None:
        raise UpdateJobRecordError("reason: a succeeded job has none")
    if record.ota_id is not None and not record.start_sent:
        raise UpdateJobRecordError("ota_id: set although no start was sent")


def new_record(
    *,
    mac: str,
    from_version: str,
    to_version: str,
    from_partition: str | None,
    clock: Callable[[], float] = time.time,
) -> UpdateJobRecord:
    """A QUEUED job updating the device `mac` from `from_version` to `to_version`."""
    now = clock()
    return UpdateJobRecord(
        job_id=uuid.uuid4().hex,
        mac=mac,
        from_version=from_version,
        to_version=to_version,
        sha256="",
        size=0,
        app_elf_sha256=None,
        from_partition=from_partition,
        step=UpdateStep.QUEUED,
        reason=None,
        error=None,
        message=None,
        ota_id=None,
        start_sent=False,
        bytes_written=0,
        created_at=now,
        step_since=now,
        download=None,
    )


@dataclass(frozen=True)
class PreparedImage:
    """An image the device can pull: where, with which headers, pinned to which
    certificate, and what it must be."""

    url: str
    headers: Mapping[str, str]  # secret (a download token): never logged
    cert_pem: str
    sha256: str
    size: int
    version: str
    app_elf_sha256: str | None
    download: dict[str, Any] | None = field(default=None)  # stored in the record


class ImageSource(Protocol):
    """Where a job's image comes from (Home Assistant's firmware server, a test server)."""

    async def prepare(self) -> PreparedImage:
        """Make the image available to the device (download, check, grant access).

        Raises FirmwareIntegrityError or ImageError (the image is corrupt),
        FirmwareMismatchError (it does not fit), or another EspOtaError (unavailable).
        """
        ...

    def bytes_served(self) -> int | None:
        """How far the server has sent the image for this job; None if unknown."""
        ...


@dataclass(frozen=True)
class JobTimeouts:
    """Bounds of the job's waits, in seconds."""

    start_s: float = 30.0  # reaching the device to start
    stall_s: float = 60.0  # no progress during the download: abort
    reboot_s: float = 180.0  # from the reboot until the device answers again
    confirm_s: float = 30.0  # confirming and reading the result
    total_s: float = 3600.0  # the whole job, from record.started_at (leaving QUEUED)
    poll_s: float = 2.0  # polling interval (events come in between)


class _Verdict(NamedTuple):
    """What a device's state means for the job."""

    step: UpdateStep
    reason: FailureReason | None = None
    error: str | None = None
    message: str | None = None


class _JobEndedError(Exception):
    """Internal: a wait ended the job (the record says how)."""


class UpdateJob:
    """Drives one device through one firmware update (see the module docstring)."""

    def __init__(
        self,
        client: DeviceClient,
        record: UpdateJobRecord,
        source: ImageSource,
        *,
        on_change: Callable[[UpdateJobRecord], None],
        timeouts: JobTimeouts = JobTimeouts(),
        clock: Callable[[], float] = time.time,
        events: Callable[[], AsyncIterator[DeviceEvent]] | None = None,
    ) -> None:
        self._client = client
        # Where the device's pushed events come from: by default a stream of the job's own;
        # a caller that already follows the device's one stream passes a tap on it (every
        # event would otherwise be sent, encrypted and parsed twice).
        self._events = events or client.events
        self.record = record
        self._source = source
        self._on_change = on_change
        self._timeouts = timeouts
        self._clock = clock
        self._image: PreparedImage | None = None
        self._notified_bytes = record.bytes_written
        self._notified_at = clock()
        # What the device reported written, and what the server says it sent (see
        # _advance); only a device that has it all is rebooting when it goes away.
        self._device_bytes = 0
        self._served_bytes = 0
        self._last_attempt_s = min(LAST_ATTEMPT_S, timeouts.start_s)
        # This run saw the device take the start (its answer, or its status just read).
        self._started_here = False

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> UpdateJobRecord:
        """Run the job from wherever its record is, to its end; return the record.

        Device and image failures end the job (the record says why); they are never
        raised. Cancelling the task leaves the record as last passed to on_change,
        resumable by a new UpdateJob. An exception raised by on_change (the record could
        not be stored) propagates and the job goes no further.
        """
        record = self.record
        if record.finished:
            return record
        _LOGGER.debug(
            "%s: update job %s %s at %s", record.mac, record.job_id, record.to_version, record.step
        )
        if record.started_at is not None:
            begun = record.started_at
        elif record.step is UpdateStep.QUEUED:
            begun = self._clock()  # _prepare() stores it
        else:
            begun = record.created_at  # a record from before started_at existed
        remaining = begun + self._timeouts.total_s - self._clock()
        try:
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await self._drive()
                except TimeoutError:
                    await self._timed_out()
            else:
                await self._timed_out()
        except _JobEndedError:
            pass
        except EspOtaError as err:
            self._fail_from_error(err)
        self._log_result()
        return record

    async def _drive(self) -> None:
        while not self.record.finished:
            step = self.record.step
            if step in (UpdateStep.QUEUED, UpdateStep.PREPARING):
                await self._prepare()
            elif step is UpdateStep.STARTING:
                await self._start()
            elif step in _FOLLOWING:
                await self._follow()
            elif step is UpdateStep.REBOOTING:
                await self._wait_back()
            else:
                await self._confirm()

    # --- preparing and starting ---------------------------------------------------------------

    async def _prepare(self) -> None:
        if self.record.started_at is None:
            self.record.started_at = self._clock()
        self._set_step(UpdateStep.PREPARING)
        await self._prepare_image()
        self._set_step(UpdateStep.STARTING)

    async def _prepare_image(self) -> PreparedImage:
        record = self.record
        try:
            image = await self._source.prepare()
        except (FirmwareIntegrityError, ImageError) as err:
            self._end_failed(FailureReason.IMAGE_INVALID, type(err).__name__, str(err))
        except FirmwareMismatchError as err:
            self._end_failed(FailureReason.IMAGE_MISMATCH, type(err).__name__, str(err))
        except EspOtaError as err:
            self._end_failed(FailureReason.IMAGE_UNAVAILABLE, type(err).__name__, str(err))
        if image.version != record.to_version:
            self._end_failed(
                FailureReason.IMAGE_MISMATCH,
                None,
                f"the image is version {image.version!r}, the job installs {record.to_version!r}",
            )
        self._image = image
        record.sha256 = image.sha256.lower()
        record.size = image.size
        record.app_elf_sha256 = image.app_elf_sha256.lower() if image.app_elf_sha256 else None
        record.download = dict(image.download) if image.download is not None else None
        self._notify()
        return image

    async def _start(self) -> None:
        record = self.record
        if record.ota_id is not None:
            self._set_step(UpdateStep.DOWNLOADING)
            return
        deadline = self._clock() + self._timeouts.start_s
        status = await self._status_until(deadline)
        if record.start_sent:
            # The last run sent the start but stored no answer: did it arrive?
            if self._adoptable(status):
                self._adopt(status.ota_id)
                return
            _LOGGER.debug("%s: the earlier start never arrived; starting", record.mac)
        else:
            record.ota_id_before = status.ota_id
        image = self._image or await self._prepare_image()
        record.start_sent = True
        self._notify()  # stored before the request goes out
        while True:
            try:
                ota_id = await self._bounded(
                    self._client.start_ota(
                        url=image.url,
                        sha256=record.sha256,
                        size=record.size,
                        version=record.to_version,
                        cert_pem=image.cert_pem,
                        headers=image.headers,
                    ),
                    deadline,
                )
            except DeviceBusyError as err:
                # Busy with our own start, delivered although its answer was lost?
                status = await self._status_until(deadline)
                if self._adoptable(status):
                    self._adopt(status.ota_id)
                    return
                self._end_failed(FailureReason.DEVICE_BUSY, err.error, err.message)
            except DeviceRefusedError as err:
                self._end_failed(FailureReason.DEVICE_REFUSED, err.error, err.message)
            except DeviceUnreachableError:
                # Ask before sending again: the start may have arrived.
                status = await self._status_until(deadline)
                if self._adoptable(status):
                    self._adopt(status.ota_id)
                    return
                if self._clock() >= deadline:
                    raise
                await self._pause(deadline)
                continue
            self._adopt(ota_id)
            return

    def _adoptable(self, status: OtaStatus) -> bool:
        """Whether the device's job is the one this job started."""
        record = self.record
        return (
            status.ota_id is not None
            and status.ota_id != record.ota_id_before
            and status.state is not OtaState.IDLE
            and status.target_version == record.to_version
            and (status.image_size is None or record.size <= 0 or status.image_size == record.size)
        )

    def _adopt(self, ota_id: str | None) -> None:
        self.record.ota_id = ota_id
        self._started_here = True
        self._set_step(UpdateStep.DOWNLOADING)

    # --- following the download ---------------------------------------------------------------

    async def _follow(self) -> None:
        """DOWNLOADING and VERIFYING: events as they come, a poll every poll_s."""
        queue: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        pump = asyncio.create_task(
            self._pump_events(queue), name=f"esp-ota events {self.record.mac}"
        )
        try:
            await self._follow_loop(queue)
        finally:
            pump.cancel()
            await asyncio.wait([pump])

    async def _pump_events(self, queue: asyncio.Queue[DeviceEvent]) -> None:
        try:
            async for event in self._events():
                queue.put_nowait(event)
        except EspOtaError as err:
            # Authentication or certificate errors end the stream; polling goes on.
            _LOGGER.debug("%s: event stream ended: %s", self.record.mac, err)

    async def _follow_loop(self, queue: asyncio.Queue[DeviceEvent]) -> None:
        record, timeouts = self.record, self._timeouts
        moved_at = self._clock()  # the stall clock
        lost_since: float | None = None  # unreachable since
        # A download whose start this run just saw is followed by its events first (the
        # device answered a moment ago); one resumed mid-download is asked at once.
        next_poll = self._clock() + (timeouts.poll_s if self._started_here else 0.0)
        while record.step in _FOLLOWING:
            event = await self._next_event(queue, next_poll)
            moved = self._advance(None)
            if event is not None:
                event_moved, poll_now = self._on_event(event)
                moved = moved or event_moved
                if poll_now:
                    next_poll = self._clock()
                elif event_moved:
                    # Events are flowing: the poll is only for when they stop (one request
                    # and one TLS connection less per device while it downloads).
                    next_poll = max(next_poll, self._clock() + timeouts.poll_s)
            if record.step in _FOLLOWING and self._clock() >= next_poll:
                next_poll = self._clock() + timeouts.poll_s
                try:
                    status = await self._bounded(
                        self._client.ota_status(), self._clock() + timeouts.poll_s
                    )
                except DeviceUnreachableError as err:
                    if record.step is UpdateStep.VERIFYING or (
                        record.size > 0 and self._device_bytes >= record.size
                    ):
                        self._set_step(UpdateStep.REBOOTING)  # verified, now restarting
                        return
                    # Power loss, a panic or the network: follow it through its reboot.
                    lost_since = lost_since if lost_since is not None else self._clock()
                    if self._clock() - lost_since >= timeouts.reboot_s:
                        # Gone mid-download (power loss, a panic) or right after a download
                        # whose end the job did not see: for the user, it did not come back.
                        self._end_failed(
                            FailureReason.NOT_BACK,
                            None,
                            f"unreachable for {timeouts.reboot_s:g} s during the download: {err}",
                        )
                    continue
                if lost_since is not None:
                    lost_since, moved_at = None, self._clock()  # back: the stall clock restarts
                moved = await self._on_status(status) or moved
            if moved:
                moved_at = self._clock()
            elif (
                record.step in _FOLLOWING
                and lost_since is None
                and self._clock() - moved_at >= timeouts.stall_s
            ):
                await self._stalled()

    async def _next_event(
        self, queue: asyncio.Queue[DeviceEvent], next_poll: float
    ) -> DeviceEvent | None:
        """A queued event at once (newer than the last poll), else one that comes before
        the next poll is due; None when it is due."""
        if not queue.empty():
            return queue.get_nowait()
        wait = next_poll - self._clock()
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    return await queue.get()
            except TimeoutError:
                pass
        return None

    def _on_event(self, event: DeviceEvent) -> tuple[bool, bool]:
        """(progress, poll now) for one event of the device's stream."""
        if event.ota_id != self.record.ota_id:
            return False, False  # another job's, or a plain reboot's
        match event.type:
            case EventType.WRITE_FLASH:
                return self._advance(event.bytes_written), False
            case EventType.UPDATE_BOOT_PARTITION:
                return self._set_step(UpdateStep.VERIFYING), False
            case EventType.REBOOT:
                return self._set_step(UpdateStep.REBOOTING), False
            case EventType.FINISH | EventType.ABORT:
                # A resumed download aborts and starts again within the same job: only
                # GET /ota tells the outcome.
                return True, True
            case _:
                return True, False

    async def _on_status(self, status: OtaStatus) -> bool:
        """Progress (True) or a step change from the device's GET /ota."""
        record = self.record
        if status.ota_id != record.ota_id:
            self._settle(await self._info_until(self._clock() + self._timeouts.poll_s))
            return True
        if status.state in (OtaState.FAILED, OtaState.ABORTED, OtaState.IDLE):
            self._end_failed(
                FailureReason.DOWNLOAD_FAILED,
                status.error or status.state.value,
                status.message,
            )
        if status.state is OtaState.VERIFYING:
            return self._advance(status.bytes_written) | self._set_step(UpdateStep.VERIFYING)
        if status.state in (OtaState.REBOOTING, OtaState.SUCCEEDED):
            # SUCCEEDED: it has rebooted already; REBOOTING reads what it came back with.
            self._advance(status.bytes_written)
            return self._set_step(UpdateStep.REBOOTING)
        return self._advance(status.bytes_written)  # connecting, downloading

    def _advance(self, device_bytes: int | None) -> bool:
        """Take the device's progress (and the server's, for the stall clock); True if
        either moved.

        bytes_written follows what the device wrote: the server's count runs ahead of it
        by the sockets' buffers (a 64 KiB image is "sent" before the device has written
        4 KiB of it), so it would show 100 % long before the end. It still proves the
        download is alive when the device's reports do not move.
        """
        record = self.record
        moved = False
        served = self._source.bytes_served()
        if served is not None and served > self._served_bytes:
            self._served_bytes, moved = served, True
        if device_bytes is not None:
            self._device_bytes = max(self._device_bytes, device_bytes)
        best = max(record.bytes_written, self._device_bytes)
        if record.size > 0:
            best = min(best, record.size)
        if best <= record.bytes_written:
            return moved
        record.bytes_written = best
        step = max(1, int(record.size * PROGRESS_NOTIFY_FRACTION))
        if (
            best - self._notified_bytes >= step
            or self._clock() - self._notified_at >= PROGRESS_NOTIFY_S
        ):
            self._notify()
        return True

    async def _stalled(self) -> None:
        record = self.record
        _LOGGER.debug("%s: no progress for %g s; aborting", record.mac, self._timeouts.stall_s)
        until = self._clock() + self._last_attempt_s
        try:
            await self._bounded(self._client.abort_ota(), until)
        except DeviceRefusedError:
            # Nothing to abort: it moved on (verifying, rebooting) or ended just now.
            await self._on_status(await self._status_until(until))
            if record.step is not UpdateStep.DOWNLOADING:
                return
        except DeviceUnreachableError as err:
            _LOGGER.debug("%s: abort did not reach the device: %s", record.mac, err)
        self._end_failed(
            FailureReason.STALLED,
            None,
            f"no progress for {self._timeouts.stall_s:g} s at {record.bytes_written} of "
            f"{record.size} bytes; the download was aborted",
        )

    # --- after the reboot ---------------------------------------------------------------------

    async def _wait_back(self) -> None:
        """REBOOTING: poll until the device answers again, at most reboot_s."""
        record = self.record
        deadline = record.step_since + self._timeouts.reboot_s
        while True:
            try:
                info = await self._bounded(self._client.info(), deadline)
            except DeviceUnreachableError:
                info = None  # rebooting: expected
            if info is not None:
                last = info.last_ota
                if last.ota_id != record.ota_id or last.state is not OtaState.REBOOTING:
                    if last.ota_id == record.ota_id and last.state in _RUNNING:
                        self._set_step(UpdateStep.DOWNLOADING)  # not rebooting after all
                    else:
                        self._settle(info)
                    return
                # Still the old firmware, its restart pending.
            if self._clock() >= deadline:
                self._end_failed(
                    FailureReason.NOT_BACK,
                    None,
                    f"not back within {self._timeouts.reboot_s:g} s after rebooting",
                )
            await self._pause(deadline)

    async def _confirm(self) -> None:
        """CONFIRMING: confirm the new image, then read it valid."""
        record = self.record
        deadline = record.step_since + self._timeouts.confirm_s
        confirmed = False
        while True:
            verdict = self._verdict(await self._info_until(deadline))
            if verdict.step is not UpdateStep.CONFIRMING:
                self._apply(verdict)
                return
            if confirmed:
                self._end_failed(
                    FailureReason.CONFIRM_FAILED,
                    None,
                    "the image is still pending_verify after the confirm",
                )
            try:
                await self._bounded(self._client.confirm(), deadline)
                confirmed = True
            except DeviceRefusedError as err:
                self._end_failed(FailureReason.CONFIRM_FAILED, err.error, err.message)
            except DeviceUnreachableError:
                if self._clock() >= deadline:
                    raise
                await self._pause(deadline)

    def _settle(self, info: DeviceInfo) -> None:
        self._apply(self._verdict(info))

    def _verdict(self, info: DeviceInfo) -> _Verdict:
        """What the device's state says about this job (after its reboot, or resumed)."""
        record = self.record
        last = info.last_ota
        ours = record.ota_id is not None and last.ota_id == record.ota_id
        if ours and last.state in (OtaState.FAILED, OtaState.ABORTED):
            return _Verdict(
                UpdateStep.FAILED,
                FailureReason.DOWNLOAD_FAILED,
                last.error or last.state.value,
                last.message,
            )
        if info.version == record.to_version:
            return self._verdict_on_target(info)
        rolled_from = info.last_invalid_partition
        if rolled_from is not None and rolled_from not in (
            info.running_partition,
            record.from_partition,
        ):
            return _Verdict(
                UpdateStep.ROLLED_BACK,
                FailureReason.ROLLED_BACK,
                None,
                f"the bootloader rolled back from {rolled_from}; {info.version} runs from "
                f"{info.running_partition}",
            )
        if not ours:
            return _Verdict(
                UpdateStep.FAILED,
                FailureReason.INTERRUPTED,
                None,
                f"the device shows no trace of OTA {record.ota_id} and runs {info.version}",
            )
        return _Verdict(
            UpdateStep.FAILED,
            FailureReason.WRONG_FIRMWARE,
            None,
            f"runs {info.version} from {info.running_partition}, not {record.to_version}",
        )

    def _verdict_on_target(self, info: DeviceInfo) -> _Verdict:
        """The device runs the target version: is it what was sent, and confirmed?"""
        record = self.record
        wrong = []
        if record.app_elf_sha256 and info.app_elf_sha256.lower() != record.app_elf_sha256:
            wrong.append(f"app_elf_sha256 {info.app_elf_sha256}, not {record.app_elf_sha256}")
        if record.from_partition and info.running_partition == record.from_partition:
            wrong.append(f"still running from {info.running_partition}")
        if wrong:
            return _Verdict(
                UpdateStep.FAILED,
                FailureReason.WRONG_FIRMWARE,
                None,
                f"runs {info.version} but " + "; ".join(wrong),
            )
        if info.image_state is ImageState.PENDING_VERIFY:
            return _Verdict(UpdateStep.CONFIRMING)
        if info.image_state in (ImageState.VALID, ImageState.UNDEFINED):
            # UNDEFINED: a firmware without rollback, nothing to confirm.
            return _Verdict(UpdateStep.SUCCEEDED)
        return _Verdict(
            UpdateStep.FAILED,
            FailureReason.CONFIRM_FAILED,
            None,
            f"runs {info.version} in image_state {info.image_state}",
        )

    # --- the bound of the whole job --------------------------------------------------------

    async def _timed_out(self) -> None:
        """total_s passed: one last look at the device (confirm_s at most), then TIMED_OUT
        unless it shows the job done; a download still running is aborted."""
        record = self.record
        message = f"the update did not finish within {self._timeouts.total_s:g} s"
        if record.start_sent:
            try:
                async with asyncio.timeout(self._timeouts.confirm_s):
                    info = await self._client.info()
                    verdict = self._verdict(info)
                    if verdict.step is UpdateStep.CONFIRMING:
                        await self._client.confirm()
                        verdict = self._verdict(await self._client.info())
                    if verdict.step in (UpdateStep.SUCCEEDED, UpdateStep.ROLLED_BACK):
                        self._apply(verdict)
                        return
                    last = info.last_ota
                    ours = last.ota_id == record.ota_id or (
                        record.ota_id is None and self._adoptable(last)
                    )
                    if ours and last.state in _ABORTABLE:
                        await self._client.abort_ota()
                        message += "; the download was aborted"
            except (EspOtaError, TimeoutError) as err:
                _LOGGER.debug("%s: last look after the timeout failed: %s", record.mac, err)
        self._apply(_Verdict(UpdateStep.FAILED, FailureReason.TIMED_OUT, None, message))

    # --- helpers ---------------------------------------------------------------------------

    async def _bounded[T](self, request: Awaitable[T], until: float) -> T:
        """Await a device request until `until` (one last attempt's time at least)."""
        limit = max(until - self._clock(), self._last_attempt_s)
        try:
            async with asyncio.timeout(limit):
                return await request
        except TimeoutError as err:
            raise DeviceTimeoutError(f"{self.record.mac} did not answer in time") from err

    async def _status_until(self, deadline: float) -> OtaStatus:
        """GET /ota, retried while unreachable until `deadline`."""
        while True:
            try:
                return await self._bounded(self._client.ota_status(), deadline)
            except DeviceUnreachableError:
                if self._clock() >= deadline:
                    raise
            await self._pause(deadline)

    async def _info_until(self, deadline: float) -> DeviceInfo:
        """GET /info, retried while unreachable until `deadline`."""
        while True:
            try:
                return await self._bounded(self._client.info(), deadline)
            except DeviceUnreachableError:
                if self._clock() >= deadline:
                    raise
            await self._pause(deadline)

    async def _pause(self, deadline: float) -> None:
        """Sleep poll_s, or until the deadline if that comes first."""
        await asyncio.sleep(max(0.0, min(self._timeouts.poll_s, deadline - self._clock())))

    def _set_step(self, step: UpdateStep) -> bool:
        """Enter `step` (stored through on_change); False if the job was there already."""
        record = self.record
        if record.step is step:
            return False
        _LOGGER.debug(
            "%s: update to %s: %s -> %s", record.mac, record.to_version, record.step, step
        )
        record.step = step
        record.step_since = self._clock()
        self._notify()
        return True

    def _apply(self, verdict: _Verdict) -> None:
        record = self.record
        if verdict.step.finished:
            record.reason, record.error, record.message = (
                verdict.reason,
                verdict.error,
                verdict.message,
            )
        self._set_step(verdict.step)

    def _end_failed(
        self, reason: FailureReason, error: str | None, message: str | None
    ) -> NoReturn:
        """Fail the job and leave the step (raises _JobEndedError)."""
        self._apply(_Verdict(UpdateStep.FAILED, reason, error, message))
        raise _JobEndedError

    def _fail_from_error(self, err: EspOtaError) -> None:
        """A device error no step turned into a verdict."""
        if isinstance(err, DeviceUnauthorizedError):
            verdict = _Verdict(
                UpdateStep.FAILED, FailureReason.DEVICE_REFUSED, "HTTPD_401_UNAUTHORIZED", str(err)
            )
        elif isinstance(err, DeviceRefusedError):
            verdict = _Verdict(
                UpdateStep.FAILED, FailureReason.DEVICE_REFUSED, err.error, err.message
            )
        else:  # unreachable, timeouts, certificate mismatch, protocol violations
            verdict = _Verdict(
                UpdateStep.FAILED, FailureReason.DEVICE_UNREACHABLE, type(err).__name__, str(err)
            )
        self._apply(verdict)

    def _notify(self) -> None:
        self._notified_bytes = self.record.bytes_written
        self._notified_at = self._clock()
        self._on_change(self.record)

    def _log_result(self) -> None:
        record = self.record
        if record.step is UpdateStep.SUCCEEDED:
            _LOGGER.info(
                "%s: updated from %s to %s", record.mac, record.from_version, record.to_version
            )
            return
        _LOGGER.info(
            "%s: update from %s to %s %s: %s%s%s",
            record.mac,
            record.from_version,
            record.to_version,
            record.step,
            record.reason,
            f" ({record.error})" if record.error else "",
            f": {record.message}" if record.message else "",
        )
