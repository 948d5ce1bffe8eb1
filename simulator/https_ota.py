"""esp_https_ota (ESP-IDF components/esp_https_ota): begin / get_img_desc / perform /
finish / abort on one esp_https_ota handle, and the events it posts.

It downloads over simulator/http_client.py and writes with simulator/ota_ops.py, including
the partial-download Range requests (and their quirk), OTA resumption from
ota_image_bytes_written, and the chip checks on the image header. What the app does around
it (checks of its own, retries) is simulator/ota_task.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

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
from custom_components.esp_ota.espota.protocol import EventType

from .app_image import chip_validity_error, header_chip_fields
from .esp_err import (
    ESP_ERR_HTTP_NOT_MODIFIED,
    ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE,
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_STATE,
    ESP_ERR_INVALID_VERSION,
    ESP_FAIL,
    EspError,
)
from .faults import FaultPlan
from .http_client import (
    REDIRECT_STATUSES,
    EagainError,
    EspHttpClient,
    EspTransportError,
    HttpClientConfig,
)
from .ota_ops import OTA_SIZE_UNKNOWN, OTA_WITH_SEQUENTIAL_WRITES, OtaHandle, OtaOps
from .pace import Timing
from .partitions import Partition

DEFAULT_REQUEST_SIZE: Final = 64 * 1024  # esp_https_ota's DEFAULT_REQUEST_SIZE
IMAGE_HEADER_SIZE: Final = DESCRIPTOR_READ_SIZE  # esp_https_ota reads 1024 bytes first
# process_again(): statuses after which esp_https_ota sends the request again.
PROCESS_AGAIN_STATUSES: Final = REDIRECT_STATUSES | {401}


@dataclass(frozen=True, slots=True)
class HttpsOtaConfig:
    """esp_https_ota_config_t: the fields the simulator models (defaults are ESP-IDF's;
    decrypt_cb and buffer_caps have no simulated counterpart)."""

    http_config: HttpClientConfig = field(default_factory=HttpClientConfig)
    # Called once the HTTP client exists, before any request: the app sets headers here.
    http_client_init_cb: Callable[[EspHttpClient], None] | None = None
    bulk_flash_erase: bool = False
    # Off: one GET for the whole image. On: a HEAD, then max_http_request_size ranges.
    partial_http_download: bool = False
    max_http_request_size: int = DEFAULT_REQUEST_SIZE
    ota_resumption: bool = False
    ota_image_bytes_written: int = 0  # with ota_resumption: where the last attempt stopped


class HttpsOtaEventHandler(Protocol):
    """The app's side of an esp_https_ota handle: its ESP_HTTPS_OTA_EVENT handler, and the
    image length read so far (esp_https_ota_get_image_len_read) after every write."""

    def on_event(self, event_type: EventType, **data: int | str | None) -> None:
        """An esp_https_ota event with its data (bytes_written, image_size, project,
        version, error: each only where it applies)."""

    def on_progress(self, bytes_written: int, image_size: int | None) -> None:
        """Bytes of the image written to flash so far."""


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
    """One esp_https_ota handle.

    `stall_watchdog` stands in for the app's own watchdog: esp_https_ota retries a read
    timeout for ever, so it is told the seconds since the last byte after every one, and
    ends the download by raising.
    """

    def __init__(
        self,
        config: HttpsOtaConfig,
        *,
        ota_ops: OtaOps,
        timing: Timing,
        faults: FaultPlan,
        events: HttpsOtaEventHandler,
        stall_watchdog: Callable[[float], None] | None = None,
    ) -> None:
        self.ops = ota_ops
        self.config = config
        self.timing = timing
        self.faults = faults
        self.events = events
        self.stall_watchdog = stall_watchdog
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

    def _emit(self, event_type: EventType, **data: int | str | None) -> None:
        self.events.on_event(event_type, **data)

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
        self._emit(EventType.START)
        http_config = self.config.http_config
        if not http_config.cert_pem:
            raise EspError(
                ESP_ERR_INVALID_ARG,
                "No option for server verification is enabled in esp_http_client config.",
            )
        resume_offset = self.config.ota_image_bytes_written
        if self.ota_resumption and resume_offset >= IMAGE_HEADER_SIZE:
            self.binary_file_len = resume_offset
        self.client = EspHttpClient(http_config, timing=self.timing, faults=self.faults)
        try:
            if self.config.http_client_init_cb is not None:
                self.config.http_client_init_cb(self.client)
            await self._begin_requests()
        except BaseException:
            await self._client.cleanup()
            raise
        self._emit(EventType.CONNECTED, image_size=self.image_size_total)
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
            except EagainError:
                self._read_timed_out()
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
            self._emit(EventType.GET_IMG_DESC, image_size=self.image_size_total)
            raise
        self._emit(
            EventType.GET_IMG_DESC,
            image_size=self.image_size_total,
            project=app.project_name,
            version=app.version,
        )
        return app

    # -- esp_https_ota_perform --

    def _read_timed_out(self) -> None:
        """esp_http_client_read said EAGAIN: esp_https_ota tries again; the app may not."""
        if self.stall_watchdog is not None:
            self.stall_watchdog(self._client.stalled_for())

    async def _ota_write(self, handle: OtaHandle, data: bytes) -> None:
        try:
            await self.ops.write(handle, data)
            self.binary_file_len += len(data)
        finally:
            self._emit(
                EventType.WRITE_FLASH,
                bytes_written=self.binary_file_len,
                image_size=self.image_size_total,
            )
            self.events.on_progress(self.binary_file_len, self.image_size_total)

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
        self._emit(EventType.VERIFY_CHIP_ID)
        self._emit(EventType.VERIFY_CHIP_REVISION)
        hardware = self.ops.hardware
        problem = chip_validity_error(
            chip_id,
            min_rev,
            max_rev,
            chip_id=hardware.chip_id,
            chip_revision=hardware.chip_revision,
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
            data = await client.read(max(self.config.http_config.buffer_size, IMAGE_HEADER_SIZE))
        except EagainError:
            self._read_timed_out()
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
                self._emit(EventType.UPDATE_BOOT_PARTITION)
        except EspError as err:
            error = err
        finally:
            await self._cleanup()
        self._emit(EventType.FINISH, error=error.name if error else None)
        if error is not None:
            raise error
        return info

    async def abort(self, error: str | None) -> None:
        """esp_https_ota_abort: staging forgotten, boot partition untouched. `error` is the
        failure that made the app abort (carried on the ABORT event)."""
        self._emit(EventType.ABORT, error=error, bytes_written=self.binary_file_len)
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
