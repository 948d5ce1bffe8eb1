"""Feed parsing: the native format, ESP Web Tools manifests, and errors that name the field."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from typing import Any

import pytest

from custom_components.esp_ota.espota.errors import FeedFormatError
from custom_components.esp_ota.espota.feed import (
    MAX_FEED_BYTES,
    Channel,
    FeedKind,
    parse_feed,
)
from tests.conftest import REPO_ROOT

LIBRARY_DIR = REPO_ROOT / "custom_components" / "esp_ota" / "espota"

FEED_URL = "https://firmware.example.com/garden/feed.json"
SHA = "ab" * 32


def release(**changes: Any) -> dict[str, Any]:
    """A valid native release entry with some fields changed (None removes a field)."""
    entry: dict[str, Any] = {
        "project": "garden",
        "chip": "esp32c3",
        "version": "1.2.0",
        "channel": "stable",
        "url": "bin/garden-1.2.0.bin",
        "size": 912_384,
        "sha256": SHA,
        "secure_version": 1,
        "min_chip_rev": "v0.3",
        "max_chip_rev": "v1.99",
        "summary": "Faster valves",
        "release_notes_url": "notes/1.2.0.html",
        "published": "2026-11-20T10:00:00+00:00",
    }
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


def native(*releases: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A native feed document."""
    return {"format": "esp-ota-feed", "format_version": 1, "releases": list(releases), **top}


def test_release_notes_links_never_carry_the_feeds_password() -> None:
    """Images resolve against the feed's URL with its user and password (Home Assistant
    fetches them); a release notes page is for people, shown by the update entity to every
    user: it keeps the host and path, never the credentials."""
    feed_url = "https://fleet:s3cret@firmware.example.com/garden/feed.json"
    (entry,) = parse_feed(json.dumps(native(release())), feed_url=feed_url).releases
    assert entry.url == "https://fleet:s3cret@firmware.example.com/garden/bin/garden-1.2.0.bin"
    assert entry.release_notes_url == "https://firmware.example.com/garden/notes/1.2.0.html"


def test_native_feed_every_field() -> None:
    """Every documented field is read; relative URLs resolve against the feed's URL."""
    feed = parse_feed(json.dumps(native(release(), name="Garden")), feed_url=FEED_URL)
    assert feed.kind is FeedKind.NATIVE
    assert feed.format_version == 1
    assert feed.name == "Garden"
    assert feed.url == FEED_URL
    (entry,) = feed.releases
    assert entry.project == "garden"
    assert entry.chip == "esp32c3"
    assert entry.version == "1.2.0"
    assert entry.channel is Channel.STABLE
    assert entry.url == "https://firmware.example.com/garden/bin/garden-1.2.0.bin"
    assert entry.size == 912_384
    assert entry.sha256 == SHA
    assert entry.md5 is None
    assert entry.secure_version == 1
    assert entry.min_chip_rev == 3
    assert entry.max_chip_rev == 199
    assert entry.summary == "Faster valves"
    assert entry.release_notes_url == "https://firmware.example.com/garden/notes/1.2.0.html"
    assert entry.published == datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_native_feed_defaults_and_absolute_urls() -> None:
    """Optional fields default sensibly; absolute URLs stay as they are."""
    minimal = release(
        channel=None,
        secure_version=None,
        min_chip_rev=None,
        max_chip_rev=None,
        summary=None,
        release_notes_url=None,
        published=None,
        url="https://cdn.example.org/x.bin",
        chip="ESP32-S3",
        sha256=SHA.upper(),
    )
    (entry,) = parse_feed(native(minimal), feed_url=FEED_URL).releases
    assert entry.channel is Channel.STABLE
    assert entry.secure_version == 0
    assert (entry.min_chip_rev, entry.max_chip_rev) == (None, None)
    assert entry.summary is None
    assert entry.release_notes_url is None
    assert entry.published is None
    assert entry.url == "https://cdn.example.org/x.bin"
    assert entry.chip == "esp32s3"
    assert entry.sha256 == SHA
    assert entry.supports_chip_revision(0)
    assert entry.supports_chip_revision(9999)


def test_unknown_fields_are_tolerated() -> None:
    """A newer publisher may add fields: an older reader ignores them."""
    document = native(release(signing_hint="x", future={"a": 1}), mirrors=["m"])
    (entry,) = parse_feed(document, feed_url=FEED_URL).releases
    assert entry.version == "1.2.0"


