/* TEST-ONLY: never part of a firmware. Unit tests of esp_ota_linux, the layer that lets
 * the esp_ota_agent component run on ESP-IDF's linux target for tests (../README.md):
 * olx_image_verify (esp_image_verify's checks) on images
 * built in memory, each defect alone; the chip revision rule. */
#include <string.h>

#include "olx_core.h"
#include "test_images.h"
#include "unity.h"

void setUp(void) {}
void tearDown(void) {}

#define PART 16384
static uint8_t part[PART];
static size_t img_len;
static const olx_chip_t esp32_v31 = {.chip_id = 0, .chip_revision = 301};

static void build(const test_image_opts_t *o)
{
    memset(part, 0xFF, sizeof(part));
    img_len = test_build_image(part, sizeof(part), o);
    TEST_ASSERT_NOT_EQUAL(0, img_len);
}

static olx_img_result_t verify_size(uint32_t size, const olx_chip_t *chip, olx_image_info_t *info, char *msg)
{
    test_reader_t r = {.data = part, .size = sizeof(part), .fail_at = -1};
    return olx_image_verify(test_read, &r, size, chip, info, msg, 200);
}

static olx_img_result_t verify(void)
{
    char msg[200];
    return verify_size(PART, &esp32_v31, NULL, msg);
}

static void test_valid_image_and_info(void)
{
    test_image_opts_t o = test_image_defaults();
    o.secure_version = 7;
    o.version = "2.3.4";
    build(&o);
    olx_image_info_t info;
    char msg[200];
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify_size(PART, &esp32_v31, &info, msg));
    TEST_ASSERT_EQUAL_STRING("", msg);
    TEST_ASSERT_EQUAL_UINT32(img_len, info.image_len);
    TEST_ASSERT_EQUAL_UINT32(7, info.app.secure_version);
    TEST_ASSERT_EQUAL_STRING("2.3.4", info.app.version);
    TEST_ASSERT_EQUAL(3, info.header.segment_count);
    TEST_ASSERT_EQUAL_UINT32(0, img_len % 16); /* checksum ends a 16-byte block, hash 32 */
}

static void test_image_exactly_fills_partition(void)
{
    build(&(test_image_opts_t){.chip_id = 0, .max_rev = 399, .version = "1", .hash_appended = 1,
                               .seg_len = {256, 1000, 2000}, .seed = 3});
    char msg[200];
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify_size((uint32_t)img_len, &esp32_v31, NULL, msg));
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_TOO_LONG, verify_size((uint32_t)img_len - 1, &esp32_v31, NULL, msg)); /* hash cut */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_TOO_LONG, verify_size((uint32_t)img_len - 32, &esp32_v31, NULL, msg)); /* no hash */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_TOO_LONG, verify_size(2000, &esp32_v31, NULL, msg)); /* segment 2 cut */
}

static void test_without_hash(void)
{
    test_image_opts_t o = test_image_defaults();
    o.hash_appended = 0;
    build(&o);
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify());
    part[img_len] = 0x00; /* what follows the checksum is not looked at */
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify());
}

static void test_bad_magic(void)
{
    test_image_opts_t o = test_image_defaults();
    build(&o);
    part[0] = 0xE8;
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_MAGIC, verify());
    memset(part, 0xFF, sizeof(part)); /* erased slot */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_MAGIC, verify());
}

static void test_chip_id_and_revision(void)
{
    test_image_opts_t o = test_image_defaults();
    o.chip_id = 5;
    build(&o);
    char msg[200];
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_CHIP_ID, verify_size(PART, &esp32_v31, NULL, msg));
    TEST_ASSERT_EQUAL_STRING("mismatch chip ID, expected 0, found 5", msg);
    olx_chip_t c3 = {.chip_id = 5, .chip_revision = 4};
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify_size(PART, &c3, NULL, msg));
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify_size(PART, NULL, NULL, msg)); /* chip not checked */

    o = test_image_defaults();
    o.min_rev = 302;
    build(&o);
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_CHIP_REV, verify_size(PART, &esp32_v31, NULL, msg));
    TEST_ASSERT_EQUAL_STRING("chip revision check failed. Required >= v3.2, found v3.1.", msg);
    o = test_image_defaults();
    o.max_rev = 300;
    build(&o);
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_CHIP_REV, verify_size(PART, &esp32_v31, NULL, msg));
    TEST_ASSERT_EQUAL_STRING("chip revision check failed. Required <= v3.0, found v3.1.", msg);
    o.max_rev = 0xFFFF;
    build(&o);
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify());
    o.max_rev = 0;
    build(&o);
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify());
}

