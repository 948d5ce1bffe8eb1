"""How fast the simulated device is: a real ESP32's pace, or no waiting at all.

REALISTIC follows the figures in docs' source guide (shared/guides/esp-idf-ota.md, "How fast a
real device is"): a TLS handshake takes 1-3 s; flash erase dominates an OTA on a LAN, ~1 MiB
took 23.6 s with 4 KiB sector erases and 9.8 s with block erases; ESP-IDF's own minimum is
erase >= 45 KB/s and 2 KB writes >= 754 KB/s; a 1-1.5 MB OTA over HTTPS on a LAN takes about
15-35 s. The constants below are calibrated so the model lands on those measurements.

UNTHROTTLED never sleeps: the device is as fast as the event loop (benchmarks, tests).
"""

from __future__ import annotations

import asyncio
import random
from enum import StrEnum
from typing import Final


class Pace(StrEnum):
    """How the simulated device spends time."""

    REALISTIC = "realistic"
    UNTHROTTLED = "unthrottled"


# TLS handshake with ECDHE + certificate verification on an ESP32: "1-3 s" (guide).
TLS_HANDSHAKE_S: Final = (1.0, 3.0)
# A reconnect that resumes the TLS session (session tickets, which advanced_https_ota
# enables with partial downloads) skips the key exchange: about one round trip plus
# symmetric crypto. Estimate, no measurement.
TLS_RESUMED_HANDSHAKE_S: Final = 0.1
# Request/response round trip on a LAN before the first body byte. Estimate.
HTTP_REQUEST_LATENCY_S: Final = 0.03
# The guide's two measurements of a 1 MiB OTA share everything but the erase, so their
# difference (23.6 s - 9.8 s = 13.8 s) is sector erase minus block erase. With typical NOR
# figures (64 KiB block erase ~0.2 s) that leaves ~6.6 s for receiving and programming
# 1 MiB, i.e. an ESP32 takes in TLS data at ~200 KB/s on a LAN:
LAN_RECEIVE_BYTES_PER_S: Final = 200_000
# 2 KB writes >= 754 KB/s: ESP-IDF's own minimum (guide).
FLASH_PROGRAM_BYTES_PER_S: Final = 754_000
# One 4 KiB sector erase: 1 MiB with sector erases = 23.6 s (guide) =
# 256 * 0.066 s + 1 MiB at LAN_RECEIVE_BYTES_PER_S + 1 MiB at FLASH_PROGRAM_BYTES_PER_S.
# That is 62 KB/s of erase, above ESP-IDF's 45 KB/s floor.
SECTOR_ERASE_S: Final = 0.066
# One 64 KiB block erase (bulk_flash_erase): 1 MiB = 9.8 s (guide) = 16 * 0.2 s + the same
# receive and program time.
BLOCK_ERASE_S: Final = 0.2
# advanced_https_ota waits 1 s (vTaskDelay(1000 ms)) between a successful finish and esp_restart.
RESTART_DELAY_AFTER_OTA_S: Final = 1.0
# Power-on to the app running with Wi-Fi connected again. Estimate (bootloader verify + Wi-Fi).
DEFAULT_REBOOT_TIME_S: Final = 3.0


class Timing:
    """Turns device work into sleeps (REALISTIC) or into nothing (UNTHROTTLED)."""

    def __init__(self, pace: Pace, rng: random.Random | None = None) -> None:
        self.pace = pace
        self._rng = rng or random.Random()  # noqa: S311 - timing jitter, not security

    @property
    def realistic(self) -> bool:
        """True when the device spends real time."""
        return self.pace is Pace.REALISTIC

    async def _sleep(self, seconds: float) -> None:
        if self.realistic and seconds > 0:
            await asyncio.sleep(seconds)

    async def tls_handshake(self, *, resumed: bool) -> None:
        """Time for a TLS handshake (full or session-resumed)."""
        if resumed:
            await self._sleep(TLS_RESUMED_HANDSHAKE_S)
        else:
            await self._sleep(self._rng.uniform(*TLS_HANDSHAKE_S))

    async def request(self) -> None:
        """Time from sending a request to its response headers."""
        await self._sleep(HTTP_REQUEST_LATENCY_S)

    async def program(self, byte_count: int) -> None:
        """Time to program this many bytes into flash."""
        await self._sleep(byte_count / FLASH_PROGRAM_BYTES_PER_S)

    async def erase_sectors(self, sector_count: int) -> None:
        """Time to erase this many 4 KiB sectors one by one."""
        await self._sleep(sector_count * SECTOR_ERASE_S)

    async def erase_blocks(self, byte_count: int) -> None:
        """Time to erase a range with 64 KiB block erases (bulk erase)."""
        blocks = -(-byte_count // 65536)
        await self._sleep(blocks * BLOCK_ERASE_S)

    async def restart_delay(self) -> None:
        """advanced_https_ota's pause between a finished OTA and esp_restart()."""
        await self._sleep(RESTART_DELAY_AFTER_OTA_S)
