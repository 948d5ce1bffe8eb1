"""Every config flow path, against simulated devices over real HTTPS on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import ip_address
from unittest.mock import AsyncMock, patch

import pytest
from homeassistant.config_entries import SOURCE_DHCP, SOURCE_USER, SOURCE_ZEROCONF
from homeassistant.const import CONF_HOST, CONF_MAC, CONF_PORT
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.dhcp import DhcpServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

from custom_components.esp_ota.const import (
    CONF_CERT_FINGERPRINT,
    CONF_CHANNEL,
    CONF_DIRECT_DOWNLOAD,
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_MAX_PARALLEL_INSTALLS,
    CONF_REBOOT_TIMEOUT,
    CONF_SECRET,
    DOMAIN,
)
from custom_components.esp_ota.espota.feed_signing import generate_signing_key, public_key_text

from .conftest import SECRET, SimDevice, StartDevice, make_entry, setup_entry


@pytest.fixture(autouse=True)
def mock_setup_entry(request: pytest.FixtureRequest) -> Iterator[AsyncMock]:
    """Flow tests test the flow: the entry it creates is not set up (except for options)."""
    if request.node.name == "test_options":
        yield AsyncMock()
        return
    with patch("custom_components.esp_ota.async_setup_entry", return_value=True) as mocked:
        yield mocked


def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def zeroconf_info(sim: SimDevice, *, mac: str | None = None, api: str = "1") -> ZeroconfServiceInfo:
    """What HA's zeroconf hands the flow for a device's advertisement."""
    compact = sim.mac.replace(":", "")
    return ZeroconfServiceInfo(
        ip_address=ip_address("127.0.0.1"),
        ip_addresses=[ip_address("127.0.0.1")],
        hostname=f"esp-ota-{compact}.local.",
        name=f"esp-ota-{compact}._esp-ota._tcp.local.",
        port=sim.port,
        type="_esp-ota._tcp.local.",
        properties={
            "mac": mac or sim.mac,
            "project": "garden",
            "version": "1.0.0",
            "chip": "esp32c3",
            "api": api,
        },
    )


async def test_user_flow_pins_the_certificate(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """By hand: host:port and secret; the entry holds the MAC and the pinned certificate."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: f"127.0.0.1:{sim_device.port}", CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "garden 34:56"
    assert result["result"].unique_id == sim_device.mac
    assert result["data"] == {
        CONF_HOST: "127.0.0.1",
        CONF_PORT: sim_device.port,
        CONF_SECRET: SECRET,
        CONF_CERT_FINGERPRINT: sim_device.certificate.fingerprint,
        CONF_MAC: sim_device.mac,
    }


@pytest.mark.parametrize(
    ("host", "secret", "error"),
    [
        ("closed", SECRET, {"base": "cannot_connect"}),
        ("device", "wrong", {"base": "invalid_auth"}),
        ("https://", SECRET, {CONF_HOST: "invalid_host"}),
    ],
)
async def test_user_flow_errors_then_recovers(
    hass: HomeAssistant, sim_device: SimDevice, host: str, secret: str, error: dict[str, str]
) -> None:
    """Each error is shown on the form, nothing is created, and a retry works."""
    address = {
        "closed": f"127.0.0.1:{closed_port()}",
        "device": f"127.0.0.1:{sim_device.port}",
    }.get(host, host)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: address, CONF_SECRET: secret}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == error
    assert not hass.config_entries.async_entries(DOMAIN)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: f"127.0.0.1:{sim_device.port}", CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_not_an_esp_ota_device(hass: HomeAssistant, socket_enabled: None) -> None:
    """An HTTPS server that is not the device API is an invalid response, not a crash."""
    from aiohttp import web

    from simulator.tls import make_device_certificate

    certificate = make_device_certificate("00:00:00:00:00:01", "other.local")
    app = web.Application()

    async def not_the_device_api(request: web.Request) -> web.Response:
        return web.json_response({"hello": 1})

    app.router.add_get("/api/v1/info", not_the_device_api)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=certificate.server_context()).start()
    try:
        result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"],
            {CONF_HOST: f"127.0.0.1:{runner.addresses[0][1]}", CONF_SECRET: SECRET},
        )
        assert result["errors"] == {"base": "invalid_response"}
    finally:
        await runner.cleanup()


async def test_user_flow_already_configured(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """The same device cannot be added twice."""
    entry = make_entry(sim_device)
    entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: f"127.0.0.1:{sim_device.port}", CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


async def test_zeroconf_new_device(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """A discovered device asks for its secret, then is added."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(sim_device)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "zeroconf_confirm"
    assert result["description_placeholders"] == {"host": f"127.0.0.1:{sim_device.port}"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: "wrong"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_CERT_FINGERPRINT] == sim_device.certificate.fingerprint


async def test_zeroconf_known_device_follows_its_address(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """Discovery of a configured device updates its host and port and goes no further."""
    entry = make_entry(sim_device)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_PORT: 1})
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(sim_device)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_PORT] == sim_device.port


async def test_zeroconf_unsupported_and_wrong_device(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """Another API version is refused; a MAC that does not match the device aborts."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(sim_device, api="2")
    )
    assert result["reason"] == "unsupported_device"
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_ZEROCONF},
        data=zeroconf_info(sim_device, mac="24:0a:c4:99:99:99"),
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_device"


