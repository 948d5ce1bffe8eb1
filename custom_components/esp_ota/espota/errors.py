"""Typed errors of the espota library.

Every error names what is wrong in its message; callers branch on the type.
"""

from __future__ import annotations

from .urls import redacted_url


class EspOtaError(Exception):
    """Base of every error raised by espota."""


# --- application images -------------------------------------------------------------


class ImageError(EspOtaError):
    """An ESP application image is malformed or is not an application image."""


class ImageTooShortError(ImageError):
    """Fewer bytes than needed (esp_https_ota reads 1024 bytes before anything else)."""


class BadMagicError(ImageError):
    """The first byte is not the image magic 0xE9."""


class TooManySegmentsError(ImageError):
    """The header declares more segments than the bootloader accepts (16)."""


class SegmentOverrunError(ImageError):
    """A segment's declared length runs past the end of the file."""


class SegmentLengthError(ImageError):
    """A segment's length is not a multiple of 4."""


class ChecksumMismatchError(ImageError):
    """The XOR checksum over the segment data does not match the stored byte."""


class Sha256MismatchError(ImageError):
    """The appended SHA-256 does not match the image bytes."""


class NoAppDescriptorError(ImageError):
    """No esp_app_desc_t (magic 0xABCD5432) at offset 32: a bootloader or RAM-only image."""


# --- firmware feeds -----------------------------------------------------------------


class FeedError(EspOtaError):
    """A firmware feed could not be fetched, verified or understood."""


class FeedFormatError(FeedError):
    """The feed document is not valid: the message names the field and why."""


class FeedSignatureError(FeedError):
    """A signature is required and is missing, or does not verify."""


class FeedConnectionError(FeedError):
    """The feed server could not be reached, or the connection broke."""


class FeedTimeoutError(FeedConnectionError):
    """The feed server did not answer in time."""


class KeyFormatError(FeedError):
    """A signing or public key's text is not an Ed25519 key in a form the library reads."""


class FeedHttpError(FeedError):
    """The feed server answered with an HTTP error status.

    `url` is the URL requested; the message shows it redacted (no query, no password)."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"feed server answered HTTP {status} for {redacted_url(url)}")
        self.status = status
        self.url = url


# --- firmware downloads and serving ---------------------------------------------------


class FirmwareError(EspOtaError):
    """A firmware image could not be fetched, stored or served."""


class FirmwareDownloadError(FirmwareError):
    """The image could not be downloaded: HTTP error status, timeout, broken connection.

    `status` is the HTTP status when the server answered with an error, else None; `url`
    is the URL requested (the message shows it redacted: urls.redacted_url).
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class FirmwareIntegrityError(FirmwareError):
    """The downloaded bytes are not the ones the release names: size, SHA-256 or MD5."""


class FirmwareTooLargeError(FirmwareError):
    """The image is larger than the firmware store may hold."""


class FirmwareMismatchError(FirmwareError):
    """A valid image that does not fit the device or the release.

    `field` is what differs (project, chip, chip_revision, version, secure_version),
    `expected` what the device or the release (`against`) needs, `actual` what the image
    says.
    """

    def __init__(self, field: str, *, expected: object, actual: object, against: str) -> None:
        super().__init__(f"{field}: the image has {actual!r}, the {against} needs {expected!r}")
        self.field = field
        self.expected = expected
        self.actual = actual
        self.against = against  # "device" or "release"


# --- devices (docs/protocol.md) ---


class DeviceError(EspOtaError):
    """Talking to a device failed."""


class DeviceUnreachableError(DeviceError):
    """The device did not answer (offline, rebooting, wrong address)."""


class DeviceTimeoutError(DeviceUnreachableError):
    """The device did not answer in time."""


class DeviceUnauthorizedError(DeviceError):
    """The device refused the secret (HTTP 401)."""


class CertificateMismatchError(DeviceError):
    """The device presented a certificate other than the pinned one."""


class DeviceProtocolError(DeviceError):
    """The device answered something protocol v1 does not allow."""


class DeviceRefusedError(DeviceError):
    """The device refused the request; `error` is ESP-IDF's error name (the answer's
    "error" field, docs/protocol.md)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message


class DeviceBusyError(DeviceRefusedError):
    """An OTA is already running on the device (ESP_ERR_INVALID_STATE)."""


# --- the command line and the publisher -----------------------------------------------


class PublishError(EspOtaError):
    """A feed cannot be published; the message names the file and why."""


class CommandError(EspOtaError):
    """A command of the `espota` command line cannot do what was asked; the message says why."""


# --- update jobs ----------------------------------------------------------------------


class UpdateJobRecordError(EspOtaError):
    """A stored update job record is not one: the message names the field and why."""


# --- firmware storage ----------------------------------------------------------------


class FirmwareStorageError(FirmwareError):
    """No space left to store the image (ENOSPC, EDQUOT), even after the firmware store
    made room by evicting the images it could.

    `folder` is where it was stored, `needed` the image's size in bytes (None: the release
    does not say), `available` the bytes free there when it failed (None: unknown).
    """

    def __init__(self, folder: str, *, needed: int | None, available: int | None) -> None:
        image = f"the {needed}-byte image" if needed is not None else "the image"
        free = f": {available} bytes free" if available is not None else ""
        super().__init__(f"not enough space in {folder} for {image}{free}")
        self.folder = folder
        self.needed = needed
        self.available = available
