/*
 * ESP OTA agent: lets Home Assistant's ESP OTA integration update this firmware.
 *
 * It serves the device API of docs/protocol.md (v1) over HTTPS with esp_https_server,
 * pulls images with esp_https_ota, keeps the last update's result in NVS, streams
 * server-sent events and advertises _esp-ota._tcp over mDNS.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "esp_err.h"
#include "esp_event.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The NVS namespace the agent keeps its state in (secret, certificate, last update). */
#define ESP_OTA_AGENT_NVS_NAMESPACE "esp_ota"

/**
 * The app's own check, run when Home Assistant asks the agent to confirm a new firmware
 * (POST /api/v1/ota/confirm) while it is still pending verification.
 *
 * Return ESP_OK when the app works (sensors read, peripherals answer, the cloud is
 * reachable...). Any other value refuses the confirmation: the image stays
 * PENDING_VERIFY, Home Assistant reports the failure, and the bootloader rolls it back
 * at the next reboot. Runs in the HTTP server's task: keep it short (a few seconds).
 */
typedef esp_err_t (*esp_ota_agent_health_check_t)(void *ctx);

/** How the agent runs. Start from ESP_OTA_AGENT_CONFIG_DEFAULT(). */
typedef struct {
    /** The device secret Home Assistant sends as a Bearer token. NULL: read the string
     *  "secret" from NVS (namespace ESP_OTA_AGENT_NVS_NAMESPACE), provisioned at the
     *  factory. A device without a secret refuses every request. */
    const char *secret;
    /** The device's TLS certificate and private key (PEM, NUL-terminated). Both NULL: an
     *  ECDSA P-256 self-signed pair is generated at first boot and kept in NVS. */
    const char *cert_pem;
    const char *key_pem;
    /** The project name new images must carry. NULL: the running app's own
     *  (esp_app_get_description()->project_name). */
    const char *project_name;
    /** The HTTPS port. 0: the u16 "port" in NVS if provisioned, else
     *  CONFIG_ESP_OTA_AGENT_PORT. */
    uint16_t port;
    /** Advertise _esp-ota._tcp with mDNS (mdns_init() is called if the app did not). */
    bool mdns;
    /** Optional health check run before a new firmware is confirmed; NULL: none. */
    esp_ota_agent_health_check_t health_check;
    void *health_check_ctx;
} esp_ota_agent_config_t;

#define ESP_OTA_AGENT_CONFIG_DEFAULT() {  \
        .secret = NULL,                    \
        .cert_pem = NULL,                  \
        .key_pem = NULL,                   \
        .project_name = NULL,              \
        .port = 0,                         \
        .mdns = true,                      \
        .health_check = NULL,              \
        .health_check_ctx = NULL,          \
    }

/** Events the agent posts on the default event loop (esp_event_loop_create_default()). */
ESP_EVENT_DECLARE_BASE(ESP_OTA_AGENT_EVENT);

typedef enum {
    /** An update was accepted and its download task started. Data: the ota_id (char[]). */
    ESP_OTA_AGENT_EVENT_UPDATE_STARTED,
    /** The update failed or was aborted; the boot partition is unchanged. Data: esp_err_t. */
    ESP_OTA_AGENT_EVENT_UPDATE_FAILED,
    /** The new image is verified and set to boot; the device restarts in about a second.
     *  Stop what must not be cut off. No data. */
    ESP_OTA_AGENT_EVENT_REBOOTING,
    /** The running image was confirmed (now VALID). No data. */
    ESP_OTA_AGENT_EVENT_CONFIRMED,
    /** A confirmation was refused by the app's health check. Data: esp_err_t. */
    ESP_OTA_AGENT_EVENT_HEALTH_CHECK_FAILED,
    /** A rollback was requested; the device restarts into the previous image. No data. */
    ESP_OTA_AGENT_EVENT_ROLLING_BACK,
} esp_ota_agent_event_t;

/**
 * Start the agent: read or create its secret and certificate, start the HTTPS server,
 * advertise it. Needs nvs_flash_init(), esp_netif_init() and
 * esp_event_loop_create_default() first.
 *
 * @return ESP_OK; ESP_ERR_INVALID_STATE if it runs already; ESP_ERR_INVALID_ARG for a
 *         certificate without its key; ESP_ERR_NO_MEM; or the error of the ESP-IDF call
 *         that failed (NVS, mbedtls, httpd_ssl_start, mdns).
 */
esp_err_t esp_ota_agent_start(const esp_ota_agent_config_t *config);

/**
 * Stop the agent: end the event streams, stop the server and the mDNS service. An
 * update in progress is aborted first (its boot partition unchanged).
 *
 * @return ESP_OK; ESP_ERR_INVALID_STATE if it does not run.
 */
esp_err_t esp_ota_agent_stop(void);

#ifdef __cplusplus
}
#endif
