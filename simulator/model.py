"""What the simulated device's HTTP API takes in and refuses with.

CONTRACT between the device core (device.py and below) and the HTTP API (api.py): field
names here are the JSON names of docs/protocol.md. What the device reports (DeviceInfo,
OtaStatus, DeviceEvent and their enums) are the client's own models, from
custom_components.esp_ota.espota.protocol: one set of names for the protocol on both sides.
The JSON stays the simulator's own (api.py writes it, the client only parses what comes
over the wire), so a protocol mismatch shows up as it would with a real device.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class OtaRequest:
    """POST /api/v1/ota: what the device must download and how."""

    url: str
    sha256: str  # expected SHA-256 of the whole file, hex
    size: int  # expected size in bytes
    version: str  # target version (the image's esp_app_desc_t.version)
    cert_pem: str  # the firmware server's certificate the device pins
    headers: dict[str, str] = field(default_factory=dict)  # e.g. a download token


class DeviceRefusedError(Exception):
    """The device refuses a request; `error` is the ESP-IDF error name."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message
