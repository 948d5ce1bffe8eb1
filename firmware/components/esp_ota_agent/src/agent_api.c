/*
 * The device API of docs/protocol.md (v1) on esp_https_server. Every request, whatever its
 * path or method, is checked for the device secret before anything else; unknown paths
 * and methods get the contract's JSON errors (through the server's 404/405 handlers, so
 * they are authenticated first too).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "esp_app_desc.h"
#include "esp_chip_info.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "esp_timer.h"

#include "agent_priv.h"
#include "core/agent_json.h"

static const char *TAG = "esp_ota_agent";

#define API_PREFIX "/api/v1"
/* Handlers run one at a time in the server task: one answer buffer serves them all. */
static char s_answer[AGENT_RESPONSE_BUFFER_BYTES];

/* Home Assistant sends `Connection: close`; esp_http_server keeps sessions open until
 * the peer closes. Closing at once frees the socket and the TLS session sooner. (Read
 * before answering: the answer's headers reuse the buffer the request's headers are in.) */
static bool close_asked(httpd_req_t *req)
{
    char value[16];
    return httpd_req_get_hdr_value_str(req, "Connection", value, sizeof(value)) == ESP_OK
           && strcasecmp(value, "close") == 0;
}

static esp_err_t send_json(httpd_req_t *req, const char *status, const char *body, size_t length)
{
    bool close = close_asked(req);
    httpd_resp_set_status(req, status);
    httpd_resp_set_type(req, "application/json");
    esp_err_t err = httpd_resp_send(req, body, (ssize_t)length);
    if (close) {
        httpd_sess_trigger_close(req->handle, httpd_req_to_sockfd(req));
    }
    return err;
}

static esp_err_t send_error(httpd_req_t *req, const char *status, const char *error, const char *message)
{
    size_t length = agent_json_error(s_answer, sizeof(s_answer), error, message);
    return send_json(req, status, s_answer, length);
}

static const char *http_status_of(esp_err_t err)
{
    return err == ESP_ERR_INVALID_ARG || err == ESP_ERR_INVALID_SIZE ? "400 Bad Request" : "409 Conflict";
}

static esp_err_t send_refusal(httpd_req_t *req, esp_err_t err, const char *message)
{
    return send_error(req, http_status_of(err), esp_err_to_name(err), message);
}

static esp_err_t send_ok(httpd_req_t *req)
{
    static const char ok[] = "{\"ok\":true}";
    return send_json(req, "200 OK", ok, sizeof(ok) - 1);
}

/* A refusal comes before the request's body is read. A small body is read and dropped
 * first, so that the answer reaches the client (closing a connection with unread bytes
 * resets it, and the answer can be lost with it); a larger one, or one that does not
 * arrive at once, is not read: the connection is closed after the answer. Bounded either
 * way, in bytes and time: the server has one task, and a client without the secret must
 * not hold it. */
#define DISCARD_MAX_BYTES (20 * 1024)
#define DISCARD_DEADLINE_US (2 * 1000 * 1000)

static bool discard_body(httpd_req_t *req)
{
    size_t left = req->content_len;
    if (left > DISCARD_MAX_BYTES) {
        return false;
    }
    char sink[256];
    int64_t deadline = esp_timer_get_time() + DISCARD_DEADLINE_US;
    while (left > 0 && esp_timer_get_time() < deadline) {
        int got = httpd_req_recv(req, sink, left < sizeof(sink) ? left : sizeof(sink));
        if (got == HTTPD_SOCK_ERR_TIMEOUT) {
            continue;
        }
        if (got <= 0) {
            return false;
        }
        left -= (size_t)got;
    }
    return left == 0;
}

/* Answer an error before the body is read; a non-OK return closes the connection. */
static esp_err_t refuse_unread(httpd_req_t *req, const char *status, const char *error, const char *message)
{
    bool drained = discard_body(req);
    send_error(req, status, error, message);
    return drained ? ESP_OK : ESP_FAIL;
}

/* True when the request carries the device secret; otherwise the 401 is sent and
 * `*refusal` is what the handler returns. */
