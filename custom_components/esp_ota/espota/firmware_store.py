"""Firmware images downloaded, verified and kept on disk, ready to be served to devices.

An image is stored only after every check passed: its size and SHA-256 (or MD5, for ESP
Web Tools releases) against the release, the image itself (StreamingImageVerifier, as it
streams, in constant memory), then its descriptor against the device and the release
(project, chip, chip revision, version, anti-rollback secure_version). Until then it is a
temporary file that any failure removes; the last step is an atomic rename to
``<sha256>.bin``, so the folder never holds a partial or unverified image under that name.

The store is a cache keyed by SHA-256 and bounded in bytes: least recently used images are
deleted once the total exceeds ``max_bytes``, except those pinned (being served). A stored
image is read in full again before it is used, unless the file is unchanged on disk since
it was last read (inode, size, times); fetches that come together share that read. Every
file operation runs in a thread: Home Assistant flags blocking calls in its event loop.

A full disk (ENOSPC, or EDQUOT for a quota) while an image is stored makes room: unpinned
images other than the one being fetched are deleted, least recently used first, until
their bytes would hold it, and the download runs once more; if there is still no room it
is FirmwareStorageError. Any other failure of a file operation is a FirmwareError saying
what failed, and never leaves a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import aiohttp

from .errors import (
    FirmwareDownloadError,
    FirmwareError,
    FirmwareIntegrityError,
    FirmwareStorageError,
    FirmwareTooLargeError,
    ImageError,
)
from .feed import Release
from .image import RECOMMENDED_CHUNK_SIZE, ImageInfo, StreamingImageVerifier
from .image_fit import check_fits
from .selection import DeviceFirmware
from .urls import redacted_text, redacted_url

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
# Seconds to connect, and seconds without a byte before a download is given up. There is
# no bound on the whole download: a large image over a slow link may take minutes.
DEFAULT_TIMEOUT: Final = 30.0
# Bytes handed to a worker thread at a time (written, hashed and verified there): large
# enough that the thread hop costs nothing next to the work, small enough to be constant.
_BATCH: Final = 256 * 1024
_SUFFIX: Final = ".bin"
_PARTIAL_PREFIX: Final = ".partial-"


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A verified image in the store."""

    path: Path
    sha256: str  # hex, of the whole file
    size: int
    info: ImageInfo  # header and descriptor (info.app.app_elf_sha256, version, ...)


