/*
 * Unit tests of agent_json_scan: the members it reports (spans, \u0000 flags,
 * duplicates), the nesting bound, positions in characters. Its refusals are checked
 * against the reference device through test_ota_request.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <string.h>
#include "unity.h"
#include "agent_json_scan.h"

void setUp(void) {}
void tearDown(void) {}

typedef struct {
    int count;
    char values[8][32];
    bool key_nul[8];
    bool value_nul[8];
    const char *text;
} members_t;

static void on_member(void *ctx, bool key_has_nul, size_t start, size_t end, bool value_has_nul)
{
    members_t *m = ctx;
    TEST_ASSERT_LESS_THAN_INT(8, m->count);
    TEST_ASSERT_LESS_THAN_size_t(32, end - start);
    memcpy(m->values[m->count], m->text + start, end - start);
    m->values[m->count][end - start] = '\0';
    m->key_nul[m->count] = key_has_nul;
    m->value_nul[m->count] = value_has_nul;
    m->count++;
}

static void test_members(void)
{
    members_t m = {.text = " {\"a\" : 1.5e3 ,\"b\":{\"c\":[1,{}]},\"a\":\"x\\u0000\","
                           "\"k\\u0000\":null,\"e\":\"\\\\u0000\"} "};
    agent_json_scan_result_t result;
    TEST_ASSERT_TRUE(agent_json_scan(m.text, strlen(m.text), on_member, &m, &result));
    TEST_ASSERT_NULL(result.error);
    TEST_ASSERT_EQUAL_INT(5, m.count);
    TEST_ASSERT_EQUAL_STRING("1.5e3", m.values[0]);
    TEST_ASSERT_EQUAL_STRING("{\"c\":[1,{}]}", m.values[1]);
    TEST_ASSERT_EQUAL_STRING("\"x\\u0000\"", m.values[2]);
    TEST_ASSERT_TRUE(m.value_nul[2]);
    TEST_ASSERT_FALSE(m.key_nul[2]);
    TEST_ASSERT_EQUAL_STRING("null", m.values[3]);
    TEST_ASSERT_TRUE(m.key_nul[3]);
    TEST_ASSERT_FALSE(m.value_nul[3]);
    TEST_ASSERT_EQUAL_STRING("\"\\\\u0000\"", m.values[4]);  /* an escaped backslash */
    TEST_ASSERT_FALSE(m.value_nul[4]);

    /* Only the members of a top-level object are reported. */
    members_t none = {.text = "[{\"a\":1}]"};
    TEST_ASSERT_TRUE(agent_json_scan(none.text, strlen(none.text), on_member, &none, &result));
    TEST_ASSERT_EQUAL_INT(0, none.count);
}

static void test_depth(void)
{
    char text[256];
    agent_json_scan_result_t result;
    for (int depth = 1; depth <= AGENT_JSON_SCAN_MAX_DEPTH + 1; depth++) {
        size_t n = 0;
        for (int i = 0; i < depth; i++) {
            text[n++] = i % 2 ? '{' : '[';
            if (i % 2) {
                memcpy(text + n, "\"k\":", 4);
                n += 4;
            }
        }
        text[n++] = '1';
        for (int i = depth - 1; i >= 0; i--) {
            text[n++] = i % 2 ? '}' : ']';
        }
        const bool ok = agent_json_scan(text, n, NULL, NULL, &result);
        TEST_ASSERT_EQUAL(depth <= AGENT_JSON_SCAN_MAX_DEPTH, ok);
        if (!ok) {
            TEST_ASSERT_EQUAL_STRING("JSON nested too deeply", result.error);
        }
    }
}

static void test_unsupported_is_not_an_error(void)
{
    agent_json_scan_result_t result;
    TEST_ASSERT_FALSE(agent_json_scan("[1, NaN, Infinity]", 18, NULL, NULL, &result));
    TEST_ASSERT_NULL(result.error);
    TEST_ASSERT_EQUAL_STRING("NaN or Infinity", result.unsupported);
    TEST_ASSERT_EQUAL_size_t(4, result.unsupported_at);
    /* A syntax error after it is what Python reports. */
    TEST_ASSERT_FALSE(agent_json_scan("[NaN,]", 6, NULL, NULL, &result));
    TEST_ASSERT_EQUAL_STRING("Illegal trailing comma before end of array", result.error);
}

static void test_positions(void)
{
    size_t line, column, chars;
    const char *text = "ab\n\xc3\xa9\xf0\x9f\x98\x80x\ny";
    agent_json_scan_position(text, 0, &line, &column, &chars);
    TEST_ASSERT_EQUAL_size_t(1, line);
    TEST_ASSERT_EQUAL_size_t(1, column);
    TEST_ASSERT_EQUAL_size_t(0, chars);
    agent_json_scan_position(text, 9, &line, &column, &chars);  /* the x */
    TEST_ASSERT_EQUAL_size_t(2, line);
    TEST_ASSERT_EQUAL_size_t(3, column);
    TEST_ASSERT_EQUAL_size_t(5, chars);
    agent_json_scan_position(text, 11, &line, &column, &chars);  /* the y */
    TEST_ASSERT_EQUAL_size_t(3, line);
    TEST_ASSERT_EQUAL_size_t(1, column);
    TEST_ASSERT_EQUAL_size_t(7, chars);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_members);
    RUN_TEST(test_depth);
    RUN_TEST(test_unsupported_is_not_an_error);
    RUN_TEST(test_positions);
    return UNITY_END();
}
