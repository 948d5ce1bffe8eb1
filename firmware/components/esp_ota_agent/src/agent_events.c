/*
 * Events: esp_https_ota's ESP_HTTPS_OTA_EVENT and the agent's own records go into a ring
 * of recent events (in the order they were posted on the default event loop), and from
 * there to the open server-sent event streams.
 *
 * Streams are written by the HTTP server's own task (httpd_queue_work), so they cost no
 * task and no stack of their own; each stream only remembers the last id it sent and
 * reads the ring from there, so a slow stream never holds events for the others (if it
 * falls a whole ring behind, ids show the gap and GET /api/v1/ota has the truth).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <string.h>
#include "esp_https_ota.h"
#include "esp_log.h"
#include "esp_timer.h"

#include "agent_priv.h"
#include "core/agent_sse.h"

static const char *TAG = "esp_ota_agent";

ESP_EVENT_DEFINE_BASE(ESP_OTA_AGENT_RING_EVENT);

/* Only ever used in the server task: one frame at a time. */
static char s_frame[AGENT_SSE_BUFFER_BYTES];

static void queue_pump(void);

/* --- the ring (event loop task) ----------------------------------------------------- */

static void push(const agent_event_t *record)
{
    uint32_t reserve_from = 0;
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    uint32_t id = agent_event_ring_push(&g_agent.ring, record);
    if (id + 1 >= g_agent.id_reserved_until) {
        reserve_from = id + 1;
    }
    xSemaphoreGive(g_agent.lock);
    if (reserve_from != 0) {
        /* NVS write outside the lock: streams keep flowing meanwhile. */
        uint32_t reserved = agent_store_reserve_event_ids(reserve_from);
        xSemaphoreTake(g_agent.lock, portMAX_DELAY);
        g_agent.id_reserved_until = reserved;
        xSemaphoreGive(g_agent.lock);
    }
    if (record->type == AGENT_EVENT_REBOOT) {
        xSemaphoreGive(g_agent.ring_flushed);
    }
    queue_pump();
}

static void record_of(agent_event_t *record, agent_event_type_t type)
{
    agent_event_init(record, type);
    memcpy(record->ota_id, g_agent.job_tag.ota_id, sizeof(record->ota_id));
}

static void on_https_ota_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    (void)base;
    agent_event_t record;
    switch (id) {
    case ESP_HTTPS_OTA_START:
        record_of(&record, AGENT_EVENT_START);
        break;
    case ESP_HTTPS_OTA_CONNECTED:
        record_of(&record, AGENT_EVENT_CONNECTED);
        break;
    case ESP_HTTPS_OTA_VERIFY_CHIP_ID:
        record_of(&record, AGENT_EVENT_VERIFY_CHIP_ID);
        break;
    case ESP_HTTPS_OTA_VERIFY_CHIP_REVISION:
        record_of(&record, AGENT_EVENT_VERIFY_CHIP_REVISION);
        break;
    case ESP_HTTPS_OTA_UPDATE_BOOT_PARTITION:
        record_of(&record, AGENT_EVENT_UPDATE_BOOT_PARTITION);
        break;
    case ESP_HTTPS_OTA_WRITE_FLASH: {
        int written = data != NULL ? *(const int *)data : 0;
        bool completes = g_agent.job_tag.image_size >= 0 && written >= g_agent.job_tag.image_size;
        if (!agent_progress_event_due(esp_timer_get_time(), &g_agent.last_progress_event_us,
                                      CONFIG_ESP_OTA_AGENT_PROGRESS_INTERVAL_MS, completes)) {
            return;
        }
        record_of(&record, AGENT_EVENT_WRITE_FLASH);
        record.bytes_written = written;
        record.image_size = g_agent.job_tag.image_size;
        break;
    }
    default:
        /* GET_IMG_DESC, FINISH and ABORT carry what only the OTA task knows (the
         * descriptor, the error): it posts those records itself. */
        return;
    }
    push(&record);
}

static void on_ring_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    (void)base;
    if (id == AGENT_RING_JOB) {
        memcpy(&g_agent.job_tag, data, sizeof(g_agent.job_tag));
        g_agent.last_progress_event_us = AGENT_PROGRESS_NONE;
    } else if (id == AGENT_RING_RECORD) {
        push((const agent_event_t *)data);
    }
}

void agent_events_post(const agent_event_t *record)
{
    /* Through the event loop, behind esp_https_ota's own events, so the order holds. */
    if (esp_event_post(ESP_OTA_AGENT_RING_EVENT, AGENT_RING_RECORD, record, sizeof(*record),
                       pdMS_TO_TICKS(2000)) != ESP_OK) {
        ESP_LOGW(TAG, "an event was lost (event loop full)");
    }
}

