"""otadata: byte layout, CRCs, selection rules and the writes esp_ota_ops makes."""

from __future__ import annotations

import struct
import zlib

import pytest

from simulator.flash import SECTOR_SIZE, Flash
from simulator.otadata import (
    ERASED_ENTRY,
    OtaData,
    OtaImgState,
    OtaSelectEntry,
    active_index,
    last_invalid_index,
    ota_select_crc,
    seq_for_slot,
)
from simulator.partitions import ADVANCED_HTTPS_OTA_TABLE

OTADATA = ADVANCED_HTTPS_OTA_TABLE.otadata


def reference_crc(seq: int) -> int:
    """ROM crc32_le(UINT32_MAX, &seq, 4), computed independently of the simulator: a
    bitwise reflected CRC-32 (poly 0xEDB88320) with the usual pre/post inversion."""
    crc = 0xFFFFFFFF ^ 0xFFFFFFFF  # esp_rom_crc32_le inverts its seed first
    for byte in seq.to_bytes(4, "little"):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("seq", [1, 2, 3, 7, 0x12345678])
def test_crc_matches_rom_crc32_le(seq: int) -> None:
    assert ota_select_crc(seq) == reference_crc(seq)
    assert ota_select_crc(seq) == zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


def test_known_crc_of_seq_1() -> None:
    # The value every ESP32 writes on its first boot (otatool shows it too).
    assert ota_select_crc(1) == 0x4743989A


def test_entry_byte_layout() -> None:
    entry = OtaSelectEntry.make(5, OtaImgState.PENDING_VERIFY)
    raw = entry.pack()
    assert len(raw) == 32
    assert raw[0:4] == (5).to_bytes(4, "little")
    assert raw[4:24] == b"\xff" * 20
    assert raw[24:28] == (1).to_bytes(4, "little")
    assert raw[28:32] == reference_crc(5).to_bytes(4, "little")
    assert OtaSelectEntry.unpack(raw) == entry


def test_validity_rules() -> None:
    assert not ERASED_ENTRY.is_valid
    assert ERASED_ENTRY.is_initial
    good = OtaSelectEntry.make(3, OtaImgState.VALID)
    assert good.is_valid
    assert not good.is_initial
    assert OtaSelectEntry.make(3, OtaImgState.NEW).is_valid
    assert OtaSelectEntry.make(3, OtaImgState.UNDEFINED).is_valid
    assert not OtaSelectEntry.make(3, OtaImgState.INVALID).is_valid
    assert not OtaSelectEntry.make(3, OtaImgState.ABORTED).is_valid
    assert OtaSelectEntry.make(3, OtaImgState.ABORTED).is_rolled_back
    bad_crc = OtaSelectEntry(seq=3, state=OtaImgState.VALID, crc=0)
    assert not bad_crc.is_valid
    assert bad_crc.is_initial
    assert not bad_crc.is_rolled_back
    assert good.state_name() == "VALID"
    assert OtaSelectEntry.make(1, 77).state_name() == "0x0000004d"


def test_slot_from_seq() -> None:
    assert OtaSelectEntry.make(1, 0).slot(2) == 0
    assert OtaSelectEntry.make(2, 0).slot(2) == 1
    assert OtaSelectEntry.make(3, 0).slot(2) == 0
    # seq 0 wraps as u32: (0 - 1) % 2 == 1
    assert OtaSelectEntry.make(0, 0).slot(2) == 1


def test_higher_valid_seq_wins() -> None:
    one = OtaSelectEntry.make(1, OtaImgState.VALID)
    two = OtaSelectEntry.make(2, OtaImgState.NEW)
    assert active_index((one, two)) == 1
    assert active_index((two, one)) == 0
    aborted = OtaSelectEntry.make(2, OtaImgState.ABORTED)
    assert active_index((one, aborted)) == 0
    assert active_index((ERASED_ENTRY, ERASED_ENTRY)) == -1
    assert last_invalid_index((one, aborted)) == 1
    assert last_invalid_index((one, two)) == -1
    # Two rolled-back entries: ESP-IDF reports the one with the lower seq.
    invalid_three = OtaSelectEntry.make(3, OtaImgState.INVALID)
    assert last_invalid_index((invalid_three, aborted)) == 1


