/*
 * POST /api/v1/ota request: decoding and validation as the reference device does it.
 *
 * The body must be UTF-8 (aiohttp decodes it first), then JSON as Python's json reads it:
 * agent_json_scan checks both the way Python does and words refusals the same way. cJSON
 * then builds the tree (what the scanner passed, cJSON reads, so a cJSON failure is
 * memory). A second scan pairs each top-level member with its raw text, which cJSON does
 * not keep: 1024 and 1024.0 are the same double, but only the first is an int to Python;
 * a key or string holding \u0000 is cut short in C.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_ota_request.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <cJSON.h>
#include "agent_json_scan.h"
#include "agent_utf8.h"

/* --- messages ----------------------------------------------------------------------- */

/* A message cut to its buffer: the refusal matters, not every byte of its text. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
} message_t;

static void msg_init(message_t *m, char *buf, size_t cap)
{
    m->buf = buf;
    m->cap = buf != NULL ? cap : 0;
    m->len = 0;
    if (m->cap > 0) {
        m->buf[0] = '\0';
    }
}

static void msg_append(message_t *m, const char *s, size_t n)
{
    if (m->cap == 0) {
        return;
    }
    const size_t room = m->cap - 1 - m->len;
    if (n > room) {
        n = room;
    }
    memcpy(m->buf + m->len, s, n);
    m->len += n;
    m->buf[m->len] = '\0';
}

static void msg_str(message_t *m, const char *s)
{
    msg_append(m, s, strlen(s));
}

static void msg_u64(message_t *m, uint64_t value)
{
    char digits[20];
    size_t start = sizeof(digits);
    do {
        digits[--start] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    msg_append(m, digits + start, sizeof(digits) - start);
}

/* Python's repr() of a str, as the simulator's messages quote URLs and header names:
 * single quotes unless only they appear, backslash escapes for what is not printable. */
static void msg_repr(message_t *m, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const char quote = (strchr(s, '\'') != NULL && strchr(s, '"') == NULL) ? '"' : '\'';
    msg_append(m, &quote, 1);
    const unsigned char *p = (const unsigned char *)s;
    const size_t n = strlen(s);
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int len = agent_utf8_decode(p + i, n - i, &cp);
        if (len < 0) {
            /* Not reachable for decoded JSON (validated UTF-8); keep the byte visible. */
            cp = p[i];
            len = 1;
        }
        char esc[5] = {'\\', 0, 0, 0, 0};
        if (cp == '\\' || cp == (uint32_t)quote) {
            esc[1] = (char)cp;
            msg_append(m, esc, 2);
        } else if (cp == '\t' || cp == '\n' || cp == '\r') {
            esc[1] = cp == '\t' ? 't' : cp == '\n' ? 'n' : 'r';
            msg_append(m, esc, 2);
        } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) {
            /* C0, DEL, C1, no-break space, soft hyphen: Python prints them as \xNN */
            esc[1] = 'x';
            esc[2] = hex[cp >> 4];
            esc[3] = hex[cp & 0x0f];
            msg_append(m, esc, 4);
        } else {
            msg_append(m, s + i, (size_t)len);
        }
        i += (size_t)len;
    }
    msg_append(m, &quote, 1);
}

/* ": line L column C (char N)" as json.JSONDecodeError ends. */
static void msg_json_position(message_t *m, const char *body, size_t at)
{
    size_t line, column, chars;
    agent_json_scan_position(body, at, &line, &column, &chars);
    msg_str(m, ": line ");
    msg_u64(m, line);
    msg_str(m, " column ");
    msg_u64(m, column);
    msg_str(m, " (char ");
    msg_u64(m, chars);
    msg_str(m, ")");
}