def test_chip_revision_bounds_of_a_release() -> None:
    """min and max are inclusive; revisions may be written as text or numbers."""
    (entry,) = parse_feed(
        native(release(min_chip_rev=3, max_chip_rev="1.99")), feed_url=FEED_URL
    ).releases
    assert not entry.supports_chip_revision(2)
    assert entry.supports_chip_revision(3)
    assert entry.supports_chip_revision(199)
    assert not entry.supports_chip_revision(200)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (native(release(sha256="xyz")), "releases[0].sha256: expected 64 hex digits"),
        (native(release(), release(size=-1)), "releases[1].size: expected a number >= 0"),
        (native(release(size=0)), "releases[0].size: expected a number > 0"),
        (native(release(size="12")), "releases[0].size: expected a whole number"),
        (native(release(size=True)), "releases[0].size: expected a whole number"),
        (native(release(version=None)), "releases[0].version: missing"),
        (native(release(version="  ")), "releases[0].version: expected a non-empty string"),
        (native(release(chip="esp8266")), "releases[0].chip: unknown chip 'esp8266'"),
        (native(release(channel="nightly")), 'releases[0].channel: expected "stable" or "beta"'),
        (native(release(url="ftp://x/y.bin")), "releases[0].url: expected an http(s) URL"),
        (native(release(published="yesterday")), "releases[0].published: expected an ISO 8601"),
        (native(release(published=5)), "releases[0].published: expected an ISO 8601"),
        (native(release(min_chip_rev="three")), "releases[0].min_chip_rev: chip revision"),
        (native(release(max_chip_rev=[1])), "releases[0].max_chip_rev: expected a chip revision"),
        (native(release(sha256=5)), "releases[0].sha256: expected a string"),
        (native(release(url="https://")), "releases[0].url: expected an http(s) URL"),
        (native(release(url="http:x.bin")), "releases[0].url: expected an http(s) URL"),
        (native(release(url="http://[::1/x.bin")), "releases[0].url: not a valid URL"),
        (native(release(release_notes_url="mailto:a@b")), "releases[0].release_notes_url: "),
        (
            native(release(min_chip_rev="v1.0", max_chip_rev="v0.99")),
            "releases[0].max_chip_rev: v0.99 is below min_chip_rev v1.0",
        ),
        (native(release(secure_version=-1)), "releases[0].secure_version: expected a number >= 0"),
        (native(release(summary=5)), "releases[0].summary"),
        (
            {"format": "esp-ota-feed", "format_version": 1, "releases": {}},
            "releases: expected a list",
        ),
        (
            {"format": "esp-ota-feed", "format_version": 0, "releases": []},
            "format_version: expected a number > 0",
        ),
        (
            {"format": "esp-ota-feed", "format_version": "1", "releases": []},
            "format_version: expected a whole number",
        ),
        (
            {"format": "esp-ota-feed", "format_version": True, "releases": []},
            "format_version: expected a whole number",
        ),
        ({"format": "esp-ota-feed", "releases": []}, "format_version: missing"),
        ({"format": "esp-ota-feed", "format_version": 1}, "releases: missing"),
        ({"format": "esp-ota-feed", "format_version": 2}, "format_version: 2 is newer"),
        ({"format": "other"}, "format: 'other' is not a feed format"),
        ({"releases": []}, "not a firmware feed"),
        ([1, 2], "feed must be a JSON object"),
    ],
)
def test_errors_name_the_field_and_why(document: Any, message: str) -> None:
    """Every refusal says which field is wrong and how."""
    with pytest.raises(FeedFormatError) as caught:
        parse_feed(json.dumps(document), feed_url=FEED_URL)
    assert message in str(caught.value)


def test_not_json_and_too_large() -> None:
    """Garbage and oversized documents are refused before any schema work."""
    with pytest.raises(FeedFormatError, match="not valid JSON"):
        parse_feed(b"{not json", feed_url=FEED_URL)
    with pytest.raises(FeedFormatError, match="not valid JSON"):
        parse_feed(b"\xff\xfe", feed_url=FEED_URL)
    with pytest.raises(FeedFormatError, match="more than"):
        parse_feed(b" " * (MAX_FEED_BYTES + 1), feed_url=FEED_URL)


WEB_TOOLS_MANIFEST = {
    "name": "garden",
    "version": "2024.11.1",
    "new_install_prompt_erase": True,
    "builds": [
        {
            "chipFamily": "ESP32-C3",
            "ota": {
                "path": "garden.ota.bin",
                "md5": "0123456789abcdef0123456789abcdef",
                "summary": "Bug fixes",
                "release_url": "https://github.com/example/garden/releases/2024.11.1",
            },
            "parts": [{"path": "garden.factory.bin", "offset": 0}],
        },
        {"chipFamily": "ESP8266", "ota": {"path": "esp8266.ota.bin"}},
        {"chipFamily": "ESP32", "parts": [{"path": "factory-only.bin", "offset": 0}]},
    ],
}


