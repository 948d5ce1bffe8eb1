"""The espota command line: keys, feeds and images.

    espota keygen --out keys/
    espota publish --out feed.json [--key K] app.bin ...
    espota verify feed.json --public-key keys/feed.pub
    espota inspect app.bin [--json]
    espota select feed.json --project P --chip esp32 ...
    espota build-image --version 1.2.0 --out app.bin

`espota` is the console script pyproject.toml installs (``espota.cli:main``, the library
under its own import name, without Home Assistant); from the repository root
``python -m custom_components.esp_ota.espota`` runs the same main().

Results go to standard output, errors to standard error as ``espota <command>: error:
<what and why>``. Exit codes: 0 success, 1 the input was refused or a file could not be
read or written (invalid image, bad signature, ...), 2 usage errors (argparse), 130
interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from .chips import format_chip_revision, parse_chip_revision
from .errors import CommandError, EspOtaError, ImageError
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
from .image import ImageInfo
from .image_builder import build_app_image
from .publisher import publish, read_image
from .selection import DeviceFirmware, installable_releases
from .versions import is_newer

PRIVATE_KEY_NAME: Final = "feed.key"
PUBLIC_KEY_NAME: Final = "feed.pub"
EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

# esp_image_header_t.spi_mode and the high nibble of byte 3 (esp_app_format.h).
_SPI_MODES: Final = {0: "QIO", 1: "QOUT", 2: "DIO", 3: "DOUT", 4: "FAST_READ", 5: "SLOW_READ"}
_FLASH_SIZES: Final = {size: f"{1 << size}MB" for size in range(8)}  # 0 = 1MB .. 7 = 128MB


def _keygen(args: argparse.Namespace, out: TextIO) -> int:
    directory: Path = args.out
    private_path = directory / PRIVATE_KEY_NAME
    public_path = directory / PUBLIC_KEY_NAME
    if private_path.exists() and not args.force:
        raise CommandError(f"{private_path} exists; pass --force to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    # mkstemp creates the file 0600 and the rename puts it in place: the key is never
    # readable by others, not even when --force replaces a file that was.
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{PRIVATE_KEY_NAME}.")
    with os.fdopen(descriptor, "wb") as file:
        file.write(private_key_to_pem(key))
    Path(temporary).replace(private_path)
    public = public_key_text(key)
    public_path.write_text(public + "\n")
    print(f"private key: {private_path} (keep it secret; mode 0600)", file=out)
    print(f"public key:  {public_path}", file=out)
    print(f"public key for Home Assistant: {public}", file=out)
    return EXIT_OK


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
        append=args.append,
    )
    detail = f"{result.added} added"
    if args.append:
        detail += f", {result.replaced} replaced, {result.releases - result.added} kept"
    print(f"wrote {result.feed_path} with {result.releases} release(s) ({detail})", file=out)
    if result.signature_path:
        print(f"signed: {result.signature_path}", file=out)
    if result.removed_stale_signature:
        print("removed the old signature: this feed is not signed", file=out)
    return EXIT_OK


def _public_key_argument(value: str) -> str:
    """--public-key takes a file (feed.pub, a PEM) or the key's text itself."""
    path = Path(value)
    try:
        return path.read_text() if path.is_file() else value
    except UnicodeDecodeError as err:
        raise CommandError(f"{path} is not a text file") from err


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    feed_path: Path = args.feed
    feed_bytes = feed_path.read_bytes()
    signature_path = feed_path.with_name(feed_path.name + SIGNATURE_SUFFIX)
    if args.public_key is not None:
        key = load_public_key(_public_key_argument(args.public_key))
        if not signature_path.exists():
            raise CommandError(f"{signature_path} not found: the feed is not signed")
        # The signature is checked before the feed is parsed, as the client does.
        verify_feed_signature(feed_bytes, signature_path.read_bytes(), key)
        print("signature: valid", file=out)
    elif signature_path.exists():
        print("signature: present, not checked (give --public-key)", file=out)
    else:
        print("signature: none", file=out)
    feed = parse_feed(feed_bytes, feed_url=feed_path.resolve().as_uri())
    print(f"{feed_path}: {feed.kind.value}, {len(feed.releases)} release(s)", file=out)
    for release in feed.releases:
        print(f"  {release.project} {release.version} {release.chip} [{release.channel}]", file=out)
    return EXIT_OK


