"""The HTTP session every device client shares: Home Assistant's resolver and settings,
with TLS connections that cost 4 KiB of read buffer each instead of 256 KiB.

Each device holds one TLS connection open for good (its event stream). Through Home
Assistant's shared session each would hold asyncio's 256 KiB read buffer: with hundreds
of devices, most of what the integration costs. This session differs from Home
Assistant's only in its connector (espota.lean_tls.LeanTlsConnector); host names are still
resolved by Home Assistant's resolver (mDNS names included), through its shared connector.
Made once, closed when Home Assistant closes.
"""

from __future__ import annotations

import socket
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from homeassistant.const import EVENT_HOMEASSISTANT_CLOSE
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN
from .espota.lean_tls import LeanTlsConnector

DEVICE_SESSION: Final[HassKey[aiohttp.ClientSession]] = HassKey(f"{DOMAIN}_device_session")


class _HomeAssistantResolver(AbstractResolver):
    """Resolves through Home Assistant's shared connector (its DNS cache and mDNS)."""

    def __init__(self, hass: HomeAssistant) -> None:
        self._hass = hass

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        connector: Any = async_get_clientsession(self._hass).connector
        resolve_host = getattr(connector, "async_resolve_host", None)
        if resolve_host is None:  # pragma: no cover - Home Assistant's connector has it
            return await aiohttp.ThreadedResolver().resolve(host, port, family)
        results: list[ResolveResult] = await resolve_host(host)
        return [ResolveResult(**{**result, "port": port}) for result in results]

    async def close(self) -> None:
        """Nothing of its own to close: the shared connector is Home Assistant's."""


@callback
def async_get_device_session(hass: HomeAssistant) -> aiohttp.ClientSession:
    """The session of every device client (made at the first call)."""
    if (session := hass.data.get(DEVICE_SESSION)) is not None:
        return session
    session = aiohttp.ClientSession(
        connector=LeanTlsConnector(resolver=_HomeAssistantResolver(hass), limit=0),
    )
    hass.data[DEVICE_SESSION] = session

    async def _async_close(_: Event) -> None:
        hass.data.pop(DEVICE_SESSION, None)
        await session.close()

    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_CLOSE, _async_close)
    return session
