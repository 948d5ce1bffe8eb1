"""The base entity: one device per ESP32, identified by its MAC."""

from __future__ import annotations

from homeassistant.const import CONF_MAC
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .coordinator import EspOtaDeviceCoordinator


def whole_percent(percentage: float | None) -> int | None:
    """A download's progress as the entities show it: whole percent, rounded down, so
    100 means every byte is written (the record's share has many decimals: 4 KiB of
    4 MiB is 0.09765625 %)."""
    return None if percentage is None else int(percentage)


class EspOtaEntity(CoordinatorEntity[EspOtaDeviceCoordinator]):
    """An entity of one ESP32."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: EspOtaDeviceCoordinator, key: str) -> None:
        super().__init__(coordinator)
        self._attr_unique_id = f"{coordinator.config_entry.data[CONF_MAC]}_{key}"
        # One DeviceInfo per device, shared by its entities (each would hold its own copy).
        self._attr_device_info = coordinator.device_info
