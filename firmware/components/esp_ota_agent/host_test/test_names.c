/*
 * Unit tests of agent_names: every protocol name, and what lies outside the tables.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdint.h>
#include "unity.h"
#include "agent_names.h"
/* ESP-IDF's own enumerations: the tables must follow them. */
#include "esp_chip_info.h"
#include "esp_flash_partitions.h"
#include "esp_system.h"

void setUp(void) {}
void tearDown(void) {}

static void test_ota_states(void)
{
    static const char *const expected[] = {
        "idle", "connecting", "downloading", "verifying",
        "rebooting", "succeeded", "failed", "aborted",
    };
    TEST_ASSERT_EQUAL_INT(8, AGENT_OTA_STATE_COUNT);
    for (int i = 0; i < AGENT_OTA_STATE_COUNT; i++) {
        TEST_ASSERT_EQUAL_STRING(expected[i], agent_ota_state_name((agent_ota_state_t)i));
    }
    TEST_ASSERT_NULL(agent_ota_state_name((agent_ota_state_t)AGENT_OTA_STATE_COUNT));
    TEST_ASSERT_NULL(agent_ota_state_name((agent_ota_state_t)-1));
}

static void test_event_types(void)
{
    static const char *const expected[] = {
        "start", "connected", "get_img_desc", "verify_chip_id", "verify_chip_revision",
        "write_flash", "update_boot_partition", "finish", "abort", "reboot",
    };
    TEST_ASSERT_EQUAL_INT(10, AGENT_EVENT_TYPE_COUNT);
    for (int i = 0; i < AGENT_EVENT_TYPE_COUNT; i++) {
        TEST_ASSERT_EQUAL_STRING(expected[i], agent_event_type_name((agent_event_type_t)i));
    }
    TEST_ASSERT_NULL(agent_event_type_name((agent_event_type_t)AGENT_EVENT_TYPE_COUNT));
    TEST_ASSERT_NULL(agent_event_type_name((agent_event_type_t)-1));
}

static void test_image_states(void)
{
    TEST_ASSERT_EQUAL_STRING("new", agent_image_state_name(ESP_OTA_IMG_NEW));
    TEST_ASSERT_EQUAL_STRING("pending_verify", agent_image_state_name(ESP_OTA_IMG_PENDING_VERIFY));
    TEST_ASSERT_EQUAL_STRING("valid", agent_image_state_name(ESP_OTA_IMG_VALID));
    TEST_ASSERT_EQUAL_STRING("invalid", agent_image_state_name(ESP_OTA_IMG_INVALID));
    TEST_ASSERT_EQUAL_STRING("aborted", agent_image_state_name(ESP_OTA_IMG_ABORTED));
    TEST_ASSERT_EQUAL_STRING("undefined", agent_image_state_name(ESP_OTA_IMG_UNDEFINED));
    TEST_ASSERT_EQUAL_STRING("new", agent_image_state_name(0));
    TEST_ASSERT_EQUAL_STRING("pending_verify", agent_image_state_name(1));
    TEST_ASSERT_EQUAL_STRING("valid", agent_image_state_name(2));
    TEST_ASSERT_EQUAL_STRING("invalid", agent_image_state_name(3));
    TEST_ASSERT_EQUAL_STRING("aborted", agent_image_state_name(4));
    TEST_ASSERT_EQUAL_STRING("undefined", agent_image_state_name(0xFFFFFFFFu));
    TEST_ASSERT_EQUAL_STRING("undefined", agent_image_state_name(5));
}

static void test_chips(void)
{
    static const struct {
        int model;
        const char *name;
    } chips[] = {
        {CHIP_ESP32, "esp32"},       {CHIP_ESP32S2, "esp32s2"},  {CHIP_ESP32S3, "esp32s3"},
        {CHIP_ESP32C3, "esp32c3"},   {CHIP_ESP32C2, "esp32c2"},  {CHIP_ESP32C6, "esp32c6"},
        {CHIP_ESP32H2, "esp32h2"},   {CHIP_ESP32P4, "esp32p4"},  {CHIP_ESP32C61, "esp32c61"},
        {CHIP_ESP32C5, "esp32c5"},   {CHIP_ESP32H21, "esp32h21"}, {CHIP_ESP32H4, "esp32h4"},
    };
    for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
        TEST_ASSERT_EQUAL_STRING(chips[i].name, agent_chip_name(chips[i].model));
    }
    TEST_ASSERT_EQUAL_STRING("unknown", agent_chip_name(0));
    TEST_ASSERT_EQUAL_STRING("unknown", agent_chip_name(CHIP_POSIX_LINUX));
    TEST_ASSERT_EQUAL_STRING("unknown", agent_chip_name(-1));
}

static void test_reset_reasons(void)
{
#define REASON(r) {r, #r}
    static const struct {
        esp_reset_reason_t reason;
        const char *name;
    } reasons[] = {
        REASON(ESP_RST_UNKNOWN),   REASON(ESP_RST_POWERON),   REASON(ESP_RST_EXT),
        REASON(ESP_RST_SW),        REASON(ESP_RST_PANIC),     REASON(ESP_RST_INT_WDT),
        REASON(ESP_RST_TASK_WDT),  REASON(ESP_RST_WDT),       REASON(ESP_RST_DEEPSLEEP),
        REASON(ESP_RST_BROWNOUT),  REASON(ESP_RST_SDIO),      REASON(ESP_RST_USB),
        REASON(ESP_RST_JTAG),      REASON(ESP_RST_EFUSE),     REASON(ESP_RST_PWR_GLITCH),
        REASON(ESP_RST_CPU_LOCKUP),
    };
#undef REASON
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        TEST_ASSERT_EQUAL_STRING(reasons[i].name, agent_reset_reason_name(reasons[i].reason));
    }
    /* The list is ESP-IDF v5.5's whole enumeration: the next value is unknown. */
    TEST_ASSERT_EQUAL_STRING("ESP_RST_UNKNOWN", agent_reset_reason_name(ESP_RST_CPU_LOCKUP + 1));
    TEST_ASSERT_EQUAL_STRING("ESP_RST_UNKNOWN", agent_reset_reason_name(-1));
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_ota_states);
    RUN_TEST(test_event_types);
    RUN_TEST(test_image_states);
    RUN_TEST(test_chips);
    RUN_TEST(test_reset_reasons);
    return UNITY_END();
}
