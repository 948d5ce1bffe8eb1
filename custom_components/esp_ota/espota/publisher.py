"""Writing a feed from firmware files.

Project, version, chip, chip revision bounds and secure_version come from each image's
own header and descriptor (image.StreamingImageVerifier, the same parser as
image.parse_image, fed in 64 KiB reads so any size takes constant memory); size and
SHA-256 are computed from the file. A file that is not a valid application image is
refused with its name and the reason, and nothing is written.

The feed and its signature are each written to a temporary file and renamed into place,
so a web server never serves half a file; a stale ``.sig`` from an earlier signed
publication is removed when publishing unsigned.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .chips import CHIP_IDS, format_chip_revision, normalize_chip_name
from .errors import FeedError, ImageError, PublishError
from .feed import FEED_FORMAT, FEED_FORMAT_VERSION, Channel, FeedKind, parse_feed
from .feed_signing import SIGNATURE_SUFFIX, sign_feed
from .image import CHIP_REV_UNSET, RECOMMENDED_CHUNK_SIZE, ImageInfo, StreamingImageVerifier
from .versions import FirmwareVersion

__all__ = ["PublishedFeed", "publish", "read_image", "release_entry"]


@dataclass(frozen=True, slots=True)
class PublishedFeed:
    """What the publisher wrote."""

    feed_path: Path
    signature_path: Path | None  # None when unsigned
    releases: int  # releases in the feed (kept ones included)
    added: int  # releases from the given images
    replaced: int  # releases of an appended-to feed that the images replaced
    removed_stale_signature: bool  # an unsigned publication removed an old .sig


def read_image(path: Path) -> ImageInfo:
    """Verify a firmware file by streaming it (constant memory for any size).

    Raises ImageError (not a valid application image) or OSError (cannot read).
    """
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
    """The feed entry (a JSON object) of one verified image."""
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


def _image_url(path: Path, feed_path: Path, base_url: str | None) -> str:
    """The release URL: relative to the feed, or under base_url; always percent-encoded."""
    if base_url:
        return f"{base_url.rstrip('/')}/{quote(path.name)}"
    relative = Path(os.path.relpath(path.resolve(), feed_path.resolve().parent)).as_posix()
    return quote(relative)


def _verified_image(path: Path) -> ImageInfo:
    """Read one image; every refusal names the file."""
    try:
        info = read_image(path)
    except ImageError as err:
        raise PublishError(f"{path}: not a valid application image: {err}") from err
    except OSError as err:
        raise PublishError(f"{path}: cannot read: {err.strerror or err}") from err
    if info.chip not in CHIP_IDS:
        raise PublishError(f"{path}: the image is for chip id {info.header.chip_id}, unknown")
    for label, value in (("project_name", info.app.project_name), ("version", info.app.version)):
        if not value.strip():
            raise PublishError(f"{path}: the image's descriptor has an empty {label}")
    return info


def _release_identity(entry: dict[str, Any]) -> tuple[str, str, FirmwareVersion]:
    """What makes two entries the same release: project, chip and version.

    Compared in canonical form ("ESP32-S3" is esp32s3, "v1.0" is 1.0.0); entries are
    only called with chips the feed parser accepted.
    """
    return (
        entry["project"].strip(),
        normalize_chip_name(entry["chip"]),
        FirmwareVersion(entry["version"]),
    )


def _existing_document(feed_path: Path) -> dict[str, Any] | None:
    """The feed being appended to, checked; None when there is none yet."""
    try:
        raw = feed_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PublishError(f"{feed_path}: cannot read: {err.strerror or err}") from err
    try:
        feed = parse_feed(raw, feed_url=feed_path.resolve().as_uri())
    except FeedError as err:
        raise PublishError(f"{feed_path}: cannot append to it: {err}") from err
    if feed.kind is not FeedKind.NATIVE:
        raise PublishError(f"{feed_path}: cannot append to an ESP Web Tools manifest")
    document: dict[str, Any] = json.loads(raw)
    return document


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and a rename: never half a file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        # mkstemp makes 0600 files; a feed is public.
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
    append: bool = False,
) -> PublishedFeed:
    """Write `feed_path` (and `<feed_path>.sig` when a key is given) for `images`.

    Release URLs are relative to the feed file unless `base_url` is given. With `append`,
    the releases already in `feed_path` are kept (as written, unknown fields included),
    except those of the same project, chip and version as a given image, which the image
    replaces; the feed's name is kept unless `name` is given. Every image is verified
    first and two images of one release are refused: if anything is refused, nothing is
    written. Raises PublishError; OSError when the output cannot be written.
    """
    if not images:
        raise PublishError("no firmware files given")
    when = published or datetime.now(UTC)
    new_entries: list[dict[str, Any]] = []
    sources: dict[tuple[str, str, FirmwareVersion], Path] = {}
    for path in images:
        info = _verified_image(path)
        entry = release_entry(
            info,
            url=_image_url(path, feed_path, base_url),
            channel=channel,
            summary=summary,
            release_notes_url=release_notes_url,
            published=when,
        )
        identity = _release_identity(entry)
        if identity in sources:
            raise PublishError(
                f"{path} and {sources[identity]} are both {entry['project']} "
                f"{entry['version']} for {entry['chip']}: publish one of them"
            )
        sources[identity] = path
        new_entries.append(entry)

    document: dict[str, Any] = {"format": FEED_FORMAT, "format_version": FEED_FORMAT_VERSION}
    kept: list[dict[str, Any]] = []
    replaced = 0
    existing = _existing_document(feed_path) if append else None
    if existing is not None:
        document = {key: value for key, value in existing.items() if key != "releases"}
        for entry in existing["releases"]:
            if _release_identity(entry) in sources:
                replaced += 1
            else:
                kept.append(entry)
    if name:
        document["name"] = name
    document["releases"] = new_entries + kept
    feed_bytes = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    parse_feed(feed_bytes, feed_url=feed_path.resolve().as_uri())  # what we write must read

    feed_path.parent.mkdir(parents=True, exist_ok=True)
    signature_path = feed_path.with_name(feed_path.name + SIGNATURE_SUFFIX)
    _write_atomically(feed_path, feed_bytes)
    removed_stale = False
    if signing_key is not None:
        _write_atomically(signature_path, sign_feed(feed_bytes, signing_key))
    elif signature_path.exists():
        # An old signature would make clients with a key report "does not match"
        # instead of the truth, "not signed".
        signature_path.unlink()
        removed_stale = True
    return PublishedFeed(
        feed_path=feed_path,
        signature_path=signature_path if signing_key is not None else None,
        releases=len(document["releases"]),
        added=len(new_entries),
        replaced=replaced,
        removed_stale_signature=removed_stale,
    )
