"""Waiting on a device within deadlines, and its queued events, without a device."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest

from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.device_waits import DeviceWaits, EventQueue
from custom_components.esp_ota.espota.errors import (
    DeviceTimeoutError,
    DeviceUnauthorizedError,
    DeviceUnreachableError,
)
from custom_components.esp_ota.espota.protocol import DeviceEvent, EventType, OtaState, OtaStatus

IDLE = OtaStatus(
    state=OtaState.IDLE,
    ota_id=None,
    target_version=None,
    bytes_written=0,
    image_size=None,
    error=None,
    message=None,
)


class Flaky:
    """A client whose GET /ota fails `failures` times before it answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def ota_status(self) -> OtaStatus:
        self.calls += 1
        if self.calls <= self.failures:
            raise DeviceUnreachableError("rebooting")
        return IDLE


def waits_for(client: object, *, poll_s: float = 0.01, last_attempt_s: float = 0.05) -> DeviceWaits:
    return DeviceWaits(
        cast(DeviceClient, client),
        "24:0a:c4:00:00:01",
        poll_s=poll_s,
        last_attempt_s=last_attempt_s,
        clock=time.monotonic,
    )


async def test_reads_are_retried_while_unreachable() -> None:
    client = Flaky(failures=3)
    assert await waits_for(client).status_until(time.monotonic() + 5) == IDLE
    assert client.calls == 4


async def test_reads_give_up_at_the_deadline() -> None:
    client = Flaky(failures=1000)
    began = time.monotonic()
    with pytest.raises(DeviceUnreachableError):
        await waits_for(client).status_until(began + 0.1)
    assert 0.1 <= time.monotonic() - began < 1
    assert client.calls >= 3


async def test_a_request_past_its_deadline_gets_one_last_attempt() -> None:
    waits = waits_for(None, last_attempt_s=0.05)
    assert await waits.bounded(asyncio.sleep(0.01, "answer"), time.monotonic() - 10) == "answer"
    began = time.monotonic()
    with pytest.raises(DeviceTimeoutError, match="24:0a:c4:00:00:01 did not answer in time"):
        await waits.bounded(asyncio.sleep(10), time.monotonic() - 10)
    assert time.monotonic() - began < 1


def event(number: int) -> DeviceEvent:
    return DeviceEvent(
        id=number,
        type=EventType.WRITE_FLASH,
        ota_id="5eed00000001",
        bytes_written=number * 4096,
        image_size=None,
        project=None,
        version=None,
        error=None,
    )


async def test_events_are_queued_until_the_stream_ends() -> None:
    """A refused stream (a new secret, another certificate) ends the events, not the
    caller: it goes on polling."""

    async def stream() -> AsyncIterator[DeviceEvent]:
        yield event(1)
        yield event(2)
        raise DeviceUnauthorizedError("secret refused")

    async with EventQueue(stream, "24:0a:c4:00:00:01", time.monotonic) as events:
        assert await events.next_before(time.monotonic() + 5) == event(1)
        assert await events.next_before(time.monotonic() + 5) == event(2)
        began = time.monotonic()
        assert await events.next_before(began + 0.05) is None
        assert time.monotonic() - began >= 0.05
        assert await events.next_before(time.monotonic() - 1) is None


async def test_the_queue_stops_its_stream() -> None:
    stopped = asyncio.Event()

    async def endless() -> AsyncIterator[DeviceEvent]:
        try:
            while True:
                await asyncio.sleep(0.01)
                yield event(1)
        finally:
            stopped.set()

    async with EventQueue(endless, "24:0a:c4:00:00:01", time.monotonic) as events:
        assert await events.next_before(time.monotonic() + 5) == event(1)
    assert stopped.is_set()
