/*
 * The OTA job status (GET /api/v1/ota, and "last_ota" of GET /api/v1/info): the record
 * the agent keeps in NVS so that the outcome of a job survives the reboot it ends with.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
#include "agent_names.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Length of an ota_id: 12 lowercase hex digits. */
#define AGENT_OTA_ID_LEN 12

typedef struct {
    agent_ota_state_t state;
    char ota_id[AGENT_OTA_ID_LEN + 1];  /**< 12 lowercase hex digits; "" = null */
    char target_version[32];            /**< the request's version; "" = null */
    uint32_t bytes_written;
    int32_t image_size;                 /**< -1 (any negative) = null */
    esp_err_t error;                    /**< ESP_OK = null */
    char message[128];                  /**< "" = null */
} agent_ota_status_t;

/** The status of a device that never ran a job: idle, everything null, 0 bytes. */
void agent_ota_status_idle(agent_ota_status_t *status);

/** connecting, downloading, verifying or rebooting: a new job is refused (busy). */
bool agent_ota_status_in_progress(const agent_ota_status_t *status);

/** connecting or downloading: POST /api/v1/ota/abort can stop it. */
bool agent_ota_status_abortable(const agent_ota_status_t *status);

/**
 * What the firmware reads at boot (simulator/firmware_app.py _status_after_reset): a job that
 * was rebooting has succeeded; one still connecting, downloading or verifying was cut
 * by the reset and has failed (ESP_FAIL, "the OTA was interrupted by a reset (<reason>)");
 * any other status is kept. `reset_reason_name` is agent_reset_reason_name()'s.
 */
void agent_ota_status_after_reset(agent_ota_status_t *status, const char *reset_reason_name);

/*
 * The NVS record (nvs_set_blob): a fixed little-endian layout, independent of the
 * compiler's struct layout, closed by a CRC-32 so that any damaged byte is noticed.
 *
 *   0   u8      format (AGENT_OTA_STATUS_FORMAT)
 *   1   u8      state
 *   2   13 B    ota_id, NUL-padded
 *   15  32 B    target_version, NUL-padded
 *   47  u32     bytes_written
 *   51  i32     image_size
 *   55  i32     error
 *   59  128 B   message, NUL-padded
 *   187 u32     CRC-32 (IEEE 802.3) of bytes 0..186
 */
#define AGENT_OTA_STATUS_FORMAT 1
#define AGENT_OTA_STATUS_PACKED_SIZE 191

/**
 * Write `status` as a record into `buf`.
 *
 * @return AGENT_OTA_STATUS_PACKED_SIZE; 0 (nothing usable written) if `cap` is smaller or
 *         `status` is not a valid status (state out of range, a string that fills its
 *         array without a NUL, an ota_id that is neither "" nor 12 lowercase hex digits).
 */
size_t agent_ota_status_pack(const agent_ota_status_t *status, uint8_t *buf, size_t cap);

/**
 * Read a record written by agent_ota_status_pack.
 *
 * @return true with `*out` set; false (and `*out` idle) for anything else: another length
 *         or format, a wrong CRC, a state out of range, a string without its NUL or with
 *         bytes after it, an ota_id that is not 12 lowercase hex digits. The caller then
 *         treats the device as idle.
 */
bool agent_ota_status_unpack(const uint8_t *buf, size_t len, agent_ota_status_t *out);

/** CRC-32 (IEEE 802.3, reflected, as zlib's crc32()) of `len` bytes. */
uint32_t agent_crc32(const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif
