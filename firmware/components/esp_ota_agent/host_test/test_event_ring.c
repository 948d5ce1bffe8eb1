/*
 * Unit tests of agent_event_ring: ids, wrap-around, next_after across the wrap, replay
 * cursors (as simulator/firmware_app.py events_since), id reservations across reboots, and
 * WRITE_FLASH pacing.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <string.h>
#include "unity.h"
#include "agent_event_ring.h"

void setUp(void) {}
void tearDown(void) {}

static agent_event_t progress(int32_t bytes)
{
    agent_event_t e;
    agent_event_init(&e, AGENT_EVENT_WRITE_FLASH);
    strcpy(e.ota_id, "3f2a9c01d4e5");
    e.bytes_written = bytes;
    e.image_size = 1 << 20;
    return e;
}

/* Every event a stream starting at `cursor` sends, as ids. */
static size_t drain(const agent_event_ring_t *ring, uint32_t cursor, uint32_t *ids, size_t max)
{
    size_t count = 0;
    agent_event_t e;
    while (count < max && agent_event_ring_next_after(ring, cursor, &e)) {
        TEST_ASSERT_GREATER_THAN_UINT32(cursor, e.id);  /* never twice, never backwards */
        ids[count++] = e.id;
        cursor = e.id;
    }
    return count;
}

static void test_event_init(void)
{
    agent_event_t e;
    memset(&e, 0x5a, sizeof(e));
    agent_event_init(&e, AGENT_EVENT_FINISH);
    TEST_ASSERT_EQUAL_INT(AGENT_EVENT_FINISH, e.type);
    TEST_ASSERT_EQUAL_UINT32(0, e.id);
    TEST_ASSERT_EQUAL_STRING("", e.ota_id);
    TEST_ASSERT_EQUAL_INT32(-1, e.bytes_written);
    TEST_ASSERT_EQUAL_INT32(-1, e.image_size);
    TEST_ASSERT_EQUAL_INT32(ESP_OK, e.error);
    TEST_ASSERT_EQUAL_STRING("", e.project);
    TEST_ASSERT_EQUAL_STRING("", e.version);
}

static void test_ids_and_contents(void)
{
    agent_event_t storage[4];
    agent_event_ring_t ring;
    agent_event_ring_init(&ring, storage, 4, 0);  /* 0 is taken as 1 */
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_last_id(&ring));
    TEST_ASSERT_EQUAL_UINT32(1, agent_event_ring_next_id(&ring));
    agent_event_t out;
    TEST_ASSERT_FALSE(agent_event_ring_next_after(&ring, 0, &out));

    agent_event_t e = progress(4096);
    e.id = 999;  /* ignored: the ring numbers */
    TEST_ASSERT_EQUAL_UINT32(1, agent_event_ring_push(&ring, &e));
    TEST_ASSERT_EQUAL_UINT32(2, agent_event_ring_push(&ring, &e));
    TEST_ASSERT_EQUAL_UINT32(2, agent_event_ring_last_id(&ring));
    TEST_ASSERT_TRUE(agent_event_ring_next_after(&ring, 0, &out));
    TEST_ASSERT_EQUAL_UINT32(1, out.id);
    TEST_ASSERT_EQUAL_INT(AGENT_EVENT_WRITE_FLASH, out.type);
    TEST_ASSERT_EQUAL_STRING("3f2a9c01d4e5", out.ota_id);
    TEST_ASSERT_EQUAL_INT32(4096, out.bytes_written);
    TEST_ASSERT_TRUE(agent_event_ring_next_after(&ring, 1, &out));
    TEST_ASSERT_EQUAL_UINT32(2, out.id);
    TEST_ASSERT_FALSE(agent_event_ring_next_after(&ring, 2, &out));
    TEST_ASSERT_FALSE(agent_event_ring_next_after(&ring, UINT32_MAX, &out));
}

