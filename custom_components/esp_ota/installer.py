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
from collections.abc import Awaitable, Callable
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
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
from .coordinator import EspOtaDeviceCoordinator
from .espota.device_client import DeviceClient
from .espota.direct_download import fetch_server_certificate_pem
from .espota.errors import EspOtaError, FirmwareDownloadError
from .espota.feed import Release
from .espota.firmware_server import FirmwareServer, Grant
from .espota.firmware_store import FirmwareStore, StoredImage
from .espota.image_source import PreparedImage
from .espota.job_record import (
    DownloadGrant,
    FailureReason,
    UpdateJobRecord,
    UpdateStep,
    new_record,
)
from .espota.protocol import DeviceInfo
from .espota.selection import DeviceFirmware
from .espota.update_job import JobTimeouts, UpdateJob
from .firmware import InstallQueue, StoredJobs, source_address_for

_LOGGER = logging.getLogger(__name__)

# The job's bounds; the reboot limit comes from each entry's options.
INSTALL_TIMEOUTS = JobTimeouts()
ROLLED_BACK_ISSUE = "update_rolled_back"
NOT_BACK_ISSUE = "update_not_back"
_REARMED_AT: Final = frozenset({UpdateStep.STARTING, UpdateStep.DOWNLOADING, UpdateStep.VERIFYING})

type ServerFor = Callable[[str], Awaitable[FirmwareServer]]
type FindRelease = Callable[[str, str | None], Release | None]


