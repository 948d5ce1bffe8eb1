/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../README.md).
 *
 * The emulated chip. ESP-IDF's own functions are called as usual; the linker redirects
 * these to the __wrap_ versions below (-Wl,--wrap, see CMakeLists.txt), so the host build
 * answers as the emulated chip:
 *   esp_app_get_description        the booted slot's esp_app_desc_t (read from flash at boot)
 *   esp_read_mac                   ESP_OTA_LINUX_MAC (+1 softAP, +2 BT, +3 Ethernet, as an
 *                                  ESP32 with 4 universal MAC addresses derives them)
 *   esp_chip_info                  model, cores and features of ESP_OTA_LINUX_CHIP, revision
 *                                  ESP_OTA_LINUX_CHIP_REVISION
 *   esp_reset_reason               ESP_RST_POWERON for a fresh process, else what the
 *                                  restart that re-executed the program set
 *   esp_efuse_read_secure_version, esp_efuse_check_secure_version,
 *   esp_efuse_update_secure_version
 *                                  the anti-rollback eFuse field, persistent in
 *                                  <state dir>/efuse_secure_version (a decimal number)
 *   esp_err_to_name, esp_err_to_name_r
 *                                  ESP-IDF's names, including ESP_ERR_OTA_*,
 *                                  ESP_ERR_HTTPS_OTA_* and ESP_ERR_IMAGE_* (the linux
 *                                  target's table lacks them: "ERROR")
 * Plus functions the linux target lacks: bootloader_common_check_chip_revision_validity
 * (against the emulated revision), esp_flash_encryption_enabled (false) and esp_netif_init
 * (the host's network is up).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootloader_common.h"
#include "esp_app_desc.h"
#include "esp_chip_info.h"
#include "esp_flash_encrypt.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_system.h"

#include "olx_internal.h"

/* Secure version field width: CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD of an ESP32
 * (as the simulator's EFuse). */
#define SECURE_VERSION_BITS 32u

static const char *TAG_EFUSE = "efuse";
static const char *TAG_BOOT = "boot_comm";

/* ---- chips --------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int model;
    uint16_t chip_id;
    uint8_t cores;
    uint32_t features;
} CHIPS[] = {
    {"esp32", CHIP_ESP32, 0, 2, CHIP_FEATURE_WIFI_BGN | CHIP_FEATURE_BLE | CHIP_FEATURE_BT},
    {"esp32s2", CHIP_ESP32S2, 2, 1, CHIP_FEATURE_WIFI_BGN},
    {"esp32s3", CHIP_ESP32S3, 9, 2, CHIP_FEATURE_WIFI_BGN | CHIP_FEATURE_BLE},
    {"esp32c3", CHIP_ESP32C3, 5, 1, CHIP_FEATURE_WIFI_BGN | CHIP_FEATURE_BLE},
    {"esp32c2", CHIP_ESP32C2, 12, 1, CHIP_FEATURE_WIFI_BGN | CHIP_FEATURE_BLE},
    {"esp32c6", CHIP_ESP32C6, 13, 1, CHIP_FEATURE_WIFI_BGN | CHIP_FEATURE_BLE | CHIP_FEATURE_IEEE802154},
    {"esp32h2", CHIP_ESP32H2, 16, 1, CHIP_FEATURE_BLE | CHIP_FEATURE_IEEE802154},
    {"esp32p4", CHIP_ESP32P4, 18, 2, 0},
    {"esp32c61", CHIP_ESP32C61, 20, 1, CHIP_FEATURE_WIFI_BGN | CHIP_FEATURE_BLE},
    {"esp32c5", CHIP_ESP32C5, 23, 1, CHIP_FEATURE_WIFI_BGN | CHIP_FEATURE_BLE | CHIP_FEATURE_IEEE802154},
};

bool olx_chip_lookup(const char *name); /* used by boot_linux.c */

/* "esp32s3", "ESP32-S3", "esp32_s3" name the same chip (like the espota library). */
bool olx_chip_lookup(const char *name)
{
    char norm[16];
    size_t n = 0;
    for (const char *p = name; *p != '\0'; p++) {
        if (*p == '-' || *p == '_') {
            continue;
        }
        if (n + 1 >= sizeof(norm)) {
            return false;
        }
        norm[n++] = (char)tolower((unsigned char)*p);
    }
    norm[n] = '\0';
    for (size_t i = 0; i < sizeof(CHIPS) / sizeof(CHIPS[0]); i++) {
        if (strcmp(norm, CHIPS[i].name) == 0) {
            g_olx.chip_name = CHIPS[i].name;
            g_olx.chip_model = CHIPS[i].model;
            g_olx.chip_id = CHIPS[i].chip_id;
            g_olx.cores = CHIPS[i].cores;
            g_olx.features = CHIPS[i].features;
            return true;
        }
    }
    return false;
}

/* ---- reset reasons ------------------------------------------------------------------------ */

static const struct {
    esp_reset_reason_t reason;
    const char *name;
} REASONS[] = {
    {ESP_RST_UNKNOWN, "ESP_RST_UNKNOWN"}, {ESP_RST_POWERON, "ESP_RST_POWERON"},
    {ESP_RST_EXT, "ESP_RST_EXT"},         {ESP_RST_SW, "ESP_RST_SW"},
    {ESP_RST_PANIC, "ESP_RST_PANIC"},     {ESP_RST_INT_WDT, "ESP_RST_INT_WDT"},
    {ESP_RST_TASK_WDT, "ESP_RST_TASK_WDT"}, {ESP_RST_WDT, "ESP_RST_WDT"},
    {ESP_RST_DEEPSLEEP, "ESP_RST_DEEPSLEEP"}, {ESP_RST_BROWNOUT, "ESP_RST_BROWNOUT"},
};

const char *olx_reset_reason_name(esp_reset_reason_t reason)
{
    for (size_t i = 0; i < sizeof(REASONS) / sizeof(REASONS[0]); i++) {
        if (REASONS[i].reason == reason) {
            return REASONS[i].name;
        }
    }
    return "ESP_RST_UNKNOWN";
}

bool olx_reset_reason_parse(const char *name, esp_reset_reason_t *out)
{
    for (size_t i = 0; i < sizeof(REASONS) / sizeof(REASONS[0]); i++) {
        if (strcmp(REASONS[i].name, name) == 0) {
            *out = REASONS[i].reason;
            return true;
        }
    }
    return false;
}

/* ---- the wraps -------------------------------------------------------------------------------- */

const esp_app_desc_t *__wrap_esp_app_get_description(void);
esp_err_t __wrap_esp_read_mac(uint8_t *mac, esp_mac_type_t type);
void __wrap_esp_chip_info(esp_chip_info_t *out_info);
esp_reset_reason_t __wrap_esp_reset_reason(void);
uint32_t __wrap_esp_efuse_read_secure_version(void);
bool __wrap_esp_efuse_check_secure_version(uint32_t secure_version);
esp_err_t __wrap_esp_efuse_update_secure_version(uint32_t secure_version);

const esp_app_desc_t *__wrap_esp_app_get_description(void)
{
    return &g_olx.app_desc;
}

esp_err_t __wrap_esp_read_mac(uint8_t *mac, esp_mac_type_t type)
{
    if (mac == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    unsigned add;
    switch (type) {
    case ESP_MAC_WIFI_STA:
    case ESP_MAC_BASE:
    case ESP_MAC_EFUSE_FACTORY:
        add = 0;
        break;
    case ESP_MAC_WIFI_SOFTAP:
        add = 1;
        break;
    case ESP_MAC_BT:
        add = 2;
        break;
    case ESP_MAC_ETH:
        add = 3;
        break;
    default:
        return ESP_ERR_NOT_SUPPORTED;
    }
    memcpy(mac, g_olx.mac, 6);
    mac[5] = (uint8_t)(mac[5] + add);
    return ESP_OK;
}

void __wrap_esp_chip_info(esp_chip_info_t *out_info)
{
    memset(out_info, 0, sizeof(*out_info));
    out_info->model = (esp_chip_model_t)g_olx.chip_model;
    out_info->features = g_olx.features;
    out_info->revision = g_olx.chip_revision;
    out_info->cores = g_olx.cores;
}

esp_reset_reason_t __wrap_esp_reset_reason(void)
{
    return g_olx.reset_reason;
}

/* ---- the anti-rollback eFuse ------------------------------------------------------------------ */

static void efuse_path(char *buf, size_t size)
{
    snprintf(buf, size, "%s/efuse_secure_version", g_olx.state_dir);
}

void olx_efuse_load(void)
{
    char path[PATH_MAX + 32];
    efuse_path(path, sizeof(path));
    g_olx.efuse_secure_version = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return; /* a new chip: nothing burnt */
    }
    unsigned long v = 0;
    int n = fscanf(f, "%lu", &v);
    fclose(f);
    if (n != 1 || v > SECURE_VERSION_BITS) {
        fprintf(stderr, OLX_LOG_PREFIX "%s does not hold a secure version from 0 to %u\n", path, SECURE_VERSION_BITS);
        exit(2);
    }
    g_olx.efuse_secure_version = (uint32_t)v;
}

static int efuse_store(uint32_t value)
{
    char path[PATH_MAX + 32], tmp[PATH_MAX + 40];
    efuse_path(path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    char text[16];
    int len = snprintf(text, sizeof(text), "%u\n", (unsigned)value);
    bool ok = write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

uint32_t olx_efuse_read_secure_version(void)
{
    return g_olx.efuse_secure_version;
}

bool olx_efuse_check_secure_version(uint32_t secure_version)
{
    return secure_version >= g_olx.efuse_secure_version;
}

/* esp_efuse_update_secure_version without its log lines (the boot step logs its own). */
esp_err_t olx_efuse_update_secure_version(uint32_t secure_version)
{
    if (secure_version > SECURE_VERSION_BITS) {
        return ESP_ERR_INVALID_ARG;
    }
    if (g_olx.efuse_secure_version < secure_version) {
        if (efuse_store(secure_version) != 0) {
            return ESP_FAIL;
        }
        g_olx.efuse_secure_version = secure_version;
    } else if (g_olx.efuse_secure_version > secure_version) {
        return ESP_FAIL;
    }
    return ESP_OK;
}

uint32_t __wrap_esp_efuse_read_secure_version(void)
{
    return olx_efuse_read_secure_version();
}

bool __wrap_esp_efuse_check_secure_version(uint32_t secure_version)
{
    return olx_efuse_check_secure_version(secure_version);
}

esp_err_t __wrap_esp_efuse_update_secure_version(uint32_t secure_version)
{
    return olx_efuse_update_secure_version_logged(secure_version);
}

/* esp_efuse_update_secure_version (efuse/src/esp_efuse_fields.c), with its log lines. */
esp_err_t olx_efuse_update_secure_version_logged(uint32_t secure_version)
{
    uint32_t before = g_olx.efuse_secure_version;
    esp_err_t err = olx_efuse_update_secure_version(secure_version);
    if (err == ESP_ERR_INVALID_ARG) {
        ESP_LOGE(TAG_EFUSE, "Max secure version is %u. Given %" PRIu32 " version can not be written.",
                 SECURE_VERSION_BITS, secure_version);
    } else if (err == ESP_FAIL && before > secure_version) {
        ESP_LOGE(TAG_EFUSE, "Anti-rollback is not set. secure_version of app is lower that eFuse field(%" PRIu32 ").",
                 before);
    } else if (err != ESP_OK) {
        ESP_LOGE(TAG_EFUSE, "cannot write %s/efuse_secure_version", g_olx.state_dir);
    } else if (secure_version > before) {
        ESP_LOGI(TAG_EFUSE, "Anti-rollback is set. eFuse field is updated(%" PRIu32 ").", secure_version);
    }
    return err;
}

/* ---- error names ------------------------------------------------------------------------------ */

const char *__real_esp_err_to_name(esp_err_t code);
const char *__real_esp_err_to_name_r(esp_err_t code, char *buf, size_t buflen);
const char *__wrap_esp_err_to_name(esp_err_t code);
const char *__wrap_esp_err_to_name_r(esp_err_t code, char *buf, size_t buflen);
/* ESP-IDF's esp_err_to_name.c compiled in this component (see CMakeLists.txt) */
const char *olx_idf_err_to_name(esp_err_t code);

static bool unknown_name(const char *name)
{
    return strcmp(name, "ERROR") == 0 || strcmp(name, "UNKNOWN ERROR") == 0;
}

/* esp_err_to_name: ESP-IDF's own table, completed with the codes of app_update,
 * esp_https_ota and bootloader_support (ESP_ERR_OTA_*, ESP_ERR_HTTPS_OTA_*, ESP_ERR_IMAGE_*)
 * that the linux target's table lacks. */
const char *__wrap_esp_err_to_name(esp_err_t code)
{
    const char *name = __real_esp_err_to_name(code);
    return unknown_name(name) ? olx_idf_err_to_name(code) : name;
}

const char *__wrap_esp_err_to_name_r(esp_err_t code, char *buf, size_t buflen)
{
    const char *name = __wrap_esp_err_to_name(code);
    if (unknown_name(name) || buf == NULL || buflen == 0) {
        return __real_esp_err_to_name_r(code, buf, buflen);
    }
    snprintf(buf, buflen, "%s", name);
    return buf;
}

/* ---- what the linux target lacks -------------------------------------------------------------- */

/* bootloader_support/src/bootloader_common_loader.c, against the emulated revision. */
bool bootloader_common_check_chip_revision_validity(const esp_image_header_t *img_hdr, bool check_max_revision)
{
    if (img_hdr == NULL) {
        return false;
    }
    unsigned revision = g_olx.chip_revision;
    unsigned min_rev = img_hdr->min_chip_rev_full;
    if (!olx_chip_revision_ok(img_hdr->min_chip_rev_full, OLX_CHIP_REV_UNSET, revision, false)) {
        ESP_LOGE(TAG_BOOT, "chip revision check failed. Required >= v%u.%u, found v%u.%u.", min_rev / 100,
                 min_rev % 100, revision / 100, revision % 100);
        return false;
    }
    if (check_max_revision &&
        !olx_chip_revision_ok(img_hdr->min_chip_rev_full, img_hdr->max_chip_rev_full, revision, true)) {
        unsigned max_rev = img_hdr->max_chip_rev_full;
        ESP_LOGE(TAG_BOOT, "chip revision check failed. Required <= v%u.%u, found v%u.%u.", max_rev / 100,
                 max_rev % 100, revision / 100, revision % 100);
        return false;
    }
    return true;
}

bool esp_flash_encryption_enabled(void)
{
    return false;
}

/* The host's network is up; esp_netif_linux provides the rest. */
esp_err_t esp_netif_init(void);

esp_err_t esp_netif_init(void)
{
    return ESP_OK;
}
