"""Config flow for ESP OTA.

Home Assistant imports this module to set up any config entry of the domain. The
user, zeroconf and DHCP steps arrive with device discovery; until then entries are
made programmatically (tests) and the manifest keeps "config_flow" off.
"""

from __future__ import annotations

from homeassistant.config_entries import ConfigFlow

from .const import DOMAIN


class EspOtaConfigFlow(ConfigFlow, domain=DOMAIN):
    """Handle a config flow for ESP OTA."""

    VERSION = 1
