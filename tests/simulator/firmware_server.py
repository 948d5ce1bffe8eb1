"""A small HTTPS firmware file server for tests: what a device downloads from.

Real TLS on 127.0.0.1 with a self-signed certificate (IP SAN 127.0.0.1), HEAD and single
Range requests (206 + Content-Range, end clamped to the file, 416 past it), and switches for
the server behaviours esp_https_ota must cope with: redirects (also to plain http), 401 with
Basic auth, 403/404/304/500, HEAD refused, Range ignored (200), chunked bodies. Every request
is logged so tests can assert the exact headers a device sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import re
import ssl
from dataclasses import dataclass, field

from aiohttp import web

from custom_components.esp_ota.espota import certificates

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class ServerCertificate(certificates.ServerCertificate):
    """The library's server certificate, under the method name these tests use."""

    __slots__ = ()

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a server presenting this certificate."""
        return self.ssl_context()


def make_certificate(
    common_name: str = "esp-ota test server", *, ca: bool = True
) -> ServerCertificate:
    """A self-signed certificate valid for 127.0.0.1 (IP SAN), as a LAN server would have
    (`ca=False`: a plain leaf, as some tools make them)."""
    made = certificates.make_server_certificate(
        ["127.0.0.1"], common_name=common_name, ca=ca, validity=datetime.timedelta(days=30)
    )
    return ServerCertificate(made.cert_pem, made.key_pem)


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the server saw."""

    method: str
    path: str
    range: str | None
    authorization: str | None
    headers: dict[str, str]


@dataclass(slots=True)
class ServerBehaviour:
    """Switches: change them between or during requests."""

    redirect_hops: int = 0  # answer this many redirects before serving
    redirect_status: int = 302
    redirect_to_http: bool = False  # the last redirect points at plain http://
    redirect_location: str | None = None  # explicit Location (wins over the above)
    basic_auth: tuple[str, str] | None = None  # require these credentials (401 otherwise)
    auth_challenge: str | None = 'Basic realm="firmware"'  # WWW-Authenticate of the 401
    status: int | None = None  # answer every GET with this status (403, 404, 304, 500 ...)
    head_status: int | None = None  # answer HEAD with this status (e.g. 405)
    support_range: bool = True  # False: Range is ignored, 200 with the whole file
    chunked: bool = False  # send bodies without Content-Length
    head_without_length: bool = False  # HEAD 200 without Content-Length
    header_delay_s: float = 0.0  # wait this long before answering anything
    drop_before_headers: bool = False  # close the connection instead of answering
    cut_body_at: int | None = None  # once: close the connection at this file offset
    refuse_ranges: set[str] = field(default_factory=set)  # 416 for these Range headers
    fail_after_requests: int | None = None  # 500 for every request after this many


@dataclass(slots=True)
class FirmwareServer:
    """A running HTTPS firmware server."""

    certificate: ServerCertificate
    runner: web.AppRunner
    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[LoggedRequest] = field(default_factory=list)
    behaviour: ServerBehaviour = field(default_factory=ServerBehaviour)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def cert_pem(self) -> str:
        """The certificate a device must pin."""
        return self.certificate.cert_pem

    @property
    def base_url(self) -> str:
        """https://127.0.0.1:<port>"""
        return f"https://127.0.0.1:{self.port}"

    def add(self, path: str, data: bytes) -> str:
        """Serve `data` at `path`; returns its URL."""
        self.files[path] = data
        return f"{self.base_url}{path}"

    def ranges(self, method: str = "GET") -> list[str | None]:
        """The Range header of every request with this method, in order."""
        return [r.range for r in self.requests if r.method == method]

    async def close(self) -> None:
        """Stop serving."""
        self.closing.set()
        await self.runner.cleanup()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) clamped to the file; None if unsatisfiable."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _redirect(server: FirmwareServer, request: web.Request) -> web.Response | None:
    behaviour = server.behaviour
    hop = int(request.query.get("hop", "0"))
    if hop >= behaviour.redirect_hops:
        return None
    if behaviour.redirect_location is not None:
        location = behaviour.redirect_location
    else:
        last = hop + 1 == behaviour.redirect_hops
        origin = f"http://127.0.0.1:{server.port}" if behaviour.redirect_to_http and last else ""
        location = f"{origin}{request.path}?hop={hop + 1}"
    return web.Response(status=behaviour.redirect_status, headers={"Location": location})


