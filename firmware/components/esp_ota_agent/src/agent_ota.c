/*
 * The update: one FreeRTOS task per job, alive only while the job runs, doing what
 * Espressif's advanced_https_ota example does (esp_https_ota_begin, _get_img_desc and the
 * header checks, _perform until done, _finish), plus what docs/protocol.md asks of it:
 * the request's size and SHA-256 checked on the staged image before the boot partition
 * changes, resumption of a broken download, a watchdog for a download that stalls, an
 * abort on request, the result kept in NVS across the reboot.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include "esp_app_desc.h"
#include "esp_efuse.h"
#include "esp_http_client.h"
#include "esp_https_ota.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "esp_timer.h"

#include "agent_priv.h"

static const char *TAG = "esp_ota_agent";

/* How long a restart waits for the event streams to send what is queued. */
#define FLUSH_BEFORE_RESTART_MS 1000
/* esp_https_ota reads this much before anything else (esp_https_ota_get_img_desc). */
#define IMAGE_HEADER_SIZE 1024

/* The job's client, from http_client_init_cb; NULL once esp_https_ota freed it (a failed
 * begin, an abort, the finish). */
static esp_http_client_handle_t s_client;
/* The HTTP status of the download's last answer (0: none yet), kept by the client's
 * event handler: a failed esp_https_ota_begin frees the client before it can be asked. */
static int s_http_status;

static esp_err_t on_http_event(esp_http_client_event_t *event)
{
    /* The status is parsed once the headers are complete, and esp_https_ota closes the
     * connection (DISCONNECTED) of an answer it refuses before it frees the client. */
    if (event->event_id == HTTP_EVENT_DISCONNECTED || event->event_id == HTTP_EVENT_ON_DATA
        || event->event_id == HTTP_EVENT_ON_FINISH) {
        int status = esp_http_client_get_status_code(event->client);
        if (status > 0) {
            s_http_status = status;
        }
    }
    return ESP_OK;
}

typedef struct {
    esp_err_t error;
    bool transport;  /* the connection broke: worth resuming */
    char message[sizeof(((agent_ota_status_t *)0)->message)];
} job_result_t;

