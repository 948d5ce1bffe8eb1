"""Fuzzing the image parser: streamed and whole-file verdicts agree, and are the right ones.

Inputs are valid images from the builder, mutated (bytes flipped, inserted, deleted;
segment counts and lengths changed; truncated, extended), and raw bytes. For each, the
whole-file parse and the streaming verifier, fed in chunks cut anywhere, must give the
same verdict: the same ImageInfo, or the same error type and message. Only ImageError
subclasses may come out. The error type must also be the one a plain reference gives:
the checks in esp_image_format.c's order (which is file order, the app descriptor's magic
checked right after segment 0's header), with this project's rule that a missing
descriptor is reported once 1024 bytes are in and a shorter file is ImageTooShortError.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
import struct

from hypothesis import event, example, given
from hypothesis import strategies as st

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
    APP_DESC_MAGIC,
    APP_DESC_OFFSET,
    CHECKSUM_SEED,
    DESCRIPTOR_READ_SIZE,
    IMAGE_HEADER_SIZE,
    IMAGE_MAGIC,
    MAX_SEGMENTS,
    SEGMENT_HEADER_SIZE,
    SHA256_SIZE,
    ImageInfo,
    StreamingImageVerifier,
    parse_image,
)
from custom_components.esp_ota.espota.image_builder import build_app_image

Verdict = ImageInfo | tuple[type[ImageError], str]
_APP_DESC_MAGIC_BYTES = struct.pack("<I", APP_DESC_MAGIC)


def whole_verdict(data: bytes) -> Verdict:
    """parse_image's answer; anything but an ImageError propagates and fails the test."""
    try:
        return parse_image(data)
    except ImageError as err:
        return type(err), str(err)


def streamed_verdict(data: bytes, cuts: list[int]) -> Verdict:
    """The streaming verifier's answer, fed `data` cut at `cuts`."""
    verifier = StreamingImageVerifier()
    bounds = [0, *sorted(set(cuts)), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            verifier.update(memoryview(data)[start:end])
        return verifier.finish()
    except ImageError as err:
        return type(err), str(err)


def walk_segments(data: bytes) -> tuple[type[ImageError] | None, int, int]:
    """Header and segments in esp_image_format.c's order: the first error found (None if
    none), where the segments end (past the file's end if it ends inside them), the XOR."""
    if data[:1] not in (b"", bytes([IMAGE_MAGIC])):
        return BadMagicError, 0, 0
    # A file shorter than the header is too short whatever it holds: no segments then.
    segment_count = data[1] if len(data) >= IMAGE_HEADER_SIZE else 0
    if segment_count > MAX_SEGMENTS:
        return TooManySegmentsError, 0, 0
    offset, checksum = IMAGE_HEADER_SIZE, CHECKSUM_SEED
    for index in range(segment_count):
        if offset + SEGMENT_HEADER_SIZE > len(data):
            offset = len(data) + 1  # the file ends inside this segment's header
            break
        length = struct.unpack_from("<I", data, offset + 4)[0]
        if length % 4:
            return SegmentLengthError, 0, 0
        # verify_segment_header(0): after segment 0's length, the descriptor's magic.
        if index == 0 and data[APP_DESC_OFFSET : APP_DESC_OFFSET + 4] != _APP_DESC_MAGIC_BYTES:
            return NoAppDescriptorError, 0, 0
        offset += SEGMENT_HEADER_SIZE
        checksum = functools.reduce(operator.xor, data[offset : offset + length], checksum)
        offset += length
    return (NoAppDescriptorError if segment_count == 0 else None), offset, checksum


def footer_error(data: bytes, segments_end: int, checksum: int) -> type[ImageError] | None:
    """After the segments: padding, the checksum byte and the appended SHA-256."""
    if segments_end > len(data):
        return SegmentOverrunError
    checksum_offset = segments_end + 15 - segments_end % 16
    hash_appended = data[23] == 1
    image_end = checksum_offset + 1 + (SHA256_SIZE if hash_appended else 0)
    if image_end > len(data):
        return ImageTooShortError
    if data[checksum_offset] != checksum:
        return ChecksumMismatchError
    image_sha256 = hashlib.sha256(data[: checksum_offset + 1]).digest()
    if hash_appended and data[checksum_offset + 1 : image_end] != image_sha256:
        return Sha256MismatchError
    return None


def reference_error(data: bytes) -> type[ImageError] | None:
    """The error `data` must get, None when it is a valid image."""
    error, segments_end, checksum = walk_segments(data)
    if error in (BadMagicError, TooManySegmentsError, SegmentLengthError):
        return error  # raised as its bytes arrive, whether or not the file goes on
    if len(data) < DESCRIPTOR_READ_SIZE:
        return ImageTooShortError  # esp_https_ota reads 1024 bytes before anything else
    if error is not None:
        return error  # the missing descriptor, at byte 1024
    return footer_error(data, segments_end, checksum)


@functools.cache
def base_image(size: int, hash_appended: bool, seed: int) -> bytes:
    """A valid image from the builder (cached: hypothesis asks for the same ones often)."""
    return build_app_image(size=size, hash_appended=hash_appended, seed=seed)


def segment_length_offsets(image: bytes | bytearray) -> list[int]:
    """Where each declared segment's length field sits, as far as the bytes go."""
    offsets: list[int] = []
    offset = IMAGE_HEADER_SIZE
    for _ in range(min(image[1], MAX_SEGMENTS) if len(image) > 1 else 0):
        if offset + SEGMENT_HEADER_SIZE > len(image):
            break
        offsets.append(offset + 4)
        offset += SEGMENT_HEADER_SIZE + struct.unpack_from("<I", image, offset + 4)[0]
    return offsets


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A built image with a few mutations, most aimed at the structure's bytes."""
    image = bytearray(
        base_image(
            draw(st.sampled_from([1024, 1040, 1536, 2048, 4096])),
            draw(st.booleans()),
            draw(st.integers(0, 3)),
        )
    )
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "flip",
                    "insert",
                    "delete",
                    "segment_count",
                    "segment_length",
                    "descriptor_magic",
                    "truncate",
                    "extend",
                ]
            )
        )
        size = len(image)
        if kind == "flip" and size:
            # Most flips land on the header, segment 0's header and the descriptor's
            # magic, or on the checksum byte and the hash at the end.
            low, high = draw(
                st.sampled_from([(0, APP_DESC_OFFSET + 8), (size - 48, size), (0, size)])
            )
            offset = draw(st.integers(max(low, 0), min(high, size) - 1))
            image[offset] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            offset = draw(st.integers(0, size))
            image[offset:offset] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and size:
            offset = draw(st.integers(0, size - 1))
            del image[offset : offset + draw(st.integers(1, 16))]
        elif kind == "segment_count" and size > 1:
            image[1] = draw(st.integers(0, MAX_SEGMENTS + 2))
        elif kind == "segment_length" and (fields := segment_length_offsets(image)):
            field = draw(st.sampled_from(fields))
            old = struct.unpack_from("<I", image, field)[0]
            new = draw(
                st.one_of(
                    st.integers(max(old - 8, 0), old + 8),
                    st.sampled_from([0, 1, 2, 3, 4, 0xFFFFFFFF, 0x7FFFFFFC]),
                    st.integers(0, 0xFFFFFFFF),
                )
            )
            struct.pack_into("<I", image, field, new % (1 << 32))
        elif kind == "descriptor_magic" and size >= APP_DESC_OFFSET + 4:
            struct.pack_into("<I", image, APP_DESC_OFFSET, draw(st.integers(0, 0xFFFFFFFF)))
        elif kind == "truncate":
            del image[draw(st.integers(0, size)) :]
        elif kind == "extend":
            image += draw(st.binary(min_size=1, max_size=64))
    return bytes(image)


