"""The publisher: a feed from .bin files, read from their own headers and descriptors."""

from __future__ import annotations

import hashlib
import json
import stat
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from custom_components.esp_ota.espota.errors import PublishError
from custom_components.esp_ota.espota.feed import Channel, parse_feed
from custom_components.esp_ota.espota.feed_signing import (
    generate_signing_key,
    verify_feed_signature,
)
from custom_components.esp_ota.espota.image import IMAGE_HEADER_SIZE, SHA256_SIZE
from custom_components.esp_ota.espota.image_builder import (
    Defect,
    build_app_image,
    build_broken_image,
)
from custom_components.esp_ota.espota.publisher import publish, read_image

WHEN = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
FEED_URL = "https://fw.example.com/garden/feed.json"


def image_file(folder: Path, name: str, **fields: object) -> Path:
    """Write a valid image built with these descriptor/header fields."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_app_image(**fields))  # type: ignore[arg-type]
    return path


def feed_document(path: Path) -> dict[str, Any]:
    """The JSON object of a written feed."""
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def test_entries_come_from_the_images(tmp_path: Path) -> None:
    """Project, version, chip, chip revision bounds and secure_version from each image;
    size and SHA-256 of the file; options as given."""
    first = image_file(
        tmp_path / "fw",
        "garden-c3.bin",
        project="garden",
        version="1.1.0",
        chip="esp32c3",
        min_chip_rev_full=3,
        max_chip_rev_full=199,
        secure_version=2,
        size=8192,
    )
    second = image_file(
        tmp_path / "fw", "garden-s3.bin", project="garden", version="1.2.0-rc.1", chip="esp32s3"
    )
    feed_path = tmp_path / "feed.json"
    result = publish(
        [first, second],
        feed_path,
        name="Garden",
        channel=Channel.BETA,
        summary="Faster valves",
        release_notes_url="https://example.com/notes",
        published=WHEN,
    )
    assert (result.releases, result.added, result.replaced) == (2, 2, 0)
    assert result.signature_path is None
    document = feed_document(feed_path)
    assert document["format"] == "esp-ota-feed"
    assert document["format_version"] == 1
    assert document["name"] == "Garden"
    entry = document["releases"][0]
    assert entry == {
        "project": "garden",
        "chip": "esp32c3",
        "version": "1.1.0",
        "channel": "beta",
        "url": "fw/garden-c3.bin",
        "size": 8192,
        "sha256": hashlib.sha256(first.read_bytes()).hexdigest(),
        "secure_version": 2,
        "min_chip_rev": "v0.3",
        "max_chip_rev": "v1.99",
        "summary": "Faster valves",
        "release_notes_url": "https://example.com/notes",
        "published": "2026-11-25T10:30:00+00:00",
    }
    feed = parse_feed(feed_path.read_bytes(), feed_url=FEED_URL)
    assert feed.releases[1].url == "https://fw.example.com/garden/fw/garden-s3.bin"
    assert feed.releases[1].version == "1.2.0-rc.1"
    assert stat.S_IMODE(feed_path.stat().st_mode) == 0o644  # a feed is public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.json", "fw"]  # no temp files


def test_no_upper_chip_revision_bound(tmp_path: Path) -> None:
    """max_chip_rev_full 0 or 0xFFFF means "any": the entry has no max_chip_rev."""
    images = [
        image_file(tmp_path, "a.bin", version="1", max_chip_rev_full=0xFFFF),
        image_file(tmp_path, "b.bin", version="2", max_chip_rev_full=0),
    ]
    publish(images, tmp_path / "feed.json", published=WHEN)
    for entry in feed_document(tmp_path / "feed.json")["releases"]:
        assert "max_chip_rev" not in entry


def test_urls_are_percent_encoded(tmp_path: Path) -> None:
    """File names with spaces or '#' become URLs that point at them, relative or absolute."""
    image = image_file(tmp_path / "my firmware", "garden #2.bin")
    publish([image], tmp_path / "feed.json", published=WHEN)
    (entry,) = feed_document(tmp_path / "feed.json")["releases"]
    assert entry["url"] == "my%20firmware/garden%20%232.bin"
    (release,) = parse_feed((tmp_path / "feed.json").read_bytes(), feed_url=FEED_URL).releases
    assert release.url == "https://fw.example.com/garden/my%20firmware/garden%20%232.bin"
    publish([image], tmp_path / "feed.json", base_url="https://cdn.example/fw/")
    (entry,) = feed_document(tmp_path / "feed.json")["releases"]
    assert entry["url"] == "https://cdn.example/fw/garden%20%232.bin"


def test_images_outside_the_feed_folder(tmp_path: Path) -> None:
    """An image beside the feed's folder gets a ../ URL."""
    image = image_file(tmp_path / "bin", "a.bin")
    publish([image], tmp_path / "public" / "feed.json", published=WHEN)
    (entry,) = feed_document(tmp_path / "public" / "feed.json")["releases"]
    assert entry["url"] == "../bin/a.bin"


