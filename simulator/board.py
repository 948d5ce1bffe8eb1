"""The board of a simulated ESP32: the chip with its flash and eFuses, its power and
resets, and the bootloader that starts an app.

Counterparts: `idf.py flash` for the factory image, the second-stage bootloader
(simulator/bootloader.py) at every reset, esp_restart / esp_reset_reason (ESP-IDF's
esp_system), and the flash (NVS included) and eFuses that survive a power cycle
(simulator/persistence.py). The board starts whatever app the bootloader loaded
(App.start) and takes it down at every reset (App.halt, App.stop); what the app does is
simulator/firmware_app.py's. While it restarts the device is offline: it asks the attached
network (attach_network) to close its listening socket for reboot_time_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Protocol

from custom_components.esp_ota.espota.chips import CHIP_IDS, normalize_chip_name

from .bootloader import Bootloader, BootResult, NoBootableAppError
from .efuse import EFuse
from .flash import Flash
from .hardware import Hardware
from .pace import DEFAULT_REBOOT_TIME_S, Timing
from .partitions import PartitionScheme
from .persistence import DeviceState, DeviceStore

if TYPE_CHECKING:
    from .device_config import DeviceConfig, FactoryFirmware

_LOGGER = logging.getLogger(__name__)

BOOT_LOOP_LIMIT: Final = 8  # consecutive panics after which the simulation stops retrying

# esp_reset_reason_t names.
ESP_RST_POWERON: Final = "ESP_RST_POWERON"
ESP_RST_SW: Final = "ESP_RST_SW"
ESP_RST_PANIC: Final = "ESP_RST_PANIC"


class DeviceNetwork(Protocol):
    """The device's network presence (its HTTP API server)."""

    async def go_offline(self) -> None:
        """Stop answering: the device is rebooting."""

    async def go_online(self) -> None:
        """Answer again: the device has booted."""


class App(Protocol):
    """The firmware, as the board runs it."""

    def start(self, boot: BootResult, reset_reason: str) -> None:
        """The bootloader started the app's image (app_main)."""

    def halt(self) -> None:
        """The chip is going down: from now on the app's RAM is gone, it says nothing."""

    async def stop(self) -> None:
        """Before the next boot: the app's tasks end."""


@lru_cache(maxsize=32)
def _built_factory_image(chip: str, firmware: FactoryFirmware) -> bytes:
    # Only needed when no factory image bytes are given.
    from custom_components.esp_ota.espota.image_builder import (  # noqa: PLC0415
        build_app_image,
    )

    return build_app_image(
        project=firmware.project,
        version=firmware.version,
        chip=chip,
        min_chip_rev_full=firmware.min_chip_rev_full,
        max_chip_rev_full=firmware.max_chip_rev_full,
        secure_version=firmware.secure_version,
        size=firmware.size,
        idf_ver=firmware.idf_ver,
    )


