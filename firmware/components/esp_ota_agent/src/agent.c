/*
 * esp_ota_agent_start() / _stop(): identity, the HTTPS server, mDNS.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "esp_app_desc.h"
#include "esp_https_server.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_chip_info.h"
#include "esp_ota_ops.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "mdns.h"

#include "agent_priv.h"

static const char *TAG = "esp_ota_agent";

ESP_EVENT_DEFINE_BASE(ESP_OTA_AGENT_EVENT);

agent_t g_agent = {.ota_socket = -1};

void agent_set_status(const agent_ota_status_t *status, bool persist)
{
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    g_agent.status = *status;
    xSemaphoreGive(g_agent.lock);
    if (persist) {
        agent_store_save_status(status);
    }
}

void agent_get_status(agent_ota_status_t *status)
{
    xSemaphoreTake(g_agent.lock, portMAX_DELAY);
    *status = g_agent.status;
    xSemaphoreGive(g_agent.lock);
}

/* What the firmware reads at start: the last job as NVS kept it, seen after this reset. */
static void load_status_after_reset(void)
{
    agent_ota_status_t status;
    agent_store_load_status(&status);
    agent_ota_status_t before = status;
    agent_ota_status_after_reset(&status, agent_reset_reason_name(esp_reset_reason()));
    g_agent.status = status;
    if (memcmp(&before, &status, sizeof(status)) != 0) {
        agent_store_save_status(&status);
    }
}

