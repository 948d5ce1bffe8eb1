/* TEST-ONLY: never part of a firmware. Unit tests of esp_ota_linux, the layer that lets
 * the esp_ota_agent component run on ESP-IDF's linux target for tests (../README.md):
 * otadata entry rules (bootloader_common_loader.c and
 * esp_ota_ops.c of ESP-IDF v5.5; simulator/otadata.py). */
#include <stdio.h>
#include <string.h>

#include "olx_core.h"
#include "unity.h"

void setUp(void) {}
void tearDown(void) {}

static olx_otadata_entry_t erased(void)
{
    olx_otadata_entry_t e;
    memset(&e, 0xFF, sizeof(e));
    return e;
}

static void test_otadata_crc_is_crc_of_seq(void)
{
    /* binascii.crc32(struct.pack('<I', 1), 0xFFFFFFFF) == 1195612314 (simulator/otadata.py) */
    olx_otadata_entry_t e = olx_otadata_make(1, OLX_IMG_NEW);
    TEST_ASSERT_EQUAL_UINT32(1195612314u, e.crc);
}

static void test_validity(void)
{
    olx_otadata_entry_t e = erased();
    TEST_ASSERT_TRUE(olx_otadata_invalid(&e));
    TEST_ASSERT_FALSE(olx_otadata_valid(&e));
    TEST_ASSERT_TRUE(olx_otadata_initial(&e));
    TEST_ASSERT_FALSE(olx_otadata_rolled_back(&e));

    uint32_t ok_states[] = {OLX_IMG_NEW, OLX_IMG_PENDING_VERIFY, OLX_IMG_VALID, OLX_IMG_UNDEFINED, 77};
    for (size_t i = 0; i < sizeof(ok_states) / sizeof(ok_states[0]); i++) {
        e = olx_otadata_make(5, ok_states[i]);
        TEST_ASSERT_TRUE(olx_otadata_valid(&e));
        TEST_ASSERT_FALSE(olx_otadata_initial(&e));
        TEST_ASSERT_FALSE(olx_otadata_rolled_back(&e));
    }
    e = olx_otadata_make(5, OLX_IMG_INVALID);
    TEST_ASSERT_FALSE(olx_otadata_valid(&e));
    TEST_ASSERT_TRUE(olx_otadata_rolled_back(&e));
    TEST_ASSERT_FALSE(olx_otadata_initial(&e));
    e = olx_otadata_make(5, OLX_IMG_ABORTED);
    TEST_ASSERT_TRUE(olx_otadata_rolled_back(&e));

    e = olx_otadata_make(5, OLX_IMG_VALID);
    e.crc ^= 1;
    TEST_ASSERT_FALSE(olx_otadata_valid(&e));
    TEST_ASSERT_FALSE(olx_otadata_invalid(&e)); /* "invalid" looks at seq and state only */
    TEST_ASSERT_TRUE(olx_otadata_initial(&e));
    e.ota_state = OLX_IMG_ABORTED;
    TEST_ASSERT_FALSE(olx_otadata_rolled_back(&e)); /* a bad crc is not a rollback */
}

static void test_slot(void)
{
    olx_otadata_entry_t e = olx_otadata_make(1, OLX_IMG_VALID);
    TEST_ASSERT_EQUAL(0, olx_otadata_slot(&e, 2));
    e = olx_otadata_make(4, OLX_IMG_VALID);
    TEST_ASSERT_EQUAL(1, olx_otadata_slot(&e, 2));
    TEST_ASSERT_EQUAL(0, olx_otadata_slot(&e, 3));
    e = olx_otadata_make(0, OLX_IMG_VALID); /* (0 - 1) as u32 */
    TEST_ASSERT_EQUAL((uint32_t)0xFFFFFFFFu % 3, olx_otadata_slot(&e, 3));
}

static void test_select_and_active(void)
{
    olx_otadata_entry_t two[2] = {olx_otadata_make(3, OLX_IMG_VALID), olx_otadata_make(4, OLX_IMG_NEW)};
    bool both[2] = {true, true}, first[2] = {true, false}, second[2] = {false, true}, none[2] = {false, false};
    TEST_ASSERT_EQUAL(1, olx_select_otadata(two, both, true));
    TEST_ASSERT_EQUAL(0, olx_select_otadata(two, both, false));
    TEST_ASSERT_EQUAL(0, olx_select_otadata(two, first, true));
    TEST_ASSERT_EQUAL(1, olx_select_otadata(two, second, false));
    TEST_ASSERT_EQUAL(-1, olx_select_otadata(two, none, true));
    TEST_ASSERT_EQUAL(1, olx_active_otadata(two));
    two[1].ota_seq = 3; /* equal seqs: ESP-IDF picks index 0 (crc not fixed: entry 1 now invalid) */
    TEST_ASSERT_EQUAL(0, olx_active_otadata(two));
    two[1] = olx_otadata_make(3, OLX_IMG_VALID);
    TEST_ASSERT_EQUAL(0, olx_active_otadata(two));
    two[0] = olx_otadata_make(9, OLX_IMG_ABORTED);
    TEST_ASSERT_EQUAL(1, olx_active_otadata(two));
    two[1] = erased();
    TEST_ASSERT_EQUAL(-1, olx_active_otadata(two));
}