class Board:
    """One ESP32 board. install() the app, then `await start()` (power-on); `await
    close()` at the end."""

    app: App  # the firmware, from install() on

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.chip = normalize_chip_name(config.chip)
        scheme = PartitionScheme(config.partition_table)  # ValueError for an unknown name
        efuse = EFuse(secure_version=config.efuse_secure_version)
        if self.chip != "esp32":
            # CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD is 16 bits on the newer chips.
            efuse.secure_version_bits = 16
        self.hardware = Hardware(
            flash=Flash(scheme.flash_size),
            table=scheme.table,
            efuse=efuse,
            chip_id=CHIP_IDS[self.chip],
            chip_revision=config.chip_revision,
            anti_rollback=config.anti_rollback,
        )
        self.flash, self.efuse = self.hardware.flash, self.hardware.efuse
        self.timing = Timing(config.pace)
        if config.reboot_time_s is not None:
            self.reboot_time_s = config.reboot_time_s
        else:
            self.reboot_time_s = DEFAULT_REBOOT_TIME_S if self.timing.realistic else 0.0
        self.bootloader = Bootloader(self.hardware)
        self._store = (
            DeviceStore(config.state_dir, config.mac) if config.state_dir is not None else None
        )
        self._online = False
        self._started = False
        self._flash_ready = False  # restored or flashed: worth saving from now on
        self._closed = False
        self._booted_at = time.monotonic()
        self.reset_reason = ESP_RST_POWERON
        self.boot_count = 0
        self.boot_loop = False  # panicking on every boot; the simulation stopped retrying
        self.last_boot: BootResult | None = None
        self._net: DeviceNetwork | None = None
        # NVS: flash-resident key-value storage, saved and restored with the flash.
        self.nvs: dict[str, Any] = {}
        self._restart_task: asyncio.Task[None] | None = None
        self._online_changed = asyncio.Event()
        self._save_task: asyncio.Task[None] | None = None
        self._save_again = False

    def install(self, app: App) -> None:
        """The firmware the bootloader starts from the next boot on."""
        self.app = app

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Power on: restore saved state (or flash the factory image) and boot."""
        if self._started:
            return
        self._started = True
        state = await self._store.load() if self._store is not None else None
        if state is not None:
            if state.flash_size != self.flash.size:
                raise ValueError(
                    f"{self.config.mac}: the saved state is of a {state.flash_size} byte flash, "
                    f"this device has {self.flash.size} (another partition table?)"
                )
            self.flash.restore(state.sectors)
            self.efuse.secure_version = state.efuse_secure_version
            self.nvs = dict(state.nvs)
        else:
            await self._flash_factory_image()
        self._flash_ready = True
        await self._boot_sequence(ESP_RST_POWERON, first_power_on=True)

    async def _flash_factory_image(self) -> None:
        image = self.config.factory_image
        if image is None:
            image = await asyncio.to_thread(_built_factory_image, self.chip, self.config.factory)
        table = self.hardware.table
        slot = table.ota_apps[0]
        if len(image) > slot.size:
            raise ValueError(f"factory image ({len(image)} bytes) does not fit {slot.label}")
        # What `idf.py flash` does: the app into ota_0, otadata erased.
        self.flash.erase_range(slot.offset, slot.size)
        self.flash.write(slot.offset, image)
        self.flash.erase_range(table.otadata.offset, table.otadata.size)
        self.flash.freeze()

    async def close(self) -> None:
        """Stop every background task and save the state."""
        if self._closed:
            return
        self._closed = True
        self.app.halt()
        await self.app.stop()
        await self._cancel_restart()
        self._online = False
        if self._save_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._save_task
        await self._save_now()

    def attach_network(self, net: DeviceNetwork) -> None:
        """The object whose go_offline()/go_online() the device calls around a reboot."""
        self._net = net

    @property
    def online(self) -> bool:
        """True while the firmware runs and the device answers on the network."""
        return self._online

    async def wait_online(self, within_s: float | None = None) -> None:
        """Wait until the device is online (tests, fleet runner); TimeoutError after
        `within_s` seconds."""
        async with asyncio.timeout(within_s):
            while not self._online:
                self._online_changed.clear()
                await self._online_changed.wait()

    def _set_online(self, online: bool) -> None:
        self._online = online
        self._online_changed.set()

    @property
    def uptime_s(self) -> float:
        """Seconds since the running firmware started."""
        return time.monotonic() - self._booted_at

    # --- boot -----------------------------------------------------------------------------

    async def _boot_sequence(self, reason: str, *, first_power_on: bool = False) -> None:
        """Bootloader, app start (or panic and again), then online (unless the
        never_come_back fault holds it back after a reboot)."""
        panics = 0
        while True:
            self.reset_reason = reason
            self.boot_count += 1
            try:
                boot = self.bootloader.boot()
            except NoBootableAppError as err:
                _LOGGER.warning("%s: no bootable app: %s", self.config.mac, err)
                self.boot_loop = True
                self.request_save()
                return
            self.last_boot = boot
            app = boot.image.app
            crash = app.version in self.faults.crash_versions
            if self.faults.crash_on_next_boot and boot.first_boot_of_new_image:
                self.faults.crash_on_next_boot = False
                crash = True
            if not crash:
                break
            _LOGGER.info("%s: %s %s panics at boot", self.config.mac, app.project_name, app.version)
            panics += 1
            if panics >= BOOT_LOOP_LIMIT:
                self.boot_loop = True
                self.request_save()
                return
            reason = ESP_RST_PANIC
            await self._sleep(self.reboot_time_s)
        self.boot_loop = False
        self._booted_at = time.monotonic()
        self.app.start(boot, reason)
        self.request_save()
        if self.faults.never_come_back and not first_power_on:
            _LOGGER.info("%s: booted but never comes back online (fault)", self.config.mac)
            return
        # Listening first, then "online": whoever waits for online can connect at once.
        if self._net is not None:
            await self._net.go_online()
        self._set_online(True)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    # --- resets ---------------------------------------------------------------------------

    @property
    def restart_task(self) -> asyncio.Task[None] | None:
        """The restart under way, if any (done once the device has booted again)."""
        return self._restart_task

    @property
    def restarting(self) -> bool:
        """Whether a restart is under way."""
        return self._restart_task is not None and not self._restart_task.done()

    def restart(self, reason: str) -> None:
        """esp_restart() (or a power cut): offline now, back after reboot_time_s. A restart
        already under way wins."""
        if self.restarting:
            return
        self._set_online(False)
        self.app.halt()
        self._restart_task = asyncio.create_task(
            self._restart(reason), name=f"esp-ota-sim restart {self.config.mac}"
        )

    async def _restart(self, reason: str) -> None:
        await self.app.stop()
        if self._net is not None:
            await self._net.go_offline()
        self.request_save()
        await self._sleep(self.reboot_time_s)
        await self._boot_sequence(reason)

    async def power_cycle(self) -> None:
        """Unplug and plug back in (ESP_RST_POWERON); works even on a device that is stuck
        offline (boot loop, never_come_back, bricked) once its faults are cleared."""
        await self._cancel_restart()
        self.restart(ESP_RST_POWERON)

    async def _cancel_restart(self) -> None:
        if self._restart_task is not None and not self._restart_task.done():
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart_task
        self._restart_task = None

    # --- persistence ----------------------------------------------------------------------

    def request_save(self) -> None:
        """Save flash, eFuses and NVS soon (in the background; one save at a time)."""
        if self._store is None or self._closed:
            return
        if self._save_task is not None and not self._save_task.done():
            self._save_again = True
            return
        self._save_task = asyncio.create_task(
            self._save_loop(), name=f"esp-ota-sim save {self.config.mac}"
        )

    async def _save_loop(self) -> None:
        while True:
            self._save_again = False
            await self._save_now()
            if not self._save_again:
                return

    async def _save_now(self) -> None:
        if self._store is None or not self._flash_ready:
            return
        state = DeviceState(
            flash_size=self.flash.size,
            sectors=self.flash.snapshot(),
            efuse_secure_version=self.efuse.secure_version,
            nvs=dict(self.nvs),
        )
        await self._store.save(state)
