"""A sparse, memory-lean model of a SPI NOR flash chip.

NOR flash facts the model keeps: an erased byte reads 0xFF; erasing works on whole 4 KiB
sectors; programming can only clear bits (1 -> 0), so writing over data that was not erased
first ANDs the old and new bytes, exactly as the chip does (ESP-IDF does not verify writes by
default, CONFIG_SPI_FLASH_VERIFY_WRITE is off). Such conflicts are counted so tests can see them.

Memory: only sectors that hold something other than 0xFF are stored. A sector that is no
longer being written is "frozen" into an immutable object kept in a process-wide pool keyed
by its content, so 200 devices holding the same firmware share one copy of every sector.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Final

from .esp_err import ESP_ERR_INVALID_ARG, ESP_ERR_INVALID_SIZE, EspError

SECTOR_SIZE: Final = 4096  # SPI_FLASH_SEC_SIZE: the smallest erasable unit
BLOCK_SIZE: Final = 65536  # 64 KiB block erase (what a bulk erase uses)
ERASED_BYTE: Final = 0xFF
DEFAULT_FLASH_SIZE: Final = 4 * 1024 * 1024

_ERASED_SECTOR: Final = bytes([ERASED_BYTE]) * SECTOR_SIZE


class SharedSector:
    """An immutable sector's content, shared by every flash that holds the same bytes."""

    __slots__ = ("__weakref__", "data", "digest")

    def __init__(self, data: bytes, digest: bytes) -> None:
        self.data = data
        self.digest = digest


# Content digest -> sector; entries vanish when no flash refers to them any more.
_SECTOR_POOL: weakref.WeakValueDictionary[bytes, SharedSector] = weakref.WeakValueDictionary()


def _sector_digest(data: bytes | bytearray) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def intern_sector(data: bytes | bytearray) -> SharedSector:
    """Return the pooled sector holding `data` (SECTOR_SIZE bytes), creating it if new."""
    if len(data) != SECTOR_SIZE:
        raise ValueError(f"a sector is {SECTOR_SIZE} bytes, got {len(data)}")
    digest = _sector_digest(data)
    shared = _SECTOR_POOL.get(digest)
    if shared is None:
        shared = SharedSector(bytes(data), digest)
        _SECTOR_POOL[digest] = shared
    return shared


def pooled_sector_count() -> int:
    """How many distinct sectors the process-wide pool holds (for memory figures)."""
    return len(_SECTOR_POOL)


