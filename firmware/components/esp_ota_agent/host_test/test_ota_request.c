/*
 * Unit tests of agent_ota_request: every refusal of the reference device, in its order,
 * with its code and words (test_ota_request_cases.h, generated from the simulator), the
 * accepted requests' contents, the certificate hook, memory failures, and bodies cut or
 * mutated at random, each in a buffer of its exact size without a NUL.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cJSON.h>
#include "unity.h"
#include "agent_ota_request.h"

void setUp(void) {}
void tearDown(void) {}

/* A field's JSON text: NULL for the default value, OMIT to leave the field out. */
static const char OMIT[] = "(omitted)";

typedef struct {
    const char *name;
    const char *raw;      /* the whole body; NULL: built from the fields below */
    size_t raw_len;       /* 0: strlen(raw) */
    const char *url;
    const char *sha256;
    const char *size;
    const char *version;
    const char *cert_pem;
    const char *extra;    /* members appended after the fields */
    esp_err_t err;
    const char *message;
} request_case_t;

#include "test_ota_request_cases.h"

/* The body in a heap buffer of exactly its length, no NUL after it (AddressSanitizer
 * catches a parser that reads one byte too far). */
static char *build_body(const request_case_t *c, size_t *len)
{
    char text[8192];
    if (c->raw != NULL) {
        *len = c->raw_len != 0 ? c->raw_len : strlen(c->raw);
        TEST_ASSERT_LESS_THAN_size_t(sizeof(text), *len);
        memcpy(text, c->raw, *len);
    } else {
        const char *names[] = {"url", "sha256", "size", "version", "cert_pem"};
        const char *values[] = {c->url, c->sha256, c->size, c->version, c->cert_pem};
        const char *defaults[] = {DEFAULT_URL, DEFAULT_SHA256, DEFAULT_SIZE, DEFAULT_VERSION,
                                  DEFAULT_CERT_PEM};
        size_t n = 0;
        text[n++] = '{';
        bool first = true;
        for (size_t f = 0; f < 5; f++) {
            const char *value = values[f] != NULL ? values[f] : defaults[f];
            if (value == OMIT) {
                continue;
            }
            n += (size_t)snprintf(text + n, sizeof(text) - n, "%s\"%s\":%s", first ? "" : ",",
                                  names[f], value);
            first = false;
        }
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s}", c->extra != NULL ? c->extra : "");
        TEST_ASSERT_LESS_THAN_size_t(sizeof(text), n);
        *len = n;
    }
    char *body = malloc(*len > 0 ? *len : 1);
    TEST_ASSERT_NOT_NULL(body);
    memcpy(body, text, *len);
    return body;
}

static void test_reference_answers(void)
{
    size_t accepted = 0;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        const request_case_t *c = &CASES[i];
        size_t len;
        char *body = build_body(c, &len);
        agent_ota_request_t req;
        memset(&req, 0x5a, sizeof(req));
        char message[512];
        const esp_err_t err = agent_ota_request_parse(body, len, SLOT_SIZE, &req, message,
                                                      sizeof(message));
        TEST_ASSERT_EQUAL_HEX32_MESSAGE(c->err, err, c->name);
        TEST_ASSERT_EQUAL_STRING_MESSAGE(c->message, message, c->name);
        if (err == ESP_OK) {
            accepted++;
            TEST_ASSERT_NOT_NULL_MESSAGE(req.storage, c->name);
        } else {
            TEST_ASSERT_NULL_MESSAGE(req.storage, c->name);  /* nothing to free */
            TEST_ASSERT_NULL_MESSAGE(req.url, c->name);
        }
        agent_ota_request_free(&req);
        agent_ota_request_free(&req);  /* harmless twice */
        free(body);
    }
    TEST_ASSERT_GREATER_THAN_size_t(100, sizeof(CASES) / sizeof(CASES[0]) - accepted);
}

