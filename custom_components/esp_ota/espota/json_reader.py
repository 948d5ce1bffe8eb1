"""Typed reads of decoded JSON objects, the one way the library reads a device's answers
and its own stored records (the feed, a document with a schema, uses voluptuous), and the
decoding of a peer's JSON text.

Every read names the field and why it failed, and raises the caller's own error type, so
nothing a peer sends escapes as a KeyError or a TypeError; decode_json does the same for
the text itself (no RecursionError, OverflowError or UnicodeDecodeError).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from .errors import EspOtaError

# Deeper than any document the library reads (a device's answers and a stored record nest
# 2 deep): refused before decoding, so no peer makes the decoder recurse.
MAX_JSON_DEPTH: Final = 16
# Integers the library takes: 64 bits, signed. Every count, id and time fits many times
# over, and Home Assistant's JSON (orjson) cannot store a larger one.
MIN_INTEGER: Final = -(2**63)
MAX_INTEGER: Final = 2**63 - 1
# Everything up to the next bracket outside strings (group 1), or up to a string that
# never ends (group 1 is its quote: the text is not JSON), or to the end (group 1 empty).
# Possessive: linear in the text, whatever it holds.
_TO_NEXT_BRACKET: Final = re.compile(
    r'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+([\[\]{}"]|$)', re.DOTALL
)
# Longest text of an integer within the bounds: 19 digits and a sign.
_MAX_INTEGER_TEXT: Final = 20
# What an error message quotes of a string at most.
_SHOWN_CHARS: Final = 60


class _RefusedError(Exception):
    """Internal: decode_json's hooks refuse the text (the message says why)."""


def shown(value: Any) -> str:
    """A short description of any value for an error message: a short string or number as
    written, a long string cut, anything else by its type (never the repr of a huge
    integer, which raises, nor of a deep list, which recurses)."""
    if isinstance(value, str):
        cut = value[:_SHOWN_CHARS]
        return repr(cut) + ("..." if len(value) > len(cut) else "")
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        if MIN_INTEGER <= value <= MAX_INTEGER:
            return repr(value)
        return f"an integer of {value.bit_length()} bits"
    return f"a {type(value).__name__}"


def decode_json(raw: bytes | str, what: str, error: type[EspOtaError]) -> Any:
    """A peer's JSON text (bytes: UTF-8), decoded; raises `error` naming `what` for text that
    is not JSON, or is JSON no peer of the library sends: nested deeper than
    MAX_JSON_DEPTH, an integer outside 64 bits, a number beyond a float (1e999), NaN or
    Infinity, an object with the same key twice (which value would count?)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise error(f"{what}: not UTF-8 (at byte {err.start})") from None
    else:
        text = raw
    _check_depth(text, what, error)
    try:
        return json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_real,
            parse_constant=_constant,
        )
    except _RefusedError as err:
        raise error(f"{what}: {err}") from None
    except ValueError as err:  # JSONDecodeError
        raise error(f"{what}: not JSON ({err})") from None


def _check_depth(text: str, what: str, error: type[EspOtaError]) -> None:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return  # every answer of a device: no scan
    depth = 0
    for match in _TO_NEXT_BRACKET.finditer(text):
        mark = match.group(1)
        if mark in ("", '"'):
            # The end, or a string that never ends: json.loads refuses the text there,
            # having gone no deeper than counted so far.
            return
        depth += 1 if mark in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise error(f"{what}: nested deeper than {MAX_JSON_DEPTH}")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RefusedError(f"the key {shown(key)} twice in an object")
            seen.add(key)
    return data


def _integer(text: str) -> int:
    # The length first: int() of thousands of digits costs time (and raises past 4300).
    if len(text) <= _MAX_INTEGER_TEXT and MIN_INTEGER <= (value := int(text)) <= MAX_INTEGER:
        return value
    raise _RefusedError(f"an integer of {len(text.lstrip('-'))} digits (64 bits at most)")


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _RefusedError(f"a number beyond a float ({text[:_SHOWN_CHARS]})")
    return value


def _constant(name: str) -> Any:
    raise _RefusedError(f"{name} (not a JSON number)")


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
        if isinstance(value, int) and not MIN_INTEGER <= value <= MAX_INTEGER:
            raise self.fail(name, "out of range (64 bits at most)")
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                # "\ud800" in JSON: no text, and Home Assistant's JSON cannot store it.
                raise self.fail(name, "not Unicode text (a lone surrogate)") from None
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
        # An integer is within 64 bits (_get), so float() of it never overflows.
        real = float(self._get(name, (int, float), optional=False))
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
            raise self.fail(name, f"unknown value {shown(value)}") from None

    def optional_choice[E: StrEnum](self, name: str, enum: type[E]) -> E | None:
        """One of the enum's values, or null (or absent)."""
        return None if self._data.get(name) is None else self.choice(name, enum)

    def child(self, name: str) -> JsonReader:
        """The object under `name`."""
        return JsonReader(self._data.get(name), self._where(name), self._error)
