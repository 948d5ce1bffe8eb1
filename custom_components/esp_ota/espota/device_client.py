"""Async transport client of the device API (protocol v1, docs/protocol.md): HTTPS with
a pinned certificate, and the event stream's framing. The models are protocol.py's.

The aiohttp session is injected. The device's self-signed certificate is pinned by the
SHA-256 fingerprint of its DER encoding: `fetch_certificate_fingerprint()` reads it once
(trust on first use), and every later request refuses any other certificate.

A device is a peer on the network, not trusted with Home Assistant's memory or its event
loop: an answer's body is read up to MAX_ANSWER_BYTES (an event up to MAX_EVENT_BYTES),
never as a whole, within the request's timeout, and decoded by json_reader.decode_json.
Whatever it answers, the client raises DeviceError's types only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import aiohttp
from aiohttp import http_exceptions

from .errors import (
    CertificateMismatchError,
    DeviceBusyError,
    DeviceError,
    DeviceProtocolError,
    DeviceRefusedError,
    DeviceTimeoutError,
    DeviceUnauthorizedError,
    DeviceUnreachableError,
)
from .json_reader import decode_json
from .protocol import (
    API_PREFIX,
    ESP_ERR_INVALID_STATE,
    EVENT_HEARTBEAT_S,
    DeviceEvent,
    DeviceInfo,
    OtaStatus,
    parse_device_event,
    parse_device_info,
    parse_ota_status,
    parse_refusal,
    parse_started,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 10.0
# The largest answer of protocol v1 is GET /api/v1/info's, 2560 bytes at most (the C
# agent's buffer for it, every string escaped at worst; a usual one is 600 bytes). 64 KiB
# leaves 25 times that for a firmware's longer names and messages, and is what a device
# can make Home Assistant hold for one answer (docs/protocol.md, "Endpoints").
MAX_ANSWER_BYTES: Final = 64 * 1024
# A stream silent for two heartbeats is dead (the device froze, or the network between us
# went away without a word): give it up, reconnect, and let the caller check the device.
EVENT_STREAM_READ_TIMEOUT: Final = 2 * EVENT_HEARTBEAT_S
# An event is a few hundred bytes; anything this large is not protocol v1.
MAX_EVENT_BYTES: Final = 64 * 1024
EVENT_RECONNECT_MIN_S: Final = 0.5
EVENT_RECONNECT_MAX_S: Final = 30.0
# A stream that lived this long was a good one: the next reconnection starts with the
# shortest pause again. One that ends sooner (a device that takes the stream and drops
# it) keeps the pause growing, so it never costs a TLS handshake every half second.
EVENT_STREAM_SETTLED_S: Final = EVENT_HEARTBEAT_S


def _read_only_tls() -> ssl.SSLContext:
    """A client context that accepts any certificate, only to read it (trust on first use).

    Built without loading CA files (nothing is verified), so making it does no blocking
    I/O, unlike ssl.create_default_context()."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_READ_ONLY_TLS: Final = _read_only_tls()


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The `data` of each server-sent event (comments, `id:` and `event:` lines skipped:
    the JSON repeats id and type); several data lines join with newlines, as the SSE
    format says. Bytes: the JSON's decoding checks they are UTF-8."""
    data: list[bytes] = []
    size = 0
    while raw_line := await content.readline(max_line_length=MAX_EVENT_BYTES):
        line = raw_line.rstrip(b"\r\n")
        if line:
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(value.removeprefix(b" "))
                size += len(raw_line)
                if size > MAX_EVENT_BYTES:
                    raise DeviceProtocolError(
                        f"events: an event larger than {MAX_EVENT_BYTES} bytes"
                    )
            continue
        if data:
            yield b"\n".join(data)
        data, size = [], 0


