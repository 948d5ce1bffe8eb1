"""Faults a simulated device can be told to suffer.

A FaultPlan is mutable on purpose: a test, the fleet runner or a demo changes it while the
device runs. Transport faults act on what the device *receives* (after TLS, before
esp_https_ota sees the bytes), so they work against any firmware server, Home Assistant's
included. Offsets are offsets in the downloaded file, whatever Range request carries them.

One-shot faults (drop, stall, power loss, crash on the next boot, the API fault) disarm
themselves when they fire; persistent faults (corruption, truncation, slow link, slow
verification, API latency, crash_versions, wrong certificate, never_come_back, unhealthy)
stay until cleared.

The verification and API faults reach the phases after the download: the device verifying
the staged image (before the boot partition switch), its API while Home Assistant waits
for the reboot and confirms the new image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum


class ApiFault(StrEnum):
    """What happens to the one request to FaultPlan.api_fault_path."""

    # The device acts on the request, then the connection drops: the answer is lost.
    DROP = "drop"
    # The device holds the request for api_stall_seconds, then acts and answers.
    STALL = "stall"
    # The device loses power as the request arrives, before acting (ESP_RST_POWERON).
    POWER_LOSS = "power_loss"
    # The firmware acts on the request, then panics before answering (ESP_RST_PANIC).
    CRASH = "crash"


@dataclass(slots=True)
class FaultPlan:
    """What goes wrong on one device. Every field off (None/False/empty) means healthy."""

    # Connection reset after the device received the file's bytes [.., drop_at_byte).
    # One-shot: the retry with `Range: bytes=<written>-` then succeeds (ota_resumption).
    drop_at_byte: int | None = None
    # The byte at this file offset arrives XOR 0xFF, every time it is received.
    corrupt_at_byte: int | None = None
    # Every response body ends (clean close) at this file offset: "connection closed
    # before complete data was received" (ESP_FAIL), on every attempt.
    truncate_at_byte: int | None = None
    # Before receiving the byte at this offset, nothing arrives for stall_seconds. One-shot.
    stall_at_byte: int | None = None
    stall_seconds: float = 0.0
    # The link delivers at most this many bytes per second (None: no limit).
    slow_link_bytes_per_s: float | None = None
    # The device pins a certificate that is not the server's: every TLS handshake fails.
    wrong_certificate: bool = False
    # The device loses power once this many bytes of the new image have been written to
    # flash; it reboots (ESP_RST_POWERON) into the old firmware. One-shot.
    power_loss_at_byte: int | None = None
    # The next newly booted image (otadata NEW -> PENDING_VERIFY) panics before it can be
    # confirmed; the bootloader then rolls back. One-shot.
    crash_on_next_boot: bool = False
    # Every boot of an app with one of these versions panics (a bad release).
    crash_versions: set[str] = field(default_factory=set)
    # After its next reboot the device never comes back online.
    never_come_back: bool = False
    # The firmware's own health check fails: confirming a pending_verify image is refused
    # (409 ESP_FAIL), and the image is rolled back at the next reboot.
    unhealthy: bool = False
    # Verifying the staged image (after its last byte, before the boot partition switch)
    # takes this long: the device reports `verifying` meanwhile (a big image, slow flash).
    verify_seconds: float = 0.0
    # The device loses power while verifying, after verify_seconds; it reboots
    # (ESP_RST_POWERON) into the old firmware, the boot partition unchanged. One-shot.
    power_loss_while_verifying: bool = False
    # The next request to this path of the device's API ("/ota/confirm", "/info", ...: under
    # /api/v1, any method) suffers api_fault. One-shot.
    api_fault_path: str | None = None
    api_fault: ApiFault | None = None
    api_stall_seconds: float = 0.0  # how long ApiFault.STALL holds the request
    # Every request to the device's API is answered this much later (a weak Wi-Fi link).
    api_latency_s: float = 0.0

    def clear(self) -> None:
        """Make the device healthy again."""
        healthy = FaultPlan()
        for item in fields(self):
            setattr(self, item.name, getattr(healthy, item.name))
