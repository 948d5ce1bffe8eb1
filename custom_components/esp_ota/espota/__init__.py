"""espota: ESP32 firmware images, firmware feeds and the device OTA protocol.

This subpackage imports nothing from Home Assistant (a test enforces it) and uses
only relative imports among its own modules, so it could be published on its own.
"""
