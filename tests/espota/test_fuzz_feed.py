"""Fuzzing the feed parser: whatever the document, a Feed or a FeedError, nothing else.

Documents are valid native feeds and ESP Web Tools manifests (test_feed.py's builders)
with fields replaced, removed or added, at any depth, by random JSON values, values of
the wrong type, huge numbers, huge strings and deep nesting; and random JSON. Each is
given to parse_feed as bytes, as text and as a Mapping.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custom_components.esp_ota.espota.errors import FeedError, FeedFormatError
from custom_components.esp_ota.espota.feed import MAX_FEED_BYTES, Feed, parse_feed
from tests.espota.test_feed import FEED_URL, WEB_TOOLS_MANIFEST, native, release

# Values a JSON document cannot hold as Python literals (too deep for json.dumps, or not
# JSON at all): a marker string stands for each, replaced in the text and in the Mapping.
DEEP_NESTING = 100_000
HUGE_DIGITS = 4000  # Python converts integers up to 4300 digits; JSON numbers may be longer
_SPECIALS: dict[str, tuple[str, Any]] = {
    # marker: (JSON text, Python value)
    "deep-list": ("[" * DEEP_NESTING + "]" * DEEP_NESTING, None),
    "deep-object": ('{"a":' * 2000 + "1" + "}" * 2000, None),
    "huge-int": ("9" * HUGE_DIGITS, int("9" * HUGE_DIGITS)),
    "huger-int": ("1" + "0" * 5000, 10**5000),
    "negative-huge-int": ("-" + "9" * HUGE_DIGITS, -int("9" * HUGE_DIGITS)),
    "inf": ("Infinity", float("inf")),
    "-inf": ("-Infinity", float("-inf")),
    "nan": ("NaN", float("nan")),
    "1e999": ("1e999", float("inf")),
    "huge-string": (json.dumps("x" * 200_000), "x" * 200_000),
}


def _deep_list() -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(DEEP_NESTING - 1):
        inner.append([])
        inner = inner[0]
    return outer


def _deep_object() -> dict[str, Any]:
    outer: dict[str, Any] = {}
    inner = outer
    for _ in range(1999):
        inner["a"] = {}
        inner = inner["a"]
    inner["a"] = 1
    return outer


_PYTHON_SPECIALS = {
    marker: value
    for marker, (_text, value) in _SPECIALS.items()
    if marker not in ("deep-list", "deep-object")
} | {"deep-list": _deep_list(), "deep-object": _deep_object()}


def _marker(name: str) -> str:
    return f"\0special:{name}\0"


def as_text(document: Any) -> str:
    """The document as JSON text, the markers replaced by their JSON."""
    text = json.dumps(document, allow_nan=True)
    for name, (json_text, _value) in _SPECIALS.items():
        text = text.replace(json.dumps(_marker(name)), json_text)
    return text


def as_mapping(document: Any) -> Any:
    """The document as Python values, the markers replaced by their values."""
    if isinstance(document, dict):
        return {key: as_mapping(value) for key, value in document.items()}
    if isinstance(document, list):
        return [as_mapping(value) for value in document]
    if isinstance(document, str) and document.startswith("\0special:"):
        return _PYTHON_SPECIALS[document.removeprefix("\0special:").removesuffix("\0")]
    return document


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
# The values most likely to break a parser: specials, and plausible-looking wrong ones.
hostile_values: st.SearchStrategy[Any] = (
    st.sampled_from([_marker(name) for name in _SPECIALS])
    | st.sampled_from(
        [0, -1, 1, 2**63, -(2**63), 1.5, True, False, None, "", " ", [], {}, [[]], {"": {}}]
    )
    | st.sampled_from(
        [
            "esp32",
            "ESP32-S3",
            "esp8266",
            "v3.1",
            "v99999999999999999999.1",
            "3.100",
            "²",
            "١٢",
            "stable",
            "beta",
            "https://",
            "http://[::1",
            "http://h:99999/a",
            "//cdn.example.org/a.bin",
            "ftp://h/a.bin",
            "\ud800",
            "2026-11-20T10:00:00+25:00",
            "9999-12-31T23:59:59-23:59",
            "ab" * 32,
            "ab" * 16,
            "esp-ota-feed",
        ]
    )
    | json_values
)

# Copied: a drawn [] or {} is mutated in place by later steps, and must not be the
# sampled constant itself (hypothesis replays examples and needs them unchanged).
fresh_hostile_values = hostile_values.map(copy.deepcopy)

# Field names the parser reads, so that mutations hit them more often than random keys.
_KNOWN_KEYS = [
    "format",
    "format_version",
    "name",
    "releases",
    "project",
    "chip",
    "version",
    "channel",
    "url",
    "size",
    "sha256",
    "secure_version",
    "min_chip_rev",
    "max_chip_rev",
    "summary",
    "release_notes_url",
    "published",
    "builds",
    "chipFamily",
    "ota",
    "path",
    "md5",
    "release_url",
    "parts",
]


def _valid_documents() -> list[dict[str, Any]]:
    return [
        native(release()),
        native(release(), release(version="1.3.0b1", channel="beta", chip="ESP32-S3")),
        native(),
        copy.deepcopy(WEB_TOOLS_MANIFEST),
    ]


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A valid feed or manifest with a few fields replaced, removed or added."""
    document: Any = draw(st.sampled_from(_valid_documents()))
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 4))):
        # Walk down a random path, then change what is there.
        parent: Any = None
        key: Any = None
        node = document
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 2)):
            if isinstance(node, dict):
                key = draw(st.sampled_from(sorted(node)))
            else:
                key = draw(st.integers(0, len(node) - 1))
            parent, node = node, node[key]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(_KNOWN_KEYS) | st.text(max_size=8))] = draw(
                fresh_hostile_values
            )
        elif action == "add" and isinstance(node, list):
            node.append(draw(fresh_hostile_values))
        elif action == "remove" and parent is not None:
            del parent[key]
        elif parent is not None:
            parent[key] = draw(fresh_hostile_values)
        else:
            document = draw(fresh_hostile_values)
    return document


