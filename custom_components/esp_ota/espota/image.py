"""ESP application images: parse a whole file, or verify one as it streams in.

The layout (esp_app_format.h, esp_app_desc.h) is described in docs/image.md. There is
one parser: ``StreamingImageVerifier`` consumes chunks of any size in constant memory,
and ``parse_image`` is that verifier fed the whole file at once. Its checks run in the
bootloader's order (esp_image_format.c), which is file order, and the checks tied to a
fixed offset run between the bytes before and after it, so how the file is cut into
chunks never changes the verdict.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum, auto

import numpy as np

from .chips import chip_name, format_chip_revision
from .errors import (
    BadMagicError,
    ChecksumMismatchError,
    ImageTooShortError,
    NoAppDescriptorError,
    SegmentLengthError,
    SegmentOverrunError,
    Sha256MismatchError,
    TooManySegmentsError,
)

IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
IMAGE_HEADER_SIZE = 24
SEGMENT_HEADER_SIZE = 8
APP_DESC_OFFSET = IMAGE_HEADER_SIZE + SEGMENT_HEADER_SIZE  # 32
APP_DESC_SIZE = 256
# The descriptor's magic word ends here. The bootloader checks it right after segment 0's
# header (verify_segment_header, index 0), so before any later segment header: file order.
_APP_DESC_MAGIC_END = APP_DESC_OFFSET + 4  # 36
MAX_SEGMENTS = 16
CHECKSUM_SEED = 0xEF
SHA256_SIZE = 32
# esp_https_ota_get_img_desc reads this many bytes before it looks at anything.
DESCRIPTOR_READ_SIZE = 1024
# Callers that choose their read size (the feed download, the firmware server) read this
# much at a time: large enough that per-call costs vanish next to SHA-256.
RECOMMENDED_CHUNK_SIZE = 64 * 1024
# Segment data arriving in small pieces is XORed in batches of this size: numpy's per-call
# cost (~3 us) would otherwise dominate small network chunks.
_XOR_BATCH = 64 * 1024
# max_chip_rev_full values that mean "no upper bound" (bootloader_common_loader.c).
CHIP_REV_UNSET = (0, 0xFFFF)

# esp_image_header_t: magic, segment_count, spi_mode, spi_speed|spi_size, entry_addr,
# wp_pin, spi_pin_drv[3], chip_id, min_chip_rev, min_chip_rev_full, max_chip_rev_full,
# reserved[4], hash_appended.
_HEADER = struct.Struct("<BBBBIB3BHBHH4sB")
_SEGMENT_HEADER = struct.Struct("<II")
# esp_app_desc_t up to mmu_page_size; the rest of its 256 bytes is reserved.
_APP_DESC = struct.Struct("<II8s32s32s16s16s32s32sHHB")


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

    def supports_chip_revision(self, revision_full: int) -> bool:
        """Whether a chip of this revision may run the image, as the bootloader decides.

        A max_chip_rev_full of 0 or 0xFFFF means no upper bound.
        """
        if revision_full < self.min_chip_rev_full:
            return False
        return self.max_chip_rev_full in CHIP_REV_UNSET or revision_full <= self.max_chip_rev_full

    @property
    def chip_revision_range(self) -> str:
        """Human form of the supported chip revisions, e.g. "v0.0 - v3.99"."""
        upper = (
            "any"
            if self.max_chip_rev_full in CHIP_REV_UNSET
            else format_chip_revision(self.max_chip_rev_full)
        )
        return f"{format_chip_revision(self.min_chip_rev_full)} - {upper}"


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
    mmu_page_size: int  # bytes (the struct stores log2); 0 when the field is unset


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


def _c_string(raw: bytes) -> str:
    """Decode a NUL-padded C string field."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _parse_header(raw: bytes) -> ImageHeader:
    (
        magic,
        segment_count,
        spi_mode,
        spi_speed_size,
        entry_addr,
        wp_pin,
        drv_0,
        drv_1,
        drv_2,
        chip_id,
        min_chip_rev,
        min_chip_rev_full,
        max_chip_rev_full,
        _reserved,
        hash_appended,
    ) = _HEADER.unpack(raw)
    if magic != IMAGE_MAGIC:  # pragma: no cover - checked on the first byte already
        raise BadMagicError(f"image magic is 0x{magic:02x}, expected 0x{IMAGE_MAGIC:02x}")
    if segment_count > MAX_SEGMENTS:
        raise TooManySegmentsError(
            f"header declares {segment_count} segments, at most {MAX_SEGMENTS} are allowed"
        )
    return ImageHeader(
        segment_count=segment_count,
        spi_mode=spi_mode,
        spi_speed=spi_speed_size & 0x0F,
        spi_size=spi_speed_size >> 4,
        entry_addr=entry_addr,
        wp_pin=wp_pin,
        spi_pin_drv=(drv_0, drv_1, drv_2),
        chip_id=chip_id,
        min_chip_rev=min_chip_rev,
        min_chip_rev_full=min_chip_rev_full,
        max_chip_rev_full=max_chip_rev_full,
        hash_appended=hash_appended == 1,
    )


