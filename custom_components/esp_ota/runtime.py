"""What a loaded entry holds, and the entry's type (the platforms' and diagnostics' view)."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry

from .coordinator import EspOtaDeviceCoordinator
from .feed_coordinator import FeedCoordinator
from .installer import DeviceInstaller


@dataclass(frozen=True, slots=True)
class EspOtaRuntimeData:
    """The entry's device coordinator (the truth its entities read), the feed it follows,
    and the installer that runs its updates."""

    device: EspOtaDeviceCoordinator
    feed: FeedCoordinator | None
    installer: DeviceInstaller


type EspOtaConfigEntry = ConfigEntry[EspOtaRuntimeData]
