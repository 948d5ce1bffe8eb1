"""The network between Home Assistant and a device, which a test can break: a TCP proxy on
127.0.0.1 that passes the TLS bytes through unchanged.

- `go_silent()`: open connections stay open and carry nothing more, either way, and new
  connections are taken and closed at once (a device that froze, or a link that went
  away without a word: nothing tells the client but silence).
- `cut()`: every connection ends now and new ones are refused (closed at once).
- `restore()`: new connections pass again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

_CHUNK: Final = 16 * 1024


class LinkProxy:
    """127.0.0.1:<port> → the device's upstream port."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._passing = True
        self._silent = asyncio.Event()  # set: open connections forward nothing more
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    def go_silent(self) -> None:
        self._passing = False
        self._silent.set()

    def cut(self) -> None:
        self._passing = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.cut()  # what was silent is gone for good; new connections pass
        self._silent = asyncio.Event()
        self._passing = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if not self._passing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        silent = self._silent
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer, silent)),
            asyncio.ensure_future(self._pipe(up_reader, writer, silent)),
        ]
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            for end in (writer, up_writer):
                end.transport.abort()
                self._writers.discard(end)
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, silent: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(_CHUNK):
                if silent.is_set():
                    await asyncio.Future()  # hold the connection, forward nothing, forever
                writer.write(chunk)
                await writer.drain()
