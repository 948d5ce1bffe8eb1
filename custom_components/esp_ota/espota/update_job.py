"""One firmware update of one device, as a resumable state machine.

An UpdateJob drives a device through one update with a DeviceClient: the image source
(image_source.py) prepares the image (PREPARING), the device is told to pull it
(STARTING), its download is followed by events and polling (DOWNLOADING, VERIFYING), its
reboot waited for (REBOOTING), the new image checked and confirmed (CONFIRMING). It always
ends, within JobTimeouts.total_s (and one last look), in SUCCEEDED, FAILED or ROLLED_BACK.

Everything the job needs to go on after the process running it restarted is in its
UpdateJobRecord (job_record.py), which the caller stores whenever `on_change` is called.
Records are frozen: the job replaces its record at every change (`job.record` is the
current one) and passes each new one to on_change. A job resumed from a stored record asks
the device where it is instead of starting again: the device never receives a second start
for the same job. What the device's answers mean for the job is job_verdict.py.

docs/architecture.md ("The update job") has the steps, timeouts and resume rules.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn

from .device_client import DeviceClient
from .device_waits import DeviceWaits, EventQueue
from .errors import (
    DeviceBusyError,
    DeviceRefusedError,
    DeviceUnreachableError,
    EspOtaError,
    FirmwareIntegrityError,
    FirmwareMismatchError,
    FirmwareStorageError,
    ImageError,
)
from .image_source import ImageSource, PreparedImage
from .job_record import DOWNLOAD_STEPS, FailureReason, UpdateJobRecord, UpdateStep
from .job_verdict import Verdict, adoptable, device_verdict, error_verdict
from .protocol import DeviceEvent, DeviceInfo, EventType, OtaState, OtaStatus

_LOGGER = logging.getLogger(__name__)

# A request gets at least this long (or start_s, if shorter) even when its wait's deadline
# has (nearly) passed: one last attempt, long enough for an ESP32's TLS handshake (1-3 s).
LAST_ATTEMPT_S: Final = 5.0
# on_change during a download: when the bytes moved by 1 % of the image, or at most once
# a second while they move.
PROGRESS_NOTIFY_FRACTION: Final = 0.01
PROGRESS_NOTIFY_S: Final = 1.0

_RUNNING: Final = frozenset({OtaState.CONNECTING, OtaState.DOWNLOADING, OtaState.VERIFYING})
_ABORTABLE: Final = frozenset({OtaState.CONNECTING, OtaState.DOWNLOADING})


@dataclass(frozen=True)
class JobTimeouts:
    """Bounds of the job's waits, in seconds."""

    start_s: float = 30.0  # reaching the device to start
    stall_s: float = 60.0  # no progress during the download: abort
    reboot_s: float = 180.0  # from the reboot until the device answers again
    confirm_s: float = 30.0  # confirming and reading the result
    total_s: float = 3600.0  # the whole job, from record.started_at (leaving QUEUED)
    poll_s: float = 2.0  # polling interval (events come in between)


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
        self._record = record
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
        self._waits = DeviceWaits(
            client,
            record.mac,
            poll_s=timeouts.poll_s,
            last_attempt_s=self._last_attempt_s,
            clock=clock,
        )
        # This run saw the device take the start (its answer, or its status just read).
        self._started_here = False
        # on_change raised: run() lets that exception through, whatever its type.
        self._store_failed = False

    @property
    def record(self) -> UpdateJobRecord:
        """The job's current record (a new object at every change)."""
        return self._record

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> UpdateJobRecord:
        """Run the job from wherever its record is, to its end; return the final record.

        Device and image failures end the job (the record says why); they are never
        raised. Cancelling the task leaves the record as last passed to on_change,
        resumable by a new UpdateJob. An exception raised by on_change (the record could
        not be stored) propagates and the job goes no further.
        """
        record = self._record
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
            self._apply(error_verdict(err))  # a device error no step turned into a verdict
        except Exception as err:
            # Last resort. A job that raises is left unfinished in its store: resumed at
            # every start of Home Assistant, it fails the same way again, and nobody is
            # told. The client raises its own errors only (test_fuzz_device_client.py), but
            # it stands on aiohttp, TLS and the image source, which meet whatever a device
            # sends; a surprise from there ends this job as failed, its type in `error` and
            # its traceback logged once. Not caught: on_change's exceptions (the record was
            # not stored: documented to propagate) and CancelledError (no Exception).
            if self._store_failed:
                raise
            _LOGGER.exception(
                "%s: update job %s stopped by an unexpected error",
                self._record.mac,
                self._record.job_id,
            )
            self._apply(
                Verdict(
                    UpdateStep.FAILED,
                    FailureReason.DEVICE_UNREACHABLE,
                    type(err).__name__,
                    f"stopped by an unexpected {type(err).__name__} (in the log)",
                )
            )
        self._log_result()
        return self._record

    async def _drive(self) -> None:
        while not self._record.finished:
            step = self._record.step
            if step in (UpdateStep.QUEUED, UpdateStep.PREPARING):
                await self._prepare()
            elif step is UpdateStep.STARTING:
                await self._start()
            elif step in DOWNLOAD_STEPS:
                await self._follow()
            elif step is UpdateStep.REBOOTING:
                await self._wait_back()
            else:
                await self._confirm()

    # --- preparing and starting ---------------------------------------------------------------

    async def _prepare(self) -> None:
        if self._record.started_at is None:
            self._change(started_at=self._clock())
        self._set_step(UpdateStep.PREPARING)
        await self._prepare_image()
        self._set_step(UpdateStep.STARTING)

    async def _prepare_image(self) -> PreparedImage:
        to_version = self._record.to_version
        try:
            image = await self._source.prepare()
        except (FirmwareIntegrityError, ImageError) as err:
            self._end_failed(FailureReason.IMAGE_INVALID, type(err).__name__, str(err))
        except FirmwareMismatchError as err:
            self._end_failed(FailureReason.IMAGE_MISMATCH, type(err).__name__, str(err))
        except FirmwareStorageError as err:
            self._end_failed(FailureReason.NO_SPACE, type(err).__name__, str(err))
        except EspOtaError as err:
            self._end_failed(FailureReason.IMAGE_UNAVAILABLE, type(err).__name__, str(err))
        except OSError as err:
            # The source's contract is EspOtaError; a file operation it left unwrapped
            # still ends the job (rather than leaving it stuck in PREPARING).
            reason = (
                FailureReason.NO_SPACE
                if err.errno in (errno.ENOSPC, errno.EDQUOT)
                else FailureReason.IMAGE_UNAVAILABLE
            )
            self._end_failed(reason, type(err).__name__, str(err))
        if image.version != to_version:
            self._end_failed(
                FailureReason.IMAGE_MISMATCH,
                None,
                f"the image is version {image.version!r}, the job installs {to_version!r}",
            )
        self._image = image
        self._change(
            sha256=image.sha256.lower(),
            size=image.size,
            app_elf_sha256=image.app_elf_sha256.lower() if image.app_elf_sha256 else None,
            download=image.download,
        )
        self._notify()
        return image

    async def _start(self) -> None:
        if self._record.ota_id is not None:
            self._set_step(UpdateStep.DOWNLOADING)
            return
        deadline = self._clock() + self._timeouts.start_s
        status = await self._waits.status_until(deadline)
        if self._record.start_sent:
            # The last run sent the start but stored no answer: did it arrive?
            if self._adopt_if_ours(status):
                return
            _LOGGER.debug("%s: the earlier start never arrived; starting", self._record.mac)
        else:
            self._change(ota_id_before=status.ota_id)
        image = self._image or await self._prepare_image()
        self._change(start_sent=True)
        self._notify()  # stored before the request goes out
        record = self._record
        while True:
            try:
                ota_id = await self._waits.bounded(
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
                if self._adopt_if_ours(await self._waits.status_until(deadline)):
                    return
                self._end_failed(FailureReason.DEVICE_BUSY, err.error, err.message)
            except DeviceRefusedError as err:
                self._end_failed(FailureReason.DEVICE_REFUSED, err.error, err.message)
            except DeviceUnreachableError:
                # Ask before sending again: the start may have arrived.
                if self._adopt_if_ours(await self._waits.status_until(deadline)):
                    return
                if self._clock() >= deadline:
                    raise
                await self._waits.pause(deadline)
                continue
            self._adopt(ota_id)
            return

    def _adopt_if_ours(self, status: OtaStatus) -> bool:
        """Adopt the device's job if it is the one this job started (True), although no
        answer to the start was stored."""
        if not adoptable(self._record, status):
            return False
        self._adopt(status.ota_id)
        return True

    def _adopt(self, ota_id: str | None) -> None:
        self._change(ota_id=ota_id)
        self._started_here = True
        self._set_step(UpdateStep.DOWNLOADING)

    # --- following the download ---------------------------------------------------------------

    async def _follow(self) -> None:
        """DOWNLOADING and VERIFYING: events as they come, a poll every poll_s."""
        async with EventQueue(self._events, self._record.mac, self._clock) as events:
            await self._follow_loop(events)

    async def _follow_loop(self, events: EventQueue) -> None:
        timeouts = self._timeouts
        moved_at = self._clock()  # the stall clock
        lost_since: float | None = None  # unreachable since
        # A download whose start this run just saw is followed by its events first (the
        # device answered a moment ago); one resumed mid-download is asked at once.
        next_poll = self._clock() + (timeouts.poll_s if self._started_here else 0.0)
        while self._record.step in DOWNLOAD_STEPS:
            event = await events.next_before(next_poll)
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
            if self._record.step in DOWNLOAD_STEPS and self._clock() >= next_poll:
                next_poll = self._clock() + timeouts.poll_s
                try:
                    status = await self._waits.bounded(
                        self._client.ota_status(), self._clock() + timeouts.poll_s
                    )
                except DeviceUnreachableError as err:
                    if self._record.step is UpdateStep.VERIFYING or (
                        0 < self._record.size <= self._device_bytes
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
                # Not while VERIFYING: the device has every byte and cannot abort; its end
                # is a reboot or a failure, both followed, and total_s bounds it.
                self._record.step is UpdateStep.DOWNLOADING
                and lost_since is None
                and self._clock() - moved_at >= timeouts.stall_s
            ):
                await self._stalled()

    def _on_event(self, event: DeviceEvent) -> tuple[bool, bool]:
        """(progress, poll now) for one event of the device's stream."""
        if event.ota_id != self._record.ota_id:
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
        if status.ota_id != self._record.ota_id:
            self._settle(await self._waits.info_until(self._clock() + self._timeouts.poll_s))
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
        record = self._record
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
        self._change(bytes_written=best)
        step = max(1, int(record.size * PROGRESS_NOTIFY_FRACTION))
        if (
            best - self._notified_bytes >= step
            or self._clock() - self._notified_at >= PROGRESS_NOTIFY_S
        ):
            self._notify()
        return True

    async def _stalled(self) -> None:
        mac = self._record.mac
        _LOGGER.debug("%s: no progress for %g s; aborting", mac, self._timeouts.stall_s)
        until = self._clock() + self._last_attempt_s
        try:
            await self._waits.bounded(self._client.abort_ota(), until)
        except DeviceRefusedError:
            # Nothing to abort: it moved on (verifying, rebooting) or ended just now.
            await self._on_status(await self._waits.status_until(until))
            if self._record.step is not UpdateStep.DOWNLOADING:
                return
        except DeviceUnreachableError as err:
            _LOGGER.debug("%s: abort did not reach the device: %s", mac, err)
            if 0 < self._record.size <= self._device_bytes:
                self._set_step(UpdateStep.REBOOTING)  # it had every byte: verified, restarting
                return
        record = self._record
        self._end_failed(
            FailureReason.STALLED,
            None,
            f"no progress for {self._timeouts.stall_s:g} s at {record.bytes_written} of "
            f"{record.size} bytes; the download was aborted",
        )

    # --- after the reboot ---------------------------------------------------------------------

    async def _wait_back(self) -> None:
        """REBOOTING: poll until the device answers again, at most reboot_s."""
        ota_id = self._record.ota_id
        deadline = self._record.step_since + self._timeouts.reboot_s
        while True:
            try:
                info = await self._waits.bounded(self._client.info(), deadline)
            except DeviceUnreachableError:
                info = None  # rebooting: expected
            if info is not None:
                last = info.last_ota
                if last.ota_id != ota_id or last.state is not OtaState.REBOOTING:
                    if last.ota_id == ota_id and last.state in _RUNNING:
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
            await self._waits.pause(deadline)

    async def _confirm(self) -> None:
        """CONFIRMING: confirm the new image, then read it valid."""
        deadline = self._record.step_since + self._timeouts.confirm_s
        confirmed = False
        while True:
            verdict = device_verdict(self._record, await self._waits.info_until(deadline))
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
                await self._waits.bounded(self._client.confirm(), deadline)
                confirmed = True
            except DeviceRefusedError as err:
                self._end_failed(FailureReason.CONFIRM_FAILED, err.error, err.message)
            except DeviceUnreachableError:
                if self._clock() >= deadline:
                    raise
                await self._waits.pause(deadline)

    def _settle(self, info: DeviceInfo) -> None:
        self._apply(device_verdict(self._record, info))

    async def _timed_out(self) -> None:
        """total_s passed: one last look at the device (confirm_s at most), then TIMED_OUT
        unless it shows the job done; a download still running is aborted."""
        record = self._record  # changed only by the verdict at the end
        message = f"the update did not finish within {self._timeouts.total_s:g} s"
        if record.start_sent:
            try:
                async with asyncio.timeout(self._timeouts.confirm_s):
                    info = await self._client.info()
                    verdict = device_verdict(record, info)
                    if verdict.step is UpdateStep.CONFIRMING:
                        await self._client.confirm()
                        verdict = device_verdict(record, await self._client.info())
                    if verdict.step in (UpdateStep.SUCCEEDED, UpdateStep.ROLLED_BACK):
                        self._apply(verdict)
                        return
                    last = info.last_ota
                    ours = last.ota_id == record.ota_id or (
                        record.ota_id is None and adoptable(record, last)
                    )
                    if ours and last.state in _ABORTABLE:
                        await self._client.abort_ota()
                        message += "; the download was aborted"
            except (EspOtaError, TimeoutError) as err:
                _LOGGER.debug("%s: last look after the timeout failed: %s", record.mac, err)
        self._apply(Verdict(UpdateStep.FAILED, FailureReason.TIMED_OUT, None, message))

    # --- the record ------------------------------------------------------------------------

    def _change(self, **changes: Any) -> None:
        """Replace the record by a copy with `changes` (stored by the next _notify)."""
        self._record = replace(self._record, **changes)

    def _set_step(self, step: UpdateStep) -> bool:
        """Enter `step` (stored through on_change); False if the job was there already."""
        record = self._record
        if record.step is step:
            return False
        _LOGGER.debug(
            "%s: update to %s: %s -> %s", record.mac, record.to_version, record.step, step
        )
        self._change(step=step, step_since=self._clock())
        self._notify()
        return True

    def _apply(self, verdict: Verdict) -> None:
        if verdict.step.finished:
            self._change(reason=verdict.reason, error=verdict.error, message=verdict.message)
        self._set_step(verdict.step)

    def _end_failed(
        self, reason: FailureReason, error: str | None, message: str | None
    ) -> NoReturn:
        """Fail the job and leave the step (raises _JobEndedError)."""
        self._apply(Verdict(UpdateStep.FAILED, reason, error, message))
        raise _JobEndedError

    def _notify(self) -> None:
        self._notified_bytes = self._record.bytes_written
        self._notified_at = self._clock()
        try:
            self._on_change(self._record)
        except BaseException:
            self._store_failed = True
            raise

    def _log_result(self) -> None:
        record = self._record
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
