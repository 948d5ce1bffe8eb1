"""Loading and unloading the integration in Home Assistant."""

from __future__ import annotations

import json

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.loader import async_get_integration
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.esp_ota.const import DOMAIN
from tests.conftest import REPO_ROOT


async def test_manifest_is_valid_for_a_custom_integration(hass: HomeAssistant) -> None:
    """Home Assistant finds the integration and reads its version from the manifest."""
    integration = await async_get_integration(hass, DOMAIN)
    manifest = json.loads((REPO_ROOT / "custom_components" / DOMAIN / "manifest.json").read_text())
    assert integration.domain == DOMAIN
    assert integration.name == "ESP OTA"
    assert str(integration.version) == manifest["version"]
    # hassfest's order for custom integrations: domain, name, then alphabetical.
    keys = list(manifest)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])


def state_of(entry: MockConfigEntry) -> ConfigEntryState:
    """The entry's state, read fresh (mypy would keep an earlier narrowing otherwise)."""
    state: ConfigEntryState = entry.state
    return state


async def test_setup_and_unload_entry(hass: HomeAssistant) -> None:
    """A config entry loads and unloads cleanly."""
    entry = MockConfigEntry(domain=DOMAIN, title="ESP32", unique_id="aa:bb:cc:dd:ee:ff")
    entry.add_to_hass(hass)

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert state_of(entry) is ConfigEntryState.LOADED

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert state_of(entry) is ConfigEntryState.NOT_LOADED


def test_brand_icons_have_the_sizes_hacs_and_home_assistant_expect() -> None:
    """brand/icon.png is 256x256 and icon@2x.png 512x512, both with transparency."""
    from PIL import Image

    brand = REPO_ROOT / "custom_components" / DOMAIN / "brand"
    for name, size in (("icon.png", 256), ("icon@2x.png", 512)):
        with Image.open(brand / name) as icon:
            assert icon.size == (size, size)
            assert icon.mode == "RGBA"
