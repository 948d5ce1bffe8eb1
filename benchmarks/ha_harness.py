"""A real Home Assistant core for the benchmarks that install through it (bench_install,
bench_soak): the test plugin's async_test_home_assistant in a temporary config folder,
custom integrations enabled, one esp_ota entry per simulated device, every address on
127.0.0.1."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from unittest.mock import patch

from homeassistant import loader
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import frame
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
)

from benchmarks.bench_ha_startup import plain_resolver, update_entity_ids, wait_until
from custom_components.esp_ota import const
from custom_components.esp_ota.const import DOMAIN


@contextlib.contextmanager
def on_loopback() -> Iterator[None]:
    """The firmware server on 127.0.0.1 (any free port), and aiohttp's own resolver."""
    # Home Assistant's resolver asks zeroconf (multicast on every interface); every
    # address here is an IP literal: aiohttp's own resolver, as the plugin's
    # mock_zeroconf_resolver fixture does.
    with (
        patch.object(const, "FIRMWARE_SERVER_HOST", "127.0.0.1"),
        patch.object(const, "FIRMWARE_SERVER_PORT", 0),
        patch(
            "homeassistant.helpers.aiohttp_client._async_make_resolver",
            return_value=plain_resolver(),
        ),
    ):
        yield


@contextlib.asynccontextmanager
async def running_home_assistant(
    entries: list[MockConfigEntry], prefix: str
) -> AsyncIterator[HomeAssistant]:
    """Home Assistant with the integration set up over `entries`; stopped at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            # What the plugin's enable_custom_integrations fixture does.
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            frame.async_setup(hass)  # as Home Assistant's bootstrap (and the plugin) does
            for entry in entries:
                entry.add_to_hass(hass)
            assert await async_setup_component(hass, DOMAIN, {})
            yield hass
            await hass.async_stop(force=True)


def offering(hass: HomeAssistant, entries: list[MockConfigEntry], version: str) -> list[str]:
    """The update entities that are on and offer `version`."""
    return [
        entity_id
        for entity_id in update_entity_ids(hass, entries)
        if (state := hass.states.get(entity_id)) is not None
        and state.state == STATE_ON
        and state.attributes.get("latest_version") == version
    ]


async def wait_offered(
    hass: HomeAssistant, entries: list[MockConfigEntry], version: str, within_s: float
) -> None:
    """Until every entry's update entity offers `version`; every entry must be loaded."""
    await wait_until(lambda: len(offering(hass, entries, version)) == len(entries), within_s)
    if any(entry.state is not ConfigEntryState.LOADED for entry in entries):
        raise RuntimeError("not every entry loaded")
