"""Waiting on one device within deadlines: requests bounded by what is left of their wait
(one last attempt's time at least), reads retried while the device is unreachable, and the
device's pushed events queued for whoever follows them.

Nothing here knows an update job: update_job.py sets the deadlines and reads the answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from .device_client import DeviceClient
from .errors import DeviceTimeoutError, DeviceUnreachableError, EspOtaError
from .protocol import DeviceEvent, DeviceInfo, OtaStatus

_LOGGER = logging.getLogger(__name__)


class DeviceWaits:
    """One device's requests within deadlines (`name` says which device in errors)."""

    def __init__(
        self,
        client: DeviceClient,
        name: str,
        *,
        poll_s: float,
        last_attempt_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._name = name
        self._poll_s = poll_s
        self._last_attempt_s = last_attempt_s
        self._clock = clock

    async def bounded[T](self, request: Awaitable[T], until: float) -> T:
        """Await a device request until `until` (one last attempt's time at least)."""
        limit = max(until - self._clock(), self._last_attempt_s)
        try:
            async with asyncio.timeout(limit):
                return await request
        except TimeoutError as err:
            raise DeviceTimeoutError(f"{self._name} did not answer in time") from err

    async def status_until(self, deadline: float) -> OtaStatus:
        """GET /ota, retried while unreachable until `deadline`."""
        return await self._read_until(self._client.ota_status, deadline)

    async def info_until(self, deadline: float) -> DeviceInfo:
        """GET /info, retried while unreachable until `deadline`."""
        return await self._read_until(self._client.info, deadline)

    async def _read_until[T](self, read: Callable[[], Awaitable[T]], deadline: float) -> T:
        while True:
            try:
                return await self.bounded(read(), deadline)
            except DeviceUnreachableError:
                if self._clock() >= deadline:
                    raise
            await self.pause(deadline)

    async def pause(self, deadline: float) -> None:
        """Sleep poll_s, or until the deadline if that comes first."""
        await asyncio.sleep(max(0.0, min(self._poll_s, deadline - self._clock())))


class EventQueue:
    """A device's pushed events, queued by a task of their own inside `async with`."""

    def __init__(
        self,
        events: Callable[[], AsyncIterator[DeviceEvent]],
        name: str,
        clock: Callable[[], float],
    ) -> None:
        self._events = events
        self._name = name
        self._clock = clock
        self._queue: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventQueue:
        self._pump = asyncio.create_task(self._fill(), name=f"esp-ota events {self._name}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.wait([self._pump])

    async def _fill(self) -> None:
        try:
            async for event in self._events():
                self._queue.put_nowait(event)
        except EspOtaError as err:
            # Authentication or certificate errors end the stream; polling goes on.
            _LOGGER.debug("%s: event stream ended: %s", self._name, err)

    async def next_before(self, deadline: float) -> DeviceEvent | None:
        """A queued event at once (newer than the last poll), else one that comes before
        `deadline`; None once it has passed."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        wait = deadline - self._clock()
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    return await self._queue.get()
            except TimeoutError:
                pass
        return None
