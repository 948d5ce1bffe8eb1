"""What a device's answers mean for an update job: the verdicts, without a device."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from custom_components.esp_ota.espota.errors import (
    CertificateMismatchError,
    DeviceBusyError,
    DeviceRefusedError,
    DeviceTimeoutError,
    DeviceUnauthorizedError,
    EspOtaError,
)
from custom_components.esp_ota.espota.job_record import (
    FailureReason,
    UpdateJobRecord,
    UpdateStep,
    new_record,
)
from custom_components.esp_ota.espota.job_verdict import (
    Verdict,
    adoptable,
    device_verdict,
    error_verdict,
)
from custom_components.esp_ota.espota.protocol import DeviceInfo, ImageState, OtaState, OtaStatus

OLD, NEW = "1.0.0", "2.0.0"
OTA_ID = "5eed00000001"
ELF = "b" * 64


def job(**changes: Any) -> UpdateJobRecord:
    """A job from ota_0 that started the device's OTA_ID and waits for its reboot."""
    record = new_record(
        mac="24:0a:c4:00:00:01", from_version=OLD, to_version=NEW, from_partition="ota_0"
    )
    started: dict[str, Any] = {
        "sha256": "a" * 64,
        "size": 4096,
        "app_elf_sha256": ELF,
        "step": UpdateStep.REBOOTING,
        "start_sent": True,
        "ota_id": OTA_ID,
        "ota_id_before": "0ld000000000",
    }
    return replace(record, **(started | changes))


def status(**changes: Any) -> OtaStatus:
    base = OtaStatus(
        state=OtaState.SUCCEEDED,
        ota_id=OTA_ID,
        target_version=NEW,
        bytes_written=4096,
        image_size=4096,
        error=None,
        message=None,
    )
    return replace(base, **changes)


def info(*, last_ota: OtaStatus | None = None, **changes: Any) -> DeviceInfo:
    """The device back on the new image from ota_1, waiting for its confirm."""
    base = DeviceInfo(
        api=1,
        mac="24:0a:c4:00:00:01",
        chip="esp32",
        chip_revision=300,
        project="garden",
        version=NEW,
        idf_ver="v5.3.1",
        app_elf_sha256=ELF,
        secure_version=0,
        running_partition="ota_1",
        boot_partition="ota_1",
        image_state=ImageState.PENDING_VERIFY,
        last_invalid_partition=None,
        last_ota=last_ota or status(),
        reset_reason="ESP_RST_SW",
        uptime_s=2.5,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("image_state", "step"),
    [
        (ImageState.PENDING_VERIFY, UpdateStep.CONFIRMING),
        (ImageState.VALID, UpdateStep.SUCCEEDED),
        (ImageState.UNDEFINED, UpdateStep.SUCCEEDED),  # built without rollback
    ],
)
def test_back_on_the_image_that_was_sent(image_state: ImageState, step: UpdateStep) -> None:
    assert device_verdict(job(), info(image_state=image_state)) == Verdict(step)


def test_the_elf_digest_is_compared_without_case() -> None:
    assert device_verdict(job(), info(app_elf_sha256=ELF.upper())) == Verdict(UpdateStep.CONFIRMING)


@pytest.mark.parametrize("image_state", [ImageState.INVALID, ImageState.ABORTED, ImageState.NEW])
def test_on_the_target_in_another_image_state(image_state: ImageState) -> None:
    assert device_verdict(job(), info(image_state=image_state)) == Verdict(
        UpdateStep.FAILED,
        FailureReason.CONFIRM_FAILED,
        None,
        f"runs {NEW} in image_state {image_state}",
    )


def test_on_the_target_but_not_what_was_sent() -> None:
    verdict = device_verdict(job(), info(app_elf_sha256="c" * 64, running_partition="ota_0"))
    assert (verdict.step, verdict.reason) == (UpdateStep.FAILED, FailureReason.WRONG_FIRMWARE)
    assert verdict.message == (
        f"runs {NEW} but app_elf_sha256 {'c' * 64}, not {ELF}; still running from ota_0"
    )


def test_an_unknown_elf_digest_or_partition_is_not_checked() -> None:
    record = job(app_elf_sha256=None, from_partition=None)
    assert device_verdict(record, info(app_elf_sha256="c" * 64, running_partition="ota_0")) == (
        Verdict(UpdateStep.CONFIRMING)
    )


