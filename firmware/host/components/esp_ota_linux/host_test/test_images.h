/* TEST-ONLY: never part of a firmware. Unit tests of esp_ota_linux, the layer that lets
 * the esp_ota_agent component run on ESP-IDF's linux target for tests (../README.md):
 * helpers: app images built in memory (the layout of
 * esp_app_format.h, like the espota library's image builder) and a partition reader over a
 * buffer. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "olx_core.h"

typedef struct {
    uint16_t chip_id;
    uint16_t min_rev;
    uint16_t max_rev;
    uint32_t secure_version;
    const char *version;
    uint8_t hash_appended;     /* 1: append the SHA-256 */
    uint32_t seg_len[3];       /* segment data lengths; segment 0 holds the app descriptor */
    uint32_t seed;
} test_image_opts_t;

/* Defaults: esp32 (chip 0), revisions 0..399, secure_version 0, "1.0.0", hash appended,
 * segments of 256, 1000 and 2000 bytes. */
test_image_opts_t test_image_defaults(void);

/* Writes the image to out (cap bytes) and returns its length (0 if it does not fit). */
size_t test_build_image(uint8_t *out, size_t cap, const test_image_opts_t *o);

/* Recompute the checksum byte and the SHA-256 of an image built by test_build_image. */
void test_fix_image(uint8_t *img, size_t len);

/* olx_read_fn over a buffer: ctx is a test_reader_t. */
typedef struct {
    const uint8_t *data;
    size_t size;
    int fail_at;              /* read calls before a simulated read error; -1 never */
} test_reader_t;

int test_read(void *ctx, uint32_t offset, void *buf, size_t len);
