"""Accepting TLS connections for the firmware server's aiohttp handler within bounds:
connections in total and per peer, handshake and request time, a flood logged once.

The firmware server's port listens on the LAN and answers before any token is checked, so
what a client without one can hold is bounded (docs/security.md, "Bounds on what a peer can
make Home Assistant hold"): connections in total and per peer address, counted from
accept() and refused (reset) beyond the bound before a TLS handshake is spent on them; the
handshake's time; the time a connection may wait for a whole request (idle, or dripping its
headers); the request line and header sizes. A flood is logged once when it starts and once
when it ends, never per connection, and an exhausted file table pauses accept() instead of
logging every retry.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

_LOGGER = logging.getLogger(__name__)

# --- what a client may hold (docs/security.md) ---------------------------------------------
# Connections at once from all peers. The install queue lets at most 50 devices download at
# once (the options' maximum), each with one connection and, while resuming after a drop,
# a second one as the first closes: 128 covers that with room to spare, and bounds what a
# flood can cost (about 300 kB each while a TLS connection is open: 40 MB at worst) well
# below Home Assistant's open-file limit (2048 on HA OS).
MAX_CONNECTIONS: Final = 128
# Connections at once from one peer address. A device holds one at a time, two while a
# resumed download (Range) replaces a dropped one; 16 lets several devices share one
# address (behind a NAT, or Docker's port proxy) while one address cannot take more than
# an eighth of MAX_CONNECTIONS.
MAX_CONNECTIONS_PER_PEER: Final = 16
# This host itself (its default loopback source addresses: the simulator fleet, the demo, a
# local proxy) is not a LAN peer: its connections count towards MAX_CONNECTIONS only.
HOST_ITSELF: Final = frozenset({"127.0.0.1", "::1"})
# Queued connections not yet accept()ed: beyond this the kernel refuses them for us.
LISTEN_BACKLOG: Final = 64
# A TLS handshake must end within this: an ESP32 finishes one in well under 2 s, and
# esp_ota_agent gives its own clients the same 10 s.
TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0
# After a connection is closed, TLS's close_notify and the end of a response still
# buffered (at most about 128 KiB) get this long before the socket is dropped.
TLS_SHUTDOWN_TIMEOUT_S: Final = 10.0
# A whole request (its line and headers) must arrive within this of the connection being
# ready (handshake done, or the previous response sent); it is also the idle keep-alive
# time. esp_http_client writes a request at once and asks for the next range as soon as the
# last one is read, so only a client holding the connection on purpose is cut.
REQUEST_TIMEOUT_S: Final = 5.0
# A request's line and headers: esp_http_client sends a line of about 100 bytes and fewer
# than 10 headers, the longest the 50-byte Bearer token. Beyond these: 400 (or 431/414).
MAX_REQUEST_LINE: Final = 1024
MAX_HEADER_FIELD: Final = 1024
MAX_HEADERS: Final = 32
# A request body nobody reads (a refused upload) is drained at most this long, then the
# connection is closed.
LINGER_S: Final = 1.0
# accept() failing for lack of file descriptors is retried after this (asyncio's own delay).
ACCEPT_RETRY_S: Final = 1.0
# A flood is over once nothing was refused for this long; then its end is logged.
FLOOD_QUIET_S: Final = 60.0
# On shutdown, downloads in progress get this long to finish.
SHUTDOWN_TIMEOUT_S: Final = 1.0
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() errors that concern one connection only (the peer gave up first): go on.
_PEER_GONE: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
_RESET: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class _RequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with a malformed request (400, 431, ...) logged at
    debug level: aiohttp logs those as errors with a traceback, which any client could
    then fill the log with. A handler's own failure (500) is still an error."""

    _client_error = False

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        self._client_error = status < 500
        try:
            return super().handle_error(request, status, exc, message)
        finally:
            self._client_error = False

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        if self._client_error:
            _LOGGER.debug("Refused a malformed request: %s", kwargs.get("exc_info"))
        else:
            super().log_exception(*args, **kwargs)


