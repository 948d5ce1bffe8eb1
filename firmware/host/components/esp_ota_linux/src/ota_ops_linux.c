/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../README.md).
 *
 * esp_ota_ops (ESP-IDF's app_update component, not built for linux) on the file-backed
 * esp_partition flash, following ESP-IDF v5.5's components/app_update/esp_ota_ops.c
 * function by function, with the same error codes, for an app built with
 * CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and (when ESP_OTA_LINUX_ANTI_ROLLBACK is 1, the
 * default) CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK. Flash encryption and secure boot are off.
 * esp_image_verify is olx_image_verify (src/core/olx_image.c) against the emulated chip.
 *
 * The OTA handles live in RAM for one boot, as in ESP-IDF (s_ota_ops_entries_head); here a
 * FreeRTOS recursive mutex also serialises the handle list and otadata updates between
 * tasks. Differences from ESP-IDF v5.5.5, all harmless: esp_ota_begin frees its handle when
 * the erase fails (ESP-IDF leaks it); bootloader and partition-table partitions as OTA
 * targets and secure boot key revocation are not provided.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "esp_app_desc.h"
#include "esp_bootloader_desc.h"
#include "esp_flash_partitions.h"
#include "esp_image_format.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"

#include "olx_internal.h"

#define SUB_TYPE_ID(i) ((i) & 0x0F)
#define ALIGN_UP(num, align) (((num) + ((align) - 1)) & ~((align) - 1))

_Static_assert(sizeof(esp_ota_select_entry_t) == sizeof(olx_otadata_entry_t), "otadata entry");
_Static_assert(sizeof(esp_image_header_t) == sizeof(olx_image_header_t), "image header");

typedef struct ota_ops_entry_ {
    uint32_t handle;
    struct {
        const esp_partition_t *staging;
        const esp_partition_t *final;
        bool finalize_with_copy;
    } partition;
    bool need_erase;
    uint32_t wrote_size;
    uint8_t partial_bytes;
    bool ota_resumption;
    uint8_t partial_data[16];
    LIST_ENTRY(ota_ops_entry_) entries;
} ota_ops_entry_t;

static LIST_HEAD(ota_ops_entries_head, ota_ops_entry_) s_ota_ops_entries_head =
    LIST_HEAD_INITIALIZER(s_ota_ops_entries_head);
static uint32_t s_ota_ops_last_handle = 0;

static const char *TAG = "esp_ota_ops";

/* ---- locking ------------------------------------------------------------------------------ */

static SemaphoreHandle_t s_lock;
static StaticSemaphore_t s_lock_buf;

static bool scheduler_running(void)
{
    return xTaskGetSchedulerState() != taskSCHEDULER_NOT_STARTED;
}

static void ota_lock(void)
{
    if (!scheduler_running()) {
        return;
    }
    if (s_lock == NULL) {
        vTaskSuspendAll();
        if (s_lock == NULL) {
            s_lock = xSemaphoreCreateRecursiveMutexStatic(&s_lock_buf);
        }
        xTaskResumeAll();
    }
    xSemaphoreTakeRecursive(s_lock, portMAX_DELAY);
}

static void ota_unlock(void)
{
    if (scheduler_running() && s_lock != NULL) {
        xSemaphoreGiveRecursive(s_lock);
    }
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static bool is_ota_partition(const esp_partition_t *p)
{
    return (p != NULL && p->type == ESP_PARTITION_TYPE_APP && p->subtype >= ESP_PARTITION_SUBTYPE_APP_OTA_0 &&
            p->subtype < ESP_PARTITION_SUBTYPE_APP_OTA_MAX);
}

static bool anti_rollback(void)
{
    return g_olx.anti_rollback;
}

static const esp_partition_t *read_otadata(esp_ota_select_entry_t *two_otadata)
{
    const esp_partition_t *otadata_partition =
        esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_DATA_OTA, NULL);
    if (otadata_partition == NULL) {
        ESP_LOGE(TAG, "not found otadata");
        return NULL;
    }
    esp_partition_mmap_handle_t ota_data_map;
    const void *result = NULL;
    esp_err_t err = esp_partition_mmap(otadata_partition, 0, otadata_partition->size, ESP_PARTITION_MMAP_DATA,
                                       &result, &ota_data_map);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "mmap otadata filed. Err=0x%8x", err);
        return NULL;
    }
    memcpy(&two_otadata[0], result, sizeof(esp_ota_select_entry_t));
    memcpy(&two_otadata[1], (const uint8_t *)result + otadata_partition->erase_size, sizeof(esp_ota_select_entry_t));
    esp_partition_munmap(ota_data_map);
    return otadata_partition;
}

