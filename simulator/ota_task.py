"""The app's OTA job: the task of ESP-IDF's examples/system/ota/advanced_https_ota, as
this project's firmware runs it (firmware/components/esp_ota_agent/src/agent_ota.c).

It validates the request before anything starts, then drives esp_https_ota
(simulator/https_ota.py): advanced_https_ota's validate_image_header refuses an equal
version and, with anti-rollback, a lower secure_version; this firmware also wants the
running project name, the requested version, and the request's size and SHA-256 of the
staged file. A connection lost mid-download is resumed (ota_resumption, from the bytes
written) a few times, and a download that receives nothing for too long is given up.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Protocol

from yarl import URL

from custom_components.esp_ota.espota.image import DESCRIPTOR_READ_SIZE, AppDescriptor, ImageInfo
from custom_components.esp_ota.espota.protocol import OtaState

from .esp_err import (
    ESP_ERR_HTTP_READ_TIMEOUT,
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_SIZE,
    ESP_ERR_OTA_VALIDATE_FAILED,
    ESP_FAIL,
    EspError,
)
from .faults import FaultPlan
from .http_client import EspHttpClient, EspTransportError, HttpClientConfig, pinned_ssl_context
from .https_ota import EspHttpsOta, HttpsOtaConfig, HttpsOtaEventHandler
from .model import OtaRequest
from .ota_ops import OtaOps, PowerLossError
from .pace import Timing
from .partitions import Partition

# What this firmware sets in esp_https_ota_config_t and its http_config, as
# firmware/components/esp_ota_agent's Kconfig defaults do (each request brings the URL,
# the pinned certificate and the headers).
FIRMWARE_OTA_CONFIG: Final = HttpsOtaConfig(
    http_config=HttpClientConfig(buffer_size=4096), ota_resumption=True
)


@dataclass(frozen=True, slots=True)
class OtaTaskConfig:
    """The OTA task's configuration: the esp_https_ota_config_t every download starts
    from, and the task's own limits."""

    ota_config: HttpsOtaConfig = FIRMWARE_OTA_CONFIG
    # A download whose connection broke is resumed at most this many times.
    max_resume_attempts: int = 3
    # esp_https_ota retries a read timeout for ever; the task gives up when no byte
    # arrived for this long.
    stall_abort_ms: int = 15_000

    def with_settings(self, **settings: Any) -> OtaTaskConfig:
        """A copy with settings changed by name wherever they live: the task's own, in
        ota_config, or in its http_config (tools and tests set them flat, as a firmware's
        Kconfig does). An unknown name is a TypeError."""
        own = {name: settings.pop(name) for name in _field_names(self) & settings.keys()}
        ota = {name: settings.pop(name) for name in _field_names(self.ota_config) & settings.keys()}
        http_config = replace(self.ota_config.http_config, **settings)
        ota_config = replace(self.ota_config, http_config=http_config, **ota)
        return replace(self, ota_config=ota_config, **own)

    def download_config(self, request: OtaRequest, bytes_written: int) -> HttpsOtaConfig:
        """esp_https_ota_config_t for one attempt at `request`, resumed from
        `bytes_written` (0: from the start)."""

        def set_headers(client: EspHttpClient) -> None:
            for name, value in request.headers.items():
                client.set_header(name, value)

        http_config = replace(
            self.ota_config.http_config, url=request.url, cert_pem=request.cert_pem
        )
        return replace(
            self.ota_config,
            http_config=http_config,
            http_client_init_cb=set_headers,
            ota_image_bytes_written=bytes_written,
        )

    def check_stall(self, quiet_s: float) -> None:
        """The task's watchdog: ESP_ERR_HTTP_READ_TIMEOUT once nothing arrived for
        stall_abort_ms."""
        if quiet_s * 1000 >= self.stall_abort_ms:
            raise EspError(
                ESP_ERR_HTTP_READ_TIMEOUT, f"no data for {quiet_s:.1f} s: the firmware gives up"
            )


