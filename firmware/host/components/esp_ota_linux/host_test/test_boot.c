/* TEST-ONLY: never part of a firmware. Unit tests of esp_ota_linux, the layer that lets
 * the esp_ota_agent component run on ESP-IDF's linux target for tests (../README.md):
 * the bootloader's choice of app (bootloader_utility.c of
 * ESP-IDF v5.5; simulator/bootloader.py) on an in-memory device. */
#include <stdio.h>
#include <string.h>

#include "olx_core.h"
#include "unity.h"

void setUp(void) {}
void tearDown(void) {}

typedef struct {
    olx_otadata_entry_t otadata[2];
    int otadata_writes;
    bool read_fails;
    bool loadable[3];        /* [0] factory, [1] ota_0, [2] ota_1 */
    uint32_t secure_version[3];
    uint32_t efuse;
    int efuse_updates;
    char log[2048];
} device_t;

static device_t dev;

static bool d_read(void *ctx, olx_otadata_entry_t two[2])
{
    device_t *d = ctx;
    memcpy(two, d->otadata, sizeof(d->otadata));
    return !d->read_fails;
}

static void d_write(void *ctx, int sector, const olx_otadata_entry_t *e)
{
    device_t *d = ctx;
    d->otadata[sector] = *e;
    d->otadata_writes++;
}

static bool d_sv_ok(void *ctx, int index)
{
    device_t *d = ctx;
    return d->secure_version[index + 1] >= d->efuse;
}

static void d_update(void *ctx, int index)
{
    device_t *d = ctx;
    d->efuse_updates++;
    if (d->secure_version[index + 1] > d->efuse) {
        d->efuse = d->secure_version[index + 1];
    }
}

static bool d_load(void *ctx, int index)
{
    device_t *d = ctx;
    return d->loadable[index + 1];
}

static void d_log(void *ctx, const char *line)
{
    device_t *d = ctx;
    strncat(d->log, line, sizeof(d->log) - strlen(d->log) - 2);
    strcat(d->log, "\n");
}

static olx_boot_ops_t ops(bool factory, bool anti)
{
    olx_boot_ops_t o = {
        .ctx = &dev, .app_count = 2, .has_factory = factory, .has_otadata = true, .rollback_enabled = true,
        .anti_rollback = anti, .read_otadata = d_read, .write_otadata = d_write, .secure_version_ok = d_sv_ok,
        .update_anti_rollback = d_update, .try_load = d_load, .log = d_log,
    };
    return o;
}

static void fresh(void)
{
    memset(&dev, 0, sizeof(dev));
    memset(dev.otadata, 0xFF, sizeof(dev.otadata));
    dev.loadable[1] = dev.loadable[2] = true;
}

static olx_boot_result_t boot(bool factory, bool anti)
{
    olx_boot_ops_t o = ops(factory, anti);
    olx_boot_result_t r;
    olx_boot_select(&o, &r);
    return r;
}

static void test_initial_otadata_boots_ota0_and_writes_seq1(void)
{
    for (int anti = 0; anti < 2; anti++) {
        fresh();
        dev.secure_version[1] = 2;
        olx_boot_result_t r = boot(false, anti);
        TEST_ASSERT_EQUAL(0, r.index);
        TEST_ASSERT_FALSE(r.first_boot);
        TEST_ASSERT_EQUAL_UINT32(1, dev.otadata[0].ota_seq);
        TEST_ASSERT_EQUAL_UINT32(OLX_IMG_VALID, dev.otadata[0].ota_state);
        TEST_ASSERT_TRUE(olx_otadata_valid(&dev.otadata[0]));
        TEST_ASSERT_EQUAL_UINT32(anti ? 2 : 0, dev.efuse); /* anti-rollback burns the booted app's version */
        TEST_ASSERT_NOT_NULL(strstr(dev.log, "Set actual ota_seq=1 in otadata[0]"));
    }
}