static const olx_otadata_entry_t *as_olx(const esp_ota_select_entry_t *e)
{
    return (const olx_otadata_entry_t *)e;
}

static int read_image(void *ctx, uint32_t offset, void *buf, size_t len)
{
    return esp_partition_read((const esp_partition_t *)ctx, offset, buf, len) == ESP_OK ? 0 : -1;
}

/* image_validate: esp_image_verify of the partition's image against the emulated chip. */
static esp_err_t image_validate(const esp_partition_t *partition, bool silent)
{
    olx_chip_t chip = {.chip_id = g_olx.chip_id, .chip_revision = g_olx.chip_revision};
    char msg[200];
    olx_img_result_t r = olx_image_verify(read_image, (void *)partition, partition->size, &chip, NULL, msg, sizeof(msg));
    if (r != OLX_IMG_OK) {
        if (!silent) {
            ESP_LOGE("esp_image", "%s: %s", partition->label, msg);
        }
        return ESP_ERR_OTA_VALIDATE_FAILED;
    }
    return ESP_OK;
}

static esp_ota_img_states_t set_new_state_otadata(void)
{
    return ESP_OTA_IMG_NEW; /* CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE */
}

static ota_ops_entry_t *get_ota_ops_entry(esp_ota_handle_t handle)
{
    ota_ops_entry_t *it;
    LIST_FOREACH(it, &s_ota_ops_entries_head, entries) {
        if (it->handle == handle) {
            break;
        }
    }
    return it;
}

static ota_ops_entry_t *esp_ota_init_entry(const esp_partition_t *partition)
{
    ota_ops_entry_t *new_entry = (ota_ops_entry_t *)calloc(1, sizeof(ota_ops_entry_t));
    if (new_entry == NULL) {
        return NULL;
    }
    LIST_INSERT_HEAD(&s_ota_ops_entries_head, new_entry, entries);
    new_entry->partition.staging = partition;
    new_entry->partition.final = partition;
    new_entry->partition.finalize_with_copy = false;
    new_entry->handle = ++s_ota_ops_last_handle;
    return new_entry;
}

static esp_err_t rewrite_ota_seq(esp_ota_select_entry_t *two_otadata, uint32_t seq, uint8_t sec_id,
                                 const esp_partition_t *ota_data_partition)
{
    if (two_otadata == NULL || sec_id > 1) {
        return ESP_ERR_INVALID_ARG;
    }
    two_otadata[sec_id].ota_seq = seq;
    two_otadata[sec_id].crc = olx_otadata_crc(as_olx(&two_otadata[sec_id]));
    esp_err_t ret = esp_partition_erase_range(ota_data_partition, sec_id * ota_data_partition->erase_size,
                                              ota_data_partition->erase_size);
    if (ret != ESP_OK) {
        return ret;
    }
    return esp_partition_write(ota_data_partition, ota_data_partition->erase_size * sec_id, &two_otadata[sec_id],
                               sizeof(esp_ota_select_entry_t));
}

/* ---- esp_ota_begin / resume / write / end / abort ----------------------------------------------- */

