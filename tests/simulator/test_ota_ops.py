"""esp_ota_ops on the simulated flash: begin/write/end, boot partition, confirm, rollback."""

from __future__ import annotations

import pytest

from simulator import app_image
from simulator.efuse import EFuse
from simulator.esp_err import (
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_SIZE,
    ESP_ERR_NOT_FOUND,
    ESP_ERR_NOT_SUPPORTED,
    ESP_ERR_OTA_ALREADY_IN_PROGRESS,
    ESP_ERR_OTA_PARTITION_CONFLICT,
    ESP_ERR_OTA_ROLLBACK_FAILED,
    ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
    ESP_ERR_OTA_SMALL_SEC_VER,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from simulator.flash import SECTOR_SIZE, Flash
from simulator.hardware import Hardware
from simulator.ota_ops import (
    OTA_SIZE_UNKNOWN,
    OTA_WITH_SEQUENTIAL_WRITES,
    OtaHandle,
    OtaOps,
    PowerLossError,
)
from simulator.otadata import ERASED_ENTRY, OtaImgState, OtaSelectEntry
from simulator.pace import Pace, Timing
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


def make_ops(
    *,
    running_state: int = OtaImgState.VALID,
    efuse: EFuse | None = None,
    running_image: bytes | None = None,
    anti_rollback: bool = True,
    rollback_enabled: bool = True,
) -> OtaOps:
    """A device running ota_0 (otadata seq 1 with `running_state`)."""
    flash = Flash()
    flash.write(OTA_0.offset, running_image or make_image("1.0.0", secure_version=1))
    hardware = Hardware(
        flash=flash,
        table=TABLE,
        efuse=efuse or EFuse(secure_version=1),
        chip_id=0,
        chip_revision=301,
        anti_rollback=anti_rollback,
        rollback_enabled=rollback_enabled,
    )
    ops = OtaOps(hardware, timing=Timing(Pace.UNTHROTTLED), running=OTA_0)
    ops.otadata.write_entry(0, OtaSelectEntry.make(1, running_state))
    return ops


def armed_power_loss(ops: OtaOps) -> int | None:
    """The power-loss fault still armed on `ops` (a function, so type narrowing forgets)."""
    return ops.power_loss_at_byte


async def stage(ops: OtaOps, image: bytes, *, chunk: int = 4096) -> OtaHandle:
    handle = await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    for offset in range(0, len(image), chunk):
        await ops.write(handle, image[offset : offset + chunk])
    return handle


async def test_full_update_then_boot_partition_points_at_ota_1() -> None:
    ops = make_ops()
    image = make_image("1.1.0", secure_version=1)
    handle = await stage(ops, image)
    assert handle.wrote_size == len(image)
    info = ops.end(handle)
    assert info.app.version == "1.1.0"
    assert ops.open_handles == 0
    await ops.set_boot_partition(OTA_1)
    entries = ops.otadata.read()
    assert (entries[1].seq, entries[1].state) == (2, OtaImgState.NEW)
    assert ops.boot_partition() == OTA_1
    assert ops.state_of(OTA_1) is OtaImgState.NEW
    # Sequential writes erase exactly the sectors the image reaches.
    assert ops.flash.read(OTA_1.offset, len(image)) == image
    assert ops.flash.sectors_erased >= -(-len(image) // SECTOR_SIZE)


async def test_set_boot_partition_without_rollback_writes_undefined() -> None:
    ops = make_ops(rollback_enabled=False)
    handle = await stage(ops, make_image("1.1.0", secure_version=1))
    ops.end(handle)
    await ops.set_boot_partition(OTA_1)
    assert ops.otadata.read()[1].state == OtaImgState.UNDEFINED


async def test_sequential_write_erases_sector_by_sector() -> None:
    ops = make_ops()
    handle = await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    before = ops.flash.sectors_erased
    await ops.write(handle, make_image("1.1.0")[:100])
    assert ops.flash.sectors_erased == before + 1
    await ops.write(handle, b"\x00" * 100)  # same sector: no erase
    assert ops.flash.sectors_erased == before + 1
    await ops.write(handle, b"\x00" * SECTOR_SIZE)  # crosses into the next sector
    assert ops.flash.sectors_erased == before + 2
    await ops.write(handle, b"")
    assert handle.wrote_size == 200 + SECTOR_SIZE


async def test_bulk_erase_at_begin() -> None:
    ops = make_ops()
    ops.flash.write(OTA_1.offset + OTA_1.size - 10, b"old")
    before = ops.flash.sectors_erased
    handle = await ops.begin(OTA_1, 10_000)
    assert ops.flash.sectors_erased - before == 3  # 10000 bytes rounded up to sectors
    assert not handle.need_erase
    ops.abort(handle)
    handle = await ops.begin(OTA_1, OTA_SIZE_UNKNOWN)
    assert ops.flash.read(OTA_1.offset + OTA_1.size - 10, 3) == b"\xff" * 3
    ops.abort(handle)
    with pytest.raises(EspError) as caught:
        await ops.begin(OTA_1, OTA_1.size + 1)
    assert caught.value.name == ESP_ERR_INVALID_SIZE
    assert ops.open_handles == 0


async def test_begin_refusals() -> None:
    ops = make_ops()
    with pytest.raises(EspError) as caught:
        await ops.begin(OTA_0, OTA_WITH_SEQUENTIAL_WRITES)
    assert caught.value.name == ESP_ERR_OTA_PARTITION_CONFLICT
    with pytest.raises(EspError) as caught:
        await ops.begin(TABLE.otadata, OTA_WITH_SEQUENTIAL_WRITES)
    assert caught.value.name == ESP_ERR_INVALID_ARG
    handle = await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    with pytest.raises(EspError) as caught:
        await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    assert caught.value.name == ESP_ERR_OTA_ALREADY_IN_PROGRESS
    ops.abort(handle)
    with pytest.raises(EspError) as caught:
        ops.abort(handle)
    assert caught.value.name == ESP_ERR_NOT_FOUND
    pending = make_ops(running_state=OtaImgState.PENDING_VERIFY)
    with pytest.raises(EspError) as caught:
        await pending.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    assert caught.value.name == ESP_ERR_OTA_ROLLBACK_INVALID_STATE
    with pytest.raises(EspError) as caught:
        await pending.resume(OTA_1, OTA_WITH_SEQUENTIAL_WRITES, 4096)
    assert caught.value.name == ESP_ERR_OTA_ROLLBACK_INVALID_STATE


async def test_first_byte_must_be_the_image_magic() -> None:
    ops = make_ops()
    handle = await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    with pytest.raises(EspError) as caught:
        await ops.write(handle, b"<html>")
    assert caught.value.name == ESP_ERR_OTA_VALIDATE_FAILED
    assert "invalid magic byte" in caught.value.message
    assert handle.wrote_size == 0


async def test_write_past_the_partition_end() -> None:
    ops = make_ops()
    handle = await ops.resume(OTA_1, OTA_WITH_SEQUENTIAL_WRITES, OTA_1.size - 10)
    with pytest.raises(EspError) as caught:
        await ops.write(handle, b"\x00" * 20)
    assert caught.value.name == ESP_ERR_INVALID_SIZE
    with pytest.raises(EspError) as caught:
        await ops.resume(OTA_1, OTA_WITH_SEQUENTIAL_WRITES, OTA_1.size + 1)
    assert caught.value.name == ESP_ERR_INVALID_ARG


async def test_resume_continues_without_erasing() -> None:
    ops = make_ops()
    image = make_image("1.1.0", secure_version=1)
    first = await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    await ops.write(first, image[:10_000])
    ops.abort(first)
    resumed = await ops.resume(OTA_1, OTA_WITH_SEQUENTIAL_WRITES, 9 * 1024)
    assert resumed.resumed
    await ops.write(resumed, image[9 * 1024 :])
    assert ops.end(resumed).app.version == "1.1.0"
    assert ops.flash.program_conflicts == 0  # rewriting identical bytes is harmless


async def test_end_verifies_the_staged_image() -> None:
    ops = make_ops()
    handle = await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    with pytest.raises(EspError) as caught:
        ops.end(handle)
    assert caught.value.name == ESP_ERR_INVALID_ARG
    broken = bytearray(make_image("1.1.0"))
    broken[5000] ^= 0x01
    handle = await stage(ops, bytes(broken))
    with pytest.raises(EspError) as caught:
        ops.end(handle)
    assert caught.value.name == ESP_ERR_OTA_VALIDATE_FAILED
    assert "New image failed verification" in caught.value.message
    with pytest.raises(EspError) as caught:
        ops.end(handle)
    assert caught.value.name == ESP_ERR_INVALID_ARG  # the handle is gone
    wrong_chip = make_image("1.1.0", chip="esp32c3")
    handle = await stage(ops, wrong_chip)
    with pytest.raises(EspError, match="mismatch chip ID"):
        ops.end(handle)


async def test_begin_invalidates_the_otadata_entry_of_the_slot_being_rewritten() -> None:
    ops = make_ops()
    ops.otadata.write_entry(1, OtaSelectEntry.make(2, OtaImgState.VALID))
    ops.running = OTA_1  # running ota_1 (seq 2); seq 1 points at ota_0
    assert ops.next_update_partition() == OTA_0
    handle = await ops.begin(OTA_0, OTA_WITH_SEQUENTIAL_WRITES)
    assert ops.otadata.read()[0] == ERASED_ENTRY
    assert not ops.check_rollback_is_possible()
    ops.abort(handle)
    assert not ops.invalidate_inactive_ota_data_slot()  # nothing left to invalidate


async def test_small_secure_version_is_refused_and_the_slot_erased() -> None:
    ops = make_ops(
        efuse=EFuse(secure_version=3), running_image=make_image("1.0.0", secure_version=3)
    )
    handle = await stage(ops, make_image("0.9.0", secure_version=2))
    ops.end(handle)
    with pytest.raises(EspError) as caught:
        await ops.set_boot_partition(OTA_1)
    assert caught.value.name == ESP_ERR_OTA_SMALL_SEC_VER
    assert ops.flash.read(OTA_1.offset, 16) == b"\xff" * 16
    assert ops.boot_partition() == OTA_0
    with pytest.raises(EspError) as caught:
        await ops.set_boot_partition(TABLE.otadata)
    assert caught.value.name == ESP_ERR_INVALID_ARG
    with pytest.raises(EspError) as caught:
        await ops.set_boot_partition(OTA_1)  # erased: no longer an image
    assert caught.value.name == ESP_ERR_OTA_VALIDATE_FAILED


async def test_mark_valid_burns_the_secure_version() -> None:
    image = make_image("1.0.0", secure_version=4)
    ops = make_ops(running_state=OtaImgState.PENDING_VERIFY, running_image=image)
    ops.mark_app_valid_cancel_rollback()
    assert ops.state_of(OTA_0) is OtaImgState.VALID
    assert ops.efuse.secure_version == 4
    ops.efuse.secure_version = 9  # already VALID: nothing is rewritten or burnt
    ops.mark_app_valid_cancel_rollback()
    assert ops.efuse.secure_version == 9


async def test_mark_valid_errors() -> None:
    ops = make_ops(running_state=OtaImgState.PENDING_VERIFY)
    ops.otadata.erase_entry(0)
    with pytest.raises(EspError) as caught:
        ops.mark_app_valid_cancel_rollback()
    assert caught.value.name == ESP_FAIL  # "Running firmware is factory"
    too_high = make_ops(
        running_state=OtaImgState.PENDING_VERIFY,
        running_image=make_image("1.0.0", secure_version=33),
    )
    with pytest.raises(EspError) as caught:
        too_high.mark_app_valid_cancel_rollback()
    assert caught.value.name == ESP_ERR_INVALID_ARG
    lower = make_ops(running_state=OtaImgState.PENDING_VERIFY, efuse=EFuse(secure_version=5))
    with pytest.raises(EspError) as caught:
        lower.mark_app_valid_cancel_rollback()
    assert caught.value.name == ESP_FAIL
    no_desc = make_ops(running_state=OtaImgState.PENDING_VERIFY)
    no_desc.flash.erase_range(OTA_0.offset, SECTOR_SIZE)
    with pytest.raises(EspError) as caught:
        no_desc.mark_app_valid_cancel_rollback()
    assert caught.value.name == ESP_ERR_NOT_FOUND


async def test_mark_invalid_needs_another_valid_app() -> None:
    ops = make_ops()
    with pytest.raises(EspError) as caught:
        ops.mark_app_invalid_rollback()
    assert caught.value.name == ESP_ERR_OTA_ROLLBACK_FAILED
    # ota_1 now holds a loadable app and a VALID entry with a lower seq.
    ops.flash.write(OTA_1.offset, make_image("0.9.0", secure_version=1))
    ops.otadata.write_entry(0, OtaSelectEntry.make(3, OtaImgState.PENDING_VERIFY))
    ops.otadata.write_entry(1, OtaSelectEntry.make(2, OtaImgState.VALID))
    assert ops.check_rollback_is_possible()
    ops.mark_app_invalid_rollback()
    assert ops.otadata.read()[0].state == OtaImgState.INVALID
    assert ops.last_invalid_partition() == OTA_0
    assert ops.boot_partition() == OTA_1


async def test_rollback_possibility_checks_image_and_secure_version() -> None:
    ops = make_ops(efuse=EFuse(secure_version=2))
    ops.otadata.write_entry(0, OtaSelectEntry.make(3, OtaImgState.VALID))
    ops.otadata.write_entry(1, OtaSelectEntry.make(2, OtaImgState.VALID))
    assert not ops.check_rollback_is_possible()  # ota_1 is empty
    ops.flash.write(OTA_1.offset, make_image("0.9.0", secure_version=1))
    assert not ops.check_rollback_is_possible()  # below the eFuse
    no_anti = make_ops(anti_rollback=False)
    no_anti.flash.write(OTA_1.offset, make_image("0.9.0", secure_version=0))
    no_anti.otadata.write_entry(0, OtaSelectEntry.make(3, OtaImgState.VALID))
    no_anti.otadata.write_entry(1, OtaSelectEntry.make(2, OtaImgState.VALID))
    assert no_anti.check_rollback_is_possible()
    no_anti.otadata.erase_entry(0)
    no_anti.otadata.erase_entry(1)
    assert not no_anti.check_rollback_is_possible()


async def test_last_invalid_partition_needs_a_loadable_app() -> None:
    ops = make_ops()
    assert ops.last_invalid_partition() is None
    ops.otadata.write_entry(1, OtaSelectEntry.make(2, OtaImgState.ABORTED))
    assert ops.last_invalid_partition() is None  # ota_1 holds nothing loadable
    ops.flash.write(OTA_1.offset, make_image("1.1.0"))
    assert ops.last_invalid_partition() == OTA_1


async def test_states_and_descriptions() -> None:
    ops = make_ops()
    assert ops.state_of(OTA_1) is None
    with pytest.raises(EspError) as caught:
        ops.state_of(TABLE.otadata)
    assert caught.value.name == ESP_ERR_NOT_SUPPORTED
    description = ops.description(OTA_0)
    assert description is not None
    assert description.version == "1.0.0"
    assert ops.description(OTA_1) is None
    assert ops.app_count == 2
    ops.otadata.erase_entry(0)
    assert ops.boot_partition() == OTA_0
    ops.running = TABLE.otadata  # not an app slot: the first OTA slot is next
    assert ops.next_update_partition() == OTA_0


async def test_power_loss_programs_part_of_the_chunk_then_raises() -> None:
    ops = make_ops()
    image = make_image("1.1.0")
    ops.power_loss_at_byte = 6000
    handle = await ops.begin(OTA_1, OTA_WITH_SEQUENTIAL_WRITES)
    await ops.write(handle, image[:4096])
    with pytest.raises(PowerLossError):
        await ops.write(handle, image[4096:8192])
    assert armed_power_loss(ops) is None  # one-shot
    assert ops.flash.read(OTA_1.offset, 6000) == image[:6000]
    assert ops.flash.read(OTA_1.offset + 6000, 10) == b"\xff" * 10


async def test_mark_valid_without_anti_rollback_leaves_the_efuse() -> None:
    ops = make_ops(running_state=OtaImgState.PENDING_VERIFY, anti_rollback=False)
    ops.mark_app_valid_cancel_rollback()
    assert ops.state_of(OTA_0) is OtaImgState.VALID
    assert ops.efuse.secure_version == 1


async def test_invalidate_skips_an_entry_of_the_running_slot() -> None:
    ops = make_ops()
    ops.otadata.write_entry(1, OtaSelectEntry.make(3, OtaImgState.VALID))  # also ota_0
    assert not ops.invalidate_inactive_ota_data_slot()
    assert ops.otadata.read()[0].seq == 1


async def test_a_table_without_ota_slots() -> None:
    factory = Partition("factory", PartitionType.APP, AppSubtype.FACTORY, 0x10000, 0x40000)
    table = PartitionTable(
        (Partition("otadata", PartitionType.DATA, DataSubtype.OTA, 0xD000, 0x2000), factory)
    )
    hardware = Hardware(flash=Flash(), table=table, efuse=EFuse(), chip_id=0, chip_revision=301)
    ops = OtaOps(hardware, timing=Timing(Pace.UNTHROTTLED), running=factory)
    assert ops.app_count == 0
    assert not ops.check_rollback_is_possible()
    assert not ops.invalidate_inactive_ota_data_slot()
    assert ops.last_invalid_partition() is None
    with pytest.raises(EspError) as caught:
        ops.mark_app_valid_cancel_rollback()
    assert caught.value.name == ESP_FAIL


def test_sixteen_ota_slots() -> None:
    slots = tuple(
        Partition(f"ota_{i}", PartitionType.APP, AppSubtype.OTA_0 + i, 0x10000 * (i + 1), 0x10000)
        for i in range(16)
    )
    assert len(PartitionTable(slots).ota_apps) == 16


async def test_verification_cache_evicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_image, "_CACHE_SIZE", 1)
    ops = make_ops(running_image=make_image("9.9.1"))
    ops.flash.write(OTA_1.offset, make_image("9.9.2"))
    for _ in range(2):
        assert app_image.verify_partition_image(ops.flash, OTA_0).app.version == "9.9.1"
        assert app_image.verify_partition_image(ops.flash, OTA_1).app.version == "9.9.2"
    assert len(app_image._verified) == 1
