/*
 * agent_x509: the serial number of the device's first-boot certificate.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <string.h>

#include "unity.h"
#include "agent_x509.h"

void setUp(void) {}
void tearDown(void) {}

/* Whatever the random first byte, the serial is a positive minimal DER INTEGER, and the
 * rest of the random bytes are kept. */
static void test_every_first_byte_gives_a_valid_serial(void)
{
    for (int first = 0; first < 256; first++) {
        uint8_t serial[16];
        for (size_t i = 0; i < sizeof(serial); i++) {
            serial[i] = (uint8_t)(0xA5 ^ i);
        }
        serial[0] = (uint8_t)first;
        agent_x509_serial_from_random(serial, sizeof(serial));
        TEST_ASSERT_TRUE_MESSAGE(serial[0] >= 0x01 && serial[0] <= 0x7f, "first byte out of range");
        for (size_t i = 1; i < sizeof(serial); i++) {
            TEST_ASSERT_EQUAL_UINT8(0xA5 ^ i, serial[i]);
        }
        if (first >= 0x01 && first <= 0x7f) {
            TEST_ASSERT_EQUAL_UINT8(first, serial[0]);  /* already valid: unchanged */
        }
    }
}

static void test_an_empty_serial_is_left_alone(void)
{
    uint8_t byte = 0;
    agent_x509_serial_from_random(&byte, 0);
    TEST_ASSERT_EQUAL_UINT8(0, byte);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_every_first_byte_gives_a_valid_serial);
    RUN_TEST(test_an_empty_serial_is_left_alone);
    return UNITY_END();
}