static void test_initial_ota0_broken_boots_ota1(void)
{
    fresh();
    dev.loadable[1] = false;
    olx_boot_result_t r = boot(false, true);
    TEST_ASSERT_EQUAL(1, r.index);
    TEST_ASSERT_EQUAL_UINT32(2, dev.otadata[0].ota_seq); /* seq selecting ota_1 */
    TEST_ASSERT_NOT_NULL(strstr(dev.log, "OTA app partition slot 0 is not bootable"));
}

static void test_new_becomes_pending_verify(void)
{
    fresh();
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_VALID);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_NEW);
    olx_boot_result_t r = boot(false, true);
    TEST_ASSERT_EQUAL(1, r.index);
    TEST_ASSERT_TRUE(r.first_boot);
    TEST_ASSERT_EQUAL(1, r.otadata_index);
    TEST_ASSERT_EQUAL_UINT32(OLX_IMG_PENDING_VERIFY, dev.otadata[1].ota_state);
    TEST_ASSERT_EQUAL(1, dev.otadata_writes);
    TEST_ASSERT_EQUAL(0, dev.efuse_updates); /* only a VALID entry updates the eFuse */
}

static void test_pending_verify_at_boot_is_aborted_and_rolled_back(void)
{
    fresh();
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_VALID);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_PENDING_VERIFY);
    olx_boot_result_t r = boot(false, true);
    TEST_ASSERT_EQUAL(0, r.index);
    TEST_ASSERT_FALSE(r.first_boot);
    TEST_ASSERT_EQUAL_UINT32(OLX_IMG_ABORTED, dev.otadata[1].ota_state);
    TEST_ASSERT_EQUAL_UINT32(OLX_IMG_VALID, dev.otadata[0].ota_state);
    TEST_ASSERT_EQUAL(1, dev.efuse_updates); /* ota_0's entry is VALID */
    TEST_ASSERT_NOT_NULL(strstr(dev.log, "otadata[1] is marking as ABORTED"));
}

static void test_everything_aborted_tries_all_partitions(void)
{
    fresh();
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_ABORTED);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_PENDING_VERIFY);
    olx_boot_result_t r = boot(false, true);
    TEST_ASSERT_EQUAL(OLX_FACTORY_INDEX, r.start_index);
    TEST_ASSERT_EQUAL(0, r.index);
    TEST_ASSERT_EQUAL_UINT32(1, dev.otadata[0].ota_seq);
    TEST_ASSERT_EQUAL_UINT32(OLX_IMG_ABORTED, dev.otadata[0].ota_state); /* not rewritten */
    TEST_ASSERT_NOT_NULL(strstr(dev.log, "will try all partitions"));
    /* without anti-rollback: both invalid -> "No factory image, trying OTA 0" */
    fresh();
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_ABORTED);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_INVALID);
    r = boot(false, false);
    TEST_ASSERT_EQUAL(0, r.start_index);
    TEST_ASSERT_EQUAL(0, r.index);
    TEST_ASSERT_EQUAL(0, dev.otadata_writes);
}

static void test_broken_selected_image_falls_back(void)
{
    fresh(); /* ota_1 selected and broken: try below it */
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_VALID);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_VALID);
    dev.loadable[2] = false;
    olx_boot_result_t r = boot(false, true);
    TEST_ASSERT_EQUAL(1, r.start_index);
    TEST_ASSERT_EQUAL(0, r.index);
    TEST_ASSERT_EQUAL(-1, r.otadata_index);
    fresh(); /* ota_0 selected and broken: then above it */
    dev.otadata[0] = olx_otadata_make(3, OLX_IMG_VALID);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_VALID);
    dev.loadable[1] = false;
    r = boot(false, true);
    TEST_ASSERT_EQUAL(0, r.start_index);
    TEST_ASSERT_EQUAL(1, r.index);
    fresh(); /* a NEW image that does not load: PENDING_VERIFY written, the other one boots */
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_VALID);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_NEW);
    dev.loadable[2] = false;
    r = boot(false, true);
    TEST_ASSERT_EQUAL(0, r.index);
    TEST_ASSERT_FALSE(r.first_boot);
    TEST_ASSERT_EQUAL_UINT32(OLX_IMG_PENDING_VERIFY, dev.otadata[1].ota_state);
}

