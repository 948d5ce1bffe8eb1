"""Small helpers shared by the config flow and the coordinators."""

from __future__ import annotations

from typing import Any

from homeassistant.const import CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant
from yarl import URL

from .const import CONF_CERT_FINGERPRINT, CONF_SECRET, DEFAULT_PORT
from .device_session import async_get_device_session
from .espota.device_client import DeviceClient


def parse_host(text: str) -> tuple[str, int]:
    """'192.168.1.20', '192.168.1.20:8443' or 'https://esp.local:8443' -> (host, port)."""
    text = text.strip()
    url = URL(text if "://" in text else f"https://{text}")
    if not url.host:
        raise ValueError(f"{text!r} is not a host name or address")
    return url.host, url.explicit_port or DEFAULT_PORT


def client_from_data(hass: HomeAssistant, data: dict[str, Any]) -> DeviceClient:
    """A device client, pinned to the stored certificate, on the devices' session."""
    return DeviceClient(
        async_get_device_session(hass),
        data[CONF_HOST],
        data[CONF_PORT],
        data[CONF_SECRET],
        cert_fingerprint=data.get(CONF_CERT_FINGERPRINT),
    )
