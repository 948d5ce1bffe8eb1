/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../../README.md).
 *
 * The partition table at 0x8000 as the bootloader reads it (esp_partition_table_verify,
 * bootloader_utility_load_partition_table): 32-byte entries with magic 0x50AA, an optional
 * MD5 entry (magic 0xEBEB), the end marked by erased (0xFF) bytes.
 */
#include <stdio.h>
#include <string.h>

#include "olx_core.h"

#define FAIL(...)                                         \
    do {                                                  \
        if (msg != NULL && msg_size > 0) {                \
            snprintf(msg, msg_size, __VA_ARGS__);         \
        }                                                 \
        return false;                                     \
    } while (0)

bool olx_partition_table_parse(const uint8_t *raw, size_t raw_len, uint32_t flash_size,
                               olx_md5_fn md5, olx_partition_table_t *out, char *msg,
                               size_t msg_size)
{
    memset(out, 0, sizeof(*out));
    out->otadata = -1;
    out->factory = -1;
    for (int i = 0; i < 16; i++) {
        out->ota[i] = -1;
    }
    if (msg != NULL && msg_size > 0) {
        msg[0] = '\0';
    }
    size_t n = raw_len / sizeof(olx_partition_info_t);
    bool ended = false;
    for (size_t i = 0; i < n && !ended; i++) {
        olx_partition_info_t e;
        memcpy(&e, raw + i * sizeof(e), sizeof(e));
        if (e.magic == OLX_PARTITION_MAGIC) {
            if (out->count >= OLX_MAX_PARTITIONS) {
                FAIL("more than %d partitions", OLX_MAX_PARTITIONS);
            }
            if ((uint64_t)e.offset + e.size > flash_size) {
                FAIL("partition %.16s (0x%x + 0x%x) lies outside the %u-byte flash", e.label,
                     (unsigned)e.offset, (unsigned)e.size, (unsigned)flash_size);
            }
            bool app = e.type == OLX_PART_TYPE_APP;
            bool otadata = e.type == OLX_PART_TYPE_DATA && e.subtype == OLX_PART_SUBTYPE_DATA_OTA;
            if ((app || otadata) && (e.offset % OLX_SECTOR_SIZE || e.size % OLX_SECTOR_SIZE)) {
                FAIL("partition %.16s is not sector aligned", e.label);
            }
            if (otadata) {
                if (e.size < 2 * OLX_SECTOR_SIZE) {
                    FAIL("otadata partition %.16s is smaller than two sectors", e.label);
                }
                if (out->otadata < 0) {
                    out->otadata = out->count;
                }
            }
            if (app && e.subtype == OLX_PART_SUBTYPE_FACTORY && out->factory < 0) {
                out->factory = out->count;
            }
            out->entries[out->count++] = e;
        } else if (e.magic == OLX_PARTITION_MAGIC_MD5) {
            if (md5 != NULL) {
                uint8_t digest[16];
                md5(raw, i * sizeof(e), digest);
                /* esp_partition_info_t MD5 entry: magic, 14 bytes 0xFF, 16 bytes MD5 */
                if (memcmp(digest, raw + i * sizeof(e) + 16, sizeof(digest)) != 0) {
                    FAIL("partition table MD5 mismatch");
                }
            }
        } else if (e.magic == 0xFFFFu) {
            ended = true;
        } else {
            FAIL("partition entry %zu has bad magic 0x%04x", i, e.magic);
        }
    }
    if (out->count == 0) {
        FAIL("no partition table at 0x%x", OLX_PARTITION_TABLE_OFFSET);
    }
    /* esp_ota_get_app_partition_count: consecutive ota_N subtypes from ota_0 */
    for (unsigned slot = 0; slot < 16; slot++) {
        int found = -1;
        for (int i = 0; i < out->count; i++) {
            if (out->entries[i].type == OLX_PART_TYPE_APP &&
                out->entries[i].subtype == OLX_PART_SUBTYPE_OTA_0 + slot) {
                found = i;
                break;
            }
        }
        if (found < 0) {
            break;
        }
        out->ota[slot] = found;
        out->app_count = slot + 1;
    }
    return true;
}
