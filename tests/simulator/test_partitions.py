"""The partition tables a device can be built with: the default 4 MB one and the 16 MB one
with large OTA slots (a 4 MiB image fits only there), chosen by DeviceConfig, the fleet and
the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from custom_components.esp_ota.espota.protocol import ImageState, OtaState
from simulator import __main__ as cli
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.esp_err import ESP_ERR_INVALID_SIZE
from simulator.flash import DEFAULT_FLASH_SIZE
from simulator.fleet import Fleet
from simulator.model import DeviceRefusedError
from simulator.partitions import (
    ADVANCED_HTTPS_OTA_TABLE,
    LARGE_OTA_16MB_TABLE,
    PartitionScheme,
)

from .conftest import DeviceFactory, make_image, request_for, run_ota
from .firmware_server import FirmwareServer

MIB = 1024 * 1024
BIG_IMAGE_SIZE = 4 * MIB


def test_large_table_layout() -> None:
    """Same data partitions as the default, two 7 MiB app slots, 64 KiB aligned, all
    inside the 16 MB flash."""
    scheme = PartitionScheme.LARGE_OTA_16MB
    assert scheme.table is LARGE_OTA_16MB_TABLE
    assert scheme.flash_size == 16 * MIB
    for label in ("nvs", "otadata", "phy_init"):
        assert LARGE_OTA_16MB_TABLE.by_label(label) == ADVANCED_HTTPS_OTA_TABLE.by_label(label)
    slots = LARGE_OTA_16MB_TABLE.ota_apps
    assert [slot.label for slot in slots] == ["ota_0", "ota_1"]
    assert {slot.size for slot in slots} == {7 * MIB}
    assert all(slot.offset % 0x10000 == 0 for slot in slots)  # app partitions: 64 KiB
    assert max(p.end for p in LARGE_OTA_16MB_TABLE.partitions) <= scheme.flash_size
    assert LARGE_OTA_16MB_TABLE.factory is None
    default = PartitionScheme.ADVANCED_HTTPS_OTA
    assert (default.table, default.flash_size) == (ADVANCED_HTTPS_OTA_TABLE, DEFAULT_FLASH_SIZE)


async def test_device_default_is_unchanged(make_device: DeviceFactory) -> None:
    """Without a choice: advanced_https_ota's table on a 4 MB flash."""
    device = await make_device()
    assert device.table is ADVANCED_HTTPS_OTA_TABLE
    assert device.flash.size == DEFAULT_FLASH_SIZE


async def test_four_mib_image_installs_into_the_large_table(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    """A 4 MiB image is pulled over HTTPS into ota_1 of the 16 MB layout and boots."""
    device = await make_device(partition_table=PartitionScheme.LARGE_OTA_16MB)
    assert device.flash.size == 16 * MIB
    image = make_image("1.1.0", size=BIG_IMAGE_SIZE)
    status, _ = await run_ota(device, request_for(firmware_server, "/big.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert status.bytes_written == BIG_IMAGE_SIZE
    info = device.info()
    assert (info.version, info.running_partition) == ("1.1.0", "ota_1")
    assert info.image_state is ImageState.PENDING_VERIFY
    slot = LARGE_OTA_16MB_TABLE.by_label("ota_1")
    assert device.flash.read(slot.offset, BIG_IMAGE_SIZE) == image


async def test_default_table_refuses_four_mib(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    """The 1700 KiB slots of the default table: ESP_ERR_INVALID_SIZE, nothing started."""
    device = await make_device()
    image = make_image("1.1.0", size=BIG_IMAGE_SIZE)
    with pytest.raises(DeviceRefusedError) as refused:
        await device.start_ota(request_for(firmware_server, "/big.bin", image, "1.1.0"))
    assert refused.value.error == ESP_ERR_INVALID_SIZE
    assert device.ota_status().state is OtaState.IDLE
    assert firmware_server.requests == []


def test_unknown_table_is_refused() -> None:
    """A name that is no PartitionScheme: ValueError when the device is built."""
    with pytest.raises(ValueError, match="no_such_table"):
        SimulatedDevice(DeviceConfig(mac="24:0a:c4:00:00:01", partition_table="no_such_table"))  # type: ignore[arg-type]


async def test_saved_state_of_another_flash_size_is_refused(
    tmp_path: Path, factory_image: bytes
) -> None:
    """A state folder saved with the 4 MB layout does not restore into a 16 MB device."""
    mac = "24:0a:c4:00:00:02"
    first = SimulatedDevice(DeviceConfig(mac=mac, factory_image=factory_image, state_dir=tmp_path))
    await first.start()
    await first.close()
    second = SimulatedDevice(
        DeviceConfig(
            mac=mac,
            factory_image=factory_image,
            state_dir=tmp_path,
            partition_table=PartitionScheme.LARGE_OTA_16MB,
        )
    )
    with pytest.raises(ValueError, match="another partition table"):
        await second.start()
    await second.close()


async def test_command_line_and_fleet(socket_enabled: None) -> None:
    """--partition-table reaches FleetOptions and every device of the fleet."""
    parser = cli.build_parser()
    assert cli.fleet_options(parser.parse_args([])).partition_table is (
        PartitionScheme.ADVANCED_HTTPS_OTA
    )
    options = cli.fleet_options(
        parser.parse_args(["--count", "2", "--partition-table", "large_ota_16mb"])
    )
    assert options.partition_table is PartitionScheme.LARGE_OTA_16MB
    fleet = Fleet(options)
    try:
        await fleet.start()
        assert [device.flash.size for device in fleet.devices] == [16 * MIB] * 2
        assert {device.table for device in fleet.devices} == {LARGE_OTA_16MB_TABLE}
    finally:
        await fleet.stop()


def test_command_line_refuses_unknown_table(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --partition-table is a usage error (exit code 2) naming the choices."""
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["--partition-table", "huge"])
    assert exited.value.code == 2
    assert "large_ota_16mb" in capsys.readouterr().err
