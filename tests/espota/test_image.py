"""The image parser, the streaming verifier and the image builder."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from custom_components.esp_ota.espota.errors import (
    BadMagicError,
    ChecksumMismatchError,
    ImageError,
    ImageTooShortError,
    NoAppDescriptorError,
    SegmentLengthError,
    SegmentOverrunError,
    Sha256MismatchError,
    TooManySegmentsError,
)
from custom_components.esp_ota.espota.image import (
    DESCRIPTOR_READ_SIZE,
    ImageInfo,
    StreamingImageVerifier,
    parse_image,
    read_app_descriptor,
    xor_bytes,
)
from custom_components.esp_ota.espota.image_builder import (
    Defect,
    build_app_image,
    build_broken_image,
    corrupt_byte,
)

DEFECT_ERRORS: dict[Defect, type[ImageError]] = {
    Defect.BAD_MAGIC: BadMagicError,
    Defect.TOO_SHORT: ImageTooShortError,
    Defect.TOO_MANY_SEGMENTS: TooManySegmentsError,
    Defect.SEGMENT_OVERRUN: SegmentOverrunError,
    Defect.UNALIGNED_SEGMENT: SegmentLengthError,
    Defect.BAD_CHECKSUM: ChecksumMismatchError,
    Defect.BAD_SHA256: Sha256MismatchError,
    Defect.NO_APP_DESCRIPTOR: NoAppDescriptorError,
    Defect.TRUNCATED: SegmentOverrunError,
}


def stream(data: bytes, chunk_sizes: list[int]) -> ImageInfo:
    """Feed `data` through a verifier in chunks of the given sizes (cycled)."""
    verifier = StreamingImageVerifier()
    position = 0
    index = 0
    while position < len(data):
        size = chunk_sizes[index % len(chunk_sizes)]
        verifier.update(data[position : position + size])
        position += size
        index += 1
    assert verifier.bytes_received == len(data)
    return verifier.finish()


def test_built_image_reports_what_was_asked() -> None:
    """Every field chosen at build time comes back from the parser."""
    image = build_app_image(
        project="garden-valve",
        version="2.4.1",
        chip="ESP32-C3",
        min_chip_rev_full=3,
        max_chip_rev_full=199,
        secure_version=2,
        size=8192,
        idf_ver="v5.4",
        app_elf_sha256="ab" * 32,
    )
    info = parse_image(image)
    assert len(image) == 8192
    assert info.chip == "esp32c3"
    assert info.header.chip_id == 5
    assert info.header.min_chip_rev_full == 3
    assert info.header.max_chip_rev_full == 199
    assert info.header.hash_appended is True
    assert info.header.segment_count == len(info.segments) == 3
    assert info.app.project_name == "garden-valve"
    assert info.app.version == "2.4.1"
    assert info.app.secure_version == 2
    assert info.app.idf_ver == "v5.4"
    assert info.app.app_elf_sha256 == "ab" * 32
    assert info.app.mmu_page_size == 65536
    assert info.file_size == 8192
    assert info.image_length == 8192
    assert info.trailing_bytes == 0
    assert info.file_sha256 == hashlib.sha256(image).hexdigest()
    assert info.sha256 == image[-32:].hex()
    assert info.sha256 == hashlib.sha256(image[:-32]).hexdigest()
    assert info.checksum == image[-33]
    # Segments tile the file exactly: header, then each segment header and its data.
    offset = 24
    for segment in info.segments:
        assert segment.file_offset == offset + 8
        assert struct.unpack_from("<II", image, offset) == (segment.load_addr, segment.length)
        offset = segment.file_offset + segment.length


def test_image_without_hash() -> None:
    """Without an appended hash the checksum byte ends the image."""
    image = build_app_image(size=2048, hash_appended=False)
    info = parse_image(image)
    assert info.header.hash_appended is False
    assert info.sha256 is None
    assert info.image_length == 2048
    assert info.checksum == image[-1]


def test_trailing_bytes_are_reported_not_refused() -> None:
    """Padding or a signature block after the image is counted and hashed into the file."""
    image = build_app_image(size=4096) + b"\xe7" + b"\xff" * 4095
    info = parse_image(image)
    assert info.image_length == 4096
    assert info.trailing_bytes == 4096
    assert info.file_sha256 == hashlib.sha256(image).hexdigest()


def test_builder_is_deterministic_and_distinguishes_firmware() -> None:
    """Same inputs, same bytes; another version, another ELF SHA-256 and payload."""
    assert build_app_image(seed=3) == build_app_image(seed=3)
    first = parse_image(build_app_image(version="1.0.0"))
    second = parse_image(build_app_image(version="1.0.1"))
    assert first.app.app_elf_sha256 != second.app.app_elf_sha256


@pytest.mark.parametrize("size", [1023, 1025, 1032, 100])
def test_builder_refuses_impossible_sizes(size: int) -> None:
    """A size below 1024 or not a multiple of 16 cannot be laid out exactly."""
    with pytest.raises(ValueError, match="multiple of 16"):
        build_app_image(size=size)


def test_builder_refuses_bad_fields() -> None:
    """Fields that do not fit esp_app_desc_t are refused with their name."""
    with pytest.raises(ValueError, match="version"):
        build_app_image(version="x" * 32)
    with pytest.raises(ValueError, match="app_elf_sha256"):
        build_app_image(app_elf_sha256="abcd")
    with pytest.raises(ValueError, match="unknown chip"):
        build_app_image(chip="esp8266")


@pytest.mark.parametrize("size", [1024, 1040, 4096, 65536, 1_500_000 // 16 * 16])
def test_exact_sizes(size: int) -> None:
    """The builder hits every size it accepts exactly, and the result is valid."""
    image = build_app_image(size=size)
    assert len(image) == size
    assert parse_image(image).file_size == size


@pytest.mark.parametrize(
    "chunk_sizes",
    [[1], [3], [7, 1, 24, 8], [16], [1000, 24], [1023, 1, 2], [4096], [65536], [1 << 20]],
    ids=str,
)
def test_streaming_equals_whole_file_parse(chunk_sizes: list[int]) -> None:
    """Whatever the chunking, the verifier reports exactly what the whole-file parse does."""
    image = build_app_image(size=16384, version="3.1.4", chip="esp32s3", seed=7)
    assert stream(image, chunk_sizes) == parse_image(image)


def test_streaming_equals_whole_file_parse_at_random_splits() -> None:
    """Random splits, including inside headers, the checksum and the hash."""
    image = build_app_image(size=8192, seed=11) + b"\xff" * 100
    expected = parse_image(image)
    rng = random.Random(1234)
    for _ in range(60):
        cuts = sorted(rng.sample(range(1, len(image)), rng.randint(1, 12)))
        verifier = StreamingImageVerifier()
        for start, end in zip([0, *cuts], [*cuts, len(image)], strict=True):
            verifier.update(memoryview(image)[start:end])
        assert verifier.finish() == expected


def test_streaming_splits_at_every_structure_boundary() -> None:
    """A split at each offset around the header, segment headers, checksum and hash."""
    image = build_app_image(size=2048, seed=5)
    info = parse_image(image)
    interesting = {24, 32, 1024, info.image_length - 33, info.image_length - 32}
    for segment in info.segments:
        interesting.update({segment.file_offset - 8, segment.file_offset})
    for boundary in sorted(interesting):
        for cut in (boundary - 1, boundary, boundary + 1):
            verifier = StreamingImageVerifier()
            verifier.update(image[:cut])
            verifier.update(image[cut:])
            assert verifier.finish() == info, f"split at {cut}"


def test_descriptor_available_after_first_1024_bytes() -> None:
    """As esp_https_ota: nothing is known before 1 KiB, header and descriptor at 1 KiB."""
    image = build_app_image(size=65536, project="lamp", version="9.9.9")
    verifier = StreamingImageVerifier()
    verifier.update(image[: DESCRIPTOR_READ_SIZE - 1])
    assert (verifier.header, verifier.app) == (None, None)
    verifier.update(image[DESCRIPTOR_READ_SIZE - 1 : DESCRIPTOR_READ_SIZE])
    header, app = verifier.header, verifier.app
    assert app is not None
    assert app.project_name == "lamp"
    assert header is not None
    assert header.chip_id == 0


def test_read_app_descriptor_needs_exactly_the_first_kilobyte() -> None:
    """1024 bytes suffice; 1023 do not."""
    image = build_app_image(size=65536, project="lamp", version="9.9.9", chip="esp32c6")
    header, app = read_app_descriptor(image[:1024])
    assert (header.chip_id, app.project_name, app.version) == (13, "lamp", "9.9.9")
    header_from_more, _ = read_app_descriptor(image)
    assert header_from_more == header
    with pytest.raises(ImageTooShortError, match="1024"):
        read_app_descriptor(image[:1023])
    with pytest.raises(NoAppDescriptorError):
        read_app_descriptor(build_broken_image(Defect.NO_APP_DESCRIPTOR)[:1024])


@pytest.mark.parametrize("defect", list(Defect), ids=str)
def test_every_defect_has_its_error(defect: Defect) -> None:
    """Each malformation gets the typed error that names it, whole-file and streamed."""
    image = build_broken_image(defect, size=16384)
    error_type = DEFECT_ERRORS[defect]
    with pytest.raises(error_type) as whole:
        parse_image(image)
    assert str(whole.value)
    with pytest.raises(error_type) as streamed:
        stream(image, [97])
    assert type(streamed.value) is type(whole.value)


@pytest.mark.parametrize(
    ("defect", "known_after"),
    [
        (Defect.BAD_MAGIC, 1),
        (Defect.TOO_MANY_SEGMENTS, 24),
        (Defect.NO_APP_DESCRIPTOR, DESCRIPTOR_READ_SIZE),
    ],
    ids=str,
)
def test_errors_raised_as_early_as_knowable(defect: Defect, known_after: int) -> None:
    """The verifier stops a bad download at the byte that proves it bad."""
    image = build_broken_image(defect, size=16384)
    verifier = StreamingImageVerifier()
    verifier.update(image[: known_after - 1])
    with pytest.raises(DEFECT_ERRORS[defect]):
        verifier.update(image[known_after - 1 : known_after])


def test_unaligned_segment_raised_when_its_header_arrives() -> None:
    """A segment length that is not a multiple of 4 is refused at that segment's header."""
    image = build_broken_image(Defect.UNALIGNED_SEGMENT, size=16384)
    first_length = struct.unpack_from("<I", image, 24 + 4)[0]
    second_header_end = 24 + 8 + first_length + 8
    verifier = StreamingImageVerifier()
    verifier.update(image[: second_header_end - 1])
    with pytest.raises(SegmentLengthError, match=r"segment 1 .* not a multiple of 4"):
        verifier.update(image[second_header_end - 1 : second_header_end])