static bool authorized(httpd_req_t *req, esp_err_t *refusal)
{
    char value[320];  /* "Bearer " and the longest secret NVS may hold */
    bool matches = false;
    size_t length = httpd_req_get_hdr_value_len(req, "Authorization");
    if (length > 0 && length < sizeof(value)
        && httpd_req_get_hdr_value_str(req, "Authorization", value, sizeof(value)) == ESP_OK) {
        matches = agent_crypto_secret_matches(value, g_agent.secret);
    }
    if (!matches) {
        httpd_resp_set_hdr(req, "WWW-Authenticate", "Bearer realm=\"esp-ota\"");
        *refusal = refuse_unread(req, "401 Unauthorized", "HTTPD_401_UNAUTHORIZED",
                                 "missing or wrong device secret");
    }
    return matches;
}

/* --- GET /api/v1/info, GET /api/v1/ota ---------------------------------------------- */

static void copy_label(char *out, size_t cap, const esp_partition_t *partition)
{
    snprintf(out, cap, "%s", partition != NULL ? partition->label : "");
}

static esp_err_t handle_info(httpd_req_t *req)
{
    const esp_app_desc_t *app = esp_app_get_description();
    const esp_partition_t *running = esp_ota_get_running_partition();
    esp_ota_img_states_t state = ESP_OTA_IMG_UNDEFINED;
    if (running == NULL || esp_ota_get_state_partition(running, &state) != ESP_OK) {
        state = ESP_OTA_IMG_UNDEFINED;  /* no otadata entry yet: as a fresh flash reads */
    }
    esp_chip_info_t chip;
    esp_chip_info(&chip);

    agent_info_t info = {0};
    esp_read_mac(info.mac, ESP_MAC_WIFI_STA);
    info.chip_model = chip.model;
    info.chip_revision = chip.revision;
    snprintf(info.project, sizeof(info.project), "%.31s", app->project_name);
    snprintf(info.version, sizeof(info.version), "%.31s", app->version);
    snprintf(info.idf_ver, sizeof(info.idf_ver), "%.31s", app->idf_ver);
    memcpy(info.app_elf_sha256, app->app_elf_sha256, sizeof(info.app_elf_sha256));
    info.secure_version = app->secure_version;
    copy_label(info.running_partition, sizeof(info.running_partition), running);
    copy_label(info.boot_partition, sizeof(info.boot_partition), esp_ota_get_boot_partition());
    info.image_state = (uint32_t)state;
    copy_label(info.last_invalid_partition, sizeof(info.last_invalid_partition),
               esp_ota_get_last_invalid_partition());
    agent_get_status(&info.last_ota);
    info.reset_reason = esp_reset_reason();
    info.uptime_us = esp_timer_get_time() - g_agent.boot_time_us;

    size_t length = agent_json_info(s_answer, sizeof(s_answer), &info, esp_err_to_name);
    if (length == 0) {
        return send_error(req, "500 Internal Server Error", "ESP_ERR_NO_MEM", "the answer does not fit");
    }
    return send_json(req, "200 OK", s_answer, length);
}

static esp_err_t handle_ota_status(httpd_req_t *req)
{
    agent_ota_status_t status;
    agent_get_status(&status);
    size_t length = agent_json_status(s_answer, sizeof(s_answer), &status, esp_err_to_name);
    return send_json(req, "200 OK", s_answer, length);
}

/* --- POST /api/v1/ota ---------------------------------------------------------------- */

/* The server has one task: a client that announces a body and trickles it (or never
 * sends it) holds every other request meanwhile. Its body must arrive within this. */
#define BODY_DEADLINE_US (10 * 1000 * 1000)

static esp_err_t read_body(httpd_req_t *req, char **body)
{
    size_t length = req->content_len;
    char *buffer = malloc(length + 1);
    if (buffer == NULL) {
        return ESP_ERR_NO_MEM;
    }
    int64_t deadline = esp_timer_get_time() + BODY_DEADLINE_US;
    size_t received = 0;
    while (received < length) {
        int got = httpd_req_recv(req, buffer + received, length - received);
        if (got == HTTPD_SOCK_ERR_TIMEOUT && esp_timer_get_time() < deadline) {
            continue;
        }
        if (got <= 0 || esp_timer_get_time() >= deadline) {
            ESP_LOGW(TAG, "a request body did not arrive in time: connection dropped");
            free(buffer);
            return ESP_FAIL;
        }
        received += (size_t)got;
    }
    buffer[length] = '\0';
    *body = buffer;
    return ESP_OK;
}