esp_err_t esp_ota_begin(const esp_partition_t *partition, size_t image_size, esp_ota_handle_t *out_handle)
{
    if ((partition == NULL) || (out_handle == NULL)) {
        return ESP_ERR_INVALID_ARG;
    }
    partition = esp_partition_verify(partition);
    if (partition == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    if (partition->type == ESP_PARTITION_TYPE_APP) {
        if (!is_ota_partition(partition)) {
            return ESP_ERR_INVALID_ARG;
        }
        const esp_partition_t *running_partition = esp_ota_get_running_partition();
        if (partition == running_partition) {
            return ESP_ERR_OTA_PARTITION_CONFLICT;
        }
        esp_ota_img_states_t ota_state_running_part;
        if (esp_ota_get_state_partition(running_partition, &ota_state_running_part) == ESP_OK) {
            if (ota_state_running_part == ESP_OTA_IMG_PENDING_VERIFY) {
                ESP_LOGE(TAG, "Running app has not confirmed state (ESP_OTA_IMG_PENDING_VERIFY)");
                return ESP_ERR_OTA_ROLLBACK_INVALID_STATE;
            }
        }
    }

    ota_lock();
    ota_ops_entry_t *new_entry = esp_ota_init_entry(partition);
    if (new_entry == NULL) {
        ota_unlock();
        return ESP_ERR_NO_MEM;
    }
    new_entry->need_erase = (image_size == OTA_WITH_SEQUENTIAL_WRITES);
    esp_ota_handle_t handle = new_entry->handle;

    if (image_size != OTA_WITH_SEQUENTIAL_WRITES) {
        size_t erase_size;
        if ((image_size == 0) || (image_size == OTA_SIZE_UNKNOWN)) {
            erase_size = partition->size;
        } else {
            erase_size = ALIGN_UP(image_size, partition->erase_size);
        }
        esp_err_t err = esp_partition_erase_range(partition, 0, erase_size);
        if (err != ESP_OK) {
            LIST_REMOVE(new_entry, entries);
            free(new_entry);
            ota_unlock();
            return err;
        }
    }
    if (is_ota_partition(partition)) {
        esp_ota_invalidate_inactive_ota_data_slot();
    }
    ota_unlock();
    *out_handle = handle;
    return ESP_OK;
}

esp_err_t esp_ota_resume(const esp_partition_t *partition, const size_t erase_size, const size_t image_offset,
                         esp_ota_handle_t *out_handle)
{
    if ((partition == NULL) || (out_handle == NULL)) {
        return ESP_ERR_INVALID_ARG;
    }
    if (image_offset > partition->size) {
        return ESP_ERR_INVALID_ARG;
    }
    partition = esp_partition_verify(partition);
    if (partition == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    if (partition->type == ESP_PARTITION_TYPE_APP) {
        if (!is_ota_partition(partition)) {
            return ESP_ERR_INVALID_ARG;
        }
    }
    const esp_partition_t *running_partition = esp_ota_get_running_partition();
    if (partition == running_partition) {
        return ESP_ERR_OTA_PARTITION_CONFLICT;
    }
    ota_lock();
    ota_ops_entry_t *new_entry = esp_ota_init_entry(partition);
    if (new_entry == NULL) {
        ota_unlock();
        return ESP_ERR_NO_MEM;
    }
    new_entry->ota_resumption = true;
    new_entry->wrote_size = (uint32_t)image_offset;
    new_entry->need_erase = (erase_size == OTA_WITH_SEQUENTIAL_WRITES);
    *out_handle = new_entry->handle;
    ota_unlock();
    return ESP_OK;
}

esp_err_t esp_ota_set_final_partition(esp_ota_handle_t handle, const esp_partition_t *final, bool finalize_with_copy)
{
    ota_lock();
    ota_ops_entry_t *it = get_ota_ops_entry(handle);
    esp_err_t ret = ESP_OK;
    if (final == NULL) {
        ret = ESP_ERR_INVALID_ARG;
    } else if (it == NULL) {
        ret = ESP_ERR_NOT_FOUND;
    } else if (!it->ota_resumption && it->wrote_size != 0) {
        ret = ESP_ERR_INVALID_STATE;
    } else if (it->partition.staging != final) {
        const esp_partition_t *final_partition = esp_partition_verify(final);
        if (final_partition == NULL) {
            ret = ESP_ERR_NOT_FOUND;
        } else {
            ESP_LOGI(TAG, "Staging partition - <%s>. Final partition - <%s>.", it->partition.staging->label,
                     final_partition->label);
            it->partition.final = final_partition;
            it->partition.finalize_with_copy = finalize_with_copy;
        }
    }
    ota_unlock();
    return ret;
}

static esp_err_t ota_write_locked(ota_ops_entry_t *it, const uint8_t *data_bytes, size_t size)
{
    esp_err_t ret;
    const esp_partition_t *staging = it->partition.staging;
    if (it->need_erase) {
        /* must erase the partition before writing to it */
        uint32_t first_sector = it->wrote_size / staging->erase_size;
        uint32_t last_sector = (uint32_t)((it->wrote_size + size - 1) / staging->erase_size);
        ret = ESP_OK;
        if ((it->wrote_size % staging->erase_size) == 0) {
            ret = esp_partition_erase_range(staging, it->wrote_size,
                                            ((last_sector - first_sector) + 1) * staging->erase_size);
        } else if (first_sector != last_sector) {
            ret = esp_partition_erase_range(staging, (first_sector + 1) * staging->erase_size,
                                            (last_sector - first_sector) * staging->erase_size);
        }
        if (ret != ESP_OK) {
            return ret;
        }
    }
    if (it->wrote_size == 0 && it->partial_bytes == 0 && size > 0) {
        if (it->partition.final->type == ESP_PARTITION_TYPE_APP) {
            if (data_bytes[0] != ESP_IMAGE_HEADER_MAGIC) {
                ESP_LOGE(TAG, "OTA image has invalid magic byte (expected 0xE9, saw 0x%02x)", data_bytes[0]);
                return ESP_ERR_OTA_VALIDATE_FAILED;
            }
        }
    }
    /* esp_flash_encryption_enabled() is false: no 16-byte block caching */
    ret = esp_partition_write(staging, it->wrote_size, data_bytes, size);
    if (ret == ESP_OK) {
        it->wrote_size += (uint32_t)size;
    }
    return ret;
}

esp_err_t esp_ota_write(esp_ota_handle_t handle, const void *data, size_t size)
{
    if (data == NULL) {
        ESP_LOGE(TAG, "write data is invalid");
        return ESP_ERR_INVALID_ARG;
    }
    if (size == 0) {
        ESP_LOGD(TAG, "write data size is 0");
        return ESP_OK;
    }
    ota_lock();
    ota_ops_entry_t *it = get_ota_ops_entry(handle);
    esp_err_t ret;
    if (it == NULL) {
        ESP_LOGE(TAG, "not found the handle");
        ret = ESP_ERR_INVALID_ARG;
    } else {
        ret = ota_write_locked(it, data, size);
    }
    ota_unlock();
    return ret;
}

esp_err_t esp_ota_write_with_offset(esp_ota_handle_t handle, const void *data, size_t size, uint32_t offset)
{
    if (data == NULL) {
        ESP_LOGE(TAG, "write data is invalid");
        return ESP_ERR_INVALID_ARG;
    }
    ota_lock();
    ota_ops_entry_t *it = get_ota_ops_entry(handle);
    esp_err_t ret;
    if (it == NULL) {
        ESP_LOGE(TAG, "OTA handle not found");
        ret = ESP_ERR_INVALID_ARG;
    } else {
        /* ESP-IDF asserts that the partition was erased before (not OTA_WITH_SEQUENTIAL_WRITES) */
        assert(it->need_erase == 0 && "must erase the partition before writing to it");
        ret = esp_partition_write(it->partition.staging, offset, data, size);
        if (ret == ESP_OK) {
            it->wrote_size += (uint32_t)size;
        }
    }
    ota_unlock();
    return ret;
}

esp_err_t esp_ota_abort(esp_ota_handle_t handle)
{
    ota_lock();
    ota_ops_entry_t *it = get_ota_ops_entry(handle);
    if (it == NULL) {
        ota_unlock();
        return ESP_ERR_NOT_FOUND;
    }
    LIST_REMOVE(it, entries);
    free(it);
    ota_unlock();
    return ESP_OK;
}

static esp_err_t ota_verify_partition(ota_ops_entry_t *ota_ops)
{
    if (ota_ops->partition.final->type == ESP_PARTITION_TYPE_APP) {
        return image_validate(ota_ops->partition.staging, false);
    }
    return ESP_OK;
}

esp_err_t esp_ota_end(esp_ota_handle_t handle)
{
    ota_lock();
    ota_ops_entry_t *it = get_ota_ops_entry(handle);
    esp_err_t ret = ESP_OK;
    if (it == NULL) {
        ota_unlock();
        return ESP_ERR_NOT_FOUND;
    }
    /* esp_ota_end() is only valid if some data was written to this handle */
    if (it->wrote_size == 0) {
        ret = ESP_ERR_INVALID_ARG;
    } else {
        ret = ota_verify_partition(it);
        if (ret != ESP_OK) {
            ESP_LOGE(TAG, "New image failed verification");
        } else if (it->partition.finalize_with_copy) {
            ESP_LOGI(TAG, "Copy from <%s> staging partition to <%s>...", it->partition.staging->label,
                     it->partition.final->label);
            ret = esp_partition_copy(it->partition.final, 0, it->partition.staging, 0, it->partition.final->size);
        }
    }
    LIST_REMOVE(it, entries);
    free(it);
    ota_unlock();
    return ret;
}

/* ---- boot partition ---------------------------------------------------------------------------- */

uint8_t esp_ota_get_app_partition_count(void)
{
    uint16_t ota_app_count = 0;
    while (esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_OTA_MIN + ota_app_count, NULL) !=
           NULL) {
        assert(ota_app_count < 16 && "must erase the partition before writing to it");
        ota_app_count++;
    }
    return (uint8_t)ota_app_count;
}

static esp_err_t esp_rewrite_ota_data(esp_partition_subtype_t subtype)
{
    esp_ota_select_entry_t otadata[2];
    const esp_partition_t *otadata_partition = read_otadata(otadata);
    if (otadata_partition == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    uint8_t ota_app_count = esp_ota_get_app_partition_count();
    if (SUB_TYPE_ID(subtype) >= ota_app_count) {
        return ESP_ERR_INVALID_ARG;
    }
    int sector;
    olx_otadata_entry_t entry;
    olx_otadata_for_boot_slot((const olx_otadata_entry_t *)otadata, SUB_TYPE_ID(subtype), ota_app_count,
                              set_new_state_otadata(), &sector, &entry);
    memcpy(&otadata[sector], &entry, sizeof(entry));
    return rewrite_ota_seq(otadata, entry.ota_seq, (uint8_t)sector, otadata_partition);
}

esp_err_t esp_ota_set_boot_partition(const esp_partition_t *partition)
{
    if (partition == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (image_validate(partition, false) != ESP_OK) {
        return ESP_ERR_OTA_VALIDATE_FAILED;
    }
    if (partition->type != ESP_PARTITION_TYPE_APP) {
        return ESP_ERR_INVALID_ARG;
    }
    esp_err_t ret;
    ota_lock();
    if (partition->subtype == ESP_PARTITION_SUBTYPE_APP_FACTORY) {
        /* set boot partition to factory bin: just format the ota info partition */
        const esp_partition_t *find_partition =
            esp_partition_find_first(ESP_PARTITION_TYPE_DATA, ESP_PARTITION_SUBTYPE_DATA_OTA, NULL);
        ret = find_partition != NULL ? esp_partition_erase_range(find_partition, 0, find_partition->size)
                                     : ESP_ERR_NOT_FOUND;
    } else {
        ret = ESP_OK;
        if (anti_rollback()) {
            esp_app_desc_t partition_app_desc;
            ret = esp_ota_get_partition_description(partition, &partition_app_desc);
            if (ret == ESP_OK && !olx_efuse_check_secure_version(partition_app_desc.secure_version)) {
                ESP_LOGE(TAG, "This a new partition can not be booted due to a secure version is lower than stored in "
                              "efuse. Partition will be erased.");
                ret = esp_partition_erase_range(partition, 0, partition->size);
                if (ret == ESP_OK) {
                    ret = ESP_ERR_OTA_SMALL_SEC_VER;
                }
            }
        }
        if (ret == ESP_OK) {
            ret = esp_rewrite_ota_data(partition->subtype);
        }
    }
    ota_unlock();
    return ret;
}

static const esp_partition_t *find_default_boot_partition(void)
{
    const esp_partition_t *result =
        esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_FACTORY, NULL);
    if (result != NULL) {
        return result;
    }
    for (esp_partition_subtype_t s = ESP_PARTITION_SUBTYPE_APP_OTA_MIN; s != ESP_PARTITION_SUBTYPE_APP_OTA_MAX; s++) {
        result = esp_partition_find_first(ESP_PARTITION_TYPE_APP, s, NULL);
        if (result != NULL) {
            return result;
        }
    }
    result = esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_TEST, NULL);
    if (result != NULL) {
        return result;
    }
    ESP_LOGE(TAG, "invalid partition table, no app partitions");
    return NULL;
}

const esp_partition_t *esp_ota_get_boot_partition(void)
{
    esp_ota_select_entry_t otadata[2];
    ota_lock();
    const esp_partition_t *otadata_partition = read_otadata(otadata);
    ota_unlock();
    if (otadata_partition == NULL) {
        return NULL;
    }
    int ota_app_count = esp_ota_get_app_partition_count();
    if ((olx_otadata_invalid(as_olx(&otadata[0])) && olx_otadata_invalid(as_olx(&otadata[1]))) || ota_app_count == 0) {
        return find_default_boot_partition();
    }
    int active_otadata = olx_active_otadata((const olx_otadata_entry_t *)otadata);
    if (active_otadata != -1) {
        int ota_slot = (int)olx_otadata_slot(as_olx(&otadata[active_otadata]), (unsigned)ota_app_count);
        return esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_OTA_MIN + ota_slot, NULL);
    }
    ESP_LOGE(TAG, "ota data invalid, no current app. Assuming factory");
    return find_default_boot_partition();
}

