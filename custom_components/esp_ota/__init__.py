"""ESP OTA: keeps fleets of ESP32 devices on the right firmware.

The device, image, feed and transport logic lives in the Home Assistant free
``espota`` subpackage; this package is the thin Home Assistant layer over it.
"""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers.device_registry import DeviceEntry

from .const import (
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_MAX_PARALLEL_INSTALLS,
    DEFAULT_MAX_PARALLEL_INSTALLS,
    DOMAIN,
)
from .coordinator import EspOtaConfigEntry, EspOtaDeviceCoordinator, EspOtaRuntimeData
from .devices import async_remove_stale_devices, is_live_device
from .espota.feed import Release
from .feed_coordinator import (
    FeedCoordinator,
    async_acquire_feed_coordinator,
    async_release_feed_coordinator,
)
from .firmware import async_acquire_firmware_service, async_release_firmware_service
from .helpers import client_from_data
from .installer import DeviceInstaller

PLATFORMS: list[Platform] = [Platform.SENSOR, Platform.UPDATE]


async def async_setup_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> bool:
    """Connect to the device, join its feed, resume an interrupted install, follow events."""
    coordinator = EspOtaDeviceCoordinator(hass, entry, client_from_data(hass, dict(entry.data)))
    await coordinator.async_config_entry_first_refresh()
    async_remove_stale_devices(hass, entry)
    feed = None
    feed_url = entry.options.get(CONF_FEED_URL)
    # Read once: at unload the options may already hold a new key (an options change
    # reloads the entry), and the coordinator to release is the one acquired here.
    public_key = entry.options.get(CONF_FEED_PUBLIC_KEY) or None
    if feed_url:
        try:
            feed = await async_acquire_feed_coordinator(hass, entry.entry_id, feed_url, public_key)
        except ValueError as err:  # pragma: no cover - the options flow validates the key
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN, translation_key="invalid_public_key"
            ) from err
        entry.async_on_unload(
            lambda: async_release_feed_coordinator(hass, entry.entry_id, feed_url, public_key)
        )
    service = await async_acquire_firmware_service(hass, entry.entry_id)
    service.queue.set_limit(
        entry.entry_id,
        int(entry.options.get(CONF_MAX_PARALLEL_INSTALLS, DEFAULT_MAX_PARALLEL_INSTALLS)),
    )
    installer = DeviceInstaller(hass, entry, coordinator, service)
    installer.set_release_lookup(lambda version, sha256: _find_release(feed, version, sha256))
    coordinator.installer = installer
    entry.runtime_data = EspOtaRuntimeData(device=coordinator, feed=feed, installer=installer)
    coordinator.start_listening()
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    await installer.async_resume()
    return True


def _find_release(feed: FeedCoordinator | None, version: str, sha256: str | None) -> Release | None:
    """The feed's release of this version (and image), for a job resumed after a restart."""
    if feed is None or feed.data is None:
        return None
    for release in feed.data.releases:
        if release.version == version and (sha256 is None or release.sha256 in (None, sha256)):
            return release
    return None


async def async_unload_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> bool:
    """Unload a config entry; a running install stays stored and resumes at the next setup.

    The install is stopped (not ended) and stored before the shared firmware service
    may close; the event listener is a background task of the entry."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.installer.async_stop()
        await async_release_firmware_service(hass, entry.entry_id)
    return unloaded


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: EspOtaConfigEntry, device: DeviceEntry
) -> bool:
    """Let the user remove a stale device of the entry, never the ESP32 it follows."""
    return not is_live_device(entry, device)