def without_descriptor(size: int, *, segment_count: int, bad_length_segment: int) -> bytes:
    """A built image with the descriptor's magic zeroed, `segment_count` in its header and
    segment `bad_length_segment`'s length set to 3 (not a multiple of 4)."""
    image = bytearray(build_app_image(size=size, hash_appended=False))
    image[32:36] = b"\0\0\0\0"
    image[1] = segment_count
    offset = 24
    for _ in range(bad_length_segment):
        offset += 8 + struct.unpack_from("<I", image, offset + 4)[0]
    struct.pack_into("<I", image, offset + 4, 3)
    return bytes(image)


@pytest.mark.parametrize(
    ("image", "error_type"),
    [
        # Issue #12 finding 8: segment 1's header lies beyond byte 1024. Whole, the parser
        # said SegmentLengthError; streamed, NoAppDescriptorError.
        (without_descriptor(4096, segment_count=2, bad_length_segment=1), NoAppDescriptorError),
        # Segment 1's header inside the first 1024 bytes: still after the descriptor.
        (without_descriptor(2048, segment_count=3, bad_length_segment=1), NoAppDescriptorError),
        # Segment 0's length is checked before the descriptor it holds.
        (without_descriptor(2048, segment_count=3, bad_length_segment=0), SegmentLengthError),
        # Under 1024 bytes, a missing descriptor (or anything after it) is "too short".
        (
            without_descriptor(2048, segment_count=3, bad_length_segment=1)[:1000],
            ImageTooShortError,
        ),
    ],
    ids=["segment-1-after-1024", "segment-1-before-1024", "segment-0", "short-file"],
)
def test_first_failing_check_in_the_bootloaders_order(
    image: bytes, error_type: type[ImageError]
) -> None:
    """Two defects: the error is the first check esp_image_format.c fails (segment 0's
    length, its descriptor's magic, then later segments), whole-file and in any chunking."""
    with pytest.raises(error_type) as whole:
        parse_image(image)
    for chunk_size in (1, 7, 36, 512, 1000, 1024, 1 << 20):
        with pytest.raises(error_type) as streamed:
            stream(image, [chunk_size])
        assert str(streamed.value) == str(whole.value), f"chunks of {chunk_size}"


