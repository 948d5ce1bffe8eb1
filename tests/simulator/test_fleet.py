"""The fleet runner: many devices in one process, state folder, mDNS advertisement."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest

from custom_components.esp_ota.espota.device_client import DeviceClient
from simulator import fleet as fleet_module
from simulator.api_counters import ApiCounters
from simulator.fleet import (
    SERVICE_TYPE,
    Fleet,
    FleetOptions,
    derived_secret,
    mac_for,
    service_info,
)

from .conftest import make_image, wait_until
from .firmware_server import FirmwareServer


def client_for(session: aiohttp.ClientSession, member: fleet_module.FleetDevice) -> DeviceClient:
    """A pinned client of one fleet member."""
    return DeviceClient(
        session, member.host, member.port, member.secret, cert_fingerprint=member.cert_fingerprint
    )


async def test_fleet_of_twenty(socket_enabled: None) -> None:
    """Twenty devices, each on its own port, each answering with its own identity."""
    fleet = Fleet(FleetOptions(count=20, project="garden", version="3.1.0", chip="esp32c3"))
    members = await fleet.start()
    try:
        assert len({member.port for member in members}) == 20
        assert len({member.cert_fingerprint for member in members}) == 20
        async with aiohttp.ClientSession() as session:
            infos = await asyncio.gather(*(client_for(session, m).info() for m in members))
        assert [info.mac for info in infos] == [mac_for(i) for i in range(20)]
        assert {(info.project, info.version, info.chip) for info in infos} == {
            ("garden", "3.1.0", "esp32c3")
        }
    finally:
        await fleet.stop()


def test_identities() -> None:
    """MACs count up under Espressif's prefix; derived secrets differ and are stable."""
    assert mac_for(0) == "24:0a:c4:00:00:00"
    assert mac_for(0x012345) == "24:0a:c4:01:23:45"
    assert derived_secret(mac_for(1)) == derived_secret(mac_for(1))
    assert derived_secret(mac_for(1)) != derived_secret(mac_for(2))
    assert len(derived_secret(mac_for(1))) == 24


async def test_faults_secret_and_base_port(socket_enabled: None) -> None:
    """Faults apply to all devices or one; one secret for all; consecutive ports."""
    for _attempt in range(10):
        # Two free consecutive ports, as far as can be known: another process (the test
        # run's browser, Home Assistant) may take one before the fleet binds; then again.
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        base = probe.sockets[0].getsockname()[1] + 1
        probe.close()
        await probe.wait_closed()
        fleet = Fleet(
            FleetOptions(
                count=2,
                base_port=base,
                secret="shared",
                faults={None: {"crash_versions": {"2.0.0"}}, 1: {"never_come_back": True}},
            )
        )
        try:
            members = await fleet.start()
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            await fleet.stop()
            continue
        break
    else:
        pytest.fail("no two consecutive free ports in 10 tries")
    try:
        assert [member.port for member in members] == [base, base + 1]
        assert {member.secret for member in members} == {"shared"}
        assert [device.faults.crash_versions for device in fleet.devices] == [{"2.0.0"}] * 2
        assert [device.faults.never_come_back for device in fleet.devices] == [False, True]
    finally:
        await fleet.stop()
    with pytest.raises(ValueError, match="unknown fault 'gremlins'"):
        await Fleet(FleetOptions(faults={None: {"gremlins": 1}})).start()


async def test_state_dir_remembers_flash_and_certificate(
    tmp_path: Path, firmware_server: FirmwareServer
) -> None:
    """A restarted fleet with the same state folder keeps firmware and certificate."""
    options = FleetOptions(count=1, state_dir=tmp_path, secret="s")
    fleet = Fleet(options)
    (member,) = await fleet.start()
    image = make_image("2.0.0", project="esp-ota-demo")
    try:
        async with aiohttp.ClientSession() as session:
            client = client_for(session, member)
            await client.start_ota(
                url=firmware_server.add("/fw.bin", image),
                sha256=hashlib.sha256(image).hexdigest(),
                size=len(image),
                version="2.0.0",
                cert_pem=firmware_server.cert_pem,
            )
            device = fleet.devices[0]
            await wait_until(lambda: device.online and device.info().version == "2.0.0")
            await client.confirm()
    finally:
        await fleet.stop()

    # One shared folder: content-named sectors, a file per device, a certificate each.
    assert any((tmp_path / "sectors").iterdir())
    assert len(list((tmp_path / "devices").iterdir())) == 1
    assert (
        tmp_path / "certificates" / "240ac4000000" / "device-key.pem"
    ).stat().st_mode & 0o077 == 0

    again = Fleet(options)
    (restarted,) = await again.start()
    try:
        assert restarted.cert_fingerprint == member.cert_fingerprint
        async with aiohttp.ClientSession() as session:
            info = await client_for(session, restarted).info()
        assert (info.version, info.image_state.value, info.running_partition) == (
            "2.0.0",
            "valid",
            "ota_1",
        )
    finally:
        await again.stop()


