"""A faithful ESP32 device simulator: flash, otadata, bootloader, esp_http_client,
esp_https_ota, the app's OTA task, its HTTP API.

Not shipped by HACS: it stands in for real devices in tests, benchmarks and the demo.
"""
