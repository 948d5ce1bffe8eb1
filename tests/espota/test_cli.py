"""The espota command line and the publisher behind it."""

from __future__ import annotations

import io
import json
import runpy
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from custom_components.esp_ota.espota.cli import main
from custom_components.esp_ota.espota.feed import parse_feed
from custom_components.esp_ota.espota.feed_signing import load_public_key, verify_feed_signature
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import (
    Defect,
    build_app_image,
    build_broken_image,
)
from custom_components.esp_ota.espota.publisher import PublishError, publish
from tests.conftest import REPO_ROOT


def run(*argv: str | Path) -> tuple[int, str]:
    """Run a command in-process; return its exit code and standard output."""
    out = io.StringIO()
    code = main([str(arg) for arg in argv], out=out)
    return code, out.getvalue()


def test_keygen_publish_verify(tmp_path: Path) -> None:
    """The documented flow: keys, a signed feed from .bin files, verification."""
    firmware = tmp_path / "fw"
    firmware.mkdir()
    (firmware / "a.bin").write_bytes(
        build_app_image(
            project="garden",
            version="1.1.0",
            chip="esp32c3",
            size=8192,
            min_chip_rev_full=3,
            max_chip_rev_full=0xFFFF,
            secure_version=2,
        )
    )
    (firmware / "b.bin").write_bytes(
        build_app_image(project="garden", version="1.2.0", chip="esp32s3", size=4096)
    )
    code, output = run("keygen", "--out", tmp_path / "keys")
    assert code == 0
    key_file = tmp_path / "keys" / "feed.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public_text = (tmp_path / "keys" / "feed.pub").read_text().strip()
    assert public_text in output

    feed_path = tmp_path / "public" / "feed.json"
    code, output = run(
        "publish", "--out", feed_path, "--key", key_file, "--name", "Garden",
        "--channel", "beta", "--summary", "Faster", "--release-notes-url", "notes.html",
        firmware / "a.bin", firmware / "b.bin",
    )  # fmt: skip
    assert code == 0, output
    assert "2 release(s)" in output
    feed_bytes = feed_path.read_bytes()
    verify_feed_signature(
        feed_bytes,
        (tmp_path / "public" / "feed.json.sig").read_bytes(),
        load_public_key(public_text),
    )
    feed = parse_feed(feed_bytes, feed_url="https://example.com/public/feed.json")
    first, second = feed.releases
    assert feed.name == "Garden"
    assert (first.project, first.version, first.chip) == ("garden", "1.1.0", "esp32c3")
    assert first.url == "https://example.com/fw/a.bin"
    assert first.size == 8192
    assert first.sha256 == parse_image((firmware / "a.bin").read_bytes()).file_sha256
    assert (first.min_chip_rev, first.max_chip_rev) == (3, None)
    assert first.secure_version == 2
    assert first.channel.value == "beta"
    assert first.summary == "Faster"
    assert first.published is not None
    assert (second.chip, second.max_chip_rev) == ("esp32s3", 399)

    code, output = run("verify", feed_path, "--public-key", tmp_path / "keys" / "feed.pub")
    assert code == 0
    assert "signature: valid" in output
    assert "garden 1.2.0 esp32s3 [beta]" in output


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing private key is kept unless --force."""
    assert run("keygen", "--out", tmp_path)[0] == 0
    before = (tmp_path / "feed.key").read_bytes()
    assert run("keygen", "--out", tmp_path)[0] == 1
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "feed.key").read_bytes() == before
    assert run("keygen", "--out", tmp_path, "--force")[0] == 0
    assert (tmp_path / "feed.key").read_bytes() != before


def test_publish_refuses_invalid_images_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a valid app image is named with the reason; no feed appears."""
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(build_app_image())
    bad.write_bytes(build_broken_image(Defect.BAD_CHECKSUM))
    feed_path = tmp_path / "feed.json"
    assert run("publish", "--out", feed_path, good, bad)[0] == 1
    error = capsys.readouterr().err
    assert "bad.bin: not a valid application image: checksum" in error
    assert not feed_path.exists()
    assert run("publish", "--out", feed_path, tmp_path / "missing.bin")[0] == 1
    assert "missing.bin: cannot read" in capsys.readouterr().err
    with pytest.raises(PublishError, match="no firmware files"):
        publish([], feed_path)


