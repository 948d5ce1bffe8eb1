"""What a device's answers mean for an update job: pure functions of the job's record and
what the device said, no requests and no clock.

The job (update_job.py) asks the device and applies the verdicts; docs/architecture.md
("The update job") has the rules in prose.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import DeviceRefusedError, DeviceUnauthorizedError, EspOtaError
from .job_record import FailureReason, UpdateJobRecord, UpdateStep
from .protocol import DeviceInfo, ImageState, OtaState, OtaStatus


class Verdict(NamedTuple):
    """The step a job goes to, and for an end its reason, error name and message."""

    step: UpdateStep
    reason: FailureReason | None = None
    error: str | None = None
    message: str | None = None


def device_verdict(record: UpdateJobRecord, info: DeviceInfo) -> Verdict:
    """What the device's state says about this job (after its reboot, or resumed)."""
    last = info.last_ota
    ours = record.ota_id is not None and last.ota_id == record.ota_id
    if ours and last.state in (OtaState.FAILED, OtaState.ABORTED):
        return Verdict(
            UpdateStep.FAILED,
            FailureReason.DOWNLOAD_FAILED,
            last.error or last.state.value,
            last.message,
        )
    if info.version == record.to_version:
        return _verdict_on_target(record, info)
    rolled_from = info.last_invalid_partition
    if rolled_from is not None and rolled_from not in (
        info.running_partition,
        record.from_partition,
    ):
        return Verdict(
            UpdateStep.ROLLED_BACK,
            FailureReason.ROLLED_BACK,
            None,
            f"the bootloader rolled back from {rolled_from}; {info.version} runs from "
            f"{info.running_partition}",
        )
    if not ours:
        return Verdict(
            UpdateStep.FAILED,
            FailureReason.INTERRUPTED,
            None,
            f"the device shows no trace of OTA {record.ota_id} and runs {info.version}",
        )
    return Verdict(
        UpdateStep.FAILED,
        FailureReason.WRONG_FIRMWARE,
        None,
        f"runs {info.version} from {info.running_partition}, not {record.to_version}",
    )


def _verdict_on_target(record: UpdateJobRecord, info: DeviceInfo) -> Verdict:
    """The device runs the target version: is it what was sent, and confirmed?"""
    wrong = []
    if record.app_elf_sha256 and info.app_elf_sha256.lower() != record.app_elf_sha256:
        wrong.append(f"app_elf_sha256 {info.app_elf_sha256}, not {record.app_elf_sha256}")
    if record.from_partition and info.running_partition == record.from_partition:
        wrong.append(f"still running from {info.running_partition}")
    if wrong:
        return Verdict(
            UpdateStep.FAILED,
            FailureReason.WRONG_FIRMWARE,
            None,
            f"runs {info.version} but " + "; ".join(wrong),
        )
    if info.image_state is ImageState.PENDING_VERIFY:
        return Verdict(UpdateStep.CONFIRMING)
    if info.image_state in (ImageState.VALID, ImageState.UNDEFINED):
        # UNDEFINED: a firmware without rollback, nothing to confirm.
        return Verdict(UpdateStep.SUCCEEDED)
    return Verdict(
        UpdateStep.FAILED,
        FailureReason.CONFIRM_FAILED,
        None,
        f"runs {info.version} in image_state {info.image_state}",
    )


def adoptable(record: UpdateJobRecord, status: OtaStatus) -> bool:
    """Whether the device's job (its GET /ota) is the one this job started, although no
    answer to the start was stored."""
    return (
        status.ota_id is not None
        and status.ota_id != record.ota_id_before
        and status.state is not OtaState.IDLE
        and status.target_version == record.to_version
        and (status.image_size is None or record.size <= 0 or status.image_size == record.size)
    )


def error_verdict(err: EspOtaError) -> Verdict:
    """How a device error that no step turned into a verdict ends the job."""
    if isinstance(err, DeviceUnauthorizedError):
        return Verdict(
            UpdateStep.FAILED, FailureReason.DEVICE_REFUSED, "HTTPD_401_UNAUTHORIZED", str(err)
        )
    if isinstance(err, DeviceRefusedError):
        return Verdict(UpdateStep.FAILED, FailureReason.DEVICE_REFUSED, err.error, err.message)
    # Unreachable, timeouts, certificate mismatch, protocol violations.
    return Verdict(
        UpdateStep.FAILED, FailureReason.DEVICE_UNREACHABLE, type(err).__name__, str(err)
    )