def _missing_app_descriptor(header: ImageHeader, first_bytes: bytes) -> NoAppDescriptorError | None:
    """The error for an image without esp_app_desc_t (from its first 36 bytes), else None."""
    magic = struct.unpack_from("<I", first_bytes, APP_DESC_OFFSET)[0]
    if header.segment_count and magic == APP_DESC_MAGIC:
        return None
    return NoAppDescriptorError(
        f"no application descriptor at offset {APP_DESC_OFFSET} (found magic "
        f"0x{magic:08x}, expected 0x{APP_DESC_MAGIC:08x}): this is not an application "
        "image (a bootloader or a RAM-only image?)"
    )


def _parse_app_descriptor(first_bytes: bytes) -> AppDescriptor:
    """Read esp_app_desc_t (its magic already checked) from the first 1024 bytes."""
    raw = first_bytes[APP_DESC_OFFSET : APP_DESC_OFFSET + _APP_DESC.size]
    (
        _magic,
        secure_version,
        _reserv1,
        version,
        project_name,
        time,
        date,
        idf_ver,
        app_elf_sha256,
        min_efuse_blk_rev_full,
        max_efuse_blk_rev_full,
        mmu_page_size_log2,
    ) = _APP_DESC.unpack(raw)
    return AppDescriptor(
        secure_version=secure_version,
        version=_c_string(version),
        project_name=_c_string(project_name),
        time=_c_string(time),
        date=_c_string(date),
        idf_ver=_c_string(idf_ver),
        app_elf_sha256=app_elf_sha256.hex(),
        min_efuse_blk_rev_full=min_efuse_blk_rev_full,
        max_efuse_blk_rev_full=max_efuse_blk_rev_full,
        mmu_page_size=(1 << mmu_page_size_log2) if mmu_page_size_log2 else 0,
    )


def read_app_descriptor(first_bytes: bytes | memoryview) -> tuple[ImageHeader, AppDescriptor]:
    """Read the header and app descriptor from an image's first bytes (>= 1024 needed).

    This is what esp_https_ota does before it writes anything: a device can refuse an
    image for the wrong chip, revision or project after 1 KiB, without downloading more.
    """
    verifier = StreamingImageVerifier()
    verifier.update(memoryview(first_bytes)[:DESCRIPTOR_READ_SIZE])
    if verifier.header is None or verifier.app is None:
        raise ImageTooShortError(
            f"got {len(first_bytes)} bytes, the image header and app descriptor need "
            f"the first {DESCRIPTOR_READ_SIZE}"
        )
    return verifier.header, verifier.app


def parse_image(data: bytes | memoryview) -> ImageInfo:
    """Parse and fully verify a whole image file."""
    verifier = StreamingImageVerifier()
    verifier.update(data)
    return verifier.finish()


