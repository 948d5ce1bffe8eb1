"""The partition tables of the simulated device.

The default is the table of ESP-IDF's examples/system/ota/advanced_https_ota for a 4 MB
flash: two OTA app slots and no factory app, so the first boot runs ota_0. A second table,
for a 16 MB flash, has two 7 MiB OTA slots (large images, benchmarks). `PartitionScheme`
names each table together with the flash size it is laid out for.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from .flash import DEFAULT_FLASH_SIZE, SECTOR_SIZE


class PartitionType(IntEnum):
    """esp_partition_type_t."""

    APP = 0x00
    DATA = 0x01


class AppSubtype(IntEnum):
    """esp_partition_subtype_t for app partitions."""

    FACTORY = 0x00
    OTA_0 = 0x10
    OTA_1 = 0x11


class DataSubtype(IntEnum):
    """esp_partition_subtype_t for data partitions."""

    OTA = 0x00
    PHY = 0x01
    NVS = 0x02


@dataclass(frozen=True, slots=True)
class Partition:
    """One row of the partition table."""

    label: str
    type: PartitionType
    subtype: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        """First address after the partition."""
        return self.offset + self.size

    @property
    def is_ota_app(self) -> bool:
        """True for ota_0..ota_15 app slots."""
        return self.type is PartitionType.APP and 0x10 <= self.subtype < 0x20

    @property
    def ota_slot(self) -> int:
        """The OTA slot number (subtype - OTA_0); only for OTA app partitions."""
        if not self.is_ota_app:
            raise ValueError(f"partition {self.label} is not an OTA app slot")
        return self.subtype - AppSubtype.OTA_0


@dataclass(frozen=True, slots=True)
class PartitionTable:
    """A validated partition table."""

    partitions: tuple[Partition, ...]

    def __post_init__(self) -> None:
        ordered = sorted(self.partitions, key=lambda p: p.offset)
        for previous, current in itertools.pairwise(ordered):
            if current.offset < previous.end:
                raise ValueError(f"partitions {previous.label} and {current.label} overlap")
        for partition in self.partitions:
            if partition.offset % SECTOR_SIZE or partition.size % SECTOR_SIZE:
                raise ValueError(f"partition {partition.label} is not sector aligned")
        if len({p.label for p in self.partitions}) != len(self.partitions):
            raise ValueError("partition labels must be unique")

    def by_label(self, label: str) -> Partition:
        """The partition with this label (KeyError if none)."""
        for partition in self.partitions:
            if partition.label == label:
                return partition
        raise KeyError(label)

    @property
    def otadata(self) -> Partition:
        """The otadata partition (two sectors of esp_ota_select_entry_t)."""
        for partition in self.partitions:
            if partition.type is PartitionType.DATA and partition.subtype == DataSubtype.OTA:
                return partition
        raise KeyError("otadata")

    @property
    def ota_apps(self) -> tuple[Partition, ...]:
        """OTA app slots in slot order (ota_0, ota_1, ...), as esp_ota_get_app_partition_count
        counts them: consecutive subtypes from OTA_0."""
        slots: list[Partition] = []
        for subtype in range(AppSubtype.OTA_0, AppSubtype.OTA_0 + 16):
            found = [
                p for p in self.partitions if p.type is PartitionType.APP and p.subtype == subtype
            ]
            if not found:
                break
            slots.append(found[0])
        return tuple(slots)

    @property
    def factory(self) -> Partition | None:
        """The factory app, if the table has one."""
        for partition in self.partitions:
            if partition.type is PartitionType.APP and partition.subtype == AppSubtype.FACTORY:
                return partition
        return None


KIB: Final = 1024

# examples/system/ota/advanced_https_ota, 4 MB flash:
# nvs 0x9000 24K, otadata 0xf000 8K, phy 0x11000 4K, ota_0 0x20000 1700K, ota_1 0x1d0000 1700K.
ADVANCED_HTTPS_OTA_TABLE: Final = PartitionTable(
    (
        Partition("nvs", PartitionType.DATA, DataSubtype.NVS, 0x9000, 24 * KIB),
        Partition("otadata", PartitionType.DATA, DataSubtype.OTA, 0xF000, 8 * KIB),
        Partition("phy_init", PartitionType.DATA, DataSubtype.PHY, 0x11000, 4 * KIB),
        Partition("ota_0", PartitionType.APP, AppSubtype.OTA_0, 0x20000, 1700 * KIB),
        Partition("ota_1", PartitionType.APP, AppSubtype.OTA_1, 0x1D0000, 1700 * KIB),
    )
)

MIB: Final = 1024 * KIB

# The same nvs/otadata/phy_init rows on a 16 MB part, with two 7 MiB OTA slots (app
# partitions 64 KiB aligned). ESP-IDF's partition tables allow this on 16 MB parts: the
# partition table generator only checks alignment, overlaps and the flash size
# (CONFIG_ESPTOOLPY_FLASHSIZE_16MB), and esp_ota_begin only the slot size.
# nvs 0x9000 24K, otadata 0xf000 8K, phy 0x11000 4K, ota_0 0x20000 7M, ota_1 0x720000 7M.
LARGE_OTA_16MB_TABLE: Final = PartitionTable(
    (
        Partition("nvs", PartitionType.DATA, DataSubtype.NVS, 0x9000, 24 * KIB),
        Partition("otadata", PartitionType.DATA, DataSubtype.OTA, 0xF000, 8 * KIB),
        Partition("phy_init", PartitionType.DATA, DataSubtype.PHY, 0x11000, 4 * KIB),
        Partition("ota_0", PartitionType.APP, AppSubtype.OTA_0, 0x20000, 7 * MIB),
        Partition("ota_1", PartitionType.APP, AppSubtype.OTA_1, 0x720000, 7 * MIB),
    )
)
LARGE_FLASH_SIZE: Final = 16 * MIB


class PartitionScheme(StrEnum):
    """A partition table and the flash size it is laid out for (DeviceConfig, --partition-table)."""

    ADVANCED_HTTPS_OTA = "advanced_https_ota"  # 4 MB flash, two 1700 KiB OTA slots
    LARGE_OTA_16MB = "large_ota_16mb"  # 16 MB flash, two 7 MiB OTA slots

    @property
    def table(self) -> PartitionTable:
        """The partition table."""
        return _SCHEMES[self][0]

    @property
    def flash_size(self) -> int:
        """The flash chip's size in bytes."""
        return _SCHEMES[self][1]


_SCHEMES: Final[dict[PartitionScheme, tuple[PartitionTable, int]]] = {
    PartitionScheme.ADVANCED_HTTPS_OTA: (ADVANCED_HTTPS_OTA_TABLE, DEFAULT_FLASH_SIZE),
    PartitionScheme.LARGE_OTA_16MB: (LARGE_OTA_16MB_TABLE, LARGE_FLASH_SIZE),
}
