"""Typed reads of decoded JSON objects, the one way the library reads a device's answers
and its own stored records (the feed, a document with a schema, uses voluptuous).

Every read names the field and why it failed, and raises the caller's own error type, so
nothing a peer sends escapes as a KeyError or a TypeError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from .errors import EspOtaError


class JsonReader:
    """Typed access to one JSON object; anything else raises `error` naming the field."""

    def __init__(self, data: Any, what: str, error: type[EspOtaError]) -> None:
        self._error = error
        self._what = what
        if not isinstance(data, Mapping):
            raise error(f"{what or 'the document'}: expected a JSON object")
        self._data: Mapping[str, Any] = data

    def _where(self, name: str) -> str:
        return f"{self._what}.{name}" if self._what else name

    def _get(self, name: str, kinds: tuple[type, ...], optional: bool) -> Any:
        value = self._data.get(name)
        if value is None:
            if optional:
                return None
            raise self._error(f"{self._where(name)}: missing")
        # bool is an int in Python, never in JSON's sense of a number.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self._error(f"{self._where(name)}: of the wrong type ({type(value).__name__})")
        return value

    def fail(self, name: str, why: str) -> EspOtaError:
        """The error for a field that reads but does not fit (the caller raises it)."""
        return self._error(f"{self._where(name)}: {why}")

    def text(self, name: str, *, required: bool = False) -> str:
        """A string; with `required`, a non-empty one."""
        value: str = self._get(name, (str,), optional=False)
        if required and not value:
            raise self.fail(name, "empty")
        return value

    def optional_text(self, name: str) -> str | None:
        """A string or null (or absent)."""
        value: str | None = self._get(name, (str,), optional=True)
        return value

    def number(self, name: str) -> int:
        """An integer."""
        value: int = self._get(name, (int,), optional=False)
        return value

    def optional_number(self, name: str) -> int | None:
        """An integer or null (or absent)."""
        value: int | None = self._get(name, (int,), optional=True)
        return value

    def count(self, name: str) -> int:
        """A non-negative integer."""
        value = self.number(name)
        if value < 0:
            raise self.fail(name, "negative")
        return value

    def flag(self, name: str) -> bool:
        """true or false."""
        value: bool = self._get(name, (bool,), optional=False)
        return value

    def real(self, name: str) -> float:
        """A finite number (an integer too)."""
        value = self._get(name, (int, float), optional=False)
        try:
            real = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise self.fail(name, "out of range") from None
        if not math.isfinite(real):
            raise self.fail(name, "not a finite number")
        return real

    def time(self, name: str) -> float:
        """Seconds since the epoch: a finite, non-negative number."""
        value = self.real(name)
        if value < 0:
            raise self.fail(name, "not a time")
        return value

    def optional_time(self, name: str) -> float | None:
        """A time, or null (or absent)."""
        return None if self._data.get(name) is None else self.time(name)

    def choice[E: StrEnum](self, name: str, enum: type[E]) -> E:
        """One of the enum's values."""
        value = self.text(name)
        try:
            return enum(value)
        except ValueError:
            raise self.fail(name, f"unknown value {value!r}") from None

    def optional_choice[E: StrEnum](self, name: str, enum: type[E]) -> E | None:
        """One of the enum's values, or null (or absent)."""
        return None if self._data.get(name) is None else self.choice(name, enum)

    def child(self, name: str) -> JsonReader:
        """The object under `name`."""
        return JsonReader(self._data.get(name), self._where(name), self._error)

    def optional_child(self, name: str) -> JsonReader | None:
        """The object under `name`, or None when it is null (or absent)."""
        return None if self._data.get(name) is None else self.child(name)
