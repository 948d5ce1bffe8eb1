/* TEST-ONLY: never part of a firmware. Unit tests of esp_ota_linux, the layer that lets
 * the esp_ota_agent component run on ESP-IDF's linux target for tests (../README.md):
 * helpers, see test_images.h. */
#include <string.h>

#include "test_images.h"

test_image_opts_t test_image_defaults(void)
{
    test_image_opts_t o = {
        .chip_id = 0, .min_rev = 0, .max_rev = 399, .secure_version = 0, .version = "1.0.0",
        .hash_appended = 1, .seg_len = {256, 1000, 2000}, .seed = 1,
    };
    return o;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Segment layout helpers shared by test_build_image and test_fix_image. */
static size_t segments_end(const uint8_t *img, size_t len, uint8_t *xor_out)
{
    size_t pos = 24;
    uint8_t x = 0xEF;
    for (int s = 0; s < img[1]; s++) {
        uint32_t n = (uint32_t)img[pos + 4] | (uint32_t)img[pos + 5] << 8 | (uint32_t)img[pos + 6] << 16 |
                     (uint32_t)img[pos + 7] << 24;
        pos += 8;
        for (uint32_t i = 0; i < n && pos + i < len; i++) {
            x ^= img[pos + i];
        }
        pos += n;
    }
    *xor_out = x;
    return pos;
}

void test_fix_image(uint8_t *img, size_t len)
{
    uint8_t x;
    size_t end = segments_end(img, len, &x);
    size_t checksum_at = ((end + 1 + 15) & ~(size_t)15) - 1;
    img[checksum_at] = x;
    if (img[23] == 1) {
        mbedtls_sha256(img, checksum_at + 1, img + checksum_at + 1, 0);
    }
}

size_t test_build_image(uint8_t *out, size_t cap, const test_image_opts_t *o)
{
    static const uint32_t load[3] = {0x3F400020, 0x3FFB0000, 0x400D0020};
    size_t len = 24;
    for (int s = 0; s < 3; s++) {
        len += 8 + o->seg_len[s];
    }
    len = ((len + 1 + 15) & ~(size_t)15) + (o->hash_appended == 1 ? 32 : 0);
    if (len > cap || o->seg_len[0] < sizeof(olx_app_desc_t)) {
        return 0;
    }
    memset(out, 0, len);
    olx_image_header_t h = {
        .magic = OLX_IMAGE_MAGIC, .segment_count = 3, .spi_mode = 2, .spi_speed_size = 0x20,
        .entry_addr = 0x40081000, .wp_pin = 0xEE, .chip_id = o->chip_id,
        .min_chip_rev = (uint8_t)(o->min_rev / 100), .min_chip_rev_full = o->min_rev,
        .max_chip_rev_full = o->max_rev, .hash_appended = o->hash_appended,
    };
    memcpy(out, &h, sizeof(h));
    size_t pos = 24;
    uint32_t rnd = o->seed * 2654435761u + 1;
    for (int s = 0; s < 3; s++) {
        put32(out + pos, load[s]);
        put32(out + pos + 4, o->seg_len[s]);
        pos += 8;
        for (uint32_t i = 0; i < o->seg_len[s]; i++) {
            rnd = rnd * 1103515245u + 12345u;
            out[pos + i] = (uint8_t)(rnd >> 16);
        }
        if (s == 0) {
            olx_app_desc_t d;
            memset(&d, 0, sizeof(d));
            d.magic_word = OLX_APP_DESC_MAGIC;
            d.secure_version = o->secure_version;
            strncpy(d.version, o->version, sizeof(d.version) - 1);
            strncpy(d.project_name, "unit-test", sizeof(d.project_name) - 1);
            memcpy(out + pos, &d, sizeof(d));
        }
        pos += o->seg_len[s];
    }
    test_fix_image(out, len);
    return len;
}

int test_read(void *ctx, uint32_t offset, void *buf, size_t len)
{
    test_reader_t *r = ctx;
    if (r->fail_at == 0) {
        return -1;
    }
    if (r->fail_at > 0) {
        r->fail_at--;
    }
    if ((size_t)offset + len > r->size) {
        return -1;
    }
    memcpy(buf, r->data + offset, len);
    return 0;
}
