"""The NOR flash model and the partition table."""

from __future__ import annotations

import gc

import pytest

from simulator.esp_err import ESP_ERR_INVALID_ARG, ESP_ERR_INVALID_SIZE, EspError
from simulator.flash import (
    SECTOR_SIZE,
    Flash,
    intern_sector,
    pooled_sector_count,
)
from simulator.partitions import (
    ADVANCED_HTTPS_OTA_TABLE,
    AppSubtype,
    Partition,
    PartitionTable,
    PartitionType,
)


def test_new_flash_reads_erased_and_stores_nothing() -> None:
    flash = Flash(64 * 1024)
    assert flash.read(0, 10) == b"\xff" * 10
    assert flash.read(SECTOR_SIZE - 3, 6) == b"\xff" * 6
    assert flash.stored_sector_count() == 0
    assert flash.private_bytes() == 0


def test_write_then_read_across_sectors() -> None:
    flash = Flash(64 * 1024)
    data = bytes(range(256)) * 40  # 10240 bytes, spans three sectors
    flash.write(SECTOR_SIZE - 100, data)
    assert flash.read(SECTOR_SIZE - 100, len(data)) == data
    assert flash.read(SECTOR_SIZE - 101, 1) == b"\xff"
    assert flash.stored_sector_count() == 4  # sectors 0..3 touched
    assert flash.program_conflicts == 0


def test_programming_only_clears_bits_like_nor_flash() -> None:
    flash = Flash(64 * 1024)
    flash.write(0, b"\x0f\xf0")
    # Writing 1 bits over 0 bits is impossible: the chip ANDs old and new.
    flash.write(0, b"\xf0\xff")
    assert flash.read(0, 2) == b"\x00\xf0"
    # 0xf0 over 0x0f: four 1-bits lost; 0xff over 0xf0: four more.
    assert flash.program_conflicts == 8
    # Writing the same bits again is harmless (what a resumed download does).
    flash.write(1, b"\xf0")
    assert flash.program_conflicts == 8
    flash.erase_range(0, SECTOR_SIZE)
    flash.write(0, b"\xf0\xff")
    assert flash.read(0, 2) == b"\xf0\xff"
    assert flash.sectors_erased == 1


def test_erase_must_be_sector_aligned_and_in_range() -> None:
    flash = Flash(64 * 1024)
    with pytest.raises(EspError) as caught:
        flash.erase_range(100, SECTOR_SIZE)
    assert caught.value.name == ESP_ERR_INVALID_ARG
    with pytest.raises(EspError) as caught:
        flash.erase_range(0, 100)
    assert caught.value.name == ESP_ERR_INVALID_ARG
    with pytest.raises(EspError) as caught:
        flash.read(64 * 1024 - 1, 2)
    assert caught.value.name == ESP_ERR_INVALID_SIZE
    with pytest.raises(EspError):
        flash.write(-1, b"x")
    with pytest.raises(ValueError, match="multiple"):
        Flash(1000)


def test_freeze_shares_identical_sectors_between_chips() -> None:
    first = Flash(64 * 1024)
    second = Flash(64 * 1024)
    payload = bytes([7]) * SECTOR_SIZE
    first.write(0, payload)
    second.write(SECTOR_SIZE, payload)
    assert first.private_bytes() == SECTOR_SIZE
    first.freeze()
    second.freeze()
    assert first.private_bytes() == 0
    assert second.private_bytes() == 0
    shared_first = first.snapshot()[0]
    shared_second = second.snapshot()[1]
    assert shared_first is shared_second  # one copy in memory for both chips
    assert first.read(0, SECTOR_SIZE) == payload


