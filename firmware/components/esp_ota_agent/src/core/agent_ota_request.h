/*
 * The body of POST /api/v1/ota: decoded and checked exactly as the reference device
 * does it (simulator/api.py _start_ota, _field, _headers; simulator/ota_task.py
 * validate_request), with the same refusals in the same order.
 *
 * The device's order is: decode (400 ESP_ERR_INVALID_ARG), busy (409
 * ESP_ERR_INVALID_STATE), validate (400 ESP_ERR_INVALID_ARG / ESP_ERR_INVALID_SIZE; the
 * certificate is parsed between the cert_pem and the header checks), pending_verify (409
 * ESP_ERR_OTA_ROLLBACK_INVALID_STATE). agent_ota_request_decode and
 * agent_ota_request_validate are the two steps; agent_ota_request_parse does both.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Request bodies above this are refused (413 on the device, ESP_ERR_INVALID_SIZE). */
#define AGENT_OTA_REQUEST_MAX_BODY (16 * 1024)
/** At most this many download headers. */
#define AGENT_OTA_MAX_HEADERS 8
/** The least image size: esp_https_ota reads this much (the image and app descriptors)
 *  before anything else. */
#define AGENT_OTA_MIN_IMAGE_SIZE 1024
/** A message buffer that holds every refusal in full, except those quoting the request
 *  (a URL, a header name, a size of many digits), which are cut to fit. */
#define AGENT_OTA_MESSAGE_MAX 160

typedef struct {
    const char *name;
    const char *value;
} agent_http_header_t;

typedef struct {
    const char *url;                     /**< https://, with a host */
    char sha256[65];                     /**< 64 lowercase hex digits */
    uint32_t size;                       /**< 1024 .. the slot size */
    char version[32];                    /**< 1..31 bytes */
    const char *cert_pem;                /**< contains a PEM certificate; not yet parsed */
    size_t header_count;                 /**< at most AGENT_OTA_MAX_HEADERS once valid */
    const agent_http_header_t *headers;  /**< header_count names and values, in order */

    /* What agent_ota_request_decode read, which agent_ota_request_validate checks and
     * turns into sha256, size and version above. */
    const char *sha256_text;
    const char *size_text;               /**< the JSON integer's digits, e.g. "-5", "912384" */
    const char *version_text;

    void *storage;  /**< one allocation holding every string; see agent_ota_request_free */
} agent_ota_request_t;

/**
 * Decode the JSON body (`body_len` bytes, no NUL needed): a UTF-8 JSON object whose url,
 * sha256, version and cert_pem are strings, size an integer (not a bool, not a number
 * with a fraction or exponent), headers (optional) an object of strings. Unknown fields
 * are ignored; a repeated key counts with its last value (as Python's json).
 *
 * @return ESP_OK with `*out` filled (free it with agent_ota_request_free);
 *         ESP_ERR_INVALID_ARG with `message` (e.g. "bad OTA request: size must be a int");
 *         ESP_ERR_INVALID_SIZE for a body over AGENT_OTA_REQUEST_MAX_BODY;
 *         ESP_ERR_NO_MEM. On error `*out` holds nothing (freeing it is harmless).
 */
esp_err_t agent_ota_request_decode(const char *body, size_t body_len, agent_ota_request_t *out,
                                   char *message, size_t message_cap);

/**
 * The runtime's certificate check (mbedtls_x509_crt_parse): ESP_OK, or an error with
 * `message` set (e.g. "cert_pem is not a usable certificate: ...").
 */
typedef esp_err_t (*agent_cert_check_fn)(void *ctx, const char *cert_pem, char *message,
                                         size_t message_cap);

/**
 * Check a decoded request as validate_request does, in its order: url (https:// with a
 * host), sha256 (64 hex digits), size (>= 1024, then <= slot_size:
 * ESP_ERR_INVALID_SIZE), version (1..31 bytes), cert_pem (not blank, has a PEM
 * certificate, then `check_cert` when not NULL), each header (a name, no CR or LF), and
 * at most AGENT_OTA_MAX_HEADERS headers. Sets sha256 (lowercase), size and version.
 *
 * @return ESP_OK; ESP_ERR_INVALID_ARG or ESP_ERR_INVALID_SIZE with `message`; or what
 *         `check_cert` returned.
 */
esp_err_t agent_ota_request_validate(agent_ota_request_t *req, uint32_t slot_size,
                                     agent_cert_check_fn check_cert, void *check_cert_ctx,
                                     char *message, size_t message_cap);

/** decode, then validate without a certificate check. On error `*out` holds nothing. */
esp_err_t agent_ota_request_parse(const char *body, size_t body_len, uint32_t slot_size,
                                  agent_ota_request_t *out, char *message, size_t message_cap);

/** Free what decode allocated and clear `*req`; harmless on a cleared or freed request. */
void agent_ota_request_free(agent_ota_request_t *req);

#ifdef __cplusplus
}
#endif
