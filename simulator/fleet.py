"""Many simulated devices in one process, each with its HTTPS API on a 127.0.0.1 port.

Devices share one factory image (its flash sectors are shared too), so a fleet of 200 costs
tens of megabytes. Optionally each device is advertised over mDNS as
`_esp-ota._tcp.local.`, and a state folder lets a restarted fleet remember its flash.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import DeviceInfo

from .api import DeviceApiServer
from .api_counters import ApiCounters
from .device import DeviceConfig, SimulatedDevice
from .faults import FaultPlan
from .pace import Pace
from .partitions import PartitionScheme
from .tls import load_or_create_certificate, make_device_certificate

SERVICE_TYPE: Final = "_esp-ota._tcp.local."
API_VERSION: Final = 1
# Under the state folder: each device's certificate and key, in a folder named by its MAC.
CERTIFICATES_DIR: Final = "certificates"
# Espressif's OUI: the simulated devices look like ESP32s on a network.
MAC_PREFIX: Final = "24:0a:c4"


def mac_for(index: int) -> str:
    """The MAC of the fleet's device number `index` (0-based)."""
    return f"{MAC_PREFIX}:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}"


def derived_secret(mac: str) -> str:
    """A per-device secret anyone can recompute: for simulations only, never real devices."""
    return hashlib.sha256(f"esp-ota-simulator:{mac}".encode()).hexdigest()[:24]


def hostname_for(mac: str) -> str:
    """The device's mDNS host name, e.g. esp-ota-240ac4000001.local."""
    return f"esp-ota-{mac.replace(':', '')}.local"


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How to build the fleet."""

    count: int = 1
    base_port: int = 0  # 0: any free port for each device; N: N, N+1, ...
    chip: str = "esp32"
    chip_revision: int = 301
    project: str = "esp-ota-demo"
    version: str = "1.0.0"
    image_size: int = 256 * 1024
    pace: Pace = Pace.UNTHROTTLED
    reboot_time_s: float | None = None
    partition_table: PartitionScheme = PartitionScheme.ADVANCED_HTTPS_OTA
    secret: str | None = None  # None: derived_secret(mac) for each device
    state_dir: Path | None = None
    mdns: bool = False
    faults: dict[int | None, dict[str, Any]] = field(default_factory=dict)  # None: all


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """What a tool needs to talk to one device of the fleet."""

    index: int
    mac: str
    host: str
    port: int
    secret: str
    cert_fingerprint: str

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def apply_faults(plan: FaultPlan, changes: dict[str, Any]) -> None:
    """Set FaultPlan fields by name (values already of the right type)."""
    names = {item.name for item in dataclasses.fields(plan)}
    for name, value in changes.items():
        if name not in names:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}")
        setattr(plan, name, value)


def service_info(info: DeviceInfo, port: int) -> ServiceInfo:
    """The mDNS advertisement of a device: `_esp-ota._tcp.local.` with its TXT record."""
    compact = info.mac.replace(":", "")
    return ServiceInfo(
        SERVICE_TYPE,
        f"esp-ota-{compact}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=port,
        properties={
            "mac": info.mac,
            "project": info.project,
            "version": info.version,
            "chip": info.chip,
            "api": str(info.api),
        },
        server=f"{hostname_for(info.mac)}.",
    )


class Fleet:
    """Starts, describes and stops a fleet of simulated devices."""

    def __init__(self, options: FleetOptions) -> None:
        self.options = options
        self.devices: list[SimulatedDevice] = []
        self.servers: list[DeviceApiServer] = []
        self.members: list[FleetDevice] = []
        self._zeroconf: AsyncZeroconf | None = None

    async def start(self) -> list[FleetDevice]:
        """Power every device on and open its API; on failure, stop what was started."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> list[FleetDevice]:
        options = self.options
        factory = await asyncio.to_thread(
            build_app_image,
            project=options.project,
            version=options.version,
            chip=options.chip,
            size=options.image_size,
        )
        for index in range(options.count):
            mac = mac_for(index)
            hostname = hostname_for(mac)
            if options.state_dir is not None:
                certificate = await asyncio.to_thread(
                    load_or_create_certificate,
                    options.state_dir / CERTIFICATES_DIR / mac.replace(":", ""),
                    mac,
                    hostname,
                )
            else:
                certificate = make_device_certificate(mac, hostname)
            secret = options.secret if options.secret is not None else derived_secret(mac)
            device = SimulatedDevice(
                DeviceConfig(
                    mac=mac,
                    chip=options.chip,
                    chip_revision=options.chip_revision,
                    secret=secret,
                    factory_image=factory,
                    pace=options.pace,
                    reboot_time_s=options.reboot_time_s,
                    partition_table=options.partition_table,
                    # One folder for the fleet: devices share the sector files.
                    state_dir=options.state_dir,
                )
            )
            for target in (None, index):
                apply_faults(device.faults, options.faults.get(target, {}))
            port = options.base_port + index if options.base_port else 0
            server = DeviceApiServer(device, certificate, port=port)
            self.devices.append(device)
            self.servers.append(server)
            await device.start()
            self.members.append(
                FleetDevice(index, mac, "127.0.0.1", server.port, secret, certificate.fingerprint)
            )
        if options.mdns:
            await self._advertise()
        return self.members

    def counters(self) -> list[ApiCounters]:
        """Each device's API counters, in the fleet's order (index)."""
        return [server.counters() for server in self.servers]

    def total_counters(self) -> ApiCounters:
        """The whole fleet's API counters added up."""
        return ApiCounters.sum(self.counters())

    async def _advertise(self) -> None:
        """Register every online device over mDNS on the loopback interface.

        All at once: each registration probes for name conflicts (about 0.75 s) and then
        announces; one after the other, 200 devices would take minutes."""
        zeroconf = self._zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"])
        announcements = await asyncio.gather(
            *(
                zeroconf.async_register_service(service_info(device.info(), server.port))
                for device, server in zip(self.devices, self.servers, strict=True)
                if device.online
            )
        )
        await asyncio.gather(*announcements)

    async def stop(self) -> None:
        """Stop advertising, close every API and save every device."""
        if self._zeroconf is not None:
            await self._zeroconf.async_unregister_all_services()
            await self._zeroconf.async_close()
            self._zeroconf = None
        # Servers first: a closed server stays closed even if a reboot under way ends.
        await asyncio.gather(*(server.close() for server in self.servers))
        await asyncio.gather(*(device.close() for device in self.devices))
