"""The firmware store against a real HTTP release server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from custom_components.esp_ota.espota import errors, firmware_store
from custom_components.esp_ota.espota.errors import (
    FirmwareDownloadError,
    FirmwareIntegrityError,
    FirmwareMismatchError,
    FirmwareStorageError,
    FirmwareTooLargeError,
)
from custom_components.esp_ota.espota.feed import Channel, Release
from custom_components.esp_ota.espota.firmware_store import FirmwareStore, StoredImage
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import (
    Defect,
    build_app_image,
    build_broken_image,
)
from custom_components.esp_ota.espota.selection import DeviceFirmware

DEVICE = DeviceFirmware(
    project="garden", chip="esp32", chip_revision=301, version="1.0.0", secure_version=1
)
SIZE = 96 * 1024


def image(version: str = "1.1.0", **kwargs: Any) -> bytes:
    """A valid image of the garden project (96 KiB unless told)."""
    kwargs.setdefault("project", "garden")
    kwargs.setdefault("size", SIZE)
    kwargs.setdefault("secure_version", 1)
    return build_app_image(version=version, **kwargs)


@dataclass
class ReleaseServer:
    """Serves files; switches for the ways a download can go wrong."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    status: int = 200
    chunked: bool = False
    content_length: int | None = None  # announce this instead of the real length
    stall_before_headers_s: float = 0.0
    stall_at: int | None = None  # stop sending at this offset, for stall_s
    stall_s: float = 0.0
    drop_at: int | None = None  # close the connection at this offset
    extra: bytes = b""  # sent after the file (more than the release says)
    sent: int = 0  # bytes of body written by the last request
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, name: str, data: bytes) -> str:
        self.files[f"/{name}"] = data
        return f"{self.base_url}/{name}"

    async def _pause(self, seconds: float) -> None:
        # Interrupted by the fixture's teardown: no handler left sleeping.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.stall_before_headers_s:
            await self._pause(self.stall_before_headers_s)
        if self.status != 200:
            return web.Response(status=self.status)
        data = self.files.get(request.path)
        if data is None:
            return web.Response(status=404)
        body = data + self.extra
        response = web.StreamResponse()
        if self.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = (
                self.content_length if self.content_length is not None else len(body)
            )
        await response.prepare(request)
        self.sent = 0
        for offset in range(0, len(body), 16384):
            piece = body[offset : offset + 16384]
            if self.drop_at is not None and offset + len(piece) > self.drop_at:
                await response.write(piece[: self.drop_at - offset])
                assert request.transport is not None
                request.transport.close()
                return response
            if self.stall_at is not None and offset + len(piece) > self.stall_at:
                await self._pause(self.stall_s)
                self.stall_at = None
            await response.write(piece)
            self.sent += len(piece)
        await response.write_eof()
        return response


