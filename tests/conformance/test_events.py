"""The event stream on the wire: the `: connected` comment, id/event/data lines,
Last-Event-ID replay without duplicates, and what a reboot does to the ring."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from custom_components.esp_ota.espota.protocol import OtaState

from .devices import HEARTBEAT_S, DeviceUnderTest
from .support import (
    FirmwareHost,
    RawEventStream,
    SseItem,
    make_image,
    reboot,
    start_update,
    wait_job_end,
)

EVENT_FIELDS = (
    "id",
    "type",
    "ota_id",
    "bytes_written",
    "image_size",
    "project",
    "version",
    "error",
)


async def _failing_job(dut: DeviceUnderTest, firmware: FirmwareHost, version: str) -> str:
    """A job that fails after a few events (an image of another project)."""
    offer = firmware.publish(make_image(version, project="another-product"), version)
    ota_id = await start_update(dut, offer)
    status = await wait_job_end(dut, ota_id)
    assert (status.state, status.error) == (OtaState.FAILED, "ESP_FAIL"), status
    return ota_id


def _checked(item: SseItem) -> dict[str, Any]:
    """An event whose id: and event: lines repeat the JSON's id and type."""
    assert item.data is not None, item
    for name in EVENT_FIELDS:
        assert name in item.data, f"event data without {name!r}: {item.data}"
    assert item.id == str(item.data["id"]), item
    assert item.event == item.data["type"], item
    return item.data


async def _read_job(stream: RawEventStream, ota_id: str) -> list[dict[str, Any]]:
    """Events until this job's abort (the end of a failed job)."""
    events: list[dict[str, Any]] = []
    while True:
        data = _checked(await stream.next_event())
        events.append(data)
        if data["type"] == "abort" and data["ota_id"] in (None, ota_id):
            return events


async def test_last_event_id_replays_then_streams_live(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """Every stream starts with `: connected`. Without Last-Event-ID, live events only;
    with Last-Event-ID: N, first the held events after N, once, then live ones; an N
    above every id gets the whole ring; a Last-Event-ID that is not a number counts as
    absent."""
    async with RawEventStream(dut) as live:
        assert live.response.status == 200
        assert live.response.headers["Content-Type"].startswith("text/event-stream")
        first = await live.next()
        assert first.comment == "connected", first
        first_job = await _failing_job(dut, firmware, "2.0.0")
        seen = await _read_job(live, first_job)
    types = [e["type"] for e in seen]
    assert types[:3] == ["start", "connected", "get_img_desc"], types
    assert seen[0]["ota_id"] == first_job
    ids = [e["id"] for e in seen]
    assert ids == sorted(set(ids)), ids

    pivot = ids[1]
    async with RawEventStream(dut, last_event_id=str(pivot)) as resumed:
        assert resumed.response.status == 200
        assert (await resumed.next()).comment == "connected"
        replayed = [_checked(await resumed.next_event()) for _ in seen[2:]]
        assert replayed == seen[2:], (replayed, seen)
        second_job = await _failing_job(dut, firmware, "2.0.1")
        live_events = await _read_job(resumed, second_job)
    assert (live_events[0]["type"], live_events[0]["ota_id"]) == ("start", second_job)
    assert live_events[0]["id"] > ids[-1], (live_events, ids)
    later_ids = [e["id"] for e in replayed + live_events]
    assert later_ids == sorted(set(later_ids)), f"an event was sent twice: {later_ids}"

    async with RawEventStream(dut, last_event_id=str(10**9)) as everything:
        assert (await everything.next()).comment == "connected"
        ring = [_checked(await everything.next_event()) for _ in seen + live_events]
    assert ring == seen + live_events

    for caught_up_id in (str(live_events[-1]["id"]), "not-a-number", "-1"):
        async with RawEventStream(dut, last_event_id=caught_up_id) as caught_up:
            assert (await caught_up.next()).comment == "connected"
            job = await _failing_job(dut, firmware, "2.0.2")
            nothing_replayed = _checked(await caught_up.next_event())
        assert (nothing_replayed["type"], nothing_replayed["ota_id"]) == ("start", job), (
            f"Last-Event-ID: {caught_up_id}"
        )


async def test_a_reboot_empties_the_ring_and_ids_keep_counting(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """A plain reboot sends `reboot` and ends the stream; the new boot holds no events,
    and its events have higher ids than the old ones."""
    async with RawEventStream(dut) as stream:
        assert (await stream.next()).comment == "connected"
        ota_id = await _failing_job(dut, firmware, "2.0.0")
        before = await _read_job(stream, ota_id)
        after = await reboot(dut)
        last = _checked(await stream.next_event())
        assert last["type"] == "reboot", last
        assert last["id"] > before[-1]["id"]
        with pytest.raises((EOFError, aiohttp.ClientError)):
            await stream.next(within_s=5)  # the stream ended with the restart
    assert after.reset_reason == "ESP_RST_SW"

    async with RawEventStream(dut, last_event_id="0") as fresh:
        assert (await fresh.next()).comment == "connected"
        ota_id = await _failing_job(dut, firmware, "2.0.1")
        first = _checked(await fresh.next_event())
    assert (first["type"], first["ota_id"]) == ("start", ota_id), "the ring survived the reboot"
    assert first["id"] > last["id"], (first, last)


async def test_an_open_stream_carries_something_every_heartbeat(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """A quiet stream gets `: keep-alive` at least every heartbeat, counted from whatever
    it carried last: also after events that came between two heartbeats (clients give a
    stream up after two silent heartbeats, docs/protocol.md)."""
    # Jitter of a loaded test machine; a device a heartbeat late is well past it.
    bound_s = HEARTBEAT_S * 1.4
    async with RawEventStream(dut) as stream:
        assert (await stream.next()).comment == "connected"
        # Right after a heartbeat, so the job's events fall early in the next interval.
        assert (await stream.next(within_s=bound_s)).comment == "keep-alive"
        job = asyncio.create_task(_failing_job(dut, firmware, "2.0.0"))
        last_at = time.monotonic()
        gaps: list[tuple[str, float]] = []
        events = quiet_heartbeats = 0
        while not (events and job.done() and quiet_heartbeats >= 2):
            item = await stream.next(within_s=bound_s)
            now = time.monotonic()
            gaps.append((item.comment or str(item.event), now - last_at))
            last_at = now
            if item.comment is None:
                events, quiet_heartbeats = events + 1, 0
            else:
                quiet_heartbeats += 1
        await job
    assert events >= 2, gaps  # the job's events did come between heartbeats
    assert max(gap for _, gap in gaps) <= bound_s, gaps