def assert_feed_or_feed_error(raw: bytes | str | Any) -> None:
    """parse_feed returns a Feed or raises a FeedError; anything else fails the test."""
    try:
        feed: Feed | FeedError = parse_feed(raw, feed_url=FEED_URL)
    except FeedError as err:
        feed = err
    if isinstance(feed, FeedError):
        assert isinstance(feed, FeedFormatError)
        # Messages end up in logs and repair issues: they stay short whatever the input.
        assert len(str(feed)) < 4096, str(feed)[:200]
        return
    for entry in feed.releases:
        assert entry.url.startswith(("https://", "http://")), entry.url


@given(st.one_of(mutated_documents(), mutated_documents(), json_values))
def test_any_document_is_a_feed_or_a_feed_error(document: Any) -> None:
    """Mutated feeds and manifests, and random JSON, as bytes, text and Mapping."""
    text = as_text(document)
    if len(text) <= MAX_FEED_BYTES:
        assert_feed_or_feed_error(text.encode("utf-8", errors="surrogatepass"))
        assert_feed_or_feed_error(text)
    assert_feed_or_feed_error(as_mapping(document))


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_are_a_feed_or_a_feed_error(raw: bytes | str) -> None:
    """Not JSON, half JSON, any encoding: a FeedFormatError."""
    assert_feed_or_feed_error(raw)


# --- what the fuzzing found, each as a plain test -----------------------------------------


def _release_with(**changes: Any) -> dict[str, Any]:
    return native(release(**changes))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # repr() of the value in the message: RecursionError.
        ({"format": _deep_list()}, "format: a list is not a feed format"),
        # str() of the value before looking it up: RecursionError.
        (
            _release_with(chip=_deep_list()),
            'releases[0].chip: expected a chip name such as "esp32s3"',
        ),
        # An int too long for str() in the message: ValueError.
        (
            {"format": "esp-ota-feed", "format_version": 10**5000, "releases": []},
            "format_version: a very large number is newer than this reader understands",
        ),
        # Formatted for the bounds check: "releases[0]: not a valid value: Exceeds the limit
        # (4300 digits)", the field not named.
        (
            _release_with(min_chip_rev=10**5000, max_chip_rev=1),
            "releases[0].min_chip_rev: chip revision a very large number is above v655.35",
        ),
    ],
    ids=["deep-format", "deep-chip", "huge-format-version", "huge-chip-revision"],
)
def test_hostile_mapping_is_a_feed_format_error(document: Any, message: str) -> None:
    """A Mapping given to parse_feed directly: too deep or too large to print."""
    with pytest.raises(FeedFormatError) as caught:
        parse_feed(document, feed_url=FEED_URL)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            json.dumps(_release_with(chip="x" * 500_000)),
            "releases[0].chip: unknown chip 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…'; known",
        ),
        (
            json.dumps({"format": "y" * 500_000}),
            "format: 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy…' is",
        ),
        ('{"format": ' + "[" * 500 + "]" * 500 + "}", "format: a list is not"),
        (
            json.dumps(_release_with(min_chip_rev="v" + "9" * 100_000)),
            'releases[0].min_chip_rev: expected a chip revision such as "v3.1" or 301',
        ),
    ],
    ids=["long-chip", "long-format", "deep-format", "long-chip-revision"],
)
def test_error_messages_stay_short(text: str, message: str) -> None:
    """A feed under 1 MiB made the message as long as the feed (logs, repair issues)."""
    with pytest.raises(FeedFormatError) as caught:
        parse_feed(text, feed_url=FEED_URL)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("revision", ["v655.36", 65536, "v700.0"])
def test_chip_revision_beyond_sixteen_bits_is_refused(revision: str | int) -> None:
    """The image header stores chip revisions in 16 bits: nothing larger is a revision."""
    with pytest.raises(FeedFormatError, match=r"releases\[0\]\.max_chip_rev: chip revision"):
        parse_feed(_release_with(max_chip_rev=revision), feed_url=FEED_URL)
    (entry,) = parse_feed(_release_with(max_chip_rev="v655.35"), feed_url=FEED_URL).releases
    assert entry.max_chip_rev == 0xFFFF
