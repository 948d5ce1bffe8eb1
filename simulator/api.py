"""The simulated device's HTTPS API: protocol v1 (docs/protocol.md) over a SimulatedDevice.

One aiohttp server per device on 127.0.0.1. While the device reboots the listening socket
is really closed (connections are refused) and open event streams end, as they would
when a real ESP32 restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, Final, NoReturn

from aiohttp import web

from custom_components.esp_ota.espota.protocol import DeviceEvent

from .api_counters import ApiCounters, ApiTally
from .board import ESP_RST_PANIC, ESP_RST_POWERON
from .device import SimulatedDevice
from .faults import ApiFault
from .model import DeviceRefusedError, OtaRequest
from .tls import DeviceCertificate

_LOGGER = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"
# How long a reboot waits for open event streams to send their last events.
STREAM_FLUSH_S: Final = 1.0
# A firmware reads a request body into a fixed buffer; a certificate PEM fits easily.
MAX_BODY_BYTES: Final = 16 * 1024
# A request body must arrive within this after the request's headers (docs/protocol.md).
BODY_TIMEOUT_S: Final = 10.0
# Refusals that mean "not now" (409) rather than "never like this" (400).
_BAD_REQUEST_ERRORS: Final = frozenset({"ESP_ERR_INVALID_ARG", "ESP_ERR_INVALID_SIZE"})
# esp_http_server's name for the status (httpd_err_code_t): ESP-IDF has no esp_err_t for it.
UNAUTHORIZED: Final = "HTTPD_401_UNAUTHORIZED"
# HTTP-level refusals (no such endpoint, wrong method, body too large) as ESP-IDF names.
_HTTP_ERRORS: Final = {
    404: "ESP_ERR_NOT_FOUND",
    405: "ESP_ERR_NOT_SUPPORTED",
    413: "ESP_ERR_INVALID_SIZE",
}

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    return value


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def encode_event(event: DeviceEvent) -> bytes:
    """One server-sent event: id, event type, and the event as JSON data."""
    data = json.dumps(_jsonable(event), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type.value}\ndata: {data}\n\n".encode()


class _TlsAcceptor(asyncio.Protocol):
    """One accepted TCP connection, upgraded to TLS here rather than by the listening
    server: a client that leaves mid-handshake (a cancelled request, Home Assistant
    stopping) is then a quiet end of this connection, as on a device, and not an error
    the event loop reports (asyncio does, for servers made with ssl=, in debug mode)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        app_protocol: Callable[[], asyncio.BaseProtocol],
        upgrades: set[asyncio.Task[None]],
        tally: ApiTally,
    ) -> None:
        self._context = context
        self._app_protocol = app_protocol
        self._upgrades = upgrades
        self._tally = tally

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello waits for the TLS layer
        task = asyncio.get_running_loop().create_task(self._upgrade(transport))
        self._upgrades.add(task)
        task.add_done_callback(self._upgrades.discard)

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        protocol = self._app_protocol()
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, protocol, self._context, server_side=True
            )
        except (OSError, ssl.SSLError) as err:
            _LOGGER.debug("TLS handshake with a client failed: %s", err)
            transport.close()
            return
        assert tls is not None  # typed optional; asyncio always returns the TLS transport
        self._tally.tls_handshakes += 1
        protocol.connection_made(tls)


