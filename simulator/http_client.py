"""esp_http_client (ESP-IDF components/esp_http_client) as esp_https_ota uses it.

One HTTPS request at a time, each on a new connection (esp_https_ota closes the client
between partial requests), with aiohttp underneath. Like ESP-IDF it pins the configured
certificate only, follows redirects and Basic auth itself, and reads bodies the way
esp_http_client_read does: a read timeout is EAGAIN, not an error. Fault injection
(simulator/faults.py) acts on the bytes it receives, so it works against any server.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Final

import aiohttp
from yarl import URL

from custom_components.esp_ota.espota.certificates import make_server_certificate

from .esp_err import (
    ESP_ERR_HTTP_CONNECT,
    ESP_ERR_HTTP_EAGAIN,
    ESP_ERR_HTTP_MAX_REDIRECT,
    ESP_ERR_HTTP_REDIRECT_DOWNGRADE,
    ESP_ERR_INVALID_ARG,
    ESP_ERR_NOT_SUPPORTED,
    ESP_FAIL,
    EspError,
)
from .faults import FaultPlan
from .pace import LAN_RECEIVE_BYTES_PER_S, Timing

USER_AGENT: Final = "ESP32 HTTP Client/1.0"  # esp_http_client's default User-Agent
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# How often a throttled receive yields bytes (keeps slow links smooth, not bursty).
_PACE_SLICE_S: Final = 0.05
_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class HttpClientConfig:
    """esp_http_client_config_t: the fields a firmware sets for an OTA download.

    url and cert_pem come with each download; the defaults of the others are ESP-IDF's.
    """

    url: str = ""
    cert_pem: str = ""  # the one certificate trusted (pinned)
    timeout_ms: int = 5000  # DEFAULT_TIMEOUT_MS
    max_redirection_count: int = 10  # DEFAULT_MAX_REDIRECT
    max_authorization_retries: int = 10  # DEFAULT_MAX_AUTH_RETRIES
    # DEFAULT_HTTP_BUF_SIZE; esp_https_ota reads (and writes, and emits WRITE_FLASH for)
    # max(buffer_size, 1024) bytes per esp_https_ota_perform call.
    buffer_size: int = 512


class EspTransportError(EspError):
    """The connection broke or closed early while receiving: worth a resumed attempt."""


class EagainError(Exception):
    """esp_http_client_read timed out before any data was ready (-ESP_ERR_HTTP_EAGAIN)."""


# --- TLS ------------------------------------------------------------------------------------


def pinned_ssl_context(cert_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly `cert_pem` (esp_http_client_config_t.cert_pem).

    Like mbedTLS, any pinned certificate is a trust anchor (a leaf or an intermediate, not
    only a self-signed root), the host name is checked, and OpenSSL's extra strictness
    (VERIFY_X509_STRICT) is off. Raises EspError(ESP_ERR_INVALID_ARG) for unusable PEM.
    """
    try:
        context = ssl.create_default_context(cadata=cert_pem)
    except (ssl.SSLError, ValueError) as err:
        raise EspError(ESP_ERR_INVALID_ARG, f"cert_pem is not a usable certificate: {err}") from err
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


@cache
def unrelated_certificate_pem() -> str:
    """A valid certificate no server uses: what a device with the wrong pin trusts."""
    return make_server_certificate(["not-your-server"], common_name="not-your-server").cert_pem


# --- esp_http_client --------------------------------------------------------------------


def _content_range_total(value: str | None) -> int:
    """esp_http_client_get_content_range: the size after '/', -1 when absent."""
    if value is None:
        return -1
    match = _CONTENT_RANGE.match(value)
    return int(match.group(1)) if match else -1


def _content_range_start(value: str | None) -> int:
    if value is None:
        return 0
    match = re.match(r"^\s*bytes\s+(\d+)-", value, re.IGNORECASE)
    return int(match.group(1)) if match else 0


