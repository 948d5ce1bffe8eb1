/*
 * TEST-ONLY CODE: never part of a firmware.
 *
 * esp_ota_linux: the test-only layer that lets ESP-IDF apps using OTA (the esp_ota_agent
 * component) run on ESP-IDF's linux target, where app_update, bootloader_support and
 * esp_https_ota are not built. It emulates an ESP32-family chip on a PC: a persistent
 * flash file, a boot step that selects the app slot as the bootloader does (rollback,
 * anti-rollback), esp_ota_ops, Espressif's own esp_https_ota.c checking images against the
 * emulated chip, restarts by re-executing the program, and heap statistics. It exists so
 * that the agent can be tested on a PC by the same conformance suite as the Python
 * simulator; see this component's README.md. Apps do not need this header: they call the
 * ordinary ESP-IDF APIs.
 *
 * Environment: ESP_OTA_LINUX_STATE_DIR (required; flash.bin lives there), ESP_OTA_LINUX_CHIP
 * (esp32), ESP_OTA_LINUX_CHIP_REVISION (301), ESP_OTA_LINUX_MAC (02:12:34:56:78:ab),
 * ESP_OTA_LINUX_CRASH_VERSIONS, ESP_OTA_LINUX_REBOOT_DELAY_MS (200),
 * ESP_OTA_LINUX_ANTI_ROLLBACK (1).
 *
 * Heap statistics: <state dir>/heap.json, rewritten atomically every 200 ms and once more
 * ("final": true) when the program restarts:
 *   {"boot": 2, "reset_reason": "ESP_RST_SW", "pid": 4242, "uptime_ms": 5120,
 *    "in_use": 48512, "peak": 90112, "peak_reset_at_ms": 3000, "peak_resets": 1,
 *    "allocations": 1532, "live_blocks": 311, "final": false}
 * in_use: requested bytes of the live heap blocks of the program's own code (malloc family
 * wrapped at link time); peak: its maximum since boot or the last reset; allocations since
 * boot; live_blocks; times in ms since this boot. Create <state dir>/heap-reset to reset
 * the peak to in_use: the file disappears once done (within 200 ms).
 */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

/* The esp_chip_id_t of the emulated chip (ESP_OTA_LINUX_CHIP; ESP32 = 0): what image
 * headers must carry. Espressif's esp_https_ota.c is compiled with
 * CONFIG_IDF_FIRMWARE_CHIP_ID defined as this call. */
int esp_ota_linux_chip_id(void);

/* ESP_OTA_LINUX_STATE_DIR: where flash.bin and the layer's other files live. */
const char *esp_ota_linux_state_dir(void);

/* 1 for a fresh process (power on), +1 for every restart (esp_restart, emulated panic). */
unsigned esp_ota_linux_boot_count(void);

#ifdef __cplusplus
}
#endif