def test_signed_and_then_unsigned(tmp_path: Path) -> None:
    """A key writes <feed>.sig over the exact bytes; publishing unsigned later removes it."""
    key = generate_signing_key()
    image = image_file(tmp_path, "a.bin")
    feed_path = tmp_path / "feed.json"
    result = publish([image], feed_path, signing_key=key)
    assert result.signature_path == tmp_path / "feed.json.sig"
    verify_feed_signature(
        feed_path.read_bytes(), result.signature_path.read_bytes(), key.public_key()
    )
    unsigned = publish([image], feed_path)
    assert unsigned.removed_stale_signature
    assert not (tmp_path / "feed.json.sig").exists()
    assert not publish([image], feed_path).removed_stale_signature


@pytest.mark.parametrize("defect", list(Defect))
def test_invalid_images_are_refused_and_nothing_is_written(tmp_path: Path, defect: Defect) -> None:
    """Each kind of broken image is refused naming the file and the reason; an existing
    feed stays byte for byte what it was."""
    good = image_file(tmp_path, "good.bin")
    feed_path = tmp_path / "feed.json"
    publish([good], feed_path, published=WHEN)
    before = feed_path.read_bytes()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(build_broken_image(defect))
    with pytest.raises(PublishError, match=r"bad\.bin: not a valid application image: \S"):
        publish([good, bad], feed_path)
    assert feed_path.read_bytes() == before
    fresh = tmp_path / "new" / "feed.json"
    with pytest.raises(PublishError):
        publish([bad, good], fresh)
    assert not fresh.parent.exists()


def test_files_that_are_not_images(tmp_path: Path) -> None:
    """A missing file, a folder, a text file: each refused with its name."""
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(PublishError, match=r"notes\.txt: not a valid application image"):
        publish([text], tmp_path / "feed.json")
    with pytest.raises(PublishError, match=r"missing\.bin: cannot read"):
        publish([tmp_path / "missing.bin"], tmp_path / "feed.json")
    with pytest.raises(PublishError, match="no firmware files"):
        publish([], tmp_path / "feed.json")
    assert not (tmp_path / "feed.json").exists()


def test_descriptors_a_feed_cannot_carry(tmp_path: Path) -> None:
    """An empty version or project, or an unknown chip id, is refused naming the file."""
    with pytest.raises(PublishError, match=r"v\.bin: the image's descriptor has an empty version"):
        publish([image_file(tmp_path, "v.bin", version=" ")], tmp_path / "feed.json")
    with pytest.raises(PublishError, match="empty project_name"):
        publish([image_file(tmp_path, "p.bin", project="")], tmp_path / "feed.json")
    # Chip id 99 in the header (offset 12), SHA-256 recomputed so only the chip is odd.
    raw = bytearray(build_app_image())
    raw[12:14] = (99).to_bytes(2, "little")
    raw[-SHA256_SIZE:] = hashlib.sha256(raw[:-SHA256_SIZE]).digest()
    (tmp_path / "odd.bin").write_bytes(raw)
    assert read_image(tmp_path / "odd.bin").chip == "unknown(99)"
    with pytest.raises(PublishError, match=r"odd\.bin: the image is for chip id 99, unknown"):
        publish([tmp_path / "odd.bin"], tmp_path / "feed.json")
    assert IMAGE_HEADER_SIZE == 24  # the offset above is inside the header


def test_two_images_of_one_release_are_refused(tmp_path: Path) -> None:
    """Same project, chip and version twice would make the feed ambiguous."""
    first = image_file(tmp_path, "a.bin", version="1.0")
    second = image_file(tmp_path, "b.bin", version="v1.0.0", seed=1)
    with pytest.raises(PublishError, match=r"b\.bin and .*a\.bin are both demo v1\.0\.0"):
        publish([first, second], tmp_path / "feed.json")
    # Another chip is another release.
    third = image_file(tmp_path, "c.bin", version="1.0", chip="esp32c3")
    assert publish([first, third], tmp_path / "feed.json").releases == 2