@pytest.mark.parametrize(
    ("last_ota", "error"),
    [
        (status(state=OtaState.FAILED, error="ESP_FAIL", message="interrupted"), "ESP_FAIL"),
        (status(state=OtaState.ABORTED, message="aborted on request"), "aborted"),
    ],
)
def test_its_download_failed(last_ota: OtaStatus, error: str) -> None:
    """Whatever it runs: the device's own report of the job comes first."""
    assert device_verdict(job(), info(version=OLD, last_ota=last_ota)) == Verdict(
        UpdateStep.FAILED, FailureReason.DOWNLOAD_FAILED, error, last_ota.message
    )


def test_rolled_back() -> None:
    back = info(
        version=OLD,
        running_partition="ota_0",
        image_state=ImageState.VALID,
        last_invalid_partition="ota_1",
    )
    assert device_verdict(job(), back) == Verdict(
        UpdateStep.ROLLED_BACK,
        FailureReason.ROLLED_BACK,
        None,
        f"the bootloader rolled back from ota_1; {OLD} runs from ota_0",
    )


@pytest.mark.parametrize("invalid", ["ota_0", "ota_1"], ids=["from-partition", "running"])
def test_an_invalid_partition_that_is_not_a_rollback(invalid: str) -> None:
    """The slot the job started from, or the running one, was not the one written."""
    other = info(
        version="1.5.0",
        running_partition="ota_1",
        image_state=ImageState.VALID,
        last_invalid_partition=invalid,
    )
    assert device_verdict(job(from_partition="ota_0"), other) == Verdict(
        UpdateStep.FAILED,
        FailureReason.WRONG_FIRMWARE,
        None,
        f"runs 1.5.0 from ota_1, not {NEW}",
    )


def test_no_trace_of_the_job() -> None:
    other = info(version=OLD, image_state=ImageState.VALID, last_ota=status(ota_id="f00"))
    assert device_verdict(job(), other) == Verdict(
        UpdateStep.FAILED,
        FailureReason.INTERRUPTED,
        None,
        f"the device shows no trace of OTA {OTA_ID} and runs {OLD}",
    )
    # A job that never had an ota_id: the device's last job is never "ours".
    unstarted = job(ota_id=None)
    failed = info(version=OLD, last_ota=status(state=OtaState.FAILED, error="ESP_FAIL"))
    assert device_verdict(unstarted, failed).reason is FailureReason.INTERRUPTED


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, True),
        ({"state": OtaState.DOWNLOADING}, True),
        ({"image_size": None}, True),  # a device that does not say
        ({"ota_id": None}, False),
        ({"ota_id": "0ld000000000"}, False),  # its job before the start
        ({"state": OtaState.IDLE}, False),
        ({"target_version": "1.5.0"}, False),
        ({"image_size": 8192}, False),
    ],
)
def test_adoptable(change: dict[str, Any], expected: bool) -> None:
    record = job(ota_id=None, step=UpdateStep.STARTING)
    assert adoptable(record, status(**change)) is expected


def test_adoptable_before_the_size_is_known() -> None:
    record = job(ota_id=None, step=UpdateStep.STARTING, size=0)
    assert adoptable(record, status(image_size=8192))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            DeviceUnauthorizedError("secret refused"),
            Verdict(
                UpdateStep.FAILED,
                FailureReason.DEVICE_REFUSED,
                "HTTPD_401_UNAUTHORIZED",
                "secret refused",
            ),
        ),
        (
            DeviceRefusedError("ESP_ERR_NO_MEM", "no memory"),
            Verdict(UpdateStep.FAILED, FailureReason.DEVICE_REFUSED, "ESP_ERR_NO_MEM", "no memory"),
        ),
        (
            DeviceBusyError("ESP_ERR_INVALID_STATE", "busy"),
            Verdict(
                UpdateStep.FAILED, FailureReason.DEVICE_REFUSED, "ESP_ERR_INVALID_STATE", "busy"
            ),
        ),
        (
            DeviceTimeoutError("no answer"),
            Verdict(
                UpdateStep.FAILED,
                FailureReason.DEVICE_UNREACHABLE,
                "DeviceTimeoutError",
                "no answer",
            ),
        ),
        (
            CertificateMismatchError("another certificate"),
            Verdict(
                UpdateStep.FAILED,
                FailureReason.DEVICE_UNREACHABLE,
                "CertificateMismatchError",
                "another certificate",
            ),
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_error_verdict(error: EspOtaError, expected: Verdict) -> None:
    assert error_verdict(error) == expected
