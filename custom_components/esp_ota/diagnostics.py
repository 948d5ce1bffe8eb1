"""Diagnostics download: what the device and the feed say, with secrets redacted."""

from __future__ import annotations

import dataclasses
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_CERT_FINGERPRINT, CONF_FEED_PUBLIC_KEY, CONF_SECRET
from .coordinator import EspOtaConfigEntry

TO_REDACT = {CONF_SECRET, CONF_CERT_FINGERPRINT, CONF_FEED_PUBLIC_KEY, "token", "headers"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: EspOtaConfigEntry
) -> dict[str, Any]:
    """The entry, the device's last report, the live progress and the feed's state."""
    runtime = entry.runtime_data
    device = runtime.device
    feed = runtime.feed
    return {
        "entry": {
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": async_redact_data(dict(entry.options), TO_REDACT),
        },
        "device": dataclasses.asdict(device.data) if device.data else None,
        "progress": dataclasses.asdict(device.progress),
        "last_event": dataclasses.asdict(device.last_event) if device.last_event else None,
        "install": {
            "in_progress": runtime.installer.in_progress,
            # The record keeps the device's download token: it goes as **REDACTED**.
            "record": async_redact_data(runtime.installer.record.to_dict(), TO_REDACT)
            if runtime.installer.record
            else None,
        },
        "feed": None
        if feed is None
        else {
            "url": feed.url,
            "releases": len(feed.data.releases) if feed.data else None,
            "consecutive_failures": feed.consecutive_failures,
            "last_error": feed.last_error,
            "requests": feed.client.requests,
            "parses": feed.client.parses,
        },
    }
