"""The bootloader's choice of app: otadata transitions, rollback, fallbacks, anti-rollback."""

from __future__ import annotations

import pytest

from simulator.bootloader import Bootloader, NoBootableAppError
from simulator.efuse import EFuse
from simulator.flash import Flash
from simulator.hardware import Hardware
from simulator.otadata import ERASED_ENTRY, OtaData, OtaImgState, OtaSelectEntry
from simulator.partitions import (
    ADVANCED_HTTPS_OTA_TABLE,
    AppSubtype,
    DataSubtype,
    Partition,
    PartitionTable,
    PartitionType,
)

from .conftest import make_image

TABLE = ADVANCED_HTTPS_OTA_TABLE
OTA_0, OTA_1 = TABLE.ota_apps


def program(flash: Flash, slot: Partition, image: bytes) -> None:
    flash.erase_range(slot.offset, slot.size)
    flash.write(slot.offset, image)


def make_bootloader(
    flash: Flash,
    *,
    efuse: EFuse | None = None,
    anti_rollback: bool = True,
    table: PartitionTable = TABLE,
    chip_revision: int = 301,
) -> Bootloader:
    return Bootloader(
        Hardware(
            flash=flash,
            table=table,
            efuse=efuse or EFuse(),
            chip_id=0,
            chip_revision=chip_revision,
            anti_rollback=anti_rollback,
        )
    )


def otadata(flash: Flash, table: PartitionTable = TABLE) -> OtaData:
    return OtaData(flash, table.otadata, len(table.ota_apps))


@pytest.mark.parametrize("anti_rollback", [True, False])
def test_first_boot_runs_ota_0_and_writes_seq_1_valid(anti_rollback: bool) -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0", secure_version=2))
    efuse = EFuse()
    result = make_bootloader(flash, efuse=efuse, anti_rollback=anti_rollback).boot()
    assert result.partition == OTA_0
    assert result.image.app.version == "1.0.0"
    assert not result.first_boot_of_new_image
    entries = otadata(flash).read()
    if anti_rollback:
        assert (entries[0].seq, entries[0].state) == (1, OtaImgState.VALID)
        assert entries[0].crc_ok
        assert efuse.secure_version == 2  # set_actual_ota_seq updates the eFuse
    else:
        # Without anti-rollback the blank-otadata path also writes seq 1 VALID.
        assert (entries[0].seq, entries[0].state) == (1, OtaImgState.VALID)
        assert efuse.secure_version == 0
    assert entries[1] == ERASED_ENTRY
    assert any("Set actual ota_seq=1" in line for line in result.log)


def test_new_entry_becomes_pending_verify_and_boots() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0"))
    program(flash, OTA_1, make_image("1.1.0"))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    data.write_entry(1, OtaSelectEntry.make(2, OtaImgState.NEW))
    result = make_bootloader(flash).boot()
    assert result.partition == OTA_1
    assert result.first_boot_of_new_image
    assert data.read()[1].state == OtaImgState.PENDING_VERIFY
    assert data.read()[0].state == OtaImgState.VALID


def test_reboot_while_pending_verify_rolls_back() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0"))
    program(flash, OTA_1, make_image("1.1.0"))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    data.write_entry(1, OtaSelectEntry.make(2, OtaImgState.PENDING_VERIFY))
    result = make_bootloader(flash).boot()
    assert result.partition == OTA_0
    assert not result.first_boot_of_new_image
    aborted = data.read()[1]
    assert (aborted.seq, aborted.state) == (2, OtaImgState.ABORTED)
    assert aborted.crc_ok
    assert "otadata[1] is marking as ABORTED" in result.log


def test_valid_entry_boots_and_bumps_efuse() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0", secure_version=1))
    program(flash, OTA_1, make_image("2.0.0", secure_version=3))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    data.write_entry(1, OtaSelectEntry.make(2, OtaImgState.VALID))
    efuse = EFuse(secure_version=1)
    result = make_bootloader(flash, efuse=efuse).boot()
    assert result.partition == OTA_1
    assert efuse.secure_version == 3


def test_efuse_too_narrow_is_logged_not_burnt() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0", secure_version=40))
    efuse = EFuse(secure_version=0, secure_version_bits=32)
    result = make_bootloader(flash, efuse=efuse).boot()
    assert result.partition == OTA_0
    assert efuse.secure_version == 0
    assert any("eFuse not updated" in line for line in result.log)


