"""How the simulated device checks app images: the espota library's parser, used where
ESP-IDF calls esp_image_verify(), plus the chip checks of bootloader_common_check_chip_validity.

Verifying a slot reads the whole partition, as esp_image_verify does. Results are cached by
the slot's content fingerprint (the flash model pools sectors by content), so a fleet of
devices booting the same firmware parses it once.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Final

from custom_components.esp_ota.espota.chips import chip_name, format_chip_revision
from custom_components.esp_ota.espota.errors import ImageError
from custom_components.esp_ota.espota.image import (
    DESCRIPTOR_READ_SIZE,
    AppDescriptor,
    ImageHeader,
    ImageInfo,
    parse_image,
    read_app_descriptor,
)

from .flash import Flash
from .partitions import Partition

_CACHE_SIZE: Final = 256
_verified: OrderedDict[bytes, ImageInfo | tuple[type[ImageError], str]] = OrderedDict()

# max_chip_rev_full is "not set" when 0 or 0xFFFF (IS_FIELD_SET in bootloader_common_loader.c).
_UNSET_REVISIONS: Final = frozenset({0, 0xFFFF})


def verify_partition_image(flash: Flash, partition: Partition) -> ImageInfo:
    """esp_image_verify on an app slot: the whole image must parse, with a good checksum
    and (if appended) SHA-256. Raises the library's ImageError subclass otherwise."""
    key = flash.region_fingerprint(partition.offset, partition.size)
    cached = _verified.get(key)
    if cached is None:
        try:
            cached = parse_image(flash.read(partition.offset, partition.size))
        except ImageError as err:
            cached = (type(err), str(err))
        _verified[key] = cached
        while len(_verified) > _CACHE_SIZE:
            _verified.popitem(last=False)
    else:
        _verified.move_to_end(key)
    if isinstance(cached, tuple):
        error_type, message = cached
        raise error_type(message)
    return cached


def partition_description(flash: Flash, partition: Partition) -> AppDescriptor | None:
    """esp_ota_get_partition_description: the slot's esp_app_desc_t, None if the slot holds
    no app descriptor (erased or not an app)."""
    head = flash.read(partition.offset, DESCRIPTOR_READ_SIZE)
    try:
        _header, app = read_app_descriptor(head)
    except ImageError:
        return None
    return app


def header_chip_fields(first_bytes: bytes) -> tuple[int, int, int]:
    """(chip_id, min_chip_rev_full, max_chip_rev_full) read straight from an image header's
    bytes, as esp_https_ota does (it looks at these fields before anything else)."""
    chip_id, min_rev_full, max_rev_full = struct.unpack_from("<H1xHH", first_bytes, 12)
    return chip_id, min_rev_full, max_rev_full


def chip_validity_error(
    image_chip_id: int,
    min_chip_rev_full: int,
    max_chip_rev_full: int,
    *,
    chip_id: int,
    chip_revision: int,
) -> str | None:
    """bootloader_common_check_chip_validity for an app: why an image cannot run on this
    chip, or None. The chip id must match; the chip revision must be >= min_chip_rev_full
    and, when max_chip_rev_full is set (not 0/0xFFFF), <= it."""
    if image_chip_id != chip_id:
        return (
            f"mismatch chip ID, expected {chip_id} ({chip_name(chip_id)}), "
            f"found {image_chip_id} ({chip_name(image_chip_id)})"
        )
    if chip_revision < min_chip_rev_full:
        return (
            "chip revision check failed. "
            f"Required >= {format_chip_revision(min_chip_rev_full)}, "
            f"found {format_chip_revision(chip_revision)}."
        )
    if max_chip_rev_full not in _UNSET_REVISIONS and chip_revision > max_chip_rev_full:
        return (
            "chip revision check failed. "
            f"Required <= {format_chip_revision(max_chip_rev_full)}, "
            f"found {format_chip_revision(chip_revision)}."
        )
    return None


def image_chip_error(header: ImageHeader, *, chip_id: int, chip_revision: int) -> str | None:
    """chip_validity_error for a parsed header."""
    return chip_validity_error(
        header.chip_id,
        header.min_chip_rev_full,
        header.max_chip_rev_full,
        chip_id=chip_id,
        chip_revision=chip_revision,
    )
