"""How one simulated device is built: the chip, its factory firmware, its app's settings
and faults (read by the board, the app and SimulatedDevice alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from custom_components.esp_ota.espota.protocol import EVENT_HEARTBEAT_S

from .faults import FaultPlan
from .ota_task import OtaTaskConfig
from .pace import Pace
from .partitions import PartitionScheme

# The firmware forwards esp_https_ota's WRITE_FLASH (one per buffer written, 1024 for a
# 4 MiB image) at most this often, and always the one that completes the image: the
# event ring then holds a whole job, and neither the device nor Home Assistant spends
# its CPU on thousands of progress messages per download.
PROGRESS_EVENT_INTERVAL_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class FactoryFirmware:
    """Parameters for building the factory image when no image bytes are given."""

    project: str = "esp-ota-demo"
    version: str = "1.0.0"
    secure_version: int = 0
    size: int = 256 * 1024
    idf_ver: str = "v5.5.1"
    min_chip_rev_full: int = 0
    max_chip_rev_full: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """How one simulated device is built. Only `mac` is required."""

    mac: str
    chip: str = "esp32"
    chip_revision: int = 301  # major * 100 + minor (v3.1)
    secret: str = ""  # the device's API secret (the HTTP API checks it)
    factory_image: bytes | None = None  # flashed into ota_0 at first power-on
    factory: FactoryFirmware = field(default_factory=FactoryFirmware)  # if no factory_image
    pace: Pace = Pace.UNTHROTTLED
    reboot_time_s: float | None = None  # None: DEFAULT_REBOOT_TIME_S if realistic, else 0
    state_dir: Path | None = None
    ota: OtaTaskConfig = field(default_factory=OtaTaskConfig)
    anti_rollback: bool = True  # CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    auto_confirm: bool = False  # confirm the new image as soon as it has booted
    efuse_secure_version: int = 0  # the eFuse value of a brand-new chip
    # The partition table, and with it the flash size.
    partition_table: PartitionScheme = PartitionScheme.ADVANCED_HTTPS_OTA
    faults: FaultPlan = field(default_factory=FaultPlan, compare=False, hash=False)
    # 0: every WRITE_FLASH becomes an event.
    progress_event_interval_s: float = PROGRESS_EVENT_INTERVAL_S
    # An open event stream carries something at least this often (the C agent's
    # CONFIG_ESP_OTA_AGENT_KEEPALIVE_S): an event, or the comment `: keep-alive`.
    event_heartbeat_s: float = EVENT_HEARTBEAT_S
