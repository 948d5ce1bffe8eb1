"""The device coordinator: pushed by the device's event stream, polled as a fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from .const import DEVICE_POLL_INTERVAL, DOMAIN
from .espota.device_client import DeviceClient
from .espota.errors import CertificateMismatchError, DeviceError, DeviceUnauthorizedError
from .espota.protocol import DeviceEvent, DeviceInfo, EventType, OtaState
from .espota.update_job import UpdateJobRecord
from .feed_coordinator import FeedCoordinator

if TYPE_CHECKING:
    from .installer import DeviceInstaller

_LOGGER = logging.getLogger(__name__)


class OtaPhase(StrEnum):
    """What the OTA state sensor shows (translated); past idle, the update job's steps."""

    IDLE = "idle"
    QUEUED = "queued"
    PREPARING = "preparing"
    STARTING = "starting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    REBOOTING = "rebooting"
    CONFIRMING = "confirming"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


# The device's job states, as the sensor shows them.
_PHASE_OF_STATE: dict[OtaState, OtaPhase] = {
    OtaState.IDLE: OtaPhase.IDLE,
    OtaState.CONNECTING: OtaPhase.DOWNLOADING,
    OtaState.DOWNLOADING: OtaPhase.DOWNLOADING,
    OtaState.VERIFYING: OtaPhase.VERIFYING,
    OtaState.REBOOTING: OtaPhase.REBOOTING,
    OtaState.SUCCEEDED: OtaPhase.SUCCEEDED,
    OtaState.FAILED: OtaPhase.FAILED,
    OtaState.ABORTED: OtaPhase.FAILED,
}
# Progress events rewrite the entities at most this often (unless the percentage moves).
PROGRESS_WRITE_S = 1.0
# Events that end a phase: read the device's full state afterwards.
_REFRESH_AFTER: frozenset[EventType] = frozenset(
    {EventType.FINISH, EventType.ABORT, EventType.UPDATE_BOOT_PARTITION}
)


@dataclass
class OtaProgress:
    """The live view of a running update, kept from pushed events."""

    phase: OtaPhase = OtaPhase.IDLE
    bytes_written: int = 0
    image_size: int | None = None
    error: str | None = None

    @property
    def percentage(self) -> float | None:
        """Downloaded share of the image, 0-100, while there is a size to divide by."""
        if not self.image_size:
            return None
        return round(min(100.0, 100.0 * self.bytes_written / self.image_size), 1)


@dataclass
class EspOtaRuntimeData:
    """What a loaded entry holds."""

    device: EspOtaDeviceCoordinator
    feed: FeedCoordinator | None
    installer: DeviceInstaller


type EspOtaConfigEntry = ConfigEntry[EspOtaRuntimeData]


def phase_of(info: DeviceInfo) -> OtaPhase:
    """The phase a device's own report implies (no live events needed)."""
    last = info.last_ota
    if last.state is OtaState.SUCCEEDED and last.target_version not in (None, info.version):
        return OtaPhase.ROLLED_BACK  # it switched, then the bootloader switched back
    return _PHASE_OF_STATE[last.state]