/* Python's UnicodeDecodeError text for the ill-formed sequence at `at`. */
static void msg_utf8_error(message_t *m, const char *body, size_t len, size_t at)
{
    static const char hex[] = "0123456789abcdef";
    uint32_t cp;
    const unsigned char *p = (const unsigned char *)body + at;
    const size_t part = (size_t)-agent_utf8_decode(p, len - at, &cp);
    const bool bad_start = p[0] < 0xC2 || p[0] > 0xF4;
    msg_str(m, "bad OTA request: 'utf-8' codec can't decode ");
    if (part == 1) {
        const char byte[4] = {'0', 'x', hex[p[0] >> 4], hex[p[0] & 0x0f]};
        msg_str(m, "byte ");
        msg_append(m, byte, 4);
        msg_str(m, " in position ");
        msg_u64(m, at);
    } else {
        msg_str(m, "bytes in position ");
        msg_u64(m, at);
        msg_str(m, "-");
        msg_u64(m, at + part - 1);
    }
    msg_str(m, bad_start ? ": invalid start byte"
                         : at + part == len ? ": unexpected end of data"
                                            : ": invalid continuation byte");
}

/* --- decoding ------------------------------------------------------------------------ */

enum { F_URL, F_SHA256, F_SIZE, F_VERSION, F_CERT_PEM, F_HEADERS, F_COUNT };
static const char *const s_field_names[F_COUNT] = {
    "url", "sha256", "size", "version", "cert_pem", "headers",
};

typedef struct {
    const cJSON *item;  /* the last member with this key */
    size_t start, end;  /* its value's bytes */
    bool has_nul;       /* its value holds a \u0000 */
} field_t;

typedef struct {
    const cJSON *next_child;  /* cJSON's members, walked with the scanner's */
    field_t fields[F_COUNT];
} members_t;

static void on_member(void *ctx, bool key_has_nul, size_t value_start, size_t value_end,
                      bool value_has_nul)
{
    members_t *members = ctx;
    const cJSON *child = members->next_child;
    if (child == NULL) {
        return;  /* not reachable: cJSON keeps every member, duplicates included */
    }
    members->next_child = child->next;
    if (key_has_nul || child->string == NULL) {
        return;  /* "url\u0000x" is not "url" */
    }
    for (size_t f = 0; f < F_COUNT; f++) {
        if (strcmp(child->string, s_field_names[f]) == 0) {
            members->fields[f] = (field_t){child, value_start, value_end, value_has_nul};
        }
    }
}

static esp_err_t refuse(message_t *m, const char *text)
{
    msg_str(m, text);
    return ESP_ERR_INVALID_ARG;
}

/* A string field as _field(body, name, str): present, a string, and (for C) no NUL. */
static esp_err_t string_field(const field_t *field, const char *name, message_t *m)
{
    if (field->item == NULL || !cJSON_IsString(field->item) || field->item->valuestring == NULL) {
        msg_str(m, "bad OTA request: ");
        msg_str(m, name);
        return refuse(m, " must be a str");
    }
    if (field->has_nul) {
        msg_str(m, "bad OTA request: ");
        msg_str(m, name);
        return refuse(m, " must not contain U+0000");
    }
    return ESP_OK;
}

/* Header members in the order of their first appearance, each with its last value
 * (a Python dict built from the JSON object). */
static const cJSON *first_of_name(const cJSON *headers, const cJSON *member)
{
    for (const cJSON *h = headers->child; h != member; h = h->next) {
        if (strcmp(h->string, member->string) == 0) {
            return h;
        }
    }
    return member;
}

static const cJSON *last_of_name(const cJSON *member)
{
    const cJSON *last = member;
    for (const cJSON *h = member->next; h != NULL; h = h->next) {
        if (strcmp(h->string, member->string) == 0) {
            last = h;
        }
    }
    return last;
}

static char *copy_string(char **cursor, const char *s, size_t len)
{
    char *dst = *cursor;
    memcpy(dst, s, len);
    dst[len] = '\0';
    *cursor += len + 1;
    return dst;
}

void agent_ota_request_free(agent_ota_request_t *req)
{
    if (req == NULL) {
        return;
    }
    free(req->storage);
    memset(req, 0, sizeof(*req));
}