/* The slot the boot step started (ESP-IDF finds the partition holding its own code). */
const esp_partition_t *esp_ota_get_running_partition(void)
{
    static const esp_partition_t *curr_partition = NULL;
    if (curr_partition != NULL) {
        return curr_partition;
    }
    esp_partition_iterator_t it = esp_partition_find(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_ANY, NULL);
    assert(it != NULL); /* has to be at least one app partition */
    while (it != NULL) {
        const esp_partition_t *p = esp_partition_get(it);
        if (p->address == g_olx.booted_address && p->subtype == g_olx.booted_subtype) {
            esp_partition_iterator_release(it);
            curr_partition = p;
            return p;
        }
        it = esp_partition_next(it);
    }
    abort(); /* Partition table is invalid or corrupt */
}

const esp_partition_t *esp_ota_get_next_update_partition(const esp_partition_t *start_from)
{
    const esp_partition_t *default_ota = NULL;
    bool next_is_result = false;
    if (start_from == NULL) {
        start_from = esp_ota_get_running_partition();
    } else {
        start_from = esp_partition_verify(start_from);
    }
    assert(start_from != NULL);
    for (esp_partition_subtype_t t = ESP_PARTITION_SUBTYPE_APP_OTA_0; t != ESP_PARTITION_SUBTYPE_APP_OTA_MAX; t++) {
        const esp_partition_t *p = esp_partition_find_first(ESP_PARTITION_TYPE_APP, t, NULL);
        if (p == NULL) {
            continue;
        }
        if (default_ota == NULL) {
            default_ota = p;
        }
        if (p == start_from) {
            next_is_result = true;
        } else if (next_is_result) {
            return p;
        }
    }
    return default_ota;
}

