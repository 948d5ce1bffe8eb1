"""Sensors: the update's progress and result, and the device's diagnostics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from .coordinator import DeviceState, EspOtaDeviceCoordinator
from .entity import EspOtaEntity, whole_percent
from .espota.job_record import FailureReason, UpdateStep
from .espota.protocol import ImageState
from .runtime import EspOtaConfigEntry

PARALLEL_UPDATES = 0  # read-only: the coordinator does all the talking

# How the last update ended, as the "last result" sensor names it ("none": no update yet).
LAST_RESULTS = ["none", "succeeded", "failed", "rolled_back"]
# Why the last update failed, as the "last error" sensor names it: our install's reasons,
# "aborted" (on request: an update the device ran without us, stopped by someone), "none"
# (it did not fail). A closed set: the error's own name (ESP-IDF's, an open set) is an
# attribute.
ABORTED = "aborted"
LAST_ERRORS = ["none", *(reason.value for reason in FailureReason), ABORTED]
RESET_REASONS = [
    "ESP_RST_UNKNOWN", "ESP_RST_POWERON", "ESP_RST_EXT", "ESP_RST_SW", "ESP_RST_PANIC",
    "ESP_RST_INT_WDT", "ESP_RST_TASK_WDT", "ESP_RST_WDT", "ESP_RST_DEEPSLEEP",
    "ESP_RST_BROWNOUT", "ESP_RST_SDIO", "ESP_RST_USB", "ESP_RST_JTAG", "ESP_RST_EFUSE",
    "ESP_RST_PWR_GLITCH", "ESP_RST_CPU_LOCKUP",
]  # fmt: skip
ATTR_ERROR_CODE = "error_code"
ATTR_MESSAGE = "message"


def update_running(state: DeviceState) -> bool:
    """An update is under way (ours, queued included, or one the device runs on its own)."""
    return state.step is not UpdateStep.IDLE and not state.step.finished


def last_result(state: DeviceState) -> str:
    """How the last update ended ("none": the device never had one); not for a running
    update (the sensor keeps the previous end meanwhile)."""
    return state.step.value if state.step.finished else "none"


def last_error(state: DeviceState) -> tuple[str, str | None, str | None]:
    """Why the last update failed, as (one of LAST_ERRORS, the error's own name, its
    message); "none" when it did not fail, or there was none. The error's name is
    ESP-IDF's (ESP_ERR_OTA_VALIDATE_FAILED, …) or, for a failure on Home Assistant's side,
    the library error's type."""
    job = state.shown_job
    if job is not None:
        if job.reason is None:
            return "none", None, None
        return job.reason.value, job.error, job.message
    # An update the device ran without our install (or one from before our record): it
    # failed with an error, or was aborted on request (the only end without one).
    match state.step:
        case UpdateStep.FAILED:
            error = state.live.error
            reported = state.info.last_ota
            message = reported.message if reported.error == error else None
            reason = FailureReason.DOWNLOAD_FAILED.value if error else ABORTED
            return reason, error, message
        case UpdateStep.ROLLED_BACK:
            return FailureReason.ROLLED_BACK.value, None, None
        case _:
            return "none", None, None


def _last_error_attributes(state: DeviceState) -> dict[str, str]:
    _, code, message = last_error(state)
    attributes = {ATTR_ERROR_CODE: code, ATTR_MESSAGE: message}
    return {name: value for name, value in attributes.items() if value is not None}


def _booted_at(state: DeviceState) -> datetime:
    # Rounded to the minute so each read of the device does not rewrite the state.
    booted = dt_util.utcnow() - timedelta(seconds=state.info.uptime_s)
    return booted.replace(second=0, microsecond=0)


@dataclass(frozen=True, kw_only=True)
class EspOtaSensorEntityDescription(SensorEntityDescription):
    """How a sensor reads its value from the device's state."""

    value_fn: Callable[[DeviceState], str | int | datetime | None]
    attributes_fn: Callable[[DeviceState], Mapping[str, Any]] | None = None
    # Rewritten at every move of an install's progress (the others at its steps).
    shows_progress: bool = False
    # Tells how the last update ended: while the next one runs, it keeps telling that.
    shows_last_end: bool = False


SENSORS = (
    EspOtaSensorEntityDescription(
        key="ota_state",
        translation_key="ota_state",
        device_class=SensorDeviceClass.ENUM,
        options=[step.value for step in UpdateStep],
        value_fn=lambda state: state.step.value,
    ),
    EspOtaSensorEntityDescription(
        key="ota_progress",
        translation_key="ota_progress",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        # The update entity shows the same progress: each entity enabled by default costs
        # every device tens of KB of Home Assistant's memory (docs/architecture.md).
        entity_registry_enabled_default=False,
        value_fn=lambda state: whole_percent(state.percentage),
        shows_progress=True,
    ),
    EspOtaSensorEntityDescription(
        key="last_result",
        translation_key="last_result",
        device_class=SensorDeviceClass.ENUM,
        options=LAST_RESULTS,
        value_fn=last_result,
        shows_last_end=True,
    ),
    EspOtaSensorEntityDescription(
        key="last_error",
        translation_key="last_error",
        device_class=SensorDeviceClass.ENUM,
        options=LAST_ERRORS,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda state: last_error(state)[0],
        attributes_fn=_last_error_attributes,
        shows_last_end=True,
    ),
    EspOtaSensorEntityDescription(
        key="running_partition",
        translation_key="running_partition",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda state: state.info.running_partition,
    ),
    EspOtaSensorEntityDescription(
        key="image_state",
        translation_key="image_state",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in ImageState],
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda state: state.info.image_state.value,
    ),
    EspOtaSensorEntityDescription(
        key="idf_version",
        translation_key="idf_version",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda state: state.info.idf_ver,
    ),
    EspOtaSensorEntityDescription(
        key="app_elf_sha256",
        translation_key="app_elf_sha256",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda state: state.info.app_elf_sha256,
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
        value_fn=lambda state: (
            state.info.reset_reason.lower() if state.info.reset_reason in RESET_REASONS else None
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
        # For a sensor of the last update's end: the device's state when no update ran
        # (None: not seen since Home Assistant started, so unknown).
        self._last_end: DeviceState | None = None
        self._keep_last_end()

    def _keep_last_end(self) -> None:
        state = self.coordinator.data
        if self.entity_description.shows_last_end and not update_running(state):
            self._last_end = state

    @callback
    def _handle_coordinator_update(self) -> None:
        self._keep_last_end()
        super()._handle_coordinator_update()

    async def async_added_to_hass(self) -> None:
        """Follow the device, and the install's progress when this sensor shows it."""
        await super().async_added_to_hass()
        if self.entity_description.shows_progress:
            self.async_on_remove(
                self.coordinator.async_add_progress_listener(self.async_write_ha_state)
            )

    @property
    def _shown(self) -> DeviceState | None:
        """The state this sensor shows from: the device's, or the last end's."""
        if self.entity_description.shows_last_end:
            return self._last_end
        return self.coordinator.data

    @property
    def native_value(self) -> str | int | datetime | None:
        """The value, read fresh from the device's state."""
        state = self._shown
        return None if state is None else self.entity_description.value_fn(state)

    @property
    def extra_state_attributes(self) -> Mapping[str, Any] | None:
        """The details behind the value, for the sensors that have some."""
        attributes_fn = self.entity_description.attributes_fn
        state = self._shown
        if attributes_fn is None or state is None:
            return None
        return attributes_fn(state)
