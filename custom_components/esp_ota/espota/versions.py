"""Ordering firmware versions, including the odd strings firmware builds produce.

AwesomeVersion orders the common schemes (SemVer, PEP 440, CalVer, "1.0"). Two suffixes
that it would misorder are handled first, because firmware uses them a lot:

- ``git describe`` output, ``1.2.3-4-gabc1234`` (4 commits after tag 1.2.3): SemVer would
  call it a pre-release of 1.2.3, i.e. older; it is newer than 1.2.3 and older than 1.2.4.
- build numbers, ``1.2.3_build5`` / ``1.2.3+build5`` / ``1.2.3_5``: newer than 1.2.3 and
  than ``_build4``, older than 1.2.4.

A leading ``v`` is ignored. A string none of the schemes understands never raises: it
orders below every understood version, and among such strings alphabetically, so it is
never offered as an update over a version we can read.
"""

from __future__ import annotations

import functools
import re
from typing import Self

from awesomeversion import AwesomeVersion, AwesomeVersionStrategy

_GIT_DESCRIBE = re.compile(r"^(?P<base>.+?)-(?P<number>\d+)-g[0-9a-f]{4,40}(?:-dirty)?$")
_BUILD_NUMBER = re.compile(
    r"^(?P<base>.+?)(?:[_+](?:build)?|\.build)(?P<number>\d+)$", re.IGNORECASE
)


@functools.total_ordering
class FirmwareVersion:
    """A version string with a total, documented order."""

    __slots__ = ("_base", "_build", "_understood", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        base = text.strip()
        if base[:1] in ("v", "V") and base[1:2].isdigit():
            base = base[1:]
        build = 0
        for pattern in (_GIT_DESCRIBE, _BUILD_NUMBER):
            match = pattern.match(base)
            if match:
                base, build = match["base"], int(match["number"])
                break
        self._base = AwesomeVersion(base)
        self._build = build
        self._understood = self._base.strategy is not AwesomeVersionStrategy.UNKNOWN

    def _compare(self, other: FirmwareVersion) -> int:
        if self._understood != other._understood:
            return 1 if self._understood else -1
        if not self._understood:
            return (self.text > other.text) - (self.text < other.text)
        if self._base != other._base:
            return 1 if self._base > other._base else -1
        return (self._build > other._build) - (self._build < other._build)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FirmwareVersion):
            return NotImplemented
        return self._compare(other) == 0

    def __lt__(self, other: Self) -> bool:
        return self._compare(other) < 0

    def __hash__(self) -> int:
        return hash((self._base.string, self._build) if self._understood else self.text)

    def __repr__(self) -> str:
        return f"FirmwareVersion({self.text!r})"

    def __str__(self) -> str:
        return self.text


def is_newer(candidate: str, current: str) -> bool:
    """Whether `candidate` is a newer version than `current`."""
    return FirmwareVersion(candidate) > FirmwareVersion(current)
