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
CONF_DIRECT_DOWNLOAD: Final = "direct_download"
CONF_MAX_PARALLEL_INSTALLS: Final = "max_parallel_installs"
DEFAULT_CHANNEL: Final = "stable"
# How long a device gets to come back after a reboot before an install is called failed.
DEFAULT_REBOOT_TIMEOUT: Final = 180
# Installs running at once across every device; the others wait in a queue. The smallest
# value set on any loaded device applies (one queue for the whole installation).
DEFAULT_MAX_PARALLEL_INSTALLS: Final = 2

# The firmware server: Home Assistant serves verified images to devices over HTTPS on its
# own port. Bound on every interface, since devices reach it over the LAN.
FIRMWARE_SERVER_HOST: Final = "0.0.0.0"  # noqa: S104 - devices on the LAN download from it
FIRMWARE_SERVER_PORT: Final = 8470
# The image cache in the config folder, keyed by SHA-256, bounded in size.
FIRMWARE_CACHE_MAX_BYTES: Final = 64 * 1024 * 1024
# How long a device's download token stays valid (a slow link needs a while for 1.5 MB).
DOWNLOAD_TOKEN_TTL_S: Final = 3600.0

# Fired on the bus when an install ends, whatever the result (for automations).
EVENT_UPDATE_FINISHED: Final = "esp_ota_update_finished"

# The device pushes its changes on its event stream, and a heartbeat keeps it known alive:
# while the stream is up nothing polls the device. While it is down, the device is read
# at once, then every FALLBACK_POLL_MIN, doubling to FALLBACK_POLL_MAX (the stream's own
# reconnection is tried meanwhile, and reading the device again is the first thing done
# when it is back).
FALLBACK_POLL_MIN: Final = timedelta(seconds=30)
FALLBACK_POLL_MAX: Final = timedelta(minutes=5)

ZEROCONF_API_VERSION: Final = "1"
