/*
 * Unit tests of agent_json: the protocol's documents byte for byte, escaping, exact
 * truncation at every buffer size, the worst-case sizes, and misuse of the writer.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdio.h>
#include <string.h>
#include "unity.h"
#include "agent_json.h"
#include "test_support.h"

void setUp(void) {}
void tearDown(void) {}

static agent_ota_status_t downloading(void)
{
    agent_ota_status_t s;
    agent_ota_status_idle(&s);
    s.state = AGENT_OTA_DOWNLOADING;
    strcpy(s.ota_id, "3f2a9c01d4e5");
    strcpy(s.target_version, "1.2.0");
    s.bytes_written = 409600;
    s.image_size = 912384;
    return s;
}

static const char DOWNLOADING_JSON[] =
    "{\"state\":\"downloading\",\"ota_id\":\"3f2a9c01d4e5\",\"target_version\":\"1.2.0\","
    "\"bytes_written\":409600,\"image_size\":912384,\"error\":null,\"message\":null}";

static size_t render_status(char *buf, size_t cap, const void *arg)
{
    return agent_json_status(buf, cap, arg, test_err_name);
}

/* A JSON string value alone, through the writer. */
static size_t render_string(char *buf, size_t cap, const void *arg)
{
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    agent_json_string(&w, arg);
    return agent_json_finish(&w);
}

static void assert_string_renders(const char *input, const char *expected)
{
    char buf[256];
    TEST_ASSERT_EQUAL_size_t_MESSAGE(strlen(expected), render_string(buf, sizeof(buf), input),
                                     expected);
    TEST_ASSERT_EQUAL_STRING(expected, buf);
    test_every_capacity(render_string, input, expected);
}

static void test_status_document(void)
{
    char buf[AGENT_JSON_STATUS_MAX];
    const agent_ota_status_t s = downloading();
    TEST_ASSERT_EQUAL_size_t(strlen(DOWNLOADING_JSON), agent_json_status(buf, sizeof(buf), &s,
                                                                        test_err_name));
    TEST_ASSERT_EQUAL_STRING(DOWNLOADING_JSON, buf);

    agent_ota_status_t idle;
    agent_ota_status_idle(&idle);
    TEST_ASSERT_NOT_EQUAL(0, agent_json_status(buf, sizeof(buf), &idle, test_err_name));
    TEST_ASSERT_EQUAL_STRING("{\"state\":\"idle\",\"ota_id\":null,\"target_version\":null,"
                             "\"bytes_written\":0,\"image_size\":null,\"error\":null,"
                             "\"message\":null}",
                             buf);

    agent_ota_status_t failed = downloading();
    failed.state = AGENT_OTA_FAILED;
    failed.error = 0x1503;
    strcpy(failed.message, "sha256 mismatch");
    TEST_ASSERT_NOT_EQUAL(0, agent_json_status(buf, sizeof(buf), &failed, test_err_name));
    TEST_ASSERT_EQUAL_STRING("{\"state\":\"failed\",\"ota_id\":\"3f2a9c01d4e5\","
                             "\"target_version\":\"1.2.0\",\"bytes_written\":409600,"
                             "\"image_size\":912384,\"error\":\"ESP_ERR_OTA_VALIDATE_FAILED\","
                             "\"message\":\"sha256 mismatch\"}",
                             buf);
    /* Without a namer the error is still a string, never a number. */
    TEST_ASSERT_NOT_EQUAL(0, agent_json_status(buf, sizeof(buf), &failed, NULL));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"error\":\"UNKNOWN ERROR\""));
}

static void test_status_every_capacity(void)
{
    const agent_ota_status_t s = downloading();
    test_every_capacity(render_status, &s, DOWNLOADING_JSON);
}

