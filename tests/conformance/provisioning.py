"""What `idf.py flash` and NVS provisioning put on a fresh C host device's flash.

The C host device (build/firmware-host/esp_ota_device.elf) reads its whole flash from
``<state dir>/flash.bin``: 0xFF everywhere (erased NOR flash), the partition table binary at
0x8000, an NVS partition image holding the device's secret and API port (namespace
``esp_ota``, made with Espressif's PyPI tool ``esp-idf-nvs-partition-gen`` from a CSV, as a
factory would) at the nvs partition's offset, and the factory app image in ota_0; otadata
is left erased, so the first boot is a factory-fresh one.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PARTITION_TABLE_OFFSET: Final = 0x8000
PARTITION_TABLE_MAX_SIZE: Final = 0xC00  # CONFIG_PARTITION_TABLE_OFFSET + 3 KiB
PARTITION_MAGIC: Final = 0x50AA
PARTITION_MD5_MAGIC: Final = 0xEBEB
PARTITION_ENTRY: Final = struct.Struct("<HBBII16sI")  # esp_partition_info_t, 32 bytes
TYPE_APP: Final = 0x00
TYPE_DATA: Final = 0x01
SUBTYPE_APP_OTA_0: Final = 0x10
SUBTYPE_DATA_OTA: Final = 0x00
SUBTYPE_DATA_NVS: Final = 0x02
NVS_NAMESPACE: Final = "esp_ota"
EXAMPLE_NAMESPACE: Final = "example"  # the example firmware's own settings
ERASED: Final = 0xFF
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PartitionEntry:
    """One esp_partition_info_t."""

    type: int
    subtype: int
    offset: int
    size: int
    label: str
    flags: int

    @property
    def end(self) -> int:
        """The first byte after the partition."""
        return self.offset + self.size


@dataclass(frozen=True, slots=True)
class PartitionTable:
    """The partitions the C device's flash is laid out by."""

    entries: tuple[PartitionEntry, ...]

    def find(self, type_: int, subtype: int) -> PartitionEntry:
        """The first partition of this type and subtype; KeyError if there is none."""
        for entry in self.entries:
            if entry.type == type_ and entry.subtype == subtype:
                return entry
        raise KeyError(f"no partition of type {type_:#x} subtype {subtype:#x}")

    @property
    def nvs(self) -> PartitionEntry:
        """data/nvs."""
        return self.find(TYPE_DATA, SUBTYPE_DATA_NVS)

    @property
    def otadata(self) -> PartitionEntry:
        """data/ota."""
        return self.find(TYPE_DATA, SUBTYPE_DATA_OTA)

    @property
    def ota_0(self) -> PartitionEntry:
        """app/ota_0: where the factory image goes."""
        return self.find(TYPE_APP, SUBTYPE_APP_OTA_0)

    def flash_size(self) -> int:
        """The smallest ESP flash size (a power of two, at least 1 MiB) holding every
        partition: 4 MiB for advanced_https_ota's layout."""
        needed = max(entry.end for entry in self.entries)
        size = MIB
        while size < needed:
            size *= 2
        return size


def parse_partition_table(data: bytes) -> PartitionTable:
    """Read a partition table binary (gen_esp32part.py's output): 32-byte entries until
    an erased one; the optional MD5 entry (magic 0xEBEB) is skipped."""
    entries: list[PartitionEntry] = []
    for offset in range(0, len(data) - PARTITION_ENTRY.size + 1, PARTITION_ENTRY.size):
        magic, type_, subtype, start, size, label, flags = PARTITION_ENTRY.unpack_from(data, offset)
        if magic == PARTITION_MD5_MAGIC:
            continue
        if magic != PARTITION_MAGIC:
            break
        entries.append(
            PartitionEntry(
                type=type_,
                subtype=subtype,
                offset=start,
                size=size,
                label=label.split(b"\0", 1)[0].decode(),
                flags=flags,
            )
        )
    if not entries:
        raise ValueError("no partition entries (not a partition table binary?)")
    return PartitionTable(tuple(entries))


def nvs_csv(secret: str, port: int, *, healthy: bool = True) -> str:
    """The provisioning CSV of nvs_partition_gen: namespace esp_ota, secret and port; and
    the example firmware's own setting that its health check reads (namespace example,
    u8 healthy) when it must fail."""
    if any(c in secret for c in ',"\r\n'):
        raise ValueError("the secret must fit one unquoted CSV field")
    csv = (
        "key,type,encoding,value\n"
        f"{NVS_NAMESPACE},namespace,,\n"
        f"secret,data,string,{secret}\n"
        f"port,data,u16,{port}\n"
    )
    if not healthy:
        csv += f"{EXAMPLE_NAMESPACE},namespace,,\nhealthy,data,u8,0\n"
    return csv


def make_nvs_image(secret: str, port: int, size: int, *, healthy: bool = True) -> bytes:
    """The NVS partition image, made by esp-idf-nvs-partition-gen (blocking: call it in a
    thread). Raises RuntimeError with the tool's output when it fails."""
    with tempfile.TemporaryDirectory(prefix="esp-ota-nvs-") as folder:
        csv_path, bin_path = Path(folder) / "nvs.csv", Path(folder) / "nvs.bin"
        csv_path.write_text(nvs_csv(secret, port, healthy=healthy))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "esp_idf_nvs_partition_gen",
                "generate",
                str(csv_path),
                str(bin_path),
                hex(size),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=folder,
        )
        if result.returncode != 0 or not bin_path.is_file():
            raise RuntimeError(
                "esp-idf-nvs-partition-gen failed (is esp-idf-nvs-partition-gen==0.3.0 "
                f"installed?):\n{result.stdout}{result.stderr}"
            )
        image = bin_path.read_bytes()
    if len(image) != size:
        raise RuntimeError(f"the NVS image is {len(image)} bytes, the partition {size}")
    return image


