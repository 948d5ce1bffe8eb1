"""Version ordering, including the odd strings firmware builds produce."""

from __future__ import annotations

import itertools
import random

import pytest

from custom_components.esp_ota.espota.versions import (
    MAX_READABLE_LENGTH,
    FirmwareVersion,
    is_newer,
)

# Strictly ascending: every neighbour pair is checked both ways, and the list must sort back.
ASCENDING = [
    "",  # unreadable strings first, among themselves by text
    "4532e6a",  # a bare commit hash (git describe --always without tags)
    "banana",
    "dev",  # AwesomeVersion's special words are not versions here
    "latest",
    "qa-test-v5.0-20220830",
    "qa-test-v5.0-20220830-4-g4532e6",  # real ESP-IDF example: counts after an odd tag
    "qa-test-v5.0-20220830-5-g1234567",
    "0.9",
    "1.0",
    "1.0.1",
    "1.2.3-SNAPSHOT",  # an unknown pre-release word is below dev
    "1.2.3.dev1",
    "1.2.3-alpha",
    "1.2.3a2",
    "1.2.3-beta.1",
    "1.2.3b2",
    "1.2.3-beta.11",  # numbers, not text: beta.11 after beta.2
    "1.2.3-rc.1",
    "1.2.3",
    "1.2.3-1-gdeadbee",  # git describe: one commit after 1.2.3
    "v1.2.3-4-gabc",  # the hash may be short
    "1.2.3_build5",
    "1.2.3_build6",
    "1.2.3.post1",
    "1.2.3.4",
    "1.2.4-beta.1",
    "1.2.4-beta.1-3-gabcd123",  # three commits after a pre-release tag
    "1.2.4-beta.2",
    "1.2.4",
    "v1.10.0",
    "2.0rc1",
    "2.0",
    "0x1A",  # hex: 26
    "2024.11.0b1",
    "2024.11.0b2",
    "2024.11.0",
    "2024.11.1",
    "2024.12.0-dev",
    "2024.12.0",
    "20241101",  # BuildVer: one big number
]


def test_total_order() -> None:
    """Sorting shuffled versions gives back the documented order; is_newer agrees."""
    shuffled = ASCENDING.copy()
    random.Random(7).shuffle(shuffled)
    assert [str(version) for version in sorted(map(FirmwareVersion, shuffled))] == ASCENDING
    for older, newer in itertools.pairwise(ASCENDING):
        assert is_newer(newer, older), (newer, older)
        assert not is_newer(older, newer), (older, newer)


@pytest.mark.parametrize(
    ("newer", "older"),
    [
        ("v1.2.3-4-gabc", "1.2.3"),  # the example
        ("v1.2.3-4-gabc", "v1.2.3-3-gfff"),
        ("1.2.4", "v1.2.3-40-gabc"),
        ("1.2.3_build5", "1.2.3"),
        ("1.2.4", "1.2.3_build99"),
        ("2024.11.0", "2024.11.0b1"),
        ("2024.11.0b1", "2024.10.3"),
        ("1.0", "0.99"),
        ("1.10", "1.9"),
        ("1.2.3", "1.2.3-beta"),
        ("1.2.3", "banana"),
        ("0.0.1", "latest"),  # a readable version beats AwesomeVersion's "latest"
        ("1.0.0", "4532e6a-dirty"),
        ("b", "a"),  # unreadable among themselves: by text
    ],
)
def test_pairs(newer: str, older: str) -> None:
    """Pairs that matter in practice, each checked both ways."""
    assert is_newer(newer, older)
    assert not is_newer(older, newer)
    assert FirmwareVersion(older) < FirmwareVersion(newer)
    assert FirmwareVersion(newer) >= FirmwareVersion(older)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("1.2.3", "v1.2.3"),
        ("1.2.3", " V1.2.3 "),
        ("1.0", "1.0.0"),  # trailing zeros do not count
        ("1", "1.0.0.0"),
        ("1.2.3", "1.2.3-dirty"),  # a dirty build orders as its commit
        ("v5.1-dirty", "5.1"),
        ("1.2.3_build5", "1.2.3+build5"),
        ("1.2.3_5", "1.2.3.build5"),
        ("1.2.3+5", "1.2.3_BUILD5"),
        ("1.2.3-4-gabc1234", "1.2.3-4-gabc1234-dirty"),
        ("1.2.3-4-gabc1234", "1.2.3_build4"),  # git describe and build numbers share a counter
        ("1.2.3-4-gabc1234", "1.2.3-4-gfedcba9"),  # the hash does not order
        ("2.0.0rc1", "2.0.0-rc.1"),  # PEP 440 and SemVer spellings
        ("1.2.3b2", "1.2.3-beta.2"),
        ("1.2.3-beta", "1.2.3-beta.0"),
        ("1.2.3-RC1", "1.2.3rc1"),
        ("banana", "banana"),
        ("banana", "banana-dirty"),
        ("odd-tag-3-gaaaa", "odd-tag_build3"),
        ("", "   "),
    ],
)
def test_equal_spellings(left: str, right: str) -> None:
    """Different spellings of one version are equal, hash alike, and neither is newer."""
    assert FirmwareVersion(left) == FirmwareVersion(right)
    assert hash(FirmwareVersion(left)) == hash(FirmwareVersion(right))
    assert not is_newer(left, right)
    assert not is_newer(right, left)
    assert len({FirmwareVersion(left), FirmwareVersion(right)}) == 1


ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "é",
    "-",
    "v",
    "V",
    "1..2",
    "1.2.3-",
    "1.2.3-4-g",
    "-4-gabc",
    "_build5",
    "1" * 5000,  # longer than Python converts to int by default
    "9" * MAX_READABLE_LENGTH,
    "1." * 200,
    "1.2.3-" + "a" * 300,
    "dev",
    "latest",
    "stable",
    "beta",
    "0x",
    "0xZZ",
    "1.2.3-4",
    "1.0.0-alpha.beta",
    "2.0.0-rc.1+build.5",
    "1.2.3-rc.1.2",
    "\N{SNOWMAN}1.0",
]


def test_odd_strings_never_raise_and_order_totally() -> None:
    """Every pair and triple of odd and normal strings compares without raising, consistently."""
    versions = [FirmwareVersion(text) for text in ODD_STRINGS + ASCENDING]
    for left, right in itertools.product(versions, versions):
        outcomes = (left < right, left == right, left > right)
        assert sum(outcomes) == 1, (left, right)
        if left == right:
            assert hash(left) == hash(right)
    for first, second, third in itertools.product(versions[::2], versions[1::2], versions):
        if first <= second <= third:
            assert first <= third, (first, second, third)


def test_readable() -> None:
    """readable says whether a scheme understood the string."""
    assert FirmwareVersion("v1.2.3-4-gabc").readable
    assert FirmwareVersion("2024.11.0b1").readable
    assert not FirmwareVersion("dev").readable
    assert not FirmwareVersion("1" * 5000).readable
    assert not FirmwareVersion("9" * (MAX_READABLE_LENGTH + 1)).readable
    assert FirmwareVersion("9" * MAX_READABLE_LENGTH).readable


def test_repr_and_comparison_with_other_types() -> None:
    """A version is not equal to a plain string and does not order against one."""
    version = FirmwareVersion("1.0.0")
    assert version != "1.0.0"
    assert repr(version) == "FirmwareVersion('1.0.0')"
    assert str(version) == "1.0.0"
    with pytest.raises(TypeError):
        assert version < "2.0.0"