esp_err_t esp_ota_get_partition_description(const esp_partition_t *partition, esp_app_desc_t *app_desc)
{
    if (partition == NULL || app_desc == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (partition->type != ESP_PARTITION_TYPE_APP) {
        return ESP_ERR_NOT_SUPPORTED;
    }
    esp_err_t err = esp_partition_read(partition, sizeof(esp_image_header_t) + sizeof(esp_image_segment_header_t),
                                       app_desc, sizeof(esp_app_desc_t));
    if (err != ESP_OK) {
        return err;
    }
    if (app_desc->magic_word != ESP_APP_DESC_MAGIC_WORD) {
        return ESP_ERR_NOT_FOUND;
    }
    return ESP_OK;
}

/* The second-stage bootloader's descriptor: at 0x1000 (ESP32's bootloader offset), after the
 * image and first segment headers. The emulated chip has no bootloader image unless the
 * harness writes one there: ESP_ERR_NOT_FOUND. */
esp_err_t esp_ota_get_bootloader_description(const esp_partition_t *bootloader_partition, esp_bootloader_desc_t *desc)
{
    if (desc == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    esp_partition_t partition = {0};
    if (bootloader_partition == NULL) {
        partition.address = 0x1000;
        partition.size = OLX_PARTITION_TABLE_OFFSET - 0x1000;
        partition.erase_size = OLX_SECTOR_SIZE;
        partition.type = ESP_PARTITION_TYPE_BOOTLOADER;
    } else {
        memcpy(&partition, bootloader_partition, sizeof(partition));
    }
    esp_err_t err = esp_partition_read(&partition, sizeof(esp_image_header_t) + sizeof(esp_image_segment_header_t),
                                       desc, sizeof(esp_bootloader_desc_t));
    if (err != ESP_OK) {
        return err;
    }
    if (desc->magic_byte != ESP_BOOTLOADER_DESC_MAGIC_BYTE) {
        return ESP_ERR_NOT_FOUND;
    }
    return ESP_OK;
}

/* Deprecated esp_ota_ops.h aliases (esp_ota_app_desc.c). */
const esp_app_desc_t *esp_ota_get_app_description(void)
{
    return esp_app_get_description();
}

int esp_ota_get_app_elf_sha256(char *dst, size_t size)
{
    return esp_app_get_elf_sha256(dst, size);
}

/* ---- confirming or rejecting the running app ----------------------------------------------------- */

static esp_err_t esp_ota_set_anti_rollback(void)
{
    const esp_partition_t *partition = esp_ota_get_running_partition();
    esp_app_desc_t app_desc = {0};
    esp_err_t err = esp_ota_get_partition_description(partition, &app_desc);
    if (err == ESP_OK) {
        return olx_efuse_update_secure_version_logged(app_desc.secure_version);
    }
    return err;
}

bool esp_ota_check_rollback_is_possible(void)
{
    esp_ota_select_entry_t otadata[2];
    ota_lock();
    const esp_partition_t *otadata_partition = read_otadata(otadata);
    ota_unlock();
    if (otadata_partition == NULL) {
        return false;
    }
    int ota_app_count = esp_ota_get_app_partition_count();
    if (ota_app_count == 0) {
        return false;
    }
    bool valid_otadata[2] = {olx_otadata_valid(as_olx(&otadata[0])), olx_otadata_valid(as_olx(&otadata[1]))};
    int active_ota = olx_select_otadata((const olx_otadata_entry_t *)otadata, valid_otadata, true);
    if (active_ota == -1) {
        return false;
    }
    int last_active_ota = (~active_ota) & 1;
    const esp_partition_t *partition = NULL;
    if (!anti_rollback() && !valid_otadata[last_active_ota]) {
        partition = esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_FACTORY, NULL);
        if (partition != NULL && image_validate(partition, true) == ESP_OK) {
            return true;
        }
    }
    if (valid_otadata[last_active_ota]) {
        int slot = (int)olx_otadata_slot(as_olx(&otadata[last_active_ota]), (unsigned)ota_app_count);
        partition = esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_OTA_MIN + slot, NULL);
        if (partition != NULL && image_validate(partition, true) == ESP_OK) {
            if (!anti_rollback()) {
                return true;
            }
            esp_app_desc_t app_desc;
            if (esp_ota_get_partition_description(partition, &app_desc) == ESP_OK &&
                olx_efuse_check_secure_version(app_desc.secure_version)) {
                return true;
            }
        }
    }
    return false;
}