def device_firmware(info: DeviceInfo) -> DeviceFirmware:
    """What selection and the image checks need to know of the device."""
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
        *,
        release: Callable[[], Release | None],
        firmware: DeviceFirmware,
        store: FirmwareStore,
        server_for: ServerFor,
        advertised_host: Callable[[], Awaitable[str]],
        device_id: str,
        direct: bool,
    ) -> None:
        self._release = release
        self._firmware = firmware
        self._store = store
        self._server_for = server_for
        self._advertised_host = advertised_host
        self._device_id = device_id
        self._direct = direct
        self._server: FirmwareServer | None = None
        self._grant: Grant | None = None
        self._image: StoredImage | None = None

    async def _fetch(self) -> tuple[Release, StoredImage]:
        release = self._release()
        if release is None:
            raise FirmwareDownloadError("the feed no longer lists this release", url="")
        image = await self._store.fetch(release, self._firmware)
        self._store.pin(image)
        self._image = image
        return release, image

    async def prepare(self) -> PreparedImage:
        """Download and verify the release, then say where the device gets it."""
        release, image = await self._fetch()
        version = release.version
        app_elf_sha256 = image.info.app.app_elf_sha256
        if self._direct:
            cert_pem = await fetch_server_certificate_pem(release.url)
            return PreparedImage(
                url=release.url,
                headers={},
                cert_pem=cert_pem,
                sha256=image.sha256,
                size=image.size,
                version=version,
                app_elf_sha256=app_elf_sha256,
            )
        host = await self._advertised_host()
        server = await self._server_for(host)
        grant = server.grant(image, device_id=self._device_id, ttl_s=DOWNLOAD_TOKEN_TTL_S)
        self._server, self._grant = server, grant
        return PreparedImage(
            url=server.url(grant, host),
            headers=server.headers(grant),
            cert_pem=server.cert_pem,
            sha256=image.sha256,
            size=image.size,
            version=version,
            app_elf_sha256=app_elf_sha256,
            download=DownloadGrant(token=grant.token, expires_at=grant.expires_at, host=host),
        )

    async def rearm(self, record: UpdateJobRecord) -> None:
        """After a restart mid-download: serve the same image under the same token again,
        so the device's resumed requests (Range: bytes=N-) are answered."""
        download = record.download
        if download is None or record.step not in _REARMED_AT:
            return
        try:
            _, image = await self._fetch()
        except EspOtaError as err:  # the job then ends as the device reports it
            _LOGGER.warning("Cannot serve %s to %s again: %s", record.to_version, record.mac, err)
            return
        server = await self._server_for(download.host)
        self._server = server
        self._grant = server.grant(
            image,
            device_id=self._device_id,
            ttl_s=DOWNLOAD_TOKEN_TTL_S,
            token=download.token,
            expires_at=download.expires_at or None,
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
            self._store.unpin(self._image)
            self._image = None


class DeviceInstaller:
    """Runs one device's update jobs, one at a time, through the shared queue, and
    publishes each record through the device's coordinator (the entities' one source)."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry,
        coordinator: EspOtaDeviceCoordinator,
        *,
        client: DeviceClient,
        store: FirmwareStore,
        queue: InstallQueue,
        jobs: StoredJobs,
        server_for: ServerFor,
        find_release: FindRelease,
    ) -> None:
        self.hass = hass
        self.entry = entry
        self.mac: str = entry.unique_id or ""
        self._coordinator = coordinator
        self._client = client
        self._store = store
        self._queue = queue
        self._jobs = jobs
        self._server_for = server_for
        self._find_release = find_release
        self._task: asyncio.Task[UpdateJobRecord] | None = None
        self._published_step: UpdateStep | None = None

    @property
    def in_progress(self) -> bool:
        """Whether an install of this device is queued or running."""
        return self._task is not None and not self._task.done()

    def _timeouts(self) -> JobTimeouts:
        reboot_s = float(self.entry.options.get(CONF_REBOOT_TIMEOUT, DEFAULT_REBOOT_TIMEOUT))
        return dataclasses.replace(INSTALL_TIMEOUTS, reboot_s=reboot_s)

    async def _advertised_host(self) -> str:
        """This machine's address on the route to the device."""
        data = self.entry.data
        return await self.hass.async_add_executor_job(
            source_address_for, data[CONF_HOST], data[CONF_PORT]
        )

    def _image_source(
        self, release: Callable[[], Release | None], info: DeviceInfo
    ) -> HomeAssistantImageSource:
        return HomeAssistantImageSource(
            release=release,
            firmware=device_firmware(info),
            store=self._store,
            server_for=self._server_for,
            advertised_host=self._advertised_host,
            device_id=self.mac,
            direct=bool(self.entry.options.get(CONF_DIRECT_DOWNLOAD, False)),
        )

    async def async_install(self, release: Release) -> UpdateJobRecord:
        """Install `release` and wait for the end; a failure raises a translated error."""
        if self.in_progress:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="install_running",
                translation_placeholders={"name": self.entry.title},
            )
        info = self._coordinator.data.info
        record = new_record(
            mac=self.mac,
            from_version=info.version,
            to_version=release.version,
            from_partition=info.running_partition,
        )
        self._jobs.save(record, now=True)

        def this_release() -> Release | None:
            return release

        source = self._image_source(this_release, info)
        final = await asyncio.shield(self._start(record, source))
        if final.step is not UpdateStep.SUCCEEDED:
            raise install_error(final, self.entry.title)
        return final

    async def async_resume(self) -> None:
        """Pick up a job that was running when Home Assistant stopped (never start it anew)."""
        state = self._coordinator.data
        record = state.job
        if record is None or record.finished or self.in_progress:
            return
        _LOGGER.info(
            "Resuming the update of %s to %s at step %s",
            self.entry.title,
            record.to_version,
            record.step,
        )
        source = self._image_source(
            lambda: self._find_release(record.to_version, record.sha256 or None), state.info
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
        await self._jobs.async_flush()

    def _start(
        self, record: UpdateJobRecord, source: HomeAssistantImageSource
    ) -> asyncio.Task[UpdateJobRecord]:
        # Published first: the task starts eagerly and may publish its next step at once.
        self._published_step = record.step
        self._coordinator.publish_job(record, installing=True, progress_only=False)
        self._task = self.entry.async_create_background_task(
            self.hass,
            self._run(record, source),
            name=f"esp_ota install {self.entry.title}",
        )
        self._task.add_done_callback(self._job_done)
        return self._task

    async def _run(
        self, record: UpdateJobRecord, source: HomeAssistantImageSource
    ) -> UpdateJobRecord:
        job = UpdateJob(
            self._client,
            record,
            source,
            on_change=self._changed,
            timeouts=self._timeouts(),
            events=self._coordinator.events,
        )
        try:
            async with self._queue.slot():
                final = await job.run()
        except asyncio.CancelledError:
            # Home Assistant stops or the entry unloads: the record stays resumable.
            self._jobs.save(job.record, now=True)
            raise
        finally:
            source.close()
        self._jobs.save(final, now=True)
        # Fresh device state first: automations triggered by the event see the result.
        await self._coordinator.async_refresh()
        return final

    def _changed(self, record: UpdateJobRecord) -> None:
        step_changed = record.step is not self._published_step
        self._published_step = record.step
        self._jobs.save(record, now=step_changed)
        self._coordinator.publish_job(record, installing=True, progress_only=not step_changed)

    def _job_done(self, task: asyncio.Task[UpdateJobRecord]) -> None:
        """Report the end once the task is over, so nothing reads "in progress" any more."""
        if task.cancelled() or task.exception() is not None:
            job = self._coordinator.data.job
            if job is not None:
                self._coordinator.publish_job(job, installing=False, progress_only=False)
            return
        self._finished(task.result())

    def _finished(self, record: UpdateJobRecord) -> None:
        """Tell the user: the bus (automations, logbook), repairs, the entities."""
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
                    # repairs.py: skip the release or install it again; check again
                    is_fixable=True,
                    severity=ir.IssueSeverity.ERROR,
                    translation_key=issue,
                    translation_placeholders=placeholders,
                    data={"entry_id": self.entry.entry_id, "version": record.to_version},
                )
            elif record.step is UpdateStep.SUCCEEDED:
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        self._coordinator.publish_job(record, installing=False, progress_only=False)


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
