"""The device's download engine: ESP-IDF's esp_https_ota (and the esp_http_client behaviour
it relies on), driven by a firmware task modelled on examples/system/ota/advanced_https_ota.

Layers, as on the device:
- EspHttpClient: one HTTPS client (aiohttp underneath) that pins the request's certificate
  only, follows redirects and Basic auth as esp_http_client does, and reads bodies the way
  esp_http_client_read does (a read timeout is EAGAIN, not an error). Fault injection acts
  on the bytes it receives.
- EspHttpsOta: esp_https_ota_begin / get_img_desc / perform / finish / abort, including the
  partial-download Range requests (and their quirk), OTA resumption, and the events.
- run_firmware_ota: the app's task. advanced_https_ota's flow (validate_image_header refuses
  an equal version and, with anti-rollback, a lower secure_version) plus this project's
  firmware rules: the project name must match the running one, the image version must be the
  requested one, size and SHA-256 of the staged file must match the request, and a connection
  lost mid-download is resumed with `Range: bytes=<written>-` a few times.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import re
import ssl
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Final, Protocol

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from custom_components.esp_ota.espota.errors import ImageError
from custom_components.esp_ota.espota.image import (
    APP_DESC_MAGIC,
    APP_DESC_OFFSET,
    APP_DESC_SIZE,
    DESCRIPTOR_READ_SIZE,
    IMAGE_MAGIC,
    AppDescriptor,
    ImageInfo,
    read_app_descriptor,
)

from .app_image import chip_validity_error, header_chip_fields
from .esp_err import (
    ESP_ERR_HTTP_CONNECT,
    ESP_ERR_HTTP_EAGAIN,
    ESP_ERR_HTTP_MAX_REDIRECT,
    ESP_ERR_HTTP_NOT_MODIFIED,
    ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE,
    ESP_ERR_HTTP_READ_TIMEOUT,
    ESP_ERR_HTTP_REDIRECT_DOWNGRADE,
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_STATE,
    ESP_ERR_INVALID_VERSION,
    ESP_ERR_NOT_SUPPORTED,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from .faults import FaultPlan
from .model import OtaEventType, OtaRequest, OtaState
from .ota_ops import (
    OTA_SIZE_UNKNOWN,
    OTA_WITH_SEQUENTIAL_WRITES,
    OtaHandle,
    OtaOps,
    PowerLossError,
)
from .pace import LAN_RECEIVE_BYTES_PER_S, Timing
from .partitions import Partition

USER_AGENT: Final = "ESP32 HTTP Client/1.0"  # esp_http_client's default User-Agent
DEFAULT_REQUEST_SIZE: Final = 64 * 1024  # esp_https_ota's DEFAULT_REQUEST_SIZE
IMAGE_HEADER_SIZE: Final = DESCRIPTOR_READ_SIZE  # esp_https_ota reads 1024 bytes first
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
PROCESS_AGAIN_STATUSES: Final = REDIRECT_STATUSES | {401}
# How often a throttled receive yields bytes (keeps slow links smooth, not bursty).
_PACE_SLICE_S: Final = 0.05
_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OtaConfig:
    """esp_https_ota_config_t / esp_http_client_config_t as the firmware sets them, plus the
    firmware task's own limits (the last three)."""

    # esp_https_ota's and advanced_https_ota's default: one GET for the whole image.
    partial_http_download: bool = False
    max_http_request_size: int = DEFAULT_REQUEST_SIZE
    # The firmware resumes a broken download (advanced_https_ota's option, on here).
    ota_resumption: bool = True
    timeout_ms: int = 5000  # esp_http_client DEFAULT_TIMEOUT_MS
    bulk_flash_erase: bool = False
    # esp_https_ota reads (and writes, and emits WRITE_FLASH for) max(buffer_size, 1024)
    # bytes per esp_https_ota_perform call.
    buffer_size: int = 4096
    max_authorization_retries: int = 10  # esp_http_client DEFAULT_MAX_AUTH_RETRIES
    max_redirection_count: int = 10  # esp_http_client DEFAULT_MAX_REDIRECT
    # The firmware resumes a download whose connection broke at most this many times.
    max_resume_attempts: int = 3
    # esp_https_ota retries a read timeout forever (EAGAIN); the firmware gives up when no
    # byte arrived for this long.
    stall_abort_ms: int = 15_000


