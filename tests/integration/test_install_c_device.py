"""Home Assistant updates the C device end to end: esp_ota_agent built for ESP-IDF's linux
target (build/firmware-host, made by script/build-firmware) with ESP-IDF's own HTTPS
server, HTTP client and esp_https_ota.c. Added by hand through the config flow, given a
feed in the options, installed with update.install: the device pulls the image from Home
Assistant's firmware server, reboots into it, and is verified and confirmed."""

from __future__ import annotations

import aiohttp
import pytest
from homeassistant.components.update.const import ATTR_INSTALLED_VERSION, ATTR_LATEST_VERSION
from homeassistant.config_entries import SOURCE_USER
from homeassistant.const import CONF_HOST, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er

from custom_components.esp_ota.const import (
    CONF_CHANNEL,
    CONF_FEED_URL,
    CONF_REBOOT_TIMEOUT,
    CONF_SECRET,
    DOMAIN,
)
from custom_components.esp_ota.espota.image import read_app_descriptor
from tests.conformance.devices import (
    HOST_NOT_BUILT,
    HOST_PARTITION_TABLE,
    HOST_PROGRAM,
    DeviceOptions,
    HostDevice,
)

from .conftest import CHIP, PROJECT, ReleaseServer
from .test_install import (
    finished_events,
    firmware_server_on_loopback,  # noqa: F401 - the autouse fixture: server on loopback
    image_of,
    install,
    state_attr,
    state_of,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    not (HOST_PROGRAM.is_file() and HOST_PARTITION_TABLE.is_file()), reason=HOST_NOT_BUILT
)


async def test_home_assistant_updates_the_c_device(
    hass: HomeAssistant, release_server: ReleaseServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """By hand entry, install, verified, confirmed: the C device runs 1.1.0 from ota_1,
    valid, and Home Assistant says so only then."""
    image = image_of("1.1.0")
    release_server.publish("1.1.0", image)
    events = finished_events(hass)
    async with aiohttp.ClientSession() as session:
        device = HostDevice(
            DeviceOptions(chip=CHIP, chip_revision=4, project=PROJECT, version="1.0.0"),
            session,
            tmp_path_factory.mktemp("c-device"),
        )
        await device.start()
        try:
            result = await hass.config_entries.flow.async_init(
                DOMAIN, context={"source": SOURCE_USER}
            )
            result = await hass.config_entries.flow.async_configure(
                result["flow_id"],
                {CONF_HOST: f"127.0.0.1:{device.port}", CONF_SECRET: device.secret},
            )
            assert result["type"] is FlowResultType.CREATE_ENTRY, result
            entry = result["result"]
            assert entry.unique_id == device.mac
            await hass.async_block_till_done()

            result = await hass.config_entries.options.async_init(entry.entry_id)
            result = await hass.config_entries.options.async_configure(
                result["flow_id"],
                {
                    CONF_FEED_URL: release_server.url,
                    CONF_CHANNEL: "stable",
                    CONF_REBOOT_TIMEOUT: 30,
                },
            )
            assert result["type"] is FlowResultType.CREATE_ENTRY, result
            await hass.async_block_till_done()

            registry = er.async_get(hass)
            firmware = next(
                item.entity_id
                for item in er.async_entries_for_config_entry(registry, entry.entry_id)
                if item.domain == "update" and item.unique_id.endswith("firmware")
            )
            await wait_for(lambda: state_of(hass, firmware) == STATE_ON)
            assert state_attr(hass, firmware, ATTR_INSTALLED_VERSION) == "1.0.0"
            assert state_attr(hass, firmware, ATTR_LATEST_VERSION) == "1.1.0"

            await install(hass, firmware)

            assert state_of(hass, firmware) == STATE_OFF
            assert state_attr(hass, firmware, ATTR_INSTALLED_VERSION) == "1.1.0"
            assert [event.data["result"] for event in events] == ["succeeded"]
            info = await device.client.info()
            assert (info.version, info.running_partition, info.image_state) == (
                "1.1.0",
                "ota_1",
                "valid",
            )
            assert info.app_elf_sha256 == read_app_descriptor(image)[1].app_elf_sha256
            assert info.last_ota.state == "succeeded"
            assert await hass.config_entries.async_unload(entry.entry_id)
        finally:
            await device.close()
