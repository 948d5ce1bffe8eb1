/*
 * A strict JSON scanner that accepts exactly what Python's json.loads accepts (RFC 8259
 * plus NaN and Infinity) and refuses the rest with Python's words and position, so that a
 * device refuses a request body as the reference device does. It builds nothing: it
 * walks the text once, without recursion and without allocating, and reports the raw
 * span of each top-level member's value (which a tree such as cJSON's does not keep).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Containers nest at most this deep; deeper is refused ("JSON nested too deeply"). A
 *  request nests 2 deep; the bound keeps cJSON, which recurses, off the stack's end. */
#define AGENT_JSON_SCAN_MAX_DEPTH 16

/** Called for each member of a top-level object, in order (duplicates included), with
 *  the bytes [value_start, value_end) of its value and whether its key or its value
 *  holds a \u0000 escape (a C string would be cut there). */
typedef void (*agent_json_member_fn)(void *ctx, bool key_has_nul, size_t value_start,
                                     size_t value_end, bool value_has_nul);

typedef struct {
    /** NULL when the text is JSON; else why not, in Python's words ("Expecting value",
     *  "Extra data", ...) or "JSON nested too deeply". */
    const char *error;
    size_t error_at;           /**< the byte offset Python's message refers to */
    /** JSON to Python that cJSON cannot read: "NaN or Infinity", "a lone UTF-16
     *  surrogate escape"; NULL if none. Only set when `error` is NULL. */
    const char *unsupported;
    size_t unsupported_at;
} agent_json_scan_result_t;

/**
 * Scan `len` bytes of well-formed UTF-8 (check it first: agent_utf8_valid).
 *
 * @return true if they are one JSON value (whitespace around it allowed) that cJSON
 *         reads too; false with `result` saying why not.
 */
bool agent_json_scan(const char *text, size_t len, agent_json_member_fn on_member, void *ctx,
                     agent_json_scan_result_t *result);

/** Where byte `at` of `text` is, as json.JSONDecodeError says it: 1-based line and
 *  column, and the 0-based index in characters (not bytes). */
void agent_json_scan_position(const char *text, size_t at, size_t *line, size_t *column,
                              size_t *chars);

#ifdef __cplusplus
}
#endif