/* valid: confirm the running OTA app; !valid: mark it INVALID (the caller restarts). */
static esp_err_t esp_ota_current_ota_is_workable(bool valid)
{
    esp_ota_select_entry_t otadata[2];
    ota_lock();
    const esp_partition_t *otadata_partition = read_otadata(otadata);
    if (otadata_partition == NULL) {
        ota_unlock();
        return ESP_ERR_NOT_FOUND;
    }
    esp_err_t err = ESP_OK;
    int active_otadata = olx_active_otadata((const olx_otadata_entry_t *)otadata);
    if (active_otadata != -1 && esp_ota_get_app_partition_count() != 0) {
        if (valid == true && otadata[active_otadata].ota_state != ESP_OTA_IMG_VALID) {
            otadata[active_otadata].ota_state = ESP_OTA_IMG_VALID;
            ESP_LOGD(TAG, "OTA[current] partition is marked as VALID");
            err = rewrite_ota_seq(otadata, otadata[active_otadata].ota_seq, (uint8_t)active_otadata, otadata_partition);
            if (err == ESP_OK && anti_rollback()) {
                err = esp_ota_set_anti_rollback();
            }
        } else if (valid == false) {
            if (esp_ota_check_rollback_is_possible() == false) {
                ESP_LOGE(TAG, "Rollback is not possible, do not have any suitable apps in slots");
                err = ESP_ERR_OTA_ROLLBACK_FAILED;
            } else {
                ESP_LOGD(TAG, "OTA[current] partition is marked as INVALID");
                otadata[active_otadata].ota_state = ESP_OTA_IMG_INVALID;
                err = rewrite_ota_seq(otadata, otadata[active_otadata].ota_seq, (uint8_t)active_otadata,
                                      otadata_partition);
                if (err == ESP_OK) {
                    ESP_LOGI(TAG, "Rollback to previously worked partition.");
                }
            }
        }
    } else {
        ESP_LOGE(TAG, "Running firmware is factory");
        err = ESP_FAIL;
    }
    ota_unlock();
    return err;
}