def test_append_keeps_replaces_and_preserves(tmp_path: Path) -> None:
    """--append keeps other releases as written (unknown fields too), replaces the same
    release, keeps the name unless a new one is given."""
    feed_path = tmp_path / "feed.json"
    old_stable = image_file(tmp_path, "1.0.bin", version="1.0.0")
    publish([old_stable], feed_path, name="Garden", published=WHEN)
    document = feed_document(feed_path)
    document["mirrors"] = ["https://mirror.example/"]
    document["releases"][0]["chip"] = "ESP32"
    document["releases"][0]["x-build-host"] = "ci-7"
    feed_path.write_text(json.dumps(document))

    beta = image_file(tmp_path, "1.1b1.bin", version="1.1.0b1")
    result = publish([beta], feed_path, channel=Channel.BETA, append=True, published=WHEN)
    assert (result.releases, result.added, result.replaced) == (2, 1, 0)
    document = feed_document(feed_path)
    assert document["name"] == "Garden"
    assert document["mirrors"] == ["https://mirror.example/"]
    releases = document["releases"]
    assert [(r["version"], r["channel"]) for r in releases] == [
        ("1.1.0b1", "beta"),
        ("1.0.0", "stable"),
    ]
    assert releases[1]["x-build-host"] == "ci-7"
    assert releases[1]["chip"] == "ESP32"

    rebuilt = image_file(tmp_path, "1.0-fixed.bin", version="v1.0.0", seed=3)
    result = publish([rebuilt], feed_path, append=True, name="Garden 2")
    assert (result.releases, result.added, result.replaced) == (2, 1, 1)
    document = feed_document(feed_path)
    assert document["name"] == "Garden 2"
    assert [r["url"] for r in document["releases"]] == [
        "1.0-fixed.bin",
        "1.1b1.bin",
    ]


def test_append_to_nothing_creates_the_feed(tmp_path: Path) -> None:
    """Appending to a feed that does not exist yet writes a new one."""
    image = image_file(tmp_path, "a.bin")
    result = publish([image], tmp_path / "feed.json", append=True)
    assert (result.releases, result.replaced) == (1, 0)


def test_append_refuses_what_it_cannot_extend(tmp_path: Path) -> None:
    """A broken feed, a Web Tools manifest, or an unreadable path is not appended to."""
    image = image_file(tmp_path, "a.bin")
    feed_path = tmp_path / "feed.json"
    feed_path.write_text('{"format": "esp-ota-feed"}')
    with pytest.raises(PublishError, match="cannot append to it: format_version: missing"):
        publish([image], feed_path, append=True)
    feed_path.write_text(json.dumps({"name": "x", "version": "1", "builds": []}))
    with pytest.raises(PublishError, match="ESP Web Tools manifest"):
        publish([image], feed_path, append=True)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(PublishError, match=r"folder\.json: cannot read"):
        publish([image], folder, append=True)


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """If the rename fails (the target is a folder), the temporary file is removed."""
    image = image_file(tmp_path / "fw", "a.bin")
    target = tmp_path / "feed.json"
    target.mkdir()
    (target / "keep").write_text("")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError, match=r"(?i)directory"):
        publish([image], target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.json", "fw"]


def test_large_images_are_read_in_constant_memory(tmp_path: Path) -> None:
    """A 16 MiB image is verified with far less than its size in memory."""
    size = 16 * 1024 * 1024
    image = image_file(tmp_path, "big.bin", size=size)
    tracemalloc.start()
    try:
        info = read_image(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.file_size == size
    assert peak < 1024 * 1024, peak


def test_real_esp_idf_images(esp_images_dir: Path, tmp_path: Path) -> None:
    """Real builds publish with what their descriptors say; a bootloader and a RAM-only
    image are refused with their names."""
    blink = esp_images_dir / "esp_idf_blink_esp32s2.bin"
    signed = esp_images_dir / "hello-world-signed.bin"
    feed_path = tmp_path / "feed.json"
    result = publish([blink, signed], feed_path, base_url="https://fw.example/", published=WHEN)
    assert result.releases == 2
    first, second = parse_feed(feed_path.read_bytes(), feed_url=FEED_URL).releases
    assert (first.project, first.chip) == ("blink", "esp32s2")
    assert first.version == "qa-test-v5.0-20220830-4-g4532e6"
    assert first.size == blink.stat().st_size
    assert first.sha256 == hashlib.sha256(blink.read_bytes()).hexdigest()
    assert first.url == "https://fw.example/esp_idf_blink_esp32s2.bin"
    # The Secure Boot v1 signature after the image is part of the file a device downloads.
    assert second.chip == "esp32"
    assert second.size == signed.stat().st_size
    for refused in ("bootloader_esp32_v5_2.bin", "helloworld-esp32c3.bin"):
        with pytest.raises(PublishError, match=rf"{refused}: not a valid application image"):
            publish([blink, esp_images_dir / refused], tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()
