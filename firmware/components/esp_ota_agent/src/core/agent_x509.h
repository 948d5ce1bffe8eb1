/*
 * Certificate details the agent gets right without mbedtls' help.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Turn `length` random bytes into a certificate serial number that every X.509 reader
 * takes (RFC 5280 4.1.2.2): a positive INTEGER in minimal DER, so the first byte is
 * 0x01..0x7f (0x80 and above would be negative; a leading 0x00 not minimal, which
 * OpenSSL refuses: "ASN1 lib"). The other bytes are left as they are.
 */
void agent_x509_serial_from_random(uint8_t *serial, size_t length);

#ifdef __cplusplus
}
#endif