class DeviceApiServer:
    """Serves one device's API; implements the device's network (go_offline/go_online)."""

    def __init__(
        self,
        device: SimulatedDevice,
        certificate: DeviceCertificate,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.device = device
        self.certificate = certificate
        self.host = host
        self.port = port
        self._ssl: ssl.SSLContext | None = None  # made on the first go_online (file I/O)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._upgrades: set[asyncio.Task[None]] = set()  # connections in their handshake
        self._closed = False
        # Open event streams: each one's "stop" event and the task serving it.
        self._streams: dict[asyncio.Event, asyncio.Task[Any]] = {}
        # Kept across reboots: what this device has served since the server was made.
        self._tally = ApiTally()
        device.attach_network(self)

    @property
    def open_streams(self) -> int:
        """How many event streams are being served."""
        return len(self._streams)

    def counters(self) -> ApiCounters:
        """What this device's API has done so far, as the device counts it."""
        return self._tally.snapshot(len(self._streams))

    # --- the device's network ---------------------------------------------------------

    async def go_online(self) -> None:
        """Listen (again) on the device's port; the first call picks it when port is 0."""
        if self._runner is not None or self._closed:
            return
        if self._ssl is None:
            # ssl loads a certificate from files only: keep that off the event loop.
            self._ssl = await asyncio.to_thread(self.certificate.server_context)
        app = web.Application(middlewares=[self._authenticate], client_max_size=MAX_BODY_BYTES)
        app.router.add_get(f"{API_PREFIX}/info", self._info)
        app.router.add_get(f"{API_PREFIX}/ota", self._ota_status)
        app.router.add_post(f"{API_PREFIX}/ota", self._start_ota)
        app.router.add_post(f"{API_PREFIX}/ota/abort", self._abort)
        app.router.add_post(f"{API_PREFIX}/ota/confirm", self._confirm)
        app.router.add_post(f"{API_PREFIX}/ota/rollback", self._rollback)
        app.router.add_post(f"{API_PREFIX}/reboot", self._reboot)
        app.router.add_get(f"{API_PREFIX}/events", self._events)
        # A restarting chip waits for nobody: requests still running after the streams'
        # flush time are cut off.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=STREAM_FLUSH_S
        )
        await runner.setup()
        assert runner.server is not None  # setup() made it
        # The listening server is ours, not an aiohttp site: going offline must stop it
        # accepting before it closes (see go_offline).
        try:
            context, handlers = self._ssl, runner.server
            listener = await asyncio.get_running_loop().create_server(
                lambda: _TlsAcceptor(context, handlers, self._upgrades, self._tally),
                self.host,
                self.port,
                reuse_address=True,
            )
        except BaseException:
            await runner.cleanup()
            raise
        self.port = listener.sockets[0].getsockname()[1]
        self._runner, self._listener = runner, listener
        if self.closed():  # close() came while the port was opening
            await self.go_offline()

    async def go_offline(self) -> None:
        """Stop listening and drop every connection, as a restarting chip does."""
        runner, self._runner = self._runner, None
        # Streams first get to send what is queued (the reboot event) and end cleanly.
        for stream_stop in self._streams:
            stream_stop.set()
        if self._streams:
            await asyncio.wait(list(self._streams.values()), timeout=STREAM_FLUSH_S)
        listener, self._listener = self._listener, None
        if listener is not None:
            # asyncio.Server.close() trips over a connection it accepted in the same loop
            # turn but has not attached yet (AssertionError in _attach): stop accepting,
            # let those attach, then close.
            loop = asyncio.get_running_loop()
            for sock in listener.sockets:
                loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            # A restarting chip also drops connections still in their TLS handshake.
            listener.close_clients()
        for upgrade in list(self._upgrades):
            upgrade.cancel()
        if self._upgrades:
            await asyncio.wait(list(self._upgrades))

    def closed(self) -> bool:
        """Whether close() was called: the port stays shut from then on."""
        return self._closed

    async def close(self) -> None:
        """Stop serving for good: a reboot still under way cannot reopen the port.

        The device itself is closed by its owner."""
        self._closed = True
        await self.go_offline()

    # --- HTTP ----------------------------------------------------------------------------

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every endpoint needs `Authorization: Bearer <secret>`; nothing runs without it.

        Both sides are hashed first, so the comparison takes the same time whatever the
        supplied value's length and content."""
        self._tally.request(request.method, request.path)
        if self._runner is None:
            # Going offline (the chip restarts): a request on a kept-alive connection gets
            # no answer, its connection drops, as the restarting firmware's would.
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable  # never delivered: the connection is gone
        supplied = request.headers.get("Authorization", "")
        expected = f"Bearer {self.device.config.secret}"
        if not self.device.config.secret or not hmac.compare_digest(
            hashlib.sha256(supplied.encode()).digest(), hashlib.sha256(expected.encode()).digest()
        ):
            refusal = _error(401, UNAUTHORIZED, "missing or wrong device secret")
            refusal.headers["WWW-Authenticate"] = 'Bearer realm="esp-ota"'
            return refusal
        fault = await self._fault_before(request)
        try:
            response = await handler(request)
        except web.HTTPException as err:
            if err.status not in _HTTP_ERRORS:
                raise
            return _error(err.status, _HTTP_ERRORS[err.status], err.reason)
        if fault is ApiFault.CRASH:
            self.device.board.restart(ESP_RST_PANIC)
        if fault in (ApiFault.DROP, ApiFault.CRASH):
            self._drop(request)  # acted on, never answered
        return response

    async def _fault_before(self, request: web.Request) -> ApiFault | None:
        """The FaultPlan's API faults before the device acts: latency, the one-shot fault
        of its path (a stall or a power loss strike here; a drop or a crash after the
        device acted, which the caller does)."""
        faults = self.device.faults
        if faults.api_latency_s > 0:
            await asyncio.sleep(faults.api_latency_s)
        fault: ApiFault | None = None
        if faults.api_fault is not None and request.path == f"{API_PREFIX}{faults.api_fault_path}":
            fault = ApiFault(faults.api_fault)  # the command line sets it as a string
            faults.api_fault = faults.api_fault_path = None
        if fault is ApiFault.POWER_LOSS:
            self.device.board.restart(ESP_RST_POWERON)
            self._drop(request)
        if fault is ApiFault.STALL:
            await asyncio.sleep(faults.api_stall_seconds)
        if self._runner is None:
            self._drop(request)  # the chip restarted meanwhile: no answer, no action
        return fault

    @staticmethod
    def _drop(request: web.Request) -> NoReturn:
        """Close the request's connection without an answer."""
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPServiceUnavailable  # never delivered: the connection is gone

    async def _info(self, request: web.Request) -> web.Response:
        return await self._call(self.device.info)

    async def _ota_status(self, request: web.Request) -> web.Response:
        return web.json_response(_jsonable(self.device.ota_status()))

    async def _start_ota(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await request.read()
        except TimeoutError:
            # A firmware's server has one task: a body that does not arrive is dropped.
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPRequestTimeout from None  # never delivered: the connection is gone
        try:
            ota_request = decode_ota_request(raw)
        except (ValueError, TypeError, AttributeError) as err:
            return _error(400, "ESP_ERR_INVALID_ARG", f"bad OTA request: {err}")
        try:
            ota_id = await self.device.start_ota(ota_request)
        except DeviceRefusedError as err:
            return self._refused(err)
        return web.json_response({"ota_id": ota_id}, status=202)

    async def _abort(self, request: web.Request) -> web.Response:
        return await self._call(self.device.abort_ota)

    async def _confirm(self, request: web.Request) -> web.Response:
        return await self._call(self.device.confirm)

    async def _rollback(self, request: web.Request) -> web.Response:
        return await self._call(self.device.rollback)

    async def _reboot(self, request: web.Request) -> web.Response:
        return await self._call(self.device.reboot)

    async def _call(self, action: Callable[[], Any]) -> web.Response:
        """Run a device action; answer its result (or {"ok": true}) or its refusal."""
        try:
            result = action()
            if asyncio.iscoroutine(result):
                result = await result
        except DeviceRefusedError as err:
            return self._refused(err)
        return web.json_response(_jsonable(result) if result is not None else {"ok": True})

    @staticmethod
    def _refused(err: DeviceRefusedError) -> web.Response:
        status = 400 if err.error in _BAD_REQUEST_ERRORS else 409
        return _error(status, err.error, err.message)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events; `Last-Event-ID` replays what the client missed.

        The queue is subscribed before the replay is read, so nothing falls in between;
        an event both replayed and queued is sent once (ids only grow)."""
        queue = self.device.subscribe()
        stop = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None
        self._streams[stop] = task
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        sent_id = 0

        async def send(event: DeviceEvent) -> None:
            nonlocal sent_id
            if event.id > sent_id:
                sent_id = event.id
                await response.write(encode_event(event))

        try:
            await response.prepare(request)
            # Every stream starts with a comment: the client has its answer at once, even
            # when there is nothing to replay (a firmware's first chunk sends the headers).
            await response.write(b": connected\n\n")
            last_id = request.headers.get("Last-Event-ID", "")
            if last_id.isdigit():
                for event in self.device.events_since(int(last_id)):
                    await send(event)
            stopping = asyncio.ensure_future(stop.wait())
            getter: asyncio.Future[DeviceEvent] | None = None
            try:
                while not stop.is_set():
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, stopping},
                        # The heartbeat: a stream quiet this long gets `: keep-alive`.
                        timeout=self.device.config.event_heartbeat_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if getter in done:
                        await send(getter.result())
                        continue
                    getter.cancel()
                    if not done:
                        await response.write(b": keep-alive\n\n")
                        self._tally.keepalives_sent += 1
                while not queue.empty():  # going offline: what was emitted still goes out
                    await send(queue.get_nowait())
            finally:
                # Also when this handler is cancelled: leave no waiter behind.
                waiters = [f for f in (stopping, getter) if f is not None and not f.done()]
                for waiter in waiters:
                    waiter.cancel()
                if waiters:
                    await asyncio.wait(waiters)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self.device.unsubscribe(queue)
            self._streams.pop(stop, None)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def decode_ota_request(raw: bytes) -> OtaRequest:
    """The body of POST /api/v1/ota (strict UTF-8 JSON) as an OtaRequest. Raises ValueError,
    TypeError or AttributeError, naming the problem, when it is not that JSON: the API then
    answers 400 ESP_ERR_INVALID_ARG "bad OTA request: <problem>"."""
    body = json.loads(raw.decode())
    return OtaRequest(
        url=_field(body, "url", str),
        sha256=_field(body, "sha256", str),
        size=_field(body, "size", int),
        version=_field(body, "version", str),
        cert_pem=_field(body, "cert_pem", str),
        headers=_headers(body.get("headers", {})),
    )


def _field[T](body: Any, name: str, kind: type[T]) -> T:
    value = body[name] if isinstance(body, dict) and name in body else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{name} must be a {kind.__name__}")
    return value


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise TypeError("headers must be an object of strings")
    return dict(value)