static void test_wrap_around(void)
{
    agent_event_t storage[4];
    agent_event_ring_t ring;
    agent_event_ring_init(&ring, storage, 4, 1);
    for (int32_t i = 1; i <= 10; i++) {
        const agent_event_t e = progress(i * 100);
        TEST_ASSERT_EQUAL_UINT32((uint32_t)i, agent_event_ring_push(&ring, &e));
    }
    /* Holds 7..10; the oldest is in slot 2, so the walk crosses the end of the array. */
    uint32_t ids[16];
    static const uint32_t expected[] = {7, 8, 9, 10};
    TEST_ASSERT_EQUAL_size_t(4, drain(&ring, 0, ids, 16));
    TEST_ASSERT_EQUAL_UINT32_ARRAY(expected, ids, 4);
    TEST_ASSERT_EQUAL_size_t(4, drain(&ring, 6, ids, 16));  /* 6 is gone: from the oldest */
    TEST_ASSERT_EQUAL_size_t(3, drain(&ring, 7, ids, 16));
    TEST_ASSERT_EQUAL_UINT32_ARRAY(expected + 1, ids, 3);
    TEST_ASSERT_EQUAL_size_t(1, drain(&ring, 9, ids, 16));
    TEST_ASSERT_EQUAL_UINT32(10, ids[0]);
    TEST_ASSERT_EQUAL_size_t(0, drain(&ring, 10, ids, 16));
    agent_event_t out;
    TEST_ASSERT_TRUE(agent_event_ring_next_after(&ring, 8, &out));
    TEST_ASSERT_EQUAL_INT32(900, out.bytes_written);  /* the content goes with the id */

    /* Every fill level and every position of the oldest slot. */
    for (size_t capacity = 1; capacity <= 5; capacity++) {
        agent_event_ring_init(&ring, storage, capacity > 4 ? 4 : capacity, 1);
        const size_t cap = ring.capacity;
        for (uint32_t pushed = 1; pushed <= 13; pushed++) {
            const agent_event_t e = progress((int32_t)pushed);
            agent_event_ring_push(&ring, &e);
            const uint32_t oldest = pushed > cap ? pushed - (uint32_t)cap + 1 : 1;
            for (uint32_t after = 0; after <= pushed + 1; after++) {
                const bool has = agent_event_ring_next_after(&ring, after, &out);
                const uint32_t want = after < oldest ? oldest : after + 1;
                TEST_ASSERT_EQUAL(want <= pushed, has);
                if (has) {
                    TEST_ASSERT_EQUAL_UINT32(want, out.id);
                    TEST_ASSERT_EQUAL_INT32((int32_t)want, out.bytes_written);
                }
            }
        }
    }
}

static void test_replay_cursor(void)
{
    agent_event_t storage[4];
    agent_event_ring_t ring;
    agent_event_ring_init(&ring, storage, 4, 1);
    /* Nothing issued yet. */
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_replay_cursor(&ring, false, 0));
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_replay_cursor(&ring, true, 0));
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_replay_cursor(&ring, true, 5));

    for (int i = 0; i < 10; i++) {
        const agent_event_t e = progress(i);
        agent_event_ring_push(&ring, &e);
    }
    uint32_t ids[16];
    /* No Last-Event-ID: only live events. */
    const uint32_t live = agent_event_ring_replay_cursor(&ring, false, 0);
    TEST_ASSERT_EQUAL_UINT32(10, live);
    TEST_ASSERT_EQUAL_size_t(0, drain(&ring, live, ids, 16));
    /* N <= last: what the ring holds after N. */
    TEST_ASSERT_EQUAL_UINT32(8, agent_event_ring_replay_cursor(&ring, true, 8));
    TEST_ASSERT_EQUAL_size_t(2, drain(&ring, 8, ids, 16));
    TEST_ASSERT_EQUAL_UINT32(10, agent_event_ring_replay_cursor(&ring, true, 10));
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_replay_cursor(&ring, true, 0));
    TEST_ASSERT_EQUAL_size_t(4, drain(&ring, 0, ids, 16));
    /* N above any id issued (a client from before a flash erase): the whole ring. */
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_replay_cursor(&ring, true, 11));
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_replay_cursor(&ring, true, UINT32_MAX));

    /* A live event after the replay is sent once. */
    const agent_event_t e = progress(11);
    agent_event_ring_push(&ring, &e);
    TEST_ASSERT_EQUAL_size_t(1, drain(&ring, live, ids, 16));
    TEST_ASSERT_EQUAL_UINT32(11, ids[0]);
}

static void test_ids_continue_after_a_reboot(void)
{
    /* The ring of a boot that started at 1000 (ids below it were an earlier boot's). */
    agent_event_t storage[4];
    agent_event_ring_t ring;
    agent_event_ring_init(&ring, storage, 4, 1000);
    TEST_ASSERT_EQUAL_UINT32(999, agent_event_ring_last_id(&ring));
    /* A client that saw 990 before the reboot: nothing held, nothing replayed twice. */
    TEST_ASSERT_EQUAL_UINT32(990, agent_event_ring_replay_cursor(&ring, true, 990));
    uint32_t ids[4];
    TEST_ASSERT_EQUAL_size_t(0, drain(&ring, 990, ids, 4));
    const agent_event_t e = progress(1);
    TEST_ASSERT_EQUAL_UINT32(1000, agent_event_ring_push(&ring, &e));
    TEST_ASSERT_EQUAL_size_t(1, drain(&ring, 990, ids, 4));
    TEST_ASSERT_EQUAL_UINT32(1000, ids[0]);
    /* One from a future this device never reached (its flash was erased): all. */
    TEST_ASSERT_EQUAL_UINT32(0, agent_event_ring_replay_cursor(&ring, true, 5000));
}

