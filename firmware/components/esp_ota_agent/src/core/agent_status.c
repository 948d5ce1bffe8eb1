/*
 * OTA job status: predicates, the reading after a reset, and the NVS record.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_status.h"

#include <stdio.h>
#include <string.h>

/* Offsets of the packed record (see agent_status.h). */
enum {
    OFF_FORMAT = 0,
    OFF_STATE = 1,
    OFF_OTA_ID = 2,
    OFF_TARGET_VERSION = OFF_OTA_ID + AGENT_OTA_ID_LEN + 1,
    OFF_BYTES_WRITTEN = OFF_TARGET_VERSION + 32,
    OFF_IMAGE_SIZE = OFF_BYTES_WRITTEN + 4,
    OFF_ERROR = OFF_IMAGE_SIZE + 4,
    OFF_MESSAGE = OFF_ERROR + 4,
    OFF_CRC = OFF_MESSAGE + 128,
    PACKED_SIZE = OFF_CRC + 4,
};
_Static_assert(PACKED_SIZE == AGENT_OTA_STATUS_PACKED_SIZE, "record layout changed");
_Static_assert(sizeof(((agent_ota_status_t *)0)->target_version) == 32, "record layout");
_Static_assert(sizeof(((agent_ota_status_t *)0)->message) == 128, "record layout");
_Static_assert(sizeof(esp_err_t) == 4, "error is stored as 32 bits");

void agent_ota_status_idle(agent_ota_status_t *status)
{
    memset(status, 0, sizeof(*status));
    status->state = AGENT_OTA_IDLE;
    status->image_size = -1;
    status->error = ESP_OK;
}

bool agent_ota_status_in_progress(const agent_ota_status_t *status)
{
    switch (status->state) {
    case AGENT_OTA_CONNECTING:
    case AGENT_OTA_DOWNLOADING:
    case AGENT_OTA_VERIFYING:
    case AGENT_OTA_REBOOTING:
        return true;
    default:
        return false;
    }
}

bool agent_ota_status_abortable(const agent_ota_status_t *status)
{
    return status->state == AGENT_OTA_CONNECTING || status->state == AGENT_OTA_DOWNLOADING;
}

void agent_ota_status_after_reset(agent_ota_status_t *status, const char *reset_reason_name)
{
    if (status->state == AGENT_OTA_REBOOTING) {
        status->state = AGENT_OTA_SUCCEEDED;
    } else if (agent_ota_status_in_progress(status)) {
        status->state = AGENT_OTA_FAILED;
        status->error = ESP_FAIL;
        snprintf(status->message, sizeof(status->message),
                 "the OTA was interrupted by a reset (%s)",
                 reset_reason_name != NULL ? reset_reason_name : "ESP_RST_UNKNOWN");
    }
}

uint32_t agent_crc32(const uint8_t *data, size_t len)
{
    /* Bitwise: 191 bytes once per job do not need a 1 KiB table. */
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Two's complement without implementation-defined conversions. */
static int32_t u32_to_i32(uint32_t v)
{
    return v <= INT32_MAX ? (int32_t)v : (int32_t)(v - 0x80000000u) - INT32_MAX - 1;
}

static bool ota_id_valid(const char *id, size_t array_size)
{
    const size_t len = strnlen(id, array_size);
    if (len == 0) {
        return true;
    }
    if (len != AGENT_OTA_ID_LEN) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        const char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* A string field: NUL-terminated inside its array (the struct side). */
static bool terminated(const char *s, size_t array_size)
{
    return strnlen(s, array_size) < array_size;
}

/* A string field of a record: a NUL inside the field, and only NULs after it, so that
 * every valid status has exactly one record (what the CRC protects is then canonical). */
static bool field_valid(const uint8_t *field, size_t size)
{
    const uint8_t *nul = memchr(field, 0, size);
    if (nul == NULL) {
        return false;
    }
    for (const uint8_t *p = nul; p < field + size; p++) {
        if (*p != 0) {
            return false;
        }
    }
    return true;
}

static void put_string(uint8_t *field, size_t size, const char *s)
{
    const size_t len = strnlen(s, size);
    memset(field, 0, size);
    memcpy(field, s, len);
}

size_t agent_ota_status_pack(const agent_ota_status_t *status, uint8_t *buf, size_t cap)
{
    if (cap < PACKED_SIZE || (unsigned)status->state >= AGENT_OTA_STATE_COUNT ||
        !terminated(status->ota_id, sizeof(status->ota_id)) ||
        !ota_id_valid(status->ota_id, sizeof(status->ota_id)) ||
        !terminated(status->target_version, sizeof(status->target_version)) ||
        !terminated(status->message, sizeof(status->message))) {
        return 0;
    }
    buf[OFF_FORMAT] = AGENT_OTA_STATUS_FORMAT;
    buf[OFF_STATE] = (uint8_t)status->state;
    put_string(buf + OFF_OTA_ID, sizeof(status->ota_id), status->ota_id);
    put_string(buf + OFF_TARGET_VERSION, sizeof(status->target_version), status->target_version);
    put_u32(buf + OFF_BYTES_WRITTEN, status->bytes_written);
    /* Any negative size is null; store the one null spelling. */
    put_u32(buf + OFF_IMAGE_SIZE, (uint32_t)(status->image_size < 0 ? -1 : status->image_size));
    put_u32(buf + OFF_ERROR, (uint32_t)status->error);
    put_string(buf + OFF_MESSAGE, sizeof(status->message), status->message);
    put_u32(buf + OFF_CRC, agent_crc32(buf, OFF_CRC));
    return PACKED_SIZE;
}

bool agent_ota_status_unpack(const uint8_t *buf, size_t len, agent_ota_status_t *out)
{
    agent_ota_status_idle(out);
    if (buf == NULL || len != PACKED_SIZE || buf[OFF_FORMAT] != AGENT_OTA_STATUS_FORMAT ||
        get_u32(buf + OFF_CRC) != agent_crc32(buf, OFF_CRC) ||
        buf[OFF_STATE] >= AGENT_OTA_STATE_COUNT ||
        !field_valid(buf + OFF_OTA_ID, sizeof(out->ota_id)) ||
        !field_valid(buf + OFF_TARGET_VERSION, sizeof(out->target_version)) ||
        !field_valid(buf + OFF_MESSAGE, sizeof(out->message))) {
        return false;
    }
    const int32_t image_size = u32_to_i32(get_u32(buf + OFF_IMAGE_SIZE));
    if (image_size < -1) {
        return false;
    }
    agent_ota_status_t status;
    agent_ota_status_idle(&status);
    status.state = (agent_ota_state_t)buf[OFF_STATE];
    memcpy(status.ota_id, buf + OFF_OTA_ID, sizeof(status.ota_id));
    memcpy(status.target_version, buf + OFF_TARGET_VERSION, sizeof(status.target_version));
    status.bytes_written = get_u32(buf + OFF_BYTES_WRITTEN);
    status.image_size = image_size;
    status.error = (esp_err_t)u32_to_i32(get_u32(buf + OFF_ERROR));
    memcpy(status.message, buf + OFF_MESSAGE, sizeof(status.message));
    if (!ota_id_valid(status.ota_id, sizeof(status.ota_id))) {
        return false;
    }
    *out = status;
    return true;
}