static void fail(job_result_t *result, esp_err_t error, bool transport, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(job_result_t *result, esp_err_t error, bool transport, const char *format, ...)
{
    result->error = error;
    result->transport = transport;
    va_list args;
    va_start(args, format);
    vsnprintf(result->message, sizeof(result->message), format, args);
    va_end(args);
}

static void set_state(agent_ota_state_t state)
{
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    g_agent.status.state = state;
    agent_ota_status_t copy = g_agent.status;
    xSemaphoreGive(g_agent.lock);
    agent_store_save_status(&copy);
}

static void note_progress(uint32_t bytes)
{
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    if (bytes > g_agent.last_progress_bytes) {
        g_agent.last_progress_bytes = bytes;
        g_agent.last_progress_us = esp_timer_get_time();
    }
    g_agent.status.bytes_written = bytes;
    xSemaphoreGive(g_agent.lock);
}

static void set_socket(int socket)
{
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    g_agent.ota_socket = socket;
    xSemaphoreGive(g_agent.lock);
}

/* Unblock a download stuck in a read: esp_https_ota retries read timeouts for ever. The
 * socket is only shut down, never closed, so esp_http_client still owns its descriptor. */
static void cut_download_locked(void)
{
    if (g_agent.ota_socket >= 0) {
        shutdown(g_agent.ota_socket, SHUT_RDWR);
    }
}

static void on_watchdog(TimerHandle_t timer)
{
    (void)timer;
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    int64_t quiet_us = esp_timer_get_time() - g_agent.last_progress_us;
    if (g_agent.ota_task != NULL && !g_agent.stalled
        && quiet_us >= (int64_t)CONFIG_ESP_OTA_AGENT_STALL_TIMEOUT_MS * 1000) {
        ESP_LOGW(TAG, "no data for %" PRId64 " s: the download is cut", quiet_us / 1000000);
        g_agent.stalled = true;
        cut_download_locked();
    }
    xSemaphoreGive(g_agent.lock);
}

static esp_err_t on_http_client_init(esp_http_client_handle_t client)
{
    s_client = client;
    const agent_ota_request_t *request = &g_agent.request;
    for (size_t i = 0; i < request->header_count; i++) {
        esp_err_t err = esp_http_client_set_header(client, request->headers[i].name,
                                                   request->headers[i].value);
        if (err != ESP_OK) {
            return err;
        }
    }
    return ESP_OK;
}

static void post_record(agent_event_type_t type, esp_err_t error, const esp_app_desc_t *desc)
{
    agent_event_t record;
    agent_event_init(&record, type);
    record.error = error;
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    memcpy(record.ota_id, g_agent.status.ota_id, sizeof(record.ota_id));
    xSemaphoreGive(g_agent.lock);
    if (desc != NULL) {
        snprintf(record.project, sizeof(record.project), "%.31s", desc->project_name);
        snprintf(record.version, sizeof(record.version), "%.31s", desc->version);
    }
    agent_events_post(&record);
}

/* advanced_https_ota's validate_image_header, plus this agent's own rules. */
static bool image_header_acceptable(const esp_app_desc_t *image, const agent_ota_request_t *request,
                                    job_result_t *result)
{
    const esp_app_desc_t *running = esp_app_get_description();
    if (strncmp(image->project_name, g_agent.project, sizeof(image->project_name)) != 0) {
        fail(result, ESP_FAIL, false,
             "project name '%.31s' of the new image is not the running '%s': refusing to "
             "install another product's firmware", image->project_name, g_agent.project);
        return false;
    }
    if (strncmp(image->version, request->version, sizeof(image->version)) != 0) {
        fail(result, ESP_FAIL, false, "the image's version '%.31s' is not the requested '%s'",
             image->version, request->version);
        return false;
    }
    if (strncmp(image->version, running->version, sizeof(image->version)) == 0) {
        fail(result, ESP_FAIL, false,
             "Current running version is the same as a new. We will not continue the update.");
        return false;
    }
#if AGENT_ANTI_ROLLBACK
    uint32_t efuse_version = esp_efuse_read_secure_version();
    if (image->secure_version < efuse_version) {
        fail(result, ESP_FAIL, false,
             "New firmware security version is less than eFuse programmed, %" PRIu32 " < %" PRIu32,
             image->secure_version, efuse_version);
        return false;
    }
#endif
    return true;
}

/* After esp_https_ota_begin: the descriptor and its checks, the download, then the
 * request's own checks of the staged bytes. ESP_OK leaves the handle for _finish. */
static void download(esp_https_ota_handle_t handle, uint32_t offset, job_result_t *result)
{
    const agent_ota_request_t *request = &g_agent.request;
    esp_app_desc_t image;
    esp_err_t err = esp_https_ota_get_img_desc(handle, &image);
    post_record(AGENT_EVENT_GET_IMG_DESC, ESP_OK, err == ESP_OK ? &image : NULL);
    if (err != ESP_OK) {
        /* A whole response shorter than the header is a short file, not a broken link. */
        bool complete = s_client != NULL && esp_http_client_is_complete_data_received(s_client);
        fail(result, err, !complete, "Complete headers were not received");
        return;
    }
    if (!image_header_acceptable(&image, request, result)) {
        return;
    }
    int announced = esp_https_ota_get_image_size(handle);
    int64_t expected = AGENT_PARTIAL_DOWNLOAD ? request->size : (int64_t)request->size - offset;
    if (announced >= 0 && announced != expected) {
        fail(result, ESP_ERR_OTA_VALIDATE_FAILED, false,
             "the server announces %" PRId64 " bytes, the request says %" PRIu32,
             (int64_t)announced + (AGENT_PARTIAL_DOWNLOAD ? 0 : offset), request->size);
        return;
    }

    while (true) {
        err = esp_https_ota_perform(handle);
        int read = esp_https_ota_get_image_len_read(handle);
        if (read > 0) {
            note_progress((uint32_t)read);
        }
        if (s_client != NULL) {
            set_socket(esp_http_client_get_socket(s_client));
        }
        if (err != ESP_ERR_HTTPS_OTA_IN_PROGRESS || g_agent.abort_requested || g_agent.stalled) {
            break;
        }
    }
    if (g_agent.abort_requested || g_agent.stalled) {
        fail(result, ESP_FAIL, false, "stopped");
        return;
    }
    if (err != ESP_OK) {
        /* ESP_FAIL from perform is the connection (closed early, a read error); anything
         * else is esp_ota_write's verdict on the bytes. */
        fail(result, err, err == ESP_FAIL, err == ESP_FAIL
             ? "Connection closed before complete data was received!"
             : "esp_https_ota_perform failed");
        return;
    }
    if (!esp_https_ota_is_complete_data_received(handle)) {
        fail(result, ESP_FAIL, false, "Complete data was not received.");
        return;
    }

    set_state(AGENT_OTA_VERIFYING);
    uint32_t received = (uint32_t)esp_https_ota_get_image_len_read(handle);
    if (received != request->size) {
        fail(result, ESP_ERR_OTA_VALIDATE_FAILED, false,
             "received %" PRIu32 " bytes, the request says %" PRIu32, received, request->size);
        return;
    }
    const esp_partition_t *staging = esp_ota_get_next_update_partition(NULL);
    char sha256[65];
    err = staging != NULL ? agent_crypto_partition_sha256(staging, received, sha256) : ESP_FAIL;
    if (err != ESP_OK) {
        fail(result, err, false, "the staged image could not be read back");
        return;
    }
    if (strcmp(sha256, request->sha256) != 0) {
        fail(result, ESP_ERR_OTA_VALIDATE_FAILED, false,
             "SHA-256 of the staged image is %s, the request says %s", sha256, request->sha256);
        return;
    }
    result->error = ESP_OK;
}

static const char *describe_begin_failure(esp_err_t err)
{
    switch (err) {
    case ESP_ERR_HTTP_CONNECT:
        return "Failed to open HTTP connection (TCP or TLS, or a certificate other than cert_pem)";
    case ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE:
        return "Requested range is incorrect (416)";
    case ESP_ERR_HTTP_NOT_MODIFIED:
        return "OTA image not modified since last request (304)";
    case ESP_ERR_NOT_SUPPORTED:
        return "the server asks for an authentication method this device cannot answer";
    default:
        break;
    }
    if (s_http_status == 404 || s_http_status == 403) {
        return s_http_status == 404 ? "File not found(404)" : "File not found(403)";
    }
    if (s_http_status >= 500) {
        return "Server error";
    }
    if (s_http_status >= 400) {
        return "Client error";
    }
    return "Failed to establish HTTP connection";
}

static void end_job(const agent_ota_status_t *final)
{
    agent_set_status(final, true);
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    g_agent.ota_task = NULL;
    g_agent.ota_socket = -1;
    xSemaphoreGive(g_agent.lock);
    if (g_agent.watchdog != NULL) {
        xTimerStop(g_agent.watchdog, portMAX_DELAY);
    }
    agent_ota_request_free(&g_agent.request);
}

static void restart_after_flush(void)
{
    /* The reboot record reaches the ring behind every earlier event; the streams then
     * send what is queued and end, and the chip restarts. */
    xSemaphoreTake(g_agent.ring_flushed, pdMS_TO_TICKS(FLUSH_BEFORE_RESTART_MS));
    agent_events_flush(FLUSH_BEFORE_RESTART_MS);
    ESP_LOGI(TAG, "restarting");
    esp_restart();
}

/* The request that started the update has its answer; its TLS session closes in a moment.
 * Waiting for that before the download's own handshake keeps the two from holding RAM
 * at the same time (each takes about 30 KB). Bounded: a client that keeps other
 * connections open delays the download by WAIT_FOR_SESSIONS_MS at most. */
#define WAIT_FOR_SESSIONS_MS 500

static void wait_for_api_sessions_to_close(void)
{
    int fds[CONFIG_ESP_OTA_AGENT_MAX_SESSIONS];
    for (int waited = 0; waited < WAIT_FOR_SESSIONS_MS; waited += 20) {
        size_t count = sizeof(fds) / sizeof(fds[0]);
        if (httpd_get_client_list(g_agent.server, &count, fds) != ESP_OK
            || count <= agent_events_open_streams()) {
            return;
        }
        vTaskDelay(pdMS_TO_TICKS(20));
    }
}

static void ota_task(void *arg)
{
    (void)arg;
    wait_for_api_sessions_to_close();
    const agent_ota_request_t *request = &g_agent.request;
    agent_ota_status_t status;
    agent_get_status(&status);
    agent_events_begin_job(status.ota_id, (int32_t)request->size);

    job_result_t result = {.error = ESP_OK};
    uint32_t offset = 0;
    int attempts = 0;
    while (true) {
        esp_http_client_config_t http = {
            .url = request->url,
            .cert_pem = request->cert_pem,
            .timeout_ms = CONFIG_ESP_OTA_AGENT_HTTP_TIMEOUT_MS,
            .keep_alive_enable = true,
            .buffer_size = CONFIG_ESP_OTA_AGENT_OTA_BUFFER_SIZE,
            .event_handler = on_http_event,
        };
        esp_https_ota_config_t config = {
            .http_config = &http,
            .http_client_init_cb = on_http_client_init,
            .partial_http_download = AGENT_PARTIAL_DOWNLOAD,
            .ota_resumption = true,
            .ota_image_bytes_written = offset,
        };
        s_client = NULL;
        s_http_status = 0;
        esp_https_ota_handle_t handle = NULL;
        esp_err_t err = esp_https_ota_begin(&config, &handle);
        if (err != ESP_OK || handle == NULL) {
            s_client = NULL;  /* freed by esp_https_ota_begin */
            /* Failing to connect at all is final; esp_https_ota posts ABORT without a
             * handle too. */
            fail(&result, err != ESP_OK ? err : ESP_FAIL, false, "%s", describe_begin_failure(err));
            post_record(AGENT_EVENT_ABORT, result.error, NULL);
            break;
        }
        if (s_client != NULL) {
            set_socket(esp_http_client_get_socket(s_client));
        }
        set_state(AGENT_OTA_DOWNLOADING);
        result.error = ESP_OK;
        download(handle, offset, &result);
        if (result.error == ESP_OK && !g_agent.abort_requested) {
            err = esp_https_ota_finish(handle);
            s_client = NULL;  /* freed by esp_https_ota_finish */
            post_record(AGENT_EVENT_FINISH, err, NULL);
            if (err != ESP_OK) {
                fail(&result, err, false, err == ESP_ERR_OTA_VALIDATE_FAILED
                     ? "esp_ota_end: the image is not valid (header, checksum or SHA-256)"
                     : "setting the boot partition failed");
            }
            break;
        }
        uint32_t written = (uint32_t)esp_https_ota_get_image_len_read(handle);
        set_socket(-1);
        if (g_agent.stalled) {
            fail(&result, ESP_ERR_HTTP_READ_TIMEOUT, false,
                 "no data for %d s: the firmware gives up", CONFIG_ESP_OTA_AGENT_STALL_TIMEOUT_MS / 1000);
        }
        post_record(AGENT_EVENT_ABORT, g_agent.abort_requested ? ESP_OK : result.error, NULL);
        esp_https_ota_abort(handle);
        s_client = NULL;  /* freed by esp_https_ota_abort */
        if (g_agent.abort_requested || !result.transport
            || attempts >= CONFIG_ESP_OTA_AGENT_RESUME_ATTEMPTS) {
            break;
        }
        attempts++;
        /* esp_https_ota resumes only from at least its header; whole KiB, as the
         * advanced_https_ota example keeps it. */
        offset = written >= IMAGE_HEADER_SIZE ? written / 1024 * 1024 : 0;
        ESP_LOGW(TAG, "download broken at %" PRIu32 " bytes: resuming from %" PRIu32 " (attempt %d)",
                 written, offset, attempts);
        set_state(AGENT_OTA_CONNECTING);
    }

    agent_get_status(&status);
    if (g_agent.abort_requested) {
        status.state = AGENT_OTA_ABORTED;
        status.error = ESP_OK;
        snprintf(status.message, sizeof(status.message), "aborted on request");
    } else if (result.error != ESP_OK) {
        status.state = AGENT_OTA_FAILED;
        status.error = result.error;
        snprintf(status.message, sizeof(status.message), "%s", result.message);
        ESP_LOGW(TAG, "update %s failed: %s (%s)", status.ota_id, esp_err_to_name(result.error),
                 result.message);
    } else {
        status.state = AGENT_OTA_REBOOTING;
        status.bytes_written = request->size;
    }
    bool succeeded = status.state == AGENT_OTA_REBOOTING;
    char ota_id[sizeof(status.ota_id)];
    memcpy(ota_id, status.ota_id, sizeof(ota_id));
    end_job(&status);

    if (!succeeded) {
        esp_err_t error = status.error;
        esp_event_post(ESP_OTA_AGENT_EVENT, ESP_OTA_AGENT_EVENT_UPDATE_FAILED, &error, sizeof(error), 0);
        vTaskDelete(NULL);
        return;
    }
    ESP_LOGI(TAG, "update %s verified and set to boot", ota_id);
    agent_event_t reboot;
    agent_event_init(&reboot, AGENT_EVENT_REBOOT);
    memcpy(reboot.ota_id, ota_id, sizeof(reboot.ota_id));
    agent_events_post(&reboot);
    esp_event_post(ESP_OTA_AGENT_EVENT, ESP_OTA_AGENT_EVENT_REBOOTING, NULL, 0, 0);
    restart_after_flush();
}

esp_err_t agent_ota_start(agent_ota_request_t *request, char ota_id[13], char *message, size_t message_cap)
{
    if (g_agent.watchdog == NULL) {
        g_agent.watchdog = xTimerCreate("esp_ota_watchdog", pdMS_TO_TICKS(1000), pdTRUE, NULL, on_watchdog);
        if (g_agent.watchdog == NULL) {
            snprintf(message, message_cap, "no memory for the watchdog");
            return ESP_ERR_NO_MEM;
        }
    }
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    if (g_agent.ota_task != NULL || agent_ota_status_in_progress(&g_agent.status)) {
        snprintf(message, message_cap, "OTA %s is in progress", g_agent.status.ota_id);
        xSemaphoreGive(g_agent.lock);
        return ESP_ERR_INVALID_STATE;
    }
    agent_crypto_random_hex(ota_id, 12);
    agent_ota_status_t status;
    agent_ota_status_idle(&status);
    status.state = AGENT_OTA_CONNECTING;
    memcpy(status.ota_id, ota_id, sizeof(status.ota_id));
    snprintf(status.target_version, sizeof(status.target_version), "%s", request->version);
    status.image_size = (int32_t)request->size;
    g_agent.status = status;
    g_agent.request = *request;  /* the task owns the request from here */
    memset(request, 0, sizeof(*request));
    g_agent.abort_requested = false;
    g_agent.stalled = false;
    g_agent.ota_socket = -1;
    g_agent.last_progress_bytes = 0;
    g_agent.last_progress_us = esp_timer_get_time();
    BaseType_t created = xTaskCreate(ota_task, "esp_ota_update", CONFIG_ESP_OTA_AGENT_OTA_TASK_STACK,
                                     NULL, CONFIG_ESP_OTA_AGENT_OTA_TASK_PRIORITY, &g_agent.ota_task);
    if (created != pdPASS) {
        g_agent.ota_task = NULL;
        agent_ota_status_idle(&g_agent.status);
        xSemaphoreGive(g_agent.lock);
        agent_ota_request_free(&g_agent.request);
        snprintf(message, message_cap, "no memory for the update task");
        return ESP_ERR_NO_MEM;
    }
    xSemaphoreGive(g_agent.lock);
    agent_store_save_status(&status);
    xTimerStart(g_agent.watchdog, portMAX_DELAY);
    esp_event_post(ESP_OTA_AGENT_EVENT, ESP_OTA_AGENT_EVENT_UPDATE_STARTED, ota_id, 13, 0);
    return ESP_OK;
}

esp_err_t agent_ota_abort(void)
{
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    if (g_agent.ota_task == NULL || !agent_ota_status_abortable(&g_agent.status)) {
        xSemaphoreGive(g_agent.lock);
        return ESP_ERR_INVALID_STATE;
    }
    g_agent.abort_requested = true;
    cut_download_locked();
    xSemaphoreGive(g_agent.lock);
    /* Answer once the job has ended (the socket is cut, so this is quick unless the
     * connection is still being set up, which its own timeouts bound). */
    int64_t deadline = esp_timer_get_time() + (int64_t)(CONFIG_ESP_OTA_AGENT_HTTP_TIMEOUT_MS + 2000) * 1000;
    while (g_agent.ota_task != NULL && esp_timer_get_time() < deadline) {
        vTaskDelay(pdMS_TO_TICKS(20));
    }
    return ESP_OK;
}

void agent_ota_stop(void)
{
    if (g_agent.ota_task != NULL) {
        agent_ota_abort();
    }
}

static void restart_task(void *arg)
{
    (void)arg;
    vTaskDelay(pdMS_TO_TICKS(100));  /* the answer goes out first */
    agent_event_t reboot;
    agent_event_init(&reboot, AGENT_EVENT_REBOOT);
    agent_events_post(&reboot);
    restart_after_flush();
}

void agent_restart_soon(void)
{
    if (xTaskCreate(restart_task, "esp_ota_restart", 3072, NULL, tskIDLE_PRIORITY + 5, NULL) != pdPASS) {
        esp_restart();
    }
}
