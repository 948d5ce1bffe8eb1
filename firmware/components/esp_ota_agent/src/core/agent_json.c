/*
 * Bounded JSON writer and the protocol's documents. Numbers are formatted here rather
 * than with printf: newlib's nano printf (CONFIG_NEWLIB_NANO_FORMAT) has no 64-bit
 * conversions.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_json.h"

#include <string.h>
#include "agent_names.h"
#include "agent_utf8.h"

/* Appends all `n` bytes or, if they do not fit before the NUL, nothing and marks the
 * overflow: the buffer always holds whole tokens and its NUL. */
static void append(agent_json_writer_t *w, const char *data, size_t n)
{
    if (w->overflow) {
        return;
    }
    if (w->cap == 0 || n > w->cap - 1 - w->len) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void append_str(agent_json_writer_t *w, const char *s)
{
    append(w, s, strlen(s));
}

void agent_json_init(agent_json_writer_t *w, char *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = cap == 0;
    w->depth = 0;
    w->has_member = 0;
    if (cap > 0) {
        buf[0] = '\0';
    }
}

size_t agent_json_finish(agent_json_writer_t *w)
{
    if (w->overflow || w->depth != 0) {
        return 0;
    }
    return w->len;
}

void agent_json_begin_object(agent_json_writer_t *w)
{
    if (w->depth >= AGENT_JSON_MAX_DEPTH) {
        w->overflow = true;
        return;
    }
    append(w, "{", 1);
    w->has_member &= (uint8_t)~(1u << w->depth);
    w->depth++;
}

void agent_json_end_object(agent_json_writer_t *w)
{
    if (w->depth == 0) {
        w->overflow = true;
        return;
    }
    append(w, "}", 1);
    w->depth--;
}

static const char s_hex_digits[] = "0123456789abcdef";

/* The quoted, escaped form of `n` bytes. */
static void write_escaped(agent_json_writer_t *w, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t literal_from = 0;  /* start of the bytes copied as they are */
    size_t i = 0;
    append(w, "\"", 1);
    while (i < n && !w->overflow) {
        const unsigned char c = p[i];
        char escape[7];
        size_t skip = 1;
        if (c >= 0x80) {
            uint32_t code_point;
            const int len = agent_utf8_decode(p + i, n - i, &code_point);
            if (len > 0) {
                i += (size_t)len;
                continue;
            }
            skip = (size_t)-len;
            memcpy(escape, "\\ufffd", 7);
        } else if (c == '"' || c == '\\') {
            escape[0] = '\\';
            escape[1] = (char)c;
            escape[2] = '\0';
        } else if (c < 0x20) {
            static const char short_forms[] = "btn\0fr";  /* \b \t \n, \f \r: 0x08..0x0d */
            if (c >= 0x08 && c <= 0x0d && short_forms[c - 0x08] != '\0') {
                escape[0] = '\\';
                escape[1] = short_forms[c - 0x08];
                escape[2] = '\0';
            } else {
                memcpy(escape, "\\u00", 4);
                escape[4] = s_hex_digits[c >> 4];
                escape[5] = s_hex_digits[c & 0x0f];
                escape[6] = '\0';
            }
        } else {
            i++;
            continue;
        }
        append(w, s + literal_from, i - literal_from);
        append_str(w, escape);
        i += skip;
        literal_from = i;
    }
    append(w, s + literal_from, i - literal_from);
    append(w, "\"", 1);
}

void agent_json_key(agent_json_writer_t *w, const char *key)
{
    if (w->depth == 0) {
        w->overflow = true;  /* a key outside an object */
        return;
    }
    const uint8_t bit = (uint8_t)(1u << (w->depth - 1));
    if (w->has_member & bit) {
        append(w, ",", 1);
    }
    w->has_member |= bit;
    write_escaped(w, key, strlen(key));
    append(w, ":", 1);
}

void agent_json_string(agent_json_writer_t *w, const char *s)
{
    if (s == NULL) {
        agent_json_null(w);
        return;
    }
    write_escaped(w, s, strlen(s));
}

void agent_json_nstring(agent_json_writer_t *w, const char *s, size_t max_len)
{
    if (s == NULL) {
        agent_json_null(w);
        return;
    }
    write_escaped(w, s, strnlen(s, max_len));
}

void agent_json_null(agent_json_writer_t *w)
{
    append(w, "null", 4);
}

void agent_json_bool(agent_json_writer_t *w, bool value)
{
    append_str(w, value ? "true" : "false");
}

void agent_json_u64(agent_json_writer_t *w, uint64_t value)
{
    char digits[20];  /* UINT64_MAX has 20 */
    size_t start = sizeof(digits);
    do {
        digits[--start] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    append(w, digits + start, sizeof(digits) - start);
}

void agent_json_u32(agent_json_writer_t *w, uint32_t value)
{
    agent_json_u64(w, value);
}

void agent_json_i32(agent_json_writer_t *w, int32_t value)
{
    if (value < 0) {
        append(w, "-", 1);
        /* -(INT32_MIN) does not fit an int32_t; it does an int64_t. */
        agent_json_u64(w, (uint64_t)(-(int64_t)value));
        return;
    }
    agent_json_u64(w, (uint64_t)value);
}

void agent_json_seconds_from_us(agent_json_writer_t *w, int64_t microseconds)
{
    const uint64_t ms = microseconds <= 0 ? 0 : ((uint64_t)microseconds + 500) / 1000;
    const unsigned fraction = (unsigned)(ms % 1000);
    const char decimals[5] = {'.', (char)('0' + fraction / 100), (char)('0' + fraction / 10 % 10),
                              (char)('0' + fraction % 10), '\0'};
    agent_json_u64(w, ms / 1000);
    append(w, decimals, 4);
}

void agent_json_hex(agent_json_writer_t *w, const uint8_t *bytes, size_t len)
{
    append(w, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        const char pair[2] = {s_hex_digits[bytes[i] >> 4], s_hex_digits[bytes[i] & 0x0f]};
        append(w, pair, 2);
    }
    append(w, "\"", 1);
}

void agent_json_raw(agent_json_writer_t *w, const char *text)
{
    append_str(w, text);
}

void agent_json_kv_string(agent_json_writer_t *w, const char *key, const char *s)
{
    agent_json_key(w, key);
    agent_json_string(w, s);
}

void agent_json_kv_string_or_null(agent_json_writer_t *w, const char *key, const char *s)
{
    agent_json_key(w, key);
    agent_json_string(w, s != NULL && s[0] != '\0' ? s : NULL);
}

void agent_json_kv_array_string_or_null(agent_json_writer_t *w, const char *key,
                                        const char *s, size_t size)
{
    agent_json_key(w, key);
    if (size == 0 || s[0] == '\0') {
        agent_json_null(w);
        return;
    }
    agent_json_nstring(w, s, size);
}

void agent_json_kv_null(agent_json_writer_t *w, const char *key)
{
    agent_json_key(w, key);
    agent_json_null(w);
}

void agent_json_kv_bool(agent_json_writer_t *w, const char *key, bool value)
{
    agent_json_key(w, key);
    agent_json_bool(w, value);
}

void agent_json_kv_u32(agent_json_writer_t *w, const char *key, uint32_t value)
{
    agent_json_key(w, key);
    agent_json_u32(w, value);
}

void agent_json_kv_i32(agent_json_writer_t *w, const char *key, int32_t value)
{
    agent_json_key(w, key);
    agent_json_i32(w, value);
}

void agent_json_kv_size_or_null(agent_json_writer_t *w, const char *key, int32_t value)
{
    agent_json_key(w, key);
    if (value < 0) {
        agent_json_null(w);
    } else {
        agent_json_i32(w, value);
    }
}

void agent_json_kv_error_or_null(agent_json_writer_t *w, const char *key, esp_err_t error,
                                 agent_err_name_fn err_name)
{
    agent_json_key(w, key);
    if (error == ESP_OK) {
        agent_json_null(w);
        return;
    }
    const char *name = err_name != NULL ? err_name(error) : NULL;
    agent_json_string(w, name != NULL ? name : "UNKNOWN ERROR");
}

void agent_json_kv_raw(agent_json_writer_t *w, const char *key, const char *raw_json)
{
    agent_json_key(w, key);
    agent_json_raw(w, raw_json);
}

void agent_json_kv_begin_object(agent_json_writer_t *w, const char *key)
{
    agent_json_key(w, key);
    agent_json_begin_object(w);
}

/* --- documents ------------------------------------------------------------------------ */

#define KV_ARRAY(w, key, array) agent_json_kv_array_string_or_null(w, key, array, sizeof(array))

void agent_json_write_status(agent_json_writer_t *w, const agent_ota_status_t *status,
                             agent_err_name_fn err_name)
{
    agent_json_begin_object(w);
    agent_json_kv_string(w, "state", agent_ota_state_name(status->state));
    KV_ARRAY(w, "ota_id", status->ota_id);
    KV_ARRAY(w, "target_version", status->target_version);
    agent_json_kv_u32(w, "bytes_written", status->bytes_written);
    agent_json_kv_size_or_null(w, "image_size", status->image_size);
    agent_json_kv_error_or_null(w, "error", status->error, err_name);
    KV_ARRAY(w, "message", status->message);
    agent_json_end_object(w);
}

void agent_json_write_event(agent_json_writer_t *w, const agent_event_t *event,
                            agent_err_name_fn err_name)
{
    agent_json_begin_object(w);
    agent_json_kv_u32(w, "id", event->id);
    agent_json_kv_string(w, "type", agent_event_type_name(event->type));
    KV_ARRAY(w, "ota_id", event->ota_id);
    agent_json_kv_size_or_null(w, "bytes_written", event->bytes_written);
    agent_json_kv_size_or_null(w, "image_size", event->image_size);
    KV_ARRAY(w, "project", event->project);
    KV_ARRAY(w, "version", event->version);
    agent_json_kv_error_or_null(w, "error", event->error, err_name);
    agent_json_end_object(w);
}

size_t agent_json_status(char *buf, size_t cap, const agent_ota_status_t *status,
                         agent_err_name_fn err_name)
{
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    agent_json_write_status(&w, status, err_name);
    return agent_json_finish(&w);
}

size_t agent_json_info(char *buf, size_t cap, const agent_info_t *info,
                       agent_err_name_fn err_name)
{
    char mac[18];
    for (size_t i = 0; i < 6; i++) {
        mac[i * 3] = s_hex_digits[info->mac[i] >> 4];
        mac[i * 3 + 1] = s_hex_digits[info->mac[i] & 0x0f];
        mac[i * 3 + 2] = i < 5 ? ':' : '\0';
    }
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    agent_json_begin_object(&w);
    agent_json_kv_u32(&w, "api", AGENT_API_VERSION);
    agent_json_kv_string(&w, "mac", mac);
    agent_json_kv_string(&w, "chip", agent_chip_name(info->chip_model));
    agent_json_kv_u32(&w, "chip_revision", info->chip_revision);
    /* Always strings, even empty: the simulator's are never null. */
    agent_json_key(&w, "project");
    agent_json_nstring(&w, info->project, sizeof(info->project));
    agent_json_key(&w, "version");
    agent_json_nstring(&w, info->version, sizeof(info->version));
    agent_json_key(&w, "idf_ver");
    agent_json_nstring(&w, info->idf_ver, sizeof(info->idf_ver));
    agent_json_key(&w, "app_elf_sha256");
    agent_json_hex(&w, info->app_elf_sha256, sizeof(info->app_elf_sha256));
    agent_json_kv_u32(&w, "secure_version", info->secure_version);
    agent_json_key(&w, "running_partition");
    agent_json_nstring(&w, info->running_partition, sizeof(info->running_partition));
    agent_json_key(&w, "boot_partition");
    agent_json_nstring(&w, info->boot_partition, sizeof(info->boot_partition));
    agent_json_kv_string(&w, "image_state", agent_image_state_name(info->image_state));
    KV_ARRAY(&w, "last_invalid_partition", info->last_invalid_partition);
    agent_json_key(&w, "last_ota");
    agent_json_write_status(&w, &info->last_ota, err_name);
    agent_json_kv_string(&w, "reset_reason", agent_reset_reason_name(info->reset_reason));
    agent_json_key(&w, "uptime_s");
    agent_json_seconds_from_us(&w, info->uptime_us);
    agent_json_end_object(&w);
    return agent_json_finish(&w);
}

size_t agent_json_error(char *buf, size_t cap, const char *error_name, const char *message)
{
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    agent_json_begin_object(&w);
    agent_json_kv_string(&w, "error", error_name != NULL ? error_name : "UNKNOWN ERROR");
    agent_json_kv_string(&w, "message", message != NULL ? message : "");
    agent_json_end_object(&w);
    return agent_json_finish(&w);
}

size_t agent_json_event(char *buf, size_t cap, const agent_event_t *event,
                        agent_err_name_fn err_name)
{
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    agent_json_write_event(&w, event, err_name);
    return agent_json_finish(&w);
}

size_t agent_json_ota_started(char *buf, size_t cap, const char *ota_id)
{
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    agent_json_begin_object(&w);
    agent_json_kv_string(&w, "ota_id", ota_id);
    agent_json_end_object(&w);
    return agent_json_finish(&w);
}

size_t agent_json_ok(char *buf, size_t cap)
{
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    agent_json_begin_object(&w);
    agent_json_kv_bool(&w, "ok", true);
    agent_json_end_object(&w);
    return agent_json_finish(&w);
}