# Raw bytes: mostly with the image magic and a plausible segment count, so that they get
# past the first checks.
raw_images = st.builds(
    lambda count, body: bytes([IMAGE_MAGIC, count]) + body,
    st.integers(0, MAX_SEGMENTS + 1),
    st.binary(max_size=1200),
) | st.binary(max_size=32)
# Seven in ten inputs are mutated images: they reach the later checks.
any_input = st.integers(0, 9).flatmap(lambda n: mutated_images() if n < 7 else raw_images)


@st.composite
def cut_points(draw: st.DrawFn, size: int) -> list[int]:
    """Where to cut the file into chunks: anywhere, or around the checkpoints."""
    if size == 0:
        return []
    anywhere = st.integers(1, size)
    near_checkpoints = st.sampled_from(
        [
            cut
            for point in (IMAGE_HEADER_SIZE, APP_DESC_OFFSET, APP_DESC_OFFSET + 4, 1024)
            for cut in (point - 1, point, point + 1)
            if 0 < cut <= size
        ]
        or [size]
    )
    return draw(st.lists(anywhere | near_checkpoints, max_size=12))


@given(data=any_input, choices=st.data())
@example(data=b"", choices=None)
def test_streamed_and_whole_agree_and_are_right(data: bytes, choices: st.DataObject | None) -> None:
    """Any bytes, any chunking: one verdict, an ImageError or an ImageInfo, the right one."""
    cuts = choices.draw(cut_points(len(data)), label="cuts") if choices else []
    whole = whole_verdict(data)
    assert streamed_verdict(data, cuts) == whole
    # One byte at a time over the first structures, then the rest in one piece.
    assert streamed_verdict(data, list(range(1, min(len(data), 48)))) == whole
    expected = reference_error(data)
    event("valid" if expected is None else expected.__name__)
    if expected is None:
        assert isinstance(whole, ImageInfo)
    else:
        assert not isinstance(whole, ImageInfo)
        assert whole[0] is expected, whole[1]
