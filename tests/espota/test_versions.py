"""Version ordering, including the odd strings firmware builds produce."""

from __future__ import annotations

import itertools

import pytest

from custom_components.esp_ota.espota.versions import FirmwareVersion, is_newer

# Each list is in strictly ascending order.
ASCENDING = [
    "banana",  # not understood: below everything understood
    "qa-test-v5.0-20220830-4-g4532e6",
    "0.9",
    "1.0",
    "1.0.1",
    "1.2.3",
    "1.2.3-1-gdeadbee",  # git describe: one commit after 1.2.3
    "1.2.3-4-gabc1234",
    "1.2.3_build5",
    "1.2.3_build6",
    "1.2.4-beta.1",
    "1.2.4",
    "v1.10.0",
    "2024.11.0b1",
    "2024.11.0",
]


def test_total_order() -> None:
    """Sorting shuffled versions gives back the documented order."""
    shuffled = list(reversed(ASCENDING))
    assert [str(version) for version in sorted(map(FirmwareVersion, shuffled))] == ASCENDING
    for older, newer in itertools.pairwise(ASCENDING):
        assert is_newer(newer, older), (newer, older)
        assert not is_newer(older, newer), (older, newer)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("1.2.3", "v1.2.3"),
        ("1.2.3_build5", "1.2.3+build5"),
        ("1.2.3_5", "1.2.3.build5"),
        ("1.2.3-4-gabc1234", "1.2.3-4-gabc1234-dirty"),
    ],
)
def test_equal_spellings(left: str, right: str) -> None:
    """Different spellings of the same version are equal and hash alike."""
    assert FirmwareVersion(left) == FirmwareVersion(right)
    assert hash(FirmwareVersion(left)) == hash(FirmwareVersion(right))
    assert not is_newer(left, right)


def test_unknown_strings_never_raise_and_order_alphabetically() -> None:
    """Strings no scheme understands compare among themselves by text."""
    assert FirmwareVersion("apple") < FirmwareVersion("banana")
    assert FirmwareVersion("banana") < FirmwareVersion("0.0.1")
    assert FirmwareVersion("banana") == FirmwareVersion("banana")
    assert hash(FirmwareVersion("banana")) == hash(FirmwareVersion("banana"))


def test_versions_of_different_schemes_order() -> None:
    """SemVer, PEP 440, CalVer and build numbers compare with each other."""
    ordered = ["1.0.0.dev1", "1.2.3-beta.1", "2.0rc1", "20241101", "2024.11.0b1"]
    assert [str(v) for v in sorted(map(FirmwareVersion, reversed(ordered)))] == sorted(
        ordered, key=FirmwareVersion
    )
    calver, semver = FirmwareVersion("2024.11.0"), FirmwareVersion("1.2.3-beta.1")
    assert semver < calver


def test_repr_and_comparison_with_other_types() -> None:
    """A version is not equal to a plain string; repr shows the text."""
    version = FirmwareVersion("1.0.0")
    assert version != "1.0.0"
    assert repr(version) == "FirmwareVersion('1.0.0')"
