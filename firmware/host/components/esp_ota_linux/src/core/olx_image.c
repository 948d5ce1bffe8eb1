/*
 * TEST-ONLY CODE: never part of a firmware. Part of esp_ota_linux, the layer that lets the
 * esp_ota_agent component run on ESP-IDF's linux target for tests (see ../../README.md).
 *
 * What ESP-IDF's esp_image_verify(ESP_IMAGE_VERIFY) checks in an app partition
 * (bootloader_support/src/esp_image_format.c, bootloader_common_loader.c), without secure
 * boot or flash encryption, in the same order; plus the app descriptor check of the
 * simulator's parser. Not checked: the MMU mapping alignment of flash-mapped segments and
 * the RAM load address ranges (the emulated chip has no memory map).
 */
#include <stdio.h>
#include <string.h>

#include "olx_core.h"

#define MAX_FLASH_ADDR_SIZE 0x1000000u /* ESP_IMAGE_MAX_FLASH_ADDR_SIZE: 16 MB */
#define CHECKSUM_SEED 0xEFu

const char *olx_img_result_name(olx_img_result_t r)
{
    switch (r) {
    case OLX_IMG_OK: return "ok";
    case OLX_IMG_ERR_READ: return "flash read failed";
    case OLX_IMG_ERR_MAGIC: return "bad magic";
    case OLX_IMG_ERR_CHIP_ID: return "chip id mismatch";
    case OLX_IMG_ERR_CHIP_REV: return "chip revision out of range";
    case OLX_IMG_ERR_SEGMENT_COUNT: return "too many segments";
    case OLX_IMG_ERR_NO_APP_DESC: return "no app descriptor";
    case OLX_IMG_ERR_SEGMENT_LENGTH: return "bad segment length";
    case OLX_IMG_ERR_TOO_LONG: return "image does not fit in the partition";
    case OLX_IMG_ERR_CHECKSUM: return "checksum mismatch";
    case OLX_IMG_ERR_SHA256: return "SHA-256 mismatch";
    }
    return "?";
}

bool olx_chip_revision_ok(uint16_t min_rev_full, uint16_t max_rev_full, unsigned revision,
                          bool check_max)
{
    if (revision < min_rev_full) {
        return false;
    }
    bool max_set = max_rev_full != OLX_CHIP_REV_UNSET && max_rev_full != 0;
    if (check_max && max_set && revision > max_rev_full) {
        return false;
    }
    return true;
}

#define FAIL(code, ...)                                   \
    do {                                                  \
        if (msg != NULL && msg_size > 0) {                \
            snprintf(msg, msg_size, __VA_ARGS__);         \
        }                                                 \
        return (code);                                    \
    } while (0)

/* Reads [offset, offset+len) of the partition, refusing anything past its end. */
static olx_img_result_t read_in(olx_read_fn read, void *ctx, uint32_t part_size, uint64_t offset,
                                void *buf, size_t len)
{
    if (offset + len > part_size) {
        return OLX_IMG_ERR_TOO_LONG;
    }
    return read(ctx, (uint32_t)offset, buf, len) == 0 ? OLX_IMG_OK : OLX_IMG_ERR_READ;
}

