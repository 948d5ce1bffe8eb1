"""ESP OTA: keeps fleets of ESP32 devices on the right firmware.

The device, image, feed and transport logic lives in the Home Assistant free
``espota`` subpackage; this package is the thin Home Assistant layer over it.
"""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant

PLATFORMS: list[Platform] = []

type EspOtaConfigEntry = ConfigEntry[None]


async def async_setup_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> bool:
    """Set up ESP OTA from a config entry."""
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: EspOtaConfigEntry) -> bool:
    """Unload a config entry."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
