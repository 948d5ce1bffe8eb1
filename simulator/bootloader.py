"""The second-stage bootloader's choice of app (bootloader_utility.c), with app rollback
(CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE) and optionally anti-rollback
(CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK).

1. Every otadata entry still PENDING_VERIFY becomes ABORTED: the app it started rebooted
   without confirming itself, so it is rolled back.
2. The valid entry with the highest seq (whose app's secure_version is not below the eFuse,
   with anti-rollback) selects the slot; a NEW entry becomes PENDING_VERIFY.
3. The selected slot's image is loaded (verified in full, and checked against the chip);
   if it does not load, the bootloader tries the slots below it, then those above it.
4. Both otadata entries blank and no factory app: ota_0 boots, and seq 1 VALID is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from custom_components.esp_ota.espota.errors import ImageError
from custom_components.esp_ota.espota.image import ImageInfo

from .app_image import partition_description, verify_partition_image
from .esp_err import EspError
from .hardware import Hardware
from .otadata import OtaImgState, OtaSelectEntry, select_otadata
from .partitions import Partition

FACTORY_INDEX: Final = -1


class NoBootableAppError(Exception):
    """No partition holds an app that loads: the real chip resets and tries again forever."""


@dataclass(frozen=True, slots=True)
class BootResult:
    """What the bootloader started."""

    partition: Partition
    image: ImageInfo
    # The otadata entry that selected it was NEW and is now PENDING_VERIFY: a first boot.
    first_boot_of_new_image: bool
    log: tuple[str, ...]


class Bootloader:
    """The bootloader of one device: `hardware` is the chip it runs on, with the rollback
    options it was built with."""

    def __init__(self, hardware: Hardware) -> None:
        self.hardware = hardware
        self.table = hardware.table
        self.otadata = hardware.otadata()

    # --- helpers ---------------------------------------------------------------------------

    def _index_to_partition(self, index: int) -> Partition | None:
        if index == FACTORY_INDEX:
            return self.table.factory
        return self.table.ota_apps[index]

    def _check_anti_rollback(self, partition: Partition) -> bool:
        if not self.hardware.anti_rollback:
            return True
        app = partition_description(self.hardware.flash, partition)
        return app is not None and self.hardware.efuse.check_secure_version(app.secure_version)

    def _update_anti_rollback(self, partition: Partition, log: list[str]) -> None:
        app = partition_description(self.hardware.flash, partition)
        if app is None or app.secure_version <= self.hardware.efuse.secure_version:
            return
        try:
            self.hardware.efuse.update_secure_version(app.secure_version)
        except EspError as err:
            log.append(f"eFuse not updated: {err.message}")
            return
        log.append(f"Anti-rollback is set. eFuse field is updated({app.secure_version}).")

    def _try_load(self, partition: Partition, log: list[str]) -> ImageInfo | None:
        try:
            info = verify_partition_image(self.hardware.flash, partition)
        except ImageError as err:
            log.append(f"{partition.label}: image does not load: {err}")
            return None
        problem = self.hardware.chip_error(info.header)
        if problem is not None:
            log.append(f"{partition.label}: {problem}")
            return None
        return info

    # --- bootloader_utility_get_selected_boot_partition ------------------------------------

    def _selected_index(
        self, log: list[str]
    ) -> tuple[int, bool, bool]:  # (index, ota_has_initial_contents, first boot of NEW)
        entries = list(self.otadata.read())
        app_count = len(self.table.ota_apps)
        if self.hardware.rollback_enabled:
            for index, entry in enumerate(entries):
                if entry.state == OtaImgState.PENDING_VERIFY:
                    log.append(f"otadata[{index}] is marking as ABORTED")
                    entries[index] = replace(entry, state=OtaImgState.ABORTED)
                    self.otadata.write_entry(index, entries[index])
        pair = (entries[0], entries[1])
        initial = False
        if self.hardware.anti_rollback:
            if pair[0].is_initial and pair[1].is_initial:
                log.append("otadata[0..1] in initial state")
                return FACTORY_INDEX, True, False
            usable = tuple(
                entry.is_valid
                and self._check_anti_rollback(self.table.ota_apps[entry.slot(app_count)])
                for entry in pair
            )
            active = select_otadata(pair, (usable[0], usable[1]), use_max=True)
        else:
            if (pair[0].is_invalid and pair[1].is_invalid) or app_count == 0:
                if self.table.factory is not None:
                    return FACTORY_INDEX, False, False
                log.append("No factory image, trying OTA 0")
                initial = pair[0].is_initial and pair[1].is_initial
                return 0, initial, False
            active = select_otadata(pair, (pair[0].is_valid, pair[1].is_valid), use_max=True)
        if active < 0:
            log.append("ota data partition invalid and no factory, will try all partitions")
            return FACTORY_INDEX, False, False
        entry = pair[active]
        boot_index = entry.slot(app_count)
        first_boot = False
        if self.hardware.rollback_enabled and entry.state == OtaImgState.NEW:
            log.append(f"otadata[{active}] is selected as new and marked PENDING_VERIFY state")
            self.otadata.write_entry(active, replace(entry, state=OtaImgState.PENDING_VERIFY))
            first_boot = True
        if self.hardware.anti_rollback and entry.state == OtaImgState.VALID:
            self._update_anti_rollback(self.table.ota_apps[boot_index], log)
        return boot_index, False, first_boot

    # --- bootloader_utility_load_boot_image ------------------------------------------------

    def boot(self) -> BootResult:
        """Select and load an app, updating otadata and the eFuse as the real one does."""
        log: list[str] = []
        start, initial_contents, first_boot = self._selected_index(log)
        app_count = len(self.table.ota_apps)
        order = list(range(start, FACTORY_INDEX - 1, -1)) + list(range(start + 1, app_count))
        for index in order:
            partition = self._index_to_partition(index)
            if partition is None:
                continue
            if not self._check_anti_rollback(partition):
                log.append(f"{partition.label}: secure_version below the eFuse's, not booted")
                continue
            info = self._try_load(partition, log)
            if info is None:
                continue
            if index > FACTORY_INDEX and initial_contents:
                self.otadata.write_entry(0, OtaSelectEntry.make(index + 1, OtaImgState.VALID))
                log.append(f"Set actual ota_seq={index + 1} in otadata[0]")
                if self.hardware.anti_rollback:
                    self._update_anti_rollback(partition, log)
            log.append(f"Loaded app from partition at offset 0x{partition.offset:x}")
            return BootResult(
                partition=partition,
                image=info,
                first_boot_of_new_image=first_boot and index == start,
                log=tuple(log),
            )
        log.append("No bootable app partitions in the partition table")
        raise NoBootableAppError("; ".join(log))
