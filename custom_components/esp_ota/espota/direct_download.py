"""Direct mode: the device downloads a release from the feed's own HTTPS server.

esp_https_ota trusts exactly the certificate it is given (`cert_pem`). In direct mode that
is the certificate the release's server presents when the update starts: it is read once,
over a connection that verifies nothing (it is a pin, taken as trust on first use, like
the device's own certificate), and the device then refuses any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from yarl import URL

from .device_client import _READ_ONLY_TLS
from .errors import FirmwareDownloadError

CERTIFICATE_READ_TIMEOUT_S = 10.0


async def fetch_server_certificate_pem(url: str) -> str:
    """The PEM of the leaf certificate the HTTPS server of `url` presents now."""
    parsed = URL(url)
    if parsed.scheme != "https" or not parsed.host:
        raise FirmwareDownloadError(
            "direct download needs an https:// release URL (esp_https_ota refuses plain http)",
            url=url,
        )
    try:
        async with asyncio.timeout(CERTIFICATE_READ_TIMEOUT_S):
            _, writer = await asyncio.open_connection(
                parsed.host, parsed.port, ssl=_READ_ONLY_TLS, server_hostname=parsed.host
            )
    except (OSError, TimeoutError) as err:
        raise FirmwareDownloadError(
            f"cannot read the certificate of {parsed.host}: {err or 'timed out'}", url=url
        ) from err
    try:
        ssl_object: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:  # pragma: no cover - a TLS server always presents a certificate
        raise FirmwareDownloadError(f"{parsed.host} presented no certificate", url=url)
    return ssl.DER_cert_to_PEM_cert(der)