static void test_anti_rollback_skips_low_secure_version(void)
{
    fresh();
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_VALID);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_VALID);
    dev.secure_version[1] = 3;
    dev.secure_version[2] = 1;
    dev.efuse = 2;
    olx_boot_result_t r = boot(false, true);
    TEST_ASSERT_EQUAL(0, r.index);
    TEST_ASSERT_EQUAL(0, r.otadata_index);
    TEST_ASSERT_EQUAL_UINT32(3, dev.efuse);
    TEST_ASSERT_NOT_NULL(strstr(dev.log, "OTA slot 1 has an app with secure_version"));
    /* with anti-rollback off, the newest boots */
    fresh();
    dev.otadata[0] = olx_otadata_make(1, OLX_IMG_VALID);
    dev.otadata[1] = olx_otadata_make(2, OLX_IMG_VALID);
    dev.secure_version[2] = 1;
    dev.efuse = 2;
    r = boot(false, false);
    TEST_ASSERT_EQUAL(1, r.index);
    TEST_ASSERT_EQUAL(0, dev.efuse_updates);
}

static void test_nothing_bootable(void)
{
    fresh();
    dev.loadable[1] = dev.loadable[2] = false;
    olx_boot_result_t r = boot(false, true);
    TEST_ASSERT_EQUAL(OLX_NO_BOOTABLE_INDEX, r.index);
    TEST_ASSERT_NOT_NULL(strstr(dev.log, "No bootable app partitions in the partition table"));
    fresh();
    dev.efuse = 5; /* both images below the eFuse */
    r = boot(false, true);
    TEST_ASSERT_EQUAL(OLX_NO_BOOTABLE_INDEX, r.index);
    fresh();
    dev.read_fails = true;
    r = boot(false, true);
    TEST_ASSERT_EQUAL(OLX_NO_BOOTABLE_INDEX, r.index);
}

static void test_factory(void)
{
    fresh();
    dev.loadable[0] = true;
    olx_boot_result_t r = boot(true, false); /* blank otadata, factory app: factory, nothing written */
    TEST_ASSERT_EQUAL(OLX_FACTORY_INDEX, r.index);
    TEST_ASSERT_EQUAL(0, dev.otadata_writes);
    fresh();
    dev.loadable[0] = true;
    dev.otadata[0] = olx_otadata_make(2, OLX_IMG_VALID);
    dev.loadable[2] = false; /* selected ota_1 broken: ota_0, then the factory app */
    dev.loadable[1] = false;
    r = boot(true, false);
    TEST_ASSERT_EQUAL(OLX_FACTORY_INDEX, r.index);
    fresh();
    olx_boot_ops_t o = ops(true, false);
    o.has_otadata = false;
    dev.loadable[0] = true;
    olx_boot_select(&o, &r);
    TEST_ASSERT_EQUAL(OLX_FACTORY_INDEX, r.index);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_initial_otadata_boots_ota0_and_writes_seq1);
    RUN_TEST(test_initial_ota0_broken_boots_ota1);
    RUN_TEST(test_new_becomes_pending_verify);
    RUN_TEST(test_pending_verify_at_boot_is_aborted_and_rolled_back);
    RUN_TEST(test_everything_aborted_tries_all_partitions);
    RUN_TEST(test_broken_selected_image_falls_back);
    RUN_TEST(test_anti_rollback_skips_low_secure_version);
    RUN_TEST(test_nothing_bootable);
    RUN_TEST(test_factory);
    return UNITY_END();
}
