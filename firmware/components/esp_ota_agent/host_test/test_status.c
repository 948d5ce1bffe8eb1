/*
 * Unit tests of agent_status: predicates, the reading after a reset for every state, and
 * the NVS record (round trip, every corrupted byte refused, malformed records refused).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <string.h>
#include "unity.h"
#include "agent_status.h"

void setUp(void) {}
void tearDown(void) {}

static agent_ota_status_t downloading(void)
{
    agent_ota_status_t s;
    agent_ota_status_idle(&s);
    s.state = AGENT_OTA_DOWNLOADING;
    strcpy(s.ota_id, "3f2a9c01d4e5");
    strcpy(s.target_version, "1.2.0");
    s.bytes_written = 409600;
    s.image_size = 912384;
    return s;
}

static void assert_status_equal(const agent_ota_status_t *a, const agent_ota_status_t *b)
{
    TEST_ASSERT_EQUAL_INT(a->state, b->state);
    TEST_ASSERT_EQUAL_STRING(a->ota_id, b->ota_id);
    TEST_ASSERT_EQUAL_STRING(a->target_version, b->target_version);
    TEST_ASSERT_EQUAL_UINT32(a->bytes_written, b->bytes_written);
    TEST_ASSERT_EQUAL_INT32(a->image_size, b->image_size);
    TEST_ASSERT_EQUAL_INT32(a->error, b->error);
    TEST_ASSERT_EQUAL_STRING(a->message, b->message);
}

static void test_idle(void)
{
    agent_ota_status_t s;
    memset(&s, 0x5a, sizeof(s));
    agent_ota_status_idle(&s);
    TEST_ASSERT_EQUAL_INT(AGENT_OTA_IDLE, s.state);
    TEST_ASSERT_EQUAL_STRING("", s.ota_id);
    TEST_ASSERT_EQUAL_STRING("", s.target_version);
    TEST_ASSERT_EQUAL_UINT32(0, s.bytes_written);
    TEST_ASSERT_EQUAL_INT32(-1, s.image_size);
    TEST_ASSERT_EQUAL_INT32(ESP_OK, s.error);
    TEST_ASSERT_EQUAL_STRING("", s.message);
}

static void test_in_progress_and_abortable(void)
{
    static const struct {
        agent_ota_state_t state;
        bool in_progress;
        bool abortable;
    } cases[] = {
        {AGENT_OTA_IDLE, false, false},       {AGENT_OTA_CONNECTING, true, true},
        {AGENT_OTA_DOWNLOADING, true, true},  {AGENT_OTA_VERIFYING, true, false},
        {AGENT_OTA_REBOOTING, true, false},   {AGENT_OTA_SUCCEEDED, false, false},
        {AGENT_OTA_FAILED, false, false},     {AGENT_OTA_ABORTED, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        agent_ota_status_t s = downloading();
        s.state = cases[i].state;
        TEST_ASSERT_EQUAL(cases[i].in_progress, agent_ota_status_in_progress(&s));
        TEST_ASSERT_EQUAL(cases[i].abortable, agent_ota_status_abortable(&s));
    }
}

static void test_after_reset_every_state(void)
{
    for (int state = 0; state < AGENT_OTA_STATE_COUNT; state++) {
        agent_ota_status_t before = downloading();
        before.state = (agent_ota_state_t)state;
        agent_ota_status_t after = before;
        agent_ota_status_after_reset(&after, "ESP_RST_PANIC");
        agent_ota_status_t expected = before;
        switch (state) {
        case AGENT_OTA_REBOOTING:
            expected.state = AGENT_OTA_SUCCEEDED;
            break;
        case AGENT_OTA_CONNECTING:
        case AGENT_OTA_DOWNLOADING:
        case AGENT_OTA_VERIFYING:
            expected.state = AGENT_OTA_FAILED;
            expected.error = ESP_FAIL;
            strcpy(expected.message, "the OTA was interrupted by a reset (ESP_RST_PANIC)");
            break;
        default:
            break;  /* idle, succeeded, failed, aborted: as they were */
        }
        assert_status_equal(&expected, &after);
    }
}

