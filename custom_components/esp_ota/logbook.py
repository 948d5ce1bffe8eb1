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
from homeassistant.helpers.translation import async_get_cached_translations

from .const import DOMAIN, EVENT_UPDATE_FINISHED


def describe_update_finished(
    data: dict[str, Any], reason_words: Callable[[str], str] | None = None
) -> str:
    """One line of what an install did; `reason_words` words a failure's reason (the
    "Last update error" sensor's translated states), else its code with spaces."""
    source, target = data["from_version"], data["to_version"]
    match data["result"]:
        case "succeeded":
            return f"updated firmware from {source} to {target} (verified and confirmed)"
        case "rolled_back":
            return f"rolled back to {source}: firmware {target} did not start correctly"
        case _:
            code = data.get("reason") or "failed"
            words = reason_words(code) if reason_words else code.replace("_", " ")
            error = f" ({data['error']})" if data.get("error") else ""
            return f"failed to update firmware to {target}: {words}{error}; still runs {source}"


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, Any]]], None],
) -> None:
    """Describe the integration's events for the logbook."""

    def reason_words(reason: str) -> str:
        """The reason as the "Last update error" sensor shows it, in the user's language
        (loaded with the entities), lower case to sit inside the line."""
        translations = async_get_cached_translations(hass, hass.config.language, "entity", DOMAIN)
        key = f"component.{DOMAIN}.entity.sensor.last_error.state.{reason}"
        words = translations.get(key)
        return words[:1].lower() + words[1:] if words else reason.replace("_", " ")

    @callback
    def describe(event: Event) -> dict[str, Any]:
        return {
            LOGBOOK_ENTRY_NAME: event.data["name"],
            LOGBOOK_ENTRY_MESSAGE: describe_update_finished(dict(event.data), reason_words),
            LOGBOOK_ENTRY_ENTITY_ID: event.data.get("entity_id"),
        }

    async_describe_event(DOMAIN, EVENT_UPDATE_FINISHED, describe)
