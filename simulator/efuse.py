"""The eFuses the OTA path reads (ESP-IDF components/efuse): the anti-rollback secure
version, read by the bootloader and by esp_ota_ops."""

from __future__ import annotations

from dataclasses import dataclass

from .esp_err import ESP_ERR_INVALID_ARG, ESP_FAIL, EspError


@dataclass(slots=True)
class EFuse:
    """The secure version eFuse field: a bit field that can only grow, and is
    CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD bits wide."""

    secure_version: int = 0
    secure_version_bits: int = 32

    def check_secure_version(self, secure_version: int) -> bool:
        """esp_efuse_check_secure_version: may an app with this secure_version run?"""
        return secure_version >= self.secure_version

    def update_secure_version(self, secure_version: int) -> None:
        """esp_efuse_update_secure_version: burn bits up to secure_version (never down)."""
        if secure_version > self.secure_version_bits:
            raise EspError(
                ESP_ERR_INVALID_ARG,
                f"Max secure version is {self.secure_version_bits}. "
                f"Given {secure_version} version can not be written.",
            )
        if secure_version < self.secure_version:
            raise EspError(
                ESP_FAIL,
                "Anti-rollback is not set. secure_version of app is lower that eFuse field"
                f"({self.secure_version}).",
            )
        self.secure_version = secure_version
