/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../README.md).
 *
 * Espressif's esp_https_ota.c compares an image's chip_id with the compile-time
 * CONFIG_IDF_FIRMWARE_CHIP_ID, which is 0xFFFF for the linux target. This folder is put
 * first in that one file's quoted include path (-iquote, see CMakeLists.txt), so its
 * #include "sdkconfig.h" reads this file: the real sdkconfig.h, then the chip id of the
 * emulated chip (ESP_OTA_LINUX_CHIP) instead. esp_https_ota.c itself is compiled unchanged.
 */
#pragma once

#include_next "sdkconfig.h"

int esp_ota_linux_chip_id(void);

#undef CONFIG_IDF_FIRMWARE_CHIP_ID
#define CONFIG_IDF_FIRMWARE_CHIP_ID (esp_ota_linux_chip_id())