esp_err_t esp_ota_mark_app_valid_cancel_rollback(void)
{
    return esp_ota_current_ota_is_workable(true);
}

esp_err_t esp_ota_mark_app_invalid_rollback(void)
{
    return esp_ota_current_ota_is_workable(false);
}

esp_err_t esp_ota_mark_app_invalid_rollback_and_reboot(void)
{
    esp_err_t ret = esp_ota_mark_app_invalid_rollback();
    if (ret == ESP_OK) {
        esp_restart();
    }
    return ret;
}

const esp_partition_t *esp_ota_get_last_invalid_partition(void)
{
    esp_ota_select_entry_t otadata[2];
    ota_lock();
    const esp_partition_t *otadata_partition = read_otadata(otadata);
    ota_unlock();
    if (otadata_partition == NULL) {
        return NULL;
    }
    int invalid_otadata = olx_last_invalid_otadata((const olx_otadata_entry_t *)otadata);
    int ota_app_count = esp_ota_get_app_partition_count();
    if (invalid_otadata != -1 && ota_app_count != 0) {
        int ota_slot = (int)olx_otadata_slot(as_olx(&otadata[invalid_otadata]), (unsigned)ota_app_count);
        const esp_partition_t *invalid_partition =
            esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_OTA_MIN + ota_slot, NULL);
        if (invalid_partition != NULL) {
            if (image_validate(invalid_partition, true) != ESP_OK) {
                ESP_LOGD(TAG, "Last invalid partition has corrupted app");
                return NULL;
            }
        }
        return invalid_partition;
    }
    return NULL;
}