async def _read_answer(response: aiohttp.ClientResponse, what: str) -> bytes:
    """The body, read as it comes and never past MAX_ANSWER_BYTES: an endless or dripping
    body costs that much memory at most, and the request's timeout."""
    declared = response.content_length
    if declared is not None and declared > MAX_ANSWER_BYTES:
        raise DeviceProtocolError(
            f"{what}: a body of {declared} bytes (answers are {MAX_ANSWER_BYTES} at most)"
        )
    body = bytearray()
    while chunk := await response.content.read(MAX_ANSWER_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise DeviceProtocolError(
                f"{what}: a body larger than {MAX_ANSWER_BYTES} bytes, the most an answer is"
            )
    return bytes(body)


class DeviceClient:
    """Talks to one device over HTTPS, pinned to its certificate."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        host: str,
        port: int,
        secret: str,
        *,
        cert_fingerprint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._session = session
        self.host = host
        self.port = port
        self._secret = secret
        self.cert_fingerprint = cert_fingerprint
        self._timeout = timeout

    @property
    def base_url(self) -> str:
        """https://host:port/api/v1."""
        return f"https://{self.host}:{self.port}{API_PREFIX}"

    async def fetch_certificate_fingerprint(self) -> str:
        """Connect once, read the device's certificate and return its SHA-256 (hex).

        This is the trust-on-first-use step: the caller shows or stores the value and
        passes it as `cert_fingerprint` from then on.
        """
        try:
            async with asyncio.timeout(self._timeout):
                _, writer = await asyncio.open_connection(self.host, self.port, ssl=_READ_ONLY_TLS)
        except TimeoutError as err:
            raise DeviceTimeoutError(f"{self.host}:{self.port} did not answer") from err
        except (OSError, ssl.SSLError) as err:
            raise DeviceUnreachableError(f"cannot reach {self.host}:{self.port}: {err}") from err
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        finally:
            writer.close()
            await writer.wait_closed()
        if not der:
            raise DeviceProtocolError(f"{self.host}:{self.port} presented no certificate")
        return hashlib.sha256(der).hexdigest()

    def _ssl(self) -> aiohttp.Fingerprint:
        if not self.cert_fingerprint:
            raise CertificateMismatchError(
                "no certificate is pinned: call fetch_certificate_fingerprint() first"
            )
        # Also accept openssl's spelling (AB:CD:...) of the same 32 bytes.
        try:
            digest = bytes.fromhex(self.cert_fingerprint.replace(":", ""))
        except ValueError:
            digest = b""
        if len(digest) != hashlib.sha256().digest_size:
            raise CertificateMismatchError(
                f"the pinned fingerprint {self.cert_fingerprint!r} is not a SHA-256 in hex"
            )
        return aiohttp.Fingerprint(digest)

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        # identity: bodies are read undecoded (auto_decompress=False), so a compressed one
        # could not inflate past the cap; no device compresses anyway.
        return {
            "Authorization": f"Bearer {self._secret}",
            "Accept-Encoding": "identity",
            **(extra or {}),
        }

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            async with self._session.request(
                method,
                url,
                json=body,
                # The event stream is the one connection kept open: an idle pooled TLS
                # session would hold one of the few sockets (and tens of KB of RAM) an
                # ESP32's HTTPS server has, and 256 KiB of buffers here, per device.
                headers=self._headers({"Connection": "close"}),
                ssl=self._ssl(),
                # The total bounds the body's reading too: a dripping body ends there.
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                # A device answers, it never sends the client (and its secret) elsewhere.
                allow_redirects=False,
                auto_decompress=False,
            ) as response:
                status = response.status
                if status == 401:
                    raise DeviceUnauthorizedError(f"{self.host} refused the device secret")
                what = f"{method} {path}: HTTP {status}"
                if not 200 <= status < 300 and status < 400:
                    raise DeviceProtocolError(f"{what}, not an answer of protocol v1")
                data = decode_json(await _read_answer(response, what), what, DeviceProtocolError)
                if not isinstance(data, dict):
                    raise DeviceProtocolError(f"{what}: expected a JSON object")
                if status >= 400:
                    raise self._refusal(method, path, status, data)
                return data
        except aiohttp.ServerFingerprintMismatch as err:
            raise CertificateMismatchError(
                f"{self.host} presented a certificate other than the pinned one"
            ) from err
        except TimeoutError as err:
            raise DeviceTimeoutError(f"{self.host} did not answer {method} {path}") from err
        except (aiohttp.ClientError, OSError) as err:
            raise DeviceUnreachableError(f"cannot reach {self.host}:{self.port}: {err}") from err

    @staticmethod
    def _refusal(method: str, path: str, status: int, data: Any) -> DeviceError:
        error, message = parse_refusal(data, f"{method} {path}")
        if status == 409 and error == ESP_ERR_INVALID_STATE and path == "/ota":
            return DeviceBusyError(error, message)
        return DeviceRefusedError(error, message)

    async def info(self) -> DeviceInfo:
        """Identity and state."""
        return parse_device_info(await self._request("GET", "/info"))

    async def ota_status(self) -> OtaStatus:
        """The current or last OTA job."""
        return parse_ota_status(await self._request("GET", "/ota"))

    async def start_ota(
        self,
        *,
        url: str,
        sha256: str,
        size: int,
        version: str,
        cert_pem: str,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Have the device pull an image; returns the job's id at once."""
        body = {
            "url": url,
            "sha256": sha256,
            "size": size,
            "version": version,
            "cert_pem": cert_pem,
            "headers": dict(headers or {}),
        }
        return parse_started(await self._request("POST", "/ota", body))

    async def abort_ota(self) -> None:
        """Stop the running download (esp_https_ota_abort)."""
        await self._request("POST", "/ota/abort")

    async def confirm(self) -> None:
        """Mark the running image valid (esp_ota_mark_app_valid_cancel_rollback)."""
        await self._request("POST", "/ota/confirm")

    async def rollback(self) -> None:
        """Mark the running image invalid and reboot into the other one."""
        await self._request("POST", "/ota/rollback")

    async def reboot(self) -> None:
        """Restart the device (esp_restart)."""
        await self._request("POST", "/reboot")

    def _session_closed(self) -> bool:
        """Whether the injected session was closed (read anew at every call)."""
        return self._session.closed

    async def events(
        self, *, reconnect: bool = True, on_stream: Callable[[bool], None] | None = None
    ) -> AsyncIterator[DeviceEvent]:
        """The device's events, as they happen.

        With `reconnect`, a dropped stream (a reboot, a network blip, a device silent for
        two heartbeats) is reopened after a pause that doubles from EVENT_RECONNECT_MIN_S
        up to EVENT_RECONNECT_MAX_S (back to the minimum after a stream that lived
        EVENT_STREAM_SETTLED_S),
        and `Last-Event-ID` asks the device for what was missed. Authentication and
        certificate errors always end the stream. It ends quietly when the injected
        session is closed (Home Assistant shutting down). To stop it otherwise, leave the
        `async for` (wrap it in `contextlib.aclosing` to close the connection at once) or
        cancel the task iterating it.

        `on_stream(up)` tells when the stream changes between up and down: True when a
        stream is accepted (the first, or one after a gap: the device may have changed
        meanwhile, and a restart empties its event ring, so no event tells); False when
        it ends, or when the first one cannot be opened. Failed attempts in a row while
        it is down say nothing more.
        """
        last_id: int | None = None
        pause = EVENT_RECONNECT_MIN_S
        up: bool | None = None  # unknown until the first attempt
        accepted_at: float | None = None

        def tell(now_up: bool) -> None:
            nonlocal up, accepted_at
            if now_up:
                accepted_at = time.monotonic()
            if up is not now_up:
                up = now_up
                if on_stream is not None:
                    on_stream(now_up)

        while not self._session_closed():
            try:
                async for event in self._event_stream(last_id, lambda: tell(True)):
                    last_id = event.id
                    yield event
                if not reconnect:
                    return
            except DeviceUnreachableError, DeviceProtocolError:
                if self._session_closed():
                    return  # the stream broke because its session was closed
                if not reconnect:
                    raise
            tell(False)
            if accepted_at is not None and time.monotonic() - accepted_at >= EVENT_STREAM_SETTLED_S:
                pause = EVENT_RECONNECT_MIN_S
            accepted_at = None
            _LOGGER.debug("%s: event stream ended; reconnecting in %.2f s", self.host, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, EVENT_RECONNECT_MAX_S)

    async def _event_stream(
        self, last_id: int | None, connected: Callable[[], None]
    ) -> AsyncIterator[DeviceEvent]:
        extra = {"Accept": "text/event-stream"}
        if last_id is not None:
            extra["Last-Event-ID"] = str(last_id)
        try:
            async with self._session.get(
                f"{self.base_url}/events",
                headers=self._headers(extra),
                ssl=self._ssl(),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout, sock_read=EVENT_STREAM_READ_TIMEOUT
                ),
                allow_redirects=False,
                auto_decompress=False,
            ) as response:
                if response.status == 401:
                    raise DeviceUnauthorizedError(f"{self.host} refused the device secret")
                if response.status != 200:
                    raise DeviceProtocolError(f"events: HTTP {response.status}")
                connected()
                async for data in _sse_data(response.content):
                    yield self._decode_event(data)
        except aiohttp.ServerFingerprintMismatch as err:
            raise CertificateMismatchError(
                f"{self.host} presented a certificate other than the pinned one"
            ) from err
        except TimeoutError as err:
            raise DeviceTimeoutError(f"{self.host}: the event stream went silent") from err
        except (ValueError, http_exceptions.HttpProcessingError) as err:
            # aiohttp's reader refuses a line longer than MAX_EVENT_BYTES (LineTooLong).
            raise DeviceProtocolError(f"events: unreadable stream: {err}") from err
        except (aiohttp.ClientError, OSError) as err:
            raise DeviceUnreachableError(f"event stream of {self.host} broke: {err}") from err
        except RuntimeError as err:
            # aiohttp's "Connection closed." / "Session is closed": the session went away.
            if not self._session_closed():
                raise
            raise DeviceUnreachableError(f"event stream of {self.host}: session closed") from err

    @staticmethod
    def _decode_event(data: bytes) -> DeviceEvent:
        return parse_device_event(decode_json(data, "event data", DeviceProtocolError))