@pytest.fixture
async def release_server(socket_enabled: None) -> AsyncIterator[ReleaseServer]:
    server = ReleaseServer()
    app = web.Application()
    app.router.add_get("/{name}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    server.closing.set()
    await runner.cleanup()


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def store(tmp_path: Path, session: aiohttp.ClientSession) -> FirmwareStore:
    return FirmwareStore(tmp_path / "firmware", session, timeout=0.5)


def release_for(url: str, data: bytes, **changes: Any) -> Release:
    """A native-feed release describing `data` at `url`."""
    release = Release(
        project="garden",
        chip="esp32",
        version="1.1.0",
        channel=Channel.STABLE,
        url=url,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=None,
        secure_version=1,
        min_chip_rev=None,
        max_chip_rev=None,
        summary=None,
        release_notes_url=None,
        published=None,
    )
    return replace(release, **changes)


def web_tools_release(url: str, data: bytes, **changes: Any) -> Release:
    """An ESP Web Tools release: MD5, no size, no SHA-256, a display name as project."""
    fields: dict[str, Any] = {
        "project": "Garden Sensor",
        "size": None,
        "sha256": None,
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
    }
    return release_for(url, data, **(fields | changes))


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# --- a good fetch, and the cache ---------------------------------------------------------


async def test_fetch_verifies_and_stores_under_the_sha256(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image(app_elf_sha256="ab" * 32, min_chip_rev_full=300, max_chip_rev_full=399)
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    assert isinstance(stored, StoredImage)
    assert stored.sha256 == release.sha256
    assert stored.size == len(data)
    assert stored.path == store.folder / f"{release.sha256}.bin"
    assert stored.path.read_bytes() == data
    assert stored.info == parse_image(data)
    assert stored.info.app.app_elf_sha256 == "ab" * 32
    assert leftovers(store.folder) == [f"{release.sha256}.bin"]
    assert store.cached() == [release.sha256]
    assert store.total_bytes == len(data)


async def test_second_fetch_reuses_the_file(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    first = await store.fetch(release, DEVICE)
    second = await store.fetch(release, DEVICE)
    assert second == first
    assert release_server.requests == ["/garden.bin"]


async def test_a_release_with_a_known_sha256_but_another_size_is_refused(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    with pytest.raises(FirmwareIntegrityError, match=f"says {len(data) + 16} bytes"):
        await store.fetch(replace(release, size=len(data) + 16), DEVICE)
    assert stored.path.read_bytes() == data  # the stored image was right and stays
    assert release_server.requests == ["/garden.bin"]


async def test_concurrent_fetches_of_one_release_download_once(
    store: FirmwareStore, release_server: ReleaseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One fetch downloads; the others wait for it, then share one look at the new file."""
    looks: list[Path] = []
    recheck = firmware_store._recheck

    def counting_recheck(path: Path, *args: Any) -> Any:
        looks.append(path)
        return recheck(path, *args)

    monkeypatch.setattr(firmware_store, "_recheck", counting_recheck)
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    results = await asyncio.gather(*(store.fetch(release, DEVICE) for _ in range(5)))
    assert len({result.path for result in results}) == 1
    assert release_server.requests == ["/garden.bin"]
    assert looks == [results[0].path]


async def test_a_fetch_waiting_for_a_failed_download_downloads_itself(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    """The image did not fit the first fetch's device, so it was not kept: the fetch that
    waited for that download, for a device it fits, downloads it again."""
    data = image(min_chip_rev_full=300)
    release = release_for(release_server.add("garden.bin", data), data)
    old_device = replace(DEVICE, chip_revision=100)
    refused, stored = await asyncio.gather(
        store.fetch(release, old_device), store.fetch(release, DEVICE), return_exceptions=True
    )
    assert isinstance(refused, FirmwareMismatchError)
    assert isinstance(stored, StoredImage)
    assert stored.path.read_bytes() == data
    assert release_server.requests == ["/garden.bin", "/garden.bin"]


async def test_a_large_image_streams_through_in_batches(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image(size=3 * 1024 * 1024 + 16)  # several write batches and a partial last one
    release = release_for(release_server.add("large.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    assert stored.path.read_bytes() == data
    assert stored.info.file_size == len(data)


@pytest.mark.parametrize(
    "damage", ["flipped_byte", "truncated", "deleted", "broken_image", "another_image"]
)
async def test_a_damaged_cached_file_is_downloaded_again(
    store: FirmwareStore, release_server: ReleaseServer, damage: str
) -> None:
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    match damage:
        case "flipped_byte":  # same size, another hash (and checksum)
            raw = bytearray(data)
            raw[5000] ^= 0x01
            stored.path.write_bytes(raw)
        case "truncated":
            stored.path.write_bytes(data[:1000])
        case "deleted":
            stored.path.unlink()
        case "broken_image":  # same size, first byte no longer the magic
            stored.path.write_bytes(b"\x00" + data[1:])
        case "another_image":  # a valid image of the same size, but not this one
            stored.path.write_bytes(image(seed=7))
    again = await store.fetch(release, DEVICE)
    assert again.path.read_bytes() == data
    assert release_server.requests == ["/garden.bin", "/garden.bin"]
    assert leftovers(store.folder) == [f"{release.sha256}.bin"]


async def test_an_unchanged_cached_file_is_not_read_again(
    store: FirmwareStore, release_server: ReleaseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many devices taking one image cost one read of it; a change on disk is read, once
    for fetches that come together."""
    reads: list[Path] = []
    looks: list[Path] = []
    verify, recheck = firmware_store._verify_file, firmware_store._recheck

    def counting_verify(path: Path, want_md5: bool) -> Any:
        reads.append(path)
        return verify(path, want_md5)

    def counting_recheck(path: Path, *args: Any) -> Any:
        looks.append(path)
        return recheck(path, *args)

    monkeypatch.setattr(firmware_store, "_verify_file", counting_verify)
    monkeypatch.setattr(firmware_store, "_recheck", counting_recheck)
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)  # verified as it streamed in
    used = stored.path.stat().st_mtime_ns
    await asyncio.gather(*(store.fetch(release, DEVICE) for _ in range(5)))
    assert reads == []
    assert looks == [stored.path]  # one look at the file for the five
    assert stored.path.stat().st_mtime_ns >= used  # still marked used, for the LRU order
    stored.path.write_bytes(data)  # the same bytes, written again: read once more
    await store.fetch(release, DEVICE)
    await store.fetch(release, DEVICE)
    assert reads == [stored.path]
    raw = bytearray(data)
    raw[5000] ^= 0x01
    stored.path.write_bytes(raw)  # damaged: the five coming together download it once
    again = await asyncio.gather(*(store.fetch(release, DEVICE) for _ in range(5)))
    assert {image.path.read_bytes() for image in again} == {data}
    assert release_server.requests == ["/garden.bin", "/garden.bin"]


async def test_a_new_store_finds_the_images_of_an_earlier_run(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    folder = tmp_path / "firmware"
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    await FirmwareStore(folder, session).fetch(release, DEVICE)
    (folder / ".partial-crashed").write_bytes(b"half an image")  # a crash mid-download
    (folder / "notes.txt").write_text("not an image")
    again = FirmwareStore(folder, session)
    stored = await again.fetch(release, DEVICE)
    assert stored.path.read_bytes() == data
    assert release_server.requests == ["/garden.bin"]
    assert leftovers(folder) == [f"{release.sha256}.bin", "notes.txt"]


async def test_an_image_damaged_while_stopped_is_downloaded_again(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    """A cached image truncated while Home Assistant was stopped is not taken for the
    release's fault ("the release says N bytes") at every fetch: it is discarded and
    downloaded again."""
    folder = tmp_path / "firmware"
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await FirmwareStore(folder, session).fetch(release, DEVICE)
    stored.path.write_bytes(data[: len(data) // 2])  # damaged on disk while stopped
    again = await FirmwareStore(folder, session).fetch(release, DEVICE)
    assert again.path.read_bytes() == data
    assert release_server.requests == ["/garden.bin", "/garden.bin"]


async def test_a_link_under_an_image_name_is_not_an_image(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    """A symbolic link under a SHA-256 name (pointing at anything) is discarded at load,
    and the image downloaded into a file of its own."""
    folder = tmp_path / "firmware"
    folder.mkdir()
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    elsewhere = tmp_path / "elsewhere.bin"
    elsewhere.write_bytes(data[:100])
    (folder / f"{release.sha256}.bin").symlink_to(elsewhere)
    stored = await FirmwareStore(folder, session).fetch(release, DEVICE)
    assert not stored.path.is_symlink()
    assert stored.path.read_bytes() == data
    assert elsewhere.read_bytes() == data[:100]  # what the link pointed at is untouched
    assert release_server.requests == ["/garden.bin"]


async def test_a_partial_named_folder_does_not_stop_the_cache(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    """A directory named like a partial download is left alone; the cache loads and
    fetches work (it raised IsADirectoryError at every fetch)."""
    folder = tmp_path / "firmware"
    (folder / ".partial-folder").mkdir(parents=True)
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await FirmwareStore(folder, session).fetch(release, DEVICE)
    assert stored.path.read_bytes() == data
    assert (folder / ".partial-folder").is_dir()


# --- what the release promises ----------------------------------------------------------


async def test_shorter_than_the_release_says(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release = release_for(release_server.add("garden.bin", data), data, size=len(data) + 16)
    with pytest.raises(FirmwareIntegrityError, match=rf"{len(data)} bytes.*says {len(data) + 16}"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_chunked_body_shorter_than_the_release_says(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release_server.chunked = True
    release = release_for(release_server.add("garden.bin", data), data, size=len(data) + 16)
    with pytest.raises(FirmwareIntegrityError, match=rf"ended after {len(data)} bytes"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_announced_length_over_the_release_size_is_refused_before_the_body(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release_server.extra = b"\0" * 16
    release = release_for(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareIntegrityError, match="larger than"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_a_body_longer_than_the_release_stops_as_soon_as_it_exceeds(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release_server.chunked = True  # no Content-Length to refuse up front
    release_server.extra = b"\0" * (32 * 1024 * 1024)
    release = release_for(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareIntegrityError, match=rf"larger than the {len(data)} bytes"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []
    # The client hung up long before the server could send the 32 MiB extra (what it
    # wrote is what the loopback socket buffers took in the meantime).
    assert release_server.sent < 16 * 1024 * 1024


async def test_sha256_mismatch(store: FirmwareStore, release_server: ReleaseServer) -> None:
    data = image()
    release = release_for(release_server.add("garden.bin", data), data, sha256="0" * 64)
    with pytest.raises(FirmwareIntegrityError, match=f"SHA-256 {hashlib.sha256(data).hexdigest()}"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_a_release_without_any_digest_is_refused(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release = web_tools_release(release_server.add("garden.bin", data), data, md5=None)
    with pytest.raises(FirmwareIntegrityError, match="no SHA-256 or MD5"):
        await store.fetch(release, DEVICE)
    assert release_server.requests == []


# --- ESP Web Tools releases (MD5) -------------------------------------------------------


async def test_web_tools_release_checks_md5_and_is_keyed_by_sha256(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release = web_tools_release(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.path.name == f"{stored.sha256}.bin"
    assert await store.fetch(release, DEVICE) == stored  # cached by its MD5 in this run
    assert release_server.requests == ["/garden.bin"]
    # Tampered: the MD5 no longer matches, downloaded again.
    stored.path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert (await store.fetch(release, DEVICE)).path.read_bytes() == data
    assert len(release_server.requests) == 2


async def test_web_tools_md5_mismatch(store: FirmwareStore, release_server: ReleaseServer) -> None:
    data = image()
    release = web_tools_release(release_server.add("garden.bin", data), data, md5="1" * 32)
    with pytest.raises(FirmwareIntegrityError, match=r"MD5 .* says 1111"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_web_tools_release_larger_than_the_store(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    data = image()
    release_server.chunked = True
    store = FirmwareStore(tmp_path, session, max_bytes=64 * 1024)
    release = web_tools_release(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareTooLargeError, match="65536 bytes the store holds"):
        await store.fetch(release, DEVICE)
    assert leftovers(tmp_path) == []


async def test_release_larger_than_the_store_is_not_downloaded(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    data = image()
    store = FirmwareStore(tmp_path, session, max_bytes=len(data) - 1)
    release = release_for(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareTooLargeError, match="at most"):
        await store.fetch(release, DEVICE)
    assert release_server.requests == []


# --- does it fit the device and the release ---------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        ({"project": "kitchen"}, {}, {}, "project", ("'kitchen'", "'garden'")),
        ({}, {}, {"project": "kitchen"}, "project", ("'garden'", "'kitchen'")),
        ({"chip": "esp32s3"}, {}, {}, "chip", ("'esp32s3'", "'esp32'")),
        ({}, {}, {"chip": "ESP32-C3"}, "chip", ("'esp32'", "'esp32c3'")),
        ({}, {}, {"chip": "esp8266"}, "chip", ("'esp32'", "'esp8266'")),
        ({"min_chip_rev_full": 302}, {}, {}, "chip_revision", ("'v3.2 - v3.99'", "'v3.1'")),
        ({"max_chip_rev_full": 300}, {}, {}, "chip_revision", ("'v0.0 - v3.0'", "'v3.1'")),
        ({}, {"version": "1.2.0"}, {}, "version", ("'1.1.0'", "'1.2.0'")),
        ({"secure_version": 0}, {}, {}, "secure_version", ("0", "'>= 1'")),
    ],
)
async def test_mismatch_names_the_field_and_both_values(
    store: FirmwareStore, release_server: ReleaseServer, case: tuple[Any, ...]
) -> None:
    build, release_changes, device_changes, field, values = case
    data = image(**build)
    release = release_for(release_server.add("garden.bin", data), data, **release_changes)
    if "chip" in build:
        release = replace(release, chip=build["chip"])  # the release is right, the device not
    device = replace(DEVICE, **device_changes)
    with pytest.raises(FirmwareMismatchError) as caught:
        await store.fetch(release, device)
    assert caught.value.field == field
    actual, expected = values
    assert str(caught.value).startswith(f"{field}: the image has {actual}")
    assert str(caught.value).endswith(f"needs {expected}")
    assert leftovers(store.folder) == []


async def test_the_release_claims_are_checked_too(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image(chip="esp32s3")
    url = release_server.add("garden.bin", data)
    with pytest.raises(
        FirmwareMismatchError, match=r"chip: .* the release needs 'esp32'"
    ) as caught:
        await store.fetch(release_for(url, data), replace(DEVICE, chip="esp32s3"))
    assert caught.value.against == "release"
    with pytest.raises(FirmwareMismatchError, match=r"project: .* the release needs 'other'"):
        await store.fetch(
            release_for(url, data, project="other", chip="esp32s3"), replace(DEVICE, chip="esp32s3")
        )


async def test_a_cached_image_is_checked_against_each_device(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image(min_chip_rev_full=300)
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    with pytest.raises(FirmwareMismatchError, match="chip_revision"):
        await store.fetch(release, replace(DEVICE, chip_revision=100))
    # The image stays: it is right, only not for that device.
    assert stored.path.exists()
    assert await store.fetch(release, DEVICE) == stored
    assert release_server.requests == ["/garden.bin"]


# --- broken images ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("defect", "error"),
    [
        (Defect.BAD_MAGIC, errors.BadMagicError),
        (Defect.TOO_SHORT, errors.ImageTooShortError),
        (Defect.TOO_MANY_SEGMENTS, errors.TooManySegmentsError),
        (Defect.SEGMENT_OVERRUN, errors.SegmentOverrunError),
        (Defect.UNALIGNED_SEGMENT, errors.SegmentLengthError),
        (Defect.BAD_CHECKSUM, errors.ChecksumMismatchError),
        (Defect.BAD_SHA256, errors.Sha256MismatchError),
        (Defect.NO_APP_DESCRIPTOR, errors.NoAppDescriptorError),
        (Defect.TRUNCATED, errors.SegmentOverrunError),
    ],
)
async def test_a_malformed_image_raises_its_image_error(
    store: FirmwareStore,
    release_server: ReleaseServer,
    defect: Defect,
    error: type[Exception],
) -> None:
    """The release describes the broken bytes exactly: only the image check catches it."""
    data = build_broken_image(defect, project="garden", version="1.1.0", size=SIZE)
    release = release_for(release_server.add("broken.bin", data), data)
    with pytest.raises(error):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


# --- the network -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 500])
async def test_http_error_status(
    store: FirmwareStore, release_server: ReleaseServer, status: int
) -> None:
    data = image()
    release_server.status = status
    release = release_for(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareDownloadError, match=f"HTTP {status}") as caught:
        await store.fetch(release, DEVICE)
    assert caught.value.status == status
    assert caught.value.url == release.url
    assert leftovers(store.folder) == []


async def test_connection_refused(
    store: FirmwareStore, release_server: ReleaseServer, unused_tcp_port: int
) -> None:
    data = image()
    release = release_for(f"http://127.0.0.1:{unused_tcp_port}/garden.bin", data)
    with pytest.raises(FirmwareDownloadError, match="could not download") as caught:
        await store.fetch(release, DEVICE)
    assert caught.value.status is None
    assert leftovers(store.folder) == []


async def test_invalid_url(store: FirmwareStore) -> None:
    data = image()
    with pytest.raises(FirmwareDownloadError, match="not a valid URL"):
        await store.fetch(release_for("http://", data), DEVICE)


@pytest.mark.parametrize("credentials", ["query", "userinfo"])
@pytest.mark.parametrize("failure", ["404", "refused", "dropped", "larger", "sha256", "no hash"])
async def test_errors_never_show_a_token_or_password_of_the_url(
    store: FirmwareStore,
    release_server: ReleaseServer,
    unused_tcp_port: int,
    *,
    credentials: str,
    failure: str,
) -> None:
    """A release URL with an access token (a signed CDN URL, or the feed's user:password
    kept by a relative reference) shows redacted in every error: the message goes to the
    job's record, diagnostics and logs. The attribute keeps the URL requested."""
    secret = "SECRET123"
    data = image()
    url = release_server.add("garden.bin", data)
    if failure == "refused":
        url = f"http://127.0.0.1:{unused_tcp_port}/garden.bin"
    host_path = url.removeprefix("http://")
    if credentials == "query":
        url, shown = f"{url}?token={secret}", f"{url}?REDACTED"
    else:
        url, shown = f"http://user:{secret}@{host_path}", url
    release = release_for(url, data)
    if failure == "404":
        release_server.status = 404
    elif failure == "dropped":
        release_server.drop_at = 20_000
    elif failure == "larger":
        release_server.extra = b"x"
    elif failure == "sha256":
        release = replace(release, sha256="0" * 64)
    elif failure == "no hash":
        release = replace(release, sha256=None)
    with pytest.raises(errors.FirmwareError) as caught:
        await store.fetch(release, DEVICE)
    message = str(caught.value)
    assert secret not in message
    assert shown in message
    if isinstance(caught.value, FirmwareDownloadError):
        assert caught.value.url == url


async def test_connection_dropped_mid_body(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release_server.drop_at = 40_000
    release = release_for(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareDownloadError, match="could not download"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_no_answer_in_time(store: FirmwareStore, release_server: ReleaseServer) -> None:
    data = image()
    release_server.stall_before_headers_s = 5
    release = release_for(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareDownloadError, match=r"sent nothing for 0.5 s"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_a_body_that_stalls(store: FirmwareStore, release_server: ReleaseServer) -> None:
    data = image()
    release_server.stall_at, release_server.stall_s = 50_000, 5
    release = release_for(release_server.add("garden.bin", data), data)
    with pytest.raises(FirmwareDownloadError, match="sent nothing"):
        await store.fetch(release, DEVICE)
    assert leftovers(store.folder) == []


async def test_a_cancelled_fetch_leaves_nothing(
    store: FirmwareStore, release_server: ReleaseServer
) -> None:
    data = image()
    release_server.stall_at, release_server.stall_s = 50_000, 5
    release = release_for(release_server.add("garden.bin", data), data)
    task = asyncio.create_task(store.fetch(release, DEVICE))
    while not any(name.startswith(".partial-") for name in leftovers(store.folder)):  # noqa: ASYNC110 - a file, not an event
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(store.folder) == []


# --- the bound ---------------------------------------------------------------------------


async def test_least_recently_used_images_are_evicted_within_the_bound(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    store = FirmwareStore(tmp_path, session, max_bytes=3 * SIZE)
    releases = []
    for index in range(5):
        data = image(seed=index)
        releases.append(release_for(release_server.add(f"{index}.bin", data), data))
    for release in releases[:3]:
        await store.fetch(release, DEVICE)
    await store.fetch(releases[0], DEVICE)  # 0 used again: 1 is now the oldest
    await store.fetch(releases[3], DEVICE)
    assert store.cached() == [releases[2].sha256, releases[0].sha256, releases[3].sha256]
    assert store.total_bytes <= store.max_bytes
    assert sorted(leftovers(tmp_path)) == sorted(
        f"{r.sha256}.bin" for r in [releases[0], releases[2], releases[3]]
    )


async def test_a_smaller_bound_after_a_restart_evicts_the_oldest(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    releases = []
    for index in range(3):
        data = image(seed=index)
        releases.append(release_for(release_server.add(f"{index}.bin", data), data))
    first_run = FirmwareStore(tmp_path, session, max_bytes=3 * SIZE)
    for release in releases:
        await first_run.fetch(release, DEVICE)
    await first_run.fetch(releases[0], DEVICE)  # 1 is now the oldest use, then 2
    second_run = FirmwareStore(tmp_path, session, max_bytes=2 * SIZE)
    await second_run.fetch(releases[0], DEVICE)
    assert second_run.cached() == [releases[2].sha256, releases[0].sha256]
    assert len(release_server.requests) == 3  # nothing downloaded again
    assert len(leftovers(tmp_path)) == 2


async def test_pinned_images_are_never_evicted(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    store = FirmwareStore(tmp_path, session, max_bytes=2 * SIZE)
    stored = []
    for index in range(4):
        data = image(seed=index)
        release = release_for(release_server.add(f"{index}.bin", data), data)
        stored.append(await store.fetch(release, DEVICE))
        if index == 0:
            store.pin(stored[0])
            store.pin(stored[0])  # two devices served from it
    assert store.in_use(stored[0].sha256)
    assert stored[0].path.exists()
    assert store.cached() == [stored[0].sha256, stored[3].sha256]
    store.unpin(stored[0])
    assert store.in_use(stored[0].sha256)  # one device still pulls it
    store.unpin(stored[0])
    assert not store.in_use(stored[0].sha256)
    store.unpin(stored[0])  # one unpin too many is harmless
    assert not store.in_use(stored[0].sha256)
    data = image(seed=9)
    await store.fetch(release_for(release_server.add("9.bin", data), data), DEVICE)
    assert not stored[0].path.exists()
    assert store.total_bytes <= store.max_bytes


async def test_all_pinned_leaves_the_store_over_its_bound(
    tmp_path: Path, session: aiohttp.ClientSession, release_server: ReleaseServer
) -> None:
    store = FirmwareStore(tmp_path, session, max_bytes=SIZE)
    first_data, second_data = image(seed=1), image(seed=2)
    first = await store.fetch(
        release_for(release_server.add("1.bin", first_data), first_data), DEVICE
    )
    store.pin(first)
    second = await store.fetch(
        release_for(release_server.add("2.bin", second_data), second_data), DEVICE
    )
    # Neither is deleted: one is served, the other is about to be.
    assert first.path.exists()
    assert second.path.exists()
    assert store.total_bytes == 2 * SIZE


# --- a full disk -------------------------------------------------------------------------

# Where storing an image can meet a full disk: creating the partial file, its first write,
# a later write, the flush, the fsync, and the rename to <sha256>.bin.
STORE_STAGES = ("create", "first write", "later write", "flush", "fsync", "rename")
# Three write batches, so that there is a write after the first.
LARGE = 3 * firmware_store._BATCH


@dataclass
class FullDisk:
    """The store's file system failing at one `stage` of storing an image (see
    STORE_STAGES) for the next `failures` times it gets there, with `error`; a full disk
    stays full until something is deleted, so "once" means room was made after it."""

    stage: str | None = None
    failures: int = 0
    error: int = errno.ENOSPC
    hits: list[str] = field(default_factory=list)

    def check(self, stage: str) -> None:
        if stage == self.stage and self.failures > 0:
            self.failures -= 1
            self.hits.append(stage)
            raise OSError(self.error, os.strerror(self.error))


class FillingFile:
    """The store's partial file, on a disk that may fill up: a failing write stores what
    fit first (half), as a real one does."""

    def __init__(self, file: Any, disk: FullDisk) -> None:
        self._file = file
        self._disk = disk
        self._writes = 0

    def write(self, data: bytes) -> int:
        self._writes += 1
        try:
            self._disk.check("first write" if self._writes == 1 else "later write")
        except OSError:
            self._file.write(data[: len(data) // 2])
            raise
        return int(self._file.write(data))

    def flush(self) -> None:
        self._disk.check("flush")
        self._file.flush()

    def fileno(self) -> int:
        return int(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class OsOnFullDisk:
    """firmware_store's `os`, whose fsync meets the full disk."""

    def __init__(self, disk: FullDisk) -> None:
        self._disk = disk

    def fsync(self, descriptor: int) -> None:
        self._disk.check("fsync")
        os.fsync(descriptor)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    """Routes every file operation of the store's downloads through a FullDisk (which
    fails nothing until a test sets its stage and failures). Only firmware_store's own
    references are replaced, and the rename only for the store's partial files."""
    disk = FullDisk()
    make_temporary = FirmwareStore._temporary_file
    real_mkstemp = tempfile.mkstemp
    real_replace = Path.replace

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        disk.check("create")
        return real_mkstemp(*args, **kwargs)

    def temporary_file(store: FirmwareStore, *args: Any) -> tuple[Any, Path]:
        file, path = make_temporary(store, *args)
        return FillingFile(file, disk), path

    def replace_path(path: Path, target: Any) -> Path:
        if path.name.startswith(".partial-"):
            disk.check("rename")
        return real_replace(path, target)

    monkeypatch.setattr(firmware_store, "tempfile", SimpleNamespace(mkstemp=mkstemp))
    monkeypatch.setattr(FirmwareStore, "_temporary_file", temporary_file)
    monkeypatch.setattr(firmware_store, "os", OsOnFullDisk(disk))
    monkeypatch.setattr(Path, "replace", replace_path)
    return disk


def no_room(store: FirmwareStore, size: int) -> str:
    """The start of FirmwareStorageError's message for an image of `size` bytes."""
    return re.escape(f"not enough space in {store.folder} for the {size}-byte image")


async def stored_images(
    store: FirmwareStore, release_server: ReleaseServer, count: int
) -> list[StoredImage]:
    """`count` images fetched into the store, oldest use first."""
    images = []
    for index in range(count):
        data = image(seed=100 + index)
        release = release_for(release_server.add(f"old-{index}.bin", data), data)
        images.append(await store.fetch(release, DEVICE))
    return images


@pytest.mark.parametrize("stage", STORE_STAGES)
async def test_a_full_disk_with_nothing_to_delete_is_a_storage_error(
    store: FirmwareStore, release_server: ReleaseServer, full_disk: FullDisk, stage: str
) -> None:
    """Full at any stage, and no image to delete: FirmwareStorageError saying the space
    needed, no partial file, and no second download (it could only fail again)."""
    data = image(size=LARGE)
    release = release_for(release_server.add("garden.bin", data), data)
    full_disk.stage, full_disk.failures = stage, 10
    with pytest.raises(FirmwareStorageError, match=no_room(store, len(data))) as raised:
        await store.fetch(release, DEVICE)
    assert full_disk.hits == [stage]
    assert (raised.value.needed, raised.value.folder) == (len(data), str(store.folder))
    assert raised.value.available is not None  # what the file system reports free
    assert leftovers(store.folder) == []
    assert store.cached() == []
    assert release_server.requests == ([] if stage == "create" else ["/garden.bin"])


@pytest.mark.parametrize("stage", STORE_STAGES)
async def test_a_full_disk_deletes_an_older_image_and_the_retry_stores_it(
    store: FirmwareStore, release_server: ReleaseServer, full_disk: FullDisk, stage: str
) -> None:
    (older,) = await stored_images(store, release_server, 1)
    data = image(size=LARGE)
    release = release_for(release_server.add("garden.bin", data), data)
    full_disk.stage, full_disk.failures = stage, 1
    stored = await store.fetch(release, DEVICE)
    assert full_disk.hits == [stage]
    assert stored.path.read_bytes() == data
    assert store.cached() == [release.sha256]
    assert not older.path.exists()
    assert leftovers(store.folder) == [f"{release.sha256}.bin"]
    downloads = [] if stage == "create" else ["/garden.bin"]
    assert release_server.requests == ["/old-0.bin", *downloads, "/garden.bin"]


async def test_a_disk_still_full_after_deleting_fails_after_one_retry(
    store: FirmwareStore, release_server: ReleaseServer, full_disk: FullDisk
) -> None:
    (older,) = await stored_images(store, release_server, 1)
    data = image(size=LARGE)
    release = release_for(release_server.add("garden.bin", data), data)
    full_disk.stage, full_disk.failures = "later write", 10
    with pytest.raises(FirmwareStorageError, match=no_room(store, len(data))):
        await store.fetch(release, DEVICE)
    assert full_disk.hits == ["later write", "later write"]
    assert not older.path.exists()
    assert store.cached() == []
    assert leftovers(store.folder) == []


async def test_making_room_deletes_the_oldest_images_until_the_new_one_fits(
    store: FirmwareStore, release_server: ReleaseServer, full_disk: FullDisk
) -> None:
    """Least recently used first, only as many as the new image's size needs; a pinned
    image is never deleted, however old."""
    oldest, pinned, old, recent = await stored_images(store, release_server, 4)
    store.pin(pinned)
    data = image(size=2 * SIZE)
    release = release_for(release_server.add("garden.bin", data), data)
    full_disk.stage, full_disk.failures = "first write", 1
    await store.fetch(release, DEVICE)
    assert store.cached() == [pinned.sha256, recent.sha256, release.sha256]
    assert not oldest.path.exists()
    assert not old.path.exists()
    assert pinned.path.exists()
    assert recent.path.exists()


async def test_only_pinned_images_means_no_room(
    store: FirmwareStore, release_server: ReleaseServer, full_disk: FullDisk
) -> None:
    (pinned,) = await stored_images(store, release_server, 1)
    store.pin(pinned)
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    full_disk.stage, full_disk.failures = "fsync", 1
    with pytest.raises(FirmwareStorageError, match=no_room(store, len(data))):
        await store.fetch(release, DEVICE)
    assert store.cached() == [pinned.sha256]
    assert leftovers(store.folder) == [pinned.path.name]
    assert release_server.requests == ["/old-0.bin", "/garden.bin"]  # no retry


async def test_a_full_quota_is_a_storage_error_too(
    store: FirmwareStore, release_server: ReleaseServer, full_disk: FullDisk
) -> None:
    """EDQUOT: the same, without a free-space figure (the disk's is not the quota's)."""
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    full_disk.stage, full_disk.failures, full_disk.error = "first write", 10, errno.EDQUOT
    with pytest.raises(FirmwareStorageError, match=no_room(store, len(data))) as raised:
        await store.fetch(release, DEVICE)
    assert raised.value.available is None
    assert leftovers(store.folder) == []


async def test_an_unknown_size_says_so_and_makes_room_from_every_older_image(
    store: FirmwareStore, release_server: ReleaseServer, full_disk: FullDisk
) -> None:
    """An ESP Web Tools release has no size: room is made from every unpinned image."""
    older = await stored_images(store, release_server, 2)
    data = image(project="Garden Sensor")
    release = web_tools_release(release_server.add("garden.bin", data), data)
    device = replace(DEVICE, project="Garden Sensor")
    full_disk.stage, full_disk.failures = "rename", 10
    with pytest.raises(
        FirmwareStorageError, match=re.escape(f"space in {store.folder} for the image")
    ) as raised:
        await store.fetch(release, device)
    assert raised.value.needed is None
    assert not any(image.path.exists() for image in older)
    assert leftovers(store.folder) == []


@pytest.mark.parametrize(
    ("stage", "error", "says"),
    [
        ("create", errno.EROFS, "could not create a file in"),
        ("first write", errno.EIO, "could not write"),
        ("later write", errno.EIO, "could not write"),
        ("flush", errno.EIO, "could not flush and sync"),
        ("fsync", errno.EIO, "could not flush and sync"),
        ("rename", errno.EACCES, "could not rename"),
    ],
)
async def test_another_file_error_says_what_failed_and_deletes_nothing(
    store: FirmwareStore,
    release_server: ReleaseServer,
    full_disk: FullDisk,
    *,
    stage: str,
    error: int,
    says: str,
) -> None:
    """Not a full disk: a FirmwareError naming the operation; deleting images would not
    help, so none is deleted and nothing is downloaded again."""
    (older,) = await stored_images(store, release_server, 1)
    data = image(size=LARGE)
    release = release_for(release_server.add("garden.bin", data), data)
    full_disk.stage, full_disk.failures, full_disk.error = stage, 1, error
    with pytest.raises(errors.FirmwareError, match=says) as raised:
        await store.fetch(release, DEVICE)
    assert type(raised.value) is errors.FirmwareError
    assert os.strerror(error) in str(raised.value)
    assert store.cached() == [older.sha256]
    assert leftovers(store.folder) == [older.path.name]
    assert release_server.requests.count("/garden.bin") == (0 if stage == "create" else 1)


async def test_an_image_that_cannot_be_deleted_is_kept_and_named(
    store: FirmwareStore, release_server: ReleaseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged stored image whose file cannot be deleted: a FirmwareError naming it
    (not a bare OSError), and the store still lists it, to try again next time."""
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    stored.path.write_bytes(b"\x00" + data[1:])
    real_unlink = Path.unlink

    def refuse_images(path: Path, missing_ok: bool = False) -> None:
        if path.suffix == ".bin":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse_images)
    with pytest.raises(
        errors.FirmwareError, match=f"could not delete {re.escape(str(stored.path))}"
    ):
        await store.fetch(release, DEVICE)
    assert store.cached() == [release.sha256]


async def test_an_image_that_cannot_be_evicted_stays_over_the_bound(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    release_server: ReleaseServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keeping within the bound is housekeeping: a file that cannot be deleted is logged
    and kept, and the fetch that went over the bound still returns its image."""
    store = FirmwareStore(tmp_path, session, max_bytes=SIZE)
    (older,) = await stored_images(store, release_server, 1)
    real_unlink = Path.unlink

    def refuse(path: Path, missing_ok: bool = False) -> None:
        if path == older.path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    data = image()
    release = release_for(release_server.add("garden.bin", data), data)
    stored = await store.fetch(release, DEVICE)
    assert stored.path.read_bytes() == data
    assert store.cached() == [older.sha256, release.sha256]
    assert older.path.exists()
