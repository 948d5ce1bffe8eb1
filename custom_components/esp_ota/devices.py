"""The entry's device in the device registry: one per entry, the ESP32 with the entry's MAC.

An entry follows exactly one ESP32, so the only device an entry may keep is the one whose
identifier is the entry's MAC. Any other device of the entry is stale (left by an earlier
version, or by an entry whose data was edited) and is removed at setup; the user may remove
such a device by hand too, but never the live one.
"""

from __future__ import annotations

import logging

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_MAC
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr

from .const import DOMAIN

_LOGGER = logging.getLogger(__name__)


def is_live_device(entry: ConfigEntry, device: dr.DeviceEntry) -> bool:
    """Whether the device is the ESP32 this entry follows (its MAC, as identifier)."""
    return (DOMAIN, entry.data[CONF_MAC]) in device.identifiers


@callback
def async_remove_stale_devices(hass: HomeAssistant, entry: ConfigEntry) -> int:
    """Remove the entry's devices that are not its ESP32; returns how many were removed."""
    registry = dr.async_get(hass)
    stale = [
        device
        for device in dr.async_entries_for_config_entry(registry, entry.entry_id)
        if not is_live_device(entry, device)
    ]
    for device in stale:
        _LOGGER.debug("Removing stale device %s of %s", device.name, entry.title)
        registry.async_remove_device(device.id)
    return len(stale)
