/*
 * Unit tests of agent_utf8: well-formed and ill-formed sequences (Unicode table 3-7,
 * maximal subparts as Python's decode(errors="replace")), truncation at a character.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <string.h>
#include "unity.h"
#include "agent_utf8.h"

void setUp(void) {}
void tearDown(void) {}

static int decode(const char *bytes, size_t n, uint32_t *cp)
{
    return agent_utf8_decode((const unsigned char *)bytes, n, cp);
}

static void test_well_formed(void)
{
    static const struct {
        const char *bytes;
        int len;
        uint32_t cp;
    } cases[] = {
        {"A", 1, 0x41},           {"\x7f", 1, 0x7f},
        {"\xc2\x80", 2, 0x80},    {"\xdf\xbf", 2, 0x7ff},
        {"\xe0\xa0\x80", 3, 0x800}, {"\xed\x9f\xbf", 3, 0xd7ff},
        {"\xee\x80\x80", 3, 0xe000}, {"\xef\xbf\xbd", 3, 0xfffd},
        {"\xf0\x90\x80\x80", 4, 0x10000}, {"\xf0\x9f\x98\x80", 4, 0x1f600},
        {"\xf4\x8f\xbf\xbf", 4, 0x10ffff},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t cp = 0;
        TEST_ASSERT_EQUAL_INT(cases[i].len, decode(cases[i].bytes, strlen(cases[i].bytes), &cp));
        TEST_ASSERT_EQUAL_HEX32(cases[i].cp, cp);
    }
}

static void test_ill_formed_parts(void)
{
    static const struct {
        const char *bytes;
        int part;  /* length of the maximal subpart */
    } cases[] = {
        {"\x80", 1},             /* lone continuation */
        {"\xbf", 1},
        {"\xc0\xaf", 1},         /* C0, C1: overlong leads */
        {"\xc1\xbf", 1},
        {"\xe0\x80\x80", 1},     /* overlong 3-byte */
        {"\xed\xa0\x80", 1},     /* surrogate D800 */
        {"\xf0\x80\x80\x80", 1}, /* overlong 4-byte */
        {"\xf4\x90\x80\x80", 1}, /* above U+10FFFF */
        {"\xf5\x80", 1},         /* F5..FF never */
        {"\xff", 1},
        {"\xe2\x28\xa1", 1},     /* continuation expected, ASCII found */
        {"\xe2\x82", 2},         /* truncated at the end */
        {"\xe2\x82(", 2},
        {"\xf0\x90\x80", 3},
        {"\xf0\x90\x80x", 3},
        {"\xc2", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t cp;
        TEST_ASSERT_EQUAL_INT_MESSAGE(-cases[i].part,
                                      decode(cases[i].bytes, strlen(cases[i].bytes), &cp),
                                      cases[i].bytes);
    }
    /* Never reads past n even when the lead promises more. */
    uint32_t cp;
    TEST_ASSERT_EQUAL_INT(-1, decode("\xf0\x90\x80\x80", 1, &cp));
    TEST_ASSERT_EQUAL_INT(-2, decode("\xf0\x90\x80\x80", 2, &cp));
}

static void test_valid(void)
{
    size_t bad = 99;
    TEST_ASSERT_TRUE(agent_utf8_valid("", 0, &bad));
    TEST_ASSERT_TRUE(agent_utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11, NULL));
    TEST_ASSERT_FALSE(agent_utf8_valid("ab\xffz", 4, &bad));
    TEST_ASSERT_EQUAL_size_t(2, bad);
    TEST_ASSERT_FALSE(agent_utf8_valid("abc\xe2\x82", 5, &bad));
    TEST_ASSERT_EQUAL_size_t(3, bad);
    /* An embedded NUL is a character like any other. */
    TEST_ASSERT_TRUE(agent_utf8_valid("a\0b", 3, &bad));
}

static void test_copy(void)
{
    char dst[8];
    memset(dst, 'X', sizeof(dst));
    TEST_ASSERT_TRUE(agent_utf8_copy(dst, sizeof(dst), "1234567"));
    TEST_ASSERT_EQUAL_STRING("1234567", dst);
    TEST_ASSERT_FALSE(agent_utf8_copy(dst, sizeof(dst), "12345678"));
    TEST_ASSERT_EQUAL_STRING("1234567", dst);
    /* "12345" + é (2 bytes) + "x": é would end at byte 7, which is the NUL's place. */
    TEST_ASSERT_FALSE(agent_utf8_copy(dst, 7, "12345\xc3\xa9x"));
    TEST_ASSERT_EQUAL_STRING("12345", dst);
    TEST_ASSERT_FALSE(agent_utf8_copy(dst, 8, "12345\xf0\x9f\x98\x80"));
    TEST_ASSERT_EQUAL_STRING("12345", dst);
    TEST_ASSERT_FALSE(agent_utf8_copy(dst, 1, "a"));
    TEST_ASSERT_EQUAL_STRING("", dst);
    TEST_ASSERT_FALSE(agent_utf8_copy(dst, 0, "a"));
    TEST_ASSERT_TRUE(agent_utf8_copy(dst, 1, ""));
    /* Ill-formed bytes are kept as they are (one at a time). */
    TEST_ASSERT_FALSE(agent_utf8_copy(dst, 4, "ab\xff\xff"));
    TEST_ASSERT_EQUAL_STRING("ab\xff", dst);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_well_formed);
    RUN_TEST(test_ill_formed_parts);
    RUN_TEST(test_valid);
    RUN_TEST(test_copy);
    return UNITY_END();
}
