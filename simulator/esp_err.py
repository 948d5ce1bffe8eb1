"""ESP-IDF error names (esp_err_t) the simulated device reports, and the error that carries one.

The names are ESP-IDF's own (esp_err.h, esp_ota_ops.h, esp_https_ota.h, esp_http_client.h)
so a client can branch on exactly what a real device would log.
"""

from __future__ import annotations

from typing import Final

ESP_OK: Final = "ESP_OK"
ESP_FAIL: Final = "ESP_FAIL"
ESP_ERR_NO_MEM: Final = "ESP_ERR_NO_MEM"
ESP_ERR_INVALID_ARG: Final = "ESP_ERR_INVALID_ARG"
ESP_ERR_INVALID_STATE: Final = "ESP_ERR_INVALID_STATE"
ESP_ERR_INVALID_SIZE: Final = "ESP_ERR_INVALID_SIZE"
ESP_ERR_NOT_FOUND: Final = "ESP_ERR_NOT_FOUND"
ESP_ERR_NOT_SUPPORTED: Final = "ESP_ERR_NOT_SUPPORTED"
ESP_ERR_TIMEOUT: Final = "ESP_ERR_TIMEOUT"
ESP_ERR_INVALID_VERSION: Final = "ESP_ERR_INVALID_VERSION"
ESP_ERR_FLASH_OP_FAIL: Final = "ESP_ERR_FLASH_OP_FAIL"

ESP_ERR_OTA_PARTITION_CONFLICT: Final = "ESP_ERR_OTA_PARTITION_CONFLICT"
ESP_ERR_OTA_SELECT_INFO_INVALID: Final = "ESP_ERR_OTA_SELECT_INFO_INVALID"
ESP_ERR_OTA_VALIDATE_FAILED: Final = "ESP_ERR_OTA_VALIDATE_FAILED"
ESP_ERR_OTA_SMALL_SEC_VER: Final = "ESP_ERR_OTA_SMALL_SEC_VER"
ESP_ERR_OTA_ROLLBACK_FAILED: Final = "ESP_ERR_OTA_ROLLBACK_FAILED"
ESP_ERR_OTA_ROLLBACK_INVALID_STATE: Final = "ESP_ERR_OTA_ROLLBACK_INVALID_STATE"
ESP_ERR_OTA_ALREADY_IN_PROGRESS: Final = "ESP_ERR_OTA_ALREADY_IN_PROGRESS"

ESP_ERR_HTTPS_OTA_IN_PROGRESS: Final = "ESP_ERR_HTTPS_OTA_IN_PROGRESS"

ESP_ERR_HTTP_MAX_REDIRECT: Final = "ESP_ERR_HTTP_MAX_REDIRECT"
ESP_ERR_HTTP_CONNECT: Final = "ESP_ERR_HTTP_CONNECT"
ESP_ERR_HTTP_FETCH_HEADER: Final = "ESP_ERR_HTTP_FETCH_HEADER"
ESP_ERR_HTTP_INVALID_TRANSPORT: Final = "ESP_ERR_HTTP_INVALID_TRANSPORT"
ESP_ERR_HTTP_EAGAIN: Final = "ESP_ERR_HTTP_EAGAIN"
ESP_ERR_HTTP_NOT_MODIFIED: Final = "ESP_ERR_HTTP_NOT_MODIFIED"
ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE: Final = "ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE"
ESP_ERR_HTTP_READ_TIMEOUT: Final = "ESP_ERR_HTTP_READ_TIMEOUT"
ESP_ERR_HTTP_REDIRECT_DOWNGRADE: Final = "ESP_ERR_HTTP_REDIRECT_DOWNGRADE"


class EspError(Exception):
    """An ESP-IDF call returned something other than ESP_OK.

    `name` is the esp_err_to_name() spelling (e.g. "ESP_ERR_OTA_VALIDATE_FAILED");
    `message` says what the device saw, in the words its log would use.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
