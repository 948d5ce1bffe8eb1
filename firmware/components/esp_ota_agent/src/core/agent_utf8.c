/*
 * UTF-8 decoding (Unicode 15, table 3-7) and character-preserving truncation.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_utf8.h"

#include <string.h>

int agent_utf8_decode(const unsigned char *s, size_t n, uint32_t *code_point)
{
    const unsigned char lead = s[0];
    if (lead < 0x80) {
        *code_point = lead;
        return 1;
    }
    int need;           /* continuation bytes after the lead */
    unsigned char low = 0x80, high = 0xBF;  /* range of the first continuation byte */
    uint32_t cp;
    if (lead >= 0xC2 && lead <= 0xDF) {
        need = 1;
        cp = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        need = 2;
        cp = lead & 0x0F;
        if (lead == 0xE0) {
            low = 0xA0;  /* no overlong forms */
        } else if (lead == 0xED) {
            high = 0x9F;  /* no UTF-16 surrogates */
        }
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        need = 3;
        cp = lead & 0x07;
        if (lead == 0xF0) {
            low = 0x90;  /* no overlong forms */
        } else if (lead == 0xF4) {
            high = 0x8F;  /* nothing above U+10FFFF */
        }
    } else {
        return -1;  /* a continuation byte, C0, C1 or F5..FF: never part of UTF-8 */
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n || s[i] < low || s[i] > high) {
            return -i;  /* the lead and the continuations that fitted: one bad part */
        }
        cp = (cp << 6) | (s[i] & 0x3F);
        low = 0x80;
        high = 0xBF;
    }
    *code_point = cp;
    return need + 1;
}

bool agent_utf8_valid(const char *s, size_t n, size_t *bad_offset)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        const int len = agent_utf8_decode(p + i, n - i, &cp);
        if (len < 0) {
            if (bad_offset != NULL) {
                *bad_offset = i;
            }
            return false;
        }
        i += (size_t)len;
    }
    return true;
}

bool agent_utf8_copy(char *dst, size_t cap, const char *src)
{
    if (cap == 0) {
        return false;
    }
    const size_t src_len = strlen(src);
    if (src_len < cap) {
        memcpy(dst, src, src_len + 1);
        return true;
    }
    /* Keep whole characters (or whole ill-formed parts) that fit in cap - 1 bytes. */
    const unsigned char *p = (const unsigned char *)src;
    size_t kept = 0;
    while (kept < src_len) {
        uint32_t cp;
        int len = agent_utf8_decode(p + kept, src_len - kept, &cp);
        const size_t step = (size_t)(len < 0 ? -len : len);
        if (kept + step > cap - 1) {
            break;
        }
        kept += step;
    }
    memcpy(dst, src, kept);
    dst[kept] = '\0';
    return false;
}
