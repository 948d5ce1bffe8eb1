"""Protocol v1's models and their parsing, keyed to docs/protocol.md.

These are what a device says (GET /api/v1/info, GET /api/v1/ota, the events of
GET /api/v1/events), read from decoded JSON into frozen, typed values. Anything protocol v1
does not allow is a DeviceProtocolError naming the field. The transport (HTTPS, pinning,
the event stream's framing) is device_client.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .errors import DeviceProtocolError
from .json_reader import JsonReader

API_PREFIX: Final = "/api/v1"
# A device sends something (an event, or the comment `: keep-alive`) on every open event
# stream at least this often: the stream's heartbeat (docs/protocol.md, "GET /api/v1/events").
EVENT_HEARTBEAT_S: Final = 15.0
# The error name a device answers POST /ota with while another OTA runs (409).
ESP_ERR_INVALID_STATE: Final = "ESP_ERR_INVALID_STATE"


class ImageState(StrEnum):
    """The running image's state (esp_ota_img_states_t)."""

    NEW = "new"
    PENDING_VERIFY = "pending_verify"
    VALID = "valid"
    INVALID = "invalid"
    ABORTED = "aborted"
    UNDEFINED = "undefined"


class OtaState(StrEnum):
    """Where the device's OTA job is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    REBOOTING = "rebooting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


class EventType(StrEnum):
    """esp_https_ota events, and the device's reboot."""

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
class OtaStatus:
    """GET /api/v1/ota."""

    state: OtaState
    ota_id: str | None
    target_version: str | None
    bytes_written: int
    image_size: int | None
    error: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """GET /api/v1/info."""

    api: int
    mac: str
    chip: str
    chip_revision: int
    project: str
    version: str
    idf_ver: str
    app_elf_sha256: str
    secure_version: int
    running_partition: str
    boot_partition: str
    image_state: ImageState
    last_invalid_partition: str | None
    last_ota: OtaStatus
    reset_reason: str
    uptime_s: float


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One event of GET /api/v1/events."""

    id: int
    type: EventType
    ota_id: str | None
    bytes_written: int | None
    image_size: int | None
    project: str | None
    version: str | None
    error: str | None


def _read_ota_status(reader: JsonReader) -> OtaStatus:
    return OtaStatus(
        state=reader.choice("state", OtaState),
        ota_id=reader.optional_text("ota_id"),
        target_version=reader.optional_text("target_version"),
        bytes_written=reader.number("bytes_written"),
        image_size=reader.optional_number("image_size"),
        error=reader.optional_text("error"),
        message=reader.optional_text("message"),
    )


def _read_device_info(reader: JsonReader) -> DeviceInfo:
    return DeviceInfo(
        api=reader.number("api"),
        mac=reader.text("mac"),
        chip=reader.text("chip"),
        chip_revision=reader.number("chip_revision"),
        project=reader.text("project"),
        version=reader.text("version"),
        idf_ver=reader.text("idf_ver"),
        app_elf_sha256=reader.text("app_elf_sha256"),
        secure_version=reader.number("secure_version"),
        running_partition=reader.text("running_partition"),
        boot_partition=reader.text("boot_partition"),
        image_state=reader.choice("image_state", ImageState),
        last_invalid_partition=reader.optional_text("last_invalid_partition"),
        last_ota=_read_ota_status(reader.child("last_ota")),
        reset_reason=reader.text("reset_reason"),
        uptime_s=reader.real("uptime_s"),
    )


def _read_device_event(reader: JsonReader) -> DeviceEvent:
    return DeviceEvent(
        id=reader.number("id"),
        type=reader.choice("type", EventType),
        ota_id=reader.optional_text("ota_id"),
        bytes_written=reader.optional_number("bytes_written"),
        image_size=reader.optional_number("image_size"),
        project=reader.optional_text("project"),
        version=reader.optional_text("version"),
        error=reader.optional_text("error"),
    )


def parse_device_info(data: Any) -> DeviceInfo:
    """GET /api/v1/info's decoded body."""
    return _read_device_info(JsonReader(data, "info", DeviceProtocolError))


def parse_ota_status(data: Any) -> OtaStatus:
    """GET /api/v1/ota's decoded body."""
    return _read_ota_status(JsonReader(data, "ota", DeviceProtocolError))


def parse_device_event(data: Any) -> DeviceEvent:
    """One event's decoded `data` (GET /api/v1/events)."""
    return _read_device_event(JsonReader(data, "event", DeviceProtocolError))


def parse_started(data: Any) -> str:
    """POST /api/v1/ota's decoded body: the job's id."""
    return JsonReader(data, "start", DeviceProtocolError).text("ota_id")


def parse_refusal(data: Any, what: str) -> tuple[str, str]:
    """An error answer's decoded body: ESP-IDF's error name and the message."""
    reader = JsonReader(data, f"{what} error", DeviceProtocolError)
    return reader.text("error"), reader.optional_text("message") or ""
