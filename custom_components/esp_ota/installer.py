"""One device's installs: runs the library's update job, stores it, reports how it ended.

The job itself (steps, timeouts, verification after the reboot, resuming) is the HA-free
`espota.update_job`; this module gives it an image source (the cache and the firmware
server, or the feed's own URL in direct mode), a queue slot, storage, and turns its end
into what Home Assistant users see: the entity's state, an event on the bus (and so the
logbook), repair issues, and a translated error from the install action.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from homeassistant.const import CONF_HOST, CONF_PORT, Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir

from .const import (
    CONF_DIRECT_DOWNLOAD,
    CONF_REBOOT_TIMEOUT,
    DEFAULT_REBOOT_TIMEOUT,
    DOMAIN,
    DOWNLOAD_TOKEN_TTL_S,
    EVENT_UPDATE_FINISHED,
)
from .coordinator import EspOtaConfigEntry, EspOtaDeviceCoordinator
from .espota.direct_download import fetch_server_certificate_pem
from .espota.errors import EspOtaError, FirmwareDownloadError
from .espota.feed import Release
from .espota.firmware_server import FirmwareServer, Grant
from .espota.firmware_store import StoredImage
from .espota.selection import DeviceFirmware
from .espota.update_job import (
    FailureReason,
    JobTimeouts,
    PreparedImage,
    UpdateJob,
    UpdateJobRecord,
    UpdateStep,
    new_record,
)
from .firmware import FirmwareService, source_address_for

_LOGGER = logging.getLogger(__name__)

# The job's bounds; the reboot limit comes from each entry's options.
INSTALL_TIMEOUTS = JobTimeouts()
ROLLED_BACK_ISSUE = "update_rolled_back"
NOT_BACK_ISSUE = "update_not_back"


def device_firmware(coordinator: EspOtaDeviceCoordinator) -> DeviceFirmware:
    """What selection and the image checks need to know of the device."""
    info = coordinator.data
    return DeviceFirmware(
        project=info.project,
        chip=info.chip,
        chip_revision=info.chip_revision,
        version=info.version,
        secure_version=info.secure_version,
    )


class HomeAssistantImageSource:
    """Prepares an image for one job: verified into the cache, then served or pointed to."""

    def __init__(
        self,
        installer: DeviceInstaller,
        release: Callable[[], Release | None],
        firmware: DeviceFirmware,
    ) -> None:
        self._installer = installer
        self._release = release
        self._firmware = firmware
        self._server: FirmwareServer | None = None
        self._grant: Grant | None = None
        self._image: StoredImage | None = None

    async def _fetch(self) -> tuple[Release, StoredImage]:
        release = self._release()
        if release is None:
            raise FirmwareDownloadError("the feed no longer lists this release", url="")
        store = self._installer.service.store
        image = await store.fetch(release, self._firmware)
        store.pin(image)
        self._image = image
        return release, image

    async def _advertised_host(self) -> str:
        entry = self._installer.entry
        return await self._installer.hass.async_add_executor_job(
            source_address_for, entry.data[CONF_HOST], entry.data[CONF_PORT]
        )

    async def prepare(self) -> PreparedImage:
        """Download and verify the release, then say where the device gets it."""
        release, image = await self._fetch()
        direct = self._installer.entry.options.get(CONF_DIRECT_DOWNLOAD, False)
        version = release.version
        app_elf_sha256 = image.info.app.app_elf_sha256
        if direct:
            cert_pem = await fetch_server_certificate_pem(release.url)
            return PreparedImage(
                url=release.url,
                headers={},
                cert_pem=cert_pem,
                sha256=image.sha256,
                size=image.size,
                version=version,
                app_elf_sha256=app_elf_sha256,
                download={"direct": True},
            )
        host = await self._advertised_host()
        server = await self._installer.service.async_server_for(host)
        grant = server.grant(image, device_id=self._installer.mac, ttl_s=DOWNLOAD_TOKEN_TTL_S)
        self._server, self._grant = server, grant
        return PreparedImage(
            url=server.url(grant, host),
            headers=server.headers(grant),
            cert_pem=server.cert_pem,
            sha256=image.sha256,
            size=image.size,
            version=version,
            app_elf_sha256=app_elf_sha256,
            download={"token": grant.token, "expires_at": grant.expires_at, "host": host},
        )

    async def rearm(self, record: UpdateJobRecord) -> None:
        """After a restart mid-download: serve the same image under the same token again,
        so the device's resumed requests (Range: bytes=N-) are answered."""
        download = record.download or {}
        token = download.get("token")
        if not isinstance(token, str) or record.step not in (
            UpdateStep.STARTING,
            UpdateStep.DOWNLOADING,
            UpdateStep.VERIFYING,
        ):
            return
        try:
            _, image = await self._fetch()
        except EspOtaError as err:  # the job then ends as the device reports it
            _LOGGER.warning("Cannot serve %s to %s again: %s", record.to_version, record.mac, err)
            return
        server = await self._installer.service.async_server_for(str(download.get("host")))
        self._server = server
        self._grant = server.grant(
            image,
            device_id=self._installer.mac,
            ttl_s=DOWNLOAD_TOKEN_TTL_S,
            token=token,
            expires_at=float(download.get("expires_at") or 0) or None,
        )

    def bytes_served(self) -> int | None:
        """Bytes the firmware server has sent the device for this job."""
        if self._server is None or self._grant is None:
            return None
        return self._server.bytes_served(self._grant.token)

    def close(self) -> None:
        """The job ended: the token dies, the image may be evicted again."""
        if self._server is not None and self._grant is not None:
            self._server.revoke(self._grant.token)
        self._grant = None
        if self._image is not None:
            self._installer.service.store.unpin(self._image)
            self._image = None


