/*
 * Strict JSON scanner with Python's json error words and positions.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_json_scan.h"

#include <stdint.h>
#include <string.h>

typedef struct {
    const unsigned char *s;
    size_t n;
    size_t i;
    size_t nul_escapes;       /* \u0000 seen so far */
    const char *why;          /* the refusal, in Python's json words where it has them */
    size_t at;                /* byte offset it refers to */
    const char *unsupported;  /* valid for Python but not for cJSON (lone surrogate, NaN) */
    size_t unsupported_at;
} scanner_t;

static bool scan_fail(scanner_t *sc, const char *why, size_t at)
{
    sc->why = why;
    sc->at = at;
    return false;
}

/* Python accepts it; cJSON cannot: noted, refused once the whole body proves to be JSON
 * (a syntax error further on is what Python would report). */
static void scan_unsupported(scanner_t *sc, const char *what, size_t at)
{
    if (sc->unsupported == NULL) {
        sc->unsupported = what;
        sc->unsupported_at = at;
    }
}

static int peek(const scanner_t *sc)
{
    return sc->i < sc->n ? sc->s[sc->i] : -1;
}

static void skip_whitespace(scanner_t *sc)
{
    while (sc->i < sc->n) {
        const unsigned char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            break;
        }
        sc->i++;
    }
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The 4 hex digits after the 'u' at `u`. */
static bool scan_u_escape(scanner_t *sc, size_t u, uint32_t *code)
{
    if (sc->n - (u + 1) < 4) {
        return scan_fail(sc, "Invalid \\uXXXX escape", u);
    }
    uint32_t value = 0;
    for (size_t k = u + 1; k <= u + 4; k++) {
        const int digit = hex_value(sc->s[k]);
        if (digit < 0) {
            return scan_fail(sc, "Invalid \\uXXXX escape", u);
        }
        value = value << 4 | (uint32_t)digit;
    }
    *code = value;
    return true;
}

/* A string from its opening quote (at sc->i); the body is valid UTF-8 already. */
static bool scan_string(scanner_t *sc)
{
    const size_t begin = sc->i++;
    for (;;) {
        if (sc->i >= sc->n) {
            return scan_fail(sc, "Unterminated string starting at", begin);
        }
        const unsigned char c = sc->s[sc->i];
        if (c == '"') {
            sc->i++;
            return true;
        }
        if (c < 0x20) {
            return scan_fail(sc, "Invalid control character at", sc->i);
        }
        if (c != '\\') {
            sc->i++;
            continue;
        }
        const size_t backslash = sc->i;
        if (backslash + 1 >= sc->n) {
            return scan_fail(sc, "Unterminated string starting at", begin);
        }
        const unsigned char kind = sc->s[backslash + 1];
        if (kind != 'u') {
            if (strchr("\"\\/bfnrt", kind) == NULL || kind == '\0') {
                return scan_fail(sc, "Invalid \\escape", backslash);
            }
            sc->i = backslash + 2;
            continue;
        }
        uint32_t code;
        if (!scan_u_escape(sc, backslash + 1, &code)) {
            return false;
        }
        sc->i = backslash + 6;
        if (code >= 0xD800 && code <= 0xDBFF && sc->i + 1 < sc->n && sc->s[sc->i] == '\\' &&
            sc->s[sc->i + 1] == 'u') {
            uint32_t low;
            if (!scan_u_escape(sc, sc->i + 1, &low)) {
                return false;
            }
            if (low >= 0xDC00 && low <= 0xDFFF) {
                sc->i += 6;  /* a surrogate pair: one character */
                continue;
            }
        }
        if (code >= 0xD800 && code <= 0xDFFF) {
            scan_unsupported(sc, "a lone UTF-16 surrogate escape", backslash);
        } else if (code == 0) {
            sc->nul_escapes++;
        }
    }
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool starts_with(const scanner_t *sc, const char *word)
{
    const size_t len = strlen(word);
    return sc->n - sc->i >= len && memcmp(sc->s + sc->i, word, len) == 0;
}

/* A number as Python's NUMBER_RE matches it: the longest valid prefix. False if not even
 * an integer part matches (the caller then expects a value there). */
static bool scan_number(scanner_t *sc)
{
    size_t i = sc->i;
    const size_t n = sc->n;
    if (i < n && sc->s[i] == '-') {
        i++;
    }
    if (i < n && sc->s[i] == '0') {
        i++;
    } else if (i < n && sc->s[i] >= '1' && sc->s[i] <= '9') {
        while (i < n && is_digit(sc->s[i])) {
            i++;
        }
    } else {
        return false;
    }
    if (i + 1 < n && sc->s[i] == '.' && is_digit(sc->s[i + 1])) {
        i += 2;
        while (i < n && is_digit(sc->s[i])) {
            i++;
        }
    }
    if (i < n && (sc->s[i] == 'e' || sc->s[i] == 'E')) {
        size_t j = i + 1;
        if (j < n && (sc->s[j] == '+' || sc->s[j] == '-')) {
            j++;
        }
        if (j < n && is_digit(sc->s[j])) {
            while (j < n && is_digit(sc->s[j])) {
                j++;
            }
            i = j;
        }
    }
    sc->i = i;
    return true;
}

/* A scalar value at sc->i (not an object or array). */
static bool scan_scalar(scanner_t *sc)
{
    const size_t at = sc->i;
    const int c = peek(sc);
    if (c == '"') {
        return scan_string(sc);
    }
    static const char *const literals[] = {"null", "true", "false"};
    for (size_t k = 0; k < sizeof(literals) / sizeof(literals[0]); k++) {
        if (c == literals[k][0] && starts_with(sc, literals[k])) {
            sc->i += strlen(literals[k]);
            return true;
        }
    }
    if (scan_number(sc)) {
        return true;
    }
    static const char *const specials[] = {"NaN", "Infinity", "-Infinity"};
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
        if (starts_with(sc, specials[k])) {
            sc->i += strlen(specials[k]);
            scan_unsupported(sc, "NaN or Infinity", at);
            return true;
        }
    }
    return scan_fail(sc, "Expecting value", at);
}

