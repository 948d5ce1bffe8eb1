"""Ordering firmware versions, including the odd strings firmware builds produce.

ESP-IDF's default ``PROJECT_VER`` is ``git describe --always --tags --dirty``, so device
versions look like ``v1.2.3``, ``v1.2.3-4-gabc1234``, ``v1.2.3-dirty`` or a bare commit
hash; ESPHome uses CalVer with PEP 440 pre-releases (``2024.11.0b1``). The order (also in
docs/feed.md) is:

1. Surrounding spaces and a leading ``v`` / ``V`` before a digit are ignored.
2. A ``-dirty`` suffix is ignored: a dirty build orders as the commit it was built from.
3. ``git describe`` output, ``1.2.3-4-gabc1234`` (4 commits after tag 1.2.3; the hash is
   3-40 lowercase hex digits) is newer than 1.2.3 and than ``1.2.3-3-g...``, older than
   1.2.4. (SemVer alone would call it a pre-release of 1.2.3, i.e. older.)
4. Build numbers, ``1.2.3_build5`` / ``1.2.3+build5`` / ``1.2.3.build5`` / ``1.2.3_5`` /
   ``1.2.3+5``, are newer than 1.2.3 and than build 4, older than 1.2.4. Rules 3 and 4 share
   one counter: ``1.2.3-4-gabc`` equals ``1.2.3_build4``.
5. AwesomeVersion reads what remains (SemVer, PEP 440, CalVer, BuildVer, "1.0", hex) into
   its dotted numbers and its modifier. Numbers compare numerically, trailing zeros do not
   count (``1.0`` equals ``1.0.0``). With equal numbers the modifier decides: an unknown
   pre-release word (``-SNAPSHOT``, ``-0``) < ``dev`` < ``alpha``/``a`` < ``beta``/``b`` <
   ``rc``/``c``/``pre`` < no modifier (the release) < ``post``; then the modifier's number
   (``beta.2`` < ``beta.11``), then its remaining text; then the counter of rules 3 and 4.

Comparison never raises. A string no scheme reads (``banana``, a bare commit hash, an empty
string, anything over 256 characters) and AwesomeVersion's special words (``dev``,
``latest``, ``beta``, ``stable``, which it would put above every number) are *unreadable*:
they order below every readable version, and among themselves by their text (what is left
after rules 1-4), then by the counter of rules 3 and 4. So an unreadable version in a feed
is never offered over a readable one, and a device running an unreadable version is
offered the feed's readable releases.

AwesomeVersion's own ``>`` is not used to order: across schemes it is not a total order
(``1.2.4-alpha`` < ``1.2.4-beta.1`` < ``1.2.4a1`` but not ``1.2.4-alpha`` < ``1.2.4a1``; and
``1.0`` vs ``1.0.0`` is neither equal nor ordered), which would break sorting and the
one-release-per-version rule of the selection.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from awesomeversion import AwesomeVersion, AwesomeVersionStrategy

# esp_app_desc_t.version holds 31 characters; this bound also keeps int() far below
# Python's 4300-digit conversion limit.
MAX_READABLE_LENGTH: Final = 256

_DIRTY: Final = re.compile(r"-dirty$", re.IGNORECASE)
_GIT_DESCRIBE: Final = re.compile(r"^(?P<base>.+?)-(?P<number>\d+)-g[0-9a-f]{3,40}$")
_BUILD_NUMBER: Final = re.compile(
    r"^(?P<base>.+?)(?:[_+](?:build)?|\.build)(?P<number>\d+)$", re.IGNORECASE
)
_NUMERIC_PREFIX: Final = re.compile(r"^\d+(?:\.\d+)*")
_MODIFIER: Final = re.compile(r"^(?P<word>[a-z]*)[.\-_]?(?P<number>\d*)(?P<rest>.*)$")
_UNREADABLE: Final = frozenset(
    {AwesomeVersionStrategy.UNKNOWN, AwesomeVersionStrategy.SPECIALCONTAINER}
)
_UNKNOWN_MODIFIER_RANK: Final = -1
_RELEASE_RANK: Final = 10
_MODIFIER_RANKS: Final[dict[str, int]] = {
    "dev": 0,
    "d": 0,
    "alpha": 1,
    "a": 1,
    "beta": 2,
    "b": 2,
    "rc": 3,
    "c": 3,
    "pre": 3,
    "post": 11,
}

# (1, numbers, modifier rank, modifier number, modifier rest, counter) for a readable
# version, (0, text, counter) for an unreadable one: the first element keeps the two
# shapes apart, so tuples order totally, and equal keys hash alike.
type _SortKey = tuple[int, tuple[int, ...], int, int, str, int] | tuple[int, str, int]


@functools.lru_cache(maxsize=1024)  # pure, and asked for the same few versions at every state write
def _readable_key(base: str, counter: int) -> _SortKey | None:
    """The sort key of a readable version, or None when no scheme reads it."""
    version = AwesomeVersion(base)
    if version.strategy in _UNREADABLE:
        return None
    if version.strategy is AwesomeVersionStrategy.HEXVER:
        return (1, (int(base, 16),), _RELEASE_RANK, 0, "", counter)
    match = _NUMERIC_PREFIX.match(base)
    if match is None:  # pragma: no cover - every readable scheme starts with a number
        return None
    numbers = [int(part) for part in match[0].split(".")]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    modifier = (version.modifier or "").lower()
    if not modifier:
        return (1, tuple(numbers), _RELEASE_RANK, 0, "", counter)
    parts = _MODIFIER.match(modifier)
    assert parts is not None  # every part of the pattern is optional
    rank = _MODIFIER_RANKS.get(parts["word"], _UNKNOWN_MODIFIER_RANK)
    number = int(parts["number"]) if parts["number"] else 0
    rest = parts["rest"] if parts["word"] in _MODIFIER_RANKS else modifier
    return (1, tuple(numbers), rank, number, rest, counter)


@functools.total_ordering
class FirmwareVersion:
    """A version string with a total order (see the module's rules); never raises."""

    __slots__ = ("_key", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        base = _DIRTY.sub("", text.strip())
        if base[:1] in ("v", "V") and base[1:2].isdigit():
            base = base[1:]
        key: _SortKey | None = None
        counter = 0
        if len(base) <= MAX_READABLE_LENGTH:
            for pattern in (_GIT_DESCRIBE, _BUILD_NUMBER):
                if match := pattern.match(base):
                    base, counter = match["base"], int(match["number"])
                    break
            key = _readable_key(base, counter)
        # An unreadable tag still counts its commits: "qa-test-v5.0-4-g4532e6" (a real
        # ESP-IDF example) is older than "qa-test-v5.0-5-g1234567".
        self._key: _SortKey = key if key is not None else (0, base, counter)

    @property
    def readable(self) -> bool:
        """Whether a version scheme read the string (an unreadable one orders lowest)."""
        return self._key[0] == 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FirmwareVersion):
            return NotImplemented
        return self._key == other._key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, FirmwareVersion):
            return NotImplemented
        # Readable and unreadable keys differ in their first element, so the tuples
        # compare on it before reaching elements of different types.
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"FirmwareVersion({self.text!r})"

    def __str__(self) -> str:
        return self.text


def is_newer(candidate: str, current: str) -> bool:
    """Whether `candidate` is a newer version than `current` (never raises)."""
    return FirmwareVersion(candidate) > FirmwareVersion(current)