class EspOtaDeviceCoordinator(DataUpdateCoordinator[DeviceInfo]):
    """Keeps one device's state: events pushed by the device, polling when they stop."""

    config_entry: EspOtaConfigEntry

    def __init__(self, hass: HomeAssistant, entry: EspOtaConfigEntry, client: DeviceClient) -> None:
        super().__init__(
            hass,
            _LOGGER,
            config_entry=entry,
            name=f"ESP OTA {entry.title}",
            update_interval=DEVICE_POLL_INTERVAL,
        )
        self.client = client
        self.progress = OtaProgress()
        self.last_event: DeviceEvent | None = None
        self.installer: DeviceInstaller | None = None  # set once the entry has one
        self._taps: set[asyncio.Queue[DeviceEvent]] = set()
        self._progress_written_at = 0.0
        self._listener: asyncio.Task[None] | None = None

    @property
    def certificate_issue_id(self) -> str:
        """The repair issue raised when the device's certificate changes."""
        return f"certificate_mismatch_{self.config_entry.entry_id}"

    async def _async_update_data(self) -> DeviceInfo:
        try:
            info = await self.client.info()
        except DeviceUnauthorizedError as err:
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN, translation_key="invalid_auth"
            ) from err
        except CertificateMismatchError as err:
            # Never accept it silently: the device (or what answers at its address) changed.
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                self.certificate_issue_id,
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key="certificate_mismatch",
                translation_placeholders={
                    "name": self.config_entry.title,
                    "host": self.client.host,
                },
            )
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="certificate_mismatch",
                translation_placeholders={"host": self.client.host},
            ) from err
        except DeviceError as err:
            if self.data is not None and self.installer and self.installer.device_may_be_away:
                # During an install the device goes away on purpose (its reboot; verifying
                # may already have ended it): the job decides, within its bounds, what
                # that means; meanwhile the entities stay as they were.
                return self.data
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={"host": self.client.host, "error": str(err)},
            ) from err
        ir.async_delete_issue(self.hass, DOMAIN, self.certificate_issue_id)
        if self.progress.phase not in (OtaPhase.DOWNLOADING, OtaPhase.VERIFYING):
            self.progress = OtaProgress(
                phase=phase_of(info),
                bytes_written=info.last_ota.bytes_written,
                image_size=info.last_ota.image_size,
                error=info.last_ota.error,
            )
        return info

    def _job_record(self) -> UpdateJobRecord | None:
        """The install's record while it runs, or its end if the device shows no newer OTA."""
        installer = self.installer
        record = installer.record if installer else None
        if record is None or installer is None:
            return None
        if installer.in_progress or record.ota_id in (None, self.data.last_ota.ota_id):
            return record
        return None

    @property
    def phase(self) -> OtaPhase:
        """Where the device's update is: the install's step, else the device's own report."""
        record = self._job_record()
        return OtaPhase(record.step.value) if record else self.progress.phase

    @property
    def percentage(self) -> float | None:
        """How far the download is, 0-100."""
        record = self._job_record()
        if record is not None and self.installer and self.installer.in_progress:
            return record.percentage
        return self.progress.percentage

    @property
    def error(self) -> str | None:
        """Why the last update failed (ESP-IDF's error name, or the install's reason)."""
        record = self._job_record()
        if record is None:
            return self.progress.error
        if record.reason is None:
            return None
        return record.error or record.reason.value

    def start_listening(self) -> None:
        """Follow the device's event stream for as long as the entry is loaded."""
        self._listener = self.config_entry.async_create_background_task(
            self.hass, self._listen(), name=f"esp_ota events {self.config_entry.title}"
        )

    async def _listen(self) -> None:
        try:
            async for event in self.client.events(on_reconnect=self._stream_reconnected):
                self.handle_event(event)
                for tap in self._taps:
                    tap.put_nowait(event)
                # A burst of buffered events is read without the stream ever waiting:
                # let the rest of Home Assistant run between two of them.
                await asyncio.sleep(0)
        except DeviceUnauthorizedError, CertificateMismatchError:
            # The next poll raises the matching reauth flow or repair issue.
            await self.async_request_refresh()

    def _stream_reconnected(self) -> None:
        """The stream is back after a gap (a restart, the network): read the device now
        rather than at the next poll; an install reads it itself."""
        if not self._installing:
            self.hass.async_create_task(self.async_request_refresh(), eager_start=True)

    async def events(self) -> AsyncIterator[DeviceEvent]:
        """The device's pushed events from now on, for as long as the caller iterates (the
        install follows this instead of opening a second stream to the device)."""
        tap: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._taps.add(tap)
        try:
            while True:
                yield await tap.get()
        finally:
            self._taps.discard(tap)

    @property
    def _installing(self) -> bool:
        return self.installer is not None and self.installer.in_progress

    def handle_event(self, event: DeviceEvent) -> None:
        """Fold one pushed event into the live progress."""
        self.last_event = event
        progress = self.progress
        match event.type:
            case EventType.START | EventType.CONNECTED:
                self.progress = OtaProgress(phase=OtaPhase.DOWNLOADING)
            case EventType.WRITE_FLASH:
                shown = progress.percentage
                progress.phase = OtaPhase.DOWNLOADING
                progress.bytes_written = event.bytes_written or progress.bytes_written
                progress.image_size = event.image_size or progress.image_size
                if self._installing:
                    return
                # A device reports every 4 KiB: rewrite the entities when the whole
                # percentage moves, or a second has passed, not hundreds of times.
                now = time.monotonic()
                if (
                    shown is not None
                    and progress.percentage is not None
                    and int(shown) == int(progress.percentage)
                    and now - self._progress_written_at < PROGRESS_WRITE_S
                ):
                    return
                self._progress_written_at = now
            case EventType.UPDATE_BOOT_PARTITION:
                progress.phase = OtaPhase.VERIFYING
            case EventType.FINISH if event.error:
                progress.phase, progress.error = OtaPhase.FAILED, event.error
            case EventType.ABORT:
                progress.phase, progress.error = OtaPhase.FAILED, event.error
            case EventType.REBOOT:
                if progress.phase is not OtaPhase.FAILED:
                    progress.phase = OtaPhase.REBOOTING
            case _:
                pass
        if self._installing:
            # The install shows its own steps and progress, notifies at its pace, and
            # reads the device itself when its events say it is time.
            return
        self.async_update_listeners()
        if event.type in _REFRESH_AFTER:
            self.hass.async_create_task(self.async_request_refresh(), eager_start=True)
