"""Serving stored firmware images to devices over HTTPS, as esp_https_ota pulls them.

Home Assistant runs one FirmwareServer on a port of its own. For each update it grants
one device access to one image: the grant's token goes into the OTA request's headers
(``Authorization: Bearer <token>``, set by the firmware on every download request) and is
valid for that image's path only, until it expires. The wire rules are in
docs/protocol.md ("Firmware download from Home Assistant").

Requests are answered as esp_https_ota expects: HEAD with Content-Length and
``Accept-Ranges: bytes``, single ranges (``bytes=0-0`` size probe, ``bytes=N-M`` chunks with
the end clamped to the file, ``bytes=N-`` resumption) with 206 and Content-Range, 416 past
the end. Files are read from disk in chunks in worker threads, one chunk ahead of the
socket, so memory stays constant whatever the image size and however many devices pull.

The port listens on the LAN and answers before any token is checked, so what a client
without one can hold is bounded by its BoundedListener (bounded_listener.py). A request
without a valid token is answered 401 and its connection closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from yarl import URL

from .bounded_listener import BoundedListener
from .certificates import ServerCertificate
from .firmware_store import StoredImage

_LOGGER = logging.getLogger(__name__)

PATH_PREFIX: Final = "/firmware/"
REALM: Final = "esp-ota-firmware"
# Bytes read from disk per worker-thread call and written per response.write, with the
# next chunk read while this one is encrypted and sent. Measured with 50 TLS clients
# (benchmarks/bench_firmware_server.py): 64 KiB already serves about 3x what aiohttp's
# FileResponse does over TLS, and 256 KiB adds little speed but about 1 MiB of memory per
# fast connection (the chunk, the one read ahead and its encrypted copy in the transport).
CHUNK_SIZE: Final = 64 * 1024
# Expired grants stay known this long (bytes_served still answers), then are dropped.
_EXPIRED_GRANT_RETENTION_S: Final = 3600.0


_RANGE: Final = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
# RFC 6750's b64token, ASCII only: a header's other bytes (Latin-1, undecodable UTF-8)
# never reach the lookup.
_BEARER: Final = re.compile(r"^\s*bearer\s+([A-Za-z0-9\-._~+/]+=*)\s*$", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for one device to download one image until `expires_at`.

    `path` is the URL path of the image (``/firmware/<sha256>.bin``); `expires_at` is a
    wall-clock time (``time.time()``) so a grant can be re-armed after a restart.
    """

    token: str
    path: str
    sha256: str
    device_id: str
    expires_at: float


@dataclass(slots=True)
class _GrantState:
    grant: Grant
    file: Path
    size: int
    bytes_served: int = 0


