"""Chip ids, names and revisions."""

from __future__ import annotations

import pytest

from custom_components.esp_ota.espota.chips import (
    chip_name,
    format_chip_revision,
    normalize_chip_name,
    parse_chip_revision,
)


def test_chip_names() -> None:
    """Ids from the guide map to names; an unknown id is described, not refused."""
    assert [chip_name(i) for i in (0, 2, 5, 9, 12, 13, 16, 18, 20, 23)] == [
        "esp32", "esp32s2", "esp32c3", "esp32s3", "esp32c2",
        "esp32c6", "esp32h2", "esp32p4", "esp32c61", "esp32c5",
    ]  # fmt: skip
    assert chip_name(99) == "unknown(99)"


@pytest.mark.parametrize("spelling", ["esp32s3", "ESP32-S3", "esp32_s3", " ESP32S3 "])
def test_normalize_chip_name(spelling: str) -> None:
    """Every common spelling gives the canonical name."""
    assert normalize_chip_name(spelling) == "esp32s3"


def test_unknown_chip() -> None:
    """A chip ESP-IDF does not build for is refused with the known list."""
    with pytest.raises(ValueError, match="unknown chip 'esp8266'; known chips: esp32, "):
        normalize_chip_name("esp8266")


@pytest.mark.parametrize(
    ("text", "full"), [("v3.1", 301), ("3.1", 301), ("3", 300), ("v0.99", 99), (301, 301)]
)
def test_parse_chip_revision(text: str | int, full: int) -> None:
    """Revisions read as ESP-IDF writes them, and round-trip through format."""
    assert parse_chip_revision(text) == full
    assert parse_chip_revision(format_chip_revision(full)) == full


@pytest.mark.parametrize(
    ("text", "message"),
    [("three", "not of the form"), ("v1.100", "minor revision above 99"), (-1, "negative")],
)
def test_bad_chip_revisions(text: str | int, message: str) -> None:
    """Malformed revisions say why."""
    with pytest.raises(ValueError, match=message):
        parse_chip_revision(text)