def _refusal(server: FirmwareServer, request: web.Request) -> web.Response | None:
    """401 without the right credentials, or a forced status."""
    behaviour = server.behaviour
    if behaviour.fail_after_requests is not None and (
        len(server.requests) > behaviour.fail_after_requests
    ):
        return web.Response(status=500, text="too many requests")
    if behaviour.basic_auth is not None:
        user, password = behaviour.basic_auth
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            challenge = behaviour.auth_challenge
            return web.Response(
                status=401, headers={"WWW-Authenticate": challenge} if challenge else {}
            )
    if request.method == "HEAD" and behaviour.head_status is not None:
        return web.Response(status=behaviour.head_status)
    if behaviour.status is not None:
        return web.Response(status=behaviour.status, text=f"status {behaviour.status}")
    if request.path not in server.files:
        return web.Response(status=404, text="not found")
    return None


async def _serve_file(server: FirmwareServer, request: web.Request) -> web.StreamResponse:
    behaviour = server.behaviour
    data = server.files[request.path]
    size = len(data)
    status = 200
    start, end = 0, size - 1
    range_header = request.headers.get("Range")
    headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    if range_header is not None and behaviour.support_range:
        parsed = _parse_range(range_header, size)
        if range_header in behaviour.refuse_ranges:
            parsed = None
        if parsed is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
        start, end = parsed
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    body = memoryview(data)[start : end + 1]  # no copy: a fleet downloads at once
    head = request.method == "HEAD"
    if head and not behaviour.head_without_length:
        headers["Content-Length"] = str(len(body))
    response = web.StreamResponse(status=status, headers=headers)
    if (head and behaviour.head_without_length) or (not head and behaviour.chunked):
        response.enable_chunked_encoding()
    elif not head:
        response.content_length = len(body)
    await response.prepare(request)
    if not head:
        view = body
        if behaviour.cut_body_at is not None:
            view = view[: max(0, behaviour.cut_body_at - start)]
        for offset in range(0, len(view), 16384):
            await response.write(view[offset : offset + 16384])
        if len(view) < len(body) and request.transport is not None:
            behaviour.cut_body_at = None  # one-shot
            request.transport.close()  # the server dies mid-body
            return response
        await response.write_eof()
    return response


async def start_firmware_server(certificate: ServerCertificate | None = None) -> FirmwareServer:
    """Start a server on 127.0.0.1 (an ephemeral port)."""
    certificate = certificate or make_certificate()
    app = web.Application()
    server_ref: list[FirmwareServer] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        server = server_ref[0]
        server.requests.append(
            LoggedRequest(
                method=request.method,
                path=request.path_qs,
                range=request.headers.get("Range"),
                authorization=request.headers.get("Authorization"),
                headers=dict(request.headers),
            )
        )
        if server.behaviour.header_delay_s:
            # Interrupted by close(), so a test never leaves a sleeping handler behind.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.closing.wait(), server.behaviour.header_delay_s)
        if server.behaviour.drop_before_headers and request.transport is not None:
            request.transport.close()
            return web.Response(status=500)
        answer = _redirect(server, request) or _refusal(server, request)
        if answer is not None:
            return answer
        return await _serve_file(server, request)

    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=certificate.server_context())
    await site.start()
    port = runner.addresses[0][1]
    server = FirmwareServer(certificate=certificate, runner=runner, port=port)
    server_ref.append(server)
    return server
