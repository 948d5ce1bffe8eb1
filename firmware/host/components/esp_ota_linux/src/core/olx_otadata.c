/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../../README.md).
 *
 * otadata entry rules of ESP-IDF v5.5 (bootloader_common_loader.c, esp_ota_ops.c), shared
 * by the emulated bootloader (boot step) and esp_ota_ops. Same rules as the simulator's
 * simulator/otadata.py.
 */
#include <stdio.h>
#include <string.h>

#include "olx_core.h"

uint32_t olx_otadata_crc(const olx_otadata_entry_t *e)
{
    uint8_t le[4] = {(uint8_t)e->ota_seq, (uint8_t)(e->ota_seq >> 8), (uint8_t)(e->ota_seq >> 16),
                     (uint8_t)(e->ota_seq >> 24)};
    return esp_rom_crc32_le(UINT32_MAX, le, sizeof(le));
}

olx_otadata_entry_t olx_otadata_make(uint32_t seq, uint32_t state)
{
    olx_otadata_entry_t e;
    memset(&e, 0xFF, sizeof(e));
    e.ota_seq = seq;
    e.ota_state = state;
    e.crc = olx_otadata_crc(&e);
    return e;
}

bool olx_otadata_invalid(const olx_otadata_entry_t *e)
{
    return e->ota_seq == OLX_SEQ_ERASED || e->ota_state == OLX_IMG_INVALID ||
           e->ota_state == OLX_IMG_ABORTED;
}

bool olx_otadata_valid(const olx_otadata_entry_t *e)
{
    return !olx_otadata_invalid(e) && e->crc == olx_otadata_crc(e);
}

bool olx_otadata_initial(const olx_otadata_entry_t *e)
{
    return e->ota_seq == OLX_SEQ_ERASED || e->crc != olx_otadata_crc(e);
}

bool olx_otadata_rolled_back(const olx_otadata_entry_t *e)
{
    return e->ota_seq != OLX_SEQ_ERASED && e->crc == olx_otadata_crc(e) &&
           (e->ota_state == OLX_IMG_INVALID || e->ota_state == OLX_IMG_ABORTED);
}

unsigned olx_otadata_slot(const olx_otadata_entry_t *e, unsigned app_count)
{
    return (unsigned)((uint32_t)(e->ota_seq - 1u) % app_count);
}

int olx_select_otadata(const olx_otadata_entry_t two[2], const bool usable[2], bool max)
{
    if (usable[0] && usable[1]) {
        uint32_t a = two[0].ota_seq, b = two[1].ota_seq;
        uint32_t pick = max ? (a > b ? a : b) : (a < b ? a : b);
        return pick == a ? 0 : 1;
    }
    for (int i = 0; i < 2; i++) {
        if (usable[i]) {
            return i;
        }
    }
    return -1;
}

int olx_active_otadata(const olx_otadata_entry_t two[2])
{
    bool valid[2] = {olx_otadata_valid(&two[0]), olx_otadata_valid(&two[1])};
    return olx_select_otadata(two, valid, true);
}

int olx_last_invalid_otadata(const olx_otadata_entry_t two[2])
{
    bool rolled_back[2] = {olx_otadata_rolled_back(&two[0]), olx_otadata_rolled_back(&two[1])};
    return olx_select_otadata(two, rolled_back, false);
}

void olx_otadata_for_boot_slot(const olx_otadata_entry_t two[2], unsigned slot,
                               unsigned app_count, uint32_t state, int *out_sector,
                               olx_otadata_entry_t *out_entry)
{
    int active = olx_active_otadata(two);
    uint32_t seq;
    int sector;
    if (active != -1) {
        uint32_t current = two[active].ota_seq;
        uint32_t i = 0;
        /* esp_rewrite_ota_data: the smallest seq >= current that selects slot. */
        while (current > (slot + 1) % app_count + i * app_count) {
            i++;
        }
        seq = (slot + 1) % app_count + i * app_count;
        sector = active ^ 1;
    } else {
        seq = slot + 1;
        sector = 0;
    }
    olx_otadata_entry_t e = two[sector];
    e.ota_state = state;
    e.ota_seq = seq;
    e.crc = olx_otadata_crc(&e);
    *out_sector = sector;
    *out_entry = e;
}

const char *olx_img_state_name(uint32_t state, char buf[11])
{
    switch (state) {
    case OLX_IMG_NEW: return "new";
    case OLX_IMG_PENDING_VERIFY: return "pending_verify";
    case OLX_IMG_VALID: return "valid";
    case OLX_IMG_INVALID: return "invalid";
    case OLX_IMG_ABORTED: return "aborted";
    case OLX_IMG_UNDEFINED: return "undefined";
    default:
        snprintf(buf, 11, "0x%08x", (unsigned)state);
        return buf;
    }
}