def _handler_options() -> dict[str, Any]:
    """What every connection's handler is made with: the bounds above, as they are now."""
    return {
        "access_log": None,
        "keepalive_timeout": REQUEST_TIMEOUT_S,
        "max_line_size": MAX_REQUEST_LINE,
        "max_field_size": MAX_HEADER_FIELD,
        "max_headers": MAX_HEADERS,
        "lingering_time": LINGER_S,
    }


class _HttpServer(web.Server):
    """aiohttp's low-level server, saying when a connection ends (`on_lost`)."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        on_lost: Callable[[web.RequestHandler], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._on_lost = on_lost

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        super().connection_lost(handler, exc)
        self._on_lost(handler)


type RequestHandlerFunction = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class BoundedListener:
    """One port's listening socket, its own accept() loop and the connections it admitted,
    each handed after its TLS handshake to an aiohttp handler that answers every request
    with `handle`. start() and close() may alternate."""

    def __init__(self, handle: RequestHandlerFunction) -> None:
        self._handle = handle
        self._listener: socket.socket | None = None
        self._http: _HttpServer | None = None
        self._handler_options: dict[str, Any] = {}
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        # Every connection from accept() until it is lost: its peer address.
        self._peers: dict[web.RequestHandler, str] = {}
        self._per_peer: Counter[str] = Counter()
        self._flood: _Flood | None = None
        self._port: int | None = None
        self._front_context: ssl.SSLContext | None = None
        self._context: ssl.SSLContext | None = None

    @property
    def port(self) -> int | None:
        """The port listened on (the real one when 0 was asked); None when not listening."""
        return self._port

    @property
    def listening(self) -> bool:
        """Whether start() was called and close() not since."""
        return self._listener is not None

    @property
    def connection_count(self) -> int:
        """Connections open now (from accept() until they are lost)."""
        return len(self._peers)

    async def start(self, host: str, port: int, context: ssl.SSLContext) -> None:
        """Listen on `host`:`port`, handshaking with `context`. Raises OSError when the
        address cannot be bound."""
        # Every handshake starts with this context; its SNI callback hands each one the
        # current one, so set_context() needs no restart.
        context.sni_callback = self._choose_context
        loop = asyncio.get_running_loop()
        address = (
            await loop.getaddrinfo(
                host,
                port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
        )[0]
        # Our own accept() rather than loop.create_server: the caps apply to the peer's
        # address before a TLS handshake is spent, and out-of-descriptors errors are ours
        # to log once (asyncio logs each retry).
        listener = socket.create_server(address[4], family=address[0], backlog=LISTEN_BACKLOG)
        listener.setblocking(False)
        self._handler_options = _handler_options()
        self._http = _HttpServer(self._handle, self._release, **self._handler_options)
        self._front_context = self._context = context
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(listener, context))

    async def close(self) -> None:
        """Stop listening and end the connections open (SHUTDOWN_TIMEOUT_S for the
        requests in progress)."""
        listener, self._listener = self._listener, None
        accepting, self._accepting = self._accepting, None
        http, self._http = self._http, None
        if accepting is not None:
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
        if listener is not None:
            listener.close()
        handshakes, self._handshakes = list(self._handshakes), set()
        for task in handshakes:
            task.cancel()
        await asyncio.gather(*handshakes, return_exceptions=True)
        if http is not None:
            http.pre_shutdown()
            await http.shutdown(SHUTDOWN_TIMEOUT_S)
        if self._flood is not None:
            self._flood.end(self)
        self._port = None

    async def set_context(self, make_context: Callable[[], ssl.SSLContext]) -> None:
        """Handshakes from the next one on use the context `make_context` returns (made in
        a worker thread; connections open keep theirs). Before the first start() nothing:
        start() is given its own."""
        if self._front_context is not None:
            self._context = await asyncio.to_thread(make_context)

    def _choose_context(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _: object
    ) -> None:
        # Called for every handshake, with or without SNI (devices told an IP send none).
        if self._context is not None and self._context is not self._front_context:
            ssl_object.context = self._context

    # --- connections ------------------------------------------------------------

    async def _accept(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, address = await loop.sock_accept(listener)
            except OSError as err:
                if err.errno in _PEER_GONE:
                    continue
                if err.errno not in _OUT_OF_RESOURCES:
                    _LOGGER.exception("Firmware server stopped accepting connections")
                    return
                # The process is out of descriptors (or memory): pause accepting, since
                # the queued connections would fail the same way at once.
                self._refused(f"accept() failing ({err.strerror})", None)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            peer = str(address[0])
            if len(self._peers) >= MAX_CONNECTIONS:
                self._refuse(connection, f"{MAX_CONNECTIONS} connections open", peer)
            elif self._per_peer[peer] >= MAX_CONNECTIONS_PER_PEER and peer not in HOST_ITSELF:
                self._refuse(
                    connection, f"{MAX_CONNECTIONS_PER_PEER} connections from {peer}", peer
                )
            else:
                self._admit(connection, peer, context)

    def _refuse(self, connection: socket.socket, bound: str, peer: str) -> None:
        """Reset a connection beyond a bound: no handshake, nothing left in TIME_WAIT."""
        try:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        finally:
            connection.close()
        self._refused(bound, peer)

    def _refused(self, bound: str, peer: str | None) -> None:
        if self._flood is None:
            self._flood = _Flood(self, bound, peer)
        self._flood.count()

    def _admit(self, connection: socket.socket, peer: str, context: ssl.SSLContext) -> None:
        assert self._http is not None
        handler = _RequestHandler(
            self._http, loop=asyncio.get_running_loop(), **self._handler_options
        )
        self._peers[handler] = peer
        self._per_peer[peer] += 1
        task = asyncio.create_task(self._handshake(connection, handler, context))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(
        self, connection: socket.socket, handler: _RequestHandler, context: ssl.SSLContext
    ) -> None:
        """TLS on an accepted connection; aiohttp's handler takes it from there."""
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: handler,
                connection,
                ssl=context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S,
            )
        except OSError as err:  # the handshake failed or timed out (SSLError among them)
            _LOGGER.debug("TLS handshake with %s failed: %r", self._peers.get(handler), err)
            self._release(handler)
        except BaseException:
            self._release(handler)
            raise

    def _release(self, handler: web.RequestHandler) -> None:
        """A connection ended (once per connection, whichever way it went)."""
        peer = self._peers.pop(handler, None)
        if peer is not None:
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]