class EspHttpClient:
    """esp_http_client as esp_https_ota uses it, one request at a time, each on a new
    connection (esp_https_ota closes the client between partial requests)."""

    def __init__(self, config: HttpClientConfig, *, timing: Timing, faults: FaultPlan) -> None:
        """esp_http_client_init: nothing is sent yet."""
        parsed = URL(config.url)
        if parsed.scheme != "https" or not parsed.host:
            raise EspError(ESP_ERR_INVALID_ARG, f"not an https URL: {config.url}")
        self.credentials = (
            (parsed.user or "", parsed.password or "") if parsed.user is not None else None
        )
        self.url = parsed.with_user(None)
        self.config = config
        self.timing = timing
        self.faults = faults
        pem = unrelated_certificate_pem() if faults.wrong_certificate else config.cert_pem
        self.ssl_context = pinned_ssl_context(pem)
        self.custom_headers: dict[str, str] = {}
        self.method = "GET"
        self.range_header: str | None = None
        self.basic_auth = False
        self.redirect_counter = 0
        self.auth_retries_left = config.max_authorization_retries
        self.status = -1
        self.response_headers: Mapping[str, str] = {}
        self.content_length = -1
        self.body_file_offset = 0  # file offset of this response's first body byte
        self.received = 0
        self._eof = False
        self._handshakes = 0
        self._last_data = time.monotonic()
        self._stall_until: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._response: aiohttp.ClientResponse | None = None

    def set_header(self, name: str, value: str) -> None:
        """esp_http_client_set_header: sent with every request from now on."""
        self.custom_headers[name] = value

    @property
    def timeout_s(self) -> float:
        """esp_http_client_config_t.timeout_ms in seconds."""
        return self.config.timeout_ms / 1000

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context, force_close=True, limit=1),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    # -- connection --

    async def close(self) -> None:
        """esp_http_client_close: drop the current connection."""
        response, self._response = self._response, None
        if response is not None:
            response.close()

    async def cleanup(self) -> None:
        """esp_http_client_cleanup: close everything."""
        await self.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self) -> int:
        """Open a connection, send the request, read the response headers; the status."""
        await self.close()
        if self._session is None:
            self._session = self._new_session()
        await self.timing.tls_handshake(resumed=self._handshakes > 0)
        self._handshakes += 1
        await self.timing.request()
        headers = {"User-Agent": USER_AGENT, **self.custom_headers}
        if self.range_header is not None:
            headers["Range"] = self.range_header
        if self.basic_auth and self.credentials is not None:
            user, password = self.credentials
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            # esp_http_client_open (connect, timeout_ms), then fetch_headers (reads of up to
            # timeout_ms each): allow twice the timeout for both before calling it EAGAIN.
            async with asyncio.timeout(2 * self.timeout_s):
                response = await self._session.request(
                    self.method, self.url, headers=headers, allow_redirects=False
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, ssl.SSLError) as err:
            raise EspError(ESP_ERR_HTTP_CONNECT, f"Failed to open HTTP connection: {err}") from err
        except aiohttp.ClientError as err:
            raise EspError(ESP_FAIL, f"failed to read the response headers: {err}") from err
        except TimeoutError as err:
            raise EspError(
                ESP_ERR_HTTP_EAGAIN, "Connection timed out before data was ready!"
            ) from err
        self._response = response
        self.status = response.status
        self.response_headers = response.headers
        self.content_length = response.content_length if response.content_length is not None else -1
        if self.method == "HEAD":
            self.content_length = (
                int(response.headers["Content-Length"])
                if response.headers.get("Content-Length", "").isdigit()
                else -1
            )
        self.body_file_offset = (
            _content_range_start(response.headers.get("Content-Range")) if self.status == 206 else 0
        )
        self.received = 0
        self._eof = self.method == "HEAD"
        self._last_data = time.monotonic()
        return self.status

    def content_range_total(self) -> int:
        """esp_http_client_get_content_range."""
        return _content_range_total(self.response_headers.get("Content-Range"))

    def set_redirection(self) -> None:
        """esp_http_client_set_redirection."""
        location = self.response_headers.get("Location")
        if not location:
            raise EspError(ESP_ERR_INVALID_ARG, f"HTTP {self.status} without a Location header")
        target = self.url.join(URL(location))
        if self.url.scheme == "https" and target.scheme != "https":
            raise EspError(
                ESP_ERR_HTTP_REDIRECT_DOWNGRADE,
                f"HTTPS origin can only redirect to https:// targets (got {location})",
            )
        if self.redirect_counter >= self.config.max_redirection_count:
            raise EspError(
                ESP_ERR_HTTP_MAX_REDIRECT,
                f"Error, reach max_redirection_count count={self.redirect_counter}",
            )
        if target.user is not None:
            self.credentials = (target.user or "", target.password or "")
        self.url = target.with_user(None)
        self.redirect_counter += 1

    def add_auth(self) -> None:
        """esp_http_client_add_auth after a 401 (Basic only: Digest is a Kconfig option)."""
        if self.auth_retries_left <= 0:
            raise EspError(ESP_FAIL, "Reached max_authorization_retries (401)")
        self.auth_retries_left -= 1
        challenge = self.response_headers.get("WWW-Authenticate")
        if not challenge:
            raise EspError(
                ESP_ERR_NOT_SUPPORTED,
                "This request requires authentication, but does not provide header "
                "information for that",
            )
        if not challenge.strip().lower().startswith("basic"):
            raise EspError(
                ESP_ERR_NOT_SUPPORTED,
                f"This authentication method is not supported: {challenge}",
            )
        self.basic_auth = True

    async def flush(self) -> None:
        """Discard the rest of the body (what esp_https_ota does before re-requesting)."""
        if self._response is not None:
            self._response.release()

    async def perform(self) -> int:
        """esp_http_client_perform: one request with redirects and auth followed; the body
        is discarded. Returns the final status."""
        while True:
            status = await self.send()
            if 200 <= status < 300:
                self.redirect_counter = 0
            elif status in REDIRECT_STATUSES:
                self.set_redirection()
                continue
            elif status == 401:
                self.add_auth()
                continue
            await self.flush()
            return status

    # -- body --

    def is_complete_data_received(self) -> bool:
        """esp_http_client_is_complete_data_received."""
        if self.content_length >= 0:
            return self.received >= self.content_length
        return self._eof

    def stalled_for(self) -> float:
        """Seconds since the last body byte arrived."""
        return time.monotonic() - self._last_data

    async def _apply_stream_faults(self, offset: int, limit: int) -> int | None:
        """Truncation, drop and stall at file offsets: the new read limit, or None when the
        body ends here (truncation). Raises EspTransportError for a dropped connection."""
        faults = self.faults
        if faults.truncate_at_byte is not None:
            if offset >= faults.truncate_at_byte:
                await self.close()
                self._eof = True
                return None
            limit = min(limit, faults.truncate_at_byte - offset)
        if faults.drop_at_byte is not None:
            if offset >= faults.drop_at_byte:
                faults.drop_at_byte = None
                await self.close()
                raise EspTransportError(
                    ESP_FAIL, f"connection reset by peer after file byte {offset} (fault)"
                )
            limit = min(limit, faults.drop_at_byte - offset)
        if faults.stall_at_byte is not None:
            if offset >= faults.stall_at_byte:
                self._stall_until = time.monotonic() + faults.stall_seconds
                faults.stall_at_byte = None
            else:
                limit = min(limit, faults.stall_at_byte - offset)
        return limit

    async def _wait_for_link(self, limit: int) -> int:
        """Sleep as long as the link needs for `limit` bytes (a stall first); the limit."""
        if self._stall_until is not None:
            remaining = self._stall_until - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
            self._stall_until = None
        rates = [rate for rate in (self.faults.slow_link_bytes_per_s,) if rate]
        if self.timing.realistic:
            rates.append(LAN_RECEIVE_BYTES_PER_S)
        if rates:
            rate = min(rates)
            limit = max(1, min(limit, int(rate * _PACE_SLICE_S)))
            await asyncio.sleep(limit / rate)
        return limit

    async def _read_once(self, limit: int) -> bytes:
        """One transport read of at most `limit` bytes, with the receive-side faults.

        Returns b"" at a clean end; raises EspTransportError for a broken connection.
        Waits (stall, pace) happen before bytes are taken from the socket, so a timeout
        that cancels this never loses data.
        """
        response = self._response
        if response is None:
            raise EspTransportError(ESP_FAIL, "no connection")
        offset = self.body_file_offset + self.received
        allowed = await self._apply_stream_faults(offset, limit)
        if allowed is None:
            return b""
        allowed = await self._wait_for_link(allowed)
        try:
            data = await response.content.read(allowed)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as err:
            raise EspTransportError(ESP_FAIL, f"connection lost: {err}") from err
        if not data:
            self._eof = True
            return b""
        corrupt = self.faults.corrupt_at_byte
        if corrupt is not None and offset <= corrupt < offset + len(data):
            index = corrupt - offset
            data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
        self.received += len(data)
        self._last_data = time.monotonic()
        return data

    async def read(self, length: int) -> bytes:
        """esp_http_client_read: up to `length` bytes; fewer at the end of the body or when
        a read timed out after some data. Raises EagainError when it timed out with none,
        EspTransportError when the connection broke before anything was read."""
        out = bytearray()
        while len(out) < length:
            if self._eof or self.is_complete_data_received():
                break
            want = length - len(out)
            if self.content_length >= 0:
                want = min(want, self.content_length - self.received)
            try:
                async with asyncio.timeout(self.timeout_s):
                    data = await self._read_once(want)
            except TimeoutError:
                if out:
                    break
                raise EagainError from None
            except EspTransportError:
                if out:
                    break
                raise
            if not data:
                break
            out += data
        return bytes(out)
