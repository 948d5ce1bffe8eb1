"""The state folder: sectors shared by content, per-device JSON, errors on damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.flash import SECTOR_SIZE, Flash
from simulator.persistence import DeviceState, DeviceStore, StateError


def sample_state() -> DeviceState:
    flash = Flash(64 * 1024)
    flash.write(0, b"hello")
    flash.write(3 * SECTOR_SIZE, bytes(range(256)) * 16)
    return DeviceState(
        flash_size=flash.size,
        sectors=flash.snapshot(),
        efuse_secure_version=3,
        nvs={"last_ota": {"state": "idle"}, "next_event_id": 7},
    )


async def test_save_and_load_round_trip(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path, "24:0a:c4:00:00:01")
    assert await store.load() is None
    state = sample_state()
    await store.save(state)
    assert store.device_file == tmp_path / "devices" / "24_0a_c4_00_00_01.json"
    loaded = await store.load()
    assert loaded is not None
    assert loaded.flash_size == state.flash_size
    assert loaded.efuse_secure_version == 3
    assert loaded.nvs == state.nvs
    assert {i: s.data for i, s in loaded.sectors.items()} == {
        i: s.data for i, s in state.sectors.items()
    }
    # Saving again rewrites the JSON, never the sector files.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sectors").iterdir()}
    await store.save(state)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "sectors").iterdir()}
    assert before == after


async def test_devices_share_sector_files(tmp_path: Path) -> None:
    state = sample_state()
    await DeviceStore(tmp_path, "a").save(state)
    await DeviceStore(tmp_path, "b").save(state)
    assert len(list((tmp_path / "sectors").iterdir())) == len(state.sectors)
    assert len(list((tmp_path / "devices").iterdir())) == 2


def test_device_id_must_not_be_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        DeviceStore(tmp_path, "")


async def test_damaged_state_is_reported(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path, "dev")
    await store.save(sample_state())
    document = json.loads(store.device_file.read_text())

    store.device_file.write_text(json.dumps({**document, "format": 99}))
    with pytest.raises(StateError, match="unknown format"):
        await store.load()

    store.device_file.write_text("{not json")
    with pytest.raises(StateError):
        await store.load()

    store.device_file.write_text(json.dumps(document))
    name = next(iter(document["sectors"].values()))
    sector_file = tmp_path / "sectors" / f"{name}.bin"
    sector_file.write_bytes(b"short")
    with pytest.raises(StateError, match="is 5 bytes"):
        await store.load()

    sector_file.write_bytes(b"\x00" * SECTOR_SIZE)
    with pytest.raises(StateError, match="does not match its name"):
        await store.load()

    sector_file.unlink()
    with pytest.raises(StateError):
        await store.load()