def test_service_info() -> None:
    """The mDNS advertisement carries the TXT keys the integration matches on."""
    info = type(
        "Info", (), {"mac": "24:0a:c4:00:00:07", "project": "p", "version": "1", "chip": "esp32",
                     "api": 1},
    )()  # fmt: skip
    advertisement = service_info(info, 8443)
    assert advertisement.type == SERVICE_TYPE
    assert advertisement.name == f"esp-ota-240ac4000007.{SERVICE_TYPE}"
    assert advertisement.port == 8443
    assert advertisement.server == "esp-ota-240ac4000007.local."
    assert advertisement.properties == {
        b"mac": b"24:0a:c4:00:00:07",
        b"project": b"p",
        b"version": b"1",
        b"chip": b"esp32",
        b"api": b"1",
    }


class RecordingZeroconf:
    """Stands in for multicast, which this machine's network must not carry."""

    registered: ClassVar[list[Any]] = []
    closed: ClassVar[bool] = False

    def __init__(self, interfaces: list[str]) -> None:
        assert interfaces == ["127.0.0.1"]

    async def async_register_service(self, info: Any) -> asyncio.Future[None]:
        RecordingZeroconf.registered.append(info)
        announced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        announced.set_result(None)  # what zeroconf returns: the announcements, to await
        return announced

    async def async_unregister_all_services(self) -> None:
        RecordingZeroconf.registered.clear()

    async def async_close(self) -> None:
        RecordingZeroconf.closed = True


async def test_mdns_advertising(socket_enabled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With mdns on, every device that booted is registered, and unregistered at stop."""
    monkeypatch.setattr(fleet_module, "AsyncZeroconf", RecordingZeroconf)
    # Device 2's factory firmware panics at every boot: it never comes online.
    fleet = Fleet(FleetOptions(count=3, mdns=True, faults={2: {"crash_versions": {"1.0.0"}}}))
    members = await fleet.start()
    assert not fleet.devices[2].online
    assert [info.port for info in RecordingZeroconf.registered] == [m.port for m in members[:2]]
    assert [info.properties[b"mac"] for info in RecordingZeroconf.registered] == [
        mac_for(0).encode(),
        mac_for(1).encode(),
    ]
    await fleet.stop()
    assert RecordingZeroconf.registered == []
    assert RecordingZeroconf.closed


async def taken_port_after_a_free_one() -> tuple[asyncio.Server, int]:
    """A listener on a port whose predecessor is free: device 0 of a fleet based there
    starts, device 1 meets the taken port (any free port's predecessor may be another
    process's, which made device 0 fail first now and then)."""
    for _ in range(50):
        taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port: int = taken.sockets[0].getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port - 1))
            except OSError:
                pass
            else:
                return taken, port
        taken.close()
        await taken.wait_closed()
    raise AssertionError("no free port next to a free port in 50 tries")


async def test_a_failed_start_stops_what_it_started(socket_enabled: None) -> None:
    """A port already taken: start() fails, and the devices started before it are closed."""
    taken, taken_port = await taken_port_after_a_free_one()
    fleet = Fleet(FleetOptions(count=2, base_port=taken_port - 1))
    try:
        with pytest.raises(OSError, match="address already in use"):
            await fleet.start()
    finally:
        taken.close()
        await taken.wait_closed()
    assert len(fleet.devices) == 2
    assert not fleet.devices[0].online
    with pytest.raises(ConnectionRefusedError):  # device 0's port: nothing listens any more
        await asyncio.open_connection("127.0.0.1", taken_port - 1)


async def test_fleet_counters_per_device_and_in_total(socket_enabled: None) -> None:
    """The fleet reads each device's own counters, in index order, and adds them up."""
    fleet = Fleet(FleetOptions(count=3))
    members = await fleet.start()
    try:
        assert fleet.total_counters() == ApiCounters()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)  # a handshake per request
        ) as session:
            client = client_for(session, members[1])
            await client.info()
            await client.ota_status()
        per_device = fleet.counters()
        assert [c.tls_handshakes for c in per_device] == [0, 2, 0]
        assert [c.total_requests for c in per_device] == [0, 2, 0]
        assert dict(per_device[1].requests) == {"GET /api/v1/info": 1, "GET /api/v1/ota": 1}
        total = fleet.total_counters()
        assert (total.tls_handshakes, dict(total.requests)) == (2, dict(per_device[1].requests))
    finally:
        await fleet.stop()
