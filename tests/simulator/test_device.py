"""SimulatedDevice as a whole: its state at power-on, its pace, and real ESP-IDF images."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from custom_components.esp_ota.espota.protocol import ImageState, OtaState
from simulator import pace
from simulator.device import ESP_RST_POWERON
from simulator.pace import Pace

from .conftest import DeviceFactory, make_image, request_for, run_ota
from .firmware_server import FirmwareServer


async def test_power_on_state(make_device: DeviceFactory, factory_image: bytes) -> None:
    device = await make_device(mac="24:0a:c4:12:34:56", chip="ESP32", chip_revision=100)
    assert device.online
    info = device.info()
    assert info.api == 1
    assert info.mac == "24:0a:c4:12:34:56"
    assert (info.chip, info.chip_revision) == ("esp32", 100)
    assert (info.project, info.version, info.idf_ver) == ("esp-ota-demo", "1.0.0", "v5.5.1")
    assert len(info.app_elf_sha256) == 64
    assert (info.running_partition, info.boot_partition) == ("ota_0", "ota_0")
    assert info.image_state is ImageState.VALID
    assert info.last_invalid_partition is None
    assert info.reset_reason == ESP_RST_POWERON
    assert 0 <= info.uptime_s < 5
    assert info.last_ota.state is OtaState.IDLE
    assert device.ota_status().ota_id is None
    assert device.flash.read(device.table.ota_apps[0].offset, len(factory_image)) == factory_image
    await device.start()  # idempotent
    assert device.boot_count == 1


async def test_realistic_pace_small_image(
    make_device: DeviceFactory, firmware_server: FirmwareServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pace, "TLS_HANDSHAKE_S", (1.0, 1.0))
    device = await make_device(pace=Pace.REALISTIC, reboot_time_s=0)
    image = make_image("1.1.0", size=24 * 1024)
    started = time.monotonic()
    status, _ = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    elapsed = time.monotonic() - started
    assert status.state is OtaState.SUCCEEDED
    # One GET: full handshake 1 s + latency + 6 sector erases (0.4 s) + receiving 24 KiB
    # (0.12 s) and programming it (0.03 s) + the 1 s pause before esp_restart.
    assert 2.4 < elapsed < 4.0


async def test_timing_model_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    timing = pace.Timing(Pace.REALISTIC)
    await timing.erase_sectors(256)
    await timing.erase_blocks(1024 * 1024)
    await timing.program(754_000)
    await timing.tls_handshake(resumed=False)
    await timing.tls_handshake(resumed=True)
    await timing.request()
    await timing.restart_delay()
    assert slept[:3] == pytest.approx([256 * 0.066, 16 * 0.2, 1.0])
    assert 1.0 <= slept[3] <= 3.0
    assert slept[4:] == pytest.approx([0.1, 0.03, 1.0])
    # The model's 1 MiB OTA: 23.6 s with sector erases, 9.8 s with block erases (guide).
    receive_and_program = (
        2**20 / pace.LAN_RECEIVE_BYTES_PER_S + 2**20 / pace.FLASH_PROGRAM_BYTES_PER_S
    )
    assert 256 * pace.SECTOR_ERASE_S + receive_and_program == pytest.approx(23.6, abs=0.5)
    assert 16 * pace.BLOCK_ERASE_S + receive_and_program == pytest.approx(9.8, abs=0.5)
    slept.clear()
    quiet = pace.Timing(Pace.UNTHROTTLED)
    await quiet.erase_sectors(256)
    await quiet.tls_handshake(resumed=False)
    assert slept == []


def read_bytes(path: Path) -> bytes:
    """A file's bytes (sync helper for async tests)."""
    return path.read_bytes()


async def test_real_esp_idf_images(
    make_device: DeviceFactory, firmware_server: FirmwareServer, esp_images_dir: Path
) -> None:
    # A real ESP-IDF v3.3 app (with a Secure Boot v1 signature block after it) as factory
    # firmware: the bootloader model loads it.
    hello = await make_device(factory_image=read_bytes(esp_images_dir / "hello-world-signed.bin"))
    info = hello.info()
    assert (info.project, info.version) == ("hello-world", "v3.3-beta3-21-g0706bd0d1-dirty")
    # A real ESP-IDF v5.0 app for the ESP32-S2, pulled over HTTPS by an S2 running "blink".
    blink = read_bytes(esp_images_dir / "esp_idf_blink_esp32s2.bin")
    device = await make_device(
        chip="esp32s2",
        chip_revision=0,
        factory_image=make_image("0.9.0", project="blink", chip="esp32s2", max_chip_rev_full=0),
    )
    version = "qa-test-v5.0-20220830-4-g4532e6"
    status, _ = await run_ota(device, request_for(firmware_server, "/blink.bin", blink, version))
    assert status.state is OtaState.SUCCEEDED
    info = device.info()
    assert (info.project, info.version, info.chip) == ("blink", version, "esp32s2")
    assert info.idf_ver == "v5.0-beta1-427-g4532e6e0b2-dirt"
    device.confirm()
    assert device.info().image_state is ImageState.VALID


async def test_the_device_answers_for_its_board_and_app(make_device: DeviceFactory) -> None:
    """SimulatedDevice is the board and the app behind one interface."""
    device = await make_device()
    board, app = device.board, device.app
    assert (device.flash, device.efuse, device.table) == (
        board.flash,
        board.efuse,
        board.hardware.table,
    )
    assert (device.reset_reason, device.boot_count, device.boot_loop) == (ESP_RST_POWERON, 1, False)
    assert device.last_boot is board.last_boot
    assert device.last_boot is not None
    assert device.last_boot.partition == device.running_partition == app.ops.running
    assert 0 <= device.uptime_s < 5
    assert device.running_app is app.running_app
    assert device.image_state() is ImageState.VALID
    device.reboot_time_s = 0.5
    assert (device.reboot_time_s, board.reboot_time_s) == (0.5, 0.5)