/* A key from its quote, then the colon and the whitespace before the value. */
static bool scan_key(scanner_t *sc, bool *has_nul)
{
    const size_t nul_before = sc->nul_escapes;
    if (!scan_string(sc)) {
        return false;
    }
    *has_nul = sc->nul_escapes != nul_before;
    skip_whitespace(sc);
    if (peek(sc) != ':') {
        return scan_fail(sc, "Expecting ':' delimiter", sc->i);
    }
    sc->i++;
    skip_whitespace(sc);
    return true;
}

static bool scan_document(scanner_t *sc, agent_json_member_fn on_member, void *ctx)
{
    uint32_t object_bits = 0;  /* bit d: the container at depth d + 1 is an object */
    unsigned depth = 0;
    size_t value_start = 0;
    size_t value_nul_before = 0;
    bool key_has_nul = false;
    bool expect_value = true;  /* else: a value just ended */

    if (sc->n >= 3 && memcmp(sc->s, "\xEF\xBB\xBF", 3) == 0) {
        return scan_fail(sc, "Unexpected UTF-8 BOM (decode using utf-8-sig)", 0);
    }
    skip_whitespace(sc);
    for (;;) {
        const bool in_object = depth > 0 && (object_bits >> (depth - 1) & 1u);
        if (expect_value) {
            if (depth == 1 && in_object) {
                value_start = sc->i;
                value_nul_before = sc->nul_escapes;
            }
            const int c = peek(sc);
            if (c == '{' || c == '[') {
                if (depth == AGENT_JSON_SCAN_MAX_DEPTH) {
                    return scan_fail(sc, "JSON nested too deeply", sc->i);
                }
                if (c == '{') {
                    object_bits |= 1u << depth;
                } else {
                    object_bits &= ~(1u << depth);
                }
                depth++;
                sc->i++;
                skip_whitespace(sc);
                if (peek(sc) == (c == '{' ? '}' : ']')) {
                    sc->i++;
                    depth--;
                    expect_value = false;
                } else if (c == '{') {
                    if (peek(sc) != '"') {
                        return scan_fail(sc, "Expecting property name enclosed in double quotes",
                                         sc->i);
                    }
                    bool nul;
                    if (!scan_key(sc, &nul)) {
                        return false;
                    }
                    if (depth == 1) {
                        key_has_nul = nul;
                    }
                }
                continue;
            }
            if (!scan_scalar(sc)) {
                return false;
            }
            expect_value = false;
            continue;
        }
        /* A value ended at depth `depth`. */
        if (depth == 1 && in_object && on_member != NULL) {
            on_member(ctx, key_has_nul, value_start, sc->i, sc->nul_escapes != value_nul_before);
        }
        skip_whitespace(sc);
        if (depth == 0) {
            if (sc->i != sc->n) {
                return scan_fail(sc, "Extra data", sc->i);
            }
            return true;
        }
        const int c = peek(sc);
        if (c == (in_object ? '}' : ']')) {
            sc->i++;
            depth--;
            continue;
        }
        if (c != ',') {
            return scan_fail(sc, "Expecting ',' delimiter", sc->i);
        }
        const size_t comma = sc->i++;
        skip_whitespace(sc);
        if (in_object) {
            if (peek(sc) != '"') {
                if (peek(sc) == '}') {
                    return scan_fail(sc, "Illegal trailing comma before end of object", comma);
                }
                return scan_fail(sc, "Expecting property name enclosed in double quotes", sc->i);
            }
            bool nul;
            if (!scan_key(sc, &nul)) {
                return false;
            }
            if (depth == 1) {
                key_has_nul = nul;
            }
        } else if (peek(sc) == ']') {
            return scan_fail(sc, "Illegal trailing comma before end of array", comma);
        }
        expect_value = true;
    }
}

bool agent_json_scan(const char *text, size_t len, agent_json_member_fn on_member, void *ctx,
                     agent_json_scan_result_t *result)
{
    scanner_t sc = {.s = (const unsigned char *)text, .n = len};
    memset(result, 0, sizeof(*result));
    if (!scan_document(&sc, on_member, ctx)) {
        result->error = sc.why;
        result->error_at = sc.at;
        return false;
    }
    if (sc.unsupported != NULL) {
        result->unsupported = sc.unsupported;
        result->unsupported_at = sc.unsupported_at;
        return false;
    }
    return true;
}

void agent_json_scan_position(const char *text, size_t at, size_t *line, size_t *column,
                              size_t *chars)
{
    size_t count = 0;
    size_t lines = 1;
    size_t line_start = 0;  /* characters before the current line */
    for (size_t k = 0; k < at; k++) {
        const unsigned char c = (unsigned char)text[k];
        if ((c & 0xC0) == 0x80) {
            continue;  /* a continuation byte: same character */
        }
        count++;
        if (c == '\n') {
            lines++;
            line_start = count;
        }
    }
    *line = lines;
    *column = count - line_start + 1;
    *chars = count;
}