def test_failed_verifier_keeps_failing() -> None:
    """After an error, more data or finish() report the same error, never success."""
    image = build_broken_image(Defect.BAD_MAGIC)
    verifier = StreamingImageVerifier()
    with pytest.raises(BadMagicError) as first:
        verifier.update(image)
    with pytest.raises(BadMagicError) as again:
        verifier.update(image)
    with pytest.raises(BadMagicError) as at_finish:
        verifier.finish()
    assert again.value is first.value
    assert at_finish.value is first.value


@pytest.mark.parametrize(
    ("cut_from_end", "message"),
    [(1, "inside the appended SHA-256"), (33, "before the checksum byte"), (34, "checksum")],
)
def test_truncated_footer(cut_from_end: int, message: str) -> None:
    """A file that ends in the padding, checksum or hash is too short, and says where."""
    image = build_app_image(size=4096)
    with pytest.raises(ImageTooShortError, match=message):
        parse_image(image[:-cut_from_end])


def test_zero_length_segment_and_empty_chunks() -> None:
    """A zero-length segment is legal; empty chunks change nothing."""
    image = bytearray(build_app_image(size=4096, hash_appended=False))
    # Append a fourth, empty segment before the footer: relayout by hand.
    info = parse_image(bytes(image))
    segments_end = info.segments[-1].file_offset + info.segments[-1].length
    body = bytearray(image[:segments_end]) + struct.pack("<II", 0x3FFB1000, 0)
    body[1] = 4
    body += b"\0" * (15 - len(body) % 16)
    body.append(info.checksum)
    verifier = StreamingImageVerifier()
    verifier.update(b"")
    verifier.update(bytes(body))
    result = verifier.finish()
    assert result.segments[-1].length == 0
    assert result.header.segment_count == 4
    assert result == parse_image(bytes(body))


