"""A device hanging up mid-download (power loss, a dropped link, an abort) is routine for
the firmware server: no error is logged for it (bench_soak found one traceback logged per
dropped download under load), and it goes on serving."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
import struct
from pathlib import Path

import pytest

from custom_components.esp_ota.espota.certificates import (
    ServerCertificate,
    make_server_certificate,
)
from custom_components.esp_ota.espota.firmware_server import FirmwareServer
from custom_components.esp_ota.espota.firmware_store import StoredImage
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import build_app_image

# Far more than the sockets' buffers on 127.0.0.1 hold: the server is still writing when
# the device goes.
IMAGE_SIZE = 24 * 1024 * 1024


@pytest.fixture
def big_image(tmp_path: Path) -> tuple[bytes, StoredImage]:
    """Built and stored outside the event loop (slow work there is itself a warning)."""
    data = build_app_image(project="esp-ota-demo", version="2.0.0", size=IMAGE_SIZE)
    sha256 = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{sha256}.bin"
    path.write_bytes(data)
    return data, StoredImage(path=path, sha256=sha256, size=len(data), info=parse_image(data))


@pytest.fixture
def certificate() -> ServerCertificate:
    return make_server_certificate(["127.0.0.1"])


async def test_a_device_hanging_up_mid_download_logs_no_error(
    socket_enabled: None,
    big_image: tuple[bytes, StoredImage],
    certificate: ServerCertificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, image = big_image
    sha256 = image.sha256
    server = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
    await server.start()
    context = ssl.create_default_context(cadata=certificate.cert_pem)
    caplog.set_level(logging.DEBUG)
    try:
        grant = server.grant(image, device_id="d", ttl_s=60)
        request = (
            f"GET {grant.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in server.headers(grant).items())
            + "\r\n"
        ).encode()
        for _ in range(3):  # each hang-up, then whatever the server does with it
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="127.0.0.1"
            )
            writer.write(request)
            await reader.readexactly(100_000)  # headers and the start of the body
            # Gone at once, as a device losing power: a reset, no TLS close_notify.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        # The server's handlers meet the hang-ups while this download runs to its end.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=context, server_hostname="127.0.0.1"
        )
        writer.write(request)
        await reader.readuntil(b"\r\n\r\n")
        body = await asyncio.wait_for(reader.readexactly(len(data)), 60)
        assert hashlib.sha256(body).hexdigest() == sha256
        writer.close()
    finally:
        await server.close()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == []
