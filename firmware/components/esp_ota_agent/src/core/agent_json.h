/*
 * A bounded JSON writer over a caller's buffer, and the protocol's JSON documents: the
 * OTA status, the device info, an error, an event.
 *
 * Strings are escaped per RFC 8259; well-formed UTF-8 is copied as is and every
 * ill-formed part (image descriptors and HTTP texts come from outside) becomes \ufffd,
 * so the output is always valid JSON in valid UTF-8. Nothing is ever written past the
 * capacity; the output is NUL-terminated whenever the capacity is not 0; a document that
 * does not fit is reported (0 / false) and the buffer then holds a prefix of it.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
#include "agent_event_ring.h"
#include "agent_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Device protocol version (GET /api/v1/info "api"). */
#define AGENT_API_VERSION 1

/** Names an esp_err_t: esp_err_to_name on the device. */
typedef const char *(*agent_err_name_fn)(esp_err_t code);

/** Buffer sizes that hold any document below, whatever the strings hold (worst case:
 *  every byte escaped as six), with error names up to 64 characters. */
#define AGENT_JSON_STATUS_MAX 1280
#define AGENT_JSON_EVENT_MAX 768
#define AGENT_JSON_INFO_MAX 2560

/** Objects nest at most this deep. */
#define AGENT_JSON_MAX_DEPTH 8

/** A writer of one JSON document (objects only, which is all the protocol uses). */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;            /**< bytes written, without the NUL */
    bool overflow;         /**< something did not fit, or the writer was misused */
    uint8_t depth;         /**< open objects */
    uint8_t has_member;    /**< bit d: the object at depth d + 1 has a member already */
} agent_json_writer_t;

void agent_json_init(agent_json_writer_t *w, char *buf, size_t cap);

/**
 * End the document.
 *
 * @return its length (without the NUL); 0 if it did not fit (or objects are left open).
 */
size_t agent_json_finish(agent_json_writer_t *w);

/** `{` as a document or as the value after a key; `}`. */
void agent_json_begin_object(agent_json_writer_t *w);
void agent_json_end_object(agent_json_writer_t *w);

/** A member's key (with the comma before it when needed); a value must follow. */
void agent_json_key(agent_json_writer_t *w, const char *key);

/** Values. string: NULL -> null. nstring: reads at most `max_len` bytes (fixed arrays
 *  that might lack their NUL). */
void agent_json_string(agent_json_writer_t *w, const char *s);
void agent_json_nstring(agent_json_writer_t *w, const char *s, size_t max_len);
void agent_json_null(agent_json_writer_t *w);
void agent_json_bool(agent_json_writer_t *w, bool value);
void agent_json_u32(agent_json_writer_t *w, uint32_t value);
void agent_json_i32(agent_json_writer_t *w, int32_t value);
void agent_json_u64(agent_json_writer_t *w, uint64_t value);
/** Microseconds as seconds with exactly 3 decimals, rounded to the millisecond, without
 *  floating point: 12345678 -> 12.346 (negative -> 0.000). */
void agent_json_seconds_from_us(agent_json_writer_t *w, int64_t microseconds);
/** `len` bytes of lowercase hex: {0xab, 0x01} -> "ab01". */
void agent_json_hex(agent_json_writer_t *w, const uint8_t *bytes, size_t len);
/** Text inserted as is: a JSON value made elsewhere, or framing around the document
 *  (server-sent events). */
void agent_json_raw(agent_json_writer_t *w, const char *text);

/** Key and value in one call. */
void agent_json_kv_string(agent_json_writer_t *w, const char *key, const char *s);
/** NULL and "" are null. */
void agent_json_kv_string_or_null(agent_json_writer_t *w, const char *key, const char *s);
/** A fixed array of `size` bytes; "" is null. */
void agent_json_kv_array_string_or_null(agent_json_writer_t *w, const char *key,
                                        const char *s, size_t size);
void agent_json_kv_null(agent_json_writer_t *w, const char *key);
void agent_json_kv_bool(agent_json_writer_t *w, const char *key, bool value);
void agent_json_kv_u32(agent_json_writer_t *w, const char *key, uint32_t value);
void agent_json_kv_i32(agent_json_writer_t *w, const char *key, int32_t value);
/** A count or size that is null when negative. */
void agent_json_kv_size_or_null(agent_json_writer_t *w, const char *key, int32_t value);
/** An esp_err_t by name; ESP_OK is null. A NULL err_name, or a NULL name, gives
 *  "UNKNOWN ERROR" (esp_err_to_name's word for a code it does not know). */
void agent_json_kv_error_or_null(agent_json_writer_t *w, const char *key, esp_err_t error,
                                 agent_err_name_fn err_name);
void agent_json_kv_raw(agent_json_writer_t *w, const char *key, const char *raw_json);
void agent_json_kv_begin_object(agent_json_writer_t *w, const char *key);

/* --- The protocol's documents -------------------------------------------------------- */

/** Everything GET /api/v1/info reports, as the ESP-IDF calls return it. */
typedef struct {
    uint8_t mac[6];                  /**< esp_read_mac(ESP_MAC_WIFI_STA) */
    int chip_model;                  /**< esp_chip_info().model (esp_chip_model_t) */
    uint32_t chip_revision;          /**< esp_chip_info().revision: major * 100 + minor */
    char project[32];                /**< esp_app_desc_t.project_name */
    char version[32];                /**< esp_app_desc_t.version */
    char idf_ver[32];                /**< esp_app_desc_t.idf_ver */
    uint8_t app_elf_sha256[32];      /**< esp_app_desc_t.app_elf_sha256 */
    uint32_t secure_version;         /**< esp_app_desc_t.secure_version */
    char running_partition[17];      /**< esp_partition_t.label */
    char boot_partition[17];
    uint32_t image_state;            /**< esp_ota_img_states_t of the running partition */
    char last_invalid_partition[17]; /**< "" = null (none) */
    agent_ota_status_t last_ota;
    int reset_reason;                /**< esp_reset_reason_t */
    int64_t uptime_us;               /**< esp_timer_get_time() */
} agent_info_t;

/** The status object (GET /api/v1/ota, info.last_ota) into a writer. */
void agent_json_write_status(agent_json_writer_t *w, const agent_ota_status_t *status,
                             agent_err_name_fn err_name);

/** The event object (the data line of an event) into a writer. */
void agent_json_write_event(agent_json_writer_t *w, const agent_event_t *event,
                            agent_err_name_fn err_name);

/**
 * The documents. Each returns its length without the NUL, or 0 if it does not fit.
 *
 * status: {"state":"downloading","ota_id":"3f2a9c01d4e5","target_version":"1.2.0",
 *          "bytes_written":409600,"image_size":912384,"error":null,"message":null}
 * info:   {"api":1,"mac":"24:0a:c4:00:00:01","chip":"esp32","chip_revision":301,
 *          "project":..,"version":..,"idf_ver":..,"app_elf_sha256":"<64 hex>",
 *          "secure_version":0,"running_partition":"ota_1","boot_partition":"ota_1",
 *          "image_state":"pending_verify","last_invalid_partition":null,
 *          "last_ota":{status},"reset_reason":"ESP_RST_SW","uptime_s":12.345}
 * error:  {"error":"ESP_ERR_INVALID_ARG","message":"..."} (a NULL message is "")
 * event:  {"id":42,"type":"write_flash","ota_id":"3f2a9c01d4e5","bytes_written":409600,
 *          "image_size":912384,"project":null,"version":null,"error":null}
 * ota_started: {"ota_id":"3f2a9c01d4e5"} (202 of POST /api/v1/ota)
 * ok:     {"ok":true}
 */
size_t agent_json_status(char *buf, size_t cap, const agent_ota_status_t *status,
                         agent_err_name_fn err_name);
size_t agent_json_info(char *buf, size_t cap, const agent_info_t *info,
                       agent_err_name_fn err_name);
size_t agent_json_error(char *buf, size_t cap, const char *error_name, const char *message);
size_t agent_json_event(char *buf, size_t cap, const agent_event_t *event,
                        agent_err_name_fn err_name);
size_t agent_json_ota_started(char *buf, size_t cap, const char *ota_id);
size_t agent_json_ok(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