def build_flash(
    partition_table: bytes,
    *,
    secret: str,
    port: int,
    factory_image: bytes,
    healthy: bool = True,
) -> bytes:
    """A whole fresh flash: erased, table at 0x8000, NVS, factory app in ota_0, otadata
    erased. Blocking (runs the NVS tool): call it in a thread."""
    if len(partition_table) > PARTITION_TABLE_MAX_SIZE:
        raise ValueError(f"the partition table binary is {len(partition_table)} bytes")
    table = parse_partition_table(partition_table)
    nvs, ota_0 = table.nvs, table.ota_0
    if len(factory_image) > ota_0.size:
        raise ValueError(f"the factory image does not fit {ota_0.label} ({ota_0.size} bytes)")
    flash = bytearray([ERASED]) * table.flash_size()
    flash[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + len(partition_table)] = partition_table
    flash[nvs.offset : nvs.end] = make_nvs_image(secret, port, nvs.size, healthy=healthy)
    flash[ota_0.offset : ota_0.offset + len(factory_image)] = factory_image
    return bytes(flash)


# --- reading it back (the harness's own checks) -----------------------------------------

NVS_PAGE_SIZE: Final = 4096
NVS_ENTRY_SIZE: Final = 32
NVS_ENTRIES_PER_PAGE: Final = 126
NVS_PAGE_ACTIVE: Final = 0xFFFFFFFE
NVS_PAGE_FULL: Final = 0xFFFFFFFC
NVS_ENTRY_WRITTEN: Final = 0b10
NVS_TYPE_U8: Final = 0x01
NVS_TYPE_U16: Final = 0x02
NVS_TYPE_STR: Final = 0x21
_NVS_ENTRY: Final = struct.Struct("<BBBBI16s8s")


def _nvs_crc(data: bytes) -> int:
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


def _nvs_value(page: bytes, start: int, type_: int, data: bytes) -> str | int | None:
    """The value of the entry at `start` (None for types the provisioning CSV never uses)."""
    if type_ == NVS_TYPE_U16:
        value: int = struct.unpack_from("<H", data)[0]
        return value
    if type_ == NVS_TYPE_STR:
        length, _reserved, data_crc = struct.unpack("<HHI", data)
        payload = page[start + NVS_ENTRY_SIZE : start + NVS_ENTRY_SIZE + length]
        if data_crc != _nvs_crc(payload) or not payload.endswith(b"\0"):
            raise ValueError(f"NVS string at {start:#x}: data CRC mismatch or no NUL")
        return payload[:-1].decode()
    return None


def _nvs_page_entries(page: bytes, page_offset: int) -> list[tuple[int, int, str, bytes, int]]:
    """(namespace index, type, key, data, offset in page) of every written entry."""
    state = struct.unpack_from("<I", page, 0)[0]
    if state == 0xFFFFFFFF:
        return []  # an erased page
    if state not in (NVS_PAGE_ACTIVE, NVS_PAGE_FULL):
        raise ValueError(f"NVS page at {page_offset:#x} in state {state:#x}")
    if struct.unpack_from("<I", page, 28)[0] != _nvs_crc(page[4:28]):
        raise ValueError(f"NVS page at {page_offset:#x}: header CRC mismatch")
    bitmap = page[32:64]
    entries: list[tuple[int, int, str, bytes, int]] = []
    index = 0
    while index < NVS_ENTRIES_PER_PAGE:
        bits = (bitmap[index * 2 // 8] >> (index * 2 % 8)) & 0b11
        start = 64 + index * NVS_ENTRY_SIZE
        if bits != NVS_ENTRY_WRITTEN:
            index += 1
            continue
        raw = page[start : start + NVS_ENTRY_SIZE]
        ns, type_, span, _chunk, crc, raw_key, data = _NVS_ENTRY.unpack(raw)
        if crc != _nvs_crc(raw[0:4] + raw[8:32]):
            raise ValueError(f"NVS entry {index} at page {page_offset:#x}: CRC mismatch")
        entries.append((ns, type_, raw_key.split(b"\0", 1)[0].decode(), data, start))
        index += max(1, span)
    return entries


def read_nvs(partition: bytes) -> dict[str, dict[str, str | int]]:
    """The string and u16 values of an NVS partition, by namespace and key (the formats
    the provisioning CSV uses). Checks page header, entry and data CRCs; ValueError on
    anything malformed."""
    namespaces: dict[int, str] = {}
    values: list[tuple[int, str, str | int]] = []
    for page_offset in range(0, len(partition), NVS_PAGE_SIZE):
        page = partition[page_offset : page_offset + NVS_PAGE_SIZE]
        for ns, type_, key, data, start in _nvs_page_entries(page, page_offset):
            if ns == 0 and type_ == NVS_TYPE_U8:
                namespaces[data[0]] = key
                continue
            value = _nvs_value(page, start, type_, data)
            if value is not None:
                values.append((ns, key, value))
    out: dict[str, dict[str, str | int]] = {}
    for ns, key, value in values:
        if ns not in namespaces:
            raise ValueError(f"NVS key {key!r} in unknown namespace index {ns}")
        out.setdefault(namespaces[ns], {})[key] = value
    return out
