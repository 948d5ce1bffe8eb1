"""ESP chips: the ids in image headers, their names, and chip revisions."""

from __future__ import annotations

from typing import Final

# esp_image_header_t.chip_id -> the chip's name as ESP-IDF and esptool spell it.
CHIP_NAMES: Final[dict[int, str]] = {
    0: "esp32",
    2: "esp32s2",
    5: "esp32c3",
    9: "esp32s3",
    12: "esp32c2",
    13: "esp32c6",
    16: "esp32h2",
    18: "esp32p4",
    20: "esp32c61",
    23: "esp32c5",
}
CHIP_IDS: Final[dict[str, int]] = {name: chip_id for chip_id, name in CHIP_NAMES.items()}


def chip_name(chip_id: int) -> str:
    """Return the chip's name for an image header's chip id, e.g. 9 -> "esp32s3".

    An id ESP-IDF does not define yet is named "unknown(<id>)" rather than refused:
    a parser must still be able to describe the image.
    """
    return CHIP_NAMES.get(chip_id, f"unknown({chip_id})")


def normalize_chip_name(name: str) -> str:
    """Return the canonical name of a chip written any common way.

    Accepts "esp32s3", "ESP32-S3", "esp32_s3", "ESP32S3". Raises ValueError for a chip
    ESP-IDF does not know.
    """
    canonical = name.strip().lower().replace("-", "").replace("_", "")
    if canonical not in CHIP_IDS:
        raise ValueError(f"unknown chip {name!r}; known chips: {', '.join(CHIP_IDS)}")
    return canonical


def format_chip_revision(revision_full: int) -> str:
    """Render a full chip revision (major * 100 + minor) as ESP-IDF does: "v3.1"."""
    return f"v{revision_full // 100}.{revision_full % 100}"


def parse_chip_revision(text: str | int) -> int:
    """Parse "v3.1", "3.1", "3" or an int full revision (301) into major * 100 + minor."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"chip revision {text} is negative")
        return text
    body = text.strip().lower().removeprefix("v")
    major_text, _, minor_text = body.partition(".")
    if not major_text.isdigit() or (minor_text and not minor_text.isdigit()):
        raise ValueError(f"chip revision {text!r} is not of the form v<major>.<minor>")
    minor = int(minor_text) if minor_text else 0
    if minor > 99:
        raise ValueError(f"chip revision {text!r} has a minor revision above 99")
    return int(major_text) * 100 + minor
