"""What an update job needs of wherever its image comes from (Home Assistant's firmware
server and cache, the feed host in direct mode, a test server): the image made available
to the device, and how far it has been sent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .job_record import DownloadGrant


@dataclass(frozen=True)
class PreparedImage:
    """An image the device can pull: where, with which headers, pinned to which
    certificate, and what it must be."""

    url: str
    headers: Mapping[str, str]  # secret (a download token): never logged
    cert_pem: str
    sha256: str
    size: int
    version: str
    app_elf_sha256: str | None
    download: DownloadGrant | None = None  # stored in the record (None: direct)


class ImageSource(Protocol):
    """Where a job's image comes from (Home Assistant's firmware server, a test server)."""

    async def prepare(self) -> PreparedImage:
        """Make the image available to the device (download, check, grant access).

        Raises FirmwareIntegrityError or ImageError (the image is corrupt),
        FirmwareMismatchError (it does not fit), FirmwareStorageError (no space to store
        it), or another EspOtaError (unavailable).
        """
        ...

    def bytes_served(self) -> int | None:
        """How far the server has sent the image for this job; None if unknown."""
        ...
