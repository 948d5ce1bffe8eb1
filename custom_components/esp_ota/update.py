"""The firmware update entities: what the device runs against what the feed offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeassistant.components.update import (
    UpdateDeviceClass,
    UpdateEntity,
    UpdateEntityDescription,
    UpdateEntityFeature,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import CONF_CHANNEL, DEFAULT_CHANNEL, DOMAIN
from .coordinator import EspOtaDeviceCoordinator
from .entity import EspOtaEntity, whole_percent
from .espota.feed import Channel, Feed, Release
from .espota.job_record import UpdateStep
from .espota.selection import DeviceFirmware, installable_releases, select_release
from .espota.versions import is_newer
from .feed_coordinator import FeedCoordinator
from .installer import DeviceInstaller, device_firmware
from .runtime import EspOtaConfigEntry

# Installs are limited by the integration's own queue (an option), not per platform: an
# install waits for its device to be verified, which would hold a platform semaphore.
PARALLEL_UPDATES = 0
# Home Assistant shows at most this much of a release summary.
SUMMARY_LIMIT = 255


@dataclass(frozen=True, kw_only=True)
class EspOtaUpdateEntityDescription(UpdateEntityDescription):
    """Which channel an update entity follows (None: the entry's configured channel)."""

    channel: Channel | None


UPDATES = (
    EspOtaUpdateEntityDescription(key="firmware", translation_key="firmware", channel=None),
    EspOtaUpdateEntityDescription(
        key="firmware_beta",
        translation_key="firmware_beta",
        channel=Channel.BETA,
        entity_registry_enabled_default=False,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: EspOtaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One update entity per channel for the entry's device."""
    runtime = entry.runtime_data
    async_add_entities(
        EspOtaUpdateEntity(runtime.device, runtime.feed, runtime.installer, description)
        for description in UPDATES
    )


class EspOtaUpdateEntity(EspOtaEntity, UpdateEntity):
    """The firmware of one ESP32 and the newest release the feed has for it."""

    entity_description: EspOtaUpdateEntityDescription
    _attr_device_class = UpdateDeviceClass.FIRMWARE
    _attr_entity_category = EntityCategory.CONFIG
    _attr_supported_features = (
        UpdateEntityFeature.INSTALL
        | UpdateEntityFeature.PROGRESS
        | UpdateEntityFeature.SPECIFIC_VERSION
        | UpdateEntityFeature.RELEASE_NOTES
    )

    def __init__(
        self,
        coordinator: EspOtaDeviceCoordinator,
        feed: FeedCoordinator | None,
        installer: DeviceInstaller,
        description: EspOtaUpdateEntityDescription,
    ) -> None:
        super().__init__(coordinator, description.key)
        self.entity_description = description
        self._feed = feed
        self._installer = installer
        self._pick: tuple[Feed, tuple[DeviceFirmware, Channel], Release | None] | None = None

    async def async_added_to_hass(self) -> None:
        """Follow the feed and the install's progress as well as the device."""
        await super().async_added_to_hass()
        if self._feed is not None:
            self.async_on_remove(self._feed.async_add_listener(self._handle_coordinator_update))
        self.async_on_remove(
            self.coordinator.async_add_progress_listener(self.async_write_ha_state)
        )

    @property
    def _channel(self) -> Channel:
        if self.entity_description.channel is not None:
            return self.entity_description.channel
        return Channel(self.coordinator.config_entry.options.get(CONF_CHANNEL, DEFAULT_CHANNEL))

    @property
    def _release(self) -> Release | None:
        """The feed's pick for this device on this entity's channel.

        Read at every state write (several per second during a download): the pick is
        kept until the feed, the device's firmware or the channel changes."""
        if self._feed is None or self._feed.data is None:
            return None
        feed = self._feed.data
        key = (device_firmware(self.coordinator.data.info), self._channel)
        cached = self._pick
        if cached is not None and cached[0] is feed and cached[1] == key:
            return cached[2]
        release = select_release(feed, key[0], key[1])
        self._pick = (feed, key, release)
        return release

    @property
    def installed_version(self) -> str:
        """What the device runs; during an install, what it ran (until the new is verified)."""
        return self.coordinator.data.installed_version

    @property
    def in_progress(self) -> bool:
        """True from the press of Install until the job ends, the reboot included."""
        return self.coordinator.data.installing

    @property
    def update_percentage(self) -> int | None:
        """The download's progress in whole percent while an install runs (as the progress
        sensor shows it); None (an indeterminate bar) once the device reboots and is being
        verified, so "100 %" does not sit there."""
        state = self.coordinator.data
        if not state.installing or state.job is None:
            return None
        if state.job.step in (UpdateStep.REBOOTING, UpdateStep.CONFIRMING):
            return None
        return whole_percent(state.job.percentage)

    async def async_install(self, version: str | None, backup: bool, **kwargs: Any) -> None:
        """Install the offered release (or the given version) and wait until it is verified."""
        release = self._release if version is None else self._release_of(version)
        name = self.coordinator.config_entry.title
        if self._feed is None:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="no_feed",
                translation_placeholders={"name": name},
            )
        if release is None:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="no_release",
                translation_placeholders={"name": name, "version": version or ""},
            )
        await self._installer.async_install(release)

    def _release_of(self, version: str) -> Release | None:
        """The release of exactly this version that the device may run (on this channel)."""
        if self._feed is None or self._feed.data is None:
            return None
        releases = installable_releases(
            self._feed.data, device_firmware(self.coordinator.data.info), self._channel,
            include_running=False,
        )  # fmt: skip
        return next((release for release in releases if release.version == version), None)

    @property
    def latest_version(self) -> str:
        """The newest release the device can run; what it runs when none is newer."""
        release = self._release
        if release is None or not is_newer(release.version, self.installed_version):
            return self.installed_version
        return release.version

    @property
    def release_summary(self) -> str | None:
        """The release's short summary."""
        release = self._release
        if release is None or release.summary is None:
            return None
        return release.summary[:SUMMARY_LIMIT]

    @property
    def release_url(self) -> str | None:
        """Where the release notes are."""
        release = self._release
        return release.release_notes_url if release else None

    def version_is_newer(self, latest_version: str, installed_version: str) -> bool:
        """Firmware versions order by the feed's rules (git describe, build numbers)."""
        return is_newer(latest_version, installed_version)

    async def async_release_notes(self) -> str | None:
        """Markdown notes of the offered release."""
        release = self._release
        if release is None:
            return None
        lines = [f"**{release.project} {release.version}** for {release.chip}"]
        if release.summary:
            lines += ["", release.summary]
        if release.published:
            lines += ["", f"Published {release.published.date().isoformat()}."]
        if release.release_notes_url:
            lines += ["", f"[Release notes]({release.release_notes_url})"]
        return "\n".join(lines)
