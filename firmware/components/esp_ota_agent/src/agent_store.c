/*
 * What the agent keeps in NVS (namespace "esp_ota"): the device secret and port
 * (provisioned), its certificate and key (made at first boot), the last update's status
 * (so it survives the reboot that ends an update) and how far event ids have gone.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdlib.h>
#include <string.h>
#include "esp_log.h"
#include "esp_mac.h"
#include "nvs.h"

#include "agent_priv.h"

static const char *TAG = "esp_ota_agent";

#define KEY_SECRET "secret"
#define KEY_PORT "port"
#define KEY_CERT "cert"
#define KEY_PRIVATE_KEY "key"
#define KEY_LAST_OTA "last_ota"
#define KEY_EVENT_IDS "event_ids"
/* A secret longer than this is not a secret a person provisions: refuse to load it. */
#define MAX_SECRET_BYTES 256
#define MAX_PEM_BYTES 4096
/* Event ids are promised to NVS this many at a time: one write per block, not per event,
 * and ids still only grow across reboots (the ones a reboot leaves unused are skipped). */
#define EVENT_ID_BLOCK 256

static esp_err_t read_string(nvs_handle_t nvs, const char *key, size_t limit, char **out)
{
    size_t length = 0;
    esp_err_t err = nvs_get_str(nvs, key, NULL, &length);
    if (err != ESP_OK) {
        return err;
    }
    if (length == 0 || length > limit) {
        return ESP_ERR_INVALID_SIZE;
    }
    char *value = malloc(length);
    if (value == NULL) {
        return ESP_ERR_NO_MEM;
    }
    err = nvs_get_str(nvs, key, value, &length);
    if (err != ESP_OK) {
        free(value);
        return err;
    }
    *out = value;
    return ESP_OK;
}

static char *copy_string(const char *text)
{
    size_t length = strlen(text) + 1;
    char *copy = malloc(length);
    if (copy != NULL) {
        memcpy(copy, text, length);
    }
    return copy;
}