def _free_bytes(folder: Path) -> int | None:
    """Bytes free for this process in `folder`'s file system; None if unknown. Blocking."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _file_error(err: OSError, action: str, folder: Path, needed: int | None) -> FirmwareError:
    """The library's error for a failed file operation of the store: FirmwareStorageError
    for a full disk or quota (`needed`: the image's size, if known), else a FirmwareError
    saying what could not be done (`action`). Blocking: it reads the free space."""
    if err.errno == errno.ENOSPC:
        return FirmwareStorageError(str(folder), needed=needed, available=_free_bytes(folder))
    if err.errno == errno.EDQUOT:  # a quota: the disk's free space is not what is left
        return FirmwareStorageError(str(folder), needed=needed, available=None)
    return FirmwareError(f"could not {action}: {err.strerror or err}")


class _Download:
    """One download's temporary file and running digests; used from worker threads.

    `needed` is the image's size if the release says it (for a full disk's message)."""

    def __init__(self, file: BinaryIO, path: Path, needed: int | None, want_md5: bool) -> None:
        self.file = file
        self.path = path
        self.needed = needed
        self.verifier = StreamingImageVerifier()
        self.md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None

    def absorb(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as err:
            raise self._error(err, "write") from err
        if self.md5 is not None:
            self.md5.update(data)
        self.verifier.update(data)

    def finish(self) -> ImageInfo:
        # A file system may report a full disk only here (delayed allocation, NFS).
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        except OSError as err:
            raise self._error(err, "flush and sync") from err
        return self.verifier.finish()

    def _error(self, err: OSError, action: str) -> FirmwareError:
        return _file_error(err, f"{action} {self.path}", self.path.parent, self.needed)


def _verify_file(path: Path, want_md5: bool) -> tuple[ImageInfo, str | None]:
    """Read a stored file again: its image info (with SHA-256) and MD5 if asked. Blocking."""
    verifier = StreamingImageVerifier()
    md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
    with path.open("rb") as file:
        while chunk := file.read(_BATCH):
            verifier.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return verifier.finish(), md5.hexdigest() if md5 is not None else None


# Inode, size, mtime and ctime in ns: any write changes the times (and ctime cannot be set).
type _FileIdentity = tuple[int, int, int, int]


def _identity(path: Path) -> _FileIdentity:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@dataclass(frozen=True)
class _Checked:
    """A stored file as it was when last read in full, and what that read found."""

    identity: _FileIdentity
    info: ImageInfo
    md5: str | None


def _recheck(path: Path, size: int, want_md5: bool, known: _Checked | None) -> _Checked | None:
    """The file's image info, read again unless it is unchanged since `known` was read;
    None if it has another size. Marks the file used (its mtime). Blocking."""
    identity = _identity(path)
    if identity[1] != size:
        return None
    if known is not None and known.identity == identity and (known.md5 or not want_md5):
        info, md5 = known.info, known.md5
    else:
        info, md5 = _verify_file(path, want_md5)
    os.utime(path)  # its use, for the order after a restart
    return _Checked(_identity(path), info, md5)


class FirmwareStore:
    """Downloads releases into `folder`, verified, as a cache bounded by `max_bytes`.

    `session` is injected (Home Assistant's shared one) and never closed here. Pin an
    image (``pin``) for as long as it is served: eviction never deletes a pinned image,
    nor the one a fetch is about to return. Fetch and pin in the same step of a task (no
    await in between) so no other fetch can evict the image first.
    """

    def __init__(
        self,
        folder: Path,
        session: aiohttp.ClientSession,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._entries: OrderedDict[str, int] = OrderedDict()  # sha256 -> size, LRU first
        self._pins: Counter[str] = Counter()
        self._md5_to_sha256: dict[str, str] = {}  # Web Tools releases seen in this run
        # A stored file is read in full again before each use, unless it is unchanged on
        # disk (_FileIdentity) since the last read: 50 devices taking one image cost
        # one read, not 50 in a row (the devices check the SHA-256 themselves too).
        self._checked: dict[str, _Checked] = {}
        self._rereads: dict[tuple[str, str | None], asyncio.Future[StoredImage | None]] = {}
        self._downloading: dict[str, asyncio.Event] = {}  # set when the download ends
        self._loaded = False
        self._load_lock = asyncio.Lock()

    # --- what is stored ---------------------------------------------------------

    @property
    def total_bytes(self) -> int:
        """Bytes of the images stored (after the first fetch has read the folder)."""
        return sum(self._entries.values())

    def cached(self) -> list[str]:
        """SHA-256 of the stored images, least recently used first."""
        return list(self._entries)

    def path_for(self, sha256: str) -> Path:
        """Where the image with this SHA-256 is (or would be) stored."""
        return self.folder / f"{sha256}{_SUFFIX}"

    # --- pins -------------------------------------------------------------------

    def pin(self, image: StoredImage) -> None:
        """Mark the image in use (counted: pin once per device being served)."""
        self._pins[image.sha256] += 1

    def unpin(self, image: StoredImage) -> None:
        """Release one pin; an image without pins may be evicted again."""
        if self._pins[image.sha256] <= 1:
            del self._pins[image.sha256]
        else:
            self._pins[image.sha256] -= 1

    def in_use(self, sha256: str) -> bool:
        """Whether the image is pinned."""
        return self._pins[sha256] > 0

    # --- fetching ---------------------------------------------------------------

    async def fetch(self, release: Release, device: DeviceFirmware) -> StoredImage:
        """The release's image, verified and fitting the device: from the store or downloaded.

        Raises FirmwareDownloadError, FirmwareIntegrityError, FirmwareTooLargeError,
        FirmwareMismatchError, an ImageError subclass for a malformed image,
        FirmwareStorageError when there is no room for it even after deleting unpinned
        images, or FirmwareError when another file operation fails. A failed download
        leaves nothing behind.
        """
        shown = redacted_url(release.url)
        if release.sha256 is None and release.md5 is None:
            raise FirmwareIntegrityError(f"{shown}: the release names no SHA-256 or MD5")
        if release.size is not None and release.size > self.max_bytes:
            raise FirmwareTooLargeError(
                f"{shown} is {release.size} bytes, the firmware store holds at most "
                f"{self.max_bytes}"
            )
        await self._load()
        key = release.sha256 or f"md5:{release.md5}"
        while (image := await self._cached(release)) is None:
            if (ended := self._downloading.get(key)) is not None:
                # Another fetch is downloading it: wait for that to end, then look again,
                # all together (one shared look at the new file, not one after another).
                await ended.wait()
                continue
            ended = self._downloading[key] = asyncio.Event()
            try:
                image = await self._download(release, device)
            finally:
                del self._downloading[key]
                ended.set()
            break
        check_fits(image.info, release, device)
        self._entries.move_to_end(image.sha256)
        return image

    async def _load(self) -> None:
        """Read the folder once: images kept from an earlier run, oldest use first."""
        async with self._load_lock:
            if self._loaded:
                return
            found = await asyncio.to_thread(self._scan_or_raise)
            for sha256, size in found:
                self._entries.setdefault(sha256, size)
            self._loaded = True
            await self._evict(keep="")  # an earlier run may have had a larger bound

    def _scan_or_raise(self) -> list[tuple[str, int]]:
        try:
            return self._scan()
        except OSError as err:
            raise _file_error(err, f"read the folder {self.folder}", self.folder, None) from err

    def _scan(self) -> list[tuple[str, int]]:
        self.folder.mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, str, int]] = []
        for path in self.folder.iterdir():
            stem = path.name.removesuffix(_SUFFIX)
            ours = path.suffix == _SUFFIX and len(stem) == 64
            if path.name.startswith(_PARTIAL_PREFIX) or (ours and path.is_symlink()):
                # Left by a crash mid-download, or a link where only our own verified
                # files belong: neither is an image of ours. A directory of that name
                # (not ours either) is left alone rather than stopping every load.
                if not path.is_dir() or path.is_symlink():
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            if ours and path.is_file():
                stat = path.stat()
                found.append((stat.st_mtime, stem, stat.st_size))
        return [(sha256, size) for _, sha256, size in sorted(found)]

    async def _cached(self, release: Release) -> StoredImage | None:
        """The stored image of the release after re-reading it, or None.

        A stored file that no longer has its size or hash (tampered with, or damaged on
        disk) is deleted, so the caller downloads it again.
        """
        sha256 = release.sha256 or self._md5_to_sha256.get(release.md5 or "")
        if sha256 is None or sha256 not in self._entries:
            return None
        size = self._entries[sha256]
        # Fetches that come together share one re-read (one worker-thread call, instead of
        # one after another under the fetch lock), and only it may forget the file.
        md5 = release.md5 if release.sha256 is None else None
        key = (sha256, md5)
        reread = self._rereads.get(key)
        if reread is None:
            reread = asyncio.ensure_future(self._reread(sha256, size, md5))
            self._rereads[key] = reread
            reread.add_done_callback(lambda _: self._rereads.pop(key, None))
        image = await asyncio.shield(reread)
        if image is not None and release.size is not None and release.size != image.size:
            # The stored file is intact (just re-read against its name), so the image with
            # this SHA-256 really has another size: the release is wrong, the file stays.
            # (A file damaged on disk has failed the re-read and is downloaded again.)
            raise FirmwareIntegrityError(
                f"{redacted_url(release.url)}: the release says {release.size} bytes, the "
                f"image with SHA-256 {sha256} has {image.size}"
            )
        return image

    async def _reread(self, sha256: str, size: int, md5: str | None) -> StoredImage | None:
        path = self.path_for(sha256)
        known = self._checked.get(sha256)
        try:
            checked = await asyncio.to_thread(_recheck, path, size, md5 is not None, known)
        except (OSError, ImageError) as err:  # gone, or altered into a broken image
            _LOGGER.warning("Stored firmware %s is damaged (%s); downloading it again", path, err)
            checked = None
        if (
            checked is None
            or checked.info.file_sha256 != sha256
            or (md5 is not None and checked.md5 != md5)
        ):
            if checked is not None:
                _LOGGER.warning("Stored firmware %s was altered; downloading it again", path)
            await self._forget(sha256)
            return None
        self._checked[sha256] = checked
        info = checked.info
        return StoredImage(path=path, sha256=sha256, size=info.file_size, info=info)

    async def _forget(self, sha256: str) -> None:
        """Drop the image and delete its file. Raises FirmwareError if the file cannot be
        deleted; the image is then kept, as the least recently used."""
        size = self._entries.pop(sha256, None)
        self._checked.pop(sha256, None)
        path = self.path_for(sha256)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as err:
            if size is not None and sha256 not in self._entries:
                self._entries[sha256] = size
                self._entries.move_to_end(sha256, last=False)
            raise FirmwareError(f"could not delete {path}: {err.strerror or err}") from err

    async def _download(self, release: Release, device: DeviceFirmware) -> StoredImage:
        try:
            return await self._download_once(release, device)
        except FirmwareStorageError as err:
            if not await self._make_room(release):
                raise
            _LOGGER.info(
                "%s; deleted older images, downloading %s again", err, redacted_url(release.url)
            )
        return await self._download_once(release, device)

    async def _make_room(self, release: Release) -> bool:
        """After a full disk: delete unpinned images other than the release's, least
        recently used first, until their bytes would hold it (all of them if its size is
        unknown). Whether any was deleted."""
        keep = release.sha256 or self._md5_to_sha256.get(release.md5 or "")
        freed = 0
        for sha256, size in list(self._entries.items()):
            if release.size is not None and freed >= release.size:
                break
            # Checked as it comes: deleting awaits, and another fetch may pin one meanwhile.
            if sha256 == keep or self.in_use(sha256) or sha256 not in self._entries:
                continue
            _LOGGER.info("Deleting stored firmware %s to make room", sha256)
            try:
                await self._forget(sha256)
            except FirmwareError as err:
                _LOGGER.warning("%s", err)
                continue
            freed += size
        return freed > 0

    async def _download_once(self, release: Release, device: DeviceFirmware) -> StoredImage:
        limit = release.size if release.size is not None else self.max_bytes
        file, temporary = await asyncio.to_thread(self._temporary_file, release.size)
        download = _Download(file, temporary, release.size, release.sha256 is None)
        try:
            info = await self._stream(release, download, limit)
            self._check_integrity(release, info, download)
            check_fits(info, release, device)
            final = self.path_for(info.file_sha256)
            identity = await asyncio.to_thread(self._publish, temporary, final, release.size)
        except BaseException:
            # Shielded: a cancelled fetch must still remove its temporary file.
            await asyncio.shield(asyncio.to_thread(self._discard, download, temporary))
            raise
        if release.md5 is not None:
            self._md5_to_sha256[release.md5] = info.file_sha256
        md5 = download.md5.hexdigest() if download.md5 is not None else None
        self._checked[info.file_sha256] = _Checked(identity, info, md5)
        self._entries[info.file_sha256] = info.file_size
        self._entries.move_to_end(info.file_sha256)
        _LOGGER.debug(
            "Stored %s (%d bytes) from %s", final.name, info.file_size, redacted_url(release.url)
        )
        await self._evict(keep=info.file_sha256)
        return StoredImage(path=final, sha256=info.file_sha256, size=info.file_size, info=info)

    @staticmethod
    def _publish(temporary: Path, final: Path, needed: int | None) -> _FileIdentity:
        try:
            temporary.replace(final)
            return _identity(final)
        except OSError as err:
            action = f"rename {temporary} to {final.name}"
            raise _file_error(err, action, final.parent, needed) from err

    def _temporary_file(self, needed: int | None) -> tuple[BinaryIO, Path]:
        """A new partial file in the folder, open for writing. Blocking."""
        try:
            descriptor, name = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, dir=self.folder)
        except OSError as err:
            action = f"create a file in {self.folder}"
            raise _file_error(err, action, self.folder, needed) from err
        return os.fdopen(descriptor, "wb"), Path(name)

    async def _stream(self, release: Release, download: _Download, limit: int) -> ImageInfo:
        url = release.url
        shown = redacted_url(url)
        try:
            async with self._session.get(
                url, timeout=self._timeout, raise_for_status=False, auto_decompress=False
            ) as response:
                if response.status != 200:
                    raise FirmwareDownloadError(
                        f"{shown} answered HTTP {response.status}", url=url, status=response.status
                    )
                announced = response.content_length
                if announced is not None and announced > limit:
                    raise self._too_big(release, announced)
                if announced is not None and release.size is not None and announced != limit:
                    raise FirmwareIntegrityError(
                        f"{shown} is {announced} bytes, the release says {release.size}"
                    )
                received = 0
                batch = bytearray()
                async for chunk in response.content.iter_chunked(RECOMMENDED_CHUNK_SIZE):
                    received += len(chunk)
                    if received > limit:  # stop at once: never store more than promised
                        raise self._too_big(release, received)
                    batch += chunk
                    if len(batch) >= _BATCH:
                        await asyncio.to_thread(download.absorb, bytes(batch))
                        batch.clear()
                if batch:
                    await asyncio.to_thread(download.absorb, bytes(batch))
        except TimeoutError as err:
            raise FirmwareDownloadError(
                f"{shown} sent nothing for {self._timeout.sock_read} s", url=url
            ) from err
        except aiohttp.InvalidURL as err:
            raise FirmwareDownloadError(f"{shown} is not a valid URL", url=url) from err
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as err:
            reason = redacted_text(str(err))  # aiohttp's text may name a redirect's URL
            raise FirmwareDownloadError(f"could not download {shown}: {reason}", url=url) from err
        if release.size is not None and received != release.size:
            raise FirmwareIntegrityError(
                f"{shown} ended after {received} bytes, the release says {release.size}"
            )
        return await asyncio.to_thread(download.finish)

    def _too_big(self, release: Release, received: int) -> Exception:
        if release.size is not None:
            return FirmwareIntegrityError(
                f"{redacted_url(release.url)} is larger than the {release.size} bytes the "
                f"release says (at least {received})"
            )
        return FirmwareTooLargeError(
            f"{redacted_url(release.url)} is larger than the {self.max_bytes} bytes the store holds"
        )

    @staticmethod
    def _check_integrity(release: Release, info: ImageInfo, download: _Download) -> None:
        if release.sha256 is not None and info.file_sha256 != release.sha256:
            raise FirmwareIntegrityError(
                f"{redacted_url(release.url)} has SHA-256 {info.file_sha256}, the release "
                f"says {release.sha256}"
            )
        if release.sha256 is None and download.md5 is not None:
            md5 = download.md5.hexdigest()
            if md5 != release.md5:
                raise FirmwareIntegrityError(
                    f"{redacted_url(release.url)} has MD5 {md5}, the release says {release.md5}"
                )

    @staticmethod
    def _discard(download: _Download, temporary: Path) -> None:
        with contextlib.suppress(OSError):  # a failed flush fails again here: closed anyway
            download.file.close()
        try:
            temporary.unlink(missing_ok=True)
        except OSError as err:
            # The fetch's own error is the one to raise; the next load removes the file.
            _LOGGER.warning("Could not delete %s: %s", temporary, err)

    async def _evict(self, *, keep: str) -> None:
        """Delete least recently used images until the total fits, sparing pinned ones."""
        total = self.total_bytes
        doomed: list[str] = []
        for sha256, size in self._entries.items():
            if total <= self.max_bytes:
                break
            if sha256 == keep or self.in_use(sha256):
                continue
            doomed.append(sha256)
            total -= size
        for sha256 in doomed:
            _LOGGER.debug("Evicting stored firmware %s", sha256)
            try:
                await self._forget(sha256)
            except FirmwareError as err:  # over the bound until a later eviction succeeds
                _LOGGER.warning("%s", err)
