"""Direct mode's certificate pin: read from the release's HTTPS host, refused otherwise."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator

import pytest

from custom_components.esp_ota.espota.direct_download import fetch_server_certificate_pem
from custom_components.esp_ota.espota.errors import FirmwareDownloadError
from tests.simulator.firmware_server import FirmwareServer, start_firmware_server


@pytest.fixture
async def https_host(socket_enabled: None) -> AsyncIterator[FirmwareServer]:
    server = await start_firmware_server()
    yield server
    await server.close()


async def test_reads_the_certificate_the_host_presents(https_host: FirmwareServer) -> None:
    """The PEM is the server's own leaf certificate, usable as the device's pin."""
    pem = await fetch_server_certificate_pem(https_host.add("/fw.bin", b"x" * 2048))
    assert pem.strip() == https_host.cert_pem.strip()
    ssl.create_default_context(cadata=pem)  # a certificate a TLS client accepts as a pin


async def test_plain_http_is_refused_before_any_connection() -> None:
    """esp_https_ota refuses http: direct mode says so instead of trying."""
    with pytest.raises(FirmwareDownloadError, match="https://"):
        await fetch_server_certificate_pem("http://127.0.0.1:1/fw.bin")


async def test_an_unreachable_host_is_a_download_error(socket_enabled: None) -> None:
    """Nothing listening: a FirmwareDownloadError naming the host."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FirmwareDownloadError, match=r"cannot read the certificate of 127\.0\.0\.1"):
        await fetch_server_certificate_pem(f"https://127.0.0.1:{port}/fw.bin")