static void test_reservation_helpers(void)
{
    TEST_ASSERT_TRUE(agent_event_id_reservation_due(1, 1));
    TEST_ASSERT_FALSE(agent_event_id_reservation_due(1, 2));
    TEST_ASSERT_TRUE(agent_event_id_reservation_due(65, 65));
    TEST_ASSERT_TRUE(agent_event_id_reservation_due(70, 65));
    TEST_ASSERT_EQUAL_UINT32(65, agent_event_id_reservation(1, 64));
    TEST_ASSERT_EQUAL_UINT32(2, agent_event_id_reservation(1, 0));
    TEST_ASSERT_EQUAL_UINT32(UINT32_MAX, agent_event_id_reservation(UINT32_MAX - 3, 64));
    TEST_ASSERT_EQUAL_UINT32(UINT32_MAX, agent_event_id_reservation(UINT32_MAX, 1));
}

/* The runtime's protocol over simulated reboots: ids only grow, a few NVS writes. */
static void test_reservations_across_reboots(void)
{
    const uint32_t block = 16;
    uint32_t nvs_reserved = 0;  /* 0: absent */
    uint32_t nvs_writes = 0;
    uint32_t highest_issued = 0;
    uint32_t events = 0;
    static const uint32_t per_boot[] = {0, 1, 15, 16, 17, 40, 3, 100};
    for (size_t boot = 0; boot < sizeof(per_boot) / sizeof(per_boot[0]); boot++) {
        agent_event_t storage[8];
        agent_event_ring_t ring;
        uint32_t reserved = nvs_reserved == 0 ? 1 : nvs_reserved;
        agent_event_ring_init(&ring, storage, 8, reserved);
        TEST_ASSERT_GREATER_OR_EQUAL_UINT32(highest_issued, agent_event_ring_last_id(&ring));
        for (uint32_t k = 0; k < per_boot[boot]; k++) {
            const uint32_t next = agent_event_ring_next_id(&ring);
            if (agent_event_id_reservation_due(next, reserved)) {
                reserved = agent_event_id_reservation(next, block);
                nvs_reserved = reserved;  /* stored before the id is issued */
                nvs_writes++;
            }
            const agent_event_t e = progress((int32_t)k);
            const uint32_t id = agent_event_ring_push(&ring, &e);
            TEST_ASSERT_GREATER_THAN_UINT32(highest_issued, id);
            TEST_ASSERT_LESS_THAN_UINT32(nvs_reserved, id);  /* covered by NVS */
            highest_issued = id;
            events++;
        }
        /* reset: RAM is gone, NVS stays */
    }
    TEST_ASSERT_LESS_THAN_UINT32(events / 4, nvs_writes);
}

static void test_progress_pacing(void)
{
    int64_t last = AGENT_PROGRESS_NONE;
    const uint32_t interval = 250;
    TEST_ASSERT_TRUE(agent_progress_event_due(1000000, &last, interval, false));  /* first */
    TEST_ASSERT_EQUAL_INT64(1000000, last);
    TEST_ASSERT_FALSE(agent_progress_event_due(1000001, &last, interval, false));
    TEST_ASSERT_FALSE(agent_progress_event_due(1249999, &last, interval, false));
    TEST_ASSERT_TRUE(agent_progress_event_due(1250000, &last, interval, false));  /* exactly */
    TEST_ASSERT_EQUAL_INT64(1250000, last);
    TEST_ASSERT_FALSE(agent_progress_event_due(1300000, &last, interval, false));
    /* The one that completes the image always goes, and does not move the clock. */
    TEST_ASSERT_TRUE(agent_progress_event_due(1300001, &last, interval, true));
    TEST_ASSERT_EQUAL_INT64(1250000, last);
    TEST_ASSERT_TRUE(agent_progress_event_due(1600000, &last, interval, false));

    /* A first event at time 0 (a fresh clock) is still the first. */
    last = AGENT_PROGRESS_NONE;
    TEST_ASSERT_TRUE(agent_progress_event_due(0, &last, interval, false));
    TEST_ASSERT_FALSE(agent_progress_event_due(100, &last, interval, false));

    /* Interval 0: every write. */
    last = AGENT_PROGRESS_NONE;
    for (int64_t t = 0; t < 5; t++) {
        TEST_ASSERT_TRUE(agent_progress_event_due(t, &last, 0, false));
    }

    /* 1024 writes over 4 s, every ~3.9 ms: the first, one per 250 ms, and the last. */
    last = AGENT_PROGRESS_NONE;
    int sent = 0;
    for (int i = 1; i <= 1024; i++) {
        const int64_t now = 5000000 + (int64_t)i * 3906;
        sent += agent_progress_event_due(now, &last, interval, i == 1024) ? 1 : 0;
    }
    TEST_ASSERT_INT_WITHIN(1, 17, sent);
}

int main(void)
{
    UNITY_BEGIN();
    RUN_TEST(test_event_init);
    RUN_TEST(test_ids_and_contents);
    RUN_TEST(test_wrap_around);
    RUN_TEST(test_replay_cursor);
    RUN_TEST(test_ids_continue_after_a_reboot);
    RUN_TEST(test_reservation_helpers);
    RUN_TEST(test_reservations_across_reboots);
    RUN_TEST(test_progress_pacing);
    return UNITY_END();
}
