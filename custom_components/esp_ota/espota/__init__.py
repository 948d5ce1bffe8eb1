"""espota: ESP32 firmware images, firmware feeds and the device OTA protocol.

This subpackage imports nothing from Home Assistant (a test enforces it) and uses
only relative imports among its own modules, so pyproject.toml also installs it under its
own import name `espota`, for the `espota` command line. Home Assistant and the tests load
it as `custom_components.esp_ota.espota`.
"""
