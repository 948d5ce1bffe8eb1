"""An update job's record: where the job is, what it needs to go on after a restart, and
the record's stored JSON form.

A record is frozen: the job (update_job.py) makes a new one at every change and hands it
to its `on_change`, so whoever holds one (the installer, the entities, diagnostics) holds
a value that never changes under it. docs/architecture.md ("The record and resuming") says
what each field is for.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Final

from .errors import UpdateJobRecordError
from .json_reader import JsonReader, shown

# The version of UpdateJobRecord.to_dict()'s layout.
RECORD_FORMAT: Final = 1

_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_GRANT_FIELDS: Final = ("token", "expires_at", "host")


class UpdateStep(StrEnum):
    """Where an update job is; IDLE is no job at all (never a record's step)."""

    IDLE = "idle"
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
# The steps in which the device downloads the image (and the job follows it).
DOWNLOAD_STEPS: Final = frozenset({UpdateStep.DOWNLOADING, UpdateStep.VERIFYING})
_AFTER_DOWNLOAD: Final = frozenset(
    {UpdateStep.REBOOTING, UpdateStep.CONFIRMING, UpdateStep.SUCCEEDED}
)


class FailureReason(StrEnum):
    """Why a job ended FAILED (or ROLLED_BACK). Values are translation keys."""

    IMAGE_UNAVAILABLE = "image_unavailable"  # the image could not be prepared
    IMAGE_INVALID = "image_invalid"  # corrupt, wrong size or sha256
    IMAGE_MISMATCH = "image_mismatch"  # does not fit the device (or the release)
    NO_SPACE = "no_space"  # no room to store the image, even after evicting older ones
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


@dataclass(frozen=True, slots=True)
class DownloadGrant:
    """What re-arms the firmware server's download of the image after a restart: the
    device's token, when it expires (None: the server's own default), and the host the
    device was told to download from. A job whose device downloads from the feed's own
    URL (direct mode) has none."""

    token: str  # secret: never logged, redacted in diagnostics
    expires_at: float | None  # epoch seconds
    host: str

    def to_dict(self) -> dict[str, Any]:
        """The stored form: {"token": …, "expires_at": …, "host": …}."""
        if self.expires_at is not None and not math.isfinite(self.expires_at):
            raise UpdateJobRecordError(f"download.expires_at: {self.expires_at} is not JSON")
        return {"token": self.token, "expires_at": self.expires_at, "host": self.host}


@dataclass(frozen=True, slots=True)
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
    download: DownloadGrant | None  # None until prepared, and in direct mode
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
        if self.step not in DOWNLOAD_STEPS or self.size <= 0:
            return None
        return min(100.0, self.bytes_written * 100.0 / self.size)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy (from_dict reads it back equal)."""
        data: dict[str, Any] = {"format": RECORD_FORMAT}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, DownloadGrant):
                value = value.to_dict()
            data[item.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Any) -> UpdateJobRecord:
        """Read a record stored by to_dict (or by the previous version, whose `download`
        was the source's own object); anything else is an UpdateJobRecordError."""
        reader = JsonReader(data, "", UpdateJobRecordError)
        if data.get("format") != RECORD_FORMAT:
            got = shown(data.get("format"))
            raise reader.fail("format", f"expected {RECORD_FORMAT}, got {got}")
        sha256 = reader.text("sha256")
        if sha256 and not _SHA256.match(sha256):
            raise reader.fail("sha256", "not 64 lowercase hex digits")
        elf = reader.optional_text("app_elf_sha256")
        if elf is not None and not _SHA256.match(elf):
            raise reader.fail("app_elf_sha256", "not 64 lowercase hex digits")
        step = reader.choice("step", UpdateStep)
        if step is UpdateStep.IDLE:
            raise reader.fail("step", "a record is never idle")
        record = cls(
            job_id=reader.text("job_id", required=True),
            mac=reader.text("mac", required=True),
            from_version=reader.text("from_version"),
            to_version=reader.text("to_version", required=True),
            sha256=sha256,
            size=reader.count("size"),
            app_elf_sha256=elf,
            from_partition=reader.optional_text("from_partition"),
            step=step,
            reason=reader.optional_choice("reason", FailureReason),
            error=reader.optional_text("error"),
            message=reader.optional_text("message"),
            ota_id=reader.optional_text("ota_id"),
            start_sent=reader.flag("start_sent"),
            bytes_written=reader.count("bytes_written"),
            created_at=reader.time("created_at"),
            step_since=reader.time("step_since"),
            download=_read_download(data.get("download"), reader),
            # Optional, and missing in records stored before the fields existed.
            ota_id_before=reader.optional_text("ota_id_before"),
            started_at=reader.optional_time("started_at"),
        )
        _check_consistent(record)
        return record


def _read_download(value: Any, reader: JsonReader) -> DownloadGrant | None:
    """The record's `download`: a grant's object, null, or the previous version's
    {"direct": true} (direct mode, None now)."""
    if value is None or (
        isinstance(value, Mapping) and value.keys() == {"direct"} and value["direct"] is True
    ):
        return None
    grant = reader.child("download")  # refuses anything but an object
    unknown = [shown(key) for key in value if key not in _GRANT_FIELDS]
    if unknown:
        raise reader.fail(
            "download", f"neither a download grant nor direct (fields {', '.join(unknown)})"
        )
    return DownloadGrant(
        token=grant.text("token", required=True),
        expires_at=grant.optional_time("expires_at"),
        host=grant.text("host", required=True),
    )


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
