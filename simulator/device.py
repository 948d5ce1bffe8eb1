"""One simulated ESP32: a board (simulator/board.py: flash, eFuse, bootloader, power and
resets) running the firmware app (simulator/firmware_app.py: the device API's state, the
OTA task, the events).

SimulatedDevice is what tests, the fleet, the demo and the benchmarks use: one object
with the device's whole interface, each part answered by the board or the app.
"""

from __future__ import annotations

import asyncio

from custom_components.esp_ota.espota.image import AppDescriptor
from custom_components.esp_ota.espota.protocol import DeviceEvent, DeviceInfo, ImageState, OtaStatus

from .board import ESP_RST_PANIC, ESP_RST_POWERON, ESP_RST_SW, Board, DeviceNetwork
from .bootloader import BootResult
from .device_config import DeviceConfig, FactoryFirmware
from .firmware_app import API_VERSION, FirmwareApp
from .model import OtaRequest
from .ota_ops import OtaOps
from .partitions import Partition


class SimulatedDevice:
    """A simulated ESP32 running an advanced_https_ota-style firmware.

    Call `await start()` (power-on) before use and `await close()` at the end.
    """

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.board = Board(config)
        self.app = FirmwareApp(config, self.board)
        self.board.install(self.app)
        self.chip = self.board.chip
        self.table = self.board.hardware.table
        self.flash, self.efuse = self.board.flash, self.board.efuse
        self.timing = self.board.timing

    # --- the board ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Power on: restore saved state (or flash the factory image) and boot."""
        await self.board.start()

    async def close(self) -> None:
        """Stop every background task and save the state."""
        await self.board.close()

    def attach_network(self, net: DeviceNetwork) -> None:
        """The object whose go_offline()/go_online() the device calls around a reboot."""
        self.board.attach_network(net)

    @property
    def online(self) -> bool:
        """True while the firmware runs and the device answers on the network."""
        return self.board.online

    async def wait_online(self, within_s: float | None = None) -> None:
        """Wait until the device is online; TimeoutError after `within_s` seconds."""
        await self.board.wait_online(within_s)

    async def power_cycle(self) -> None:
        """Unplug and plug back in (ESP_RST_POWERON), even when stuck offline."""
        await self.board.power_cycle()

    @property
    def reboot_time_s(self) -> float:
        """How long a restart keeps the device offline."""
        return self.board.reboot_time_s

    @reboot_time_s.setter
    def reboot_time_s(self, seconds: float) -> None:
        self.board.reboot_time_s = seconds

    @property
    def reset_reason(self) -> str:
        """esp_reset_reason() of the last boot."""
        return self.board.reset_reason

    @property
    def boot_count(self) -> int:
        """Boots since this object was made (panics included)."""
        return self.board.boot_count

    @property
    def boot_loop(self) -> bool:
        """Panicking on every boot: the simulation stopped retrying."""
        return self.board.boot_loop

    @property
    def last_boot(self) -> BootResult | None:
        """What the bootloader started last."""
        return self.board.last_boot

    @property
    def uptime_s(self) -> float:
        """Seconds since the running firmware started."""
        return self.board.uptime_s

    # --- the app -----------------------------------------------------------------------------

    async def wait_idle(self, within_s: float | None = None) -> None:
        """Wait until no OTA job and no restart is running; TimeoutError after `within_s`."""
        await self.app.wait_idle(within_s)

    @property
    def ops(self) -> OtaOps:
        """esp_ota_ops of the running firmware."""
        return self.app.ops

    @property
    def running_app(self) -> AppDescriptor:
        """esp_app_get_description() of the running firmware."""
        return self.app.running_app

    @property
    def running_partition(self) -> Partition:
        """esp_ota_get_running_partition()."""
        return self.app.running_partition

    def image_state(self) -> ImageState:
        """The running partition's otadata state."""
        return self.app.image_state()

    def info(self) -> DeviceInfo:
        """GET /api/v1/info."""
        return self.app.info()

    def ota_status(self) -> OtaStatus:
        """GET /api/v1/ota: the current or last OTA job."""
        return self.app.ota_status()

    def confirm(self) -> None:
        """POST /api/v1/ota/confirm."""
        self.app.confirm()

    async def rollback(self) -> None:
        """POST /api/v1/ota/rollback."""
        await self.app.rollback()

    async def reboot(self) -> None:
        """POST /api/v1/reboot."""
        await self.app.reboot()

    async def start_ota(self, request: OtaRequest) -> str:
        """POST /api/v1/ota: the new job's ota_id."""
        return await self.app.start_ota(request)

    async def abort_ota(self) -> None:
        """POST /api/v1/ota/abort."""
        await self.app.abort_ota()

    def subscribe(self) -> asyncio.Queue[DeviceEvent]:
        """A queue that receives every event from now on."""
        return self.app.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[DeviceEvent]) -> None:
        """Stop delivering events to `queue`."""
        self.app.unsubscribe(queue)

    def events_since(self, last_event_id: int) -> list[DeviceEvent]:
        """Events after `last_event_id` still in the ring (for SSE Last-Event-ID)."""
        return self.app.events_since(last_event_id)


__all__ = [
    "API_VERSION",
    "ESP_RST_PANIC",
    "ESP_RST_POWERON",
    "ESP_RST_SW",
    "DeviceConfig",
    "DeviceNetwork",
    "FactoryFirmware",
    "SimulatedDevice",
]