def test_web_tools_manifest() -> None:
    """ESPHome's http_request update manifests map onto releases (md5, no sha256/size)."""
    feed = parse_feed(json.dumps(WEB_TOOLS_MANIFEST), feed_url=FEED_URL)
    assert feed.kind is FeedKind.WEB_TOOLS
    assert feed.name == "garden"
    (entry,) = feed.releases  # ESP8266 and builds without "ota" are not offered
    assert entry.project == "garden"
    assert entry.chip == "esp32c3"
    assert entry.version == "2024.11.1"
    assert entry.channel is Channel.STABLE
    assert entry.url == "https://firmware.example.com/garden/garden.ota.bin"
    assert entry.md5 == "0123456789abcdef0123456789abcdef"
    assert (entry.sha256, entry.size) == (None, None)
    assert entry.summary == "Bug fixes"
    assert entry.release_notes_url == "https://github.com/example/garden/releases/2024.11.1"


def test_web_tools_manifest_errors_name_the_field() -> None:
    """A broken manifest names the build and field."""
    broken = json.loads(json.dumps(WEB_TOOLS_MANIFEST))
    broken["builds"][0]["ota"]["md5"] = "short"
    with pytest.raises(FeedFormatError, match=r"builds\[0\]\.ota\.md5: expected 32 hex digits"):
        parse_feed(broken, feed_url=FEED_URL)


def test_all_errors_are_reported_at_once() -> None:
    """A publisher sees every problem in one go, sorted, each with its path."""
    document = native(release(sha256="xyz", size=0), release(chip="esp9000"))
    with pytest.raises(FeedFormatError) as caught:
        parse_feed(document, feed_url=FEED_URL)
    assert str(caught.value) == (
        "releases[0].sha256: expected 64 hex digits; "
        "releases[0].size: expected a number > 0; "
        "releases[1].chip: unknown chip 'esp9000'; known chips: esp32, esp32s2, esp32c3, "
        "esp32s3, esp32c2, esp32c6, esp32h2, esp32p4, esp32c61, esp32c5"
    )


@pytest.mark.parametrize(
    ("reference", "resolved"),
    [
        ("bin/a.bin", "https://firmware.example.com/garden/bin/a.bin"),
        ("../shared/a.bin", "https://firmware.example.com/shared/a.bin"),
        ("/local/a.bin", "https://firmware.example.com/local/a.bin"),
        ("//cdn.example.org/a.bin", "https://cdn.example.org/a.bin"),
        ("a b.bin", "https://firmware.example.com/garden/a%20b.bin"),
        ("http://plain.example/a.bin", "http://plain.example/a.bin"),
    ],
)
def test_relative_urls(reference: str, resolved: str) -> None:
    """Release URLs resolve as a browser would against the feed's URL (RFC 3986)."""
    (entry,) = parse_feed(native(release(url=reference)), feed_url=FEED_URL).releases
    assert entry.url == resolved


def test_feed_url_must_be_absolute() -> None:
    """Resolving against a relative feed URL would give relative release URLs: refused."""
    with pytest.raises(ValueError, match="absolute"):
        parse_feed(native(release()), feed_url="feed.json")
    # A file:// URL (the command line reads local files) is absolute.
    (entry,) = parse_feed(native(release()), feed_url="file:///srv/fw/feed.json").releases
    assert entry.url == "file:///srv/fw/bin/garden-1.2.0.bin"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00+00:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T12:00:00+02:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),  # a date alone: midnight UTC
    ],
)
def test_published_dates_are_always_aware(text: str, expected: datetime) -> None:
    """Any ISO 8601 form reads into an aware datetime, so callers can compare them."""
    (entry,) = parse_feed(native(release(published=text)), feed_url=FEED_URL).releases
    assert entry.published == expected
    assert entry.published is not None
    assert entry.published.tzinfo is not None


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,  # nested deeper than the JSON decoder recurses
        '{"format_version": 1' + "0" * 5000 + "}",  # an integer Python will not convert
    ],
)
def test_hostile_json_is_a_format_error(raw: str) -> None:
    """Documents that make json.loads raise something else still give FeedFormatError."""
    with pytest.raises(FeedFormatError, match="not valid JSON"):
        parse_feed(raw, feed_url=FEED_URL)