class DeviceInstaller:
    """Runs one device's update jobs, one at a time, through the shared queue."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: EspOtaConfigEntry,
        coordinator: EspOtaDeviceCoordinator,
        service: FirmwareService,
    ) -> None:
        self.hass = hass
        self.entry = entry
        self.coordinator = coordinator
        self.service = service
        self.mac: str = entry.unique_id or ""
        self.record: UpdateJobRecord | None = service.stored_job(self.mac)
        self._task: asyncio.Task[UpdateJobRecord] | None = None
        self._progress_listeners: list[Callable[[], None]] = []
        self._notified_step: UpdateStep | None = None
        self._release_lookup: Callable[[str, str | None], Release | None] = lambda _v, _s: None

    @property
    def in_progress(self) -> bool:
        """Whether an install of this device is queued or running."""
        return self._task is not None and not self._task.done()

    @property
    def device_may_be_away(self) -> bool:
        """An install is under way and has not ended: the device going away is its business
        (its reboot; the job decides, within its bounds, what an absence means)."""
        return self.in_progress and self.record is not None and not self.record.finished

    def set_release_lookup(self, lookup: Callable[[str, str | None], Release | None]) -> None:
        """How to find a release by version (and SHA-256) in the device's feed."""
        self._release_lookup = lookup

    def _timeouts(self) -> JobTimeouts:
        reboot_s = float(self.entry.options.get(CONF_REBOOT_TIMEOUT, DEFAULT_REBOOT_TIMEOUT))
        return dataclasses.replace(INSTALL_TIMEOUTS, reboot_s=reboot_s)

    async def async_install(self, release: Release) -> UpdateJobRecord:
        """Install `release` and wait for the end; a failure raises a translated error."""
        if self.in_progress:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="install_running",
                translation_placeholders={"name": self.entry.title},
            )
        info = self.coordinator.data
        record = new_record(
            mac=self.mac,
            from_version=info.version,
            to_version=release.version,
            from_partition=info.running_partition,
        )
        self.record = record
        self.service.save_job(record, now=True)
        firmware = device_firmware(self.coordinator)

        def this_release() -> Release | None:
            return release

        source = HomeAssistantImageSource(self, this_release, firmware)
        final = await asyncio.shield(self._start(record, source))
        if final.step is not UpdateStep.SUCCEEDED:
            raise install_error(final, self.entry.title)
        return final

    async def async_resume(self) -> None:
        """Pick up a job that was running when Home Assistant stopped (never start it anew)."""
        record = self.record
        if record is None or record.finished or self.in_progress:
            return
        _LOGGER.info(
            "Resuming the update of %s to %s at step %s",
            self.entry.title,
            record.to_version,
            record.step,
        )
        firmware = device_firmware(self.coordinator)
        source = HomeAssistantImageSource(
            self, lambda: self._release_lookup(record.to_version, record.sha256 or None), firmware
        )
        await source.rearm(record)
        self._start(record, source)

    async def async_stop(self) -> None:
        """Stop following the install (Home Assistant stops, the entry unloads); stored, it
        resumes at the next setup."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.service.async_flush()

    def _start(
        self, record: UpdateJobRecord, source: HomeAssistantImageSource
    ) -> asyncio.Task[UpdateJobRecord]:
        self._task = self.entry.async_create_background_task(
            self.hass,
            self._run(record, source),
            name=f"esp_ota install {self.entry.title}",
        )
        self._task.add_done_callback(self._job_done)
        self.coordinator.async_update_listeners()
        return self._task

    async def _run(
        self, record: UpdateJobRecord, source: HomeAssistantImageSource
    ) -> UpdateJobRecord:
        job = UpdateJob(
            self.coordinator.client,
            record,
            source,
            on_change=self._changed,
            timeouts=self._timeouts(),
            events=self.coordinator.events,
        )
        try:
            async with self.service.queue.slot():
                final = await job.run()
        except asyncio.CancelledError:
            # Home Assistant stops or the entry unloads: the record stays resumable.
            self.service.save_job(job.record, now=True)
            raise
        finally:
            source.close()
        self.record = final
        self.service.save_job(final, now=True)
        # Fresh device state first: automations triggered by the event see the result.
        await self.coordinator.async_refresh()
        return final

    def _job_done(self, task: asyncio.Task[UpdateJobRecord]) -> None:
        """Report the end once the task is over, so nothing reads "in progress" any more."""
        if task.cancelled() or task.exception() is not None:
            self.coordinator.async_update_listeners()
            return
        self._finished(task.result())

    def async_add_progress_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the install's progress moves; returns how to stop."""
        self._progress_listeners.append(listener)
        return lambda: self._progress_listeners.remove(listener)

    def _changed(self, record: UpdateJobRecord) -> None:
        # The job changes its record in place: compare with the step last passed on.
        step_changed = record.step is not self._notified_step
        self._notified_step = record.step
        self.record = record
        self.service.save_job(record, now=step_changed)
        if step_changed:
            self.coordinator.async_update_listeners()
            return
        # Progress only: rewrite what shows it, not every entity of the device (50
        # devices at 1 % steps would be thousands of state writes).
        for listener in list(self._progress_listeners):
            listener()

    def _finished(self, record: UpdateJobRecord) -> None:
        """Tell the user: the bus (automations, logbook), repairs, fresh device state."""
        device = dr.async_get(self.hass).async_get_device_by_identifier(
            (DOMAIN, self.mac), self.entry.entry_id
        )
        entity_id = er.async_get(self.hass).async_get_entity_id(
            Platform.UPDATE, DOMAIN, f"{self.mac}_firmware"
        )
        data: dict[str, Any] = {
            "device_id": device.id if device else None,
            "entity_id": entity_id,
            "entry_id": self.entry.entry_id,
            "name": self.entry.title,
            "mac": self.mac,
            "from_version": record.from_version,
            "to_version": record.to_version,
            "result": record.step.value,
            "reason": record.reason.value if record.reason else None,
            "error": record.error,
        }
        self.hass.bus.async_fire(EVENT_UPDATE_FINISHED, data)
        placeholders = {
            "name": self.entry.title,
            "version": record.to_version,
            "from_version": record.from_version,
        }
        for issue, reason in (
            (ROLLED_BACK_ISSUE, FailureReason.ROLLED_BACK),
            (NOT_BACK_ISSUE, FailureReason.NOT_BACK),
        ):
            issue_id = f"{issue}_{self.entry.entry_id}"
            if record.reason is reason:
                ir.async_create_issue(
                    self.hass,
                    DOMAIN,
                    issue_id,
                    is_fixable=False,
                    severity=ir.IssueSeverity.ERROR,
                    translation_key=issue,
                    translation_placeholders=placeholders,
                )
            elif record.step is UpdateStep.SUCCEEDED:
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        self.coordinator.async_update_listeners()


def install_error(record: UpdateJobRecord, name: str) -> HomeAssistantError:
    """The translated error the install action raises for a job that did not succeed."""
    reason = record.reason or FailureReason.INTERRUPTED
    detail = record.error or ""
    if record.message:
        detail = f"{detail} ({record.message})" if detail else record.message
    return HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key=f"install_{reason.value}",
        translation_placeholders={
            "name": name,
            "version": record.to_version,
            "error": detail or reason.value,
        },
    )
