"""Diagnostics download: what the device and the feed say, with secrets redacted.

The feed URL is shown without its query and user:password (either may be an access
token); so is any URL in an error text, those of records stored before that was so too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_CERT_FINGERPRINT, CONF_FEED_PUBLIC_KEY, CONF_FEED_URL, CONF_SECRET
from .espota.urls import redacted_text, redacted_url
from .runtime import EspOtaConfigEntry

TO_REDACT = {CONF_SECRET, CONF_CERT_FINGERPRINT, CONF_FEED_PUBLIC_KEY, "token", "headers"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: EspOtaConfigEntry
) -> dict[str, Any]:
    """The entry, the device's last report, the live progress and the feed's state."""
    runtime = entry.runtime_data
    state = runtime.device.data
    feed = runtime.feed
    options = async_redact_data(dict(entry.options), TO_REDACT)
    if options.get(CONF_FEED_URL):
        options[CONF_FEED_URL] = redacted_url(options[CONF_FEED_URL])
    record = async_redact_data(state.job.to_dict(), TO_REDACT) if state.job else None
    if record is not None and record.get("message"):
        record["message"] = redacted_text(record["message"])
    return {
        "entry": {
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": options,
        },
        "device": dataclasses.asdict(state.info),
        "live": dataclasses.asdict(state.live),
        "last_event": dataclasses.asdict(state.last_event) if state.last_event else None,
        "install": {
            "in_progress": state.installing,
            # The record keeps the device's download token: it goes as **REDACTED**.
            "record": record,
        },
        "feed": None
        if feed is None
        else {
            "url": feed.shown_url,
            "releases": len(feed.data.releases) if feed.data else None,
            "consecutive_failures": feed.consecutive_failures,
            "last_error": redacted_text(feed.last_error) if feed.last_error else None,
            "requests": feed.client.requests,
            "parses": feed.client.parses,
        },
    }
