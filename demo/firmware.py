"""The demo's firmware: release images built like an ESP-IDF build, and a signed feed.

Images come from espota.image_builder with the fleet's project and chip, so every device
is offered them; the feed is written by espota.publisher, exactly as `espota publish`
would. The signing key is kept in the demo folder, so a restarted demo (without --fresh)
still matches the public key Home Assistant was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from custom_components.esp_ota.espota.feed import Channel
from custom_components.esp_ota.espota.feed_signing import (
    generate_signing_key,
    load_private_key,
    private_key_to_pem,
    public_key_text,
)
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.publisher import publish

FEED_NAME: Final = "feed.json"
KEY_NAME: Final = "feed.key"


@dataclass(frozen=True, slots=True)
class DemoRelease:
    """One release the demo publishes."""

    version: str
    channel: Channel
    summary: str
    crashes_on_boot: bool = False  # the simulator's FaultPlan.crash_versions gets it


# What the feed offers a device running the factory 1.0.0: stable devices get 1.1.0 (good);
# a device on the beta channel gets 1.2.0b1, whose every boot panics, so the bootloader
# rolls it back to what it ran before.
RELEASES: Final = (
    DemoRelease("1.1.0", Channel.STABLE, "Waters on time; quieter Wi-Fi reconnects"),
    DemoRelease(
        "1.2.0b1",
        Channel.BETA,
        "New valve timing (this beta crashes on boot: watch the rollback)",
        crashes_on_boot=True,
    ),
)


@dataclass(frozen=True, slots=True)
class PublishedFirmware:
    """Where the feed is and how to trust it."""

    feed_dir: Path  # served as the web root: feed.json, feed.json.sig, firmware/*.bin
    feed_path: Path
    public_key: str  # the one-line Ed25519 public key for Home Assistant's options
    crash_versions: frozenset[str]


def _signing_key_pem(key_path: Path) -> bytes:
    """The demo's private key, made (mode 0600) on first use."""
    if key_path.exists():
        return key_path.read_bytes()
    key_path.parent.mkdir(parents=True, exist_ok=True)
    pem = private_key_to_pem(generate_signing_key())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return pem


def build_and_publish(
    demo_dir: Path,
    *,
    project: str,
    chip: str,
    image_size: int,
    releases: tuple[DemoRelease, ...] = RELEASES,
) -> PublishedFirmware:
    """Build every release image and publish one signed feed with stable and beta releases.

    Blocking (file I/O, hashing): call it in a thread from async code.
    """
    key = load_private_key(_signing_key_pem(demo_dir / "keys" / KEY_NAME))
    feed_dir = demo_dir / "feed"
    firmware_dir = feed_dir / "firmware"
    firmware_dir.mkdir(parents=True, exist_ok=True)
    feed_path = feed_dir / FEED_NAME
    feed_path.unlink(missing_ok=True)  # a fresh feed each run; the key stays
    for index, release in enumerate(releases):
        image = firmware_dir / f"{project}-{release.version}-{chip}.bin"
        image.write_bytes(
            build_app_image(
                project=project, version=release.version, chip=chip, size=image_size, seed=index
            )
        )
        publish(
            [image],
            feed_path,
            name=f"{project} (ESP OTA demo)",
            channel=release.channel,
            summary=release.summary,
            signing_key=key,
            append=feed_path.exists(),
        )
    return PublishedFirmware(
        feed_dir=feed_dir,
        feed_path=feed_path,
        public_key=public_key_text(key),
        crash_versions=frozenset(r.version for r in releases if r.crashes_on_boot),
    )