async def test_dhcp_follows_a_known_device(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """A registered device with a new IP gets its entry updated; unknown ones are ignored."""
    entry = make_entry(sim_device)
    entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_DHCP},
        data=DhcpServiceInfo(ip="127.0.0.2", hostname="esp", macaddress="240ac4123456"),
    )
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_HOST] == "127.0.0.2"
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_DHCP},
        data=DhcpServiceInfo(ip="127.0.0.3", hostname="x", macaddress="240ac4000001"),
    )
    assert result["reason"] == "not_configured"


async def test_reauth(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """A changed secret is asked for, checked against the pinned certificate, stored."""
    entry = make_entry(sim_device)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_SECRET: "old"})
    result = await entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_confirm"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: "still wrong"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: SECRET}
    )
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_SECRET] == SECRET


async def test_reconfigure(hass: HomeAssistant, start_device: StartDevice) -> None:
    """New address and secret; another certificate or another device is refused."""
    original = await start_device(mac="24:0a:c4:12:34:56")
    entry = make_entry(original)
    entry.add_to_hass(hass)
    impostor = await start_device(mac="24:0a:c4:12:34:56")  # same MAC, its own certificate
    result = await entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: f"127.0.0.1:{impostor.port}", CONF_SECRET: SECRET}
    )
    assert result["errors"] == {"base": "cert_mismatch"}
    other = await start_device(mac="24:0a:c4:65:43:21", certificate=original.certificate)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: f"127.0.0.1:{other.port}", CONF_SECRET: SECRET}
    )
    assert result["reason"] == "wrong_device"

    moved = await start_device(
        mac="24:0a:c4:12:34:56", certificate=original.certificate, secret="new-secret"
    )
    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: "bad host ]", CONF_SECRET: "x"}
    )
    assert result["errors"] == {CONF_HOST: "invalid_host"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: f"127.0.0.1:{moved.port}", CONF_SECRET: "new-secret"}
    )
    assert result["reason"] == "reconfigure_successful"
    assert (entry.data[CONF_PORT], entry.data[CONF_SECRET]) == (moved.port, "new-secret")


async def test_options(hass: HomeAssistant, sim_device: SimDevice) -> None:
    """Feed URL, key, channel and reboot time are validated and stored."""
    entry = make_entry(sim_device)
    await setup_entry(hass, entry)
    key = public_key_text(generate_signing_key())
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["step_id"] == "init"
    for options, errors in (
        ({CONF_FEED_URL: "ftp://x/feed.json"}, {CONF_FEED_URL: "invalid_feed_url"}),
        ({CONF_FEED_URL: "https://x/f.json", CONF_FEED_PUBLIC_KEY: "nope"},
         {CONF_FEED_PUBLIC_KEY: "invalid_public_key"}),
        ({CONF_FEED_PUBLIC_KEY: key}, {CONF_FEED_URL: "feed_url_required"}),
    ):  # fmt: skip
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {**options, CONF_CHANNEL: "stable", CONF_REBOOT_TIMEOUT: 180}
        )
        assert result["errors"] == errors
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            CONF_FEED_URL: "https://firmware.example.com/feed.json",
            CONF_FEED_PUBLIC_KEY: key,
            CONF_CHANNEL: "beta",
            CONF_REBOOT_TIMEOUT: 240,
            CONF_DIRECT_DOWNLOAD: True,
            CONF_MAX_PARALLEL_INSTALLS: 3,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {
        CONF_FEED_URL: "https://firmware.example.com/feed.json",
        CONF_FEED_PUBLIC_KEY: key,
        CONF_CHANNEL: "beta",
        CONF_REBOOT_TIMEOUT: 240,
        CONF_DIRECT_DOWNLOAD: True,
        CONF_MAX_PARALLEL_INSTALLS: 3,
    }


async def test_reauth_refuses_another_certificate(
    hass: HomeAssistant, start_device: StartDevice
) -> None:
    """A new secret is only sent to the device with the pinned certificate."""
    original = await start_device(mac="24:0a:c4:12:34:56")
    impostor = await start_device(mac="24:0a:c4:12:34:56")  # same MAC, its own certificate
    entry = make_entry(original)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_PORT: impostor.port})
    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cert_mismatch"}
    assert entry.data[CONF_SECRET] == SECRET  # unchanged: nothing was stored


async def test_zeroconf_device_gone_and_discovered_twice(
    hass: HomeAssistant, sim_device: SimDevice
) -> None:
    """A second announcement while the first waits is not a second flow; a device that
    went away before its secret was entered is an error on the form."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(sim_device)
    )
    again = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(sim_device)
    )
    assert again["type"] is FlowResultType.ABORT
    assert again["reason"] == "already_in_progress"
    await sim_device.server.go_offline()
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    await sim_device.server.go_online()
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_SECRET: SECRET}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
