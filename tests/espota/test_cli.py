"""The espota command line, run in-process through main() (and once as a real process)."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import runpy
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from custom_components.esp_ota.espota import cli
from custom_components.esp_ota.espota.cli import main
from custom_components.esp_ota.espota.feed import parse_feed
from custom_components.esp_ota.espota.feed_signing import load_public_key, verify_feed_signature
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import (
    Defect,
    build_app_image,
    build_broken_image,
)
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
    assert f"public key for Home Assistant: {public_text}" in output
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["feed.key", "feed.pub"]

    feed_path = tmp_path / "public" / "feed.json"
    code, output = run(
        "publish", "--out", feed_path, "--key", key_file, "--name", "Garden",
        "--channel", "beta", "--summary", "Faster", "--release-notes-url", "notes.html",
        firmware / "a.bin", firmware / "b.bin",
    )  # fmt: skip
    assert code == 0, output
    assert f"wrote {feed_path} with 2 release(s) (2 added)" in output
    assert f"signed: {feed_path}.sig" in output
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
    assert first.release_notes_url == "https://example.com/public/notes.html"
    assert first.published is not None
    assert (second.chip, second.max_chip_rev) == ("esp32s3", 399)

    code, output = run("verify", feed_path, "--public-key", tmp_path / "keys" / "feed.pub")
    assert code == 0
    assert output.splitlines() == [
        "signature: valid",
        f"{feed_path}: esp-ota-feed, 2 release(s)",
        "  garden 1.1.0 esp32c3 [beta]",
        "  garden 1.2.0 esp32s3 [beta]",
    ]
    # The key's text works as well as its file (what a Home Assistant user has at hand).
    assert run("verify", feed_path, "--public-key", public_text)[0] == 0
    code, output = run("verify", feed_path)
    assert code == 0
    assert output.startswith("signature: present, not checked (give --public-key)\n")


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing private key is kept unless --force; --force leaves it 0600 even when the
    old file was readable by everyone."""
    assert run("keygen", "--out", tmp_path)[0] == 0
    before = (tmp_path / "feed.key").read_bytes()
    assert run("keygen", "--out", tmp_path)[0] == 1
    assert "feed.key exists; pass --force to replace it" in capsys.readouterr().err
    assert (tmp_path / "feed.key").read_bytes() == before
    (tmp_path / "feed.key").chmod(0o644)
    assert run("keygen", "--out", tmp_path, "--force")[0] == 0
    assert (tmp_path / "feed.key").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "feed.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.key", "feed.pub"]


def test_publish_refuses_invalid_images_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a valid app image is named with the reason on stderr; no feed."""
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(build_app_image())
    bad.write_bytes(build_broken_image(Defect.BAD_CHECKSUM))
    feed_path = tmp_path / "feed.json"
    code, output = run("publish", "--out", feed_path, good, bad)
    assert (code, output) == (1, "")
    error = capsys.readouterr().err
    assert error.startswith(f"espota publish: error: {bad}: not a valid application image: ")
    assert "checksum" in error
    assert not feed_path.exists()
    assert run("publish", "--out", feed_path, tmp_path / "missing.bin")[0] == 1
    assert "missing.bin: cannot read" in capsys.readouterr().err


def test_publish_with_a_bad_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A private key file that is not one is refused before anything is written."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image())
    (tmp_path / "feed.pub").write_text("not a key\n")
    assert run("publish", "--out", tmp_path / "f.json", "--key", tmp_path / "feed.pub", image)[0]
    assert "not a PEM private key" in capsys.readouterr().err
    assert not (tmp_path / "f.json").exists()


def test_publish_with_base_url_and_append(tmp_path: Path) -> None:
    """--base-url makes absolute URLs; --append adds to what is there; unsigned: no .sig."""
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(build_app_image(version="3.0.0"))
    second.write_bytes(build_app_image(version="3.1.0b1"))
    feed_path = tmp_path / "feed.json"
    code, output = run(
        "publish", "--out", feed_path, "--base-url", "https://cdn.example/fw/", first
    )
    assert code == 0
    assert "signed" not in output
    assert not (tmp_path / "feed.json.sig").exists()
    code, output = run("publish", "--out", feed_path, "--append", "--channel", "beta", second)
    assert code == 0
    assert "2 release(s) (1 added, 0 replaced, 1 kept)" in output
    releases = json.loads(feed_path.read_text())["releases"]
    assert [(r["version"], r["channel"], r["url"]) for r in releases] == [
        ("3.1.0b1", "beta", "b.bin"),
        ("3.0.0", "stable", "https://cdn.example/fw/a.bin"),
    ]


def test_publish_unsigned_over_a_signed_feed(tmp_path: Path) -> None:
    """The old signature goes, and the command says so."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image())
    run("keygen", "--out", tmp_path / "keys")
    feed_path = tmp_path / "feed.json"
    run("publish", "--out", feed_path, "--key", tmp_path / "keys" / "feed.key", image)
    assert (tmp_path / "feed.json.sig").exists()
    code, output = run("publish", "--out", feed_path, image)
    assert code == 0
    assert "removed the old signature: this feed is not signed" in output
    assert not (tmp_path / "feed.json.sig").exists()