def test_freeze_drops_sectors_written_back_to_erased_and_pool_forgets() -> None:
    flash = Flash(64 * 1024)
    flash.write(0, b"\xff" * 16)
    flash.freeze()
    assert flash.stored_sector_count() == 0
    unique = bytes([0x5A, 0xA5]) * (SECTOR_SIZE // 2)
    before = pooled_sector_count()
    flash.write(0, unique)
    flash.freeze()
    assert pooled_sector_count() == before + 1
    flash.erase_range(0, SECTOR_SIZE)
    gc.collect()
    assert pooled_sector_count() == before


def test_write_into_shared_sector_copies_it_first() -> None:
    first = Flash(64 * 1024)
    second = Flash(64 * 1024)
    payload = bytes([0xF3]) * SECTOR_SIZE
    first.write(0, payload)
    second.write(0, payload)
    first.freeze()
    second.freeze()
    first.write(10, b"\x00")
    assert first.read(10, 1) == b"\x00"
    assert second.read(10, 1) == b"\xf3"  # the other chip's copy is untouched


def test_region_fingerprint_follows_content_not_address() -> None:
    first = Flash(64 * 1024)
    second = Flash(64 * 1024)
    first.write(0, b"firmware")
    second.write(4 * SECTOR_SIZE, b"firmware")
    assert first.region_fingerprint(0, 2 * SECTOR_SIZE) == second.region_fingerprint(
        4 * SECTOR_SIZE, 2 * SECTOR_SIZE
    )
    before = first.region_fingerprint(0, 2 * SECTOR_SIZE)
    first.write(SECTOR_SIZE, b"\x00")
    assert first.region_fingerprint(0, 2 * SECTOR_SIZE) != before
    assert first.region_fingerprint(0, 2 * SECTOR_SIZE) != first.region_fingerprint(
        0, 3 * SECTOR_SIZE
    )
    with pytest.raises(ValueError, match="aligned"):
        first.region_fingerprint(1, SECTOR_SIZE)


def test_snapshot_and_restore() -> None:
    flash = Flash(64 * 1024)
    flash.write(SECTOR_SIZE * 2, b"hello")
    snapshot = flash.snapshot()
    assert list(snapshot) == [2]
    other = Flash(64 * 1024)
    other.write(0, b"junk")
    other.restore(snapshot)
    assert other.read(SECTOR_SIZE * 2, 5) == b"hello"
    assert other.read(0, 4) == b"\xff" * 4
    with pytest.raises(EspError):
        other.restore({99: snapshot[2]})
    with pytest.raises(ValueError, match="4096"):
        intern_sector(b"short")


def test_advanced_https_ota_partition_table() -> None:
    table = ADVANCED_HTTPS_OTA_TABLE
    rows = {(p.label, p.offset, p.size) for p in table.partitions}
    assert rows == {
        ("nvs", 0x9000, 24 * 1024),
        ("otadata", 0xF000, 8 * 1024),
        ("phy_init", 0x11000, 4 * 1024),
        ("ota_0", 0x20000, 1700 * 1024),
        ("ota_1", 0x1D0000, 1700 * 1024),
    }
    assert table.factory is None
    assert [p.label for p in table.ota_apps] == ["ota_0", "ota_1"]
    assert [p.ota_slot for p in table.ota_apps] == [0, 1]
    assert table.otadata.label == "otadata"
    assert table.by_label("ota_1").end == 0x1D0000 + 1700 * 1024
    assert max(p.end for p in table.partitions) <= 4 * 1024 * 1024
    with pytest.raises(KeyError):
        table.by_label("factory")
    with pytest.raises(ValueError, match="not an OTA"):
        _ = table.otadata.ota_slot


def test_partition_table_validation() -> None:
    app = Partition("a", PartitionType.APP, AppSubtype.OTA_0, 0x10000, 0x10000)
    with pytest.raises(ValueError, match="overlap"):
        PartitionTable((app, Partition("b", PartitionType.APP, AppSubtype.OTA_1, 0x18000, 0x10000)))
    with pytest.raises(ValueError, match="aligned"):
        PartitionTable((Partition("c", PartitionType.APP, AppSubtype.OTA_0, 0x10001, 0x1000),))
    with pytest.raises(ValueError, match="unique"):
        PartitionTable((app, Partition("a", PartitionType.APP, AppSubtype.OTA_1, 0x30000, 0x1000)))
    factory = Partition("factory", PartitionType.APP, AppSubtype.FACTORY, 0x40000, 0x1000)
    table = PartitionTable((app, factory))
    assert table.factory == factory
    with pytest.raises(KeyError):
        _ = table.otadata


def test_freeze_below_keeps_only_the_sector_being_written() -> None:
    flash = Flash(64 * 1024)
    flash.write(0, b"\x01" * (2 * SECTOR_SIZE + 10))
    assert flash.private_bytes() == 3 * SECTOR_SIZE
    flash.freeze_below(2 * SECTOR_SIZE + 10)
    assert flash.private_bytes() == SECTOR_SIZE  # sector 2 is still being written
    assert flash.read(0, 2 * SECTOR_SIZE + 10) == b"\x01" * (2 * SECTOR_SIZE + 10)
    flash.erase_range(2 * SECTOR_SIZE, SECTOR_SIZE)
    assert flash.private_bytes() == 0
