"""Which release a device may run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from custom_components.esp_ota.espota.feed import Channel, Feed, FeedKind, Release
from custom_components.esp_ota.espota.selection import (
    DeviceFirmware,
    can_run,
    installable_releases,
    select_release,
)

DEVICE = DeviceFirmware(
    project="garden", chip="esp32c3", chip_revision=3, version="1.0.0", secure_version=1
)
BASE = Release(
    project="garden",
    chip="esp32c3",
    version="1.1.0",
    channel=Channel.STABLE,
    url="https://x/fw.bin",
    size=4096,
    sha256="ab" * 32,
    md5=None,
    secure_version=1,
    min_chip_rev=None,
    max_chip_rev=None,
    summary=None,
    release_notes_url=None,
    published=None,
)


def feed_of(*releases: Release) -> Feed:
    """A feed holding these releases."""
    return Feed(FeedKind.NATIVE, 1, None, "https://x/feed.json", releases)


def variant(**changes: Any) -> Release:
    """The base release with some fields changed."""
    return replace(BASE, **changes)


@pytest.mark.parametrize(
    ("release", "reason"),
    [
        (variant(project="pump"), "another project"),
        (variant(chip="esp32s3"), "another chip"),
        (variant(min_chip_rev=4), "chip revision below the minimum"),
        (variant(max_chip_rev=2), "chip revision above the maximum"),
        (variant(secure_version=0), "secure_version below the device's"),
        (variant(channel=Channel.BETA), "beta on the stable channel"),
    ],
)
def test_never_offered(release: Release, reason: str) -> None:
    """Each rule alone keeps a release away from the device."""
    assert not can_run(release, DEVICE, Channel.STABLE), reason
    assert select_release(feed_of(release), DEVICE, Channel.STABLE) is None


def test_newest_runnable_release_wins() -> None:
    """The newest release the device can run, not the newest in the feed."""
    feed = feed_of(
        variant(version="1.1.0"),
        variant(version="1.3.0", chip="esp32s3"),  # newer, other chip
        variant(version="1.2.0-3-gabcdef1"),  # git describe: after 1.2.0
        variant(version="1.2.0"),
        variant(version="2.0.0", channel=Channel.BETA),
        variant(version="1.4.0", secure_version=2),  # higher secure_version is fine
        variant(version="1.5.0", min_chip_rev=100),  # needs chip v1.0
    )
    assert [r.version for r in installable_releases(feed, DEVICE, Channel.STABLE)] == [
        "1.4.0",
        "1.2.0-3-gabcdef1",
        "1.2.0",
        "1.1.0",
    ]
    picked = select_release(feed, DEVICE, Channel.STABLE)
    assert picked is not None
    assert picked.version == "1.4.0"


def test_beta_channel_sees_stable_and_beta() -> None:
    """On beta the newest of both channels is offered; a newer stable beats an older beta."""
    feed = feed_of(variant(version="2.0.0b1", channel=Channel.BETA), variant(version="1.9.0"))
    beta_pick = select_release(feed, DEVICE, Channel.BETA)
    assert beta_pick is not None
    assert beta_pick.version == "2.0.0b1"
    feed = feed_of(variant(version="2.0.0b1", channel=Channel.BETA), variant(version="2.0.0"))
    beta_pick = select_release(feed, DEVICE, Channel.BETA)
    assert beta_pick is not None
    assert beta_pick.version == "2.0.0"


def test_duplicates_keep_the_first_listed() -> None:
    """Two entries of one version: the first one listed is the one offered."""
    first, second = variant(url="https://a/1.bin"), variant(url="https://b/1.bin")
    assert installable_releases(feed_of(first, second), DEVICE, Channel.STABLE) == [first]


def test_device_chip_written_any_way() -> None:
    """A device reporting "ESP32-C3" matches releases for esp32c3."""
    device = replace(DEVICE, chip="ESP32-C3")
    assert select_release(feed_of(BASE), device, Channel.STABLE) == BASE


def test_device_with_an_unknown_chip_gets_nothing_and_no_error() -> None:
    """A chip ESP-IDF does not know matches no release; selection does not raise."""
    device = replace(DEVICE, chip="esp8266")
    assert not can_run(BASE, device, Channel.STABLE)
    assert select_release(feed_of(BASE), device, Channel.STABLE) is None
    assert installable_releases(feed_of(BASE), device, Channel.BETA) == []


def test_empty_feed() -> None:
    """No releases: nothing to offer."""
    assert select_release(feed_of(), DEVICE, Channel.BETA) is None


@pytest.mark.parametrize(
    ("revision", "offered"),
    [(2, False), (3, True), (150, True), (199, True), (200, False)],
)
def test_chip_revision_bounds_are_inclusive(revision: int, offered: bool) -> None:
    """[min, max] includes both ends."""
    release = variant(min_chip_rev=3, max_chip_rev=199)
    device = replace(DEVICE, chip_revision=revision)
    assert (select_release(feed_of(release), device, Channel.STABLE) is not None) is offered


@pytest.mark.parametrize(
    ("device_secure", "release_secure", "offered"),
    [(0, 0, True), (1, 1, True), (1, 2, True), (2, 1, False), (5, 0, False)],
)
def test_secure_version_never_below_the_device(
    device_secure: int, release_secure: int, offered: bool
) -> None:
    """Anti-rollback: a release whose secure_version is below the device's is never offered."""
    device = replace(DEVICE, secure_version=device_secure)
    release = variant(secure_version=release_secure)
    assert can_run(release, device, Channel.STABLE) is offered


def test_running_version_and_downgrades() -> None:
    """The running version is the pick when nothing is newer; older ones stay installable.

    Without include_running the exact running version string is left out (the device
    refuses it), but another spelling of it is not (the device compares strings)."""
    feed = feed_of(
        variant(version="0.9.0"),
        variant(version="1.0.0"),
        variant(version="v1.0.0", url="https://x/v.bin"),
    )
    picked = select_release(feed, DEVICE, Channel.STABLE)
    assert picked is not None
    assert picked.version == "1.0.0"  # first listed of the two equal versions
    assert [r.version for r in installable_releases(feed, DEVICE, Channel.STABLE)] == [
        "1.0.0",
        "0.9.0",
    ]
    assert [
        r.version for r in installable_releases(feed, DEVICE, Channel.STABLE, include_running=False)
    ] == ["v1.0.0", "0.9.0"]


def test_web_tools_release_for_a_device_with_anti_rollback() -> None:
    """Web Tools releases carry secure_version 0: a device with a higher one cannot take them."""
    release = variant(sha256=None, size=None, md5="ab" * 16, secure_version=0)
    assert select_release(feed_of(release), replace(DEVICE, secure_version=0), Channel.STABLE)
    assert select_release(feed_of(release), DEVICE, Channel.STABLE) is None


def test_beta_listing_mixes_channels_newest_first() -> None:
    """The beta channel lists stable and beta together by version."""
    feed = feed_of(
        variant(version="1.1.0"),
        variant(version="1.2.0b1", channel=Channel.BETA),
        variant(version="1.2.0"),
        variant(version="1.3.0-rc.1", channel=Channel.BETA),
    )
    assert [r.version for r in installable_releases(feed, DEVICE, Channel.BETA)] == [
        "1.3.0-rc.1",
        "1.2.0",
        "1.2.0b1",
        "1.1.0",
    ]
    assert [r.version for r in installable_releases(feed, DEVICE, Channel.STABLE)] == [
        "1.2.0",
        "1.1.0",
    ]