static esp_err_t check_certificate(void *ctx, const char *cert_pem, char *message, size_t message_cap)
{
    (void)ctx;
    if (agent_crypto_certificate_usable(cert_pem)) {
        return ESP_OK;
    }
    snprintf(message, message_cap, "cert_pem is not a usable certificate");
    return ESP_ERR_INVALID_ARG;
}

/* The checks in docs/protocol.md's order: the body's form, busy, the request's values,
 * then the running image's state. */
static esp_err_t handle_ota_start(httpd_req_t *req)
{
    if (req->content_len > AGENT_OTA_REQUEST_MAX_BODY) {
        return refuse_unread(req, "413 Payload Too Large", "ESP_ERR_INVALID_SIZE",
                             "the request body is over 16 KiB");
    }
    char *body = NULL;
    esp_err_t err = read_body(req, &body);
    if (err != ESP_OK) {
        return err == ESP_ERR_NO_MEM ? send_refusal(req, ESP_ERR_NO_MEM, "no memory for the request")
                                     : ESP_FAIL;  /* the client is gone: drop the session */
    }
    agent_ota_request_t request;
    char message[AGENT_OTA_MESSAGE_MAX];
    err = agent_ota_request_decode(body, req->content_len, &request, message, sizeof(message));
    free(body);
    if (err != ESP_OK) {
        return send_refusal(req, err, message);
    }
    agent_ota_status_t status;
    agent_get_status(&status);
    const esp_partition_t *slot = esp_ota_get_next_update_partition(NULL);
    if (agent_ota_status_in_progress(&status)) {
        snprintf(message, sizeof(message), "OTA %s is in progress", status.ota_id);
        err = ESP_ERR_INVALID_STATE;
    } else if (slot == NULL) {
        snprintf(message, sizeof(message), "no OTA slot to write to (partition table)");
        err = ESP_ERR_INVALID_STATE;
    } else {
        err = agent_ota_request_validate(&request, slot->size, check_certificate, NULL, message,
                                         sizeof(message));
    }
    esp_ota_img_states_t state;
    if (err == ESP_OK && esp_ota_get_state_partition(esp_ota_get_running_partition(), &state) == ESP_OK
        && state == ESP_OTA_IMG_PENDING_VERIFY) {
        snprintf(message, sizeof(message), "Running app has not confirmed state "
                 "(ESP_OTA_IMG_PENDING_VERIFY): confirm or roll back first");
        err = ESP_ERR_OTA_ROLLBACK_INVALID_STATE;
    }
    char ota_id[AGENT_OTA_ID_LEN + 1];
    if (err == ESP_OK) {
        err = agent_ota_start(&request, ota_id, message, sizeof(message));
    }
    if (err != ESP_OK) {
        agent_ota_request_free(&request);
        return send_refusal(req, err, message);
    }
    ESP_LOGI(TAG, "update %s started", ota_id);
    size_t length = agent_json_ota_started(s_answer, sizeof(s_answer), ota_id);
    return send_json(req, "202 Accepted", s_answer, length);
}

/* --- actions ------------------------------------------------------------------------- */

static esp_err_t handle_abort(httpd_req_t *req)
{
    agent_ota_status_t status;
    agent_get_status(&status);
    if (agent_ota_abort() != ESP_OK) {
        char message[64];
        snprintf(message, sizeof(message), "no OTA download to abort (state %s)",
                 agent_ota_state_name(status.state));
        return send_refusal(req, ESP_ERR_INVALID_STATE, message);
    }
    return send_ok(req);
}

static esp_err_t handle_confirm(httpd_req_t *req)
{
    esp_ota_img_states_t state = ESP_OTA_IMG_UNDEFINED;
    esp_err_t err = esp_ota_get_state_partition(esp_ota_get_running_partition(), &state);
    if (err == ESP_OK && state == ESP_OTA_IMG_PENDING_VERIFY && g_agent.health_check != NULL) {
        esp_err_t health = g_agent.health_check(g_agent.health_check_ctx);
        if (health != ESP_OK) {
            char message[96];
            snprintf(message, sizeof(message), "the firmware's health check failed: %s",
                     esp_err_to_name(health));
            esp_event_post(ESP_OTA_AGENT_EVENT, ESP_OTA_AGENT_EVENT_HEALTH_CHECK_FAILED, &health,
                           sizeof(health), 0);
            return send_refusal(req, ESP_FAIL, message);
        }
    }
    err = esp_ota_mark_app_valid_cancel_rollback();
    if (err != ESP_OK) {
        return send_refusal(req, err, err == ESP_FAIL ? "Running firmware is factory" : "confirm failed");
    }
    if (state == ESP_OTA_IMG_PENDING_VERIFY) {
        ESP_LOGI(TAG, "the running firmware is confirmed");
        esp_event_post(ESP_OTA_AGENT_EVENT, ESP_OTA_AGENT_EVENT_CONFIRMED, NULL, 0, 0);
    }
    return send_ok(req);
}