static void test_chip_revision_rule(void)
{
    TEST_ASSERT_TRUE(olx_chip_revision_ok(0, 399, 301, true));
    TEST_ASSERT_TRUE(olx_chip_revision_ok(301, 301, 301, true));
    TEST_ASSERT_FALSE(olx_chip_revision_ok(302, 399, 301, true));
    TEST_ASSERT_FALSE(olx_chip_revision_ok(0, 300, 301, true));
    TEST_ASSERT_TRUE(olx_chip_revision_ok(0, 300, 301, false));
    TEST_ASSERT_TRUE(olx_chip_revision_ok(0, 0, 9999, true));
    TEST_ASSERT_TRUE(olx_chip_revision_ok(0, 0xFFFF, 9999, true));
}

static void test_too_many_segments(void)
{
    test_image_opts_t o = test_image_defaults();
    build(&o);
    part[1] = 17;
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_SEGMENT_COUNT, verify());
    part[1] = 16; /* allowed count, but the image is not laid out for it */
    TEST_ASSERT_NOT_EQUAL(OLX_IMG_OK, verify());
}

static void test_no_app_descriptor(void)
{
    test_image_opts_t o = test_image_defaults();
    build(&o);
    part[32] = 0; /* descriptor magic */
    test_fix_image(part, img_len);
    char msg[200];
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_NO_APP_DESC, verify_size(PART, &esp32_v31, NULL, msg));
    build(&o);
    part[1] = 0; /* no segments at all */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_NO_APP_DESC, verify());
}

static void test_segment_length(void)
{
    test_image_opts_t o = test_image_defaults();
    build(&o);
    /* segment 1 header at 24 + 8 + 256: its length + 2 */
    part[24 + 8 + 256 + 4] += 2;
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_SEGMENT_LENGTH, verify());
    build(&o);
    part[24 + 8 + 256 + 7] = 0x01; /* 16 MB + ... */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_SEGMENT_LENGTH, verify());
    build(&o);
    part[24 + 8 + 256 + 6] = 0x01; /* length 64 KiB + 1000: past the 16 KiB partition */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_TOO_LONG, verify());
}

static void test_checksum_and_sha(void)
{
    test_image_opts_t o = test_image_defaults();
    build(&o);
    part[24 + 8 + 256 + 8 + 10] ^= 0x40; /* a payload byte of segment 1 */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_CHECKSUM, verify());
    build(&o);
    part[img_len - 33] ^= 1; /* the checksum byte (the SHA-256 no longer matches either) */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_CHECKSUM, verify());
    build(&o);
    part[img_len - 1] ^= 1; /* the appended SHA-256 */
    char msg[200];
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_SHA256, verify_size(PART, &esp32_v31, NULL, msg));
    TEST_ASSERT_EQUAL_STRING("Image hash failed - image is corrupt", msg);
    build(&o);
    part[8] ^= 1; /* a header byte: only the SHA-256 covers it */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_SHA256, verify());
    build(&o);
    part[img_len - 34] ^= 1; /* a padding byte: not checked, but hashed */
    TEST_ASSERT_EQUAL(OLX_IMG_ERR_SHA256, verify());
    o.hash_appended = 0;
    build(&o);
    part[img_len - 2] ^= 1; /* padding without a hash: ignored, as ESP-IDF does */
    TEST_ASSERT_EQUAL(OLX_IMG_OK, verify());
}

static void test_read_error(void)
{
    test_image_opts_t o = test_image_defaults();
    build(&o);
    for (int n = 0; n < 4; n++) {
        test_reader_t r = {.data = part, .size = sizeof(part), .fail_at = n};
        TEST_ASSERT_EQUAL(OLX_IMG_ERR_READ, olx_image_verify(test_read, &r, PART, &esp32_v31, NULL, NULL, 0));
    }
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_valid_image_and_info);
    RUN_TEST(test_image_exactly_fills_partition);
    RUN_TEST(test_without_hash);
    RUN_TEST(test_bad_magic);
    RUN_TEST(test_chip_id_and_revision);
    RUN_TEST(test_chip_revision_rule);
    RUN_TEST(test_too_many_segments);
    RUN_TEST(test_no_app_descriptor);
    RUN_TEST(test_segment_length);
    RUN_TEST(test_checksum_and_sha);
    RUN_TEST(test_read_error);
    return UNITY_END();
}
