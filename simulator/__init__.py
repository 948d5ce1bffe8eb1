"""A faithful ESP32 device simulator: flash, otadata, bootloader, esp_https_ota, HTTP API.

Not shipped by HACS: it stands in for real devices in tests, benchmarks and the demo.
"""
