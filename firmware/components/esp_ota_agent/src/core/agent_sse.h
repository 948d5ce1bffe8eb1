/*
 * Server-sent events framing of GET /api/v1/events and its Last-Event-ID header.
 *
 * A stream (docs/protocol.md): AGENT_SSE_CONNECTED first, always (the client has its
 * answer at once: an ESP-IDF server sends its headers with the first chunk); then the
 * events after agent_event_ring_replay_cursor(); then live ones; after
 * AGENT_SSE_KEEP_ALIVE_MS without an event, AGENT_SSE_KEEP_ALIVE.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "agent_event_ring.h"
#include "agent_json.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The comment every stream starts with. */
#define AGENT_SSE_CONNECTED ": connected\n\n"
/** The comment an idle stream gets every AGENT_SSE_KEEP_ALIVE_MS. */
#define AGENT_SSE_KEEP_ALIVE ": keep-alive\n\n"
#define AGENT_SSE_KEEP_ALIVE_MS 15000

/** A buffer that holds any event frame (AGENT_JSON_EVENT_MAX plus the id and event lines). */
#define AGENT_SSE_EVENT_MAX (AGENT_JSON_EVENT_MAX + 64)

/**
 * One event frame: "id: 42\nevent: write_flash\ndata: {...}\n\n".
 *
 * @return its length without the NUL; 0 if it does not fit (the buffer then holds a
 *         prefix; send nothing).
 */
size_t agent_sse_event(char *buf, size_t cap, const agent_event_t *event,
                       agent_err_name_fn err_name);

/**
 * Read a Last-Event-ID header value: ASCII digits, optionally surrounded by spaces or
 * tabs (HTTP's optional whitespace, which the simulator's server strips too). A value
 * above UINT32_MAX reads as UINT32_MAX: above any id issued, so the whole ring.
 *
 * @return true with `*out` set; false for NULL, "", a sign, anything else (the header is
 *         then treated as absent, as simulator/api.py does for `not last_id.isdigit()`).
 */
bool agent_sse_parse_last_event_id(const char *header_value, uint32_t *out);

#ifdef __cplusplus
}
#endif