class EspTransportError(EspError):
    """The connection broke or closed early while receiving: worth a resumed attempt."""


class _EagainError(Exception):
    """esp_http_client_read timed out before any data was ready (-ESP_ERR_HTTP_EAGAIN)."""


class OtaListener(Protocol):
    """Who hears what the OTA does (the device)."""

    def on_event(
        self,
        event_type: OtaEventType,
        *,
        bytes_written: int | None = None,
        image_size: int | None = None,
        project: str | None = None,
        version: str | None = None,
        error: str | None = None,
    ) -> None:
        """An esp_https_ota event."""

    def on_phase(self, state: OtaState) -> None:
        """The job moved to another phase."""

    def on_progress(self, bytes_written: int, image_size: int | None) -> None:
        """Bytes of the image written to flash so far."""


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
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-your-server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


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

    def __init__(
        self,
        *,
        url: str,
        cert_pem: str,
        headers: Mapping[str, str],
        config: OtaConfig,
        timing: Timing,
        faults: FaultPlan,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme != "https" or not parsed.host:
            raise EspError(ESP_ERR_INVALID_ARG, f"not an https URL: {url}")
        self.credentials = (
            (parsed.user or "", parsed.password or "") if parsed.user is not None else None
        )
        self.url = parsed.with_user(None)
        self.config = config
        self.timing = timing
        self.faults = faults
        pem = unrelated_certificate_pem() if faults.wrong_certificate else cert_pem
        self.ssl_context = pinned_ssl_context(pem)
        self.custom_headers = dict(headers)
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
        a read timed out after some data. Raises _EagainError when it timed out with none,
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
                raise _EagainError from None
            except EspTransportError:
                if out:
                    break
                raise
            if not data:
                break
            out += data
        return bytes(out)


# --- esp_https_ota -----------------------------------------------------------------------


class _State(Enum):
    INIT = 0
    BEGIN = 1
    IN_PROGRESS = 2
    SUCCESS = 3
    RESUME = 4


def _decode_descriptor(head: bytes) -> AppDescriptor:
    """The esp_app_desc_t in the first 1024 bytes; ESP_FAIL if its magic is wrong."""
    if struct.unpack_from("<I", head, APP_DESC_OFFSET)[0] != APP_DESC_MAGIC:
        raise EspError(ESP_FAIL, "Incorrect app descriptor magic")
    try:
        # ESP-IDF copies the descriptor without looking at the image magic; the library
        # parses header and descriptor together, so show it a good magic.
        _header, app = read_app_descriptor(bytes([IMAGE_MAGIC]) + head[1:])
    except ImageError as err:
        raise EspError(ESP_FAIL, f"unreadable app descriptor: {err}") from err
    return app


class EspHttpsOta:
    """One esp_https_ota handle."""

    def __init__(
        self,
        *,
        ota_ops: OtaOps,
        config: OtaConfig,
        request: OtaRequest,
        timing: Timing,
        faults: FaultPlan,
        listener: OtaListener,
        resume_offset: int = 0,
    ) -> None:
        self.ops = ota_ops
        self.config = config
        self.request = request
        self.timing = timing
        self.faults = faults
        self.listener = listener
        self.resume_offset = resume_offset
        self.client: EspHttpClient | None = None
        self.state = _State.INIT
        self.binary_file_len = 0
        self.image_length = -1
        self.image_size_total: int | None = None  # whole file, for events
        self.ota_resumption = config.ota_resumption
        self.partial = config.partial_http_download
        self.max_request = config.max_http_request_size or DEFAULT_REQUEST_SIZE
        self.buffer = b""
        self.staging: Partition | None = None
        self.update_handle: OtaHandle | None = None

    def _emit(self, event_type: OtaEventType, **fields: int | str | None) -> None:
        self.listener.on_event(event_type, **fields)  # type: ignore[arg-type]

    # -- _http_connect / _http_handle_response_code --

    def _handle_response_code(self, client: EspHttpClient, status: int) -> None:
        if status in REDIRECT_STATUSES:
            client.set_redirection()
        elif status == 304:
            raise EspError(
                ESP_ERR_HTTP_NOT_MODIFIED,
                f"OTA image not modified since last request (status code: {status})",
            )
        elif status == 416:
            raise EspError(
                ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE,
                f"Requested range is incorrect (status code: {status})",
            )
        elif status == 401:
            client.add_auth()
        elif status in (403, 404):
            raise EspError(ESP_FAIL, f"File not found({status})")
        elif 400 <= status < 500:
            raise EspError(ESP_FAIL, f"Client error ({status})")
        elif status >= 500:
            raise EspError(ESP_FAIL, f"Server error ({status})")
        elif self.ota_resumption and not self.partial and status != 206:
            raise EspError(
                ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE,
                "Server ignored the requested Range header: "
                "OTA resumption requires server with range request support.",
            )

    async def _http_connect(self) -> None:
        client = self._client
        while True:
            status = await client.send()
            self._handle_response_code(client, status)
            if status not in PROCESS_AGAIN_STATUSES:
                return
            await client.flush()

    @property
    def _client(self) -> EspHttpClient:
        if self.client is None:
            raise EspError(ESP_ERR_INVALID_STATE, "esp_https_ota: no HTTP client")
        return self.client

    # -- esp_https_ota_begin --

    async def begin(self) -> None:
        """esp_https_ota_begin."""
        self._emit(OtaEventType.START)
        if not self.request.cert_pem:
            raise EspError(
                ESP_ERR_INVALID_ARG,
                "No option for server verification is enabled in esp_http_client config.",
            )
        if self.ota_resumption and self.resume_offset >= IMAGE_HEADER_SIZE:
            self.binary_file_len = self.resume_offset
        self.client = EspHttpClient(
            url=self.request.url,
            cert_pem=self.request.cert_pem,
            headers=self.request.headers,
            config=self.config,
            timing=self.timing,
            faults=self.faults,
        )
        try:
            await self._begin_requests()
        except BaseException:
            await self._client.cleanup()
            raise
        self._emit(OtaEventType.CONNECTED, image_size=self.image_size_total)
        self.staging = self.ops.next_update_partition()
        self.state = _State.RESUME if self.binary_file_len else _State.BEGIN

    async def _begin_requests(self) -> None:
        client = self._client
        if self.ota_resumption and not self.partial:
            client.range_header = f"bytes={self.binary_file_len}-"
        if self.partial:
            client.method = "HEAD"
            status = await client.perform()
            if status == 200:
                self.image_length = client.content_length
            elif status == 304:
                raise EspError(
                    ESP_ERR_HTTP_NOT_MODIFIED,
                    "OTA image not modified since last request (status code: 304)",
                )
            else:
                # HEAD not usable (405/501, or 403 for GET-signed URLs): a ranged GET.
                client.range_header = "bytes=0-0"
                client.method = "GET"
                status = await client.perform()
                self._handle_response_code(client, status)
                if status not in (200, 206):
                    raise EspError(ESP_FAIL, f"Received incorrect http status {status}")
                client.range_header = None
                self.image_length = (
                    client.content_length if status == 200 else client.content_range_total()
                )
            if self.image_length == -1:
                raise EspError(ESP_FAIL, "Failed to get image length from http response")
            self.image_size_total = self.image_length
            await client.close()
            range_start = self.binary_file_len
            range_end = (
                range_start + self.max_request - 1
                if self.image_length > self.max_request + range_start
                else self.image_length  # the quirk: image_length, not image_length - 1
            )
            if range_end - range_start < self.image_length:
                client.range_header = f"bytes={range_start}-{range_end}"
            client.method = "GET"
        try:
            await self._http_connect()
        except EspError as err:
            if err.name != ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE or not self.ota_resumption:
                raise
            # Resumption refused: start again from the beginning, without resumption.
            self.ota_resumption = False
            self.binary_file_len = 0
            client.range_header = None
            if self.partial and self.image_length > self.max_request:
                client.range_header = f"bytes=0-{self.max_request - 1}"
            await client.close()
            await self._http_connect()
        if not self.partial:
            self.image_length = client.content_length
            total = client.content_range_total() if client.status == 206 else client.content_length
            self.image_size_total = total if total >= 0 else None

    # -- esp_https_ota_get_img_desc --

    async def _read_header(self) -> bytes:
        client = self._client
        buffer = bytearray()
        while len(buffer) < IMAGE_HEADER_SIZE and not client.is_complete_data_received():
            try:
                data = await client.read(IMAGE_HEADER_SIZE - len(buffer))
            except _EagainError:
                self._check_stall()
                continue
            except EspTransportError as err:
                raise EspTransportError(
                    ESP_FAIL, f"Complete headers were not received ({err.message})"
                ) from err
            if not data:
                break
            buffer += data
        if len(buffer) < IMAGE_HEADER_SIZE:
            # A whole response shorter than the header is a short file, not a broken link.
            error = EspError if client.is_complete_data_received() else EspTransportError
            raise error(ESP_FAIL, "Complete headers were not received")
        return bytes(buffer)

    async def get_img_desc(self) -> AppDescriptor:
        """esp_https_ota_get_img_desc: the new image's esp_app_desc_t.

        GET_IMG_DESC is emitted once the descriptor is read (ESP-IDF posts it just before
        reading), carrying the project and version it found.
        """
        if self.state not in (_State.BEGIN, _State.RESUME):
            raise EspError(ESP_ERR_INVALID_STATE, "esp_https_ota_get_img_desc: Invalid state")
        try:
            if self.binary_file_len >= APP_DESC_OFFSET + APP_DESC_SIZE and self.staging:
                head = self.ops.flash.read(self.staging.offset, IMAGE_HEADER_SIZE)
            else:
                head = await self._read_header()
                self.binary_file_len = len(head)
                self.buffer = head
            app = _decode_descriptor(head)
        except EspError:
            self._emit(OtaEventType.GET_IMG_DESC, image_size=self.image_size_total)
            raise
        self._emit(
            OtaEventType.GET_IMG_DESC,
            image_size=self.image_size_total,
            project=app.project_name,
            version=app.version,
        )
        return app

    # -- esp_https_ota_perform --

    def _check_stall(self) -> None:
        client = self._client
        if client.stalled_for() * 1000 >= self.config.stall_abort_ms:
            raise EspError(
                ESP_ERR_HTTP_READ_TIMEOUT,
                f"no data for {client.stalled_for():.1f} s: the firmware gives up",
            )

    async def _ota_write(self, handle: OtaHandle, data: bytes) -> None:
        try:
            await self.ops.write(handle, data)
            self.binary_file_len += len(data)
        finally:
            self._emit(
                OtaEventType.WRITE_FLASH,
                bytes_written=self.binary_file_len,
                image_size=self.image_size_total,
            )
            self.listener.on_progress(self.binary_file_len, self.image_size_total)

    def _erase_size(self) -> int:
        if self.config.bulk_flash_erase:
            return self.image_length if self.image_length > 0 else OTA_SIZE_UNKNOWN
        return OTA_WITH_SEQUENTIAL_WRITES

    async def _perform_begin(self, staging: Partition) -> None:
        """The first perform: esp_ota_begin, chip checks on the header, first write."""
        handle = self.update_handle = await self.ops.begin(staging, self._erase_size())
        self.state = _State.IN_PROGRESS
        data = self.buffer if self.binary_file_len else await self._read_header()
        self.binary_file_len = 0
        chip_id, min_rev, max_rev = header_chip_fields(data)
        self._emit(OtaEventType.VERIFY_CHIP_ID)
        self._emit(OtaEventType.VERIFY_CHIP_REVISION)
        problem = chip_validity_error(
            chip_id,
            min_rev,
            max_rev,
            chip_id=self.ops.chip_id,
            chip_revision=self.ops.chip_revision,
        )
        if problem is not None:
            raise EspError(ESP_ERR_INVALID_VERSION, problem)
        await self._ota_write(handle, data)

    async def _request_next_range(self) -> None:
        """Partial download: ask for the next chunk (the last one open-ended)."""
        client = self._client
        await client.close()
        start = self.binary_file_len
        if self.image_length - start > self.max_request:
            client.range_header = f"bytes={start}-{start + self.max_request - 1}"
        else:
            client.range_header = f"bytes={start}-"
        try:
            await self._http_connect()
        except EspError as err:
            raise EspTransportError(
                ESP_FAIL, f"Failed to establish HTTP connection: {err.message}"
            ) from err

    async def perform(self) -> bool:
        """esp_https_ota_perform: True while in progress (ESP_ERR_HTTPS_OTA_IN_PROGRESS),
        False when done (ESP_OK); raises EspError for anything else."""
        staging = self.staging
        if self.state is _State.INIT or staging is None:
            raise EspError(ESP_FAIL, "esp_https_ota_perform: Invalid state")
        client = self._client
        if self.state is _State.BEGIN:
            await self._perform_begin(staging)
            return True
        if self.state is _State.RESUME:
            self.update_handle = await self.ops.resume(
                staging, self._erase_size(), self.binary_file_len
            )
            self.state = _State.IN_PROGRESS
        handle = self.update_handle
        if self.state is not _State.IN_PROGRESS or handle is None:
            raise EspError(ESP_FAIL, "Invalid ESP HTTPS OTA State")
        try:
            data = await client.read(max(self.config.buffer_size, IMAGE_HEADER_SIZE))
        except _EagainError:
            self._check_stall()
            return True
        if data:
            await self._ota_write(handle, data)
            return True
        if not client.is_complete_data_received():
            raise EspTransportError(
                ESP_FAIL, "Connection closed before complete data was received!"
            )
        if not self.partial or self.image_length == self.binary_file_len:
            self.state = _State.SUCCESS
        elif self.image_length > self.binary_file_len:
            await self._request_next_range()
            return True
        return False

    def is_complete_data_received(self) -> bool:
        """esp_https_ota_is_complete_data_received."""
        if self.partial:
            return self.image_length == self.binary_file_len
        return self._client.is_complete_data_received()

    # -- esp_https_ota_finish / abort --

    async def finish(self) -> ImageInfo | None:
        """esp_https_ota_finish: esp_ota_end (whole-image verification), then, if the
        download completed, esp_ota_set_boot_partition. FINISH is emitted either way; a
        failure raises after it, with the ESP-IDF error."""
        error: EspError | None = None
        info: ImageInfo | None = None
        try:
            if self.state in (_State.SUCCESS, _State.IN_PROGRESS) and self.update_handle:
                handle, self.update_handle = self.update_handle, None
                info = self.ops.end(handle)
            if self.state is _State.SUCCESS and self.staging is not None:
                await self.ops.set_boot_partition(self.staging)
                self._emit(OtaEventType.UPDATE_BOOT_PARTITION)
        except EspError as err:
            error = err
        finally:
            await self._cleanup()
        self._emit(OtaEventType.FINISH, error=error.name if error else None)
        if error is not None:
            raise error
        return info

    async def abort(self, error: str | None) -> None:
        """esp_https_ota_abort: staging forgotten, boot partition untouched. `error` is the
        failure that made the app abort (carried on the ABORT event)."""
        self._emit(OtaEventType.ABORT, error=error, bytes_written=self.binary_file_len)
        if self.update_handle is not None:
            handle, self.update_handle = self.update_handle, None
            self.ops.abort(handle)
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self.client is not None:
            await self.client.cleanup()

    async def release(self) -> None:
        """Drop the connection without any esp_https_ota call (the device lost power)."""
        await self._cleanup()


# --- the firmware's OTA task ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningApp:
    """What the firmware knows about itself when it validates a new image."""

    project: str
    version: str
    secure_version_efuse: int
    anti_rollback: bool


def validate_image_header(app: AppDescriptor, running: RunningApp, request: OtaRequest) -> None:
    """advanced_https_ota's validate_image_header plus this firmware's own rules."""
    if app.project_name != running.project:
        raise EspError(
            ESP_FAIL,
            f"project name {app.project_name!r} of the new image is not the running "
            f"{running.project!r}: refusing to install another product's firmware",
        )
    if app.version != request.version:
        raise EspError(
            ESP_FAIL,
            f"the image's version {app.version!r} is not the requested {request.version!r}",
        )
    if app.version == running.version:
        raise EspError(
            ESP_FAIL,
            "Current running version is the same as a new. We will not continue the update.",
        )
    if running.anti_rollback and app.secure_version < running.secure_version_efuse:
        raise EspError(
            ESP_FAIL,
            "New firmware security version is less than eFuse programmed, "
            f"{app.secure_version} < {running.secure_version_efuse}",
        )


def staged_sha256(ops: OtaOps, partition: Partition, length: int) -> str:
    """SHA-256 of the first `length` bytes of a slot, read back from flash."""
    digest = hashlib.sha256()
    chunk = 64 * 1024
    for offset in range(0, length, chunk):
        digest.update(ops.flash.read(partition.offset + offset, min(chunk, length - offset)))
    return digest.hexdigest()


async def _download(
    session: EspHttpsOta, ota_ops: OtaOps, request: OtaRequest, running: RunningApp
) -> None:
    """After esp_https_ota_begin: read and check the descriptor, perform until done, then
    the firmware's own checks of the staged file (size and SHA-256 against the request)."""
    app = await session.get_img_desc()
    validate_image_header(app, running, request)
    size = session.image_size_total
    if size is not None and size != request.size:
        raise EspError(
            ESP_ERR_OTA_VALIDATE_FAILED,
            f"the server announces {size} bytes, the request says {request.size}",
        )
    while await session.perform():
        pass
    if not session.is_complete_data_received():
        raise EspError(ESP_FAIL, "Complete data was not received.")
    session.listener.on_phase(OtaState.VERIFYING)
    staging = session.staging
    if staging is None:  # pragma: no cover - begin always sets it
        raise EspError(ESP_FAIL, "no staging partition")
    if session.binary_file_len != request.size:
        raise EspError(
            ESP_ERR_OTA_VALIDATE_FAILED,
            f"received {session.binary_file_len} bytes, the request says {request.size}",
        )
    sha256 = staged_sha256(ota_ops, staging, session.binary_file_len)
    if sha256 != request.sha256.lower():
        raise EspError(
            ESP_ERR_OTA_VALIDATE_FAILED,
            f"SHA-256 of the staged image is {sha256}, the request says {request.sha256}",
        )


async def run_firmware_ota(
    *,
    ota_ops: OtaOps,
    config: OtaConfig,
    request: OtaRequest,
    running: RunningApp,
    timing: Timing,
    faults: FaultPlan,
    listener: OtaListener,
) -> ImageInfo:
    """The firmware's OTA task, start to boot partition switched. Returns the verified new
    image; raises EspError (after an ABORT or FINISH event) when the update failed.

    A connection that breaks during the download is resumed (a new esp_https_ota_begin with
    ota_image_bytes_written, after an ABORT of the broken attempt) up to
    config.max_resume_attempts times; failing to connect at all is final.
    """
    resume_offset = 0
    attempts = 0
    while True:
        listener.on_phase(OtaState.CONNECTING)
        session = EspHttpsOta(
            ota_ops=ota_ops,
            config=config,
            request=request,
            timing=timing,
            faults=faults,
            listener=listener,
            resume_offset=resume_offset,
        )
        try:
            await session.begin()
            listener.on_phase(OtaState.DOWNLOADING)
            await _download(session, ota_ops, request, running)
        except EspTransportError as err:
            written = session.binary_file_len
            await session.abort(err.name)
            if not config.ota_resumption or attempts >= config.max_resume_attempts:
                raise
            attempts += 1
            # advanced_https_ota keeps the written length in NVS in whole KiB.
            resume_offset = (written // 1024) * 1024
            continue
        except EspError as err:
            # The app calls esp_https_ota_abort() on every failure; ABORT is posted even
            # when begin failed and there is no handle.
            await session.abort(err.name)
            raise
        except asyncio.CancelledError:
            await asyncio.shield(session.abort(None))
            raise
        except PowerLossError:
            # No ABORT: the chip is dead. The simulator still releases the sockets.
            await asyncio.shield(session.release())
            raise
        info = await session.finish()
        if info is None:  # pragma: no cover - finish after SUCCESS always verified
            raise EspError(ESP_FAIL, "esp_ota_end did not run")
        return info