def test_verify_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unsigned with a key required, tampered, a bad key, a broken feed: exit 1 with why."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image())
    run("keygen", "--out", tmp_path / "keys")
    feed_path = tmp_path / "feed.json"
    run("publish", "--out", feed_path, image)
    public = tmp_path / "keys" / "feed.pub"
    assert run("verify", feed_path, "--public-key", public)[0] == 1
    assert "feed.json.sig not found: the feed is not signed" in capsys.readouterr().err
    code, output = run("verify", feed_path)
    assert code == 0
    assert output.startswith("signature: none\n")
    run("publish", "--out", feed_path, "--key", tmp_path / "keys" / "feed.key", image)
    feed_path.write_text(feed_path.read_text().replace("1.0.0", "1.0.1"))
    assert run("verify", feed_path, "--public-key", public)[0] == 1
    assert "does not match" in capsys.readouterr().err
    assert run("verify", feed_path, "--public-key", "AAAA")[0] == 1
    assert "32 bytes" in capsys.readouterr().err
    binary_key = tmp_path / "binary.pub"
    binary_key.write_bytes(b"\xff\xfe\x00")
    assert run("verify", feed_path, "--public-key", binary_key)[0] == 1
    assert "binary.pub is not a text file" in capsys.readouterr().err
    feed_path.write_text("{}")
    assert run("verify", feed_path)[0] == 1
    assert "espota verify: error: not a firmware feed" in capsys.readouterr().err


def test_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inspect prints the verified fields, or the file and the reason it is refused."""
    image = tmp_path / "app.bin"
    image.write_bytes(
        build_app_image(project="lamp", version="2.0.0", chip="esp32c6", secure_version=3)
    )
    info = parse_image(image.read_bytes())
    code, output = run("inspect", image)
    assert code == 0
    rows = dict(line.split(":", 1) for line in output.splitlines())
    assert rows["project"].strip() == "lamp"
    assert rows["version"].strip() == "2.0.0"
    assert rows["chip"].strip() == "esp32c6 (id 13)"
    assert rows["chip revisions"].strip() == "v0.0 - v3.99"
    assert rows["secure version"].strip() == "3"
    assert rows["flash"].strip() == "DIO, 4MB, speed code 0"
    assert rows["MMU page size"].strip() == "65536 bytes"
    assert rows["segments"].strip() == str(len(info.segments))
    assert rows["  segment 0"].strip().startswith(f"load 0x{info.segments[0].load_addr:08x}, ")
    assert rows["checksum"].strip() == f"0x{info.checksum:02x} (valid)"
    assert rows["image SHA-256"].strip() == f"{info.sha256} (valid)"
    assert rows["file SHA-256"].strip() == info.file_sha256

    image.write_bytes(build_broken_image(Defect.NO_APP_DESCRIPTOR))
    code, output = run("inspect", image)
    assert (code, output) == (1, "")
    error = capsys.readouterr().err
    assert error.startswith(f"espota inspect: error: {image}: not a valid application image:")
    assert "not an application image" in error


def test_inspect_json_and_unappended_hash(tmp_path: Path) -> None:
    """--json prints every parsed field; an image without an appended hash says so."""
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image(version="9", hash_appended=False))
    code, output = run("inspect", image, "--json")
    assert code == 0
    document = json.loads(output)
    assert document["valid"] is True
    assert document["file"] == str(image)
    assert document["app"]["version"] == "9"
    assert document["header"]["hash_appended"] is False
    assert document["sha256"] is None
    assert len(document["segments"]) == document["header"]["segment_count"]
    code, output = run("inspect", image)
    assert "image SHA-256:   not appended" in output


def test_build_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """build-image writes a valid image with the asked fields; a bad size is refused."""
    out = tmp_path / "x" / "app.bin"
    code, _ = run(
        "build-image", "--out", out, "--project", "p", "--version", "9.1", "--chip", "esp32s2",
        "--secure-version", "4", "--size", "4096", "--min-chip-rev", "v1.0",
        "--max-chip-rev", "v1.99",
    )  # fmt: skip
    assert code == 0
    info = parse_image(out.read_bytes())
    assert (info.app.project_name, info.app.version, info.chip) == ("p", "9.1", "esp32s2")
    assert info.app.secure_version == 4
    assert info.file_size == 4096
    assert (info.header.min_chip_rev_full, info.header.max_chip_rev_full) == (100, 199)
    assert run("build-image", "--out", out, "--size", "1000")[0] == 1
    assert "multiple of 16" in capsys.readouterr().err


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's exits become return codes: 2 for usage errors, 0 for --help."""
    assert run()[0] == 2
    assert "COMMAND" in capsys.readouterr().err
    assert run("publish")[0] == 2
    assert "the following arguments are required" in capsys.readouterr().err
    assert run("publish", "--channel", "nightly", "--out", "f.json", "a.bin")[0] == 2
    assert run("--help")[0] == 0
    assert "Exit codes" in capsys.readouterr().out


