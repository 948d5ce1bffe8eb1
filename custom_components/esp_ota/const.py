"""Constants for the ESP OTA integration."""

from typing import Final

DOMAIN: Final = "esp_ota"