static esp_err_t decode_tree(const char *body, const cJSON *root, const members_t *members,
                             agent_ota_request_t *out, message_t *m)
{
    const field_t *fields = members->fields;
    if (!cJSON_IsObject(root)) {
        return refuse(m, "bad OTA request: url must be a str");  /* _field on a non-dict */
    }
    esp_err_t err;
    if ((err = string_field(&fields[F_URL], "url", m)) != ESP_OK ||
        (err = string_field(&fields[F_SHA256], "sha256", m)) != ESP_OK) {
        return err;
    }
    const field_t *size = &fields[F_SIZE];
    bool integral = size->item != NULL && cJSON_IsNumber(size->item);
    for (size_t k = size->start; integral && k < size->end; k++) {
        integral = strchr(".eE", body[k]) == NULL;  /* Python reads those as a float */
    }
    if (!integral) {
        return refuse(m, "bad OTA request: size must be a int");
    }
    if ((err = string_field(&fields[F_VERSION], "version", m)) != ESP_OK ||
        (err = string_field(&fields[F_CERT_PEM], "cert_pem", m)) != ESP_OK) {
        return err;
    }
    const cJSON *headers = fields[F_HEADERS].item;  /* optional: absent is {} */
    if (headers != NULL) {
        bool strings = cJSON_IsObject(headers);
        for (const cJSON *h = strings ? headers->child : NULL; h != NULL && strings; h = h->next) {
            strings = cJSON_IsString(h) && h->valuestring != NULL && h->string != NULL;
        }
        if (!strings) {
            return refuse(m, "bad OTA request: headers must be an object of strings");
        }
        if (fields[F_HEADERS].has_nul) {
            return refuse(m, "bad OTA request: headers must not contain U+0000");
        }
    }

    /* Sizes, then one allocation: the header array first (malloc's alignment), strings
     * after it. */
    const char *size_text = body + size->start;
    size_t size_len = size->end - size->start;
    if (size_len == 2 && memcmp(size_text, "-0", 2) == 0) {
        size_text = "0";  /* Python's int("-0") prints as 0 */
        size_len = 1;
    }
    size_t header_count = 0;
    size_t total = size_len + 1;
    for (size_t f = 0; f < F_HEADERS; f++) {
        if (f != F_SIZE) {
            total += strlen(fields[f].item->valuestring) + 1;
        }
    }
    for (const cJSON *h = headers != NULL ? headers->child : NULL; h != NULL; h = h->next) {
        if (first_of_name(headers, h) == h) {
            header_count++;
            total += strlen(h->string) + 1 + strlen(last_of_name(h)->valuestring) + 1;
        }
    }
    total += header_count * sizeof(agent_http_header_t);
    char *storage = malloc(total);
    if (storage == NULL) {
        msg_str(m, "out of memory");
        return ESP_ERR_NO_MEM;
    }
    agent_http_header_t *header_array = (agent_http_header_t *)(void *)storage;
    char *cursor = storage + header_count * sizeof(agent_http_header_t);
    size_t written = 0;
    for (const cJSON *h = headers != NULL ? headers->child : NULL; h != NULL; h = h->next) {
        if (first_of_name(headers, h) == h) {
            const char *value = last_of_name(h)->valuestring;
            header_array[written].name = copy_string(&cursor, h->string, strlen(h->string));
            header_array[written].value = copy_string(&cursor, value, strlen(value));
            written++;
        }
    }
#define COPY_FIELD(f) copy_string(&cursor, fields[f].item->valuestring, \
                                  strlen(fields[f].item->valuestring))
    out->url = COPY_FIELD(F_URL);
    out->sha256_text = COPY_FIELD(F_SHA256);
    out->size_text = copy_string(&cursor, size_text, size_len);
    out->version_text = COPY_FIELD(F_VERSION);
    out->cert_pem = COPY_FIELD(F_CERT_PEM);
#undef COPY_FIELD
    out->headers = header_count > 0 ? header_array : NULL;
    out->header_count = header_count;
    out->storage = storage;
    return ESP_OK;
}

