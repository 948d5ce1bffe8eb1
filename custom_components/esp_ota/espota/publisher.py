"""Writing a feed from firmware files.

Project, version, chip, chip revision bounds and secure_version come from each image's
own descriptor and header; size and SHA-256 are computed from the file. A file that is
not a valid application image is refused with the reason, and nothing is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .chips import format_chip_revision
from .errors import EspOtaError, ImageError
from .feed import FEED_FORMAT, FEED_FORMAT_VERSION, Channel, parse_feed
from .feed_signing import SIGNATURE_SUFFIX, sign_feed
from .image import CHIP_REV_UNSET, RECOMMENDED_CHUNK_SIZE, ImageInfo, StreamingImageVerifier


class PublishError(EspOtaError):
    """A firmware file cannot be published; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class PublishedFeed:
    """What the publisher wrote."""

    feed_path: Path
    signature_path: Path | None
    releases: int


def read_image(path: Path) -> ImageInfo:
    """Verify a firmware file by streaming it (constant memory for any size)."""
    verifier = StreamingImageVerifier()
    with path.open("rb") as file:
        while chunk := file.read(RECOMMENDED_CHUNK_SIZE):
            verifier.update(chunk)
    return verifier.finish()


def release_entry(
    info: ImageInfo,
    *,
    url: str,
    channel: Channel,
    summary: str | None,
    release_notes_url: str | None,
    published: datetime,
) -> dict[str, Any]:
    """The feed entry of one verified image."""
    entry: dict[str, Any] = {
        "project": info.app.project_name,
        "chip": info.chip,
        "version": info.app.version,
        "channel": channel.value,
        "url": url,
        "size": info.file_size,
        "sha256": info.file_sha256,
        "secure_version": info.app.secure_version,
        "min_chip_rev": format_chip_revision(info.header.min_chip_rev_full),
    }
    if info.header.max_chip_rev_full not in CHIP_REV_UNSET:
        entry["max_chip_rev"] = format_chip_revision(info.header.max_chip_rev_full)
    if summary:
        entry["summary"] = summary
    if release_notes_url:
        entry["release_notes_url"] = release_notes_url
    entry["published"] = published.isoformat(timespec="seconds")
    return entry


def publish(
    images: Sequence[Path],
    feed_path: Path,
    *,
    name: str | None = None,
    channel: Channel = Channel.STABLE,
    summary: str | None = None,
    release_notes_url: str | None = None,
    base_url: str | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    published: datetime | None = None,
) -> PublishedFeed:
    """Write `feed_path` (and `<feed_path>.sig` when a key is given) for `images`.

    Release URLs are relative to the feed file unless `base_url` is given. Every image
    is verified first; if any is refused, nothing is written.
    """
    if not images:
        raise PublishError("no firmware files given")
    when = published or datetime.now(UTC)
    releases = []
    for path in images:
        try:
            info = read_image(path)
        except ImageError as err:
            raise PublishError(f"{path}: not a valid application image: {err}") from err
        except OSError as err:
            raise PublishError(f"{path}: cannot read: {err.strerror or err}") from err
        relative = Path(os.path.relpath(path.resolve(), feed_path.resolve().parent)).as_posix()
        url = f"{base_url.rstrip('/')}/{path.name}" if base_url else relative
        releases.append(
            release_entry(
                info,
                url=url,
                channel=channel,
                summary=summary,
                release_notes_url=release_notes_url,
                published=when,
            )
        )
    document: dict[str, Any] = {"format": FEED_FORMAT, "format_version": FEED_FORMAT_VERSION}
    if name:
        document["name"] = name
    document["releases"] = releases
    feed_bytes = (json.dumps(document, indent=2) + "\n").encode()
    parse_feed(feed_bytes, feed_url=feed_path.resolve().as_uri())  # what we write must read
    feed_path.parent.mkdir(parents=True, exist_ok=True)
    feed_path.write_bytes(feed_bytes)
    signature_path = None
    if signing_key is not None:
        signature_path = feed_path.with_name(feed_path.name + SIGNATURE_SUFFIX)
        signature_path.write_bytes(sign_feed(feed_bytes, signing_key))
    return PublishedFeed(feed_path, signature_path, len(releases))
