"""Where a simulated device keeps its flash, eFuses and NVS between simulator runs.

Layout of a state folder (shared by every device of a fleet):
    sectors/<digest>.bin     one 4 KiB flash sector, named by its content digest; devices
                             holding the same firmware share the files as they share memory
    devices/<device>.json    per device: which sector sits where, eFuse values, NVS keys

Every file operation runs in a worker thread; the JSON is replaced atomically, so a crash
mid-save leaves the previous state. Sector files are never rewritten (same name, same
content) and never deleted while the simulator runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .flash import SECTOR_SIZE, SharedSector, intern_sector

FORMAT_VERSION: Final = 1


class StateError(Exception):
    """A device state file is unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Everything that survives a power cycle."""

    flash_size: int
    sectors: dict[int, SharedSector]
    efuse_secure_version: int
    nvs: dict[str, Any] = field(default_factory=dict)


def _device_file_name(device_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in device_id)
    if not safe:
        raise ValueError("empty device id")
    return f"{safe}.json"


class DeviceStore:
    """The saved state of one device in a state folder."""

    def __init__(self, state_dir: Path, device_id: str) -> None:
        self.state_dir = state_dir
        self.sector_dir = state_dir / "sectors"
        self.device_file = state_dir / "devices" / _device_file_name(device_id)
        self._lock = asyncio.Lock()

    # --- blocking halves (worker thread) ---------------------------------------------------

    def _save_blocking(self, state: DeviceState) -> None:
        self.sector_dir.mkdir(parents=True, exist_ok=True)
        self.device_file.parent.mkdir(parents=True, exist_ok=True)
        layout: dict[str, str] = {}
        for index, sector in sorted(state.sectors.items()):
            name = sector.digest.hex()
            path = self.sector_dir / f"{name}.bin"
            if not path.exists():
                # Devices of one fleet share the folder and save from worker threads at
                # once: each writes its own temporary file (content-addressed, so the
                # last rename wins with the same bytes).
                temporary = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex}.tmp")
                temporary.write_bytes(sector.data)
                temporary.replace(path)
            layout[str(index)] = name
        document = {
            "format": FORMAT_VERSION,
            "flash_size": state.flash_size,
            "sectors": layout,
            "efuse": {"secure_version": state.efuse_secure_version},
            "nvs": state.nvs,
        }
        temporary = self.device_file.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(document, indent=1, sort_keys=True))
        temporary.replace(self.device_file)

    def _load_blocking(self) -> DeviceState | None:
        if not self.device_file.exists():
            return None
        try:
            document = json.loads(self.device_file.read_text())
            if document.get("format") != FORMAT_VERSION:
                raise StateError(f"{self.device_file}: unknown format {document.get('format')}")
            sectors: dict[int, SharedSector] = {}
            for index, name in document["sectors"].items():
                data = (self.sector_dir / f"{name}.bin").read_bytes()
                if len(data) != SECTOR_SIZE:
                    raise StateError(f"sector file {name} is {len(data)} bytes")
                shared = intern_sector(data)
                if shared.digest.hex() != name:
                    raise StateError(f"sector file {name} does not match its name")
                sectors[int(index)] = shared
            return DeviceState(
                flash_size=int(document["flash_size"]),
                sectors=sectors,
                efuse_secure_version=int(document["efuse"]["secure_version"]),
                nvs=dict(document.get("nvs", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StateError(f"{self.device_file}: {err}") from err

    # --- the event loop's side -------------------------------------------------------------

    async def save(self, state: DeviceState) -> None:
        """Write the state (one save at a time per device)."""
        async with self._lock:
            await asyncio.to_thread(self._save_blocking, state)

    async def load(self) -> DeviceState | None:
        """The saved state, None when this device was never saved."""
        async with self._lock:
            return await asyncio.to_thread(self._load_blocking)