def test_image_that_does_not_load_falls_back_to_the_other_slot() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0"))
    broken = bytearray(make_image("1.1.0"))
    broken[-100] ^= 0xFF  # checksum and SHA-256 no longer match
    program(flash, OTA_1, bytes(broken))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    data.write_entry(1, OtaSelectEntry.make(2, OtaImgState.NEW))
    result = make_bootloader(flash).boot()
    assert result.partition == OTA_0
    assert not result.first_boot_of_new_image
    # The bootloader marked the entry before trying to load it.
    assert data.read()[1].state == OtaImgState.PENDING_VERIFY
    assert any("ota_1: image does not load" in line for line in result.log)


def test_slot_0_broken_tries_forward_to_slot_1() -> None:
    flash = Flash()
    program(flash, OTA_1, make_image("1.1.0"))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))  # points at the empty ota_0
    result = make_bootloader(flash).boot()
    assert result.partition == OTA_1


def test_image_for_another_chip_or_revision_is_not_loaded() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0", chip="esp32s3"))
    program(flash, OTA_1, make_image("1.1.0", min_chip_rev_full=100))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    result = make_bootloader(flash, chip_revision=100).boot()
    assert result.partition == OTA_1
    assert any("mismatch chip ID" in line for line in result.log)
    with pytest.raises(NoBootableAppError, match="chip revision check failed"):
        make_bootloader(flash, chip_revision=99).boot()


def test_anti_rollback_skips_a_slot_below_the_efuse() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0", secure_version=1))
    program(flash, OTA_1, make_image("2.0.0", secure_version=2))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.VALID))
    data.write_entry(1, OtaSelectEntry.make(2, OtaImgState.PENDING_VERIFY))
    # ota_1 rebooted unconfirmed: rolling back to ota_0 is impossible with eFuse 2.
    efuse = EFuse(secure_version=2)
    result = make_bootloader(flash, efuse=efuse).boot()
    assert result.partition == OTA_1
    assert any("ota data partition invalid" in line for line in result.log)
    assert any("ota_0: secure_version below" in line for line in result.log)


def test_no_bootable_app() -> None:
    flash = Flash()
    with pytest.raises(NoBootableAppError, match="No bootable app"):
        make_bootloader(flash).boot()


def test_without_anti_rollback_both_entries_invalid_tries_ota_0() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0"))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(1, OtaImgState.INVALID))
    data.write_entry(1, OtaSelectEntry.make(2, OtaImgState.ABORTED))
    result = make_bootloader(flash, anti_rollback=False).boot()
    assert result.partition == OTA_0
    assert "No factory image, trying OTA 0" in result.log
    # Entries were well formed, so they are not "initial": nothing rewritten.
    assert data.read()[0].state == OtaImgState.INVALID


def test_without_anti_rollback_the_higher_valid_seq_boots() -> None:
    flash = Flash()
    program(flash, OTA_0, make_image("1.0.0"))
    program(flash, OTA_1, make_image("1.1.0"))
    data = otadata(flash)
    data.write_entry(0, OtaSelectEntry.make(3, OtaImgState.VALID))
    data.write_entry(1, OtaSelectEntry.make(2, OtaImgState.VALID))
    result = make_bootloader(flash, anti_rollback=False).boot()
    assert result.partition == OTA_0
    data.write_entry(0, OtaSelectEntry.make(3, OtaImgState.INVALID))
    data.write_entry(1, OtaSelectEntry(seq=2, state=OtaImgState.VALID, crc=0))
    result = make_bootloader(flash, anti_rollback=False).boot()
    assert result.partition == OTA_0  # both unusable: tries ota_0 without writing


def test_factory_partition_boots_when_otadata_is_blank() -> None:
    factory = Partition("factory", PartitionType.APP, AppSubtype.FACTORY, 0x10000, 0x40000)
    table = PartitionTable(
        (
            Partition("otadata", PartitionType.DATA, DataSubtype.OTA, 0xD000, 0x2000),
            factory,
            Partition("ota_0", PartitionType.APP, AppSubtype.OTA_0, 0x50000, 0x40000),
            Partition("ota_1", PartitionType.APP, AppSubtype.OTA_1, 0x90000, 0x40000),
        )
    )
    flash = Flash()
    program(flash, factory, make_image("0.9.0"))
    result = make_bootloader(flash, anti_rollback=False, table=table).boot()
    assert result.partition == factory
    assert otadata(flash, table).read() == (ERASED_ENTRY, ERASED_ENTRY)
