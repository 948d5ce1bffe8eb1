"""The app side of OTA (ESP-IDF components/app_update/esp_ota_ops.c) on the simulated flash.

The device runs with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and, by default,
CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK (no factory partition, as that option requires).
Every function raises EspError with ESP-IDF's error name where esp_ota_ops returns one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Final

from custom_components.esp_ota.espota.errors import ImageError
from custom_components.esp_ota.espota.image import IMAGE_MAGIC, AppDescriptor, ImageInfo

from .app_image import partition_description, verify_partition_image
from .esp_err import (
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_SIZE,
    ESP_ERR_NOT_FOUND,
    ESP_ERR_OTA_ALREADY_IN_PROGRESS,
    ESP_ERR_OTA_PARTITION_CONFLICT,
    ESP_ERR_OTA_ROLLBACK_FAILED,
    ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
    ESP_ERR_OTA_SMALL_SEC_VER,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from .flash import SECTOR_SIZE
from .hardware import Hardware
from .otadata import OtaImgState, active_index, last_invalid_index
from .pace import Timing
from .partitions import Partition

# esp_ota_begin's image_size sentinels (esp_ota_ops.h).
OTA_SIZE_UNKNOWN: Final = 0xFFFFFFFF
OTA_WITH_SEQUENTIAL_WRITES: Final = 0xFFFFFFFE


_handles = itertools.count(1)


@dataclass(slots=True)
class OtaHandle:
    """esp_ota_handle_t: one OTA write session into a staging partition."""

    partition: Partition
    need_erase: bool
    wrote_size: int = 0
    resumed: bool = False
    handle: int = field(default_factory=lambda: next(_handles))


class PowerLossError(BaseException):
    """The device lost power in the middle of a flash write (a fault, not an esp_err_t).

    A BaseException so no `except Exception` on the way up can swallow the power cut.
    """


class OtaOps:
    """esp_ota_ops for one device: what the app running from `running` can ask of the flash
    and otadata of `hardware` (with the rollback options the app was built with)."""

    def __init__(self, hardware: Hardware, *, timing: Timing, running: Partition) -> None:
        self.hardware = hardware
        self.flash = hardware.flash
        self.table = hardware.table
        self.efuse = hardware.efuse
        self.timing = timing
        self.running = running
        self.otadata = hardware.otadata()
        self._open: dict[int, OtaHandle] = {}
        # Fault hook: lose power once this many bytes of the staged image are written.
        self.power_loss_at_byte: int | None = None

    # --- partitions and states -----------------------------------------------------------

    @property
    def app_count(self) -> int:
        """esp_ota_get_app_partition_count."""
        return len(self.table.ota_apps)

    def next_update_partition(self) -> Partition:
        """esp_ota_get_next_update_partition(NULL): the OTA slot after the running one."""
        slots = self.table.ota_apps
        if self.running in slots:
            return slots[(slots.index(self.running) + 1) % len(slots)]
        return slots[0]

    def state_of(self, partition: Partition) -> OtaImgState | int | None:
        """esp_ota_get_state_partition (None where ESP-IDF returns ESP_ERR_NOT_FOUND)."""
        if not partition.is_ota_app:
            raise EspError("ESP_ERR_NOT_SUPPORTED", f"{partition.label} is not an OTA app slot")
        return self.otadata.state_of_slot(partition.ota_slot)

    def description(self, partition: Partition) -> AppDescriptor | None:
        """esp_ota_get_partition_description (None where ESP-IDF returns ESP_ERR_NOT_FOUND)."""
        return partition_description(self.flash, partition)

    def _image_ok(self, partition: Partition) -> bool:
        """image_validate(partition, ESP_IMAGE_VERIFY_SILENT) == ESP_OK."""
        try:
            info = verify_partition_image(self.flash, partition)
        except ImageError:
            return False
        return self.hardware.chip_error(info.header) is None

    def _validate(self, partition: Partition) -> ImageInfo:
        """image_validate(partition, ESP_IMAGE_VERIFY): ESP_ERR_OTA_VALIDATE_FAILED if bad."""
        try:
            info = verify_partition_image(self.flash, partition)
        except ImageError as err:
            raise EspError(ESP_ERR_OTA_VALIDATE_FAILED, f"{partition.label}: {err}") from err
        problem = self.hardware.chip_error(info.header)
        if problem is not None:
            raise EspError(ESP_ERR_OTA_VALIDATE_FAILED, f"{partition.label}: {problem}")
        return info

    # --- erase / program inside a partition ----------------------------------------------

    def _check_in(self, partition: Partition, offset: int, length: int) -> None:
        if offset < 0 or offset + length > partition.size:
            raise EspError(
                ESP_ERR_INVALID_SIZE,
                f"0x{offset:x}+{length} does not fit in {partition.label} ({partition.size} bytes)",
            )

    async def _erase(self, partition: Partition, offset: int, length: int, *, bulk: bool) -> None:
        """esp_partition_erase_range, paced as sector or block erases."""
        self._check_in(partition, offset, length)
        sectors = self.flash.erase_range(partition.offset + offset, length)
        if bulk:
            await self.timing.erase_blocks(length)
        else:
            await self.timing.erase_sectors(sectors)

    async def _program(self, partition: Partition, offset: int, data: bytes) -> None:
        """esp_partition_write, paced at the flash's program rate."""
        self._check_in(partition, offset, len(data))
        self.flash.write(partition.offset + offset, data)
        await self.timing.program(len(data))

    # --- esp_ota_begin / resume / write / end / abort -------------------------------------

    def _check_can_stage(self, partition: Partition) -> None:
        if not partition.is_ota_app:
            raise EspError(ESP_ERR_INVALID_ARG, f"{partition.label} is not an OTA app slot")
        if partition == self.running:
            raise EspError(
                ESP_ERR_OTA_PARTITION_CONFLICT, f"{partition.label} is the running partition"
            )
        if (
            self.hardware.rollback_enabled
            and self.state_of(self.running) is OtaImgState.PENDING_VERIFY
        ):
            raise EspError(
                ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
                "Running app has not confirmed state (ESP_OTA_IMG_PENDING_VERIFY)",
            )
        if any(h.partition == partition for h in self._open.values()):
            raise EspError(
                ESP_ERR_OTA_ALREADY_IN_PROGRESS,
                f"OTA operation already in progress on partition {partition.label}",
            )

    async def begin(self, partition: Partition, image_size: int) -> OtaHandle:
        """esp_ota_begin: erase what image_size asks (nothing for sequential writes, which
        erase sector by sector as they go) and invalidate the otadata entry that still
        points at the slot about to be overwritten."""
        self._check_can_stage(partition)
        handle = OtaHandle(partition, need_erase=image_size == OTA_WITH_SEQUENTIAL_WRITES)
        self._open[handle.handle] = handle
        if image_size != OTA_WITH_SEQUENTIAL_WRITES:
            if image_size in (0, OTA_SIZE_UNKNOWN):
                erase_size = partition.size
            else:
                erase_size = -(-image_size // SECTOR_SIZE) * SECTOR_SIZE
            try:
                await self._erase(partition, 0, erase_size, bulk=True)
            except EspError:
                del self._open[handle.handle]
                raise
        if self.hardware.rollback_enabled:
            self.invalidate_inactive_ota_data_slot()
        return handle

    async def resume(self, partition: Partition, image_size: int, offset: int) -> OtaHandle:
        """esp_ota_resume: continue writing at `offset` without erasing what is there."""
        if offset > partition.size:
            raise EspError(ESP_ERR_INVALID_ARG, f"resume offset {offset} beyond {partition.label}")
        self._check_can_stage(partition)
        handle = OtaHandle(
            partition,
            need_erase=image_size == OTA_WITH_SEQUENTIAL_WRITES,
            wrote_size=offset,
            resumed=True,
        )
        self._open[handle.handle] = handle
        return handle

    def _handle(self, handle: OtaHandle) -> OtaHandle:
        if self._open.get(handle.handle) is not handle:
            raise EspError(ESP_ERR_INVALID_ARG, "not found the handle")
        return handle

    async def write(self, handle: OtaHandle, data: bytes) -> None:
        """esp_ota_write: erase the sectors the data reaches first (sequential mode), check
        the image magic on the first byte, then program."""
        handle = self._handle(handle)
        if not data:
            return
        partition = handle.partition
        if handle.need_erase:
            first = handle.wrote_size // SECTOR_SIZE
            last = (handle.wrote_size + len(data) - 1) // SECTOR_SIZE
            if handle.wrote_size % SECTOR_SIZE == 0:
                await self._erase(
                    partition, handle.wrote_size, (last - first + 1) * SECTOR_SIZE, bulk=False
                )
            elif first != last:
                await self._erase(
                    partition, (first + 1) * SECTOR_SIZE, (last - first) * SECTOR_SIZE, bulk=False
                )
        if handle.wrote_size == 0 and data[0] != IMAGE_MAGIC:
            raise EspError(
                ESP_ERR_OTA_VALIDATE_FAILED,
                f"OTA image has invalid magic byte (expected 0xE9, saw 0x{data[0]:02x})",
            )
        cut = self.power_loss_at_byte
        if cut is not None and handle.wrote_size + len(data) >= cut:
            self.power_loss_at_byte = None
            # The chip programs what it can before the supply collapses.
            await self._program(
                partition, handle.wrote_size, data[: max(0, cut - handle.wrote_size)]
            )
            raise PowerLossError(f"power lost while writing byte {cut} of the new image")
        await self._program(partition, handle.wrote_size, data)
        handle.wrote_size += len(data)
        self.flash.freeze_below(partition.offset + handle.wrote_size)

    def abort(self, handle: OtaHandle) -> None:
        """esp_ota_abort: forget the session (what was written stays in flash)."""
        if self._open.pop(handle.handle, None) is None:
            raise EspError(ESP_ERR_NOT_FOUND, "not found the handle")
        self.flash.freeze()

    def end(self, handle: OtaHandle) -> ImageInfo:
        """esp_ota_end: the session is over; the staged image must verify as a whole."""
        handle = self._handle(handle)
        del self._open[handle.handle]
        self.flash.freeze()
        if handle.wrote_size == 0:
            raise EspError(ESP_ERR_INVALID_ARG, "esp_ota_end: nothing was written")
        try:
            return self._validate(handle.partition)
        except EspError as err:
            raise EspError(err.name, f"New image failed verification: {err.message}") from err

    @property
    def open_handles(self) -> int:
        """How many OTA write sessions are open."""
        return len(self._open)

    # --- boot partition --------------------------------------------------------------------

    async def set_boot_partition(self, partition: Partition) -> None:
        """esp_ota_set_boot_partition: validate the image again, refuse (and erase) an image
        whose secure_version is below the eFuse, then point otadata at it as NEW."""
        if not partition.is_ota_app:
            raise EspError(ESP_ERR_INVALID_ARG, f"{partition.label} is not an OTA app slot")
        info = self._validate(partition)
        if self.hardware.anti_rollback and not self.efuse.check_secure_version(
            info.app.secure_version
        ):
            await self._erase(partition, 0, partition.size, bulk=True)
            self.flash.freeze()
            raise EspError(
                ESP_ERR_OTA_SMALL_SEC_VER,
                f"secure_version {info.app.secure_version} of the new app is lower than the "
                f"eFuse's {self.efuse.secure_version}; partition {partition.label} erased",
            )
        state = OtaImgState.NEW if self.hardware.rollback_enabled else OtaImgState.UNDEFINED
        self.otadata.set_boot_slot(partition.ota_slot, state)

    def boot_partition(self) -> Partition:
        """esp_ota_get_boot_partition: the slot otadata selects (ota_0 when none does)."""
        slot = self.otadata.active_slot()
        return self.table.ota_apps[slot if slot is not None else 0]

    # --- confirming or rejecting the running app -------------------------------------------

    def _current_ota_is_workable(self, *, valid: bool) -> None:
        entries = self.otadata.read()
        active = active_index(entries)
        if active < 0 or self.app_count == 0:
            raise EspError(ESP_FAIL, "Running firmware is factory")
        if valid:
            if entries[active].state != OtaImgState.VALID:
                self.otadata.set_active_state(OtaImgState.VALID)
                if self.hardware.anti_rollback:
                    app = self.description(self.running)
                    if app is None:
                        raise EspError(ESP_ERR_NOT_FOUND, "running app has no descriptor")
                    self.efuse.update_secure_version(app.secure_version)
            return
        if not self.check_rollback_is_possible():
            raise EspError(
                ESP_ERR_OTA_ROLLBACK_FAILED,
                "Rollback is not possible, do not have any suitable apps in slots",
            )
        self.otadata.set_active_state(OtaImgState.INVALID)

    def mark_app_valid_cancel_rollback(self) -> None:
        """esp_ota_mark_app_valid_cancel_rollback: the running app confirms itself (VALID)
        and, with anti-rollback, burns its secure_version into the eFuse."""
        self._current_ota_is_workable(valid=True)

    def mark_app_invalid_rollback(self) -> None:
        """esp_ota_mark_app_invalid_rollback (the caller then restarts)."""
        self._current_ota_is_workable(valid=False)

    def check_rollback_is_possible(self) -> bool:
        """esp_ota_check_rollback_is_possible: is there another valid, loadable app?"""
        if self.app_count == 0:
            return False
        entries = self.otadata.read()
        valid = (entries[0].is_valid, entries[1].is_valid)
        active = active_index(entries)
        if active < 0:
            return False
        last_active = active ^ 1
        if not valid[last_active]:
            return False
        partition = self.table.ota_apps[entries[last_active].slot(self.app_count)]
        if not self._image_ok(partition):
            return False
        if self.hardware.anti_rollback:
            app = self.description(partition)
            return app is not None and self.efuse.check_secure_version(app.secure_version)
        return True

    def last_invalid_partition(self) -> Partition | None:
        """esp_ota_get_last_invalid_partition: the slot a rollback left (if it still holds a
        loadable app)."""
        entries = self.otadata.read()
        index = last_invalid_index(entries)
        if index < 0 or self.app_count == 0:
            return None
        partition = self.table.ota_apps[entries[index].slot(self.app_count)]
        return partition if self._image_ok(partition) else None

    def invalidate_inactive_ota_data_slot(self) -> bool:
        """esp_ota_invalidate_inactive_ota_data_slot: erase the otadata sector whose entry
        points at a slot other than the running one, so the bootloader can never fall back
        to a slot that is being rewritten. Returns whether a sector was erased."""
        entries = self.otadata.read()
        active = active_index(entries)
        if active < 0 or self.app_count == 0:
            return False
        inactive = active ^ 1
        entry = entries[inactive]
        if entry.seq == 0xFFFFFFFF or not entry.crc_ok:
            return False
        if self.table.ota_apps[entry.slot(self.app_count)] == self.running:
            return False
        self.otadata.erase_entry(inactive)
        return True
