"""Firmware feeds: the native ESP OTA format and ESP Web Tools manifests.

The format is described in docs/feed.md. Parsing is strict about what it uses and
tolerant of what it does not know: unknown fields are ignored, so a newer publisher
can add fields without breaking older readers; an error names the field and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import voluptuous as vol
from yarl import URL

from .chips import CHIP_IDS, format_chip_revision, normalize_chip_name, parse_chip_revision
from .errors import FeedFormatError

FEED_FORMAT: Final = "esp-ota-feed"
FEED_FORMAT_VERSION: Final = 1
# A feed lists releases, not firmware: anything this large is not a feed.
MAX_FEED_BYTES: Final = 1024 * 1024
# The image header stores chip revisions in 16 bits (max_chip_rev_full, esp_app_format.h).
MAX_CHIP_REVISION: Final = 0xFFFF
# Error messages quote at most this much of a value, and are cut at _MAX_MESSAGE: they
# reach logs and repair issues, and a feed's strings may be a megabyte long.
_SHOWN_CHARS: Final = 40
_MAX_MESSAGE: Final = 300


def _shown(value: Any) -> str:
    """A value from the document as an error message quotes it: short, whatever it is.

    Never repr() or str() of the value itself: a Mapping given to parse_feed may be nested
    too deep for them (RecursionError) or hold an int too long to print (ValueError).
    """
    if isinstance(value, str):
        return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int) and value.bit_length() <= 64:
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return {int: "a very large number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


class Channel(StrEnum):
    """Release channels. A device on beta is offered stable releases too."""

    STABLE = "stable"
    BETA = "beta"


class FeedKind(StrEnum):
    """Which document a feed was read from."""

    NATIVE = "esp-ota-feed"
    WEB_TOOLS = "esp-web-tools"


@dataclass(frozen=True, slots=True)
class Release:
    """One firmware image a feed offers."""

    project: str
    chip: str  # canonical chip name, e.g. "esp32s3"
    version: str
    channel: Channel
    url: str  # absolute
    size: int | None  # bytes; None only for Web Tools manifests
    sha256: str | None  # hex; None only for Web Tools manifests
    md5: str | None  # hex; Web Tools manifests carry this instead of sha256
    secure_version: int
    min_chip_rev: int | None  # major * 100 + minor; None = no lower bound
    max_chip_rev: int | None  # None = no upper bound
    summary: str | None
    release_notes_url: str | None
    published: datetime | None

    def supports_chip_revision(self, revision_full: int) -> bool:
        """Whether a chip of this revision is within the release's bounds."""
        if self.min_chip_rev is not None and revision_full < self.min_chip_rev:
            return False
        return self.max_chip_rev is None or revision_full <= self.max_chip_rev


@dataclass(frozen=True, slots=True)
class Feed:
    """A parsed feed."""

    kind: FeedKind
    format_version: int
    name: str | None
    url: str  # where it was read from: relative release URLs were resolved against it
    releases: tuple[Release, ...]


def _hex_digits(count: int) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise vol.Invalid("expected a string")
        text = value.strip().lower()
        if len(text) != count or any(c not in "0123456789abcdef" for c in text):
            raise vol.Invalid(f"expected {count} hex digits")
        return text

    return validate


def _chip(value: Any) -> str:
    if not isinstance(value, str):
        raise vol.Invalid('expected a chip name such as "esp32s3"')
    try:
        return normalize_chip_name(value)
    except ValueError as err:
        raise vol.Invalid(
            f"unknown chip {_shown(value)}; known chips: {', '.join(CHIP_IDS)}"
        ) from err


def _chip_revision(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (str, int))
        or (isinstance(value, str) and len(value) > _SHOWN_CHARS)
    ):
        raise vol.Invalid('expected a chip revision such as "v3.1" or 301')
    try:
        revision = parse_chip_revision(value)
    except ValueError as err:
        raise vol.Invalid(str(err)) from err
    if revision > MAX_CHIP_REVISION:
        raise vol.Invalid(
            f"chip revision {_shown(value)} is above {format_chip_revision(MAX_CHIP_REVISION)}"
        )
    return revision