class Flash:
    """One SPI NOR flash chip: read, program (AND semantics), erase by sectors."""

    def __init__(self, size: int = DEFAULT_FLASH_SIZE) -> None:
        if size <= 0 or size % SECTOR_SIZE:
            raise ValueError(f"flash size {size} is not a positive multiple of {SECTOR_SIZE}")
        self.size = size
        # sector index -> content; absent means erased (all 0xFF).
        self._sectors: dict[int, SharedSector | bytearray] = {}
        self._dirty: set[int] = set()  # sectors held as private bytearrays
        self.program_conflicts = 0  # bits a write wanted to set to 1 over a 0 (NOR cannot)
        self.sectors_erased = 0  # erase operations, counted in sectors

    # --- helpers -------------------------------------------------------------------------

    def _check_range(self, address: int, length: int) -> None:
        if address < 0 or length < 0 or address + length > self.size:
            raise EspError(
                ESP_ERR_INVALID_SIZE,
                f"flash access 0x{address:x}+{length} outside a {self.size}-byte chip",
            )

    # --- the chip's operations -----------------------------------------------------------

    def read(self, address: int, length: int) -> bytes:
        """Read `length` bytes at `address` (erased bytes read 0xFF)."""
        self._check_range(address, length)
        out = bytearray()
        position = address
        end = address + length
        while position < end:
            sector, offset = divmod(position, SECTOR_SIZE)
            take = min(SECTOR_SIZE - offset, end - position)
            content = self._sectors.get(sector)
            if content is None:
                out += _ERASED_SECTOR[:take]
            elif isinstance(content, SharedSector):
                out += content.data[offset : offset + take]
            else:
                out += content[offset : offset + take]
            position += take
        return bytes(out)

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Program `data` at `address`: each byte becomes old AND new, as on NOR flash."""
        self._check_range(address, len(data))
        view = memoryview(data)
        position = address
        end = address + len(view)
        consumed = 0
        while position < end:
            sector, offset = divmod(position, SECTOR_SIZE)
            take = min(SECTOR_SIZE - offset, end - position)
            chunk = view[consumed : consumed + take]
            content = self._sectors.get(sector)
            if content is None:
                buffer = bytearray(_ERASED_SECTOR)
            elif isinstance(content, SharedSector):
                buffer = bytearray(content.data)
            else:
                buffer = content
            old = buffer[offset : offset + take]
            if old.count(ERASED_BYTE) == take:
                buffer[offset : offset + take] = chunk
            else:
                old_bits = int.from_bytes(old)
                new_bits = int.from_bytes(chunk)
                self.program_conflicts += (new_bits & ~old_bits).bit_count()
                buffer[offset : offset + take] = (old_bits & new_bits).to_bytes(take)
            self._sectors[sector] = buffer
            self._dirty.add(sector)
            position += take
            consumed += take

    def erase_range(self, address: int, length: int) -> int:
        """Erase whole sectors covering [address, address+length); return how many.

        Like esp_partition_erase_range, both ends must be sector aligned.
        """
        self._check_range(address, length)
        if address % SECTOR_SIZE or length % SECTOR_SIZE:
            raise EspError(
                ESP_ERR_INVALID_ARG,
                f"erase 0x{address:x}+{length} is not aligned to {SECTOR_SIZE}-byte sectors",
            )
        first = address // SECTOR_SIZE
        count = length // SECTOR_SIZE
        for sector in range(first, first + count):
            self._sectors.pop(sector, None)
            self._dirty.discard(sector)
        self.sectors_erased += count
        return count

    # --- memory management and snapshots -------------------------------------------------

    def _freeze_sector(self, sector: int) -> None:
        content = self._sectors.get(sector)
        self._dirty.discard(sector)
        if isinstance(content, bytearray):
            if content.count(ERASED_BYTE) == SECTOR_SIZE:
                del self._sectors[sector]
            else:
                self._sectors[sector] = intern_sector(content)

    def freeze(self) -> None:
        """Move sectors written since the last freeze into the shared pool (or drop them
        if they read all 0xFF): call when a burst of writes is over."""
        for sector in list(self._dirty):
            self._freeze_sector(sector)
        self._dirty = set()  # a drained set keeps its grown table: start a fresh one

    def freeze_below(self, address: int) -> None:
        """Freeze the written sectors that end at or before `address` (a sequential writer
        calls this as it goes, so a device never holds more than a sector privately)."""
        limit = address // SECTOR_SIZE
        for sector in [s for s in self._dirty if s < limit]:
            self._freeze_sector(sector)

    def private_bytes(self) -> int:
        """Bytes this chip holds on its own (sectors written and not frozen yet)."""
        return len(self._dirty) * SECTOR_SIZE

    def stored_sector_count(self) -> int:
        """Sectors that are not erased."""
        return len(self._sectors)

    def region_fingerprint(self, address: int, length: int) -> bytes:
        """A digest of a sector-aligned region's content: equal content gives an equal
        digest, at any address of any chip.

        Cheap: it combines the pooled sectors' digests instead of hashing the bytes again.
        """
        self._check_range(address, length)
        if address % SECTOR_SIZE or length % SECTOR_SIZE:
            raise ValueError(f"region 0x{address:x}+{length} is not sector aligned")
        self.freeze()
        digest = hashlib.blake2b(digest_size=16)
        digest.update(length.to_bytes(8, "little"))
        first = address // SECTOR_SIZE
        last = (address + length - 1) // SECTOR_SIZE
        for sector in range(first, last + 1):
            content = self._sectors.get(sector)
            digest.update(content.digest if isinstance(content, SharedSector) else b"-")
        return digest.digest()

    def snapshot(self) -> dict[int, SharedSector]:
        """Freeze, then return sector index -> shared content of every non-erased sector."""
        self.freeze()
        return {s: c for s, c in self._sectors.items() if isinstance(c, SharedSector)}

    def restore(self, sectors: dict[int, SharedSector]) -> None:
        """Replace the whole content with a snapshot (sectors absent from it are erased)."""
        for sector in sectors:
            if not 0 <= sector < self.size // SECTOR_SIZE:
                raise EspError(ESP_ERR_INVALID_SIZE, f"sector {sector} outside the chip")
        self._sectors = dict(sectors)
        self._dirty.clear()
