/*
 * UTF-8 decoding and bounded copying for strings that come from outside (request bodies,
 * image descriptors, HTTP error texts): the JSON writer and the request parser must know
 * where a character starts and ends, and what is not UTF-8 at all.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Decode the character at the start of `s` (`n` > 0 bytes available).
 *
 * @return its length in bytes (1..4) with `*code_point` set, for well-formed UTF-8 (no
 *         overlong forms, no surrogates, at most U+10FFFF); or minus the length of the
 *         ill-formed part to skip (the "maximal subpart" of Unicode 15 section 3.9, the
 *         rule Python's decode(errors="replace") follows: one U+FFFD per returned part).
 */
int agent_utf8_decode(const unsigned char *s, size_t n, uint32_t *code_point);

/** Whether `n` bytes at `s` are well-formed UTF-8; if not, `*bad_offset` (optional) is
 *  where the first ill-formed sequence starts. */
bool agent_utf8_valid(const char *s, size_t n, size_t *bad_offset);

/**
 * Copy the C string `src` into `dst` (capacity `cap`), cutting it, if it does not fit,
 * at a character boundary so that well-formed UTF-8 stays well-formed. `dst` is always
 * NUL-terminated when `cap` > 0.
 *
 * @return true if all of `src` was copied, false if it was cut (or `cap` is 0).
 */
bool agent_utf8_copy(char *dst, size_t cap, const char *src);

#ifdef __cplusplus
}
#endif
