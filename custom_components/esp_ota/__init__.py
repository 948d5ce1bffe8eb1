"""ESP OTA: keeps fleets of ESP32 devices on the right firmware.

The device, image, feed and transport logic lives in the Home Assistant free
``espota`` subpackage; this package is the thin Home Assistant layer over it.
"""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady

from .const import CONF_FEED_PUBLIC_KEY, CONF_FEED_URL, DOMAIN
from .coordinator import EspOtaConfigEntry, EspOtaDeviceCoordinator, EspOtaRuntimeData
from .feed_coordinator import async_acquire_feed_coordinator, async_release_feed_coordinator
from .helpers import client_from_data

PLATFORMS: list[Platform] = [Platform.SENSOR, Platform.UPDATE]


async def async_setup_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> bool:
    """Connect to the device, join its feed, and start following its events."""
    coordinator = EspOtaDeviceCoordinator(hass, entry, client_from_data(hass, dict(entry.data)))
    await coordinator.async_config_entry_first_refresh()
    feed = None
    feed_url = entry.options.get(CONF_FEED_URL)
    if feed_url:
        try:
            feed = await async_acquire_feed_coordinator(
                hass, entry.entry_id, feed_url, entry.options.get(CONF_FEED_PUBLIC_KEY) or None
            )
        except ValueError as err:  # pragma: no cover - the options flow validates the key
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN, translation_key="invalid_public_key"
            ) from err
        entry.async_on_unload(
            lambda: async_release_feed_coordinator(
                hass, entry.entry_id, feed_url, entry.options.get(CONF_FEED_PUBLIC_KEY) or None
            )
        )
    entry.runtime_data = EspOtaRuntimeData(device=coordinator, feed=feed)
    coordinator.start_listening()
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> bool:
    """Unload a config entry (the event listener is a background task of the entry)."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


# The device-removal hook, apart from setup (the device rules live in devices.py).
from homeassistant.helpers.device_registry import DeviceEntry  # noqa: E402

from .devices import is_live_device  # noqa: E402


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: EspOtaConfigEntry, device: DeviceEntry
) -> bool:
    """Let the user remove a stale device of the entry, never the ESP32 it follows."""
    return not is_live_device(entry, device)