def test_os_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable input or unwritable output fails with the OS's reason and the path."""
    assert run("verify", tmp_path / "nope.json")[0] == 1
    assert capsys.readouterr().err == (
        f"espota verify: error: No such file or directory: {tmp_path / 'nope.json'}\n"
    )
    image = tmp_path / "app.bin"
    image.write_bytes(build_app_image())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run("publish", "--out", blocker / "feed.json", image)[0] == 1
    assert "espota publish: error: " in capsys.readouterr().err


def test_interrupted(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C during a command exits 130 with a short message, not a traceback."""

    def interrupt(args: argparse.Namespace, out: io.StringIO) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_verify", interrupt)
    assert run("verify", "feed.json")[0] == 130
    assert capsys.readouterr().err == "espota verify: interrupted\n"


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
    for command in ("keygen", "publish", "verify", "inspect", "select", "build-image"):
        assert command in result.stdout


def test_main_module_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's __main__ hands the command line to main() and exits with its code."""
    monkeypatch.setattr(sys, "argv", ["espota", "build-image", "--out", "/", "--size", "7"])
    with pytest.raises(SystemExit) as leaving:
        runpy.run_module("custom_components.esp_ota.espota", run_name="__main__")
    assert leaving.value.code == 1


def test_importing_main_module_runs_nothing() -> None:
    """Imported (not run), __main__ defines nothing to run: no SystemExit."""
    name = "custom_components.esp_ota.espota.__main__"
    module = importlib.import_module(name)
    assert module.main is main
    del sys.modules[name]  # runpy warns about a __main__ it finds already imported


# The `espota` console script (pyproject.toml's [project.scripts]) that script/bootstrap's
# editable install puts beside this venv's python; it imports the library as `espota`.
ESPOTA_SCRIPT = Path(sys.executable).parent / "espota"
LIBRARY_DIR = REPO_ROOT / "custom_components" / "esp_ota" / "espota"
needs_console_script = pytest.mark.skipif(
    not ESPOTA_SCRIPT.is_file(),
    reason=f"no `espota` console script at {ESPOTA_SCRIPT}: this venv was made before "
    "pyproject.toml declared it; run script/bootstrap (or `pip install --no-deps -e .`)",
)


def run_console_script(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed `espota` as a real process, away from the repository root."""
    return subprocess.run(
        [str(ESPOTA_SCRIPT), *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
    )


@needs_console_script
def test_console_script_help(tmp_path: Path) -> None:
    """`espota --help` works from any directory and lists every command."""
    result = run_console_script("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: espota ")
    for command in ("keygen", "publish", "verify", "inspect", "select", "build-image"):
        assert command in result.stdout


@needs_console_script
def test_console_script_round_trip(tmp_path: Path) -> None:
    """keygen, build-image, publish (signed), verify and inspect through the installed
    command, each a process with exit code 0; a refused input exits 1."""
    steps = [
        ("keygen", "--out", "keys"),
        ("build-image", "--out", "fw/garden.bin", "--project", "garden", "--version", "1.2.0",
         "--chip", "esp32c3", "--size", "8192"),
        ("publish", "--out", "public/feed.json", "--key", "keys/feed.key", "fw/garden.bin"),
        ("verify", "public/feed.json", "--public-key", "keys/feed.pub"),
        ("inspect", "fw/garden.bin"),
    ]  # fmt: skip
    outputs = []
    for argv in steps:
        result = run_console_script(*argv, cwd=tmp_path)
        assert result.returncode == 0, (argv, result.stderr)
        outputs.append(result.stdout)
    assert stat.S_IMODE((tmp_path / "keys" / "feed.key").stat().st_mode) == 0o600
    assert "signed: public/feed.json.sig" in outputs[2]
    assert "signature: valid" in outputs[3]
    assert "  garden 1.2.0 esp32c3 [stable]" in outputs[3]
    assert "version:" in outputs[4]
    feed = parse_feed((tmp_path / "public" / "feed.json").read_bytes(), feed_url="file:///f")
    assert [(r.project, r.version, r.chip) for r in feed.releases] == [
        ("garden", "1.2.0", "esp32c3")
    ]

    refused = run_console_script("inspect", "keys/feed.pub", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("espota inspect: error: keys/feed.pub: not a valid")


@needs_console_script
def test_installed_library_imports_no_home_assistant(tmp_path: Path) -> None:
    """`import espota.cli` (what the console script runs) loads no homeassistant module and
    not the integration, and is this checkout's library (editable: edits are seen)."""
    program = textwrap.dedent(
        """
        import sys
        import espota.cli
        print(espota.cli.__file__)
        print(sorted(m for m in sys.modules if m.split(".")[0] in
                     {"homeassistant", "custom_components"}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # the repository root is not on sys.path here
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    module_file, loaded = result.stdout.splitlines()
    assert loaded == "[]"
    assert Path(module_file).resolve() == LIBRARY_DIR / "cli.py"


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