def test_corrupt_byte_is_caught() -> None:
    """One flipped byte anywhere in segment data fails the checksum (and the hash)."""
    image = build_app_image(size=4096)
    info = parse_image(image)
    offset = info.segments[1].file_offset + 10
    with pytest.raises(ChecksumMismatchError):
        parse_image(corrupt_byte(image, offset))
    with pytest.raises(ValueError, match="outside"):
        corrupt_byte(image, len(image))


def test_xor_bytes_matches_a_plain_loop() -> None:
    """The vectorised XOR agrees with the obvious definition at every length and offset."""
    data = random.Random(3).randbytes(300)
    for start in range(9):
        for length in (0, 1, 7, 8, 9, 63, 64, 65, 250):
            piece = data[start : start + length]
            expected = 0
            for byte in piece:
                expected ^= byte
            assert xor_bytes(memoryview(piece)) == expected


def test_chip_revision_bounds() -> None:
    """The bootloader's rule: 0 and 0xFFFF as maximum mean no upper bound."""
    bounded = parse_image(build_app_image(min_chip_rev_full=100, max_chip_rev_full=301)).header
    assert not bounded.supports_chip_revision(99)
    assert bounded.supports_chip_revision(100)
    assert bounded.supports_chip_revision(301)
    assert not bounded.supports_chip_revision(302)
    assert bounded.chip_revision_range == "v1.0 - v3.1"
    for unset in (0, 0xFFFF):
        open_ended = parse_image(build_app_image(max_chip_rev_full=unset)).header
        assert open_ended.supports_chip_revision(9999)
        assert open_ended.chip_revision_range == "v0.0 - any"


@pytest.mark.parametrize("chunk_size", [4096, 65536, 70000])
def test_streaming_large_image_in_network_sized_chunks(chunk_size: int) -> None:
    """Segment data much larger than the XOR batch, in chunks below, at and above it."""
    image = build_app_image(size=512 * 1024, seed=21)
    assert stream(image, [chunk_size]) == parse_image(image)
    with pytest.raises(ChecksumMismatchError):
        stream(corrupt_byte(image, 300_000), [chunk_size])
