"""A TCP proxy on 127.0.0.1 that breaks downloads on purpose (server-side faults).

It sits between a device and the firmware server and passes the TLS bytes through
unchanged, so it works the same for any device: the C device has no fault hooks, and the
simulator's own faults are not used by the conformance suite. Per connection (numbered from
1 in accept order) a rule can cut the connection after N bytes from the server (the device
receives exactly those bytes, then the end of the connection), throttle what the server
sends to B bytes/s (optionally after a first part at full speed), or stall it after N
bytes (nothing more is forwarded until the device hangs up). A one-shot cut
(`cut_once_after`) applies to the first connection that carries that many bytes,
whichever it is (a device may probe with HEAD or a small Range request first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Final

_CHUNK: Final = 16 * 1024
# A throttled connection forwards this often (smooth, not bursty).
_PACE_SLICE_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class Rule:
    """What happens to the server-to-device direction of one connection."""

    cut_after: int | None = None  # close both sides after this many bytes
    bytes_per_s: float | None = None  # forward at most this fast ...
    slow_after: int = 0  # ... once this many bytes went through at full speed
    stall_after: int | None = None  # forward nothing more after this many bytes


@dataclass(slots=True)
class ConnectionStats:
    """What one proxied connection carried."""

    number: int
    to_device: int = 0  # bytes from the server forwarded to the device
    to_server: int = 0  # bytes from the device forwarded to the server
    cut: bool = False
    stalled: bool = False
    closed: bool = False


@dataclass(slots=True)
class _Connection:
    stats: ConnectionStats
    rule: Rule
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class FaultProxy:
    """Forward 127.0.0.1:<port> to an upstream TCP server, with faults."""

    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._host = host
        self._server: asyncio.Server | None = None
        self._connections: list[_Connection] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.rules: dict[int, Rule] = {}
        self.default_rule = Rule()
        self._cut_once: int | None = None
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        """The port listened on (after start)."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> list[ConnectionStats]:
        """Every connection so far, in accept order."""
        return [connection.stats for connection in self._connections]

    @property
    def bytes_to_device(self) -> int:
        """Everything forwarded from the server so far (TLS bytes)."""
        return sum(stats.to_device for stats in self.connections)

    def cut_once_after(self, byte_count: int) -> None:
        """Cut the first connection (from now on) that carries `byte_count` bytes from the
        server; the rule disarms once it fired."""
        self._cut_once = byte_count

    @property
    def cut_once_pending(self) -> bool:
        """Whether the one-shot cut has not fired yet."""
        return self._cut_once is not None

    def set_rule(self, number: int, rule: Rule) -> None:
        """The rule of connection `number` (1-based, accept order)."""
        self.rules[number] = rule

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._accept, self._host, 0)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in self._connections:
            for writer in connection.writers:
                writer.transport.abort()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        if handlers:
            await asyncio.wait(handlers)
        if server is not None:
            await server.wait_closed()

    async def wait_for_connections(self, count: int, within_s: float) -> None:
        """Wait until at least `count` connections were accepted."""
        async with asyncio.timeout(within_s):
            while len(self._connections) < count:
                self._changed.clear()
                await self._changed.wait()

    # --- forwarding -------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        number = len(self._connections) + 1
        connection = _Connection(
            ConnectionStats(number), self.rules.get(number, self.default_rule), writers=[writer]
        )
        self._connections.append(connection)
        self._changed.set()
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            except OSError:
                writer.transport.abort()
                return
            connection.writers.append(up_writer)
            upstream = asyncio.ensure_future(self._to_server(reader, up_writer, connection))
            downstream = asyncio.ensure_future(self._to_device(up_reader, writer, connection))
            try:
                await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
                if downstream.done():
                    # The server finished (or the connection was cut): the device is told.
                    await asyncio.wait({upstream}, timeout=1.0)
            finally:
                for pump in (upstream, downstream):
                    pump.cancel()
                await asyncio.gather(upstream, downstream, return_exceptions=True)
        finally:
            connection.stats.closed = True
            for side in connection.writers:
                side.transport.close()  # what was forwarded still goes out, then FIN
            self._handlers.discard(task)
            self._changed.set()

    async def _to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                writer.write(data)
                connection.stats.to_server += len(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    async def _to_device(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        rule, stats = connection.rule, connection.stats
        paced_from: tuple[float, int] | None = None  # (time, bytes) when throttling began
        with contextlib.suppress(OSError):
            while True:
                if self._cut_due(connection):
                    self._cut(connection)
                    return
                if rule.stall_after is not None and stats.to_device >= rule.stall_after:
                    stats.stalled = True
                    await asyncio.Event().wait()  # until the device hangs up (cancelled)
                throttled = rule.bytes_per_s is not None and stats.to_device >= rule.slow_after
                data = await reader.read(self._read_limit(connection, throttled))
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                stats.to_device += len(data)
                await writer.drain()
                if throttled and rule.bytes_per_s is not None:
                    if paced_from is None:
                        paced_from = (time.monotonic(), stats.to_device - len(data))
                    due = paced_from[0] + (stats.to_device - paced_from[1]) / rule.bytes_per_s
                    await asyncio.sleep(max(0.0, due - time.monotonic()))

    def _cut_due(self, connection: _Connection) -> bool:
        """Whether the connection has carried all a cut lets through (one-shot disarmed)."""
        sent, cut_after = connection.stats.to_device, connection.rule.cut_after
        if cut_after is not None and sent >= cut_after:
            return True
        if self._cut_once is not None and sent >= self._cut_once:
            self._cut_once = None
            return True
        return False

    def _read_limit(self, connection: _Connection, throttled: bool) -> int:
        """How much to forward next: a pace slice, up to the next byte count a rule acts at."""
        rule, sent = connection.rule, connection.stats.to_device
        limit = _CHUNK
        if rule.bytes_per_s is not None:
            if throttled:
                limit = max(1, int(rule.bytes_per_s * _PACE_SLICE_S))
            else:
                limit = min(limit, rule.slow_after - sent)
        for bound in (rule.cut_after, rule.stall_after, self._cut_once):
            if bound is not None and bound > sent:
                limit = min(limit, bound - sent)
        return limit

    @staticmethod
    def _cut(connection: _Connection) -> None:
        """End the connection mid-stream: the device gets every byte forwarded so far, then
        the end of the connection (inside a TLS record, without close_notify); the server
        side is reset."""
        connection.stats.cut = True
        device_side, *server_side = connection.writers
        device_side.transport.close()
        for side in server_side:
            side.transport.abort()
