"""Which releases a given device may run, newest first.

Never another project or chip, never a chip revision outside the release's bounds, never a
secure_version below the device's (anti-rollback would refuse it, ESP_ERR_OTA_SMALL_SEC_VER),
never a beta release on the stable channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from .chips import normalize_chip_name
from .feed import Channel, Feed, Release
from .versions import FirmwareVersion

_CHANNELS_SEEN: dict[Channel, frozenset[Channel]] = {
    Channel.STABLE: frozenset({Channel.STABLE}),
    Channel.BETA: frozenset({Channel.STABLE, Channel.BETA}),
}


@dataclass(frozen=True, slots=True)
class DeviceFirmware:
    """What selection needs to know about a device and the firmware it runs."""

    project: str
    chip: str
    chip_revision: int  # major * 100 + minor
    version: str
    secure_version: int


def _canonical_chip(name: str) -> str | None:
    """The device's chip name in canonical form, None for a chip ESP-IDF does not know."""
    try:
        return normalize_chip_name(name)
    except ValueError:
        return None


def can_run(release: Release, device: DeviceFirmware, channel: Channel) -> bool:
    """Whether the device may be offered this release on this channel.

    A device reporting a chip ESP-IDF does not know can run nothing (it is not refused
    with an error: one odd device must not break the others' updates).
    """
    chip = _canonical_chip(device.chip)
    return (
        chip is not None
        and release.channel in _CHANNELS_SEEN[channel]
        and release.project == device.project
        and release.chip == chip
        and release.supports_chip_revision(device.chip_revision)
        and release.secure_version >= device.secure_version
    )


def installable_releases(
    feed: Feed, device: DeviceFirmware, channel: Channel, *, include_running: bool = True
) -> list[Release]:
    """Every release the device may run, newest first; one per version (the first listed).

    With `include_running` False, releases whose version string is exactly the running
    one are left out: advanced_https_ota refuses to install the version it runs (it
    compares the strings), so they are not installable as such. Older versions stay:
    the device accepts downgrades.
    """
    chosen: dict[FirmwareVersion, Release] = {}
    for release in feed.releases:
        if not include_running and release.version == device.version:
            continue
        if can_run(release, device, channel):
            chosen.setdefault(FirmwareVersion(release.version), release)
    return [chosen[version] for version in sorted(chosen, reverse=True)]


def select_release(feed: Feed, device: DeviceFirmware, channel: Channel) -> Release | None:
    """The newest release the device may run, or None when none fits.

    It may be the version the device already runs, or even an older one (when the feed
    dropped newer releases): compare with versions.is_newer before offering an update.
    """
    candidates = installable_releases(feed, device, channel)
    return candidates[0] if candidates else None