static agent_info_t protocol_example_info(void)
{
    agent_info_t info;
    memset(&info, 0, sizeof(info));
    static const uint8_t mac[6] = {0x24, 0x0a, 0xc4, 0x00, 0x00, 0x01};
    memcpy(info.mac, mac, sizeof(mac));
    info.chip_model = 1;
    info.chip_revision = 301;
    strcpy(info.project, "garden");
    strcpy(info.version, "1.2.0");
    strcpy(info.idf_ver, "v5.5.1");
    for (size_t i = 0; i < 32; i++) {
        info.app_elf_sha256[i] = (uint8_t)(i * 8 + 1);
    }
    info.secure_version = 0;
    strcpy(info.running_partition, "ota_1");
    strcpy(info.boot_partition, "ota_1");
    info.image_state = 1;
    info.last_ota = downloading();
    info.last_ota.state = AGENT_OTA_SUCCEEDED;
    info.last_ota.bytes_written = 912384;
    info.reset_reason = 3;
    info.uptime_us = 12345400;
    return info;
}

static const char INFO_JSON[] =
    "{\"api\":1,\"mac\":\"24:0a:c4:00:00:01\",\"chip\":\"esp32\",\"chip_revision\":301,"
    "\"project\":\"garden\",\"version\":\"1.2.0\",\"idf_ver\":\"v5.5.1\","
    "\"app_elf_sha256\":\"0109111921293139414951596169717981899199a1a9b1b9c1c9d1d9e1e9f1f9\","
    "\"secure_version\":0,\"running_partition\":\"ota_1\",\"boot_partition\":\"ota_1\","
    "\"image_state\":\"pending_verify\",\"last_invalid_partition\":null,"
    "\"last_ota\":{\"state\":\"succeeded\",\"ota_id\":\"3f2a9c01d4e5\",\"target_version\":"
    "\"1.2.0\",\"bytes_written\":912384,\"image_size\":912384,\"error\":null,"
    "\"message\":null},\"reset_reason\":\"ESP_RST_SW\",\"uptime_s\":12.345}";

static size_t render_info(char *buf, size_t cap, const void *arg)
{
    return agent_json_info(buf, cap, arg, test_err_name);
}

static void test_info_document(void)
{
    char buf[AGENT_JSON_INFO_MAX];
    agent_info_t info = protocol_example_info();
    TEST_ASSERT_EQUAL_size_t(strlen(INFO_JSON), agent_json_info(buf, sizeof(buf), &info,
                                                               test_err_name));
    TEST_ASSERT_EQUAL_STRING(INFO_JSON, buf);
    test_every_capacity(render_info, &info, INFO_JSON);

    strcpy(info.last_invalid_partition, "ota_0");
    info.image_state = 0xFFFFFFFFu;
    info.chip_model = 999;
    info.reset_reason = 99;
    TEST_ASSERT_NOT_EQUAL(0, agent_json_info(buf, sizeof(buf), &info, test_err_name));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"last_invalid_partition\":\"ota_0\""));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"image_state\":\"undefined\""));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"chip\":\"unknown\""));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"reset_reason\":\"ESP_RST_UNKNOWN\""));
}

static void test_info_strings_fill_their_arrays(void)
{
    /* esp_app_desc_t strings of 32 bytes without a NUL, labels of 17: read within bounds. */
    agent_info_t info = protocol_example_info();
    memset(info.project, 'p', sizeof(info.project));
    memset(info.running_partition, 'r', sizeof(info.running_partition));
    memset(info.last_invalid_partition, 'l', sizeof(info.last_invalid_partition));
    char buf[AGENT_JSON_INFO_MAX];
    TEST_ASSERT_NOT_EQUAL(0, agent_json_info(buf, sizeof(buf), &info, test_err_name));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"project\":\"pppppppppppppppppppppppppppppppp\","));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"running_partition\":\"rrrrrrrrrrrrrrrrr\","));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"last_invalid_partition\":\"lllllllllllllllll\","));
}

