"""The devices' shared session: made once, Home Assistant's resolver, closed with Home
Assistant."""

from __future__ import annotations

from unittest.mock import patch

import aiohttp
import pytest
from homeassistant.const import EVENT_HOMEASSISTANT_CLOSE
from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from custom_components.esp_ota.device_session import (
    _HomeAssistantResolver,
    async_get_device_session,
)
from custom_components.esp_ota.espota.lean_tls import LeanTlsConnector


async def test_one_session_for_every_device_closed_with_home_assistant(
    hass: HomeAssistant,
) -> None:
    """Every device client shares one session with the lean connector; it closes when Home
    Assistant closes, and a later call makes a new one."""
    session = async_get_device_session(hass)
    assert async_get_device_session(hass) is session
    assert isinstance(session.connector, LeanTlsConnector)
    hass.bus.async_fire(EVENT_HOMEASSISTANT_CLOSE)
    await hass.async_block_till_done()
    assert session.closed
    renewed = async_get_device_session(hass)
    assert renewed is not session
    await renewed.close()


@pytest.mark.usefixtures("socket_enabled")
async def test_host_names_resolve_through_home_assistants_connector(
    hass: HomeAssistant,
) -> None:
    """A device's host name is resolved as Home Assistant resolves any (its DNS cache and
    mDNS), for the port asked. (Home Assistant's mDNS resolver is replaced by the system's
    here, as the test plugin does; the session asks Home Assistant's connector either way.)"""
    system_resolver = aiohttp.ThreadedResolver()
    system_resolver.real_close = system_resolver.close  # type: ignore[attr-defined]  # the plugin closes it so
    with patch(
        "homeassistant.helpers.aiohttp_client._async_make_resolver",
        return_value=system_resolver,
    ):
        async_get_clientsession(hass)  # Home Assistant's shared connector, made here
    resolver = _HomeAssistantResolver(hass)
    results = await resolver.resolve("localhost", 8443)
    assert results
    assert {result["port"] for result in results} == {8443}
    assert {result["host"] for result in results} <= {"127.0.0.1", "::1"}
    await resolver.close()
