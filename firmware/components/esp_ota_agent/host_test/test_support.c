/*
 * Helpers shared by the unit tests.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unity.h"

const char *test_err_name(esp_err_t code)
{
    switch (code) {
    case ESP_FAIL:
        return "ESP_FAIL";
    case ESP_ERR_NO_MEM:
        return "ESP_ERR_NO_MEM";
    case ESP_ERR_INVALID_ARG:
        return "ESP_ERR_INVALID_ARG";
    case ESP_ERR_INVALID_STATE:
        return "ESP_ERR_INVALID_STATE";
    case ESP_ERR_INVALID_SIZE:
        return "ESP_ERR_INVALID_SIZE";
    case ESP_ERR_INVALID_VERSION:
        return "ESP_ERR_INVALID_VERSION";
    case 0x1503:
        return "ESP_ERR_OTA_VALIDATE_FAILED";
    case 0x7002:
        return "ESP_ERR_HTTP_CONNECT";
    default:
        return "UNKNOWN ERROR";
    }
}

void test_every_capacity(test_render_fn render, const void *arg, const char *expected)
{
    const size_t full = strlen(expected);
    char what[64];
    for (size_t cap = 0; cap <= full + 1; cap++) {
        snprintf(what, sizeof(what), "capacity %zu of %zu", cap, full + 1);
        /* malloc(0) may return NULL; give the renderer a valid pointer all the same. */
        char *buf = malloc(cap > 0 ? cap : 1);
        TEST_ASSERT_NOT_NULL(buf);
        if (cap > 0) {
            memset(buf, 'X', cap);
        }
        const size_t len = render(buf, cap, arg);
        if (cap > full) {
            TEST_ASSERT_EQUAL_size_t_MESSAGE(full, len, what);
            TEST_ASSERT_EQUAL_STRING_MESSAGE(expected, buf, what);
        } else {
            TEST_ASSERT_EQUAL_size_t_MESSAGE(0, len, what);
            if (cap > 0) {
                const size_t kept = strnlen(buf, cap);
                TEST_ASSERT_LESS_THAN_size_t_MESSAGE(cap, kept, what);  /* terminated */
                if (kept > 0) {
                    TEST_ASSERT_EQUAL_MEMORY_MESSAGE(expected, buf, kept, what);  /* a prefix */
                }
            }
        }
        free(buf);
    }
}
