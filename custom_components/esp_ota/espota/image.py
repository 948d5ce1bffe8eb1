"""ESP application images: parse a whole file, or verify one as it streams in.

CONTRACT DRAFT (to be implemented): the models and signatures below are the interface
other modules (feed publisher, simulator, integration) build on. Keep names and fields.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
IMAGE_HEADER_SIZE = 24
SEGMENT_HEADER_SIZE = 8
APP_DESC_OFFSET = IMAGE_HEADER_SIZE + SEGMENT_HEADER_SIZE  # 32
APP_DESC_SIZE = 256
MAX_SEGMENTS = 16
CHECKSUM_SEED = 0xEF
# esp_https_ota_get_img_desc reads this many bytes before it looks at anything.
DESCRIPTOR_READ_SIZE = 1024


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """esp_image_header_t (24 bytes)."""

    segment_count: int
    spi_mode: int
    spi_speed: int
    spi_size: int
    entry_addr: int
    wp_pin: int
    spi_pin_drv: tuple[int, int, int]
    chip_id: int
    min_chip_rev: int  # legacy single-byte field
    min_chip_rev_full: int  # major * 100 + minor
    max_chip_rev_full: int
    hash_appended: bool


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: where its data sits in the file and where it loads."""

    index: int
    file_offset: int  # offset of the segment's data (after its 8-byte header)
    load_addr: int
    length: int


@dataclass(frozen=True, slots=True)
class AppDescriptor:
    """esp_app_desc_t (256 bytes at file offset 32)."""

    secure_version: int
    version: str
    project_name: str
    time: str
    date: str
    idf_ver: str
    app_elf_sha256: str  # 64 lowercase hex digits
    min_efuse_blk_rev_full: int
    max_efuse_blk_rev_full: int
    mmu_page_size: int  # bytes (the struct stores log2)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """Everything a whole-file parse, or a finished streaming verification, reports."""

    header: ImageHeader
    segments: tuple[Segment, ...]
    app: AppDescriptor
    chip: str  # chip name from chips.chip_name(header.chip_id)
    checksum: int  # the stored checksum byte (verified equal to the computed one)
    image_length: int  # bytes from offset 0 through the checksum byte, plus 32 if hashed
    sha256: str | None  # the appended SHA-256, hex (verified), None if not appended
    file_size: int
    file_sha256: str  # SHA-256 of the whole file, hex (what a feed lists)
    trailing_bytes: int  # bytes after image_length (padding, signature blocks)