static void test_after_reset_keeps_failure_details(void)
{
    agent_ota_status_t s = downloading();
    s.state = AGENT_OTA_FAILED;
    s.error = ESP_ERR_INVALID_VERSION;
    strcpy(s.message, "chip revision mismatch");
    agent_ota_status_after_reset(&s, "ESP_RST_SW");
    TEST_ASSERT_EQUAL_INT32(ESP_ERR_INVALID_VERSION, s.error);
    TEST_ASSERT_EQUAL_STRING("chip revision mismatch", s.message);
    s.state = AGENT_OTA_VERIFYING;
    agent_ota_status_after_reset(&s, NULL);
    TEST_ASSERT_EQUAL_STRING("the OTA was interrupted by a reset (ESP_RST_UNKNOWN)", s.message);
}

static void test_pack_round_trip(void)
{
    agent_ota_status_t cases[4];
    cases[0] = downloading();
    agent_ota_status_idle(&cases[1]);
    cases[2] = downloading();
    cases[2].state = AGENT_OTA_FAILED;
    cases[2].error = 0x1503;
    cases[2].bytes_written = UINT32_MAX;
    cases[2].image_size = INT32_MAX;
    memset(cases[2].target_version, 'v', 31);
    cases[2].target_version[31] = '\0';
    memset(cases[2].message, 'm', 127);
    cases[2].message[127] = '\0';
    cases[3] = downloading();
    cases[3].state = AGENT_OTA_ABORTED;
    cases[3].error = INT32_MIN;
    strcpy(cases[3].message, "caf\xc3\xa9 \"quoted\"\n\xff");  /* any non-NUL bytes */

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t blob[AGENT_OTA_STATUS_PACKED_SIZE];
        TEST_ASSERT_EQUAL_size_t(AGENT_OTA_STATUS_PACKED_SIZE,
                                 agent_ota_status_pack(&cases[i], blob, sizeof(blob)));
        agent_ota_status_t out;
        TEST_ASSERT_TRUE(agent_ota_status_unpack(blob, sizeof(blob), &out));
        assert_status_equal(&cases[i], &out);
    }
}

static void test_pack_layout(void)
{
    agent_ota_status_t s = downloading();
    s.error = ESP_FAIL;
    uint8_t blob[AGENT_OTA_STATUS_PACKED_SIZE + 8];
    memset(blob, 0xEE, sizeof(blob));
    TEST_ASSERT_EQUAL_size_t(191, agent_ota_status_pack(&s, blob, sizeof(blob)));
    TEST_ASSERT_EQUAL_HEX8(0xEE, blob[191]);  /* nothing past the record */
    TEST_ASSERT_EQUAL_HEX8(AGENT_OTA_STATUS_FORMAT, blob[0]);
    TEST_ASSERT_EQUAL_HEX8(AGENT_OTA_DOWNLOADING, blob[1]);
    TEST_ASSERT_EQUAL_MEMORY("3f2a9c01d4e5\0", blob + 2, 13);
    TEST_ASSERT_EQUAL_MEMORY("1.2.0\0\0\0", blob + 15, 8);
    static const uint8_t numbers[] = {
        0x00, 0x40, 0x06, 0x00,  /* 409600 */
        0x00, 0xec, 0x0d, 0x00,  /* 912384 */
        0xff, 0xff, 0xff, 0xff,  /* ESP_FAIL */
    };
    TEST_ASSERT_EQUAL_MEMORY(numbers, blob + 47, sizeof(numbers));
    TEST_ASSERT_EACH_EQUAL_HEX8(0, blob + 59, 128);
    const uint32_t crc = agent_crc32(blob, 187);
    TEST_ASSERT_EQUAL_HEX8((uint8_t)crc, blob[187]);
    TEST_ASSERT_EQUAL_HEX8((uint8_t)(crc >> 24), blob[190]);
}

