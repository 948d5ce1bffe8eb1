"""The hardware the bootloader and esp_ota_ops both work on: one chip and its flash."""

from __future__ import annotations

from dataclasses import dataclass

from custom_components.esp_ota.espota.image import ImageHeader

from .app_image import image_chip_error
from .efuse import EFuse
from .flash import Flash
from .otadata import OtaData
from .partitions import PartitionTable


@dataclass(frozen=True, slots=True)
class Hardware:
    """One ESP32 as the bootloader and the running app see it.

    `flash` holds the partition table `table`; `chip_id` and `chip_revision` (major * 100 +
    minor) are what an image header's chip fields are checked against. The two rollback
    options are sdkconfig, not silicon, but the bootloader and the app are built with the
    same ones, so they travel with the chip.
    """

    flash: Flash
    table: PartitionTable
    efuse: EFuse
    chip_id: int
    chip_revision: int
    rollback_enabled: bool = True  # CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
    anti_rollback: bool = True  # CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK

    def otadata(self) -> OtaData:
        """The otadata partition of `table` on `flash`."""
        return OtaData(self.flash, self.table.otadata, len(self.table.ota_apps))

    def chip_error(self, header: ImageHeader) -> str | None:
        """Why an image with this header cannot run on this chip (None: it can)."""
        return image_chip_error(header, chip_id=self.chip_id, chip_revision=self.chip_revision)