void agent_events_begin_job(const char *ota_id, int32_t image_size)
{
    agent_job_tag_t tag = {.image_size = image_size};
    snprintf(tag.ota_id, sizeof(tag.ota_id), "%s", ota_id);
    esp_event_post(ESP_OTA_AGENT_RING_EVENT, AGENT_RING_JOB, &tag, sizeof(tag), portMAX_DELAY);
}

/* --- streams (server task) --------------------------------------------------------- */

static esp_err_t send_text(agent_stream_t *stream, const char *text, size_t length)
{
    esp_err_t err = httpd_resp_send_chunk(stream->req, text, (ssize_t)length);
    if (err == ESP_OK) {
        stream->last_write_us = esp_timer_get_time();
    }
    return err;
}

static void end_stream(agent_stream_t *stream, bool client_gone)
{
    httpd_req_t *req = stream->req;
    stream->req = NULL;
    int socket = httpd_req_to_sockfd(req);
    if (!client_gone) {
        httpd_resp_send_chunk(req, NULL, 0);  /* the terminating chunk */
    }
    httpd_req_async_handler_complete(req);
    /* The socket and its TLS session are the scarce part: close now, not when the peer
     * notices. */
    httpd_sess_trigger_close(g_agent.server, socket);
}

size_t agent_events_open_streams(void)
{
    size_t open = 0;
    for (size_t i = 0; i < CONFIG_ESP_OTA_AGENT_MAX_EVENT_STREAMS; i++) {
        if (g_agent.streams[i].req != NULL) {
            open++;
        }
    }
    return open;
}



/*
 * The heartbeat: every open stream carries something at least every
 * CONFIG_ESP_OTA_AGENT_KEEPALIVE_S (clients give a stream up after two silent intervals).
 * One one-shot timer wakes the pump when the quietest stream is due, not on a fixed tick:
 * a tick of the interval itself could leave a stream silent for almost two intervals, and
 * a shorter tick would wake the device for nothing.
 */
static void arm_keepalive(void)
{
    if (g_agent.keepalive == NULL) {
        return;
    }
    const int64_t interval_us = (int64_t)CONFIG_ESP_OTA_AGENT_KEEPALIVE_S * 1000000;
    int64_t earliest_due_us = INT64_MAX;
    for (size_t i = 0; i < CONFIG_ESP_OTA_AGENT_MAX_EVENT_STREAMS; i++) {
        const agent_stream_t *stream = &g_agent.streams[i];
        if (stream->req != NULL && stream->last_write_us + interval_us < earliest_due_us) {
            earliest_due_us = stream->last_write_us + interval_us;
        }
    }
    if (earliest_due_us == INT64_MAX) {
        xTimerStop(g_agent.keepalive, 0);
        return;
    }
    int64_t wait_ms = (earliest_due_us - esp_timer_get_time() + 999) / 1000;
    TickType_t wait_ticks = pdMS_TO_TICKS(wait_ms > 0 ? wait_ms : 0);
    /* Changing the period (re)starts the timer. */
    xTimerChangePeriod(g_agent.keepalive, wait_ticks > 0 ? wait_ticks : 1, 0);
}

/* Send every stream what it has not seen yet, and a keep-alive to the ones due one. */
static void pump(void *arg)
{
    (void)arg;
    g_agent.pump_queued = false;
    int64_t now = esp_timer_get_time();
    for (size_t i = 0; i < CONFIG_ESP_OTA_AGENT_MAX_EVENT_STREAMS; i++) {
        agent_stream_t *stream = &g_agent.streams[i];
        esp_err_t err = ESP_OK;
        while (stream->req != NULL && err == ESP_OK) {
            agent_event_t event;
            xSemaphoreTake(g_agent.lock, portMAX_DELAY);
            bool found = agent_event_ring_next_after(&g_agent.ring, stream->cursor, &event);
            xSemaphoreGive(g_agent.lock);
            if (!found) {
                break;
            }
            size_t length = agent_sse_event(s_frame, sizeof(s_frame), &event, esp_err_to_name);
            stream->cursor = event.id;
            if (length > 0) {
                err = send_text(stream, s_frame, length);
            }
        }
        if (stream->req != NULL && err == ESP_OK
            && now - stream->last_write_us >= (int64_t)CONFIG_ESP_OTA_AGENT_KEEPALIVE_S * 1000000) {
            err = send_text(stream, AGENT_SSE_KEEP_ALIVE, strlen(AGENT_SSE_KEEP_ALIVE));
        }
        if (stream->req != NULL && err != ESP_OK) {
            ESP_LOGD(TAG, "event stream closed by its client");
            end_stream(stream, true);
        }
    }
    arm_keepalive();
}

static void queue_pump(void)
{
    if (g_agent.server == NULL || g_agent.pump_queued) {
        return;
    }
    g_agent.pump_queued = true;
    if (httpd_queue_work(g_agent.server, pump, NULL) != ESP_OK) {
        g_agent.pump_queued = false;
    }
}

static void on_keepalive_timer(TimerHandle_t timer)
{
    (void)timer;
    queue_pump();
}