def _key(token: str) -> bytes:
    """What grants are looked up by: a digest, so lookups take no time that depends on
    how much of a guessed token is right."""
    return hashlib.sha256(token.encode()).digest()


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single byte range against a file of `size` bytes.

    Returns (start, end inclusive) with the end clamped to the file, or None when the
    range cannot be satisfied (416). Raises ValueError when the header is not one range
    this server reads (several ranges, another unit, last before first): such a header
    is ignored (200 and the whole file, as RFC 9110 allows).
    """
    match = _RANGE.match(header)
    if match is None:
        raise ValueError(f"not a single byte range: {header!r}")
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            raise ValueError(f"not a single byte range: {header!r}")
        suffix = int(last)  # bytes=-N: the last N bytes
        return (max(0, size - suffix), size - 1) if suffix and size else None
    start = int(first)
    if last and int(last) < start:
        raise ValueError(f"range ends before it starts: {header!r}")
    if start >= size:
        return None
    return start, min(int(last), size - 1) if last else size - 1


class FirmwareServer:
    """An HTTPS server of granted firmware images on its own port.

    `certificate` is what devices pin (pass ``cert_pem`` in the OTA request); it must cover
    the host the URL names (``ServerCertificate.covers``). `chunk_size` is how much is read
    and written at a time (benchmarks/bench_firmware_server.py compares values).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        certificate: ServerCertificate,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._host = host
        self._chunk_size = chunk_size
        self._requested_port = port
        self._certificate = certificate
        self._grants: dict[bytes, _GrantState] = {}
        self._listener = BoundedListener(self._handle)
        self._port: int | None = None

    # --- lifecycle --------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked). Only after start()."""
        if self._port is None:
            raise RuntimeError("the firmware server is not started")
        return self._port

    @property
    def cert_pem(self) -> str:
        """The certificate a device must pin (OTA request's cert_pem)."""
        return self._certificate.cert_pem

    @property
    def certificate(self) -> ServerCertificate:
        """The certificate new connections are served with."""
        return self._certificate

    @property
    def listening(self) -> bool:
        """Whether the server is started (close() stops it; start() again resumes)."""
        return self._listener.listening

    @property
    def connection_count(self) -> int:
        """Connections open now (from accept() until they are lost)."""
        return self._listener.connection_count

    async def start(self) -> None:
        """Listen (again after close(), with the grants kept). Raises OSError when the
        address cannot be bound."""
        if self._listener.listening:
            raise RuntimeError("the firmware server is already started")
        context = await asyncio.to_thread(self._certificate.ssl_context)
        await self._listener.start(self._host, self._requested_port, context)
        self._port = self._listener.port
        _LOGGER.debug("Firmware server listening on %s:%s", self._host, self._port)

    async def close(self) -> None:
        """Stop listening and end the downloads in progress. Grants are kept."""
        await self._listener.close()
        self._port = None

    async def set_certificate(self, certificate: ServerCertificate) -> None:
        """Serve `certificate` from the next handshake on (connections open keep theirs)."""
        await self._listener.set_context(certificate.ssl_context)
        self._certificate = certificate

    # --- grants -----------------------------------------------------------------

    def grant(
        self,
        image: StoredImage,
        *,
        device_id: str,
        ttl_s: float,
        token: str | None = None,
        expires_at: float | None = None,
    ) -> Grant:
        """Allow one device to download `image` for `ttl_s` seconds.

        Pass the `token` and `expires_at` of an earlier grant to re-arm it (after a
        restart: a device may still be downloading with it).
        """
        now = time.time()
        self._drop_expired(now)
        grant = Grant(
            token=token if token is not None else secrets.token_urlsafe(32),
            path=f"{PATH_PREFIX}{image.sha256}.bin",
            sha256=image.sha256,
            device_id=device_id,
            expires_at=expires_at if expires_at is not None else now + ttl_s,
        )
        key = _key(grant.token)
        previous = self._grants.get(key)
        served = previous.bytes_served if previous and previous.grant.path == grant.path else 0
        self._grants[key] = _GrantState(grant, image.path, image.size, served)
        _LOGGER.debug(
            "Granted %s to device %s for %.0f s",
            grant.path,
            device_id,
            grant.expires_at - now,
        )
        return grant

    def revoke(self, token: str) -> None:
        """End a grant: its token is refused from the next request on."""
        state = self._grants.pop(_key(token), None)
        if state is not None:
            _LOGGER.debug("Revoked the grant of device %s", state.grant.device_id)

    def url(self, grant: Grant, advertised_host: str) -> str:
        """The URL a device downloads from: https://<advertised_host>:<port>/firmware/..."""
        host = advertised_host.removeprefix("[").removesuffix("]")
        return str(URL.build(scheme="https", host=host, port=self.port, path=grant.path))

    @staticmethod
    def headers(grant: Grant) -> dict[str, str]:
        """The headers the device must send (the OTA request's headers)."""
        return {"Authorization": f"Bearer {grant.token}"}

    def bytes_served(self, token: str) -> int:
        """The highest end offset sent so far for the grant (0 if unknown): progress."""
        state = self._grants.get(_key(token))
        return state.bytes_served if state is not None else 0

    def has_live_grant(self) -> bool:
        """Whether any grant is unexpired and not revoked: a device may still download."""
        now = time.time()
        return any(state.grant.expires_at > now for state in self._grants.values())

    def _drop_expired(self, now: float) -> None:
        cutoff = now - _EXPIRED_GRANT_RETENTION_S
        for key in [k for k, s in self._grants.items() if s.grant.expires_at < cutoff]:
            del self._grants[key]

    # --- requests ---------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self._authorized(request)
        if state is None:
            refused = web.Response(
                status=401,
                text="a valid download token is required\n",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            )
            # Without a token a client has nothing to ask for next: its connection goes.
            refused.force_close()
            return refused
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        if request.path != state.grant.path:
            # The token is good but grants another image: "not found" for this grant,
            # nothing said about other images, and no credentials asked for again.
            _LOGGER.debug(
                "Device %s asked for %s outside its grant", state.grant.device_id, request.path
            )
            return web.Response(status=404, text="not found\n")
        return await self._serve(request, state)

    def _authorized(self, request: web.BaseRequest) -> _GrantState | None:
        match = _BEARER.match(request.headers.get("Authorization", ""))
        if match is None:
            _LOGGER.debug("Refused %s %s: no download token", request.method, request.path)
            return None
        state = self._grants.get(_key(match.group(1)))
        if state is None or time.time() >= state.grant.expires_at:
            _LOGGER.debug(
                "Refused %s %s: unknown or expired download token", request.method, request.path
            )
            return None
        return state

    async def _serve(self, request: web.BaseRequest, state: _GrantState) -> web.StreamResponse:
        size = state.size
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "ETag": f'"{state.grant.sha256}"',
            "Cache-Control": "no-store",
        }
        status, start, end = 200, 0, size - 1
        range_header = request.headers.get("Range")
        if range_header is not None:
            try:
                parsed = parse_range(range_header, size)
            except ValueError:
                parsed = (start, end)  # ignored: the whole file
            else:
                if parsed is None:
                    headers["Content-Range"] = f"bytes */{size}"
                    return web.Response(status=416, headers=headers)
                status = 206
                headers["Content-Range"] = f"bytes {parsed[0]}-{parsed[1]}/{size}"
            start, end = parsed
        length = end - start + 1
        _LOGGER.debug(
            "%s %s bytes %d-%d/%d (%d) to device %s",
            request.method,
            state.grant.path,
            start,
            end,
            size,
            status,
            state.grant.device_id,
        )
        try:
            descriptor = await asyncio.to_thread(os.open, state.file, os.O_RDONLY)
        except OSError as err:
            # The store lost the file (evicted although granted?): nothing to serve.
            _LOGGER.warning("Granted firmware %s cannot be read: %s", state.file.name, err)
            return web.Response(status=404, text="not found\n")
        try:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = length
            await response.prepare(request)
            if request.method == "GET":
                try:
                    sent = await self._send(response, descriptor, start, length, state)
                except ConnectionError as err:
                    # The device hung up mid-body (power loss, a dropped link, an abort):
                    # routine, and it resumes with a Range request. aiohttp would log it
                    # as a 500 with a traceback, once per dropped download.
                    _LOGGER.debug("Device %s hung up: %s", state.grant.device_id, err)
                    return response
                if not sent:
                    # The file shrank under us (it should not: the store pins it). Close
                    # rather than end the body, so the device sees the download break.
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write_eof()
            return response
        finally:
            await asyncio.to_thread(os.close, descriptor)

    async def _send(
        self,
        response: web.StreamResponse,
        descriptor: int,
        start: int,
        length: int,
        state: _GrantState,
    ) -> bool:
        """Send `length` bytes from `start`, reading the next chunk while this one goes.

        Returns False when the file ended early.
        """
        offset, end, chunk_size = start, start + length, self._chunk_size
        pending = asyncio.ensure_future(
            asyncio.to_thread(os.pread, descriptor, min(chunk_size, end - offset), offset)
        )
        try:
            while True:
                chunk = await pending
                if not chunk:
                    return False
                offset += len(chunk)
                if offset < end:
                    pending = asyncio.ensure_future(
                        asyncio.to_thread(
                            os.pread, descriptor, min(chunk_size, end - offset), offset
                        )
                    )
                await response.write(chunk)
                state.bytes_served = max(state.bytes_served, offset)
                if offset >= end:
                    return True
        finally:
            # A read still running in its thread (the device hung up) is waited for, not
            # abandoned: the descriptor is closed after this returns.
            await asyncio.gather(pending, return_exceptions=True)
