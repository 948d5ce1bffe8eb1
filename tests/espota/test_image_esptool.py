"""esptool, Espressif's reference reader, agrees with our parser on built and real images.

esptool exits 0 even for an invalid checksum or hash, so its text is compared.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from custom_components.esp_ota.espota.chips import format_chip_revision
from custom_components.esp_ota.espota.errors import (
    ImageError,
    ImageTooShortError,
    NoAppDescriptorError,
)
from custom_components.esp_ota.espota.image import ImageInfo, parse_image
from custom_components.esp_ota.espota.image_builder import (
    Defect,
    build_app_image,
    build_broken_image,
)


def esptool(*args: str | Path) -> str:
    """Run esptool from this environment and return what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "esptool", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.stdout + result.stderr


def image_info(path: Path) -> dict[str, str]:
    """`esptool image-info` as a dict of its "Label: value" lines, plus the segments."""
    text = esptool("image-info", path)
    fields = {
        match[1].strip(): match[2].strip()
        for match in re.finditer(r"^([A-Za-z][\w .-]+?): (.*)$", text, flags=re.MULTILINE)
    }
    segments = re.findall(
        r"^\s+(\d+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", text, flags=re.MULTILINE
    )
    fields["_segments"] = ";".join(
        f"{int(length, 16)}@{int(load, 16):#x}" for _, length, load, _ in segments
    )
    fields["_text"] = text
    return fields


def assert_esptool_agrees(info: ImageInfo, fields: dict[str, str]) -> None:
    """Every field both tools report is the same."""
    assert fields["Entry point"] == f"{info.header.entry_addr:#010x}"
    assert fields["Segments"] == str(info.header.segment_count)
    assert fields["_segments"] == ";".join(
        f"{segment.length}@{segment.load_addr:#x}" for segment in info.segments
    )
    assert fields["Chip ID"].startswith(f"{info.header.chip_id} ")
    assert fields["Minimal chip revision"].startswith(
        format_chip_revision(info.header.min_chip_rev_full)
    )
    assert f"legacy min_rev = {info.header.min_chip_rev}" in fields["Minimal chip revision"]
    assert fields["Maximal chip revision"] == format_chip_revision(info.header.max_chip_rev_full)
    assert fields["Checksum"] == f"{info.checksum:#04x} (valid)"
    if info.sha256 is not None:
        assert fields["Validation hash"] == f"{info.sha256} (valid)"
    assert fields["Project name"] == info.app.project_name
    assert fields["App version"] == info.app.version
    assert fields["Compile time"] == f"{info.app.date} {info.app.time}"
    assert fields["ELF file SHA256"] == info.app.app_elf_sha256
    assert fields["ESP-IDF"] == info.app.idf_ver
    assert fields["Secure version"] == str(info.app.secure_version)


@pytest.mark.parametrize(
    "options",
    [
        {"chip": "esp32", "version": "1.0.0", "size": 4096},
        {"chip": "esp32s3", "version": "v2.3.4-5-gabcdef0", "secure_version": 3, "size": 65536},
        {"chip": "esp32c3", "min_chip_rev_full": 3, "max_chip_rev_full": 199, "size": 2048},
        {"chip": "esp32c6", "project": "a-long-project-name-31-chars-xx", "size": 1024},
        {"chip": "esp32s2", "hash_appended": False, "size": 8192},
        {"chip": "esp32h2", "idf_ver": "v5.5-dev-1234-gdeadbee", "size": 300_000},
    ],
    ids=lambda options: str(options["chip"]),
)
def test_esptool_reads_built_images_as_valid(options: dict[str, object], tmp_path: Path) -> None:
    """Built images are valid to esptool, and it reads the same fields."""
    image = build_app_image(**options)  # type: ignore[arg-type]
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    fields = image_info(path)
    assert fields["Image size"] == f"{len(image)} bytes"
    assert_esptool_agrees(parse_image(image), fields)