olx_img_result_t olx_image_verify(olx_read_fn read, void *ctx, uint32_t part_size,
                                  const olx_chip_t *chip, olx_image_info_t *info,
                                  char *msg, size_t msg_size)
{
    olx_image_header_t hdr;
    olx_app_desc_t app;
    /* Software SHA-256: the context holds no resource, so the early returns need no free. */
    mbedtls_sha256_context sha;
    uint8_t buf[4096];
    olx_img_result_t r;

    if (msg != NULL && msg_size > 0) {
        msg[0] = '\0';
    }
    if (part_size > MAX_FLASH_ADDR_SIZE) {
        FAIL(OLX_IMG_ERR_TOO_LONG, "partition size 0x%x invalid, larger than 16MB", (unsigned)part_size);
    }
    r = read_in(read, ctx, part_size, 0, &hdr, sizeof(hdr));
    if (r != OLX_IMG_OK) {
        FAIL(r, "cannot read the image header");
    }
    bool hashed = hdr.hash_appended == 1;
    if (hashed) {
        mbedtls_sha256_init(&sha);
        mbedtls_sha256_starts(&sha, 0);
        mbedtls_sha256_update(&sha, (const unsigned char *)&hdr, sizeof(hdr));
    }
    /* verify_image_header */
    if (hdr.magic != OLX_IMAGE_MAGIC) {
        FAIL(OLX_IMG_ERR_MAGIC, "image has invalid magic byte 0x%02x (nothing flashed here?)", hdr.magic);
    }
    if (chip != NULL) {
        /* bootloader_common_check_chip_validity for an application */
        if (hdr.chip_id != chip->chip_id) {
            FAIL(OLX_IMG_ERR_CHIP_ID, "mismatch chip ID, expected %u, found %u", chip->chip_id, hdr.chip_id);
        }
        if (!olx_chip_revision_ok(hdr.min_chip_rev_full, hdr.max_chip_rev_full, chip->chip_revision, true)) {
            if (chip->chip_revision < hdr.min_chip_rev_full) {
                FAIL(OLX_IMG_ERR_CHIP_REV, "chip revision check failed. Required >= v%d.%d, found v%d.%d.",
                     hdr.min_chip_rev_full / 100, hdr.min_chip_rev_full % 100,
                     chip->chip_revision / 100, chip->chip_revision % 100);
            }
            FAIL(OLX_IMG_ERR_CHIP_REV, "chip revision check failed. Required <= v%d.%d, found v%d.%d.",
                 hdr.max_chip_rev_full / 100, hdr.max_chip_rev_full % 100,
                 chip->chip_revision / 100, chip->chip_revision % 100);
        }
    }
    if (hdr.segment_count > OLX_IMAGE_MAX_SEGMENTS) {
        FAIL(OLX_IMG_ERR_SEGMENT_COUNT, "image segment count %d exceeds max %u", hdr.segment_count,
             OLX_IMAGE_MAX_SEGMENTS);
    }
    /* The app descriptor (the simulator's parser and esp_https_ota expect one). */
    memset(&app, 0, sizeof(app));
    r = read_in(read, ctx, part_size, OLX_APP_DESC_OFFSET, &app, sizeof(app));
    if (r == OLX_IMG_ERR_READ) {
        FAIL(r, "cannot read the app descriptor");
    }
    if (hdr.segment_count == 0 || r != OLX_IMG_OK || app.magic_word != OLX_APP_DESC_MAGIC) {
        FAIL(OLX_IMG_ERR_NO_APP_DESC, "no application descriptor at offset 32 (found magic 0x%08x, "
             "expected 0x%08x)", (unsigned)app.magic_word, OLX_APP_DESC_MAGIC);
    }

    /* process_segments */
    uint64_t next = sizeof(hdr);
    uint8_t checksum = CHECKSUM_SEED;
    for (int i = 0; i < hdr.segment_count; i++) {
        uint32_t seg[2]; /* load_addr, data_len */
        r = read_in(read, ctx, part_size, next, seg, sizeof(seg));
        if (r != OLX_IMG_OK) {
            FAIL(r, "segment %d header at 0x%llx is past the end of the partition", i,
                 (unsigned long long)next);
        }
        if (hashed) {
            mbedtls_sha256_update(&sha, (const unsigned char *)seg, sizeof(seg));
        }
        uint32_t data_len = seg[1];
        if ((data_len & 3) != 0 || data_len >= MAX_FLASH_ADDR_SIZE) {
            FAIL(OLX_IMG_ERR_SEGMENT_LENGTH, "invalid segment length 0x%x", (unsigned)data_len);
        }
        next += sizeof(seg);
        if (next + data_len > part_size) {
            FAIL(OLX_IMG_ERR_TOO_LONG, "segment %d (0x%x bytes at 0x%llx) runs past the end of the "
                 "partition (0x%x bytes)", i, (unsigned)data_len, (unsigned long long)next,
                 (unsigned)part_size);
        }
        uint32_t done = 0;
        while (done < data_len) {
            size_t take = data_len - done < sizeof(buf) ? data_len - done : sizeof(buf);
            r = read_in(read, ctx, part_size, next + done, buf, take);
            if (r != OLX_IMG_OK) {
                FAIL(r, "cannot read segment %d", i);
            }
            for (size_t k = 0; k < take; k++) {
                checksum ^= buf[k];
            }
            if (hashed) {
                mbedtls_sha256_update(&sha, (const unsigned char *)buf, take);
            }
            done += (uint32_t)take;
        }
        next += data_len;
    }

    /* process_checksum: pad so that the checksum byte ends a 16-byte block */
    uint32_t unpadded = (uint32_t)next;
    uint32_t length = ((unpadded + 1 + 15) & ~15u) - unpadded;
    uint8_t tail[16];
    r = read_in(read, ctx, part_size, unpadded, tail, length);
    if (r != OLX_IMG_OK) {
        FAIL(r, "the checksum byte at 0x%x is past the end of the partition", (unsigned)(unpadded + length - 1));
    }
    uint8_t stored = tail[length - 1];
    if (stored != checksum) {
        FAIL(OLX_IMG_ERR_CHECKSUM, "Checksum failed. Calculated 0x%x read 0x%x", checksum, stored);
    }
    if (hashed) {
        mbedtls_sha256_update(&sha, (const unsigned char *)tail, length);
    }
    uint32_t image_len = unpadded + length;

    /* process_appended_hash_and_sig + verify_simple_hash */
    uint8_t stored_hash[32];
    if (hashed) {
        r = read_in(read, ctx, part_size, image_len, stored_hash, sizeof(stored_hash));
        if (r != OLX_IMG_OK) {
            FAIL(r, "Image length %u doesn't fit in partition length %u", (unsigned)(image_len + 32),
                 (unsigned)part_size);
        }
        image_len += 32;
    }
    if (image_len > part_size) {
        FAIL(OLX_IMG_ERR_TOO_LONG, "Image length %u doesn't fit in partition length %u",
             (unsigned)image_len, (unsigned)part_size);
    }
    if (hashed) {
        uint8_t digest[32];
        mbedtls_sha256_finish(&sha, digest);
        mbedtls_sha256_free(&sha);
        if (memcmp(digest, stored_hash, sizeof(digest)) != 0) {
            FAIL(OLX_IMG_ERR_SHA256, "Image hash failed - image is corrupt");
        }
    }
    if (info != NULL) {
        info->header = hdr;
        info->app = app;
        info->image_len = image_len;
        info->checksum = stored;
    }
    return OLX_IMG_OK;
}