def _describe_image(path: Path, info: ImageInfo) -> list[tuple[str, str]]:
    """The rows `inspect` prints."""
    header, app = info.header, info.app
    flash_size = _FLASH_SIZES.get(header.spi_size, f"size code {header.spi_size}")
    rows = [
        ("file", str(path)),
        ("chip", f"{info.chip} (id {header.chip_id})"),
        ("chip revisions", header.chip_revision_range),
        ("project", app.project_name),
        ("version", app.version),
        ("secure version", str(app.secure_version)),
        ("ESP-IDF", app.idf_ver),
        ("compiled", f"{app.date} {app.time}"),
        ("app ELF SHA-256", app.app_elf_sha256),
        (
            "eFuse block rev",
            f"{format_chip_revision(app.min_efuse_blk_rev_full)} - "
            f"{format_chip_revision(app.max_efuse_blk_rev_full)}",
        ),
        ("MMU page size", f"{app.mmu_page_size} bytes" if app.mmu_page_size else "not set"),
        (
            "flash",
            f"{_SPI_MODES.get(header.spi_mode, f'mode {header.spi_mode}')}, {flash_size}, "
            f"speed code {header.spi_speed}",
        ),
        ("entry address", f"0x{header.entry_addr:08x}"),
        ("segments", str(header.segment_count)),
    ]
    rows += [
        (
            f"  segment {segment.index}",
            f"load 0x{segment.load_addr:08x}, {segment.length} bytes at file offset "
            f"0x{segment.file_offset:x}",
        )
        for segment in info.segments
    ]
    rows += [
        ("checksum", f"0x{info.checksum:02x} (valid)"),
        ("image SHA-256", f"{info.sha256} (valid)" if info.sha256 else "not appended"),
        ("file size", f"{info.file_size} bytes ({info.trailing_bytes} after the image)"),
        ("file SHA-256", info.file_sha256),
    ]
    return rows


def _inspect(args: argparse.Namespace, out: TextIO) -> int:
    path: Path = args.image
    try:
        info = read_image(path)
    except ImageError as err:
        raise CommandError(f"{path}: not a valid application image: {err}") from err
    if args.json:
        document = {"file": str(path), "valid": True, **dataclasses.asdict(info)}
        print(json.dumps(document, indent=2), file=out)
        return EXIT_OK
    rows = _describe_image(path, info)
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        print(f"{label + ':':<{width}}{value}", file=out)
    return EXIT_OK


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
        return EXIT_OK
    newest = candidates[0]
    verdict = "update" if is_newer(newest.version, device.version) else "up to date"
    print(f"{verdict}: {newest.version} ({newest.url})", file=out)
    for release in candidates[1:]:
        print(f"  also installable: {release.version}", file=out)
    return EXIT_OK


def _build_image(args: argparse.Namespace, out: TextIO) -> int:
    image = build_app_image(
        project=args.project,
        version=args.version,
        chip=args.chip,
        secure_version=args.secure_version,
        min_chip_rev_full=parse_chip_revision(args.min_chip_rev),
        max_chip_rev_full=parse_chip_revision(args.max_chip_rev),
        size=args.size,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(image)
    print(f"wrote {args.out}: {args.project} {args.version} for {args.chip}", file=out)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="espota",
        description="ESP OTA: firmware images, feeds and signing keys.",
        epilog="Exit codes: 0 success, 1 refused input or I/O error, 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    publisher.add_argument(
        "--append",
        action="store_true",
        help="keep the releases already in --out (an image replaces its own release)",
    )
    publisher.set_defaults(handler=_publish)

    verify = commands.add_parser("verify", help="check a feed (and its signature)")
    verify.add_argument("feed", type=Path)
    verify.add_argument(
        "--public-key", help="feed.pub, a PEM file, or the key's text: require a valid signature"
    )
    verify.set_defaults(handler=_verify)

    inspect = commands.add_parser("inspect", help="verify an image and print what it holds")
    inspect.add_argument("image", type=Path)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
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
    build.add_argument("--min-chip-rev", default="v0.0")
    build.add_argument("--max-chip-rev", default="v3.99")
    build.add_argument("--size", type=int, default=256 * 1024, help="bytes, multiple of 16")
    build.set_defaults(handler=_build_image)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command and return its exit code; errors are printed on stderr.

    Called without arguments by the `espota` console script, which exits with the code.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as leaving:  # --help (0) or a usage error (2), already printed
        return leaving.code if isinstance(leaving.code, int) else EXIT_USAGE
    try:
        code: int = args.handler(args, out or sys.stdout)
    except (EspOtaError, ValueError) as err:
        print(f"espota {args.command}: error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"espota {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print(f"espota {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
