"""The board: power-on and the factory image, the bootloader at every reset, restarts and
power cuts, the network going offline meanwhile, the state kept across simulator runs, and
the faults that strike at boot."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from custom_components.esp_ota.espota.protocol import EventType, ImageState, OtaState
from simulator.board import ESP_RST_PANIC, ESP_RST_POWERON, ESP_RST_SW
from simulator.device import DeviceConfig, FactoryFirmware, SimulatedDevice
from simulator.esp_err import ESP_ERR_INVALID_STATE, ESP_FAIL
from simulator.faults import FaultPlan
from simulator.model import DeviceRefusedError
from simulator.otadata import OtaImgState

from .conftest import (
    SUCCESS_EVENTS,
    DeviceFactory,
    events_of,
    make_image,
    request_for,
    run_ota,
    types_of,
)
from .firmware_server import FirmwareServer

E = EventType


def top_folders_with_files(root: Path) -> set[str]:
    """The first path component of every file under `root`."""
    return {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()}


class RecordingNetwork:
    """A DeviceNetwork that remembers what the device asked for, and when."""

    def __init__(self, device: SimulatedDevice) -> None:
        self.device = device
        self.calls: list[tuple[str, bool]] = []

    async def go_offline(self) -> None:
        self.calls.append(("offline", self.device.online))

    async def go_online(self) -> None:
        self.calls.append(("online", self.device.online))


async def test_device_built_from_factory_parameters(make_device: DeviceFactory) -> None:
    firmware = FactoryFirmware(project="thermostat", version="2.0.0", secure_version=2, size=64_000)
    device = await make_device(factory_image=None, factory=firmware, chip="esp32c3")
    info = device.info()
    assert (info.project, info.version, info.secure_version) == ("thermostat", "2.0.0", 2)
    assert info.chip == "esp32c3"
    assert device.efuse.secure_version == 2  # burnt at the first boot (anti-rollback)
    assert device.efuse.secure_version_bits == 16


async def test_factory_image_too_big(factory_image: bytes, tmp_path: Path) -> None:
    too_big = factory_image + b"\x00" * (1700 * 1024)
    device = SimulatedDevice(DeviceConfig(mac="aa", factory_image=too_big, state_dir=tmp_path))
    with pytest.raises(ValueError, match="does not fit"):
        await device.start()
    await device.close()
    assert not (tmp_path / "devices").exists()  # nothing half-made was saved


async def test_unbootable_flash_leaves_the_device_offline() -> None:
    device = SimulatedDevice(DeviceConfig(mac="aa", factory_image=b"\xe9" + b"\x00" * 2000))
    await device.start()
    assert not device.online
    assert device.boot_loop
    with pytest.raises(DeviceRefusedError) as caught:
        device.info()
    assert caught.value.error == ESP_ERR_INVALID_STATE
    with pytest.raises(DeviceRefusedError):
        _ = device.running_partition
    await device.close()
    await device.close()  # idempotent


async def test_reboot_without_confirm_rolls_back(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.1.0")
    await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    queue = device.subscribe()
    await device.reboot()
    assert not device.online
    await device.wait_idle(5)
    assert [e.type for e in events_of(queue)] == [E.REBOOT]
    info = device.info()
    assert (info.version, info.running_partition) == ("1.0.0", "ota_0")
    assert info.last_invalid_partition == "ota_1"
    assert info.reset_reason == ESP_RST_SW
    assert device.ops.state_of(device.table.ota_apps[1]) is OtaImgState.ABORTED


async def test_network_goes_offline_for_the_reboot(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(reboot_time_s=0.2)
    network = RecordingNetwork(device)
    device.attach_network(network)
    await device.reboot()
    assert not device.online
    with pytest.raises(DeviceRefusedError) as caught:
        device.confirm()
    assert caught.value.error == ESP_ERR_INVALID_STATE
    with pytest.raises(DeviceRefusedError):
        await device.reboot()
    started = time.monotonic()
    await device.wait_online(5)
    assert time.monotonic() - started >= 0.15
    await device.wait_idle(1)
    # The network is up before the device reports online, so whoever waits for
    # `online` can connect at once.
    assert network.calls == [("offline", False), ("online", False)]
    assert device.info().uptime_s < 1


async def test_power_cycle_cuts_a_reboot_short(make_device: DeviceFactory) -> None:
    device = await make_device(reboot_time_s=30)
    await device.reboot()
    device.reboot_time_s = 0
    await device.power_cycle()
    await device.wait_online(2)
    assert device.info().reset_reason == ESP_RST_POWERON


async def test_a_second_restart_request_is_ignored(make_device: DeviceFactory) -> None:
    device = await make_device(reboot_time_s=0.1)
    queue = device.subscribe()
    await device.reboot()
    device.app.esp_restart(ESP_RST_SW)  # e.g. a job finishing while the reboot began
    await device.wait_idle(5)
    assert [e.type for e in events_of(queue)] == [E.REBOOT]
    assert device.boot_count == 2


async def test_close_during_an_update(
    firmware_server: FirmwareServer, factory_image: bytes, tmp_path: Path
) -> None:
    device = SimulatedDevice(
        DeviceConfig(
            mac="aa",
            factory_image=factory_image,
            state_dir=tmp_path,
            faults=FaultPlan(slow_link_bytes_per_s=50_000),
        )
    )
    await device.start()
    await device.start_ota(request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0"))
    await asyncio.sleep(0.1)
    await device.close()
    assert not device.online
    assert device.ops.open_handles == 0
    assert device.ops.boot_partition().label == "ota_0"


async def test_state_survives_a_simulator_restart(
    tmp_path: Path, factory_image: bytes, firmware_server: FirmwareServer
) -> None:
    config = DeviceConfig(
        mac="24:0a:c4:aa:bb:cc", factory_image=factory_image, state_dir=tmp_path, reboot_time_s=0
    )
    first = SimulatedDevice(config)
    await first.start()
    image = make_image("1.1.0", secure_version=2)
    status, events = await run_ota(first, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    first.confirm()
    last_id = events[-1].id
    await first.close()
    assert top_folders_with_files(tmp_path) == {"devices", "sectors"}

    second = SimulatedDevice(config)
    await second.start()
    info = second.info()
    assert (info.version, info.running_partition, info.image_state) == (
        "1.1.0",
        "ota_1",
        ImageState.VALID,
    )
    assert info.reset_reason == ESP_RST_POWERON
    assert info.last_ota.state is OtaState.SUCCEEDED
    assert info.last_ota.ota_id == status.ota_id
    assert second.efuse.secure_version == 2
    queue = second.subscribe()
    await second.reboot()
    assert events_of(queue)[0].id > last_id  # ids never go back
    await second.wait_idle(5)
    await second.close()

    # Two devices with the same firmware share the sector files.
    other = SimulatedDevice(replace(config, mac="24:0a:c4:aa:bb:cd"))
    await other.start()
    await other.close()
    sector_files = list((tmp_path / "sectors").iterdir())
    assert len(sector_files) < 2 * (len(factory_image) + len(image)) // 4096


async def test_power_loss_mid_write_boots_the_old_firmware(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(power_loss_at_byte=30_000))
    image = make_image("1.1.0", size=60_000)
    status, events = await run_ota(device, request_for(firmware_server, "/p.bin", image, "1.1.0"))
    # No ABORT, FINISH or REBOOT: the chip simply lost power.
    assert types_of(events) == SUCCESS_EVENTS[:6]
    assert status.state is OtaState.FAILED
    assert status.error == ESP_FAIL
    assert status.message == "the OTA was interrupted by a reset (ESP_RST_POWERON)"
    info = device.info()
    assert info.reset_reason == ESP_RST_POWERON
    assert (info.version, info.running_partition, info.boot_partition) == (
        "1.0.0",
        "ota_0",
        "ota_0",
    )
    assert info.image_state is ImageState.VALID
    assert device.faults.power_loss_at_byte is None
    assert device.online
    # The next update starts from scratch and works.
    status, _ = await run_ota(device, request_for(firmware_server, "/p.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


async def test_crash_on_next_boot_rolls_back(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(crash_on_next_boot=True))
    image = make_image("1.1.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/b.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED  # the download itself worked
    info = device.info()
    assert info.reset_reason == ESP_RST_PANIC
    assert (info.version, info.running_partition, info.boot_partition) == (
        "1.0.0",
        "ota_0",
        "ota_0",
    )
    assert info.last_invalid_partition == "ota_1"
    assert info.image_state is ImageState.VALID
    assert device.ops.state_of(device.table.ota_apps[1]) is OtaImgState.ABORTED
    assert not device.faults.crash_on_next_boot
    # Rebooting now does not panic again: the fault fired once.
    await device.reboot()
    await device.wait_idle(5)
    assert device.info().reset_reason == ESP_RST_SW


async def test_a_bad_release_crashes_on_every_device(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    image = make_image("1.1.0")
    request = request_for(firmware_server, "/bad.bin", image, "1.1.0")
    devices = [await make_device(faults=FaultPlan(crash_versions={"1.1.0"})) for _ in range(3)]
    for device in devices:
        status, _ = await run_ota(device, request)
        assert status.state is OtaState.SUCCEEDED
        info = device.info()
        assert (info.version, info.last_invalid_partition) == ("1.0.0", "ota_1")
        assert info.reset_reason == ESP_RST_PANIC


async def test_a_confirmed_version_that_crashes_boot_loops(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    device.faults.crash_versions.add("1.0.0")  # the confirmed factory firmware
    await device.reboot()
    await device.wait_idle(5)
    assert not device.online
    assert device.boot_loop
    device.faults.clear()
    await device.power_cycle()
    await device.wait_online(5)
    info = device.info()
    assert (info.version, info.reset_reason) == ("1.0.0", ESP_RST_POWERON)
    assert not device.boot_loop


async def test_never_come_back(make_device: DeviceFactory, firmware_server: FirmwareServer) -> None:
    device = await make_device(faults=FaultPlan(never_come_back=True))
    image = make_image("1.1.0")
    status, _ = await run_ota(device, request_for(firmware_server, "/n.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert not device.online  # booted, but never back on the network
    device.faults.never_come_back = False
    await device.power_cycle()
    await device.wait_online(5)
    info = device.info()
    # The new image booted once and was never confirmed: the power cycle rolled it back.
    assert (info.version, info.last_invalid_partition) == ("1.0.0", "ota_1")
    assert info.last_ota.state is OtaState.SUCCEEDED