class _Flood:
    """Connections refused since a bound was first reached: logged once at the start and
    once at the end (FLOOD_QUIET_S without a refusal), never per connection."""

    def __init__(self, listener: BoundedListener, bound: str, peer: str | None) -> None:
        loop = asyncio.get_running_loop()
        self.started = self.last = loop.time()
        self.refused = 0
        self._timer = loop.call_later(FLOOD_QUIET_S, self._check, listener)
        _LOGGER.warning(
            "Firmware server: refusing new connections (%s%s); devices downloading "
            "keep theirs. Nothing more is logged until it ends",
            bound,
            f", first from {peer}" if peer is not None and peer not in bound else "",
        )

    def count(self) -> None:
        self.refused += 1
        self.last = asyncio.get_running_loop().time()

    def _check(self, listener: BoundedListener) -> None:
        quiet_until = self.last + FLOOD_QUIET_S
        loop = asyncio.get_running_loop()
        if loop.time() < quiet_until:
            self._timer = loop.call_at(quiet_until, self._check, listener)
        else:
            self.end(listener)

    def end(self, listener: BoundedListener) -> None:
        self._timer.cancel()
        listener._flood = None
        _LOGGER.warning(
            "Firmware server: connection flood over; %d connections refused over %.0f s",
            self.refused,
            self.last - self.started,
        )