static void test_messages_cut_to_any_buffer(void)
{
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        const request_case_t *c = &CASES[i];
        if (c->err == ESP_OK) {
            continue;
        }
        size_t len;
        char *body = build_body(c, &len);
        const size_t full = strlen(c->message);
        for (size_t cap = 0; cap <= full + 1; cap++) {
            char *message = malloc(cap > 0 ? cap : 1);
            TEST_ASSERT_NOT_NULL(message);
            agent_ota_request_t req;
            TEST_ASSERT_EQUAL_HEX32_MESSAGE(c->err, agent_ota_request_parse(body, len, SLOT_SIZE,
                                                                            &req, message, cap),
                                            c->name);
            if (cap > 0) {
                const size_t kept = cap - 1 < full ? cap - 1 : full;
                TEST_ASSERT_EQUAL_size_t_MESSAGE(kept, strnlen(message, cap), c->name);
                TEST_ASSERT_EQUAL_INT_MESSAGE(0, memcmp(c->message, message, kept), c->name);
            }
            free(message);
        }
        agent_ota_request_t req;
        TEST_ASSERT_EQUAL_HEX32(c->err, agent_ota_request_parse(body, len, SLOT_SIZE, &req, NULL,
                                                                100));
        free(body);
    }
}

static esp_err_t parse_text(const char *text, agent_ota_request_t *req, char *message,
                            size_t cap)
{
    const size_t len = strlen(text);
    char *body = malloc(len > 0 ? len : 1);
    TEST_ASSERT_NOT_NULL(body);
    memcpy(body, text, len);
    const esp_err_t err = agent_ota_request_parse(body, len, SLOT_SIZE, req, message, cap);
    free(body);  /* the request keeps nothing of the body */
    return err;
}

#define BODY_WITH(extra)                                                                   \
    "{\"url\":" DEFAULT_URL ",\"sha256\":" DEFAULT_SHA256 ",\"size\":" DEFAULT_SIZE        \
    ",\"version\":" DEFAULT_VERSION ",\"cert_pem\":" DEFAULT_CERT_PEM extra "}"

static void test_accepted_request_contents(void)
{
    agent_ota_request_t req;
    char message[256] = "untouched";
    TEST_ASSERT_EQUAL_HEX32(ESP_OK, parse_text(BODY_WITH(
        ",\"headers\":{\"Authorization\":\"Bearer t0k\",\"X-A\":\"1\",\"Authorization\":"
        "\"Bearer new\",\"X-\\u00e9\":\"caf\\u00e9 \\ud83d\\ude00\"},\"unknown\":{\"x\":[1,2]}"),
        &req, message, sizeof(message)));
    TEST_ASSERT_EQUAL_STRING("", message);
    TEST_ASSERT_EQUAL_STRING("https://192.168.1.10:8443/firmware/garden.bin", req.url);
    TEST_ASSERT_EQUAL_STRING("9c25615a9c25615a9c25615a9c25615a9c25615a9c25615a9c25615a9c25615a",
                             req.sha256);
    TEST_ASSERT_EQUAL_UINT32(912384, req.size);
    TEST_ASSERT_EQUAL_STRING("1.2.0", req.version);
    TEST_ASSERT_EQUAL_STRING_LEN("-----BEGIN CERTIFICATE-----\nMIIB", req.cert_pem, 32);
    TEST_ASSERT_EQUAL_STRING("-----END CERTIFICATE-----\n",
                             req.cert_pem + strlen(req.cert_pem) - 26);
    /* A Python dict: first position, last value. */
    TEST_ASSERT_EQUAL_size_t(3, req.header_count);
    TEST_ASSERT_EQUAL_STRING("Authorization", req.headers[0].name);
    TEST_ASSERT_EQUAL_STRING("Bearer new", req.headers[0].value);
    TEST_ASSERT_EQUAL_STRING("X-A", req.headers[1].name);
    TEST_ASSERT_EQUAL_STRING("1", req.headers[1].value);
    TEST_ASSERT_EQUAL_STRING("X-\xc3\xa9", req.headers[2].name);
    TEST_ASSERT_EQUAL_STRING("caf\xc3\xa9 \xf0\x9f\x98\x80", req.headers[2].value);
    agent_ota_request_free(&req);
    TEST_ASSERT_NULL(req.storage);
    TEST_ASSERT_NULL(req.url);

    TEST_ASSERT_EQUAL_HEX32(ESP_OK, parse_text(BODY_WITH(""), &req, message, sizeof(message)));
    TEST_ASSERT_EQUAL_size_t(0, req.header_count);
    TEST_ASSERT_NULL(req.headers);
    agent_ota_request_free(&req);
}

