/*
 * Unit tests of agent_sse: event frames (exact, at every buffer size) and the
 * Last-Event-ID header.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <string.h>
#include "unity.h"
#include "agent_sse.h"
#include "test_support.h"

void setUp(void) {}
void tearDown(void) {}

static agent_event_t write_flash_event(void)
{
    agent_event_t e;
    agent_event_init(&e, AGENT_EVENT_WRITE_FLASH);
    e.id = 42;
    strcpy(e.ota_id, "3f2a9c01d4e5");
    e.bytes_written = 409600;
    e.image_size = 912384;
    return e;
}

static const char FRAME[] =
    "id: 42\nevent: write_flash\ndata: {\"id\":42,\"type\":\"write_flash\",\"ota_id\":"
    "\"3f2a9c01d4e5\",\"bytes_written\":409600,\"image_size\":912384,\"project\":null,"
    "\"version\":null,\"error\":null}\n\n";

static size_t render_frame(char *buf, size_t cap, const void *arg)
{
    return agent_sse_event(buf, cap, arg, test_err_name);
}

static void test_frame(void)
{
    char buf[AGENT_SSE_EVENT_MAX];
    const agent_event_t e = write_flash_event();
    TEST_ASSERT_EQUAL_size_t(strlen(FRAME), agent_sse_event(buf, sizeof(buf), &e, test_err_name));
    TEST_ASSERT_EQUAL_STRING(FRAME, buf);
    test_every_capacity(render_frame, &e, FRAME);
}

static void test_frame_of_each_type(void)
{
    static const char *const types[] = {
        "start", "connected", "get_img_desc", "verify_chip_id", "verify_chip_revision",
        "write_flash", "update_boot_partition", "finish", "abort", "reboot",
    };
    for (int t = 0; t < AGENT_EVENT_TYPE_COUNT; t++) {
        agent_event_t e;
        agent_event_init(&e, (agent_event_type_t)t);
        e.id = UINT32_MAX;
        char buf[AGENT_SSE_EVENT_MAX];
        TEST_ASSERT_NOT_EQUAL(0, agent_sse_event(buf, sizeof(buf), &e, test_err_name));
        char head[160];
        strcpy(head, "id: 4294967295\nevent: ");
        strcat(head, types[t]);
        strcat(head, "\ndata: {\"id\":4294967295,\"type\":\"");
        strcat(head, types[t]);
        strcat(head, "\",");
        TEST_ASSERT_EQUAL_MEMORY(head, buf, strlen(head));
        TEST_ASSERT_EQUAL_STRING("}\n\n", buf + strlen(buf) - 3);
    }
    agent_event_t bad;
    agent_event_init(&bad, (agent_event_type_t)AGENT_EVENT_TYPE_COUNT);
    char buf[AGENT_SSE_EVENT_MAX];
    TEST_ASSERT_EQUAL_size_t(0, agent_sse_event(buf, sizeof(buf), &bad, test_err_name));
    TEST_ASSERT_EQUAL_STRING("", buf);
}

static void test_comments(void)
{
    TEST_ASSERT_EQUAL_STRING(": connected\n\n", AGENT_SSE_CONNECTED);
    TEST_ASSERT_EQUAL_STRING(": keep-alive\n\n", AGENT_SSE_KEEP_ALIVE);
    TEST_ASSERT_EQUAL_INT(15000, AGENT_SSE_KEEP_ALIVE_MS);
}

static void test_last_event_id(void)
{
    static const struct {
        const char *value;
        bool valid;
        uint32_t id;
    } cases[] = {
        {"42", true, 42},
        {"0", true, 0},
        {"00012", true, 12},
        {" 42", true, 42},          /* HTTP's optional whitespace */
        {"42 \t", true, 42},
        {"\t7\t", true, 7},
        {"4294967295", true, UINT32_MAX},
        {"4294967296", true, UINT32_MAX},          /* above any id: the whole ring */
        {"18446744073709551616", true, UINT32_MAX}, /* 20 digits */
        {"99999999999999999999999999999999", true, UINT32_MAX},
        {"", false, 0},
        {"   ", false, 0},
        {"abc", false, 0},
        {"-1", false, 0},
        {"+1", false, 0},
        {"12a", false, 0},
        {"a12", false, 0},
        {"1 2", false, 0},
        {"1.0", false, 0},
        {"0x10", false, 0},
        {"\xd9\xa3", false, 0},  /* ARABIC-INDIC DIGIT THREE: ASCII digits only */
        {"4\n", false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t id = 12345;
        const bool valid = agent_sse_parse_last_event_id(cases[i].value, &id);
        TEST_ASSERT_EQUAL_MESSAGE(cases[i].valid, valid, cases[i].value);
        TEST_ASSERT_EQUAL_UINT32_MESSAGE(cases[i].valid ? cases[i].id : 12345, id,
                                         cases[i].value);
    }
    uint32_t id = 7;
    TEST_ASSERT_FALSE(agent_sse_parse_last_event_id(NULL, &id));
    TEST_ASSERT_EQUAL_UINT32(7, id);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_frame);
    RUN_TEST(test_frame_of_each_type);
    RUN_TEST(test_comments);
    RUN_TEST(test_last_event_id);
    return UNITY_END();
}
