/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../../README.md).
 *
 * The second-stage bootloader's choice of app, as ESP-IDF v5.5's bootloader_utility.c
 * makes it with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and, optionally,
 * CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK (bootloader_utility_get_selected_boot_partition,
 * bootloader_utility_load_boot_image, set_actual_ota_seq). Same rules as the simulator's
 * simulator/bootloader.py:
 * 1. every otadata entry still PENDING_VERIFY becomes ABORTED (its app restarted without
 *    confirming itself: roll back);
 * 2. the valid entry with the highest seq (whose app's secure_version is not below the
 *    eFuse, with anti-rollback) selects the slot; a NEW entry becomes PENDING_VERIFY;
 * 3. the selected slot's image must load (verify); if not, the slots below it down to the
 *    factory app, then those above it, are tried;
 * 4. otadata blank and no factory app: ota_0, and seq 1 VALID is written into otadata[0].
 */
#include <stdarg.h>
#include <stdio.h>

#include "olx_core.h"

static void logf_(const olx_boot_ops_t *ops, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void logf_(const olx_boot_ops_t *ops, const char *fmt, ...)
{
    if (ops->log == NULL) {
        return;
    }
    char line[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    ops->log(ops->ctx, line);
}

static bool index_exists(const olx_boot_ops_t *ops, int index)
{
    return index == OLX_FACTORY_INDEX ? ops->has_factory : (index >= 0 && (unsigned)index < ops->app_count);
}

static bool check_anti_rollback(const olx_boot_ops_t *ops, int index)
{
    return !ops->anti_rollback || ops->secure_version_ok(ops->ctx, index);
}

/* bootloader_utility_get_selected_boot_partition */
static int selected_boot_partition(const olx_boot_ops_t *ops, bool *initial_contents, int *active_out,
                                   bool *first_boot)
{
    olx_otadata_entry_t two[2];
    *initial_contents = false;
    *active_out = -1;
    *first_boot = false;

    if (!ops->has_otadata) {
        return OLX_FACTORY_INDEX;
    }
    if (!ops->read_otadata(ops->ctx, two)) {
        logf_(ops, "cannot read otadata");
        return OLX_NO_BOOTABLE_INDEX;
    }
    if (ops->rollback_enabled) {
        for (int i = 0; i < 2; i++) {
            if (two[i].ota_state == OLX_IMG_PENDING_VERIFY) {
                logf_(ops, "otadata[%d] is marking as ABORTED", i);
                two[i].ota_state = OLX_IMG_ABORTED;
                ops->write_otadata(ops->ctx, i, &two[i]);
            }
        }
    }

    int active;
    if (ops->anti_rollback) {
        if (olx_otadata_initial(&two[0]) && olx_otadata_initial(&two[1])) {
            logf_(ops, "otadata[0..1] in initial state");
            *initial_contents = true;
            return OLX_FACTORY_INDEX;
        }
        /* get_active_otadata_with_check_anti_rollback */
        bool usable[2] = {false, false};
        for (int i = 0; i < 2 && ops->app_count > 0; i++) {
            if (olx_otadata_valid(&two[i])) {
                unsigned slot = olx_otadata_slot(&two[i], ops->app_count);
                if (ops->secure_version_ok(ops->ctx, (int)slot)) {
                    usable[i] = true;
                } else {
                    logf_(ops, "OTA slot %u has an app with secure_version, this version is smaller than in "
                          "the device. This OTA slot will not be selected.", slot);
                }
            }
        }
        active = olx_select_otadata(two, usable, true);
    } else {
        if ((olx_otadata_invalid(&two[0]) && olx_otadata_invalid(&two[1])) || ops->app_count == 0) {
            if (ops->has_factory) {
                logf_(ops, "Defaulting to factory image");
                return OLX_FACTORY_INDEX;
            }
            logf_(ops, "No factory image, trying OTA 0");
            *initial_contents = olx_otadata_initial(&two[0]) && olx_otadata_initial(&two[1]);
            return 0;
        }
        active = olx_active_otadata(two);
    }

    if (active == -1) {
        if (ops->has_factory) {
            logf_(ops, "ota data partition invalid, falling back to factory");
        } else {
            logf_(ops, "ota data partition invalid and no factory, will try all partitions");
        }
        return OLX_FACTORY_INDEX;
    }
    *active_out = active;
    int boot_index = (int)olx_otadata_slot(&two[active], ops->app_count);
    if (ops->rollback_enabled && two[active].ota_state == OLX_IMG_NEW) {
        logf_(ops, "otadata[%d] is selected as new and marked PENDING_VERIFY state", active);
        two[active].ota_state = OLX_IMG_PENDING_VERIFY;
        ops->write_otadata(ops->ctx, active, &two[active]);
        *first_boot = true;
    }
    if (ops->anti_rollback && two[active].ota_state == OLX_IMG_VALID) {
        ops->update_anti_rollback(ops->ctx, boot_index);
    }
    return boot_index;
}

/* try one partition in bootloader_utility_load_boot_image; set_actual_ota_seq on success */
static bool try_index(const olx_boot_ops_t *ops, int index, bool initial_contents)
{
    if (!index_exists(ops, index)) {
        return false;
    }
    if (check_anti_rollback(ops, index) && ops->try_load(ops->ctx, index)) {
        if (index > OLX_FACTORY_INDEX && initial_contents) {
            olx_otadata_entry_t e = olx_otadata_make((uint32_t)index + 1, OLX_IMG_VALID);
            ops->write_otadata(ops->ctx, 0, &e);
            logf_(ops, "Set actual ota_seq=%d in otadata[0]", index + 1);
            if (ops->anti_rollback) {
                ops->update_anti_rollback(ops->ctx, index);
            }
        }
        return true;
    }
    if (index == OLX_FACTORY_INDEX) {
        logf_(ops, "Factory app partition is not bootable");
    } else {
        logf_(ops, "OTA app partition slot %d is not bootable", index);
    }
    return false;
}

void olx_boot_select(const olx_boot_ops_t *ops, olx_boot_result_t *result)
{
    bool initial_contents, first_boot;
    int active;
    int start = selected_boot_partition(ops, &initial_contents, &active, &first_boot);
    result->start_index = start;
    result->otadata_index = -1;
    result->first_boot = false;
    result->index = OLX_NO_BOOTABLE_INDEX;
    if (start == OLX_NO_BOOTABLE_INDEX) {
        return;
    }
    /* work backwards from start_index, down to the factory app */
    for (int index = start; index >= OLX_FACTORY_INDEX; index--) {
        if (try_index(ops, index, initial_contents)) {
            result->index = index;
            break;
        }
    }
    /* failing that work forwards from start_index, try valid OTA slots */
    for (int index = start + 1; result->index == OLX_NO_BOOTABLE_INDEX && index < (int)ops->app_count; index++) {
        if (try_index(ops, index, initial_contents)) {
            result->index = index;
        }
    }
    if (result->index == OLX_NO_BOOTABLE_INDEX) {
        logf_(ops, "No bootable app partitions in the partition table");
        return;
    }
    if (result->index == start) {
        result->otadata_index = active;
        result->first_boot = first_boot;
    }
}
