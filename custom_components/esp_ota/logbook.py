"""Logbook entries for finished installs (from the esp_ota_update_finished event)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.components.logbook.const import (
    LOGBOOK_ENTRY_ENTITY_ID,
    LOGBOOK_ENTRY_MESSAGE,
    LOGBOOK_ENTRY_NAME,
)
from homeassistant.core import Event, HomeAssistant, callback

from .const import DOMAIN, EVENT_UPDATE_FINISHED


def describe_update_finished(data: dict[str, Any]) -> str:
    """One line of what an install did."""
    source, target = data["from_version"], data["to_version"]
    match data["result"]:
        case "succeeded":
            return f"updated firmware from {source} to {target} (verified and confirmed)"
        case "rolled_back":
            return f"rolled back to {source}: firmware {target} did not start correctly"
        case _:
            reason = (data.get("reason") or "failed").replace("_", " ")
            error = f" ({data['error']})" if data.get("error") else ""
            return f"failed to update firmware to {target}: {reason}{error}; still runs {source}"


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, Any]]], None],
) -> None:
    """Describe the integration's events for the logbook."""

    @callback
    def describe(event: Event) -> dict[str, Any]:
        return {
            LOGBOOK_ENTRY_NAME: event.data["name"],
            LOGBOOK_ENTRY_MESSAGE: describe_update_finished(dict(event.data)),
            LOGBOOK_ENTRY_ENTITY_ID: event.data.get("entity_id"),
        }

    async_describe_event(DOMAIN, EVENT_UPDATE_FINISHED, describe)
