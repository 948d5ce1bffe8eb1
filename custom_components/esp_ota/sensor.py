"""Sensors: the update's progress and result, and the device's diagnostics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from .coordinator import EspOtaDeviceCoordinator
from .entity import EspOtaEntity
from .espota.job_record import UpdateStep
from .espota.protocol import ImageState
from .runtime import EspOtaConfigEntry

PARALLEL_UPDATES = 0  # read-only: the coordinator does all the talking

# Results of the last update, as the "last result" sensor names them.
LAST_RESULTS = ["none", "succeeded", "failed", "rolled_back"]
RESET_REASONS = [
    "ESP_RST_UNKNOWN", "ESP_RST_POWERON", "ESP_RST_EXT", "ESP_RST_SW", "ESP_RST_PANIC",
    "ESP_RST_INT_WDT", "ESP_RST_TASK_WDT", "ESP_RST_WDT", "ESP_RST_DEEPSLEEP",
    "ESP_RST_BROWNOUT", "ESP_RST_SDIO", "ESP_RST_USB", "ESP_RST_JTAG", "ESP_RST_EFUSE",
    "ESP_RST_PWR_GLITCH", "ESP_RST_CPU_LOCKUP",
]  # fmt: skip


def _last_result(coordinator: EspOtaDeviceCoordinator) -> str:
    step = coordinator.data.step
    return step.value if step.finished else "none"


def _booted_at(coordinator: EspOtaDeviceCoordinator) -> datetime:
    # Rounded to the minute so polling does not rewrite the state every time.
    booted = dt_util.utcnow() - timedelta(seconds=coordinator.data.info.uptime_s)
    return booted.replace(second=0, microsecond=0)


@dataclass(frozen=True, kw_only=True)
class EspOtaSensorEntityDescription(SensorEntityDescription):
    """How a sensor reads its value from the coordinator."""

    value_fn: Callable[[EspOtaDeviceCoordinator], str | float | datetime | None]
    # Rewritten at every move of an install's progress (the others at its steps).
    shows_progress: bool = False


SENSORS = (
    EspOtaSensorEntityDescription(
        key="ota_state",
        translation_key="ota_state",
        device_class=SensorDeviceClass.ENUM,
        options=[step.value for step in UpdateStep],
        value_fn=lambda coordinator: coordinator.data.step.value,
    ),
    EspOtaSensorEntityDescription(
        key="ota_progress",
        translation_key="ota_progress",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda coordinator: coordinator.data.percentage,
        shows_progress=True,
    ),
    EspOtaSensorEntityDescription(
        key="last_result",
        translation_key="last_result",
        device_class=SensorDeviceClass.ENUM,
        options=LAST_RESULTS,
        value_fn=_last_result,
    ),
    EspOtaSensorEntityDescription(
        key="last_error",
        translation_key="last_error",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda coordinator: coordinator.data.error,
    ),
    EspOtaSensorEntityDescription(
        key="running_partition",
        translation_key="running_partition",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda coordinator: coordinator.data.info.running_partition,
    ),
    EspOtaSensorEntityDescription(
        key="image_state",
        translation_key="image_state",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in ImageState],
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda coordinator: coordinator.data.info.image_state.value,
    ),
    EspOtaSensorEntityDescription(
        key="idf_version",
        translation_key="idf_version",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda coordinator: coordinator.data.info.idf_ver,
    ),
    EspOtaSensorEntityDescription(
        key="app_elf_sha256",
        translation_key="app_elf_sha256",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda coordinator: coordinator.data.info.app_elf_sha256,
    ),
    EspOtaSensorEntityDescription(
        key="last_boot",
        translation_key="last_boot",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=_booted_at,
    ),
    EspOtaSensorEntityDescription(
        key="reset_reason",
        translation_key="reset_reason",
        device_class=SensorDeviceClass.ENUM,
        options=[reason.lower() for reason in RESET_REASONS],
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda coordinator: (
            coordinator.data.info.reset_reason.lower()
            if coordinator.data.info.reset_reason in RESET_REASONS
            else None
        ),
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: EspOtaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """The sensors of the entry's device."""
    coordinator = entry.runtime_data.device
    async_add_entities(EspOtaSensor(coordinator, description) for description in SENSORS)


class EspOtaSensor(EspOtaEntity, SensorEntity):
    """One sensor of an ESP32."""

    entity_description: EspOtaSensorEntityDescription

    def __init__(
        self, coordinator: EspOtaDeviceCoordinator, description: EspOtaSensorEntityDescription
    ) -> None:
        super().__init__(coordinator, description.key)
        self.entity_description = description

    async def async_added_to_hass(self) -> None:
        """Follow the device, and the install's progress when this sensor shows it."""
        await super().async_added_to_hass()
        if self.entity_description.shows_progress:
            self.async_on_remove(
                self.coordinator.async_add_progress_listener(self.async_write_ha_state)
            )

    @property
    def native_value(self) -> str | float | datetime | None:
        """The value, read fresh from the coordinator."""
        return self.entity_description.value_fn(self.coordinator)