static void test_size_bounds(void)
{
    static const struct {
        const char *size;
        uint32_t slot;
        esp_err_t err;
    } cases[] = {
        {"1024", 1024, ESP_OK},
        {"1024", 1023, ESP_ERR_INVALID_SIZE},  /* a slot below 1024: the size check first */
        {"1023", 1000, ESP_ERR_INVALID_ARG},
        {"4294967295", UINT32_MAX, ESP_OK},
        {"4294967296", UINT32_MAX, ESP_ERR_INVALID_SIZE},
        {"9999999999", UINT32_MAX, ESP_ERR_INVALID_SIZE},
        {"10000000000", UINT32_MAX, ESP_ERR_INVALID_SIZE},
        {"18446744073709551616", UINT32_MAX, ESP_ERR_INVALID_SIZE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[2048];
        snprintf(text, sizeof(text),
                 "{\"url\":\"https://h/\",\"sha256\":" DEFAULT_SHA256 ",\"size\":%s,\"version\":"
                 "\"1\",\"cert_pem\":" DEFAULT_CERT_PEM "}",
                 cases[i].size);
        agent_ota_request_t req;
        char message[256];
        TEST_ASSERT_EQUAL_HEX32_MESSAGE(cases[i].err,
                                        agent_ota_request_parse(text, strlen(text), cases[i].slot,
                                                                &req, message, sizeof(message)),
                                        cases[i].size);
        if (cases[i].err == ESP_OK) {
            TEST_ASSERT_EQUAL_UINT32(strtoul(cases[i].size, NULL, 10), req.size);
        }
        agent_ota_request_free(&req);
    }
}

static void test_body_limits(void)
{
    /* 16 KiB exactly: read; one byte more: refused before anything else. */
    const size_t max = AGENT_OTA_REQUEST_MAX_BODY;
    char *body = malloc(max + 1);
    TEST_ASSERT_NOT_NULL(body);
    const char *request = BODY_WITH("");
    const size_t len = strlen(request);
    memset(body, ' ', max + 1);
    memcpy(body, request, len);
    agent_ota_request_t req;
    char message[128];
    TEST_ASSERT_EQUAL_HEX32(ESP_OK, agent_ota_request_parse(body, max, SLOT_SIZE, &req, message,
                                                            sizeof(message)));
    agent_ota_request_free(&req);
    TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_SIZE,
                            agent_ota_request_parse(body, max + 1, SLOT_SIZE, &req, message,
                                                    sizeof(message)));
    TEST_ASSERT_EQUAL_STRING("Request Entity Too Large", message);
    free(body);

    TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_ARG,
                            agent_ota_request_parse(NULL, 0, SLOT_SIZE, &req, message,
                                                    sizeof(message)));
    TEST_ASSERT_EQUAL_STRING("bad OTA request: Expecting value: line 1 column 1 (char 0)",
                             message);
}

typedef struct {
    int calls;
    esp_err_t answer;
    char seen[64];
} cert_check_t;

static esp_err_t fake_cert_check(void *ctx, const char *cert_pem, char *message,
                                 size_t message_cap)
{
    cert_check_t *check = ctx;
    check->calls++;
    snprintf(check->seen, sizeof(check->seen), "%.27s", cert_pem);
    if (check->answer != ESP_OK) {
        snprintf(message, message_cap, "cert_pem is not a usable certificate: -0x%04X", 0x2180);
    }
    return check->answer;
}

