"""The base entity: one device per ESP32, identified by its MAC."""

from __future__ import annotations

from homeassistant.const import CONF_HOST, CONF_MAC, CONF_PORT
from homeassistant.helpers.device_registry import CONNECTION_NETWORK_MAC, DeviceInfo
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN
from .coordinator import EspOtaDeviceCoordinator
from .espota.chips import format_chip_revision


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
        entry = coordinator.config_entry
        mac = entry.data[CONF_MAC]
        info = coordinator.data.info
        self._attr_unique_id = f"{mac}_{key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, mac)},
            connections={(CONNECTION_NETWORK_MAC, mac)},
            name=entry.title,
            manufacturer="Espressif",
            model=info.chip.upper().replace("ESP32", "ESP32-").rstrip("-"),
            model_id=info.project,
            sw_version=info.version,
            hw_version=format_chip_revision(info.chip_revision),
            configuration_url=f"https://{entry.data[CONF_HOST]}:{entry.data[CONF_PORT]}/",
        )