@pytest.mark.parametrize(
    ("current", "slot", "expected"),
    [(1, 1, 2), (2, 0, 3), (3, 1, 4), (0, 0, 1), (5, 0, 5), (6, 0, 7)],
)
def test_seq_for_slot(current: int, slot: int, expected: int) -> None:
    assert seq_for_slot(current, slot, 2) == expected
    assert (expected - 1) % 2 == slot


def otadata_on_new_flash() -> tuple[Flash, OtaData]:
    flash = Flash()
    return flash, OtaData(flash, OTADATA, app_count=2)


def test_set_boot_slot_on_blank_otadata_writes_sector_0() -> None:
    flash, otadata = otadata_on_new_flash()
    assert otadata.active_slot() is None
    assert otadata.set_boot_slot(1, OtaImgState.NEW) == 0
    raw = flash.read(OTADATA.offset, SECTOR_SIZE)
    assert raw[:4] == (2).to_bytes(4, "little")
    assert raw[24:28] == (0).to_bytes(4, "little")
    assert raw[28:32] == reference_crc(2).to_bytes(4, "little")
    assert raw[32:] == b"\xff" * (SECTOR_SIZE - 32)
    assert flash.read(OTADATA.offset + SECTOR_SIZE, 32) == b"\xff" * 32
    assert otadata.active_slot() == 1


def test_set_boot_slot_writes_next_seq_into_other_sector() -> None:
    flash, otadata = otadata_on_new_flash()
    otadata.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    assert otadata.set_boot_slot(1, OtaImgState.NEW) == 1
    second = flash.read(OTADATA.offset + SECTOR_SIZE, 32)
    seq, _label, state, crc = struct.unpack("<I20sII", second)
    assert (seq, state, crc) == (2, OtaImgState.NEW, reference_crc(2))
    # the first sector is untouched
    first = OtaSelectEntry.unpack(flash.read(OTADATA.offset, 32))
    assert (first.seq, first.state) == (1, OtaImgState.VALID)
    assert otadata.active_slot() == 1
    # and back to slot 0: seq 3 into sector 0
    assert otadata.set_boot_slot(0, OtaImgState.NEW) == 0
    assert otadata.read()[0].seq == 3
    assert otadata.active_slot() == 0


def test_set_boot_slot_to_the_active_slot_only_rewrites_its_state() -> None:
    _flash, otadata = otadata_on_new_flash()
    otadata.write_entry(1, OtaSelectEntry.make(2, OtaImgState.VALID))
    assert otadata.set_boot_slot(1, OtaImgState.NEW) == 1
    entry = otadata.read()[1]
    assert (entry.seq, entry.state) == (2, OtaImgState.NEW)
    with pytest.raises(ValueError, match="slot 2"):
        otadata.set_boot_slot(2, OtaImgState.NEW)


def test_set_active_state_and_state_of_slot() -> None:
    _flash, otadata = otadata_on_new_flash()
    assert otadata.set_active_state(OtaImgState.VALID) == -1
    assert otadata.state_of_slot(0) is None
    otadata.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    otadata.write_entry(1, OtaSelectEntry.make(2, OtaImgState.PENDING_VERIFY))
    assert otadata.state_of_slot(1) is OtaImgState.PENDING_VERIFY
    assert otadata.set_active_state(OtaImgState.VALID) == 1
    assert otadata.state_of_slot(1) is OtaImgState.VALID
    assert otadata.state_of_slot(0) is OtaImgState.VALID
    otadata.write_entry(0, OtaSelectEntry.make(1, 0x77))
    assert otadata.state_of_slot(0) == 0x77
    otadata.erase_entry(0)
    assert otadata.read()[0] == ERASED_ENTRY
    with pytest.raises(ValueError, match="two sectors"):
        OtaData(Flash(), ADVANCED_HTTPS_OTA_TABLE.by_label("phy_init"), 2)
