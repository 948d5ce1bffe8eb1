"""Rollback: on request, by the bootloader after an unconfirmed reboot, after a panic at
boot; confirm and rollback where there is nothing to confirm or roll back to."""

from __future__ import annotations

import pytest

from custom_components.esp_ota.espota.errors import DeviceRefusedError
from custom_components.esp_ota.espota.protocol import ImageState, OtaState

from .conftest import DutFactory
from .devices import DeviceOptions, DeviceUnderTest
from .support import (
    API,
    FirmwareHost,
    assert_not_rebooted,
    assert_on,
    make_image,
    mark_uptime,
    raw_request,
    reboot,
    update,
    update_successfully,
    wait_info,
    wait_rebooted,
)


async def test_confirm_and_rollback_on_a_fresh_device(dut: DeviceUnderTest) -> None:
    """The first boot left otadata with one VALID entry (ota_0): confirm is a no-op, and
    rollback has no other valid image (409 ESP_ERR_OTA_ROLLBACK_FAILED) and changes
    nothing. (The contract's 409 ESP_FAIL "Running firmware is factory" needs otadata
    without any entry, which the bootloader's first boot never leaves.)"""
    mark = await mark_uptime(dut)
    await dut.client.confirm()
    with pytest.raises(DeviceRefusedError) as refused:
        await dut.client.rollback()
    assert refused.value.error == "ESP_ERR_OTA_ROLLBACK_FAILED", refused.value
    info = await assert_not_rebooted(dut, mark)
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.last_invalid_partition is None


@pytest.mark.parametrize("confirmed", [False, True], ids=["pending_verify", "confirmed"])
async def test_rollback_on_request(
    dut: DeviceUnderTest, firmware: FirmwareHost, confirmed: bool
) -> None:
    """After an update (confirmed or not) POST /ota/rollback answers 200 and the device
    reboots into the old slot; last_invalid_partition names the slot it left; a second
    rollback has nowhere to go (409 ESP_ERR_OTA_ROLLBACK_FAILED)."""
    await update_successfully(dut, firmware.publish(make_image("1.1.0"), "1.1.0"))
    if confirmed:
        await dut.client.confirm()
    mark = await mark_uptime(dut)
    answer = await raw_request(dut, "POST", f"{API}/ota/rollback")
    assert (answer.status, answer.json()) == (200, {"ok": True})
    info = await wait_rebooted(dut, mark)
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.last_invalid_partition == "ota_1"
    assert info.reset_reason == "ESP_RST_SW"

    with pytest.raises(DeviceRefusedError) as refused:
        await dut.client.rollback()
    assert refused.value.error == "ESP_ERR_OTA_ROLLBACK_FAILED", refused.value
    again = await reboot(dut)
    assert_on(again, "1.0.0", "ota_0", image_state=ImageState.VALID)

    info = await update_successfully(dut, firmware.publish(make_image("1.2.0"), "1.2.0"))
    assert_on(info, "1.2.0", "ota_1", image_state=ImageState.PENDING_VERIFY)


async def test_an_unconfirmed_image_is_rolled_back_at_the_next_boot(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """A reboot before confirming: the bootloader rolls back to the old slot."""
    await update_successfully(dut, firmware.publish(make_image("1.1.0"), "1.1.0"))
    info = await reboot(dut)
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.last_invalid_partition == "ota_1"
    assert info.reset_reason == "ESP_RST_SW"
    assert info.last_ota.state is OtaState.SUCCEEDED  # the download itself did succeed


async def test_a_panic_at_boot_rolls_back(make_dut: DutFactory, firmware: FirmwareHost) -> None:
    """1.1.0 panics at every boot: the device comes back on 1.0.0 (ESP_RST_PANIC) with the
    new slot as last_invalid_partition."""
    dut = await make_dut(DeviceOptions(crash_versions=frozenset({"1.1.0"})))
    offer = firmware.publish(make_image("1.1.0"), "1.1.0")
    ota_id, status, _ = await update(dut, offer)
    info = await wait_info(
        dut, "the rolled back firmware", lambda i: i.last_invalid_partition is not None
    )
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.last_invalid_partition == "ota_1"
    assert info.reset_reason == "ESP_RST_PANIC"
    # The job itself succeeded (image verified, boot partition switched, restarted); the
    # bootloader then rolled the panicking image back.
    assert status.state is OtaState.SUCCEEDED, status
    assert (info.last_ota.ota_id, info.last_ota.state) == (ota_id, OtaState.SUCCEEDED)

    info = await update_successfully(dut, firmware.publish(make_image("1.2.0"), "1.2.0"))
    assert_on(info, "1.2.0", "ota_1", image_state=ImageState.PENDING_VERIFY)


async def test_a_failed_health_check_refuses_the_confirm(
    make_dut: DutFactory, firmware: FirmwareHost
) -> None:
    """The firmware's own health check says no: confirm is refused (409 ESP_FAIL, naming
    the check), the image stays pending_verify, and the next boot rolls it back. The
    factory image, valid already, confirms as a no-op (the check is not asked)."""
    dut = await make_dut(DeviceOptions(healthy=False))
    await dut.client.confirm()
    await update_successfully(dut, firmware.publish(make_image("1.1.0"), "1.1.0"))
    refused = await raw_request(dut, "POST", f"{API}/ota/confirm")
    assert refused.status == 409
    assert refused.error() == "ESP_FAIL"
    assert "health check" in str(refused.json()["message"])
    info = await dut.client.info()
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.PENDING_VERIFY)
    info = await reboot(dut)
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.last_invalid_partition == "ota_1"