def xor_bytes(data: memoryview) -> int:
    """XOR of every byte, at memory speed (8 bytes a lane, then folded)."""
    whole_words = len(data) // 8 * 8
    result = 0
    if whole_words:
        lanes = int(np.bitwise_xor.reduce(np.frombuffer(data[:whole_words], dtype=np.uint64)))
        lanes ^= lanes >> 32
        lanes ^= lanes >> 16
        lanes ^= lanes >> 8
        result = lanes & 0xFF
    for byte in data[whole_words:]:
        result ^= byte
    return result


class _Stage(IntEnum):
    HEADER = auto()
    SEGMENT_HEADER = auto()
    SEGMENT_DATA = auto()
    PADDING = auto()
    CHECKSUM = auto()
    HASH = auto()
    TRAILING = auto()


class StreamingImageVerifier:
    """Verify an image chunk by chunk, in constant memory, as it downloads.

    Checks run in the bootloader's order, which is file order: the magic on the first
    byte, the segment count once the 24-byte header is in, each segment length when its
    header arrives, the app descriptor's magic once its bytes (32-35) are in, right after
    segment 0's header and before any later one. Errors are raised when knowable, except
    a missing descriptor, which is raised once 1024 bytes are in (as esp_https_ota reads
    them); from the failed descriptor check until then no further check runs, since none
    would come first. Truncation, checksum and SHA-256 are known at ``finish()``. For any
    bytes and any chunking the verdict is the same: ``parse_image``'s.
    """

    def __init__(self) -> None:
        self._stage = _Stage.HEADER
        self._pending = bytearray()  # at most one header (24 bytes) or the hash (32)
        self._first_bytes = bytearray()  # the first 1024 bytes, for the descriptor
        self._hasher = hashlib.sha256()
        self._image_sha256: bytes | None = None
        self._received = 0
        self._header: ImageHeader | None = None
        self._app: AppDescriptor | None = None
        self._segments: list[Segment] = []
        self._segment_left = 0
        self._padding_left = 0
        self._xor = CHECKSUM_SEED
        self._xor_batch = bytearray(_XOR_BATCH)
        self._xor_batch_fill = 0
        self._stored_checksum = 0
        self._stored_sha256: bytes | None = None
        self._image_length = 0
        self._failed: Exception | None = None
        # Set when the descriptor check failed: raised at byte 1024, nothing checked before.
        self._missing_descriptor: NoAppDescriptorError | None = None

    @property
    def header(self) -> ImageHeader | None:
        """The image header, once the first 1024 bytes have arrived and proved an app."""
        return self._header if self._app is not None else None

    @property
    def app(self) -> AppDescriptor | None:
        """The app descriptor, once the first 1024 bytes have arrived."""
        return self._app

    @property
    def bytes_received(self) -> int:
        """How many bytes have been fed so far."""
        return self._received

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk of the file. Raises an ImageError as soon as one is known."""
        if self._failed is not None:
            raise self._failed
        view = memoryview(chunk).cast("B")
        size = len(view)
        if self._stage is _Stage.SEGMENT_DATA and 0 < size < self._segment_left and self._app:
            # The hot path: a chunk inside one segment's data, after the first 1024 bytes.
            self._hasher.update(view)
            self._xor_segment_data(view)
            self._segment_left -= size
            self._received += size
            return
        try:
            self._consume(view)
        except Exception as err:
            self._failed = err
            raise

    def finish(self) -> ImageInfo:
        """Check the end of the file and return what was verified."""
        if self._failed is not None:
            raise self._failed
        if self._received < DESCRIPTOR_READ_SIZE:
            raise ImageTooShortError(
                f"file is {self._received} bytes; an application image is at least "
                f"{DESCRIPTOR_READ_SIZE} (esp_https_ota reads that much before anything else)"
            )
        header, app = self._header, self._app
        assert header is not None
        assert app is not None
        if self._stage in (_Stage.SEGMENT_HEADER, _Stage.SEGMENT_DATA):
            index = len(self._segments) - (1 if self._stage is _Stage.SEGMENT_DATA else 0)
            raise SegmentOverrunError(
                f"segment {index} of {header.segment_count} runs past the end of the file "
                f"({self._received} bytes)"
            )
        if self._stage in (_Stage.PADDING, _Stage.CHECKSUM):
            raise ImageTooShortError(
                f"file ends at {self._received} bytes, before the checksum byte"
            )
        if self._stage is _Stage.HASH:
            raise ImageTooShortError(
                f"file ends at {self._received} bytes, inside the appended SHA-256"
            )
        self._flush_xor_batch()
        computed = self._xor
        if computed != self._stored_checksum:
            raise ChecksumMismatchError(
                f"checksum byte is 0x{self._stored_checksum:02x}, the segment data gives "
                f"0x{computed:02x}"
            )
        if self._stored_sha256 is not None and self._stored_sha256 != self._image_sha256:
            assert self._image_sha256 is not None
            raise Sha256MismatchError(
                f"appended SHA-256 is {self._stored_sha256.hex()}, the image bytes hash to "
                f"{self._image_sha256.hex()}"
            )
        return ImageInfo(
            header=header,
            segments=tuple(self._segments),
            app=app,
            chip=chip_name(header.chip_id),
            checksum=self._stored_checksum,
            image_length=self._image_length,
            sha256=self._stored_sha256.hex() if self._stored_sha256 is not None else None,
            file_size=self._received,
            file_sha256=self._hasher.hexdigest(),
            trailing_bytes=self._received - self._image_length,
        )

    # --- the state machine -------------------------------------------------------

    def _consume(self, view: memoryview) -> None:
        if not view:
            return
        if self._received == 0 and view[0] != IMAGE_MAGIC:
            raise BadMagicError(f"first byte is 0x{view[0]:02x}, expected 0x{IMAGE_MAGIC:02x}")
        start = self._received
        self._received += len(view)
        if start >= DESCRIPTOR_READ_SIZE:
            self._walk(view, start)
            return
        self._first_bytes += view[: DESCRIPTOR_READ_SIZE - start]
        # The checks at fixed offsets run between the bytes before and after them, whatever
        # the chunking: a chunk crossing one is walked in two parts.
        done = 0
        for checkpoint in (_APP_DESC_MAGIC_END, DESCRIPTOR_READ_SIZE):
            if start < checkpoint <= start + len(view):
                self._walk(view[done : checkpoint - start], start + done)
                done = checkpoint - start
                self._check_at(checkpoint)
        self._walk(view[done:], start + done)

    def _walk(self, view: memoryview, offset: int) -> None:
        """Run the structure's state machine over `view`, which starts at file `offset`."""
        if self._missing_descriptor is not None:
            return  # refused at byte 1024; no check before that may come first
        position = 0
        while position < len(view):
            position = self._step(view, position, offset + position)

    def _check_at(self, checkpoint: int) -> None:
        """The checks made once exactly `checkpoint` bytes have been walked."""
        first_bytes = bytes(self._first_bytes)
        assert self._header is not None  # 24 bytes are in: the header was parsed
        if checkpoint == _APP_DESC_MAGIC_END:
            self._missing_descriptor = _missing_app_descriptor(self._header, first_bytes)
        elif self._missing_descriptor is not None:
            raise self._missing_descriptor
        else:
            self._app = _parse_app_descriptor(first_bytes)

    def _xor_segment_data(self, piece: memoryview) -> None:
        size = len(piece)
        if size >= _XOR_BATCH:
            self._xor ^= xor_bytes(piece)
            return
        if self._xor_batch_fill + size > _XOR_BATCH:
            self._flush_xor_batch()
        self._xor_batch[self._xor_batch_fill : self._xor_batch_fill + size] = piece
        self._xor_batch_fill += size

    def _flush_xor_batch(self) -> None:
        self._xor ^= xor_bytes(memoryview(self._xor_batch)[: self._xor_batch_fill])
        self._xor_batch_fill = 0

    def _take(self, view: memoryview, position: int, size: int) -> bytes | None:
        """Collect `size` bytes across chunks; None until they are all in."""
        wanted = size - len(self._pending)
        self._pending += view[position : position + wanted]
        if len(self._pending) < size:
            return None
        taken = bytes(self._pending)
        self._pending.clear()
        return taken

    def _step(self, view: memoryview, position: int, offset: int) -> int:
        """Consume bytes of one stage from `position`; return the new position."""
        stage = self._stage
        if stage is _Stage.SEGMENT_DATA:
            piece = view[position : position + self._segment_left]
            self._xor_segment_data(piece)
            self._hasher.update(piece)
            self._segment_left -= len(piece)
            if self._segment_left == 0:
                self._end_of_segments_check(offset + len(piece))
            return position + len(piece)
        if stage is _Stage.PADDING:
            piece = view[position : position + self._padding_left]
            self._hasher.update(piece)
            self._padding_left -= len(piece)
            if self._padding_left == 0:
                self._stage = _Stage.CHECKSUM
            return position + len(piece)
        if stage is _Stage.TRAILING:
            self._hasher.update(view[position:])
            return len(view)
        if stage is _Stage.CHECKSUM:
            self._stored_checksum = view[position]
            self._hasher.update(view[position : position + 1])
            self._image_length = offset + 1
            if self._header is not None and self._header.hash_appended:
                # One pass of SHA-256 serves both digests: the image's (up to here) and,
                # continued over the hash and any trailing bytes, the whole file's.
                self._image_sha256 = self._hasher.copy().digest()
                self._stage = _Stage.HASH
            else:
                self._stage = _Stage.TRAILING
            return position + 1
        size = {
            _Stage.HEADER: IMAGE_HEADER_SIZE,
            _Stage.SEGMENT_HEADER: SEGMENT_HEADER_SIZE,
            _Stage.HASH: SHA256_SIZE,
        }[stage]
        end = min(len(view), position + size - len(self._pending))
        raw = self._take(view, position, size)
        self._hasher.update(view[position:end])
        if raw is not None:
            self._structure_complete(raw, offset + (end - position))
        return end

    def _structure_complete(self, raw: bytes, offset_after: int) -> None:
        """A header, segment header or hash has fully arrived; `offset_after` follows it."""
        if self._stage is _Stage.HEADER:
            self._header = _parse_header(raw)
            self._end_of_segments_check(offset_after)
        elif self._stage is _Stage.SEGMENT_HEADER:
            load_addr, length = _SEGMENT_HEADER.unpack(raw)
            index = len(self._segments)
            if length % 4:
                raise SegmentLengthError(
                    f"segment {index} (load address 0x{load_addr:08x}) is {length} bytes "
                    "long, not a multiple of 4"
                )
            self._segments.append(Segment(index, offset_after, load_addr, length))
            self._segment_left = length
            self._stage = _Stage.SEGMENT_DATA
            if length == 0:
                self._end_of_segments_check(offset_after)
        else:  # the appended SHA-256
            self._stored_sha256 = raw
            self._image_length += SHA256_SIZE
            self._stage = _Stage.TRAILING

    def _end_of_segments_check(self, offset: int) -> None:
        """After the header or a segment's data: the next segment, or the checksum."""
        assert self._header is not None
        if len(self._segments) < self._header.segment_count:
            self._stage = _Stage.SEGMENT_HEADER
            return
        # Zero padding so that the checksum byte is the last byte of a 16-byte block.
        self._padding_left = 15 - offset % 16
        self._stage = _Stage.PADDING if self._padding_left else _Stage.CHECKSUM


__all__ = [
    "APP_DESC_MAGIC",
    "APP_DESC_OFFSET",
    "APP_DESC_SIZE",
    "CHECKSUM_SEED",
    "DESCRIPTOR_READ_SIZE",
    "IMAGE_HEADER_SIZE",
    "IMAGE_MAGIC",
    "MAX_SEGMENTS",
    "RECOMMENDED_CHUNK_SIZE",
    "SEGMENT_HEADER_SIZE",
    "SHA256_SIZE",
    "AppDescriptor",
    "ImageHeader",
    "ImageInfo",
    "Segment",
    "StreamingImageVerifier",
    "parse_image",
    "read_app_descriptor",
    "xor_bytes",
]
