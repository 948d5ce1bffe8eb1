"""Constants for the ESP OTA integration."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

DOMAIN: Final = "esp_ota"

DEFAULT_PORT: Final = 443

# Config entry data: how to reach and trust the device.
CONF_SECRET: Final = "secret"  # noqa: S105 - the name of the field, not a secret
CONF_CERT_FINGERPRINT: Final = "cert_fingerprint"

# Options.
CONF_FEED_URL: Final = "feed_url"
CONF_FEED_PUBLIC_KEY: Final = "feed_public_key"
CONF_CHANNEL: Final = "channel"
CONF_REBOOT_TIMEOUT: Final = "reboot_timeout"
DEFAULT_CHANNEL: Final = "stable"
# How long a device gets to come back after a reboot before an install is called failed.
DEFAULT_REBOOT_TIMEOUT: Final = 180

# The device pushes events; polling only catches what a dropped stream missed.
DEVICE_POLL_INTERVAL: Final = timedelta(seconds=60)

ZEROCONF_API_VERSION: Final = "1"
