/*
 * Protocol names of the agent's enumerations. The tables are indexed by the ESP-IDF
 * values, which are fixed by ESP-IDF's ABI (esp_system.h, esp_chip_info.h,
 * esp_flash_partitions.h), so no IDF header is needed here.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_names.h"

#include <stddef.h>

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static const char *const s_ota_state_names[] = {
    [AGENT_OTA_IDLE] = "idle",
    [AGENT_OTA_CONNECTING] = "connecting",
    [AGENT_OTA_DOWNLOADING] = "downloading",
    [AGENT_OTA_VERIFYING] = "verifying",
    [AGENT_OTA_REBOOTING] = "rebooting",
    [AGENT_OTA_SUCCEEDED] = "succeeded",
    [AGENT_OTA_FAILED] = "failed",
    [AGENT_OTA_ABORTED] = "aborted",
};
_Static_assert(COUNT_OF(s_ota_state_names) == AGENT_OTA_STATE_COUNT, "a state without a name");

static const char *const s_event_type_names[] = {
    [AGENT_EVENT_START] = "start",
    [AGENT_EVENT_CONNECTED] = "connected",
    [AGENT_EVENT_GET_IMG_DESC] = "get_img_desc",
    [AGENT_EVENT_VERIFY_CHIP_ID] = "verify_chip_id",
    [AGENT_EVENT_VERIFY_CHIP_REVISION] = "verify_chip_revision",
    [AGENT_EVENT_WRITE_FLASH] = "write_flash",
    [AGENT_EVENT_UPDATE_BOOT_PARTITION] = "update_boot_partition",
    [AGENT_EVENT_FINISH] = "finish",
    [AGENT_EVENT_ABORT] = "abort",
    [AGENT_EVENT_REBOOT] = "reboot",
};
_Static_assert(COUNT_OF(s_event_type_names) == AGENT_EVENT_TYPE_COUNT, "an event without a name");

/* esp_ota_img_states_t: ESP_OTA_IMG_NEW = 0 ... ESP_OTA_IMG_ABORTED = 4. */
static const char *const s_image_state_names[] = {
    "new", "pending_verify", "valid", "invalid", "aborted",
};

/* esp_chip_model_t (esp_chip_info.h of ESP-IDF v5.5). */
static const struct {
    int model;
    const char *name;
} s_chips[] = {
    {1, "esp32"},     {2, "esp32s2"},   {9, "esp32s3"},  {5, "esp32c3"},
    {12, "esp32c2"},  {13, "esp32c6"},  {16, "esp32h2"}, {18, "esp32p4"},
    {20, "esp32c61"}, {23, "esp32c5"},  {25, "esp32h21"}, {28, "esp32h4"},
};

/* esp_reset_reason_t (esp_system.h of ESP-IDF v5.5), from ESP_RST_UNKNOWN = 0. */
static const char *const s_reset_reason_names[] = {
    "ESP_RST_UNKNOWN",  "ESP_RST_POWERON",  "ESP_RST_EXT",        "ESP_RST_SW",
    "ESP_RST_PANIC",    "ESP_RST_INT_WDT",  "ESP_RST_TASK_WDT",   "ESP_RST_WDT",
    "ESP_RST_DEEPSLEEP", "ESP_RST_BROWNOUT", "ESP_RST_SDIO",      "ESP_RST_USB",
    "ESP_RST_JTAG",     "ESP_RST_EFUSE",    "ESP_RST_PWR_GLITCH", "ESP_RST_CPU_LOCKUP",
};

const char *agent_ota_state_name(agent_ota_state_t state)
{
    /* Compared as unsigned: an enum may be signed, and a corrupted value negative. */
    if ((unsigned)state >= COUNT_OF(s_ota_state_names)) {
        return NULL;
    }
    return s_ota_state_names[state];
}

const char *agent_event_type_name(agent_event_type_t type)
{
    if ((unsigned)type >= COUNT_OF(s_event_type_names)) {
        return NULL;
    }
    return s_event_type_names[type];
}

const char *agent_image_state_name(uint32_t esp_ota_img_state)
{
    if (esp_ota_img_state >= COUNT_OF(s_image_state_names)) {
        return "undefined";  /* ESP_OTA_IMG_UNDEFINED (0xFFFFFFFF), or otadata we cannot read */
    }
    return s_image_state_names[esp_ota_img_state];
}

const char *agent_chip_name(int esp_chip_model)
{
    for (size_t i = 0; i < COUNT_OF(s_chips); i++) {
        if (s_chips[i].model == esp_chip_model) {
            return s_chips[i].name;
        }
    }
    return "unknown";
}

const char *agent_reset_reason_name(int esp_reset_reason)
{
    if (esp_reset_reason < 0 || (size_t)esp_reset_reason >= COUNT_OF(s_reset_reason_names)) {
        return s_reset_reason_names[0];
    }
    return s_reset_reason_names[esp_reset_reason];
}
