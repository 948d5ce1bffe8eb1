"""Build ESP application images: valid ones of an exact size, and deliberately broken ones.

Used by tests, the device simulator, benchmarks and the demo, so that every part of the
project can make real images without an ESP-IDF toolchain. The result is byte-for-byte
what esptool's ``elf2image`` lays out (header, segments, checksum, appended SHA-256), and
esptool's ``image-info`` reads it as valid (tests check this).
"""

from __future__ import annotations

import hashlib
import random
import struct
from enum import StrEnum

from .chips import CHIP_IDS, normalize_chip_name
from .image import (
    APP_DESC_MAGIC,
    APP_DESC_SIZE,
    CHECKSUM_SEED,
    IMAGE_HEADER_SIZE,
    IMAGE_MAGIC,
    MAX_SEGMENTS,
    SEGMENT_HEADER_SIZE,
    SHA256_SIZE,
    xor_bytes,
)

MIN_IMAGE_SIZE = 1024
# Where each chip's three segments load: flash-mapped data (DROM, holding the descriptor),
# internal data RAM, flash-mapped code (IROM). From the chips' memory maps, as esptool
# knows them; esptool only shows the app descriptor when segment 0 is in DROM.
_SEGMENT_LOAD_ADDRESSES: dict[str, tuple[int, int, int]] = {
    "esp32": (0x3F400020, 0x3FFB0000, 0x400D0020),
    "esp32s2": (0x3F000020, 0x3FFB0000, 0x40080020),
    "esp32s3": (0x3C000020, 0x3FC88000, 0x42000020),
    "esp32c3": (0x3C000020, 0x3FC80000, 0x42000020),
    "esp32c2": (0x3C000020, 0x3FCA0000, 0x42000020),
    "esp32c6": (0x42000020, 0x40800000, 0x42010020),
    "esp32c61": (0x42000020, 0x40800000, 0x42010020),
    "esp32c5": (0x42000020, 0x40800000, 0x42010020),
    "esp32h2": (0x42000020, 0x40800000, 0x42010020),
    "esp32p4": (0x40000020, 0x4FF00000, 0x40010020),
}
_SPI_MODE_DIO = 2
_SPI_SPEED_40M = 0
_SPI_SIZE_4MB = 2
_WP_PIN_DISABLED = 0xEE
_ENTRY_ADDR = 0x40081000


class Defect(StrEnum):
    """Ways to break an image, each caught by a specific ImageError."""

    BAD_MAGIC = "bad_magic"  # BadMagicError
    TOO_SHORT = "too_short"  # ImageTooShortError: fewer than 1024 bytes
    TOO_MANY_SEGMENTS = "too_many_segments"  # TooManySegmentsError
    SEGMENT_OVERRUN = "segment_overrun"  # SegmentOverrunError: a length past the end
    UNALIGNED_SEGMENT = "unaligned_segment"  # SegmentLengthError
    BAD_CHECKSUM = "bad_checksum"  # ChecksumMismatchError (SHA-256 still right)
    BAD_SHA256 = "bad_sha256"  # Sha256MismatchError
    NO_APP_DESCRIPTOR = "no_app_descriptor"  # NoAppDescriptorError
    TRUNCATED = "truncated"  # SegmentOverrunError: the download stopped half way


def _encode(text: str, size: int, field: str) -> bytes:
    raw = text.encode()
    if len(raw) >= size:
        raise ValueError(f"{field} {text!r} is longer than {size - 1} bytes")
    return raw.ljust(size, b"\0")


def _app_descriptor(
    *,
    project: str,
    version: str,
    secure_version: int,
    idf_ver: str,
    app_elf_sha256: str,
) -> bytes:
    elf_sha = bytes.fromhex(app_elf_sha256)
    if len(elf_sha) != 32:
        raise ValueError("app_elf_sha256 must be 64 hex digits")
    body = struct.pack(
        "<II8s32s32s16s16s32s32sHHB",
        APP_DESC_MAGIC,
        secure_version,
        b"\0" * 8,
        _encode(version, 32, "version"),
        _encode(project, 32, "project"),
        _encode("12:00:00", 16, "time"),
        _encode("Nov 25 2026", 16, "date"),
        _encode(idf_ver, 32, "idf_ver"),
        elf_sha,
        0,
        0,
        16,  # log2 of a 64 KiB MMU page
    )
    return body.ljust(APP_DESC_SIZE, b"\0")


