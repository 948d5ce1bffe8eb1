"""Corrupt and truncated images never switch the boot partition."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from custom_components.esp_ota.espota.image_builder import Defect, build_broken_image, corrupt_byte
from custom_components.esp_ota.espota.protocol import EventType, ImageState, OtaState

from .devices import DEFAULT_PROJECT, IMAGE_SIZE, DeviceUnderTest
from .support import (
    EventRecorder,
    FirmwareHost,
    Offer,
    assert_on,
    make_image,
    reboot,
    sha256_hex,
    update,
)

VERSION = "1.1.0"
GOOD = make_image(VERSION)
# A byte of segment data well past the first 1024 bytes (the header and descriptor).
MIDDLE = IMAGE_SIZE // 2 + 7


def _broken(defect: Defect) -> bytes:
    return build_broken_image(defect, project=DEFAULT_PROJECT, version=VERSION, size=IMAGE_SIZE)


def _offer_as_file(firmware: FirmwareHost, data: bytes) -> Offer:
    """The file served, and the request describing exactly that file."""
    return firmware.publish(data, VERSION)


# name: how to serve and describe it. Every one ends ESP_ERR_OTA_VALIDATE_FAILED.
CASES: dict[str, Callable[[FirmwareHost], Offer]] = {
    # A flipped byte; the request's sha256 is the good image's.
    "flipped byte": lambda fw: _offer_as_file(fw, corrupt_byte(GOOD, MIDDLE)).but(
        sha256=sha256_hex(GOOD)
    ),
    # A flipped byte, the request describing the corrupt file: only the image checks
    # (checksum, appended SHA-256) can catch it.
    "flipped byte, request of the corrupt file": lambda fw: _offer_as_file(
        fw, corrupt_byte(GOOD, MIDDLE)
    ),
    "bad checksum": lambda fw: _offer_as_file(fw, _broken(Defect.BAD_CHECKSUM)),
    "bad appended SHA-256": lambda fw: _offer_as_file(fw, _broken(Defect.BAD_SHA256)),
    "bad magic": lambda fw: _offer_as_file(fw, _broken(Defect.BAD_MAGIC)),
    "segment past the end": lambda fw: _offer_as_file(fw, _broken(Defect.SEGMENT_OVERRUN)),
    # Half the file, served whole; the request is the whole image's.
    "truncated file": lambda fw: _offer_as_file(fw, GOOD[: IMAGE_SIZE // 2]).but(
        sha256=sha256_hex(GOOD), size=IMAGE_SIZE
    ),
    # Half the file, and a request describing exactly that half.
    "truncated file, request of the truncated file": lambda fw: _offer_as_file(
        fw, GOOD[: IMAGE_SIZE // 2]
    ),
    # A good image; the request's size is not the served Content-Length.
    "size above Content-Length": lambda fw: _offer_as_file(fw, GOOD).but(size=IMAGE_SIZE + 16),
    "size below Content-Length": lambda fw: _offer_as_file(fw, GOOD).but(size=IMAGE_SIZE - 16),
    # A good image whose SHA-256 is not the request's.
    "another sha256": lambda fw: _offer_as_file(fw, GOOD).but(sha256=sha256_hex(b"other")),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_images_never_switch_the_boot_partition(
    dut: DeviceUnderTest, firmware: FirmwareHost, case: str
) -> None:
    """The job fails with ESP_ERR_OTA_VALIDATE_FAILED, the boot partition stays ota_0,
    and a reboot comes back on the old firmware."""
    offer = CASES[case](firmware)
    async with EventRecorder(dut) as recorder:
        ota_id, status, info = await update(dut, offer)
        await recorder.wait_for(
            "the job's end", lambda e: e.type in (EventType.ABORT, EventType.FINISH)
        )
        events = recorder.job(ota_id)
    assert (status.state, status.error) == (OtaState.FAILED, "ESP_ERR_OTA_VALIDATE_FAILED"), status
    assert status.message, status
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.last_ota == status
    types = [e.type for e in events]
    assert EventType.UPDATE_BOOT_PARTITION not in types, recorder.types(events)
    assert EventType.REBOOT not in types, recorder.types(events)

    after = await reboot(dut)
    assert_on(after, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert after.last_invalid_partition is None
    assert (after.last_ota.ota_id, after.last_ota.state) == (ota_id, OtaState.FAILED)