static void uptime(int64_t us, const char *expected)
{
    agent_info_t info = protocol_example_info();
    info.uptime_us = us;
    char buf[AGENT_JSON_INFO_MAX];
    TEST_ASSERT_NOT_EQUAL(0, agent_json_info(buf, sizeof(buf), &info, test_err_name));
    char tail[64];
    snprintf(tail, sizeof(tail), "\"uptime_s\":%s}", expected);
    TEST_ASSERT_EQUAL_STRING(tail, buf + strlen(buf) - strlen(tail));
}

static void test_uptime_three_decimals(void)
{
    uptime(0, "0.000");
    uptime(499, "0.000");
    uptime(500, "0.001");
    uptime(999, "0.001");
    uptime(1000, "0.001");
    uptime(1000000, "1.000");
    uptime(12345678, "12.346");
    uptime(59999999, "60.000");
    uptime(-5, "0.000");
    uptime(INT64_MAX, "9223372036854.776");
}

static void test_error_document(void)
{
    char buf[128];
    static const char expected[] =
        "{\"error\":\"ESP_ERR_INVALID_ARG\",\"message\":\"bad \\\"sha\\\"\"}";
    TEST_ASSERT_EQUAL_size_t(strlen(expected), agent_json_error(buf, sizeof(buf),
                                                                "ESP_ERR_INVALID_ARG",
                                                                "bad \"sha\""));
    TEST_ASSERT_EQUAL_STRING(expected, buf);
    TEST_ASSERT_NOT_EQUAL(0, agent_json_error(buf, sizeof(buf), "HTTPD_401_UNAUTHORIZED", NULL));
    TEST_ASSERT_EQUAL_STRING("{\"error\":\"HTTPD_401_UNAUTHORIZED\",\"message\":\"\"}", buf);
    TEST_ASSERT_EQUAL_size_t(0, agent_json_error(buf, 10, "ESP_FAIL", "x"));
    TEST_ASSERT_EQUAL_STRING("{\"error\":", buf);
}

static agent_event_t write_flash_event(void)
{
    agent_event_t e;
    agent_event_init(&e, AGENT_EVENT_WRITE_FLASH);
    e.id = 42;
    strcpy(e.ota_id, "3f2a9c01d4e5");
    e.bytes_written = 409600;
    e.image_size = 912384;
    return e;
}

static const char EVENT_JSON[] =
    "{\"id\":42,\"type\":\"write_flash\",\"ota_id\":\"3f2a9c01d4e5\",\"bytes_written\":409600,"
    "\"image_size\":912384,\"project\":null,\"version\":null,\"error\":null}";

static size_t render_event(char *buf, size_t cap, const void *arg)
{
    return agent_json_event(buf, cap, arg, test_err_name);
}

static void test_event_document(void)
{
    char buf[AGENT_JSON_EVENT_MAX];
    agent_event_t e = write_flash_event();
    TEST_ASSERT_EQUAL_size_t(strlen(EVENT_JSON), agent_json_event(buf, sizeof(buf), &e,
                                                                 test_err_name));
    TEST_ASSERT_EQUAL_STRING(EVENT_JSON, buf);
    test_every_capacity(render_event, &e, EVENT_JSON);

    agent_event_init(&e, AGENT_EVENT_GET_IMG_DESC);
    e.id = 7;
    strcpy(e.ota_id, "3f2a9c01d4e5");
    strcpy(e.project, "garden");
    strcpy(e.version, "1.2.0");
    TEST_ASSERT_NOT_EQUAL(0, agent_json_event(buf, sizeof(buf), &e, test_err_name));
    TEST_ASSERT_EQUAL_STRING("{\"id\":7,\"type\":\"get_img_desc\",\"ota_id\":\"3f2a9c01d4e5\","
                             "\"bytes_written\":null,\"image_size\":null,\"project\":\"garden\","
                             "\"version\":\"1.2.0\",\"error\":null}",
                             buf);

    agent_event_init(&e, AGENT_EVENT_ABORT);
    e.id = 8;
    e.error = ESP_FAIL;
    TEST_ASSERT_NOT_EQUAL(0, agent_json_event(buf, sizeof(buf), &e, test_err_name));
    TEST_ASSERT_EQUAL_STRING("{\"id\":8,\"type\":\"abort\",\"ota_id\":null,\"bytes_written\":null,"
                             "\"image_size\":null,\"project\":null,\"version\":null,"
                             "\"error\":\"ESP_FAIL\"}",
                             buf);
}

