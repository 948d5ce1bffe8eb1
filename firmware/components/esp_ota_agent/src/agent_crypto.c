/*
 * Every mbedtls call of the agent, in one file: the device certificate, the secret
 * check, the pinned certificate's sanity check and the staged image's SHA-256. (ESP-IDF
 * v6 moves to mbedtls 4 / PSA: this is the one file to port.)
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "esp_log.h"
#include "esp_partition.h"
#include "esp_random.h"
#include "mbedtls/constant_time.h"
#include "mbedtls/ecp.h"
#include "mbedtls/pk.h"
#include "mbedtls/sha256.h"
#include "mbedtls/x509_crt.h"

#include "agent_priv.h"
#include "core/agent_x509.h"

static const char *TAG = "esp_ota_agent";

#define CERT_PEM_BYTES 1024
#define KEY_PEM_BYTES 512

/* esp_fill_random is the chip's RNG (true random with the radio on); mbedtls takes it
 * as its f_rng directly, with no DRBG state to keep. */
static int fill_random(void *context, unsigned char *out, size_t length)
{
    (void)context;
    esp_fill_random(out, length);
    return 0;
}

void agent_crypto_random_hex(char *out, size_t hex_digits)
{
    static const char digits[] = "0123456789abcdef";
    uint8_t byte = 0;
    for (size_t i = 0; i < hex_digits; i++) {
        if (i % 2 == 0) {
            esp_fill_random(&byte, 1);
        }
        out[i] = digits[(i % 2 == 0 ? byte >> 4 : byte) & 0x0f];
    }
    out[hex_digits] = '\0';
}

esp_err_t agent_crypto_make_certificate(const char *common_name, char **cert_pem, char **key_pem)
{
    mbedtls_pk_context key;
    mbedtls_x509write_cert writer;
    mbedtls_pk_init(&key);
    mbedtls_x509write_crt_init(&writer);
    unsigned char *cert_buffer = calloc(1, CERT_PEM_BYTES);
    unsigned char *key_buffer = calloc(1, KEY_PEM_BYTES);
    esp_err_t result = ESP_FAIL;
    int ret = 0;
    if (cert_buffer == NULL || key_buffer == NULL) {
        result = ESP_ERR_NO_MEM;
        goto done;
    }

    ret = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0) {
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), fill_random, NULL);
    }
    char subject[48];
    snprintf(subject, sizeof(subject), "CN=%s", common_name);
    unsigned char serial[16];
    esp_fill_random(serial, sizeof(serial));
    agent_x509_serial_from_random(serial, sizeof(serial));
    if (ret == 0) {
        mbedtls_x509write_crt_set_version(&writer, MBEDTLS_X509_CRT_VERSION_3);
        mbedtls_x509write_crt_set_md_alg(&writer, MBEDTLS_MD_SHA256);
        mbedtls_x509write_crt_set_subject_key(&writer, &key);
        mbedtls_x509write_crt_set_issuer_key(&writer, &key);
        ret = mbedtls_x509write_crt_set_subject_name(&writer, subject);
    }
    if (ret == 0) {
        ret = mbedtls_x509write_crt_set_issuer_name(&writer, subject);
    }
    if (ret == 0) {
        ret = mbedtls_x509write_crt_set_serial_raw(&writer, serial, sizeof(serial));
    }
    if (ret == 0) {
        /* A device may have no clock yet: valid from before any build, for decades.
         * Clients pin the certificate itself, not its dates. */
        ret = mbedtls_x509write_crt_set_validity(&writer, "20250101000000", "20991231235959");
    }
    if (ret == 0) {
        ret = mbedtls_x509write_crt_set_basic_constraints(&writer, 0, -1);
    }
    if (ret == 0) {
        char dns_name[40];
        snprintf(dns_name, sizeof(dns_name), "%s.local", common_name);
        mbedtls_x509_san_list san = {
            .node = {.type = MBEDTLS_X509_SAN_DNS_NAME,
                     .san = {.unstructured_name = {.p = (unsigned char *)dns_name,
                                                   .len = strlen(dns_name)}}},
            .next = NULL,
        };
        ret = mbedtls_x509write_crt_set_subject_alternative_name(&writer, &san);
    }
    if (ret == 0) {
        ret = mbedtls_x509write_crt_pem(&writer, cert_buffer, CERT_PEM_BYTES, fill_random, NULL);
    }
    if (ret == 0) {
        ret = mbedtls_pk_write_key_pem(&key, key_buffer, KEY_PEM_BYTES);
    }
    if (ret != 0) {
        ESP_LOGE(TAG, "making the certificate failed: mbedtls -0x%04x", (unsigned)-ret);
        goto done;
    }
    *cert_pem = malloc(strlen((char *)cert_buffer) + 1);
    *key_pem = malloc(strlen((char *)key_buffer) + 1);
    if (*cert_pem == NULL || *key_pem == NULL) {
        free(*cert_pem);
        free(*key_pem);
        *cert_pem = *key_pem = NULL;
        result = ESP_ERR_NO_MEM;
        goto done;
    }
    strcpy(*cert_pem, (char *)cert_buffer);
    strcpy(*key_pem, (char *)key_buffer);
    result = ESP_OK;