static void test_decode_then_validate_with_certificate_check(void)
{
    agent_ota_request_t req;
    char message[256];
    cert_check_t check = {0};

    /* Decoded; the runtime checks busy here; then validate with mbedtls. */
    const char *text = BODY_WITH(",\"headers\":{\"A\\n\":\"x\"}");
    TEST_ASSERT_EQUAL_HEX32(ESP_OK, agent_ota_request_decode(text, strlen(text), &req, message,
                                                             sizeof(message)));
    TEST_ASSERT_EQUAL_STRING("912384", req.size_text);
    check.answer = ESP_ERR_INVALID_ARG;
    TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_ARG,
                            agent_ota_request_validate(&req, SLOT_SIZE, fake_cert_check, &check,
                                                       message, sizeof(message)));
    TEST_ASSERT_EQUAL_INT(1, check.calls);
    TEST_ASSERT_EQUAL_STRING("-----BEGIN CERTIFICATE-----", check.seen);
    /* The certificate is checked before the headers, as validate_request does. */
    TEST_ASSERT_EQUAL_STRING("cert_pem is not a usable certificate: -0x2180", message);
    check.answer = ESP_OK;
    TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_ARG,
                            agent_ota_request_validate(&req, SLOT_SIZE, fake_cert_check, &check,
                                                       message, sizeof(message)));
    TEST_ASSERT_EQUAL_STRING("bad header 'A\\n'", message);
    TEST_ASSERT_EQUAL_INT(2, check.calls);
    agent_ota_request_free(&req);

    /* Not called when an earlier check refuses. */
    text = "{\"url\":\"http://h/\",\"sha256\":\"x\",\"size\":1,\"version\":\"\",\"cert_pem\":\"x\"}";
    TEST_ASSERT_EQUAL_HEX32(ESP_OK, agent_ota_request_decode(text, strlen(text), &req, message,
                                                             sizeof(message)));
    TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_ARG,
                            agent_ota_request_validate(&req, SLOT_SIZE, fake_cert_check, &check,
                                                       message, sizeof(message)));
    TEST_ASSERT_EQUAL_INT(2, check.calls);
    agent_ota_request_free(&req);

    /* A request that was never decoded. */
    agent_ota_request_t empty = {0};
    TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_ARG,
                            agent_ota_request_validate(&empty, SLOT_SIZE, NULL, NULL, message,
                                                       sizeof(message)));
}

static int s_allocations_left;

static void *failing_malloc(size_t size)
{
    if (s_allocations_left-- <= 0) {
        return NULL;
    }
    return malloc(size);
}

static void test_out_of_memory(void)
{
    const char *text = BODY_WITH(",\"headers\":{\"A\":\"1\"}");
    agent_ota_request_t req;
    char message[128];
    /* cJSON runs out at each of its allocations in turn. */
    bool failed_once = false;
    for (int budget = 0; budget < 64; budget++) {
        s_allocations_left = budget;
        cJSON_Hooks hooks = {.malloc_fn = failing_malloc, .free_fn = free};
        cJSON_InitHooks(&hooks);
        const esp_err_t err = agent_ota_request_parse(text, strlen(text), SLOT_SIZE, &req,
                                                      message, sizeof(message));
        cJSON_InitHooks(NULL);
        if (err == ESP_OK) {
            agent_ota_request_free(&req);
            break;
        }
        failed_once = true;
        TEST_ASSERT_EQUAL_HEX32(ESP_ERR_NO_MEM, err);
        TEST_ASSERT_EQUAL_STRING("out of memory", message);
        TEST_ASSERT_NULL(req.storage);
    }
    TEST_ASSERT_TRUE(failed_once);
}