static void test_small_documents(void)
{
    char buf[64];
    TEST_ASSERT_EQUAL_size_t(11, agent_json_ok(buf, sizeof(buf)));
    TEST_ASSERT_EQUAL_STRING("{\"ok\":true}", buf);
    TEST_ASSERT_EQUAL_size_t(0, agent_json_ok(buf, 11));
    TEST_ASSERT_EQUAL_size_t(25, agent_json_ota_started(buf, sizeof(buf), "3f2a9c01d4e5"));
    TEST_ASSERT_EQUAL_STRING("{\"ota_id\":\"3f2a9c01d4e5\"}", buf);
}

static void test_escaping(void)
{
    assert_string_renders("plain", "\"plain\"");
    assert_string_renders("", "\"\"");
    assert_string_renders("say \"hi\"", "\"say \\\"hi\\\"\"");
    assert_string_renders("C:\\dir\\", "\"C:\\\\dir\\\\\"");
    assert_string_renders("a/b", "\"a/b\"");  /* '/' needs no escape */
    assert_string_renders("\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"");
    assert_string_renders("\x01\x0b\x1f\x7f", "\"\\u0001\\u000b\\u001f\x7f\"");
    assert_string_renders("caf\xc3\xa9", "\"caf\xc3\xa9\"");                 /* 2-byte */
    assert_string_renders("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");           /* 3-byte */
    assert_string_renders("\xf0\x9f\x98\x80!", "\"\xf0\x9f\x98\x80!\"");     /* 4-byte */
    assert_string_renders("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");       /* U+10FFFF */
    /* Ill-formed parts each become one U+FFFD, as Python's errors="replace". */
    assert_string_renders("a\xffz", "\"a\\ufffdz\"");
    assert_string_renders("\x80\x80", "\"\\ufffd\\ufffd\"");
    assert_string_renders("\xc0\xaf", "\"\\ufffd\\ufffd\"");                 /* overlong */
    assert_string_renders("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");      /* surrogate */
    assert_string_renders("\xe2\x82(", "\"\\ufffd(\"");                      /* cut short */
    assert_string_renders("\xf0\x9f\x98", "\"\\ufffd\"");                    /* cut at end */
    assert_string_renders("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    assert_string_renders("x\"\\\n\xff\xc3\xa9", "\"x\\\"\\\\\\n\\ufffd\xc3\xa9\"");
}

static void test_all_control_characters(void)
{
    for (int c = 1; c < 0x20; c++) {
        const char input[2] = {(char)c, '\0'};
        char expected[16];
        switch (c) {
        case '\b': strcpy(expected, "\"\\b\""); break;
        case '\f': strcpy(expected, "\"\\f\""); break;
        case '\n': strcpy(expected, "\"\\n\""); break;
        case '\r': strcpy(expected, "\"\\r\""); break;
        case '\t': strcpy(expected, "\"\\t\""); break;
        default: snprintf(expected, sizeof(expected), "\"\\u%04x\"", c); break;
        }
        assert_string_renders(input, expected);
    }
}

static void test_fixed_array_cut_mid_character(void)
{
    /* A version array filled to the brim, its last character cut: the fragment is
     * replaced, nothing is read past the array. */
    agent_event_t e;
    agent_event_init(&e, AGENT_EVENT_GET_IMG_DESC);
    memset(e.version, 'v', sizeof(e.version));
    e.version[30] = (char)0xc3;
    e.version[31] = '\0';
    char buf[AGENT_JSON_EVENT_MAX];
    TEST_ASSERT_NOT_EQUAL(0, agent_json_event(buf, sizeof(buf), &e, test_err_name));
    TEST_ASSERT_NOT_NULL(strstr(buf, "\"version\":\"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\\ufffd\""));
}

static void test_numbers(void)
{
    char buf[256];
    agent_json_writer_t w;
    agent_json_init(&w, buf, sizeof(buf));
    agent_json_begin_object(&w);
    agent_json_kv_u32(&w, "a", 0);
    agent_json_kv_u32(&w, "b", UINT32_MAX);
    agent_json_kv_i32(&w, "c", INT32_MIN);
    agent_json_kv_i32(&w, "d", INT32_MAX);
    agent_json_kv_i32(&w, "e", -1);
    agent_json_kv_size_or_null(&w, "f", -1);
    agent_json_kv_size_or_null(&w, "g", 0);
    agent_json_key(&w, "h");
    agent_json_u64(&w, UINT64_MAX);
    agent_json_kv_bool(&w, "i", false);
    agent_json_kv_null(&w, "j");
    agent_json_kv_raw(&w, "k", "[1,2]");
    agent_json_kv_string_or_null(&w, "l", "");
    agent_json_kv_string_or_null(&w, "m", NULL);
    agent_json_kv_string(&w, "n", "");
    agent_json_kv_string(&w, "o", NULL);
    agent_json_end_object(&w);
    TEST_ASSERT_NOT_EQUAL(0, agent_json_finish(&w));
    TEST_ASSERT_EQUAL_STRING("{\"a\":0,\"b\":4294967295,\"c\":-2147483648,\"d\":2147483647,"
                             "\"e\":-1,\"f\":null,\"g\":0,\"h\":18446744073709551615,"
                             "\"i\":false,\"j\":null,\"k\":[1,2],\"l\":null,\"m\":null,"
                             "\"n\":\"\",\"o\":null}",
                             buf);
}

static void test_nested_objects_and_keys_escaped(void)
{
    char buf[64];
    agent_json_writer_t w;
    agent_json_init(&w, buf, sizeof(buf));
    agent_json_begin_object(&w);
    agent_json_kv_begin_object(&w, "a\"b");
    agent_json_end_object(&w);
    agent_json_kv_begin_object(&w, "c");
    agent_json_kv_u32(&w, "d", 1);
    agent_json_kv_begin_object(&w, "e");
    agent_json_kv_u32(&w, "f", 2);
    agent_json_end_object(&w);
    agent_json_kv_u32(&w, "g", 3);
    agent_json_end_object(&w);
    agent_json_kv_u32(&w, "h", 4);
    agent_json_end_object(&w);
    TEST_ASSERT_EQUAL_size_t(strlen(buf), agent_json_finish(&w));
    TEST_ASSERT_EQUAL_STRING("{\"a\\\"b\":{},\"c\":{\"d\":1,\"e\":{\"f\":2},\"g\":3},\"h\":4}",
                             buf);
}

static void test_misuse_is_reported(void)
{
    char buf[64];
    agent_json_writer_t w;

    agent_json_init(&w, buf, sizeof(buf));
    agent_json_end_object(&w);
    TEST_ASSERT_EQUAL_size_t(0, agent_json_finish(&w));

    agent_json_init(&w, buf, sizeof(buf));
    agent_json_begin_object(&w);
    TEST_ASSERT_EQUAL_size_t(0, agent_json_finish(&w));  /* left open */

    agent_json_init(&w, buf, sizeof(buf));
    agent_json_key(&w, "k");  /* outside an object */
    TEST_ASSERT_EQUAL_size_t(0, agent_json_finish(&w));

    agent_json_init(&w, buf, sizeof(buf));
    for (int i = 0; i <= AGENT_JSON_MAX_DEPTH; i++) {
        agent_json_begin_object(&w);
    }
    for (int i = 0; i <= AGENT_JSON_MAX_DEPTH; i++) {
        agent_json_end_object(&w);
    }
    TEST_ASSERT_EQUAL_size_t(0, agent_json_finish(&w));

    agent_json_init(&w, buf, 0);
    TEST_ASSERT_EQUAL_size_t(0, agent_json_finish(&w));  /* not even "" fits */
}

static const char *long_err_name(esp_err_t code)
{
    (void)code;
    return "ESP_ERR_A_VERY_LONG_ERROR_NAME_OF_SIXTY_FOUR_CHARACTERS_XXXXXXXX";
}

static void fill_worst(char *s, size_t size)
{
    memset(s, 0x01, size - 1);  /* each one becomes \u0001 */
    s[size - 1] = '\0';
}

static void test_worst_case_sizes_fit(void)
{
    TEST_ASSERT_EQUAL_size_t(64, strlen(long_err_name(0)));
    char buf[AGENT_JSON_INFO_MAX];

    agent_ota_status_t s = downloading();
    s.state = AGENT_OTA_VERIFYING;
    fill_worst(s.ota_id, sizeof(s.ota_id));
    fill_worst(s.target_version, sizeof(s.target_version));
    fill_worst(s.message, sizeof(s.message));
    s.bytes_written = UINT32_MAX;
    s.image_size = INT32_MAX;
    s.error = INT32_MIN;
    const size_t status_len = agent_json_status(buf, AGENT_JSON_STATUS_MAX, &s, long_err_name);
    TEST_ASSERT_NOT_EQUAL(0, status_len);

    agent_event_t e;
    agent_event_init(&e, AGENT_EVENT_VERIFY_CHIP_REVISION);
    e.id = UINT32_MAX;
    fill_worst(e.ota_id, sizeof(e.ota_id));
    e.bytes_written = INT32_MAX;
    e.image_size = INT32_MAX;
    e.error = INT32_MIN;
    fill_worst(e.project, sizeof(e.project));
    fill_worst(e.version, sizeof(e.version));
    const size_t event_len = agent_json_event(buf, AGENT_JSON_EVENT_MAX, &e, long_err_name);
    TEST_ASSERT_NOT_EQUAL(0, event_len);

    agent_info_t info = protocol_example_info();
    info.last_ota = s;
    info.chip_model = 20;
    info.chip_revision = UINT32_MAX;
    info.secure_version = UINT32_MAX;
    fill_worst(info.project, sizeof(info.project));
    fill_worst(info.version, sizeof(info.version));
    fill_worst(info.idf_ver, sizeof(info.idf_ver));
    fill_worst(info.running_partition, sizeof(info.running_partition));
    fill_worst(info.boot_partition, sizeof(info.boot_partition));
    fill_worst(info.last_invalid_partition, sizeof(info.last_invalid_partition));
    info.image_state = 1;
    info.reset_reason = 15;
    info.uptime_us = INT64_MAX;
    const size_t info_len = agent_json_info(buf, AGENT_JSON_INFO_MAX, &info, long_err_name);
    TEST_ASSERT_NOT_EQUAL(0, info_len);
    TEST_ASSERT_LESS_THAN_size_t(AGENT_JSON_INFO_MAX, info_len);
    char report[128];
    snprintf(report, sizeof(report), "worst cases: status %zu, event %zu, info %zu bytes",
             status_len, event_len, info_len);
    TEST_MESSAGE(report);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_status_document);
    RUN_TEST(test_status_every_capacity);
    RUN_TEST(test_info_document);
    RUN_TEST(test_info_strings_fill_their_arrays);
    RUN_TEST(test_uptime_three_decimals);
    RUN_TEST(test_error_document);
    RUN_TEST(test_event_document);
    RUN_TEST(test_small_documents);
    RUN_TEST(test_escaping);
    RUN_TEST(test_all_control_characters);
    RUN_TEST(test_fixed_array_cut_mid_character);
    RUN_TEST(test_numbers);
    RUN_TEST(test_nested_objects_and_keys_escaped);
    RUN_TEST(test_misuse_is_reported);
    RUN_TEST(test_worst_case_sizes_fit);
    return UNITY_END();
}