done:
    if (key_buffer != NULL) {
        mbedtls_platform_zeroize(key_buffer, KEY_PEM_BYTES);
    }
    free(cert_buffer);
    free(key_buffer);
    mbedtls_x509write_crt_free(&writer);
    mbedtls_pk_free(&key);
    return result;
}

/* Both sides are hashed first, so the comparison takes the same time whatever the
 * supplied value's length and content. */
bool agent_crypto_secret_matches(const char *authorization, const char *secret)
{
    if (authorization == NULL || secret == NULL || secret[0] == '\0') {
        return false;
    }
    static const char scheme[] = "Bearer ";
    unsigned char expected[32];
    unsigned char supplied[32];
    mbedtls_sha256_context sha;
    mbedtls_sha256_init(&sha);
    mbedtls_sha256_starts(&sha, 0);
    mbedtls_sha256_update(&sha, (const unsigned char *)scheme, sizeof(scheme) - 1);
    mbedtls_sha256_update(&sha, (const unsigned char *)secret, strlen(secret));
    mbedtls_sha256_finish(&sha, expected);
    mbedtls_sha256_free(&sha);
    mbedtls_sha256((const unsigned char *)authorization, strlen(authorization), supplied, 0);
    return mbedtls_ct_memcmp(expected, supplied, sizeof(expected)) == 0;
}

bool agent_crypto_certificate_usable(const char *cert_pem)
{
    mbedtls_x509_crt certificate;
    mbedtls_x509_crt_init(&certificate);
    int ret = mbedtls_x509_crt_parse(&certificate, (const unsigned char *)cert_pem,
                                     strlen(cert_pem) + 1);
    mbedtls_x509_crt_free(&certificate);
    return ret == 0;
}

esp_err_t agent_crypto_partition_sha256(const void *partition, uint32_t length, char hex[65])
{
    const esp_partition_t *slot = partition;
    unsigned char chunk[512];
    unsigned char digest[32];
    mbedtls_sha256_context sha;
    mbedtls_sha256_init(&sha);
    mbedtls_sha256_starts(&sha, 0);
    esp_err_t err = ESP_OK;
    for (uint32_t offset = 0; offset < length && err == ESP_OK; offset += sizeof(chunk)) {
        uint32_t size = length - offset < sizeof(chunk) ? length - offset : sizeof(chunk);
        err = esp_partition_read(slot, offset, chunk, size);
        if (err == ESP_OK) {
            mbedtls_sha256_update(&sha, chunk, size);
        }
    }
    mbedtls_sha256_finish(&sha, digest);
    mbedtls_sha256_free(&sha);
    for (size_t i = 0; i < sizeof(digest); i++) {
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    }
    return err;
}
