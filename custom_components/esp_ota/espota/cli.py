"""The espota command line: keys, feeds and images.

    python -m custom_components.esp_ota.espota keygen --out keys/
    python -m custom_components.esp_ota.espota publish --out feed.json [--key K] app.bin ...
    python -m custom_components.esp_ota.espota verify feed.json --public-key keys/feed.pub
    python -m custom_components.esp_ota.espota inspect app.bin
    python -m custom_components.esp_ota.espota select feed.json --project P --chip esp32 ...
    python -m custom_components.esp_ota.espota build-image --version 1.2.0 --out app.bin

Exit codes: 0 success, 1 the input was refused (invalid image, bad signature, ...),
2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .chips import parse_chip_revision
from .errors import EspOtaError
from .feed import Channel, parse_feed
from .feed_signing import (
    SIGNATURE_SUFFIX,
    generate_signing_key,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_text,
    verify_feed_signature,
)
from .image_builder import build_app_image
from .publisher import publish, read_image
from .selection import DeviceFirmware, installable_releases
from .versions import is_newer

PRIVATE_KEY_NAME = "feed.key"
PUBLIC_KEY_NAME = "feed.pub"


def _keygen(args: argparse.Namespace, out: TextIO) -> int:
    directory: Path = args.out
    private_path = directory / PRIVATE_KEY_NAME
    if private_path.exists() and not args.force:
        raise EspOtaError(f"{private_path} exists; pass --force to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    # Created 0600 from the start: the key is never readable by others, even briefly.
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(private_key_to_pem(key))
    public = public_key_text(key)
    (directory / PUBLIC_KEY_NAME).write_text(public + "\n")
    print(f"private key: {private_path} (keep it secret)", file=out)
    print(f"public key:  {directory / PUBLIC_KEY_NAME}", file=out)
    print(f"public key for Home Assistant: {public}", file=out)
    return 0


def _publish(args: argparse.Namespace, out: TextIO) -> int:
    key = load_private_key(args.key.read_bytes()) if args.key else None
    result = publish(
        args.images,
        args.out,
        name=args.name,
        channel=Channel(args.channel),
        summary=args.summary,
        release_notes_url=args.release_notes_url,
        base_url=args.base_url,
        signing_key=key,
    )
    print(f"wrote {result.feed_path} with {result.releases} release(s)", file=out)
    if result.signature_path:
        print(f"signed: {result.signature_path}", file=out)
    return 0


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    feed_bytes = args.feed.read_bytes()
    feed = parse_feed(feed_bytes, feed_url=args.feed.resolve().as_uri())
    if args.public_key:
        signature_path = args.feed.with_name(args.feed.name + SIGNATURE_SUFFIX)
        if not signature_path.exists():
            raise EspOtaError(f"{signature_path} not found: the feed is not signed")
        key = load_public_key(args.public_key.read_text())
        verify_feed_signature(feed_bytes, signature_path.read_bytes(), key)
        print("signature: valid", file=out)
    print(f"{args.feed}: {feed.kind.value}, {len(feed.releases)} release(s)", file=out)
    for release in feed.releases:
        print(f"  {release.project} {release.version} {release.chip} [{release.channel}]", file=out)
    return 0


def _inspect(args: argparse.Namespace, out: TextIO) -> int:
    info = read_image(args.image)
    header, app = info.header, info.app
    rows = [
        ("chip", f"{info.chip} (id {header.chip_id})"),
        ("chip revisions", header.chip_revision_range),
        ("project", app.project_name),
        ("version", app.version),
        ("secure version", str(app.secure_version)),
        ("ESP-IDF", app.idf_ver),
        ("compiled", f"{app.date} {app.time}"),
        ("app ELF SHA-256", app.app_elf_sha256),
        ("segments", str(header.segment_count)),
        ("checksum", f"0x{info.checksum:02x} (valid)"),
        ("image SHA-256", f"{info.sha256} (valid)" if info.sha256 else "not appended"),
        ("file size", f"{info.file_size} bytes ({info.trailing_bytes} after the image)"),
        ("file SHA-256", info.file_sha256),
    ]
    for label, value in rows:
        print(f"{label + ':':<17}{value}", file=out)
    return 0


def _select(args: argparse.Namespace, out: TextIO) -> int:
    feed = parse_feed(args.feed.read_bytes(), feed_url=args.feed.resolve().as_uri())
    device = DeviceFirmware(
        project=args.project,
        chip=args.chip,
        chip_revision=parse_chip_revision(args.chip_revision),
        version=args.version,
        secure_version=args.secure_version,
    )
    candidates = installable_releases(feed, device, Channel(args.channel))
    if not candidates:
        print("no release in the feed fits this device", file=out)
        return 0
    newest = candidates[0]
    verdict = "update" if is_newer(newest.version, device.version) else "up to date"
    print(f"{verdict}: {newest.version} ({newest.url})", file=out)
    for release in candidates[1:]:
        print(f"  also installable: {release.version}", file=out)
    return 0


def _build_image(args: argparse.Namespace, out: TextIO) -> int:
    image = build_app_image(
        project=args.project,
        version=args.version,
        chip=args.chip,
        secure_version=args.secure_version,
        size=args.size,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(image)
    print(f"wrote {args.out}: {args.project} {args.version} for {args.chip}", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="espota", description="ESP OTA: firmware images, feeds and signing keys."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    keygen = commands.add_parser("keygen", help="make an Ed25519 key pair for signing feeds")
    keygen.add_argument("--out", type=Path, default=Path(), help="folder for feed.key/feed.pub")
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    keygen.set_defaults(handler=_keygen)

    publisher = commands.add_parser("publish", help="write a feed from .bin files")
    publisher.add_argument("images", type=Path, nargs="+", help="application images (.bin)")
    publisher.add_argument("--out", type=Path, required=True, help="the feed file to write")
    publisher.add_argument("--key", type=Path, help="private key: also write <feed>.sig")
    publisher.add_argument("--name", help="the feed's name")
    publisher.add_argument("--channel", choices=[c.value for c in Channel], default="stable")
    publisher.add_argument("--summary", help="short release summary")
    publisher.add_argument("--release-notes-url", help="release notes address")
    publisher.add_argument("--base-url", help="absolute URL prefix instead of relative URLs")
    publisher.set_defaults(handler=_publish)

    verify = commands.add_parser("verify", help="check a feed (and its signature)")
    verify.add_argument("feed", type=Path)
    verify.add_argument("--public-key", type=Path, help="feed.pub: require a valid signature")
    verify.set_defaults(handler=_verify)

    inspect = commands.add_parser("inspect", help="verify an image and print what it holds")
    inspect.add_argument("image", type=Path)
    inspect.set_defaults(handler=_inspect)

    select = commands.add_parser("select", help="which release a device would be offered")
    select.add_argument("feed", type=Path)
    select.add_argument("--project", required=True)
    select.add_argument("--chip", required=True)
    select.add_argument("--chip-revision", default="v0.0", help='e.g. "v3.1"')
    select.add_argument("--version", required=True, help="the version the device runs")
    select.add_argument("--secure-version", type=int, default=0)
    select.add_argument("--channel", choices=[c.value for c in Channel], default="stable")
    select.set_defaults(handler=_select)

    build = commands.add_parser("build-image", help="make a valid test image (no toolchain)")
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--project", default="demo")
    build.add_argument("--version", default="1.0.0")
    build.add_argument("--chip", default="esp32")
    build.add_argument("--secure-version", type=int, default=0)
    build.add_argument("--size", type=int, default=256 * 1024, help="bytes, multiple of 16")
    build.set_defaults(handler=_build_image)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; errors are printed on stderr with a non-zero exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args, out or sys.stdout)
    except (EspOtaError, ValueError) as err:
        print(f"espota {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(
            f"espota {args.command}: error: {err.strerror or err}: {err.filename}", file=sys.stderr
        )
        return 1
    return code
