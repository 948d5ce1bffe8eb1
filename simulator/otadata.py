"""The otadata partition: which OTA slot boots next, and in what state.

Two flash sectors, each starting with one 32-byte esp_ota_select_entry_t
(esp_flash_partitions.h): {u32 ota_seq, u8 seq_label[20], u32 ota_state, u32 crc}, little
endian, the rest of the sector erased. crc is the ROM's crc32_le(UINT32_MAX, &ota_seq, 4),
which is binascii.crc32(pack('<I', seq), 0xFFFFFFFF). An entry is valid when its seq is not
0xFFFFFFFF, its state is neither INVALID nor ABORTED and its crc matches; the valid entry
with the higher seq selects slot (seq - 1) % number_of_ota_slots.

This module holds the rules shared by the bootloader (bootloader_common*.c) and the app's
esp_ota_ops.c that work on otadata alone; the rules that also look at app images live in
ota_ops.py and bootloader.py.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Final

from .flash import SECTOR_SIZE, Flash
from .partitions import Partition

ENTRY_FORMAT: Final = "<I20sII"
ENTRY_SIZE: Final = struct.calcsize(ENTRY_FORMAT)  # 32
SEQ_ERASED: Final = 0xFFFFFFFF
LABEL_ERASED: Final = b"\xff" * 20


class OtaImgState(IntEnum):
    """esp_ota_img_states_t."""

    NEW = 0x0
    PENDING_VERIFY = 0x1
    VALID = 0x2
    INVALID = 0x3
    ABORTED = 0x4
    UNDEFINED = 0xFFFFFFFF


def ota_select_crc(seq: int) -> int:
    """bootloader_common_ota_select_crc: CRC-32 of the little-endian seq, seeded 0xFFFFFFFF."""
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class OtaSelectEntry:
    """One esp_ota_select_entry_t exactly as stored (state and crc may hold any u32)."""

    seq: int
    state: int
    crc: int
    label: bytes = LABEL_ERASED

    @classmethod
    def make(cls, seq: int, state: int, label: bytes = LABEL_ERASED) -> OtaSelectEntry:
        """An entry with a correct crc for `seq`."""
        return cls(seq=seq, state=state, crc=ota_select_crc(seq), label=label)

    @classmethod
    def unpack(cls, raw: bytes) -> OtaSelectEntry:
        """Decode the first 32 bytes of an otadata sector."""
        seq, label, state, crc = struct.unpack_from(ENTRY_FORMAT, raw)
        return cls(seq=seq, state=state, crc=crc, label=label)

    def pack(self) -> bytes:
        """The 32 bytes written to flash."""
        return struct.pack(ENTRY_FORMAT, self.seq, self.label, self.state, self.crc)

    @property
    def crc_ok(self) -> bool:
        """The stored crc matches the seq."""
        return self.crc == ota_select_crc(self.seq)

    @property
    def is_invalid(self) -> bool:
        """bootloader_common_ota_select_invalid: erased seq, or state INVALID/ABORTED."""
        return self.seq == SEQ_ERASED or self.state in (
            OtaImgState.INVALID,
            OtaImgState.ABORTED,
        )

    @property
    def is_valid(self) -> bool:
        """bootloader_common_ota_select_valid."""
        return not self.is_invalid and self.crc_ok

    @property
    def is_initial(self) -> bool:
        """Erased seq or bad crc: what the bootloader treats as 'otadata in initial state'."""
        return self.seq == SEQ_ERASED or not self.crc_ok

    @property
    def is_rolled_back(self) -> bool:
        """check_invalid_otadata: a well-formed entry in state INVALID or ABORTED."""
        return (
            self.seq != SEQ_ERASED
            and self.crc_ok
            and self.state in (OtaImgState.INVALID, OtaImgState.ABORTED)
        )

    def slot(self, app_count: int) -> int:
        """The OTA slot this seq selects: (seq - 1) % app_count (u32 arithmetic)."""
        return ((self.seq - 1) & 0xFFFFFFFF) % app_count

    def state_name(self) -> str:
        """The state as ESP-IDF names it, or the raw number if it is not one."""
        try:
            return OtaImgState(self.state).name
        except ValueError:
            return f"0x{self.state:08x}"


ERASED_ENTRY: Final = OtaSelectEntry.unpack(b"\xff" * ENTRY_SIZE)


def select_otadata(
    entries: tuple[OtaSelectEntry, OtaSelectEntry], usable: tuple[bool, bool], *, use_max: bool
) -> int:
    """bootloader_common_select_otadata: index of the usable entry with the max (or min) seq,
    -1 when neither is usable."""
    if usable[0] and usable[1]:
        pick = max if use_max else min
        return 0 if pick(entries[0].seq, entries[1].seq) == entries[0].seq else 1
    for index in (0, 1):
        if usable[index]:
            return index
    return -1


def active_index(entries: tuple[OtaSelectEntry, OtaSelectEntry]) -> int:
    """bootloader_common_get_active_otadata: the valid entry with the higher seq, or -1."""
    return select_otadata(entries, (entries[0].is_valid, entries[1].is_valid), use_max=True)


def last_invalid_index(entries: tuple[OtaSelectEntry, OtaSelectEntry]) -> int:
    """get_last_invalid_otadata: of the rolled-back entries, the one with the lower seq
    (ESP-IDF selects with max=false), or -1."""
    usable = (entries[0].is_rolled_back, entries[1].is_rolled_back)
    return select_otadata(entries, usable, use_max=False)


def seq_for_slot(current_seq: int, slot: int, app_count: int) -> int:
    """compute_ota_seq_for_target_slot: the smallest seq >= current_seq that selects `slot`."""
    base = (slot + 1) % app_count
    steps = 0
    while current_seq > base + steps * app_count:
        steps += 1
    return base + steps * app_count


class OtaData:
    """The otadata partition on a flash chip."""

    def __init__(self, flash: Flash, partition: Partition, app_count: int) -> None:
        if partition.size < 2 * SECTOR_SIZE:
            raise ValueError("otadata needs two sectors")
        self.flash = flash
        self.partition = partition
        self.app_count = app_count

    def sector_address(self, index: int) -> int:
        """Flash address of otadata sector 0 or 1."""
        return self.partition.offset + index * SECTOR_SIZE

    def read(self) -> tuple[OtaSelectEntry, OtaSelectEntry]:
        """read_otadata: the entries at the start of both sectors."""
        first = OtaSelectEntry.unpack(self.flash.read(self.sector_address(0), ENTRY_SIZE))
        second = OtaSelectEntry.unpack(self.flash.read(self.sector_address(1), ENTRY_SIZE))
        return first, second

    def write_entry(self, index: int, entry: OtaSelectEntry) -> None:
        """Erase sector `index`, write the entry at its start (rewrite_ota_seq, write_otadata)."""
        address = self.sector_address(index)
        self.flash.erase_range(address, SECTOR_SIZE)
        self.flash.write(address, entry.pack())
        self.flash.freeze()

    def erase_entry(self, index: int) -> None:
        """Erase sector `index` (the entry reads as all 0xFF afterwards)."""
        self.flash.erase_range(self.sector_address(index), SECTOR_SIZE)

    def active_slot(self) -> int | None:
        """The slot the valid entry with the highest seq selects, or None."""
        entries = self.read()
        index = active_index(entries)
        return None if index < 0 or self.app_count == 0 else entries[index].slot(self.app_count)

    def set_boot_slot(self, slot: int, state: OtaImgState) -> int:
        """esp_rewrite_ota_data: make `slot` boot next with `state` (NEW when rollback is
        enabled). Returns the otadata sector written."""
        if not 0 <= slot < self.app_count:
            raise ValueError(f"slot {slot} outside 0..{self.app_count - 1}")
        entries = self.read()
        active = active_index(entries)
        if active >= 0:
            if entries[active].slot(self.app_count) == slot:
                target, seq = active, entries[active].seq
            else:
                target = active ^ 1
                seq = seq_for_slot(entries[active].seq, slot, self.app_count)
        else:
            target, seq = 0, slot + 1
        base = entries[target]
        self.write_entry(target, OtaSelectEntry.make(seq, state, base.label))
        return target

    def set_active_state(self, state: OtaImgState) -> int:
        """Rewrite the active entry with a new state (esp_ota_current_ota_is_workable);
        returns its index, -1 when there is no active entry (nothing written)."""
        entries = self.read()
        active = active_index(entries)
        if active >= 0:
            self.write_entry(active, replace(entries[active], state=state))
        return active

    def state_of_slot(self, slot: int) -> OtaImgState | int | None:
        """esp_ota_get_state_partition: the state of the first entry (sector 0, then 1)
        that selects `slot` and has a correct crc; None when no entry does."""
        for entry in self.read():
            if entry.slot(self.app_count) == slot and entry.crc_ok:
                try:
                    return OtaImgState(entry.state)
                except ValueError:
                    return entry.state
        return None
