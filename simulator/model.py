"""The simulated device's public model: what its HTTP API (protocol v1) exposes.

CONTRACT between the device core (device.py and below) and the HTTP API (api.py):
field names here are the JSON names of docs/protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ImageState(StrEnum):
    """esp_ota_img_states_t of the running partition, as the API names them."""

    NEW = "new"
    PENDING_VERIFY = "pending_verify"
    VALID = "valid"
    INVALID = "invalid"
    ABORTED = "aborted"
    UNDEFINED = "undefined"


class OtaState(StrEnum):
    """Where the device's OTA job is (esp_https_ota's states plus the reboot)."""

    IDLE = "idle"
    CONNECTING = "connecting"  # esp_https_ota_begin: TLS handshake, HEAD, first GET
    DOWNLOADING = "downloading"  # esp_https_ota_perform loop: writing to the passive slot
    VERIFYING = "verifying"  # esp_https_ota_finish -> esp_ota_end: whole-image checks
    REBOOTING = "rebooting"  # boot partition set; esp_restart() pending
    SUCCEEDED = "succeeded"  # last job ended with the boot partition switched
    FAILED = "failed"  # last job ended with an error; boot partition untouched
    ABORTED = "aborted"  # last job was aborted on request


class OtaEventType(StrEnum):
    """esp_https_ota_event_t plus the device's own reboot notice."""

    START = "start"
    CONNECTED = "connected"
    GET_IMG_DESC = "get_img_desc"
    VERIFY_CHIP_ID = "verify_chip_id"
    VERIFY_CHIP_REVISION = "verify_chip_revision"
    WRITE_FLASH = "write_flash"
    UPDATE_BOOT_PARTITION = "update_boot_partition"
    FINISH = "finish"
    ABORT = "abort"
    REBOOT = "reboot"


@dataclass(frozen=True, slots=True)
class OtaRequest:
    """POST /api/v1/ota: what the device must download and how."""

    url: str
    sha256: str  # expected SHA-256 of the whole file, hex
    size: int  # expected size in bytes
    version: str  # target version (the image's esp_app_desc_t.version)
    cert_pem: str  # the firmware server's certificate the device pins
    headers: dict[str, str] = field(default_factory=dict)  # e.g. a download token


@dataclass(frozen=True, slots=True)
class OtaEvent:
    """One esp_https_ota event, numbered so a client can resume with Last-Event-ID."""

    id: int
    type: OtaEventType
    ota_id: str | None
    bytes_written: int | None = None
    image_size: int | None = None
    project: str | None = None
    version: str | None = None
    error: str | None = None  # ESP-IDF error name on ABORT


@dataclass(frozen=True, slots=True)
class OtaStatus:
    """GET /api/v1/ota: the current or last OTA job."""

    state: OtaState
    ota_id: str | None
    target_version: str | None
    bytes_written: int
    image_size: int | None
    error: str | None  # ESP-IDF error name when state is FAILED/ABORTED
    message: str | None  # human text for the error


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """GET /api/v1/info: identity and state."""

    api: int
    mac: str
    chip: str
    chip_revision: int  # major * 100 + minor
    project: str
    version: str
    idf_ver: str
    app_elf_sha256: str
    secure_version: int
    running_partition: str  # "ota_0" / "ota_1"
    boot_partition: str
    image_state: ImageState
    last_invalid_partition: str | None
    last_ota: OtaStatus
    reset_reason: str  # esp_reset_reason_t name, e.g. "ESP_RST_SW", "ESP_RST_POWERON"
    uptime_s: float


class DeviceRefusedError(Exception):
    """The device refuses a request; `error` is the ESP-IDF error name."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message
