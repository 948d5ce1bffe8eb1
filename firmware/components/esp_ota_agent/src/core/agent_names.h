/*
 * The enumerations of the device protocol (docs/protocol.md) and the names the protocol
 * gives them on the wire: OTA job states, event types, image states, chips and reset
 * reasons.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Where the OTA job is (GET /api/v1/ota "state"). */
typedef enum {
    AGENT_OTA_IDLE,         /**< no job since the flash was erased */
    AGENT_OTA_CONNECTING,   /**< esp_https_ota_begin: TLS handshake, HEAD, first GET */
    AGENT_OTA_DOWNLOADING,  /**< esp_https_ota_perform loop: writing the passive slot */
    AGENT_OTA_VERIFYING,    /**< esp_https_ota_finish -> esp_ota_end: whole-image checks */
    AGENT_OTA_REBOOTING,    /**< boot partition switched; esp_restart() pending */
    AGENT_OTA_SUCCEEDED,    /**< the last job switched the boot partition and rebooted */
    AGENT_OTA_FAILED,       /**< the last job ended with an error; boot partition unchanged */
    AGENT_OTA_ABORTED,      /**< the last job was aborted on request */
} agent_ota_state_t;

#define AGENT_OTA_STATE_COUNT (AGENT_OTA_ABORTED + 1)

/** Event types of GET /api/v1/events: esp_https_ota_event_t plus the agent's reboot. */
typedef enum {
    AGENT_EVENT_START,
    AGENT_EVENT_CONNECTED,
    AGENT_EVENT_GET_IMG_DESC,
    AGENT_EVENT_VERIFY_CHIP_ID,
    AGENT_EVENT_VERIFY_CHIP_REVISION,
    AGENT_EVENT_WRITE_FLASH,
    AGENT_EVENT_UPDATE_BOOT_PARTITION,
    AGENT_EVENT_FINISH,
    AGENT_EVENT_ABORT,
    AGENT_EVENT_REBOOT,
} agent_event_type_t;

#define AGENT_EVENT_TYPE_COUNT (AGENT_EVENT_REBOOT + 1)

/** "idle", "connecting", ...; NULL for a value outside the enumeration. */
const char *agent_ota_state_name(agent_ota_state_t state);

/** "start", "connected", ..., "reboot"; NULL for a value outside the enumeration. */
const char *agent_event_type_name(agent_event_type_t type);

/** esp_ota_img_states_t -> "new", "pending_verify", "valid", "invalid", "aborted";
 *  "undefined" for ESP_OTA_IMG_UNDEFINED and anything else. */
const char *agent_image_state_name(uint32_t esp_ota_img_state);

/** esp_chip_model_t -> "esp32", "esp32s3", ... as ESP-IDF and esptool spell them;
 *  "unknown" for a model this list does not know. */
const char *agent_chip_name(int esp_chip_model);

/** esp_reset_reason_t -> "ESP_RST_POWERON", "ESP_RST_SW", ... (ESP-IDF v5.5's list);
 *  "ESP_RST_UNKNOWN" for ESP_RST_UNKNOWN and any value it does not know. */
const char *agent_reset_reason_name(int esp_reset_reason);

#ifdef __cplusplus
}
#endif
