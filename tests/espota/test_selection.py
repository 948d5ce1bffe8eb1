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