esp_err_t agent_ota_request_decode(const char *body, size_t body_len, agent_ota_request_t *out,
                                   char *message, size_t message_cap)
{
    message_t m;
    msg_init(&m, message, message_cap);
    memset(out, 0, sizeof(*out));
    if (body == NULL) {
        body = "";
        body_len = 0;
    }
    if (body_len > AGENT_OTA_REQUEST_MAX_BODY) {
        msg_str(&m, "Request Entity Too Large");  /* aiohttp's 413 reason */
        return ESP_ERR_INVALID_SIZE;
    }
    size_t bad;
    if (!agent_utf8_valid(body, body_len, &bad)) {
        msg_utf8_error(&m, body, body_len, bad);
        return ESP_ERR_INVALID_ARG;
    }
    agent_json_scan_result_t scan;
    if (!agent_json_scan(body, body_len, NULL, NULL, &scan)) {
        msg_str(&m, "bad OTA request: ");
        msg_str(&m, scan.error != NULL ? scan.error : scan.unsupported);
        if (scan.error == NULL) {
            msg_str(&m, " is not supported");
        }
        msg_json_position(&m, body, scan.error != NULL ? scan.error_at : scan.unsupported_at);
        return ESP_ERR_INVALID_ARG;
    }
    cJSON *root = cJSON_ParseWithLength(body, body_len);
    if (root == NULL) {
        msg_str(&m, "out of memory");  /* the scanner accepted it: cJSON reads it */
        return ESP_ERR_NO_MEM;
    }
    /* Second pass: pair cJSON's members with their raw text. */
    members_t members = {.next_child = cJSON_IsObject(root) ? root->child : NULL};
    if (cJSON_IsObject(root)) {
        agent_json_scan(body, body_len, on_member, &members, &scan);
    }
    const esp_err_t err = decode_tree(body, root, &members, out, &m);
    cJSON_Delete(root);
    if (err != ESP_OK) {
        agent_ota_request_free(out);
    }
    return err;
}

/* --- validation ---------------------------------------------------------------------- */

static bool ascii_case_prefix(const char *s, const char *prefix)
{
    for (; *prefix != '\0'; s++, prefix++) {
        char c = *s;
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (c != *prefix) {
            return false;
        }
    }
    return true;
}

/* https://[userinfo@]host[:port][/path][?query][#fragment], host not empty. Python's yarl
 * decides the same for usable URLs; what it would raise on (bad port, unclosed IPv6
 * bracket, backslash) is refused here too, and so is what esp_http_client cannot send
 * (spaces, control characters). */
static bool url_is_https_with_host(const char *url)
{
    if (!ascii_case_prefix(url, "https://")) {
        return false;
    }
    for (const char *p = url; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            return false;
        }
    }
    /* Offsets into the authority: [userinfo@]host[:port] */
    const char *authority = url + strlen("https://");
    const size_t authority_len = strcspn(authority, "/?#");
    size_t host = 0;
    for (size_t k = 0; k < authority_len; k++) {
        if (authority[k] == '\\') {
            return false;
        }
        if (authority[k] == '@') {
            host = k + 1;  /* the last '@' ends the userinfo */
        }
    }
    size_t port;  /* where ":port" starts, or authority_len */
    if (host < authority_len && authority[host] == '[') {
        size_t close = host + 1;
        while (close < authority_len && authority[close] != ']') {
            close++;
        }
        if (close >= authority_len || close == host + 1) {
            return false;  /* unclosed, or "[]" */
        }
        port = close + 1;
        if (port < authority_len && authority[port] != ':') {
            return false;
        }
    } else {
        port = host;
        while (port < authority_len && authority[port] != ':') {
            port++;
        }
        if (port == host) {
            return false;  /* no host */
        }
    }
    uint32_t port_number = 0;
    for (size_t k = port + 1; k < authority_len; k++) {
        if (authority[k] < '0' || authority[k] > '9') {
            return false;
        }
        port_number = port_number * 10 + (uint32_t)(authority[k] - '0');
        if (port_number > 65535) {
            return false;
        }
    }
    return true;
}

/* Python's str.strip() whitespace. */
static bool is_python_whitespace(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 ||
           cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

static bool is_blank(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    const size_t n = strlen(s);
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        const int len = agent_utf8_decode(p + i, n - i, &cp);
        if (len < 0 || !is_python_whitespace(cp)) {
            return false;
        }
        i += (size_t)len;
    }
    return true;
}

