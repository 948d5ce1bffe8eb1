/*
 * The events of GET /api/v1/events: a fixed ring of the most recent ones (RAM; a reboot
 * empties it), the ids that keep growing across reboots, where a new stream starts
 * (Last-Event-ID), and the pacing of WRITE_FLASH progress events.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "esp_err.h"
#include "agent_names.h"
#include "agent_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One event; every field the protocol renders, nulls where unset. */
typedef struct {
    uint32_t id;                        /**< set by agent_event_ring_push */
    agent_event_type_t type;
    char ota_id[AGENT_OTA_ID_LEN + 1];  /**< "" = null */
    int32_t bytes_written;              /**< -1 = null (set for write_flash) */
    int32_t image_size;                 /**< -1 = null (set for write_flash) */
    esp_err_t error;                    /**< ESP_OK = null (finish, abort) */
    char project[32];                   /**< "" = null (get_img_desc; esp_app_desc_t size) */
    char version[32];                   /**< "" = null (get_img_desc) */
} agent_event_t;

/** An event of `type` with every field null (id 0 until pushed). */
void agent_event_init(agent_event_t *event, agent_event_type_t type);

/** A ring of the most recent events. Not locked: the caller serializes pushes and reads
 *  (the event handler and the streams share it). */
typedef struct {
    agent_event_t *slots;   /**< caller's storage of `capacity` events */
    size_t capacity;
    size_t count;           /**< events held, at most capacity */
    size_t oldest;          /**< slot of the oldest held event */
    uint32_t next_id;       /**< the id the next push gets */
} agent_event_ring_t;

/**
 * Start an empty ring over `storage` (`capacity` >= 1 events).
 *
 * `first_id` is the id of the first event pushed (0 is taken as 1: 0 means "no event").
 * Every id below it counts as issued (by an earlier boot): see agent_event_ring_last_id.
 * Ids are not expected to reach UINT32_MAX (136 years at one event per second).
 */
void agent_event_ring_init(agent_event_ring_t *ring, agent_event_t *storage, size_t capacity,
                           uint32_t first_id);

/** Copy `event` in with the next id (overwriting the oldest when full); returns the id. */
uint32_t agent_event_ring_push(agent_event_ring_t *ring, const agent_event_t *event);

/** The oldest held event with an id above `after_id`: true with `*out` set, false if none. */
bool agent_event_ring_next_after(const agent_event_ring_t *ring, uint32_t after_id,
                                 agent_event_t *out);

/** The last id issued (this boot or, as first_id - 1, an earlier one); 0 if none ever. */
uint32_t agent_event_ring_last_id(const agent_event_ring_t *ring);

/** The id the next push will get. */
uint32_t agent_event_ring_next_id(const agent_event_ring_t *ring);

/**
 * Where a new stream starts: it then sends agent_event_ring_next_after(cursor) and on,
 * each event once (the cursor only grows).
 *
 * - no (valid) Last-Event-ID: the last issued id; only live events follow;
 * - Last-Event-ID N with N <= the last issued id: N (what the ring still holds after N);
 * - N above any id issued (a client from before a flash erase): 0, the whole ring.
 * As simulator/firmware_app.py events_since.
 */
uint32_t agent_event_ring_replay_cursor(const agent_event_ring_t *ring, bool has_last_event_id,
                                        uint32_t last_event_id);

/*
 * Ids keep growing across reboots without an NVS write per event. The runtime keeps in
 * NVS a reservation R: "ids below R may have been issued". At boot it reads R (1 when
 * absent) and starts the ring with first_id = R. Before each push it asks
 * agent_event_id_reservation_due(next id, R); when due it stores
 * R = agent_event_id_reservation(next id, block) first, then pushes. An id is thus never
 * issued before it is below the stored R, and a reset skips at most `block` ids.
 */

/** Whether the id `next_id` needs a new reservation (it is not below `reserved_below`). */
bool agent_event_id_reservation_due(uint32_t next_id, uint32_t reserved_below);

/** The reservation to store before issuing `next_id`: next_id + block (block 0 taken as
 *  1), saturating at UINT32_MAX. */
uint32_t agent_event_id_reservation(uint32_t next_id, uint32_t block);

/** The value of *last_sent_us before the first WRITE_FLASH of a job. */
#define AGENT_PROGRESS_NONE INT64_MIN

/**
 * Whether an ESP_HTTPS_OTA_WRITE_FLASH becomes an event (docs/protocol.md): the first of
 * a job (*last_sent_us == AGENT_PROGRESS_NONE), then at most one per `interval_ms` (0:
 * all), and always the one that completes the image (`completes_image`: bytes_written ==
 * image_size). Updates *last_sent_us when it says yes, except for the completing one
 * (as the simulator). Reset *last_sent_us to AGENT_PROGRESS_NONE for each job.
 */
bool agent_progress_event_due(int64_t now_us, int64_t *last_sent_us, uint32_t interval_ms,
                              bool completes_image);

#ifdef __cplusplus
}
#endif