static void test_every_prefix_is_refused(void)
{
    const char *text = BODY_WITH(",\"headers\":{\"Authorization\":\"Bearer x\"}");
    const size_t full = strlen(text);
    for (size_t len = 0; len < full; len++) {
        char *body = malloc(len > 0 ? len : 1);
        TEST_ASSERT_NOT_NULL(body);
        memcpy(body, text, len);
        agent_ota_request_t req;
        char message[256];
        TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_ARG,
                                agent_ota_request_parse(body, len, SLOT_SIZE, &req, message,
                                                        sizeof(message)));
        TEST_ASSERT_EQUAL_INT(0, strncmp(message, "bad OTA request: ", 17));
        free(body);
    }
}

static uint32_t s_random = 0x12345678u;

static uint32_t next_random(void)
{
    /* xorshift32: the same sequence on every run */
    s_random ^= s_random << 13;
    s_random ^= s_random >> 17;
    s_random ^= s_random << 5;
    return s_random;
}

static void test_mutated_bodies(void)
{
    static const char alphabet[] = "{}[]\",:\\u0123456789abcdefE.-+ \n\t\x01\x7f\x80\xc3\xa9\xff"
                                   "tnr";
    const char *text = BODY_WITH(",\"headers\":{\"A\":\"1\",\"B\":\"2\"},\"x\":[1,{\"y\":-2.5e3}]");
    const size_t full = strlen(text);
    int outcomes[3] = {0};
    for (int round = 0; round < 20000; round++) {
        char work[4096];
        memcpy(work, text, full);
        size_t len = full;
        const int edits = 1 + (int)(next_random() % 4);
        for (int e = 0; e < edits; e++) {
            const size_t at = next_random() % len;
            const char c = alphabet[next_random() % (sizeof(alphabet) - 1)];
            switch (next_random() % 3) {
            case 0:
                work[at] = c;  /* replace */
                break;
            case 1:
                memmove(work + at, work + at + 1, len - at - 1);  /* delete */
                len--;
                break;
            default:
                if (len < sizeof(work)) {
                    memmove(work + at + 1, work + at, len - at);  /* insert */
                    work[at] = c;
                    len++;
                }
                break;
            }
        }
        char *body = malloc(len > 0 ? len : 1);
        TEST_ASSERT_NOT_NULL(body);
        memcpy(body, work, len);
        agent_ota_request_t req;
        char message[AGENT_OTA_MESSAGE_MAX];
        const esp_err_t err = agent_ota_request_parse(body, len, SLOT_SIZE, &req, message,
                                                      sizeof(message));
        TEST_ASSERT_LESS_THAN_size_t(sizeof(message), strnlen(message, sizeof(message)));
        if (err == ESP_OK) {
            outcomes[0]++;
            TEST_ASSERT_EQUAL_size_t(64, strlen(req.sha256));
            TEST_ASSERT_GREATER_OR_EQUAL_UINT32(1024, req.size);
            TEST_ASSERT_LESS_OR_EQUAL_size_t(AGENT_OTA_MAX_HEADERS, req.header_count);
        } else if (err == ESP_ERR_INVALID_ARG) {
            outcomes[1]++;
        } else {
            TEST_ASSERT_EQUAL_HEX32(ESP_ERR_INVALID_SIZE, err);
            outcomes[2]++;
        }
        agent_ota_request_free(&req);
        free(body);
    }
    TEST_ASSERT_GREATER_THAN_INT(100, outcomes[0]);
    TEST_ASSERT_GREATER_THAN_INT(100, outcomes[1]);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_reference_answers);
    RUN_TEST(test_messages_cut_to_any_buffer);
    RUN_TEST(test_accepted_request_contents);
    RUN_TEST(test_size_bounds);
    RUN_TEST(test_body_limits);
    RUN_TEST(test_decode_then_validate_with_certificate_check);
    RUN_TEST(test_out_of_memory);
    RUN_TEST(test_every_prefix_is_refused);
    RUN_TEST(test_mutated_bodies);
    return UNITY_END();
}
