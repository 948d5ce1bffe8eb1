/*
 * The agent's private state, shared by its runtime files (agent*.c).
 *
 * Who runs what:
 * - the HTTP server task (esp_https_server) runs the request handlers and the event
 *   stream writes (queued to it with httpd_queue_work), so streams need no task of their
 *   own;
 * - the default event loop task turns ESP_HTTPS_OTA_EVENT and the agent's own events into
 *   ring records, in the order they were posted;
 * - one OTA task exists while an update runs, and none otherwise.
 * `lock` guards the status, the ring and the stream table between them.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "freertos/timers.h"
#include "esp_err.h"
#include "esp_event.h"
#include "esp_http_server.h"
#include "sdkconfig.h"

#include "esp_ota_agent.h"
#include "core/agent_event_ring.h"
#include "core/agent_json.h"
#include "core/agent_names.h"
#include "core/agent_ota_request.h"
#include "core/agent_sse.h"
#include "core/agent_status.h"

/* Images below the eFuse's secure_version are refused before a byte is written. On the
 * linux target (host tests) there is no such Kconfig option: the test layer plays the
 * eFuse, and answers 0 when it emulates a chip without anti-rollback. */
#define AGENT_ANTI_ROLLBACK (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK || CONFIG_IDF_TARGET_LINUX)
#if CONFIG_ESP_OTA_AGENT_PARTIAL_DOWNLOAD
#define AGENT_PARTIAL_DOWNLOAD true
#else
#define AGENT_PARTIAL_DOWNLOAD false
#endif
/* The largest answer: GET /api/v1/info with every string at its longest, fully escaped. */
#define AGENT_RESPONSE_BUFFER_BYTES AGENT_JSON_INFO_MAX
/* An SSE frame: an event's JSON plus its id/event lines. */
#define AGENT_SSE_BUFFER_BYTES AGENT_SSE_EVENT_MAX

/* The agent's private events on the default loop: records for the event ring that only
 * the OTA task knows (the image's descriptor, an error), posted in order with
 * esp_https_ota's own events. Data: agent_event_t (its id is assigned by the ring). */
ESP_EVENT_DECLARE_BASE(ESP_OTA_AGENT_RING_EVENT);
typedef enum {
    AGENT_RING_RECORD,    /* push the attached record into the ring */
    AGENT_RING_JOB,       /* a job begins: its ota_id and size tag esp_https_ota's events */
} agent_ring_event_id_t;

typedef struct {
    char ota_id[13];
    int32_t image_size;
} agent_job_tag_t;

typedef struct {
    httpd_req_t *req;        /* the async request copy; NULL: free slot */
    uint32_t cursor;         /* the last event id sent on this stream */
    int64_t last_write_us;   /* for the keep-alive comment */
    uint32_t opened_seq;     /* the oldest stream is ended first when all slots are taken */
} agent_stream_t;

typedef struct {
    SemaphoreHandle_t lock;
    httpd_handle_t server;
    uint16_t port;
    bool running;
    int64_t boot_time_us;    /* esp_timer's value at boot: 0 on a chip (see agent.c) */

    /* identity and configuration */
    char *secret;            /* NULL or empty: every request is refused */
    char *cert_pem;          /* owned copies (NVS or config) kept for the server's life */
    char *key_pem;
    char project[32];
    esp_ota_agent_health_check_t health_check;
    void *health_check_ctx;
    bool mdns_started;

    /* the current or last job (GET /api/v1/ota) */
    agent_ota_status_t status;
    TaskHandle_t ota_task;
    agent_ota_request_t request;       /* owned by the OTA task while it runs */
    volatile bool abort_requested;
    volatile bool stalled;             /* set by the watchdog before it cuts the socket */
    int ota_socket;                    /* the download's socket, -1 when unknown */
    int64_t last_progress_us;          /* for the stall watchdog */
    uint32_t last_progress_bytes;
    TimerHandle_t watchdog;

    /* events (filled by the event loop task) */
    agent_event_ring_t ring;
    agent_event_t *ring_storage;
    agent_job_tag_t job_tag;           /* the job esp_https_ota's events belong to */
    int64_t last_progress_event_us;
    uint32_t id_reserved_until;        /* ids below this are promised to NVS */
    SemaphoreHandle_t ring_flushed;    /* given when the reboot record is in the ring */

    /* event streams (touched in the server task, under lock) */
    agent_stream_t streams[CONFIG_ESP_OTA_AGENT_MAX_EVENT_STREAMS];
    uint32_t stream_seq;
    volatile bool pump_queued;
    TimerHandle_t keepalive;
} agent_t;

extern agent_t g_agent;

/* agent_store.c: NVS */
esp_err_t agent_store_open_identity(const esp_ota_agent_config_t *config);
uint16_t agent_store_port(void);
void agent_store_load_status(agent_ota_status_t *status);
void agent_store_save_status(const agent_ota_status_t *status);
uint32_t agent_store_first_event_id(void);
uint32_t agent_store_reserve_event_ids(uint32_t next_id);

/* agent_crypto.c: everything mbedtls (one file, for the day mbedtls 4 arrives) */
esp_err_t agent_crypto_make_certificate(const char *common_name, char **cert_pem, char **key_pem);
bool agent_crypto_secret_matches(const char *authorization, const char *secret);
bool agent_crypto_certificate_usable(const char *cert_pem);
esp_err_t agent_crypto_partition_sha256(const void *partition, uint32_t length, char hex[65]);
void agent_crypto_random_hex(char *out, size_t hex_digits);

/* agent_events.c: the ring, the streams */
esp_err_t agent_events_start(void);
void agent_events_stop(void);
void agent_events_post(const agent_event_t *record);
void agent_events_begin_job(const char *ota_id, int32_t image_size);
esp_err_t agent_events_open_stream(httpd_req_t *req);
void agent_events_flush(uint32_t timeout_ms);
size_t agent_events_open_streams(void);

/* agent_ota.c: the update */
esp_err_t agent_ota_start(agent_ota_request_t *request, char ota_id[13], char *message, size_t message_cap);
esp_err_t agent_ota_abort(void);
void agent_ota_stop(void);
void agent_restart_soon(void);

/* agent_api.c: the HTTP API */
esp_err_t agent_api_register(httpd_handle_t server);

/* agent.c */
void agent_set_status(const agent_ota_status_t *status, bool persist);
void agent_get_status(agent_ota_status_t *status);
