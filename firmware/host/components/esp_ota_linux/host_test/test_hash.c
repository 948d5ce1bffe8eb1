/* TEST-ONLY: never part of a firmware. Unit tests of esp_ota_linux, the layer that lets
 * the esp_ota_agent component run on ESP-IDF's linux target for tests (../README.md):
 * CRC-32 (against Espressif's ROM CRC for linux) and
 * SHA-256 (FIPS 180-4 vectors, any split of the input). */
#include <stdio.h>
#include <string.h>

#include "esp_rom_crc.h"
#include "olx_core.h"
#include "unity.h"

void setUp(void) {}
void tearDown(void) {}

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < 32; i++) {
        sprintf(out + 2 * i, "%02x", d[i]);
    }
}

static void test_crc32_check_value(void)
{
    /* CRC-32/ISO-HDLC check value, in ESP-IDF's convention (init 0 means ~0 inside) */
    TEST_ASSERT_EQUAL_HEX32(0xCBF43926u, olx_crc32_le(0, "123456789", 9));
}

static void test_crc32_matches_esp_rom(void)
{
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 37 + 11);
    }
    for (size_t len = 0; len < sizeof(buf); len += 7) {
        TEST_ASSERT_EQUAL_HEX32(esp_rom_crc32_le(UINT32_MAX, buf, (uint32_t)len), olx_crc32_le(UINT32_MAX, buf, len));
        TEST_ASSERT_EQUAL_HEX32(esp_rom_crc32_le(0x1234, buf, (uint32_t)len), olx_crc32_le(0x1234, buf, len));
    }
}

static void test_otadata_crc_is_crc_of_seq(void)
{
    /* binascii.crc32(struct.pack('<I', 1), 0xFFFFFFFF) == 1195612314 (simulator/otadata.py) */
    olx_otadata_entry_t e = olx_otadata_make(1, OLX_IMG_NEW);
    TEST_ASSERT_EQUAL_UINT32(1195612314u, e.crc);
    uint32_t seq = 0x12345678;
    TEST_ASSERT_EQUAL_HEX32(esp_rom_crc32_le(UINT32_MAX, (const uint8_t *)&seq, 4), olx_otadata_make(seq, 2).crc);
}

static void sha_of(const void *data, size_t len, char out[65])
{
    olx_sha256_t s;
    uint8_t d[32];
    olx_sha256_init(&s);
    olx_sha256_update(&s, data, len);
    olx_sha256_final(&s, d);
    hex(d, out);
}

static void test_sha256_vectors(void)
{
    char out[65];
    sha_of("", 0, out);
    TEST_ASSERT_EQUAL_STRING("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", out);
    sha_of("abc", 3, out);
    TEST_ASSERT_EQUAL_STRING("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", out);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha_of(m, strlen(m), out);
    TEST_ASSERT_EQUAL_STRING("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", out);
}

static void test_sha256_million_a_in_odd_pieces(void)
{
    static uint8_t a[1000];
    memset(a, 'a', sizeof(a));
    olx_sha256_t s;
    uint8_t d[32];
    char out[65];
    olx_sha256_init(&s);
    size_t done = 0, step = 1;
    while (done < 1000000) {
        size_t take = step % 997;
        if (take > 1000000 - done) {
            take = 1000000 - done;
        }
        olx_sha256_update(&s, a, take);
        done += take;
        step += 13;
    }
    olx_sha256_final(&s, d);
    hex(d, out);
    TEST_ASSERT_EQUAL_STRING("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", out);
}

static void test_sha256_padding_boundaries(void)
{
    /* lengths around the 56-byte padding limit, one-shot versus byte by byte */
    uint8_t buf[130];
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)i;
    }
    for (size_t len = 50; len < sizeof(buf); len++) {
        olx_sha256_t a, b;
        uint8_t da[32], db[32];
        olx_sha256_init(&a);
        olx_sha256_update(&a, buf, len);
        olx_sha256_final(&a, da);
        olx_sha256_init(&b);
        for (size_t i = 0; i < len; i++) {
            olx_sha256_update(&b, buf + i, 1);
        }
        olx_sha256_final(&b, db);
        TEST_ASSERT_EQUAL_MEMORY(da, db, 32);
    }
    char out[65];
    sha_of(buf, 64, out); /* one full block: python -c "import hashlib;print(hashlib.sha256(bytes(range(64))).hexdigest())" */
    TEST_ASSERT_EQUAL_STRING("fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108", out);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_crc32_check_value);
    RUN_TEST(test_crc32_matches_esp_rom);
    RUN_TEST(test_otadata_crc_is_crc_of_seq);
    RUN_TEST(test_sha256_vectors);
    RUN_TEST(test_sha256_million_a_in_odd_pieces);
    RUN_TEST(test_sha256_padding_boundaries);
    return UNITY_END();
}