def test_publish_with_base_url(tmp_path: Path) -> None:
    """--base-url makes absolute URLs; unsigned feeds have no .sig."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image(version="3.0.0"))
    feed_path = tmp_path / "feed.json"
    code, output = run(
        "publish", "--out", feed_path, "--base-url", "https://cdn.example/fw/", image
    )
    assert code == 0
    assert "signed" not in output
    document = json.loads(feed_path.read_text())
    assert document["releases"][0]["url"] == "https://cdn.example/fw/app.bin"
    assert not (tmp_path / "feed.json.sig").exists()


def test_verify_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unsigned feed with a key required, and a tampered feed, are refused."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image())
    run("keygen", "--out", tmp_path / "keys")
    feed_path = tmp_path / "feed.json"
    run("publish", "--out", feed_path, image)
    public = tmp_path / "keys" / "feed.pub"
    assert run("verify", feed_path, "--public-key", public)[0] == 1
    assert "not signed" in capsys.readouterr().err
    run("publish", "--out", feed_path, "--key", tmp_path / "keys" / "feed.key", image)
    feed_path.write_text(feed_path.read_text().replace("1.0.0", "1.0.1"))
    assert run("verify", feed_path, "--public-key", public)[0] == 1
    assert "does not match" in capsys.readouterr().err
    assert run("verify", feed_path)[0] == 0  # no key asked for: the feed itself is valid


def test_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inspect prints the verified fields, or the reason the image is refused."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image(project="lamp", version="2.0.0", chip="esp32c6"))
    code, output = run("inspect", image)
    assert code == 0
    assert "project:         lamp" in output
    assert "chip:            esp32c6 (id 13)" in output
    assert "checksum:" in output
    assert "(valid)" in output
    image.write_bytes(build_broken_image(Defect.NO_APP_DESCRIPTOR))
    assert run("inspect", image)[0] == 1
    assert "not an application image" in capsys.readouterr().err


def test_build_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """build-image writes a valid image with the asked fields; a bad size is refused."""
    out = tmp_path / "x" / "app.bin"
    code, _ = run(
        "build-image", "--out", out, "--project", "p", "--version", "9.1", "--chip", "esp32s2",
        "--secure-version", "4", "--size", "4096",
    )  # fmt: skip
    assert code == 0
    info = parse_image(out.read_bytes())
    assert (info.app.project_name, info.app.version, info.chip) == ("p", "9.1", "esp32s2")
    assert info.app.secure_version == 4
    assert info.file_size == 4096
    assert run("build-image", "--out", out, "--size", "1000")[0] == 1
    assert "multiple of 16" in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    """`python -m custom_components.esp_ota.espota --help` works from the repository root."""
    result = subprocess.run(
        [sys.executable, "-m", "custom_components.esp_ota.espota", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for command in ("keygen", "publish", "verify", "inspect", "build-image"):
        assert command in result.stdout


def test_unwritable_output_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output path under a regular file fails with the OS's reason."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run("publish", "--out", blocker / "feed.json", image)[0] == 1
    assert "error:" in capsys.readouterr().err


def test_main_module_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's __main__ hands the command line to main() and exits with its code."""
    monkeypatch.setattr(sys, "argv", ["espota", "build-image", "--out", "/", "--size", "7"])
    with pytest.raises(SystemExit) as leaving:
        runpy.run_module("custom_components.esp_ota.espota", run_name="__main__")
    assert leaving.value.code == 1


def test_select(tmp_path: Path) -> None:
    """select shows what a device would be offered, and says when nothing fits."""
    images = []
    for version, chip in (("1.0.0", "esp32c3"), ("1.1.0", "esp32c3"), ("2.0.0", "esp32s3")):
        path = tmp_path / f"{version}-{chip}.bin"
        path.write_bytes(build_app_image(project="garden", version=version, chip=chip))
        images.append(path)
    feed_path = tmp_path / "feed.json"
    assert run("publish", "--out", feed_path, *images)[0] == 0
    device = ["--project", "garden", "--chip", "ESP32-C3", "--chip-revision", "v0.4"]
    code, output = run("select", feed_path, *device, "--version", "1.0.0")
    assert code == 0
    assert output.splitlines() == [
        f"update: 1.1.0 ({(tmp_path / '1.1.0-esp32c3.bin').resolve().as_uri()})",
        "  also installable: 1.0.0",
    ]
    code, output = run("select", feed_path, *device, "--version", "1.1.0")
    assert output.startswith("up to date: 1.1.0")
    code, output = run("select", feed_path, *device, "--version", "1.0.0", "--secure-version", "1")
    assert output == "no release in the feed fits this device\n"
