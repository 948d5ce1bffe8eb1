/*
 * Event ring, stream cursors, id reservations and progress pacing. Ids in the ring are
 * consecutive, so a lookup by id is arithmetic, not a search.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "agent_event_ring.h"

#include <string.h>

void agent_event_init(agent_event_t *event, agent_event_type_t type)
{
    memset(event, 0, sizeof(*event));
    event->type = type;
    event->bytes_written = -1;
    event->image_size = -1;
    event->error = ESP_OK;
}

void agent_event_ring_init(agent_event_ring_t *ring, agent_event_t *storage, size_t capacity,
                           uint32_t first_id)
{
    ring->slots = storage;
    ring->capacity = capacity;
    ring->count = 0;
    ring->oldest = 0;
    ring->next_id = first_id == 0 ? 1 : first_id;
}

uint32_t agent_event_ring_push(agent_event_ring_t *ring, const agent_event_t *event)
{
    const uint32_t id = ring->next_id++;
    if (ring->capacity == 0) {
        return id;  /* nothing kept, but the id is spent as for a full ring */
    }
    size_t slot;
    if (ring->count < ring->capacity) {
        slot = (ring->oldest + ring->count) % ring->capacity;
        ring->count++;
    } else {
        slot = ring->oldest;  /* the oldest goes */
        ring->oldest = (ring->oldest + 1) % ring->capacity;
    }
    ring->slots[slot] = *event;
    ring->slots[slot].id = id;
    return id;
}

bool agent_event_ring_next_after(const agent_event_ring_t *ring, uint32_t after_id,
                                 agent_event_t *out)
{
    if (ring->count == 0) {
        return false;
    }
    const uint32_t oldest_id = ring->slots[ring->oldest].id;
    size_t index = 0;  /* position after the oldest */
    if (after_id >= oldest_id) {
        const uint32_t ahead = after_id - oldest_id + 1;
        if (ahead >= ring->count) {
            return false;
        }
        index = ahead;
    }
    *out = ring->slots[(ring->oldest + index) % ring->capacity];
    return true;
}

uint32_t agent_event_ring_last_id(const agent_event_ring_t *ring)
{
    return ring->next_id - 1;
}

uint32_t agent_event_ring_next_id(const agent_event_ring_t *ring)
{
    return ring->next_id;
}

uint32_t agent_event_ring_replay_cursor(const agent_event_ring_t *ring, bool has_last_event_id,
                                        uint32_t last_event_id)
{
    const uint32_t last = agent_event_ring_last_id(ring);
    if (!has_last_event_id) {
        return last;
    }
    return last_event_id <= last ? last_event_id : 0;
}

bool agent_event_id_reservation_due(uint32_t next_id, uint32_t reserved_below)
{
    return next_id >= reserved_below;
}

uint32_t agent_event_id_reservation(uint32_t next_id, uint32_t block)
{
    if (block == 0) {
        block = 1;
    }
    return next_id > UINT32_MAX - block ? UINT32_MAX : next_id + block;
}

bool agent_progress_event_due(int64_t now_us, int64_t *last_sent_us, uint32_t interval_ms,
                              bool completes_image)
{
    if (completes_image) {
        return true;
    }
    if (*last_sent_us != AGENT_PROGRESS_NONE && now_us >= *last_sent_us &&
        now_us - *last_sent_us < (int64_t)interval_ms * 1000) {
        return false;
    }
    *last_sent_us = now_us;
    return true;
}