static void test_crc32(void)
{
    TEST_ASSERT_EQUAL_HEX32(0xCBF43926u, agent_crc32((const uint8_t *)"123456789", 9));
    TEST_ASSERT_EQUAL_HEX32(0, agent_crc32(NULL, 0));
}

static void test_pack_refusals(void)
{
    uint8_t blob[AGENT_OTA_STATUS_PACKED_SIZE];
    agent_ota_status_t s = downloading();
    TEST_ASSERT_EQUAL_size_t(0, agent_ota_status_pack(&s, blob, sizeof(blob) - 1));
    s.state = (agent_ota_state_t)AGENT_OTA_STATE_COUNT;
    TEST_ASSERT_EQUAL_size_t(0, agent_ota_status_pack(&s, blob, sizeof(blob)));
    s = downloading();
    strcpy(s.ota_id, "3F2A9C01D4E5");  /* not lowercase */
    TEST_ASSERT_EQUAL_size_t(0, agent_ota_status_pack(&s, blob, sizeof(blob)));
    strcpy(s.ota_id, "3f2a9c01d4e");  /* 11 digits */
    TEST_ASSERT_EQUAL_size_t(0, agent_ota_status_pack(&s, blob, sizeof(blob)));
    s = downloading();
    memset(s.ota_id, 'a', sizeof(s.ota_id));  /* no NUL */
    TEST_ASSERT_EQUAL_size_t(0, agent_ota_status_pack(&s, blob, sizeof(blob)));
    s = downloading();
    memset(s.target_version, 'v', sizeof(s.target_version));
    TEST_ASSERT_EQUAL_size_t(0, agent_ota_status_pack(&s, blob, sizeof(blob)));
    s = downloading();
    memset(s.message, 'm', sizeof(s.message));
    TEST_ASSERT_EQUAL_size_t(0, agent_ota_status_pack(&s, blob, sizeof(blob)));
}

static void test_every_corrupted_byte_is_refused(void)
{
    agent_ota_status_t s = downloading();
    s.state = AGENT_OTA_FAILED;
    s.error = ESP_FAIL;
    strcpy(s.message, "File not found(404)");
    uint8_t good[AGENT_OTA_STATUS_PACKED_SIZE];
    TEST_ASSERT_EQUAL_size_t(sizeof(good), agent_ota_status_pack(&s, good, sizeof(good)));
    for (size_t i = 0; i < sizeof(good); i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t bad[AGENT_OTA_STATUS_PACKED_SIZE];
            memcpy(bad, good, sizeof(bad));
            bad[i] ^= (uint8_t)(1u << bit);
            agent_ota_status_t out;
            TEST_ASSERT_FALSE(agent_ota_status_unpack(bad, sizeof(bad), &out));
            TEST_ASSERT_EQUAL_INT(AGENT_OTA_IDLE, out.state);  /* refused: idle */
            TEST_ASSERT_EQUAL_STRING("", out.ota_id);
        }
        uint8_t bad[AGENT_OTA_STATUS_PACKED_SIZE];
        memcpy(bad, good, sizeof(bad));
        bad[i] = (uint8_t)~bad[i];
        agent_ota_status_t out;
        TEST_ASSERT_FALSE(agent_ota_status_unpack(bad, sizeof(bad), &out));
    }
}

/* A record with a valid CRC but a bad field: the checks behind the CRC. */
static bool unpack_with_fixed_crc(uint8_t *blob)
{
    const uint32_t crc = agent_crc32(blob, 187);
    blob[187] = (uint8_t)crc;
    blob[188] = (uint8_t)(crc >> 8);
    blob[189] = (uint8_t)(crc >> 16);
    blob[190] = (uint8_t)(crc >> 24);
    agent_ota_status_t out;
    return agent_ota_status_unpack(blob, AGENT_OTA_STATUS_PACKED_SIZE, &out);
}

