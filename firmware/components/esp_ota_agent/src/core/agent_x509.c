/*
 * Certificate details the agent gets right without mbedtls' help.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_x509.h"

void agent_x509_serial_from_random(uint8_t *serial, size_t length)
{
    if (length == 0) {
        return;
    }
    serial[0] &= 0x7f;
    if (serial[0] == 0) {
        serial[0] = 0x01;
    }
}
