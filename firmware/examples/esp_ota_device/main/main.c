/*
 * ESP OTA example: a firmware that Home Assistant's ESP OTA integration discovers and
 * updates. Shaped like Espressif's advanced_https_ota example: NVS, the network
 * (Wi-Fi or Ethernet from protocol_examples_common, set with `idf.py menuconfig`), then
 * the agent, which serves the device API and runs esp_https_ota when asked.
 *
 * This example code is in the Public Domain (or CC0 licensed, at your option.)
 */
#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "nvs.h"
#include "nvs_flash.h"
#include "protocol_examples_common.h"

#include "esp_ota_agent.h"

static const char *TAG = "esp_ota_device";

/* Called when Home Assistant confirms a new firmware after it booted. Check here what
 * your firmware must be able to do (sensors answer, the cloud is reachable, ...):
 * anything but ESP_OK keeps the image unconfirmed, and the bootloader rolls back to the
 * previous firmware at the next reboot. This example reads one setting of its own, the
 * u8 "healthy" in NVS namespace "example" (absent: healthy), so that a test bench can see
 * a release refused and rolled back. */
static esp_err_t health_check(void *ctx)
{
    (void)ctx;
    uint8_t healthy = 1;
    nvs_handle_t nvs;
    if (nvs_open("example", NVS_READONLY, &nvs) == ESP_OK) {
        if (nvs_get_u8(nvs, "healthy", &healthy) != ESP_OK) {
            healthy = 1;
        }
        nvs_close(nvs);
    }
    return healthy != 0 ? ESP_OK : ESP_FAIL;
}

static void on_agent_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    (void)base;
    (void)data;
    if (id == ESP_OTA_AGENT_EVENT_REBOOTING) {
        ESP_LOGI(TAG, "a new firmware is installed; restarting into it");
    }
}

void app_main(void)
{
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    ESP_ERROR_CHECK(example_connect());

    ESP_ERROR_CHECK(esp_event_handler_register(ESP_OTA_AGENT_EVENT, ESP_EVENT_ANY_ID,
                                               on_agent_event, NULL));
    esp_ota_agent_config_t config = ESP_OTA_AGENT_CONFIG_DEFAULT();
    config.health_check = health_check;  /* the secret comes from NVS ("esp_ota"/"secret") */
    ESP_ERROR_CHECK(esp_ota_agent_start(&config));
}