static esp_err_t load_or_make_certificate(nvs_handle_t nvs)
{
    char *cert = NULL;
    char *key = NULL;
    if (read_string(nvs, KEY_CERT, MAX_PEM_BYTES, &cert) == ESP_OK
        && read_string(nvs, KEY_PRIVATE_KEY, MAX_PEM_BYTES, &key) == ESP_OK) {
        g_agent.cert_pem = cert;
        g_agent.key_pem = key;
        return ESP_OK;
    }
    free(cert);
    free(key);

    uint8_t mac[6] = {0};
    esp_read_mac(mac, ESP_MAC_WIFI_STA);
    char common_name[32];
    snprintf(common_name, sizeof(common_name), "esp-ota-%02x%02x%02x%02x%02x%02x",
             mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    ESP_LOGI(TAG, "first boot: making the device certificate (%s)", common_name);
    esp_err_t err = agent_crypto_make_certificate(common_name, &cert, &key);
    if (err != ESP_OK) {
        return err;
    }
    err = nvs_set_str(nvs, KEY_CERT, cert);
    if (err == ESP_OK) {
        err = nvs_set_str(nvs, KEY_PRIVATE_KEY, key);
    }
    if (err == ESP_OK) {
        err = nvs_commit(nvs);
    }
    if (err != ESP_OK) {
        /* Still usable for this boot; Home Assistant would see a new certificate after the
         * next one, so say it loudly. */
        ESP_LOGE(TAG, "the certificate could not be kept in NVS (%s)", esp_err_to_name(err));
    }
    g_agent.cert_pem = cert;
    g_agent.key_pem = key;
    return ESP_OK;
}

esp_err_t agent_store_open_identity(const esp_ota_agent_config_t *config)
{
    nvs_handle_t nvs;
    esp_err_t err = nvs_open(ESP_OTA_AGENT_NVS_NAMESPACE, NVS_READWRITE, &nvs);
    if (err != ESP_OK) {
        return err;
    }
    if (config->secret != NULL) {
        g_agent.secret = copy_string(config->secret);
        err = g_agent.secret != NULL ? ESP_OK : ESP_ERR_NO_MEM;
    } else {
        err = read_string(nvs, KEY_SECRET, MAX_SECRET_BYTES, &g_agent.secret);
        if (err == ESP_ERR_NVS_NOT_FOUND || err == ESP_ERR_INVALID_SIZE) {
            err = ESP_OK;  /* no secret: the agent runs and refuses everyone */
        }
    }
    if (err == ESP_OK) {
        if (config->cert_pem != NULL) {
            g_agent.cert_pem = copy_string(config->cert_pem);
            g_agent.key_pem = copy_string(config->key_pem);
            err = g_agent.cert_pem != NULL && g_agent.key_pem != NULL ? ESP_OK : ESP_ERR_NO_MEM;
        } else {
            err = load_or_make_certificate(nvs);
        }
    }
    nvs_close(nvs);
    if (err != ESP_OK) {
        free(g_agent.secret);
        free(g_agent.cert_pem);
        free(g_agent.key_pem);
        g_agent.secret = g_agent.cert_pem = g_agent.key_pem = NULL;
    }
    return err;
}

uint16_t agent_store_port(void)
{
    uint16_t port = 0;
    nvs_handle_t nvs;
    if (nvs_open(ESP_OTA_AGENT_NVS_NAMESPACE, NVS_READONLY, &nvs) == ESP_OK) {
        if (nvs_get_u16(nvs, KEY_PORT, &port) != ESP_OK) {
            port = 0;
        }
        nvs_close(nvs);
    }
    return port != 0 ? port : CONFIG_ESP_OTA_AGENT_PORT;
}

void agent_store_load_status(agent_ota_status_t *status)
{
    agent_ota_status_idle(status);
    nvs_handle_t nvs;
    if (nvs_open(ESP_OTA_AGENT_NVS_NAMESPACE, NVS_READONLY, &nvs) != ESP_OK) {
        return;
    }
    uint8_t blob[AGENT_OTA_STATUS_PACKED_SIZE];
    size_t length = sizeof(blob);
    if (nvs_get_blob(nvs, KEY_LAST_OTA, blob, &length) == ESP_OK
        && !agent_ota_status_unpack(blob, length, status)) {
        ESP_LOGW(TAG, "the stored status of the last update is unreadable: ignored");
        agent_ota_status_idle(status);
    }
    nvs_close(nvs);
}

void agent_store_save_status(const agent_ota_status_t *status)
{
    uint8_t blob[AGENT_OTA_STATUS_PACKED_SIZE];
    size_t length = agent_ota_status_pack(status, blob, sizeof(blob));
    nvs_handle_t nvs;
    esp_err_t err = nvs_open(ESP_OTA_AGENT_NVS_NAMESPACE, NVS_READWRITE, &nvs);
    if (err == ESP_OK) {
        err = nvs_set_blob(nvs, KEY_LAST_OTA, blob, length);
        if (err == ESP_OK) {
            err = nvs_commit(nvs);
        }
        nvs_close(nvs);
    }
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "the update's status could not be kept in NVS: %s", esp_err_to_name(err));
    }
}

uint32_t agent_store_first_event_id(void)
{
    uint32_t stored = 0;
    nvs_handle_t nvs;
    if (nvs_open(ESP_OTA_AGENT_NVS_NAMESPACE, NVS_READONLY, &nvs) == ESP_OK) {
        if (nvs_get_u32(nvs, KEY_EVENT_IDS, &stored) != ESP_OK) {
            stored = 0;
        }
        nvs_close(nvs);
    }
    return stored != 0 ? stored : 1;
}

uint32_t agent_store_reserve_event_ids(uint32_t next_id)
{
    uint32_t reserved = next_id + EVENT_ID_BLOCK;
    nvs_handle_t nvs;
    esp_err_t err = nvs_open(ESP_OTA_AGENT_NVS_NAMESPACE, NVS_READWRITE, &nvs);
    if (err == ESP_OK) {
        err = nvs_set_u32(nvs, KEY_EVENT_IDS, reserved);
        if (err == ESP_OK) {
            err = nvs_commit(nvs);
        }
        nvs_close(nvs);
    }
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "event ids could not be reserved in NVS: %s", esp_err_to_name(err));
    }
    return reserved;
}