static esp_err_t handle_rollback(httpd_req_t *req)
{
    esp_err_t err = esp_ota_mark_app_invalid_rollback();
    if (err != ESP_OK) {
        const char *message = err == ESP_ERR_OTA_ROLLBACK_FAILED
                              ? "Rollback is not possible, do not have any suitable apps in slots"
                              : err == ESP_FAIL ? "Running firmware is factory" : "rollback failed";
        return send_refusal(req, err, message);
    }
    ESP_LOGW(TAG, "rolling back on request");
    esp_event_post(ESP_OTA_AGENT_EVENT, ESP_OTA_AGENT_EVENT_ROLLING_BACK, NULL, 0, 0);
    esp_err_t sent = send_ok(req);
    agent_restart_soon();
    return sent;
}

static esp_err_t handle_reboot(httpd_req_t *req)
{
    esp_err_t sent = send_ok(req);
    agent_restart_soon();
    return sent;
}

static esp_err_t handle_events(httpd_req_t *req)
{
    return agent_events_open_stream(req);
}

/* --- 404 / 405: authenticated first, then the contract's errors ---------------------- */

static esp_err_t handle_not_found(httpd_req_t *req, httpd_err_code_t error)
{
    (void)error;
    esp_err_t refusal = ESP_OK;
    if (!authorized(req, &refusal)) {
        return refusal;
    }
    return refuse_unread(req, "404 Not Found", "ESP_ERR_NOT_FOUND", "no such endpoint");
}

static esp_err_t handle_wrong_method(httpd_req_t *req, httpd_err_code_t error)
{
    (void)error;
    esp_err_t refusal = ESP_OK;
    if (!authorized(req, &refusal)) {
        return refusal;
    }
    return refuse_unread(req, "405 Method Not Allowed", "ESP_ERR_NOT_SUPPORTED",
                         "the endpoint does not take this method");
}

typedef esp_err_t (*api_handler_t)(httpd_req_t *req);

typedef struct {
    const char *uri;
    httpd_method_t method;
    api_handler_t handle;
} api_route_t;

static const api_route_t s_routes[] = {
    {API_PREFIX "/info", HTTP_GET, handle_info},
    {API_PREFIX "/ota", HTTP_GET, handle_ota_status},
    {API_PREFIX "/ota", HTTP_POST, handle_ota_start},
    {API_PREFIX "/ota/abort", HTTP_POST, handle_abort},
    {API_PREFIX "/ota/confirm", HTTP_POST, handle_confirm},
    {API_PREFIX "/ota/rollback", HTTP_POST, handle_rollback},
    {API_PREFIX "/reboot", HTTP_POST, handle_reboot},
    {API_PREFIX "/events", HTTP_GET, handle_events},
};

/* Every route goes through here: the secret is checked before any handler runs. */
static esp_err_t authenticated(httpd_req_t *req)
{
    esp_err_t refusal = ESP_OK;
    if (!authorized(req, &refusal)) {
        return refusal;
    }
    const api_route_t *route = req->user_ctx;
    return route->handle(req);
}

esp_err_t agent_api_register(httpd_handle_t server)
{
    for (size_t i = 0; i < sizeof(s_routes) / sizeof(s_routes[0]); i++) {
        httpd_uri_t uri = {
            .uri = s_routes[i].uri,
            .method = s_routes[i].method,
            .handler = authenticated,
            .user_ctx = (void *)&s_routes[i],
        };
        esp_err_t err = httpd_register_uri_handler(server, &uri);
        if (err != ESP_OK) {
            return err;
        }
    }
    esp_err_t err = httpd_register_err_handler(server, HTTPD_404_NOT_FOUND, handle_not_found);
    if (err == ESP_OK) {
        err = httpd_register_err_handler(server, HTTPD_405_METHOD_NOT_ALLOWED, handle_wrong_method);
    }
    return err;
}