static void test_malformed_records_are_refused(void)
{
    agent_ota_status_t s = downloading();
    uint8_t good[AGENT_OTA_STATUS_PACKED_SIZE];
    TEST_ASSERT_EQUAL_size_t(sizeof(good), agent_ota_status_pack(&s, good, sizeof(good)));
    uint8_t blob[AGENT_OTA_STATUS_PACKED_SIZE];
    agent_ota_status_t out;

    memcpy(blob, good, sizeof(blob));
    TEST_ASSERT_TRUE(unpack_with_fixed_crc(blob));  /* the helper itself */

    TEST_ASSERT_FALSE(agent_ota_status_unpack(good, sizeof(good) - 1, &out));
    TEST_ASSERT_FALSE(agent_ota_status_unpack(good, 0, &out));
    TEST_ASSERT_FALSE(agent_ota_status_unpack(NULL, sizeof(good), &out));
    uint8_t longer[AGENT_OTA_STATUS_PACKED_SIZE + 1] = {0};
    memcpy(longer, good, sizeof(good));
    TEST_ASSERT_FALSE(agent_ota_status_unpack(longer, sizeof(longer), &out));

    memcpy(blob, good, sizeof(blob));
    blob[0] = 2;  /* another format */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    blob[1] = AGENT_OTA_STATE_COUNT;  /* state out of range */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    blob[2] = 'G';  /* ota_id not hex */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    blob[2] = 'A';  /* ota_id upper case */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    blob[2 + 11] = '\0';  /* ota_id of 11 digits */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    blob[2 + 12] = 'a';  /* ota_id without its NUL */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    memset(blob + 15, 'v', 32);  /* target_version without its NUL */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    blob[15 + 20] = 'x';  /* a byte after target_version's NUL */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    memset(blob + 59, 'm', 128);  /* message without its NUL */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    blob[59 + 127] = 'x';  /* a byte after the message's NUL */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    memcpy(blob + 51, "\xfe\xff\xff\xff", 4);  /* image_size -2 */
    TEST_ASSERT_FALSE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    memcpy(blob + 51, "\xff\xff\xff\xff", 4);  /* image_size -1: null */
    TEST_ASSERT_TRUE(unpack_with_fixed_crc(blob));
    memcpy(blob, good, sizeof(blob));
    memset(blob + 2, 0, 13);  /* ota_id "" (null) */
    TEST_ASSERT_TRUE(unpack_with_fixed_crc(blob));
    memset(blob, 0xFF, sizeof(blob));  /* erased flash */
    TEST_ASSERT_FALSE(agent_ota_status_unpack(blob, sizeof(blob), &out));
    memset(blob, 0, sizeof(blob));
    TEST_ASSERT_FALSE(agent_ota_status_unpack(blob, sizeof(blob), &out));
}

static void test_negative_image_size_packs_as_null(void)
{
    agent_ota_status_t s = downloading();
    s.image_size = -7;
    uint8_t blob[AGENT_OTA_STATUS_PACKED_SIZE];
    TEST_ASSERT_EQUAL_size_t(sizeof(blob), agent_ota_status_pack(&s, blob, sizeof(blob)));
    agent_ota_status_t out;
    TEST_ASSERT_TRUE(agent_ota_status_unpack(blob, sizeof(blob), &out));
    TEST_ASSERT_EQUAL_INT32(-1, out.image_size);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_idle);
    RUN_TEST(test_in_progress_and_abortable);
    RUN_TEST(test_after_reset_every_state);
    RUN_TEST(test_after_reset_keeps_failure_details);
    RUN_TEST(test_pack_round_trip);
    RUN_TEST(test_pack_layout);
    RUN_TEST(test_crc32);
    RUN_TEST(test_pack_refusals);
    RUN_TEST(test_every_corrupted_byte_is_refused);
    RUN_TEST(test_malformed_records_are_refused);
    RUN_TEST(test_negative_image_size_packs_as_null);
    return UNITY_END();
}
