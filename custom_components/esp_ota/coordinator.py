"""The device coordinator: pushed by the device's event stream; polled only while it is down.

Its data, a DeviceState, is the whole truth the device's entities read: the device's last
report, what its events said since, and our install's record. Each change replaces it.
The installer publishes its job's records here (publish_job); the coordinator knows
nothing of the installer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cached_property
from typing import Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_HOST, CONF_MAC, CONF_PORT
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from .const import DOMAIN, FALLBACK_POLL_MAX, FALLBACK_POLL_MIN
from .espota.chips import format_chip_revision
from .espota.device_client import DeviceClient
from .espota.errors import CertificateMismatchError, DeviceError, DeviceUnauthorizedError
from .espota.job_record import UpdateJobRecord, UpdateStep
from .espota.protocol import DeviceEvent, DeviceInfo, EventType, OtaState

_LOGGER = logging.getLogger(__name__)

# The device's job states, as the steps the entities show.
_STEP_OF_STATE: Final[dict[OtaState, UpdateStep]] = {
    OtaState.IDLE: UpdateStep.IDLE,
    OtaState.CONNECTING: UpdateStep.DOWNLOADING,
    OtaState.DOWNLOADING: UpdateStep.DOWNLOADING,
    OtaState.VERIFYING: UpdateStep.VERIFYING,
    OtaState.REBOOTING: UpdateStep.REBOOTING,
    OtaState.SUCCEEDED: UpdateStep.SUCCEEDED,
    OtaState.FAILED: UpdateStep.FAILED,
    OtaState.ABORTED: UpdateStep.FAILED,
}
# Progress events rewrite the entities at most this often (unless the percentage moves).
PROGRESS_WRITE_S: Final = 1.0
# Events that end a phase: read the device's full state afterwards.
_REFRESH_AFTER: Final = frozenset(
    {EventType.FINISH, EventType.ABORT, EventType.UPDATE_BOOT_PARTITION}
)
_STREAMING: Final = frozenset({UpdateStep.DOWNLOADING, UpdateStep.VERIFYING})
# The repair issue raised when a device's certificate changes (one per entry).
CERTIFICATE_ISSUE: Final = "certificate_mismatch"
# A stream that ends this soon after the device's `reboot` event ended for the restart.
REBOOT_ANNOUNCED_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class LiveOta:
    """The device's OTA as it reported and pushed it (whoever started it)."""

    step: UpdateStep = UpdateStep.IDLE
    bytes_written: int = 0
    image_size: int | None = None
    error: str | None = None

    @property
    def percentage(self) -> float | None:
        """Downloaded share of the image, 0-100, while there is a size to divide by."""
        if not self.image_size:
            return None
        return round(min(100.0, 100.0 * self.bytes_written / self.image_size), 1)


def live_ota_of(info: DeviceInfo) -> LiveOta:
    """The OTA a device's own report implies (no live events needed)."""
    last = info.last_ota
    step = _STEP_OF_STATE[last.state]
    if last.state is OtaState.SUCCEEDED and last.target_version not in (None, info.version):
        step = UpdateStep.ROLLED_BACK  # it switched, then the bootloader switched back
    return LiveOta(step, last.bytes_written, last.image_size, last.error)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What one device's entities show: replaced at every change, never changed."""

    info: DeviceInfo  # the device's last report
    live: LiveOta  # its OTA, from that report and the events pushed since
    last_event: DeviceEvent | None = None
    job: UpdateJobRecord | None = None  # our install's record: the running one, or the last
    installing: bool = False  # our install is queued or running

    @property
    def shown_job(self) -> UpdateJobRecord | None:
        """The install's record while it runs, or its end if the device shows no newer OTA."""
        job = self.job
        if job is None or self.installing or job.ota_id in (None, self.info.last_ota.ota_id):
            return job
        return None

    @property
    def step(self) -> UpdateStep:
        """Where the device's update is: the install's step, else the device's own report."""
        job = self.shown_job
        return job.step if job is not None else self.live.step

    @property
    def percentage(self) -> float | None:
        """How far the download is, 0-100."""
        job = self.shown_job
        if job is not None and self.installing:
            return job.percentage
        return self.live.percentage

    @property
    def installed_version(self) -> str:
        """What the device runs; during an install, what it ran (until the new is verified)."""
        if self.installing and self.job is not None:
            return self.job.from_version
        return self.info.version

    @property
    def device_may_be_away(self) -> bool:
        """An install is under way and has not ended: the device going away is its business
        (its reboot; the job decides, within its bounds, what an absence means)."""
        return self.installing and self.job is not None and not self.job.finished


