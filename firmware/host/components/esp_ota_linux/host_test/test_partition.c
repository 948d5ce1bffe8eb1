/* TEST-ONLY: never part of a firmware. Unit tests of esp_ota_linux, the layer that lets
 * the esp_ota_agent component run on ESP-IDF's linux target for tests (../README.md):
 * the partition table at 0x8000. */
#include <string.h>

#include "olx_core.h"
#include "unity.h"

void setUp(void) {}
void tearDown(void) {}

static uint8_t raw[OLX_PARTITION_TABLE_MAX_LEN];
static int rows;

static void row(uint8_t type, uint8_t subtype, uint32_t offset, uint32_t size, const char *label)
{
    olx_partition_info_t e = {.magic = OLX_PARTITION_MAGIC, .type = type, .subtype = subtype,
                              .offset = offset, .size = size};
    strncpy(e.label, label, sizeof(e.label));
    memcpy(raw + 32 * rows++, &e, sizeof(e));
}

/* firmware/examples/esp_ota_device/partitions.csv */
static void example_table(void)
{
    memset(raw, 0xFF, sizeof(raw));
    rows = 0;
    row(1, 0x02, 0x9000, 0x6000, "nvs");
    row(1, 0x00, 0xF000, 0x2000, "otadata");
    row(1, 0x01, 0x11000, 0x1000, "phy_init");
    row(0, 0x10, 0x20000, 1700 * 1024, "ota_0");
    row(0, 0x11, 0x1D0000, 1700 * 1024, "ota_1");
}

static void fake_md5(const void *data, size_t len, uint8_t out[16])
{
    memset(out, 0, 16);
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        out[i % 16] ^= p[i];
    }
}

static bool parse(olx_partition_table_t *t, char *msg)
{
    return olx_partition_table_parse(raw, sizeof(raw), 4 * 1024 * 1024, fake_md5, t, msg, 200);
}

static void test_example_table(void)
{
    olx_partition_table_t t;
    char msg[200];
    example_table();
    TEST_ASSERT_TRUE(parse(&t, msg));
    TEST_ASSERT_EQUAL(5, t.count);
    TEST_ASSERT_EQUAL(1, t.otadata);
    TEST_ASSERT_EQUAL(-1, t.factory);
    TEST_ASSERT_EQUAL(2, t.app_count);
    TEST_ASSERT_EQUAL_UINT32(0x20000, t.entries[t.ota[0]].offset);
    TEST_ASSERT_EQUAL_UINT32(0x1D0000, t.entries[t.ota[1]].offset);
    TEST_ASSERT_EQUAL(-1, t.ota[2]);
}

static void test_md5_entry(void)
{
    olx_partition_table_t t;
    char msg[200];
    example_table();
    uint8_t md5[16];
    fake_md5(raw, 32 * 5, md5);
    memset(raw + 160, 0xFF, 32);
    raw[160] = 0xEB;
    raw[161] = 0xEB;
    memcpy(raw + 176, md5, 16);
    TEST_ASSERT_TRUE(parse(&t, msg));
    TEST_ASSERT_EQUAL(5, t.count);
    raw[176] ^= 1;
    TEST_ASSERT_FALSE(parse(&t, msg));
    TEST_ASSERT_EQUAL_STRING("partition table MD5 mismatch", msg);
    TEST_ASSERT_TRUE(olx_partition_table_parse(raw, sizeof(raw), 4 * 1024 * 1024, NULL, &t, msg, 200));
}

static void test_factory_and_gaps(void)
{
    olx_partition_table_t t;
    char msg[200];
    memset(raw, 0xFF, sizeof(raw));
    rows = 0;
    row(1, 0x00, 0xD000, 0x2000, "otadata");
    row(0, 0x00, 0x10000, 0x100000, "factory");
    row(0, 0x10, 0x110000, 0x100000, "ota_0");
    row(0, 0x12, 0x210000, 0x100000, "ota_2"); /* no ota_1: not counted */
    TEST_ASSERT_TRUE(parse(&t, msg));
    TEST_ASSERT_EQUAL(1, t.factory);
    TEST_ASSERT_EQUAL(1, t.app_count);
}

static void test_bad_tables(void)
{
    olx_partition_table_t t;
    char msg[200];
    memset(raw, 0xFF, sizeof(raw));
    TEST_ASSERT_FALSE(parse(&t, msg)); /* erased: no table */
    example_table();
    raw[32] = 0x12;                    /* second row's magic */
    TEST_ASSERT_FALSE(parse(&t, msg));
    example_table();
    rows = 4;
    row(0, 0x11, 0x3F0000, 0x20000, "ota_1"); /* past the 4 MB flash */
    TEST_ASSERT_FALSE(parse(&t, msg));
    example_table();
    rows = 4;
    row(0, 0x11, 0x1D0800, 0x1000, "ota_1"); /* not sector aligned */
    TEST_ASSERT_FALSE(parse(&t, msg));
    example_table();
    rows = 1;
    row(1, 0x00, 0xF000, 0x1000, "otadata"); /* one sector only */
    TEST_ASSERT_FALSE(parse(&t, msg));
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_example_table);
    RUN_TEST(test_md5_entry);
    RUN_TEST(test_factory_and_gaps);
    RUN_TEST(test_bad_tables);
    return UNITY_END();
}