esp_err_t agent_events_open_stream(httpd_req_t *req)
{
    char value[24];
    uint32_t last_event_id = 0;
    bool has_last_event_id = httpd_req_get_hdr_value_str(req, "Last-Event-ID", value, sizeof(value)) == ESP_OK
                             && agent_sse_parse_last_event_id(value, &last_event_id);
    if (!has_last_event_id && httpd_req_get_hdr_value_len(req, "Last-Event-ID") >= sizeof(value)) {
        /* Too long for any id this device issued: a client from before a flash erase. */
        has_last_event_id = true;
        last_event_id = UINT32_MAX;
    }

    /* A free slot, or the oldest stream makes room: a client that reconnects must never
     * be locked out by its own stale streams. */
    agent_stream_t *slot = NULL;
    for (size_t i = 0; i < CONFIG_ESP_OTA_AGENT_MAX_EVENT_STREAMS; i++) {
        agent_stream_t *stream = &g_agent.streams[i];
        if (stream->req == NULL) {
            slot = stream;
            break;
        }
        if (slot == NULL || stream->opened_seq < slot->opened_seq) {
            slot = stream;
        }
    }
    if (slot->req != NULL) {
        end_stream(slot, false);
    }

    httpd_resp_set_type(req, "text/event-stream");
    httpd_resp_set_hdr(req, "Cache-Control", "no-cache");
    httpd_req_t *async = NULL;
    esp_err_t err = httpd_req_async_handler_begin(req, &async);
    if (err != ESP_OK) {
        return err;
    }
    slot->req = async;
    slot->opened_seq = ++g_agent.stream_seq;
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    slot->cursor = agent_event_ring_replay_cursor(&g_agent.ring, has_last_event_id, last_event_id);
    xSemaphoreGive(g_agent.lock);
    /* Every stream starts with a comment, so the client has the response at once. */
    if (send_text(slot, AGENT_SSE_CONNECTED, strlen(AGENT_SSE_CONNECTED)) != ESP_OK) {
        end_stream(slot, true);
        return ESP_OK;
    }
    queue_pump();  /* also arms the heartbeat for this stream */
    return ESP_OK;
}

static void end_all_streams(void *arg)
{
    SemaphoreHandle_t done = arg;
    pump(NULL);  /* what was posted still goes out */
    for (size_t i = 0; i < CONFIG_ESP_OTA_AGENT_MAX_EVENT_STREAMS; i++) {
        if (g_agent.streams[i].req != NULL) {
            end_stream(&g_agent.streams[i], false);
        }
    }
    xSemaphoreGive(done);
}

void agent_events_flush(uint32_t timeout_ms)
{
    if (g_agent.server == NULL) {
        return;
    }
    SemaphoreHandle_t done = xSemaphoreCreateBinary();
    if (done == NULL) {
        return;
    }
    if (httpd_queue_work(g_agent.server, end_all_streams, done) == ESP_OK) {
        xSemaphoreTake(done, pdMS_TO_TICKS(timeout_ms));
    }
    vSemaphoreDelete(done);
}

esp_err_t agent_events_start(void)
{
    if (g_agent.ring_storage == NULL) {
        g_agent.ring_storage = calloc(CONFIG_ESP_OTA_AGENT_EVENT_RING_SIZE, sizeof(agent_event_t));
        if (g_agent.ring_storage == NULL) {
            return ESP_ERR_NO_MEM;
        }
    }
    uint32_t first_id = agent_store_first_event_id();
    agent_event_ring_init(&g_agent.ring, g_agent.ring_storage, CONFIG_ESP_OTA_AGENT_EVENT_RING_SIZE,
                          first_id);
    g_agent.id_reserved_until = agent_store_reserve_event_ids(first_id);
    if (g_agent.keepalive == NULL) {
        g_agent.keepalive = xTimerCreate("esp_ota_keepalive",
                                         pdMS_TO_TICKS(CONFIG_ESP_OTA_AGENT_KEEPALIVE_S * 1000),
                                         pdFALSE, NULL, on_keepalive_timer);
    }
    esp_err_t err = esp_event_handler_register(ESP_HTTPS_OTA_EVENT, ESP_EVENT_ANY_ID,
                                               on_https_ota_event, NULL);
    if (err == ESP_OK) {
        err = esp_event_handler_register(ESP_OTA_AGENT_RING_EVENT, ESP_EVENT_ANY_ID,
                                         on_ring_event, NULL);
    }
    return err;
}

void agent_events_stop(void)
{
    agent_events_flush(1000);
    esp_event_handler_unregister(ESP_HTTPS_OTA_EVENT, ESP_EVENT_ANY_ID, on_https_ota_event);
    esp_event_handler_unregister(ESP_OTA_AGENT_RING_EVENT, ESP_EVENT_ANY_ID, on_ring_event);
    if (g_agent.keepalive != NULL) {
        xTimerStop(g_agent.keepalive, portMAX_DELAY);
    }
}