class EspOtaDeviceCoordinator(DataUpdateCoordinator[DeviceState]):
    """Keeps one device's state: events pushed by the device, polling only while they stop.

    An idle device costs one open TLS connection (its event stream) and its heartbeat: no
    request, no handshake. When the stream goes down (it ended, or stayed silent for two
    heartbeats), the device is read at once, so a device that went away is unavailable
    within two heartbeats and one request's timeout; then it is polled with a growing
    pause until the stream is back, and read once more then (what the stream missed)."""

    config_entry: ConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry,
        client: DeviceClient,
        stored_job: UpdateJobRecord | None = None,
    ) -> None:
        super().__init__(
            hass,
            _LOGGER,
            config_entry=entry,
            name=f"ESP OTA {entry.title}",
            update_interval=None,  # no polling while the event stream is up
        )
        self.client = client
        self._stored_job = stored_job  # until the first report makes the first state
        self._taps: set[asyncio.Queue[DeviceEvent]] = set()
        self._progress_listeners: list[CALLBACK_TYPE] = []
        self._progress_written_at = 0.0
        self._listener: asyncio.Task[None] | None = None
        self.stream_up = False
        self._stream_went_down = False  # since the last time it was up
        self._fallback_poll = FALLBACK_POLL_MIN  # the next pause while the stream is down
        self._reboot_announced_at = -REBOOT_ANNOUNCED_S  # when the last `reboot` event came

    @cached_property
    def device_info(self) -> dr.DeviceInfo:
        """The device as its entities register it (made once, from the first report)."""
        entry = self.config_entry
        info = self.data.info
        return dr.DeviceInfo(
            identifiers={(DOMAIN, entry.data[CONF_MAC])},
            connections={(dr.CONNECTION_NETWORK_MAC, entry.data[CONF_MAC])},
            name=entry.title,
            manufacturer="Espressif",
            model=info.chip.upper().replace("ESP32", "ESP32-").rstrip("-"),
            model_id=info.project,
            sw_version=info.version,
            hw_version=format_chip_revision(info.chip_revision),
            configuration_url=f"https://{entry.data[CONF_HOST]}:{entry.data[CONF_PORT]}/",
        )

    @property
    def certificate_issue_id(self) -> str:
        """The repair issue raised when the device's certificate changes."""
        return f"{CERTIFICATE_ISSUE}_{self.config_entry.entry_id}"

    async def _async_update_data(self) -> DeviceState:
        if not self.stream_up and self._listener is not None:
            # Polling is the fallback while the stream is down, with a growing pause.
            self.update_interval = self._next_fallback_pause()
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
                # repairs.py: reconfigure, or trust the new certificate once its
                # fingerprint was shown and confirmed
                is_fixable=True,
                severity=ir.IssueSeverity.ERROR,
                data={"entry_id": self.config_entry.entry_id},
                translation_key="certificate_mismatch",  # literal: checked against strings
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
            if self.data is not None and self.data.device_may_be_away:
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
        state: DeviceState | None = self.data  # None until the first refresh
        if state is not None and info.version != state.info.version:
            self._record_firmware_version(info.version)
        if state is None:
            # The stored job goes into the first state; from then on that state owns it.
            job, self._stored_job = self._stored_job, None
            return DeviceState(info=info, live=live_ota_of(info), job=job)
        # A download's live progress comes from its events: a poll does not replace it.
        live = state.live if state.live.step in _STREAMING else live_ota_of(info)
        return replace(state, info=info, live=live)

    def _record_firmware_version(self, version: str) -> None:
        """The device page shows the firmware the device runs now (entities set it only
        when they are made)."""
        registry = dr.async_get(self.hass)
        mac = self.config_entry.data[CONF_MAC]
        if device := registry.async_get_device_by_identifier(
            (DOMAIN, mac), self.config_entry.entry_id
        ):
            registry.async_update_device(device.id, sw_version=version)

    @callback
    def publish_job(self, job: UpdateJobRecord, *, installing: bool, progress_only: bool) -> None:
        """The installer's new record (and whether its install runs): the entities see it.

        A move of the download's progress rewrites only what shows progress (50 devices
        at 1 % steps would be thousands of state writes); any other change, every entity."""
        self.data = replace(self.data, job=job, installing=installing)
        if progress_only:
            for listener in list(self._progress_listeners):
                listener()
        else:
            self.async_update_listeners()

    @callback
    def async_add_progress_listener(self, listener: CALLBACK_TYPE) -> Callable[[], None]:
        """Call `listener` when only an install's progress moved; returns how to stop."""
        self._progress_listeners.append(listener)
        return lambda: self._progress_listeners.remove(listener)

    def start_listening(self) -> None:
        """Follow the device's event stream for as long as the entry is loaded."""
        self._listener = self.config_entry.async_create_background_task(
            self.hass, self._listen(), name=f"esp_ota events {self.config_entry.title}"
        )

    async def _listen(self) -> None:
        try:
            async for event in self.client.events(on_stream=self._stream_changed):
                self.handle_event(event)
                for tap in self._taps:
                    tap.put_nowait(event)
                # A burst of buffered events is read without the stream ever waiting:
                # let the rest of Home Assistant run between two of them.
                await asyncio.sleep(0)
        except DeviceUnauthorizedError, CertificateMismatchError:
            # The stream is over for good: reading the device raises the matching reauth
            # flow or repair issue (and polls while the entry stays loaded).
            self.stream_up = False
            await self.async_request_refresh()

    @callback
    def _stream_changed(self, up: bool) -> None:
        """The stream came up or went down: stop polling, or read the device and poll.

        Up after a gap (a restart, the network): the device may have changed meanwhile,
        so it is read at once, unless an install is reading it itself; the first stream
        after the first read needs no read of its own. Down: read at once, so a device
        that went away is unavailable now, not at some later poll; after the device said
        it reboots, at the first fallback poll instead (the stream's return reads it
        sooner), so a restart shows as one, not as the device gone."""
        self.stream_up = up
        if up:
            gap, self._stream_went_down = self._stream_went_down, False
            self.update_interval = None
            self._async_unsub_refresh()  # a fallback poll still scheduled is not needed
            self._fallback_poll = FALLBACK_POLL_MIN
            if gap and not self.data.installing:
                # Not debounced: the read that ended the gap may be seconds old. The
                # stream's reconnection pauses already bound how often this happens.
                self.hass.async_create_task(self.async_refresh(), eager_start=True)
            return
        self._stream_went_down = True
        if time.monotonic() - self._reboot_announced_at < REBOOT_ANNOUNCED_S:
            self.update_interval = self._next_fallback_pause()
            self._schedule_refresh()
            return
        self.hass.async_create_task(self.async_request_refresh(), eager_start=True)

    def _next_fallback_pause(self) -> timedelta:
        """The pause before the next poll while the stream is down: twice the last one."""
        pause = self._fallback_poll
        self._fallback_poll = min(pause * 2, FALLBACK_POLL_MAX)
        return pause

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

    def handle_event(self, event: DeviceEvent) -> None:
        """Fold one pushed event into the live OTA."""
        state = self.data
        live = state.live
        match event.type:
            case EventType.START | EventType.CONNECTED:
                live = LiveOta(step=UpdateStep.DOWNLOADING)
            case EventType.WRITE_FLASH:
                live = replace(
                    live,
                    step=UpdateStep.DOWNLOADING,
                    bytes_written=event.bytes_written or live.bytes_written,
                    image_size=event.image_size or live.image_size,
                )
            case EventType.UPDATE_BOOT_PARTITION:
                live = replace(live, step=UpdateStep.VERIFYING)
            case EventType.FINISH if event.error:
                live = replace(live, step=UpdateStep.FAILED, error=event.error)
            case EventType.ABORT:
                live = replace(live, step=UpdateStep.FAILED, error=event.error)
            case EventType.REBOOT if live.step is not UpdateStep.FAILED:
                live = replace(live, step=UpdateStep.REBOOTING)
            case _:
                pass
        self.data = replace(state, live=live, last_event=event)
        if event.type is EventType.REBOOT:
            self._reboot_announced_at = time.monotonic()
        if state.installing:
            # The install shows its own steps and progress, publishes at its pace, and
            # reads the device itself when its events say it is time.
            return
        if event.type is EventType.WRITE_FLASH and not self._progress_moved(state.live, live):
            return
        self.async_update_listeners()
        if event.type in _REFRESH_AFTER:
            self.hass.async_create_task(self.async_request_refresh(), eager_start=True)

    def _progress_moved(self, before: LiveOta, after: LiveOta) -> bool:
        """A device reports every 4 KiB: rewrite the entities when the whole percentage
        moves, or a second has passed, not hundreds of times."""
        now = time.monotonic()
        if (
            before.percentage is not None
            and after.percentage is not None
            and int(before.percentage) == int(after.percentage)
            and now - self._progress_written_at < PROGRESS_WRITE_S
        ):
            return False
        self._progress_written_at = now
        return True