static void mac_label(char out[13])
{
    uint8_t mac[6] = {0};
    esp_read_mac(mac, ESP_MAC_WIFI_STA);
    snprintf(out, 13, "%02x%02x%02x%02x%02x%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

static esp_err_t start_mdns(void)
{
    char label[13];
    mac_label(label);
    char host[24];
    snprintf(host, sizeof(host), "esp-ota-%s", label);

    uint8_t mac[6] = {0};
    esp_read_mac(mac, ESP_MAC_WIFI_STA);
    char mac_text[18];
    snprintf(mac_text, sizeof(mac_text), "%02x:%02x:%02x:%02x:%02x:%02x",
             mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    const esp_app_desc_t *app = esp_app_get_description();
    esp_chip_info_t chip;
    esp_chip_info(&chip);
    char version[33];
    snprintf(version, sizeof(version), "%.32s", app->version);
    mdns_txt_item_t txt[] = {
        {"mac", mac_text},
        {"project", g_agent.project},
        {"version", version},
        {"chip", agent_chip_name(chip.model)},
        {"api", "1"},
    };

    esp_err_t err = mdns_init();
    if (err != ESP_OK && err != ESP_ERR_INVALID_STATE) {  /* INVALID_STATE: the app did it */
        return err;
    }
    g_agent.mdns_started = err == ESP_OK;
    err = mdns_hostname_set(host);
    if (err == ESP_OK) {
        err = mdns_service_add(host, "_esp-ota", "_tcp", g_agent.port, txt,
                               sizeof(txt) / sizeof(txt[0]));
    }
    return err;
}

esp_err_t esp_ota_agent_start(const esp_ota_agent_config_t *config)
{
    if (config == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if ((config->cert_pem == NULL) != (config->key_pem == NULL)) {
        ESP_LOGE(TAG, "a certificate needs its private key (and the other way round)");
        return ESP_ERR_INVALID_ARG;
    }
    if (g_agent.running) {
        return ESP_ERR_INVALID_STATE;
    }
    if (g_agent.lock == NULL) {
        g_agent.lock = xSemaphoreCreateMutex();
        g_agent.ring_flushed = xSemaphoreCreateBinary();
        if (g_agent.lock == NULL || g_agent.ring_flushed == NULL) {
            return ESP_ERR_NO_MEM;
        }
    }
    g_agent.ota_socket = -1;
#if CONFIG_IDF_TARGET_LINUX
    /* esp_timer counts from 1970 on linux, from boot on a chip. */
    g_agent.boot_time_us = esp_timer_get_time();
#endif

    const esp_app_desc_t *app = esp_app_get_description();
    snprintf(g_agent.project, sizeof(g_agent.project), "%s",
             config->project_name != NULL ? config->project_name : app->project_name);
    g_agent.health_check = config->health_check;
    g_agent.health_check_ctx = config->health_check_ctx;

    esp_err_t err = agent_store_open_identity(config);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "no identity: %s", esp_err_to_name(err));
        return err;
    }
    if (g_agent.secret == NULL || g_agent.secret[0] == '\0') {
        ESP_LOGW(TAG, "no device secret (config or NVS \"%s\"/\"secret\"): every request will be refused",
                 ESP_OTA_AGENT_NVS_NAMESPACE);
    }
    g_agent.port = config->port != 0 ? config->port : agent_store_port();
    load_status_after_reset();

    err = agent_events_start();
    if (err != ESP_OK) {
        return err;
    }

    httpd_ssl_config_t ssl = HTTPD_SSL_CONFIG_DEFAULT();
    ssl.servercert = (const uint8_t *)g_agent.cert_pem;
    ssl.servercert_len = strlen(g_agent.cert_pem) + 1;
    ssl.prvtkey_pem = (const uint8_t *)g_agent.key_pem;
    ssl.prvtkey_len = strlen(g_agent.key_pem) + 1;
    ssl.port_secure = g_agent.port;
    ssl.tls_handshake_timeout_ms = CONFIG_ESP_OTA_AGENT_TLS_HANDSHAKE_TIMEOUT_MS;
    ssl.httpd.stack_size = CONFIG_ESP_OTA_AGENT_SERVER_TASK_STACK;
    ssl.httpd.max_open_sockets = CONFIG_ESP_OTA_AGENT_MAX_SESSIONS;
    ssl.httpd.max_uri_handlers = 10;
    ssl.httpd.max_req_hdr_len = 1024;  /* a long secret and Last-Event-ID must fit */
    ssl.httpd.lru_purge_enable = true;
#if CONFIG_IDF_TARGET_LINUX
    /* Host tests run several devices on one machine: each needs its own control socket
     * (UDP), and the API's own port number is unique among them. */
    ssl.httpd.ctrl_port = g_agent.port;
#else
    ssl.httpd.ctrl_port = CONFIG_ESP_OTA_AGENT_CTRL_PORT;
#endif
    err = httpd_ssl_start(&g_agent.server, &ssl);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "httpd_ssl_start on port %u: %s", g_agent.port, esp_err_to_name(err));
        agent_events_stop();
        return err;
    }
    err = agent_api_register(g_agent.server);
    if (err != ESP_OK) {
        httpd_ssl_stop(g_agent.server);
        g_agent.server = NULL;
        agent_events_stop();
        return err;
    }
    g_agent.running = true;

    if (config->mdns) {
        err = start_mdns();
        if (err != ESP_OK) {
            /* Home Assistant can still add the device by its address. */
            ESP_LOGW(TAG, "mDNS advertisement failed: %s", esp_err_to_name(err));
        }
    }
    ESP_LOGI(TAG, "serving the ESP OTA API v%d on port %u (%s %s)", AGENT_API_VERSION,
             g_agent.port, g_agent.project, app->version);
    return ESP_OK;
}

esp_err_t esp_ota_agent_stop(void)
{
    if (!g_agent.running) {
        return ESP_ERR_INVALID_STATE;
    }
    agent_ota_stop();
    if (g_agent.mdns_started) {
        mdns_free();
        g_agent.mdns_started = false;
    } else {
        mdns_service_remove("_esp-ota", "_tcp");
    }
    agent_events_stop();
    httpd_ssl_stop(g_agent.server);
    g_agent.server = NULL;
    g_agent.running = false;
    free(g_agent.secret);
    free(g_agent.cert_pem);
    free(g_agent.key_pem);
    g_agent.secret = g_agent.cert_pem = g_agent.key_pem = NULL;
    return ESP_OK;
}