def test_models_are_frozen() -> None:
    """Feeds and releases are values: they cannot be changed after parsing."""
    feed = parse_feed(native(release()), feed_url=FEED_URL)
    with pytest.raises(FrozenInstanceError):
        feed.name = "x"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        feed.releases[0].version = "9"  # type: ignore[misc]


def test_web_tools_paths_and_release_urls_resolve() -> None:
    """An absolute path keeps the manifest's host; a relative release_url resolves too."""
    manifest = {
        "name": "pump",
        "version": "2025.1.0",
        "builds": [
            {
                "chipFamily": "ESP32-S3",
                "ota": {"path": "/local/pump/s3.bin", "md5": "ab" * 16, "release_url": "notes"},
            },
            {"chipFamily": "ESP32", "ota": {"path": "https://cdn.example/e.bin", "md5": "CD" * 16}},
        ],
    }
    s3, classic = parse_feed(manifest, feed_url=FEED_URL).releases
    assert (s3.chip, s3.url) == ("esp32s3", "https://firmware.example.com/local/pump/s3.bin")
    assert s3.release_notes_url == "https://firmware.example.com/garden/notes"
    assert (s3.secure_version, s3.min_chip_rev, s3.max_chip_rev) == (0, None, None)
    assert (classic.chip, classic.url, classic.md5) == (
        "esp32",
        "https://cdn.example/e.bin",
        "cd" * 16,
    )
    assert classic.summary is None
    assert classic.release_notes_url is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["builds"][0]["ota"].pop("md5"), r"builds\[0\]\.ota\.md5: missing"),
        (lambda m: m["builds"][0]["ota"].pop("path"), r"builds\[0\]\.ota\.path: missing"),
        (lambda m: m["builds"][0].pop("chipFamily"), r"builds\[0\]\.chipFamily: missing"),
        (lambda m: m.pop("version"), r"^version: missing"),
        (lambda m: m.update(name=""), r"^name: expected a non-empty string"),
        (
            lambda m: m["builds"][0].update(ota="x.bin"),
            r"builds\[0\]\.ota: expected a (dictionary|mapping)",  # voluptuous | probatio
        ),
    ],
)
def test_web_tools_errors(change: Any, message: str) -> None:
    """ESPHome's required fields are required here too, named by their path."""
    manifest = json.loads(json.dumps(WEB_TOOLS_MANIFEST))
    change(manifest)
    with pytest.raises(FeedFormatError, match=message):
        parse_feed(manifest, feed_url=FEED_URL)


def test_web_tools_foreign_builds_are_not_checked() -> None:
    """An ESP8266 build's OTA part is none of our business, even if ESPHome would refuse it."""
    manifest = json.loads(json.dumps(WEB_TOOLS_MANIFEST))
    manifest["builds"][1]["ota"] = {"path": 5}
    (entry,) = parse_feed(manifest, feed_url=FEED_URL).releases
    assert entry.chip == "esp32c3"


def test_parser_works_with_plain_voluptuous() -> None:
    """Home Assistant swaps voluptuous for probatio; outside it (the library on its own)
    the real voluptuous must give the same field paths."""
    program = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.modules["homeassistant"] = None
        spec = importlib.util.spec_from_file_location(
            "espota", {str(LIBRARY_DIR / "__init__.py")!r},
            submodule_search_locations=[{str(LIBRARY_DIR)!r}],
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["espota"] = package
        spec.loader.exec_module(package)
        from espota.errors import FeedFormatError
        from espota.feed import parse_feed
        import voluptuous
        assert "probatio" not in voluptuous.__name__, voluptuous.__name__
        for document in json.loads(sys.stdin.read()):
            try:
                feed = parse_feed(document, feed_url="https://h/f.json")
                print("ok", len(feed.releases))
            except FeedFormatError as err:
                print(err)
        """
    )
    bad_ota = json.loads(json.dumps(WEB_TOOLS_MANIFEST))
    bad_ota["builds"][0]["ota"]["md5"] = "short"
    documents = [
        native(release(), release(sha256="xyz", size=0)),
        native(release(min_chip_rev="v1.0", max_chip_rev="v0.5")),
        bad_ota,
        WEB_TOOLS_MANIFEST,
    ]
    result = subprocess.run(
        [sys.executable, "-c", program],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "releases[1].sha256: expected 64 hex digits; releases[1].size: expected a number > 0",
        "releases[0].max_chip_rev: v0.5 is below min_chip_rev v1.0",
        "builds[0].ota.md5: expected 32 hex digits",
        "ok 1",
    ]
