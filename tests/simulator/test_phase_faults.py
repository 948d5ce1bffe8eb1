"""Faults after the download: a slow verification and a power loss while verifying (after
the last byte, before the boot partition switch), and one request to the device's API
dropped, stalled, or cut by a power loss or a panic (the reboot and confirm phases)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import DeviceTimeoutError, DeviceUnreachableError
from custom_components.esp_ota.espota.protocol import EventType, ImageState, OtaState
from simulator.board import ESP_RST_PANIC, ESP_RST_POWERON
from simulator.esp_err import ESP_FAIL
from simulator.faults import ApiFault, FaultPlan

from .conftest import DeviceFactory, make_image, request_for, run_ota, types_of, wait_until
from .firmware_server import FirmwareServer
from .test_api import SECRET, ServedDevice, ServeDevice, serve  # noqa: F401 - fixture


async def test_a_slow_verification_reports_verifying_before_the_switch(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(verify_seconds=0.5))
    image = make_image("1.1.0")
    await device.start_ota(request_for(firmware_server, "/v.bin", image, "1.1.0"))
    await wait_until(lambda: device.ota_status().state is OtaState.VERIFYING)
    status = device.ota_status()
    assert status.bytes_written == len(image)  # every byte is in
    assert device.info().boot_partition == "ota_0"  # not switched yet
    await device.wait_idle(10)
    info = device.info()
    assert (info.version, info.image_state) == ("1.1.0", ImageState.PENDING_VERIFY)
    assert device.faults.verify_seconds == 0.5  # persistent


async def test_power_loss_while_verifying_keeps_the_old_firmware(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(power_loss_while_verifying=True))
    image = make_image("1.1.0")
    status, events = await run_ota(device, request_for(firmware_server, "/p.bin", image, "1.1.0"))
    types = types_of(events)
    assert types[-1] is EventType.WRITE_FLASH  # the last byte, then nothing: power gone
    assert events[-1].bytes_written == len(image)
    assert status.state is OtaState.FAILED
    assert status.error == ESP_FAIL
    assert status.message == "the OTA was interrupted by a reset (ESP_RST_POWERON)"
    info = device.info()
    assert (info.version, info.running_partition, info.boot_partition) == (
        "1.0.0",
        "ota_0",
        "ota_0",
    )
    assert info.image_state is ImageState.VALID
    assert info.reset_reason == ESP_RST_POWERON
    assert not device.faults.power_loss_while_verifying  # one-shot
    status, _ = await run_ota(device, request_for(firmware_server, "/p.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


async def test_a_power_loss_armed_mid_download_strikes(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    """The plan is read at every write, not copied when the job starts."""
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=128 * 1024))
    image = make_image("1.1.0", size=96 * 1024)
    await device.start_ota(request_for(firmware_server, "/m.bin", image, "1.1.0"))
    await wait_until(lambda: device.ota_status().bytes_written > 0)
    device.faults.power_loss_at_byte = device.ota_status().bytes_written + 16 * 1024
    await device.wait_idle(10)
    status = device.ota_status()
    assert status.state is OtaState.FAILED
    assert status.message == "the OTA was interrupted by a reset (ESP_RST_POWERON)"
    assert device.info().version == "1.0.0"
    assert device.faults.power_loss_at_byte is None  # fired


def armed(served: ServedDevice) -> ApiFault | None:
    """The API fault still waiting for its request."""
    return served.device.faults.api_fault


async def pending_verify(served: ServedDevice, firmware_server: FirmwareServer) -> None:
    """Update the device to 2.0.0 and wait until it runs it, pending verification."""
    image = make_image("2.0.0")
    await served.client.start_ota(
        url=firmware_server.add("/fw.bin", image),
        sha256=hashlib.sha256(image).hexdigest(),
        size=len(image),
        version="2.0.0",
        cert_pem=firmware_server.cert_pem,
    )
    await wait_until(lambda: served.device.online and served.device.info().version == "2.0.0")
    assert served.device.image_state() is ImageState.PENDING_VERIFY


async def test_a_dropped_confirm_is_done_but_unanswered(
    serve: ServeDevice,  # noqa: F811
    firmware_server: FirmwareServer,
) -> None:
    served = await serve()
    await pending_verify(served, firmware_server)
    served.device.faults.api_fault_path = "/ota/confirm"
    served.device.faults.api_fault = "drop"  # type: ignore[assignment] # as --fault sets it
    await served.client.info()  # another path: untouched
    with pytest.raises(DeviceUnreachableError):
        await served.client.confirm()
    assert (await served.client.info()).image_state is ImageState.VALID
    assert armed(served) is None  # one-shot
    await served.client.confirm()  # answered again


async def test_a_stalled_request_is_held_then_done(
    serve: ServeDevice,  # noqa: F811
    firmware_server: FirmwareServer,
) -> None:
    served = await serve()
    await pending_verify(served, firmware_server)
    faults = served.device.faults
    faults.api_fault_path, faults.api_fault, faults.api_stall_seconds = (
        "/ota/confirm",
        ApiFault.STALL,
        2.0,
    )
    confirm = asyncio.create_task(served.client.confirm())
    await wait_until(lambda: armed(served) is None)  # it arrived, and is held
    # Other requests are answered meanwhile; the confirm has not acted yet.
    assert (await served.client.info()).image_state is ImageState.PENDING_VERIFY
    assert not confirm.done()
    await confirm
    assert (await served.client.info()).image_state is ImageState.VALID


async def test_a_power_loss_as_the_confirm_arrives_rolls_back(
    serve: ServeDevice,  # noqa: F811
    firmware_server: FirmwareServer,
) -> None:
    served = await serve(reboot_time_s=0.2)
    await pending_verify(served, firmware_server)
    served.device.faults.api_fault_path = "/ota/confirm"
    served.device.faults.api_fault = ApiFault.POWER_LOSS
    with pytest.raises(DeviceUnreachableError):
        await served.client.confirm()
    await served.device.wait_idle(10)
    info = await served.client.info()
    # Never confirmed: the bootloader rolled the pending image back at the power-on.
    assert (info.version, info.running_partition, info.last_invalid_partition) == (
        "1.0.0",
        "ota_0",
        "ota_1",
    )
    assert info.reset_reason == ESP_RST_POWERON


async def test_a_crash_right_after_the_confirm_boots_the_confirmed_image(
    serve: ServeDevice,  # noqa: F811
    firmware_server: FirmwareServer,
) -> None:
    served = await serve(reboot_time_s=0.2)
    await pending_verify(served, firmware_server)
    served.device.faults.api_fault_path = "/ota/confirm"
    served.device.faults.api_fault = ApiFault.CRASH
    with pytest.raises(DeviceUnreachableError):
        await served.client.confirm()
    await served.device.wait_idle(10)
    info = await served.client.info()
    assert (info.version, info.image_state, info.running_partition) == (
        "2.0.0",
        ImageState.VALID,
        "ota_1",
    )
    assert info.reset_reason == ESP_RST_PANIC


async def test_api_latency_delays_every_answer(serve: ServeDevice) -> None:  # noqa: F811
    served = await serve()
    served.device.faults.api_latency_s = 1.0
    impatient = DeviceClient(
        served.session,
        "127.0.0.1",
        served.server.port,
        SECRET,
        cert_fingerprint=served.server.certificate.fingerprint,
        timeout=0.3,
    )
    with pytest.raises(DeviceTimeoutError):
        await impatient.info()
    # A patient client gets its answer (late); the impatient one's request is done by then.
    assert (await served.client.info()).version == "1.0.0"