def _field_names(config: Any) -> set[str]:
    return {item.name for item in fields(config)}


class OtaTaskListener(HttpsOtaEventHandler, Protocol):
    """Who hears what the OTA task does (the running app): esp_https_ota's events and
    progress, and the task's phases."""

    def on_phase(self, state: OtaState) -> None:
        """The job moved to another phase."""


def validate_request(request: OtaRequest, slot_size: int) -> None:
    """Refuse a request the firmware cannot act on (EspError with the reason), before any
    task starts."""
    try:
        url = URL(request.url)
        host = url.host  # yarl checks the authority (port, brackets) when it is read
    except ValueError:
        host = None
    if not host or url.scheme != "https":
        raise EspError(ESP_ERR_INVALID_ARG, f"url must be an https:// URL, got {request.url!r}")
    digest = request.sha256.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise EspError(ESP_ERR_INVALID_ARG, "sha256 must be 64 hex digits")
    if request.size < DESCRIPTOR_READ_SIZE:
        raise EspError(
            ESP_ERR_INVALID_ARG,
            f"size {request.size} is below {DESCRIPTOR_READ_SIZE} bytes, the least "
            "esp_https_ota reads before anything else",
        )
    if request.size > slot_size:
        raise EspError(
            ESP_ERR_INVALID_SIZE,
            f"the image ({request.size} bytes) does not fit the OTA slot ({slot_size} bytes)",
        )
    if not request.version or len(request.version.encode()) > 31:
        raise EspError(ESP_ERR_INVALID_ARG, "version must be 1..31 bytes (esp_app_desc_t)")
    if not request.cert_pem.strip():
        raise EspError(ESP_ERR_INVALID_ARG, "cert_pem is required (the device pins it)")
    pinned_ssl_context(request.cert_pem)
    for name, value in request.headers.items():
        if not name or any(c in name + value for c in "\r\n"):
            raise EspError(ESP_ERR_INVALID_ARG, f"bad header {name!r}")


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


async def _verify_faults(faults: FaultPlan) -> None:
    """A slow verification (the device reports `verifying` meanwhile), and a power loss
    before the boot partition switch."""
    if faults.verify_seconds > 0:
        await asyncio.sleep(faults.verify_seconds)
    if faults.power_loss_while_verifying:
        faults.power_loss_while_verifying = False
        raise PowerLossError("power lost while verifying the staged image")


async def _download(
    session: EspHttpsOta, request: OtaRequest, running: RunningApp, listener: OtaTaskListener
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
    listener.on_phase(OtaState.VERIFYING)
    await _verify_faults(session.faults)
    staging = session.staging
    if staging is None:  # pragma: no cover - begin always sets it
        raise EspError(ESP_FAIL, "no staging partition")
    if session.binary_file_len != request.size:
        raise EspError(
            ESP_ERR_OTA_VALIDATE_FAILED,
            f"received {session.binary_file_len} bytes, the request says {request.size}",
        )
    sha256 = staged_sha256(session.ops, staging, session.binary_file_len)
    if sha256 != request.sha256.lower():
        raise EspError(
            ESP_ERR_OTA_VALIDATE_FAILED,
            f"SHA-256 of the staged image is {sha256}, the request says {request.sha256}",
        )


async def run_firmware_ota(
    *,
    ota_ops: OtaOps,
    config: OtaTaskConfig,
    request: OtaRequest,
    running: RunningApp,
    timing: Timing,
    faults: FaultPlan,
    listener: OtaTaskListener,
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
            config.download_config(request, resume_offset),
            ota_ops=ota_ops,
            timing=timing,
            faults=faults,
            events=listener,
            stall_watchdog=config.check_stall,
        )
        try:
            await session.begin()
            listener.on_phase(OtaState.DOWNLOADING)
            await _download(session, request, running, listener)
        except EspTransportError as err:
            written = session.binary_file_len
            await session.abort(err.name)
            if not config.ota_config.ota_resumption or attempts >= config.max_resume_attempts:
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
