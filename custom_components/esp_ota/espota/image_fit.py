"""Whether a verified image fits a release and a device, checked before any device sees it:
the checks a device makes itself, plus the release's own claims."""

from __future__ import annotations

from .chips import format_chip_revision, normalize_chip_name
from .errors import FirmwareMismatchError
from .feed import Release
from .image import ImageInfo
from .selection import DeviceFirmware


def check_fits(info: ImageInfo, release: Release, device: DeviceFirmware) -> None:
    """Raise FirmwareMismatchError unless the image fits both the release and the device.

    The checks a device makes after the first 1 KiB (chip id and revision, then
    advanced_https_ota's project and anti-rollback checks), plus the release's own claims
    (project, chip, version), so a mismatched image is refused before a device spends a
    download on it.
    """
    app, header = info.app, info.header
    # An ESP Web Tools manifest's "name" is a display name, not the descriptor's project.
    if release.sha256 is not None and app.project_name != release.project:
        raise FirmwareMismatchError(
            "project", expected=release.project, actual=app.project_name, against="release"
        )
    if app.project_name != device.project:
        raise FirmwareMismatchError(
            "project", expected=device.project, actual=app.project_name, against="device"
        )
    if info.chip != release.chip:
        raise FirmwareMismatchError(
            "chip", expected=release.chip, actual=info.chip, against="release"
        )
    try:
        device_chip = normalize_chip_name(device.chip)
    except ValueError:
        device_chip = device.chip
    if info.chip != device_chip:
        raise FirmwareMismatchError(
            "chip", expected=device_chip, actual=info.chip, against="device"
        )
    if not header.supports_chip_revision(device.chip_revision):
        raise FirmwareMismatchError(
            "chip_revision",
            expected=format_chip_revision(device.chip_revision),
            actual=header.chip_revision_range,
            against="device",
        )
    if app.version != release.version:
        raise FirmwareMismatchError(
            "version", expected=release.version, actual=app.version, against="release"
        )
    if app.secure_version < device.secure_version:
        raise FirmwareMismatchError(
            "secure_version",
            expected=f">= {device.secure_version}",
            actual=app.secure_version,
            against="device",
        )