esp_err_t esp_ota_get_state_partition(const esp_partition_t *partition, esp_ota_img_states_t *ota_state)
{
    if (partition == NULL || ota_state == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    if (!is_ota_partition(partition)) {
        return ESP_ERR_NOT_SUPPORTED;
    }
    esp_ota_select_entry_t otadata[2];
    int ota_app_count = esp_ota_get_app_partition_count();
    ota_lock();
    const esp_partition_t *otadata_partition = read_otadata(otadata);
    ota_unlock();
    if (otadata_partition == NULL || ota_app_count == 0) {
        return ESP_ERR_NOT_FOUND;
    }
    int req_ota_slot = partition->subtype - ESP_PARTITION_SUBTYPE_APP_OTA_MIN;
    for (int i = 0; i < 2; ++i) {
        int ota_slot = (int)olx_otadata_slot(as_olx(&otadata[i]), (unsigned)ota_app_count);
        if (ota_slot == req_ota_slot && otadata[i].crc == olx_otadata_crc(as_olx(&otadata[i]))) {
            *ota_state = otadata[i].ota_state;
            return ESP_OK;
        }
    }
    return ESP_ERR_NOT_FOUND;
}

static esp_err_t erase_last_boot_app_partition(bool skip_app_part_erase)
{
    esp_ota_select_entry_t otadata[2];
    const esp_partition_t *ota_data_partition = read_otadata(otadata);
    if (ota_data_partition == NULL) {
        return ESP_FAIL;
    }
    int active_otadata = olx_active_otadata((const olx_otadata_entry_t *)otadata);
    int ota_app_count = esp_ota_get_app_partition_count();
    if (active_otadata == -1 || ota_app_count == 0) {
        return ESP_FAIL;
    }
    int inactive_otadata = (~active_otadata) & 1;
    if (otadata[inactive_otadata].ota_seq == UINT32_MAX ||
        otadata[inactive_otadata].crc != olx_otadata_crc(as_olx(&otadata[inactive_otadata]))) {
        return ESP_FAIL;
    }
    int ota_slot = (int)olx_otadata_slot(as_olx(&otadata[inactive_otadata]), (unsigned)ota_app_count);
    const esp_partition_t *last_boot_app_partition_from_otadata =
        esp_partition_find_first(ESP_PARTITION_TYPE_APP, ESP_PARTITION_SUBTYPE_APP_OTA_MIN + ota_slot, NULL);
    if (last_boot_app_partition_from_otadata == NULL) {
        return ESP_FAIL;
    }
    const esp_partition_t *running_partition = esp_ota_get_running_partition();
    if (running_partition == NULL || last_boot_app_partition_from_otadata == running_partition) {
        return ESP_FAIL;
    }
    if (!skip_app_part_erase) {
        esp_err_t err = esp_partition_erase_range(last_boot_app_partition_from_otadata, 0,
                                                  last_boot_app_partition_from_otadata->size);
        if (err != ESP_OK) {
            return err;
        }
    }
    return esp_partition_erase_range(ota_data_partition, inactive_otadata * ota_data_partition->erase_size,
                                     ota_data_partition->erase_size);
}

esp_err_t esp_ota_erase_last_boot_app_partition(void)
{
    ota_lock();
    esp_err_t err = erase_last_boot_app_partition(false);
    ota_unlock();
    return err;
}

esp_err_t esp_ota_invalidate_inactive_ota_data_slot(void)
{
    ota_lock();
    esp_err_t err = erase_last_boot_app_partition(true);
    ota_unlock();
    return err;
}
