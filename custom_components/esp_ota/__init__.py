"""ESP OTA: keeps fleets of ESP32 devices on the right firmware.

The device, image, feed and transport logic lives in the Home Assistant free
``espota`` subpackage; this package is the thin Home Assistant layer over it.
"""

from __future__ import annotations

from functools import partial

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.device_registry import DeviceEntry
from homeassistant.helpers.typing import ConfigType

from .const import (
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_MAX_PARALLEL_INSTALLS,
    DEFAULT_MAX_PARALLEL_INSTALLS,
    DOMAIN,
)
from .coordinator import CERTIFICATE_ISSUE, EspOtaDeviceCoordinator
from .devices import async_remove_stale_devices, is_live_device
from .espota.feed import Release
from .feed_coordinator import FEED_COORDINATORS, FeedCoordinator, FeedCoordinators
from .firmware import FIRMWARE_SERVICE, FirmwareService
from .helpers import client_from_data
from .installer import NOT_BACK_ISSUE, ROLLED_BACK_ISSUE, DeviceInstaller
from .runtime import EspOtaConfigEntry, EspOtaRuntimeData

PLATFORMS: list[Platform] = [Platform.SENSOR, Platform.UPDATE]
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Make what every entry shares, once: the firmware service and the feed coordinators."""
    await async_setup_shared(hass)
    return True


async def async_setup_shared(hass: HomeAssistant) -> None:
    """The shared services, the stored update jobs read (also a restart's, in tests)."""
    service = FirmwareService(hass)
    await service.async_load()
    hass.data[FIRMWARE_SERVICE] = service
    hass.data[FEED_COORDINATORS] = FeedCoordinators(hass)


async def async_setup_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> bool:
    """Connect to the device, join its feed, resume an interrupted install, follow events."""
    service = hass.data[FIRMWARE_SERVICE]
    client = client_from_data(hass, dict(entry.data))
    coordinator = EspOtaDeviceCoordinator(
        hass, entry, client, stored_job=service.jobs.get(entry.unique_id or "")
    )
    await coordinator.async_config_entry_first_refresh()
    async_remove_stale_devices(hass, entry)
    feed = await _async_join_feed(hass, entry)
    service.add_user(
        entry.entry_id,
        int(entry.options.get(CONF_MAX_PARALLEL_INSTALLS, DEFAULT_MAX_PARALLEL_INSTALLS)),
    )
    installer = DeviceInstaller(
        hass,
        entry,
        coordinator,
        client=client,
        store=service.store,
        queue=service.queue,
        jobs=service.jobs,
        server_for=service.async_server_for,
        find_release=partial(_find_release, feed),
    )
    entry.runtime_data = EspOtaRuntimeData(device=coordinator, feed=feed, installer=installer)
    coordinator.start_listening()
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    await installer.async_resume()
    return True


async def _async_join_feed(hass: HomeAssistant, entry: EspOtaConfigEntry) -> FeedCoordinator | None:
    """The shared coordinator of the entry's feed (None without one), left at unload."""
    feed_url = entry.options.get(CONF_FEED_URL)
    if not feed_url:
        return None
    # Read once: at unload the options may already hold a new key (an options change
    # reloads the entry), and the coordinator to release is the one acquired here.
    public_key = entry.options.get(CONF_FEED_PUBLIC_KEY) or None
    feeds = hass.data[FEED_COORDINATORS]
    try:
        feed = await feeds.async_acquire(entry.entry_id, feed_url, public_key)
    except ValueError as err:  # pragma: no cover - the options flow validates the key
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN, translation_key="invalid_public_key"
        ) from err
    entry.async_on_unload(partial(feeds.async_release, entry.entry_id, feed_url, public_key))
    return feed


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

    The install is stopped (not ended) and stored before the shared firmware server may
    stop; the event listener is a background task of the entry."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.installer.async_stop()
        await hass.data[FIRMWARE_SERVICE].async_remove_user(entry.entry_id)
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> None:
    """The device is gone from Home Assistant: so are its repair issues."""
    for issue in (ROLLED_BACK_ISSUE, NOT_BACK_ISSUE, CERTIFICATE_ISSUE):
        ir.async_delete_issue(hass, DOMAIN, f"{issue}_{entry.entry_id}")


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: EspOtaConfigEntry, device: DeviceEntry
) -> bool:
    """Let the user remove a stale device of the entry, never the ESP32 it follows."""
    return not is_live_device(entry, device)