def _timestamp(value: Any) -> datetime:
    """An ISO 8601 date or date and time; without a UTC offset it is taken as UTC."""
    if not isinstance(value, str):
        raise vol.Invalid("expected an ISO 8601 date and time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise vol.Invalid("expected an ISO 8601 date and time") from err
    # Always aware, so callers can compare and format them without caring.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise vol.Invalid("expected a non-empty string")
    return value.strip()


def _url(value: Any) -> str:
    text = _text(value)
    try:
        url = URL(text)
    except ValueError as err:
        raise vol.Invalid(f"not a valid URL: {err}") from err
    if url.scheme not in ("", "http", "https") or (url.scheme and not url.host):
        raise vol.Invalid("expected an http(s) URL or a path relative to the feed")
    return text


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise vol.Invalid("expected a whole number")
    if value < 0:
        raise vol.Invalid("expected a number >= 0")
    return value


def _positive_int(value: Any) -> int:
    number = _non_negative_int(value)
    if number == 0:
        raise vol.Invalid("expected a number > 0")
    return number


def _bounds_in_order(release: dict[str, Any]) -> dict[str, Any]:
    """Refuse a release no chip could run: max_chip_rev below min_chip_rev."""
    low, high = release.get("min_chip_rev"), release.get("max_chip_rev")
    if low is not None and high is not None and high < low:
        raise vol.Invalid(
            f"{format_chip_revision(high)} is below min_chip_rev {format_chip_revision(low)}",
            path=["max_chip_rev"],
        )
    return release


_RELEASE_FIELDS = vol.Schema(
    {
        vol.Required("project"): _text,
        vol.Required("chip"): _chip,
        vol.Required("version"): _text,
        vol.Optional("channel", default=Channel.STABLE.value): vol.In(
            [channel.value for channel in Channel], msg='expected "stable" or "beta"'
        ),
        vol.Required("url"): _url,
        vol.Required("size"): _positive_int,
        vol.Required("sha256"): _hex_digits(64),
        vol.Optional("secure_version", default=0): _non_negative_int,
        vol.Optional("min_chip_rev"): _chip_revision,
        vol.Optional("max_chip_rev"): _chip_revision,
        vol.Optional("summary"): vol.Any(None, str),
        vol.Optional("release_notes_url"): vol.Any(None, _url),
        vol.Optional("published"): _timestamp,
    },
    extra=vol.ALLOW_EXTRA,
)
_RELEASE_SCHEMA = vol.All(_RELEASE_FIELDS, _bounds_in_order)

_NATIVE_SCHEMA = vol.Schema(
    {
        vol.Required("format"): FEED_FORMAT,
        vol.Required("format_version"): _positive_int,
        vol.Optional("name"): vol.Any(None, str),
        vol.Required("releases"): [_RELEASE_SCHEMA],
    },
    extra=vol.ALLOW_EXTRA,
)

_WEB_TOOLS_BUILD_SCHEMA = vol.Schema({vol.Required("chipFamily"): _text}, extra=vol.ALLOW_EXTRA)
_WEB_TOOLS_OTA_SCHEMA = vol.Schema(
    {
        vol.Required("ota"): vol.Schema(
            {
                vol.Required("path"): _url,
                # ESPHome's http_request update requires md5 (summary, release_url optional).
                vol.Required("md5"): _hex_digits(32),
                vol.Optional("summary"): vol.Any(None, str),
                vol.Optional("release_url"): vol.Any(None, _url),
            },
            extra=vol.ALLOW_EXTRA,
        )
    },
    extra=vol.ALLOW_EXTRA,
)


def _web_tools_build(build: Any) -> Any:
    """A build's OTA part is only checked for chips ESP-IDF builds for.

    ESP8266 builds (and any family ESP-IDF does not know) are skipped, not refused: a
    manifest serving both must stay readable whatever it says about the ESP8266.
    """
    checked = _WEB_TOOLS_BUILD_SCHEMA(build)
    try:
        normalize_chip_name(checked["chipFamily"])
    except ValueError:
        return checked
    return _WEB_TOOLS_OTA_SCHEMA(checked) if "ota" in checked else checked


_WEB_TOOLS_SCHEMA = vol.Schema(
    {
        vol.Required("name"): _text,
        vol.Required("version"): _text,
        vol.Required("builds"): [_web_tools_build],
    },
    extra=vol.ALLOW_EXTRA,
)


def _describe(error: vol.Invalid) -> str:
    """'releases[2].sha256: expected 64 hex digits'."""
    path = ""
    for part in error.path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = "missing" if error.msg == "required key not provided" else error.msg
    if len(message) > _MAX_MESSAGE:  # a library's message may quote the value whole
        message = message[:_MAX_MESSAGE] + "…"
    return f"{path}: {message}" if path else message


def _validate(schema: vol.Schema, document: Any) -> Any:
    try:
        return schema(document)
    except vol.MultipleInvalid as err:
        raise FeedFormatError(
            "; ".join(sorted({_describe(error) for error in err.errors}))
        ) from err
    except vol.Invalid as err:  # pragma: no cover - Schema wraps errors in MultipleInvalid
        raise FeedFormatError(_describe(err)) from err


def _resolve(feed_url: str, reference: str) -> str:
    return str(URL(feed_url).join(URL(reference)))


def _page_for_people(feed_url: str, reference: str) -> str:
    """A release notes page, resolved like an image's URL but without the feed's user and
    password: people open it from the update entity, which every user of Home Assistant
    (and its recorder) can read."""
    page = URL(_resolve(feed_url, reference))
    return str(page.with_user(None)) if page.user is not None else str(page)


def _parse_native(document: Mapping[str, Any], feed_url: str) -> Feed:
    version = document.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FEED_FORMAT_VERSION:
        raise FeedFormatError(
            f"format_version: {_shown(version)} is newer than this reader understands "
            f"({FEED_FORMAT_VERSION}); update ESP OTA"
        )
    data = _validate(_NATIVE_SCHEMA, document)
    releases = tuple(
        Release(
            project=item["project"],
            chip=item["chip"],
            version=item["version"],
            channel=Channel(item["channel"]),
            url=_resolve(feed_url, item["url"]),
            size=item["size"],
            sha256=item["sha256"],
            md5=None,
            secure_version=item["secure_version"],
            min_chip_rev=item.get("min_chip_rev"),
            max_chip_rev=item.get("max_chip_rev"),
            summary=item.get("summary"),
            release_notes_url=(
                _page_for_people(feed_url, item["release_notes_url"])
                if item.get("release_notes_url")
                else None
            ),
            published=item.get("published"),
        )
        for item in data["releases"]
    )
    return Feed(
        kind=FeedKind.NATIVE,
        format_version=data["format_version"],
        name=data.get("name"),
        url=feed_url,
        releases=releases,
    )


def _parse_web_tools(document: Mapping[str, Any], feed_url: str) -> Feed:
    data = _validate(_WEB_TOOLS_SCHEMA, document)
    releases: list[Release] = []
    for build in data["builds"]:
        ota = build.get("ota")
        try:
            family = normalize_chip_name(build["chipFamily"])
        except ValueError:
            # ESP8266 and other families ESP-IDF does not build for are not ours to offer.
            continue
        if ota is None:  # an install-only build (parts for ESP Web Tools, no OTA image)
            continue
        releases.append(
            Release(
                project=data["name"],
                chip=family,
                version=data["version"],
                channel=Channel.STABLE,
                url=_resolve(feed_url, ota["path"]),
                size=None,
                sha256=None,
                md5=ota["md5"],
                secure_version=0,
                min_chip_rev=None,
                max_chip_rev=None,
                summary=ota.get("summary"),
                release_notes_url=(
                    _page_for_people(feed_url, ota["release_url"])
                    if ota.get("release_url")
                    else None
                ),
                published=None,
            )
        )
    return Feed(
        kind=FeedKind.WEB_TOOLS,
        format_version=1,
        name=data["name"],
        url=feed_url,
        releases=tuple(releases),
    )


def parse_feed(raw: bytes | str | Mapping[str, Any], *, feed_url: str) -> Feed:
    """Parse a feed document (native or ESP Web Tools manifest) read from `feed_url`.

    Relative release URLs are resolved against `feed_url`, which must be absolute
    (ValueError otherwise: a caller's mistake, not the feed's). Raises FeedFormatError.
    """
    if not URL(feed_url).scheme:
        raise ValueError(f"feed_url must be an absolute URL, got {feed_url!r}")
    if isinstance(raw, (bytes, str)):
        if len(raw) > MAX_FEED_BYTES:
            raise FeedFormatError(f"feed is {len(raw)} bytes, more than {MAX_FEED_BYTES}")
        try:
            document = json.loads(raw)
        # ValueError covers JSONDecodeError, UnicodeDecodeError and integers longer than
        # Python converts; RecursionError a document nested thousands deep.
        except (ValueError, RecursionError) as err:
            raise FeedFormatError(f"feed is not valid JSON: {err}") from err
    else:
        document = raw
    if not isinstance(document, Mapping):
        raise FeedFormatError("feed must be a JSON object")
    if "format" in document:
        if document["format"] != FEED_FORMAT:
            raise FeedFormatError(
                f"format: {_shown(document['format'])} is not a feed format this reader knows "
                f"(expected {FEED_FORMAT!r})"
            )
        return _parse_native(document, feed_url)
    if "builds" in document:
        return _parse_web_tools(document, feed_url)
    raise FeedFormatError(
        f'not a firmware feed: expected "format": "{FEED_FORMAT}" or an ESP Web Tools '
        'manifest with "builds"'
    )