@pytest.mark.parametrize(
    ("defect", "esptool_says"),
    [
        (Defect.BAD_CHECKSUM, r"Checksum: 0x[0-9a-f]{2} \(invalid"),
        (Defect.BAD_SHA256, r"Validation hash: [0-9a-f]{64} \(invalid\)"),
        (Defect.BAD_MAGIC, r"(?i)invalid .*magic|magic number"),
    ],
    ids=str,
)
def test_esptool_also_calls_broken_images_invalid(
    defect: Defect, esptool_says: str, tmp_path: Path
) -> None:
    """Where we refuse an image, the reference reader finds the same fault."""
    image = build_broken_image(defect)
    path = tmp_path / "broken.bin"
    path.write_bytes(image)
    with pytest.raises(ImageError):
        parse_image(image)
    assert re.search(esptool_says, image_info(path)["_text"])


def test_real_esp32s2_blink_image(esp_images_dir: Path) -> None:
    """A real ESP-IDF v5.0 app for the ESP32-S2, hash appended."""
    path = esp_images_dir / "esp_idf_blink_esp32s2.bin"
    info = parse_image(path.read_bytes())
    assert info.chip == "esp32s2"
    assert info.header.chip_id == 2
    assert info.app.project_name == "blink"
    assert info.app.version == "qa-test-v5.0-20220830-4-g4532e6"
    assert info.header.segment_count == 6
    assert_esptool_agrees(info, image_info(path))


def test_real_signed_esp32_image(esp_images_dir: Path) -> None:
    """An ESP-IDF v3.3 app followed by a Secure Boot v1 signature: the app is valid and the
    signature is reported as trailing bytes."""
    path = esp_images_dir / "hello-world-signed.bin"
    data = path.read_bytes()
    info = parse_image(data)
    assert info.chip == "esp32"
    assert info.app.project_name == "hello-world"
    assert info.trailing_bytes > 0
    assert info.image_length + info.trailing_bytes == len(data)
    assert info.file_sha256 == hashlib.sha256(data).hexdigest()
    assert_esptool_agrees(info, image_info(path))


def test_real_bootloader_is_not_an_app(esp_images_dir: Path) -> None:
    """A second-stage bootloader is a valid ESP image but has no app descriptor."""
    path = esp_images_dir / "bootloader_esp32_v5_2.bin"
    with pytest.raises(NoAppDescriptorError, match="not an application image"):
        parse_image(path.read_bytes())
    assert "Checksum" in image_info(path)["_text"]


def test_real_ram_only_image_is_refused(esp_images_dir: Path) -> None:
    """A 128-byte RAM-only image is too short for esp_https_ota's first 1 KiB read."""
    with pytest.raises(ImageTooShortError, match="128 bytes"):
        parse_image((esp_images_dir / "helloworld-esp32c3.bin").read_bytes())


def test_real_elf_converted_by_esptool(esp_images_dir: Path, tmp_path: Path) -> None:
    """esptool's own elf2image output of a real app ELF parses and agrees with esptool."""
    output = tmp_path / "app-template.bin"
    log = esptool(
        "--chip", "esp32", "elf2image", "-o", output, esp_images_dir / "esp32-app-template.elf"
    )
    assert output.is_file(), log
    data = output.read_bytes()
    info = parse_image(data)
    assert info.chip == "esp32"
    assert info.app.project_name == "app-template"
    assert info.file_size > 100_000
    assert_esptool_agrees(info, image_info(output))


def test_real_images_match_their_checksums(esp_images_dir: Path) -> None:
    """The inputs are the files the README describes (so the assertions above mean it)."""
    sums: dict[str, str] = {}
    for line in (esp_images_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name.lstrip("*")] = digest
    for name in ("esp_idf_blink_esp32s2.bin", "hello-world-signed.bin", "esp32-app-template.elf"):
        assert sums[name] == hashlib.sha256((esp_images_dir / name).read_bytes()).hexdigest()
