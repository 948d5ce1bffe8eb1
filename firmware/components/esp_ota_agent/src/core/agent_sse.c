/*
 * Server-sent event frames and the Last-Event-ID header.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_sse.h"

#include "agent_names.h"

size_t agent_sse_event(char *buf, size_t cap, const agent_event_t *event,
                       agent_err_name_fn err_name)
{
    const char *type = agent_event_type_name(event->type);
    agent_json_writer_t w;
    agent_json_init(&w, buf, cap);
    if (type == NULL) {
        return 0;  /* no event line for a type the protocol does not have */
    }
    agent_json_raw(&w, "id: ");
    agent_json_u32(&w, event->id);
    agent_json_raw(&w, "\nevent: ");
    agent_json_raw(&w, type);
    agent_json_raw(&w, "\ndata: ");
    agent_json_write_event(&w, event, err_name);
    agent_json_raw(&w, "\n\n");
    return agent_json_finish(&w);
}

static bool is_optional_whitespace(char c)
{
    return c == ' ' || c == '\t';
}

bool agent_sse_parse_last_event_id(const char *header_value, uint32_t *out)
{
    if (header_value == NULL) {
        return false;
    }
    const char *p = header_value;
    while (is_optional_whitespace(*p)) {
        p++;
    }
    uint32_t value = 0;
    bool saturated = false;
    const char *digits = p;
    while (*p >= '0' && *p <= '9') {
        const uint32_t digit = (uint32_t)(*p - '0');
        if (value > (UINT32_MAX - digit) / 10) {
            saturated = true;
        } else {
            value = value * 10 + digit;
        }
        p++;
    }
    if (p == digits) {
        return false;
    }
    while (is_optional_whitespace(*p)) {
        p++;
    }
    if (*p != '\0') {
        return false;
    }
    *out = saturated ? UINT32_MAX : value;
    return true;
}