esp_err_t agent_ota_request_validate(agent_ota_request_t *req, uint32_t slot_size,
                                     agent_cert_check_fn check_cert, void *check_cert_ctx,
                                     char *message, size_t message_cap)
{
    message_t m;
    msg_init(&m, message, message_cap);
    if (req->url == NULL || req->sha256_text == NULL || req->size_text == NULL ||
        req->version_text == NULL || req->cert_pem == NULL) {
        return refuse(&m, "bad OTA request: not decoded");
    }
    if (!url_is_https_with_host(req->url)) {
        msg_str(&m, "url must be an https:// URL, got ");
        msg_repr(&m, req->url);
        return ESP_ERR_INVALID_ARG;
    }

    const char *digest = req->sha256_text;
    bool hex = strlen(digest) == 64;
    for (size_t k = 0; hex && k < 64; k++) {
        hex = (digest[k] >= '0' && digest[k] <= '9') || (digest[k] >= 'a' && digest[k] <= 'f') ||
              (digest[k] >= 'A' && digest[k] <= 'F');
    }
    if (!hex) {
        return refuse(&m, "sha256 must be 64 hex digits");
    }

    const bool negative = req->size_text[0] == '-';
    const char *digits = req->size_text + (negative ? 1 : 0);
    const size_t digit_count = strlen(digits);
    uint64_t size = 0;
    for (size_t k = 0; k < digit_count && k < 19; k++) {
        size = size * 10 + (uint64_t)(digits[k] - '0');
    }
    if (negative || (digit_count < 5 && size < AGENT_OTA_MIN_IMAGE_SIZE)) {
        msg_str(&m, "size ");
        msg_str(&m, req->size_text);
        return refuse(&m, " is below 1024 bytes, the least esp_https_ota reads before anything "
                          "else");
    }
    if (digit_count > 10 || size > slot_size) {
        msg_str(&m, "the image (");
        msg_str(&m, req->size_text);
        msg_str(&m, " bytes) does not fit the OTA slot (");
        msg_u64(&m, slot_size);
        msg_str(&m, " bytes)");
        return ESP_ERR_INVALID_SIZE;
    }

    const size_t version_len = strlen(req->version_text);
    if (version_len == 0 || version_len > 31) {
        return refuse(&m, "version must be 1..31 bytes (esp_app_desc_t)");
    }

    if (is_blank(req->cert_pem)) {
        return refuse(&m, "cert_pem is required (the device pins it)");
    }
    if (strstr(req->cert_pem, "-----BEGIN CERTIFICATE-----") == NULL) {
        /* what Python's ssl says for the same PEM */
        return refuse(&m, "cert_pem is not a usable certificate: no start line: cadata does "
                          "not contain a certificate");
    }
    if (check_cert != NULL) {
        const esp_err_t err = check_cert(check_cert_ctx, req->cert_pem, message, message_cap);
        if (err != ESP_OK) {
            return err;
        }
    }

    for (size_t k = 0; k < req->header_count; k++) {
        const agent_http_header_t *h = &req->headers[k];
        if (h->name[0] == '\0' || strpbrk(h->name, "\r\n") != NULL ||
            strpbrk(h->value, "\r\n") != NULL) {
            msg_str(&m, "bad header ");
            msg_repr(&m, h->name);
            return ESP_ERR_INVALID_ARG;
        }
    }
    if (req->header_count > AGENT_OTA_MAX_HEADERS) {
        msg_str(&m, "too many headers: ");
        msg_u64(&m, req->header_count);
        msg_str(&m, " (at most ");
        msg_u64(&m, AGENT_OTA_MAX_HEADERS);
        msg_str(&m, ")");
        return ESP_ERR_INVALID_ARG;
    }

    for (size_t k = 0; k < 64; k++) {
        const char c = digest[k];
        req->sha256[k] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    req->sha256[64] = '\0';
    req->size = (uint32_t)size;
    memcpy(req->version, req->version_text, version_len + 1);
    if (message_cap > 0 && message != NULL) {
        message[0] = '\0';
    }
    return ESP_OK;
}

esp_err_t agent_ota_request_parse(const char *body, size_t body_len, uint32_t slot_size,
                                  agent_ota_request_t *out, char *message, size_t message_cap)
{
    esp_err_t err = agent_ota_request_decode(body, body_len, out, message, message_cap);
    if (err != ESP_OK) {
        return err;
    }
    err = agent_ota_request_validate(out, slot_size, NULL, NULL, message, message_cap);
    if (err != ESP_OK) {
        agent_ota_request_free(out);
    }
    return err;
}
