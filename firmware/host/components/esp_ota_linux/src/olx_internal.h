/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../README.md).
 *
 * State shared by the layer's files: what the boot step (boot_linux.c) found in the
 * environment and on the flash file, read by esp_ota_ops (ota_ops_linux.c), the chip and
 * eFuse emulation (chip_linux.c) and the heap statistics (heap_linux.c).
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "esp_app_desc.h"
#include "esp_system.h"
#include "olx_core.h"

#define OLX_LOG_PREFIX "esp_ota_linux: "

typedef struct {
    /* configuration (environment) */
    char state_dir[PATH_MAX];
    char flash_path[PATH_MAX];
    const char *chip_name;      /* "esp32", "esp32c3", ... */
    int chip_model;             /* esp_chip_model_t */
    uint16_t chip_id;           /* esp_chip_id_t in image headers (ESP32 = 0) */
    uint16_t chip_revision;     /* major * 100 + minor */
    uint8_t cores;
    uint32_t features;          /* CHIP_FEATURE_* */
    uint8_t mac[6];
    bool anti_rollback;         /* CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK emulated */
    uint32_t reboot_delay_ms;
    /* this boot */
    esp_reset_reason_t reset_reason;
    unsigned boot_count;        /* 1 for a fresh process, +1 per emulated restart */
    unsigned panic_count;       /* consecutive emulated panics before this boot */
    char **argv;                /* the original argv, for the re-exec */
    uint32_t flash_size;
    olx_partition_table_t table;
    int booted_index;           /* OLX_FACTORY_INDEX or the OTA slot */
    uint32_t booted_address;    /* its partition's address */
    uint8_t booted_subtype;
    esp_app_desc_t app_desc;    /* the booted image's descriptor */
    uint32_t efuse_secure_version;
    bool booted;                /* the boot step completed */
} olx_state_t;

extern olx_state_t g_olx;

/* chip_linux.c: the anti-rollback eFuse field, kept in <state dir>/efuse_secure_version */
uint32_t olx_efuse_read_secure_version(void);
bool olx_efuse_check_secure_version(uint32_t secure_version);
esp_err_t olx_efuse_update_secure_version(uint32_t secure_version);
/* the same with esp_efuse_update_secure_version's log lines */
esp_err_t olx_efuse_update_secure_version_logged(uint32_t secure_version);
void olx_efuse_load(void);
/* chip_linux.c: esp_reset_reason_t <-> "ESP_RST_SW" */
const char *olx_reset_reason_name(esp_reset_reason_t reason);
bool olx_reset_reason_parse(const char *name, esp_reset_reason_t *out);

/* heap_linux.c */
void olx_heap_start(void);
/* Write heap.json one last time (final=true) and stop the writer (before a re-exec). */
void olx_heap_final(void);

/* boot_linux.c: restart the program through the boot step (never returns). */
void olx_reexec(esp_reset_reason_t reason) __attribute__((noreturn));