def build_app_image(
    *,
    project: str = "demo",
    version: str = "1.0.0",
    chip: str = "esp32",
    min_chip_rev_full: int = 0,
    max_chip_rev_full: int = 399,
    secure_version: int = 0,
    size: int = 65536,
    idf_ver: str = "v5.5.1",
    app_elf_sha256: str | None = None,
    hash_appended: bool = True,
    seed: int = 0,
) -> bytes:
    """Return a valid application image of exactly `size` bytes.

    `size` must be at least 1024 (esp_https_ota reads that much first) and a multiple of
    16 (the checksum ends a 16-byte block and the hash is 32 bytes). The payload is
    deterministic for a given `seed`; `app_elf_sha256` defaults to a digest of the
    other fields, so two builds of different firmware never look the same.
    """
    if size < MIN_IMAGE_SIZE or size % 16:
        raise ValueError(f"size {size} must be at least {MIN_IMAGE_SIZE} and a multiple of 16")
    chip = normalize_chip_name(chip)
    if app_elf_sha256 is None:
        identity = f"{project}|{version}|{chip}|{secure_version}|{seed}".encode()
        app_elf_sha256 = hashlib.sha256(identity).hexdigest()
    descriptor = _app_descriptor(
        project=project,
        version=version,
        secure_version=secure_version,
        idf_ver=idf_ver,
        app_elf_sha256=app_elf_sha256,
    )
    # Segments end 4 bytes (no hash) or 36 bytes (hash) before the end: 3 bytes of
    # padding, the checksum byte ending a 16-byte block, then the 32-byte SHA-256.
    segments_end = size - (SHA256_SIZE + 4 if hash_appended else 4)
    data_total = segments_end - IMAGE_HEADER_SIZE - 3 * SEGMENT_HEADER_SIZE
    payload = random.Random(seed).randbytes(data_total - APP_DESC_SIZE)  # noqa: S311 - test data
    # The descriptor-carrying segment gets a quarter of the room, the others share the rest.
    first_length = APP_DESC_SIZE + (data_total - APP_DESC_SIZE) // 4 // 4 * 4
    second_length = (data_total - first_length) // 2 // 4 * 4
    lengths = (first_length, second_length, data_total - first_length - second_length)
    segment_data = [
        descriptor + payload[: first_length - APP_DESC_SIZE],
        payload[first_length - APP_DESC_SIZE : first_length - APP_DESC_SIZE + second_length],
        payload[first_length - APP_DESC_SIZE + second_length :],
    ]
    header = struct.pack(
        "<BBBBIB3BHBHH4sB",
        IMAGE_MAGIC,
        len(lengths),
        _SPI_MODE_DIO,
        (_SPI_SIZE_4MB << 4) | _SPI_SPEED_40M,
        _ENTRY_ADDR,
        _WP_PIN_DISABLED,
        0,
        0,
        0,
        CHIP_IDS[chip],
        min(min_chip_rev_full // 100, 0xFF),
        min_chip_rev_full,
        max_chip_rev_full,
        b"\0" * 4,
        1 if hash_appended else 0,
    )
    image = bytearray(header)
    checksum = CHECKSUM_SEED
    for load_addr, data in zip(_SEGMENT_LOAD_ADDRESSES[chip], segment_data, strict=True):
        image += struct.pack("<II", load_addr, len(data))
        image += data
        checksum ^= xor_bytes(memoryview(data))
    image += b"\0" * (15 - len(image) % 16)
    image.append(checksum)
    if hash_appended:
        image += hashlib.sha256(image).digest()
    assert len(image) == size
    return bytes(image)


def corrupt_byte(image: bytes, offset: int) -> bytes:
    """Return a copy of `image` with every bit of the byte at `offset` flipped."""
    if not 0 <= offset < len(image):
        raise ValueError(f"offset {offset} is outside the {len(image)}-byte image")
    corrupted = bytearray(image)
    corrupted[offset] ^= 0xFF
    return bytes(corrupted)


def _rehash(image: bytearray) -> None:
    """Recompute the appended SHA-256 after an edit, so only the intended defect shows."""
    image[-SHA256_SIZE:] = hashlib.sha256(image[:-SHA256_SIZE]).digest()


def _set_segment_length(image: bytearray, index: int, length: int) -> int:
    """Overwrite segment `index`'s length field; return the length it had."""
    offset = IMAGE_HEADER_SIZE
    for _ in range(index):
        offset += SEGMENT_HEADER_SIZE + struct.unpack_from("<I", image, offset + 4)[0]
    old_length: int = struct.unpack_from("<I", image, offset + 4)[0]
    struct.pack_into("<I", image, offset + 4, length)
    return old_length


def build_broken_image(
    defect: Defect,
    *,
    project: str = "demo",
    version: str = "1.0.0",
    chip: str = "esp32",
    size: int = 65536,
    seed: int = 0,
) -> bytes:
    """Return an image with exactly one defect (the others stay right)."""
    image = bytearray(
        build_app_image(project=project, version=version, chip=chip, size=size, seed=seed)
    )
    checksum_offset = len(image) - SHA256_SIZE - 1
    match defect:
        case Defect.BAD_MAGIC:
            image[0] = 0xE8
        case Defect.TOO_SHORT:
            del image[MIN_IMAGE_SIZE - 16 :]
        case Defect.TOO_MANY_SEGMENTS:
            image[1] = MAX_SEGMENTS + 1
        case Defect.SEGMENT_OVERRUN:
            _set_segment_length(image, 2, len(image))
        case Defect.UNALIGNED_SEGMENT:
            length = _set_segment_length(image, 1, 0)
            _set_segment_length(image, 1, length + 2)
        case Defect.BAD_CHECKSUM:
            image[checksum_offset] ^= 0x01
            _rehash(image)
        case Defect.BAD_SHA256:
            image[-1] ^= 0x01
        case Defect.NO_APP_DESCRIPTOR:
            # Zeroing the magic changes the segment data: keep the checksum consistent.
            magic_offset = IMAGE_HEADER_SIZE + SEGMENT_HEADER_SIZE
            image[checksum_offset] ^= xor_bytes(memoryview(image)[magic_offset : magic_offset + 4])
            image[magic_offset : magic_offset + 4] = b"\0\0\0\0"
            _rehash(image)
        case Defect.TRUNCATED:
            del image[len(image) // 2 :]
    return bytes(image)