static void test_last_invalid(void)
{
    olx_otadata_entry_t two[2] = {olx_otadata_make(3, OLX_IMG_ABORTED), olx_otadata_make(4, OLX_IMG_INVALID)};
    TEST_ASSERT_EQUAL(0, olx_last_invalid_otadata(two)); /* the LOWER seq, as ESP-IDF (max=false) */
    two[0] = olx_otadata_make(3, OLX_IMG_VALID);
    TEST_ASSERT_EQUAL(1, olx_last_invalid_otadata(two));
    two[1] = olx_otadata_make(4, OLX_IMG_PENDING_VERIFY);
    TEST_ASSERT_EQUAL(-1, olx_last_invalid_otadata(two));
}

typedef struct {
    uint32_t seq0, state0, seq1, state1; /* seq 0xFFFFFFFF: erased sector */
    unsigned slot, count;
    int sector;
    uint32_t seq;
} boot_slot_case_t;

static void test_otadata_for_boot_slot(void)
{
    const uint32_t E = OLX_SEQ_ERASED, V = OLX_IMG_VALID, A = OLX_IMG_ABORTED, N = OLX_IMG_NEW;
    const boot_slot_case_t cases[] = {
        {E, E, E, E, 0, 2, 0, 1},   /* blank otadata: sector 0, seq slot + 1 */
        {E, E, E, E, 1, 2, 0, 2},
        {1, V, E, E, 1, 2, 1, 2},   /* ota_0 active (seq 1) -> ota_1 in sector 1, seq 2 */
        {1, V, 2, V, 0, 2, 0, 3},   /* ota_1 active (seq 2) -> ota_0 in sector 0, seq 3 */
        {1, V, 2, N, 1, 2, 0, 2},   /* same slot again: ESP-IDF v5.5 writes the same seq into the OTHER sector */
        {3, A, 2, V, 0, 2, 0, 3},   /* the aborted entry is not active */
        {5, V, 4, V, 0, 3, 1, 7},   /* three slots: from seq 5 (slot 1) to slot 0 -> 7 */
        {5, V, 4, V, 2, 3, 1, 6},   /* ... to slot 2 -> 6 */
        {5, V, 4, V, 1, 3, 1, 5},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const boot_slot_case_t *c = &cases[i];
        olx_otadata_entry_t two[2] = {erased(), erased()};
        if (c->seq0 != E) {
            two[0] = olx_otadata_make(c->seq0, c->state0);
        }
        if (c->seq1 != E) {
            two[1] = olx_otadata_make(c->seq1, c->state1);
        }
        memcpy(two[c->sector].seq_label, "label-kept", 10);
        int sector = -9;
        olx_otadata_entry_t out;
        olx_otadata_for_boot_slot(two, c->slot, c->count, OLX_IMG_NEW, &sector, &out);
        char msg[32];
        snprintf(msg, sizeof(msg), "case %zu", i);
        TEST_ASSERT_EQUAL_MESSAGE(c->sector, sector, msg);
        TEST_ASSERT_EQUAL_UINT32_MESSAGE(c->seq, out.ota_seq, msg);
        TEST_ASSERT_EQUAL_UINT32_MESSAGE(OLX_IMG_NEW, out.ota_state, msg);
        TEST_ASSERT_TRUE_MESSAGE(olx_otadata_valid(&out), msg);
        TEST_ASSERT_EQUAL_UINT32_MESSAGE(c->slot, olx_otadata_slot(&out, c->count), msg);
        TEST_ASSERT_EQUAL_MEMORY_MESSAGE("label-kept", out.seq_label, 10, msg);
    }
}

static void test_state_names(void)
{
    char buf[11];
    TEST_ASSERT_EQUAL_STRING("new", olx_img_state_name(0, buf));
    TEST_ASSERT_EQUAL_STRING("pending_verify", olx_img_state_name(1, buf));
    TEST_ASSERT_EQUAL_STRING("valid", olx_img_state_name(2, buf));
    TEST_ASSERT_EQUAL_STRING("invalid", olx_img_state_name(3, buf));
    TEST_ASSERT_EQUAL_STRING("aborted", olx_img_state_name(4, buf));
    TEST_ASSERT_EQUAL_STRING("undefined", olx_img_state_name(0xFFFFFFFFu, buf));
    TEST_ASSERT_EQUAL_STRING("0x00000007", olx_img_state_name(7, buf));
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_otadata_crc_is_crc_of_seq);
    RUN_TEST(test_validity);
    RUN_TEST(test_slot);
    RUN_TEST(test_select_and_active);
    RUN_TEST(test_last_invalid);
    RUN_TEST(test_otadata_for_boot_slot);
    RUN_TEST(test_state_names);
    return UNITY_END();
}
