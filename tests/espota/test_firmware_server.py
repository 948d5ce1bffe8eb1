"""The firmware server over real HTTPS on 127.0.0.1: grants, HEAD and ranges as
esp_https_ota sends them, certificates, and simulated devices installing from it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.esp_ota.espota import bounded_listener, firmware_server
from custom_components.esp_ota.espota.certificates import (
    ServerCertificate,
    make_server_certificate,
)
from custom_components.esp_ota.espota.feed import Channel, Release
from custom_components.esp_ota.espota.firmware_server import (
    FirmwareServer,
    Grant,
    parse_range,
)
from custom_components.esp_ota.espota.firmware_store import FirmwareStore, StoredImage
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import ImageState, OtaState, OtaStatus
from custom_components.esp_ota.espota.selection import DeviceFirmware
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.esp_err import ESP_ERR_NOT_SUPPORTED, ESP_FAIL
from simulator.model import OtaRequest
from simulator.ota_task import OtaTaskConfig

PROJECT = "esp-ota-demo"
SIZE = 150_000 // 16 * 16


def store_image(folder: Path, data: bytes) -> StoredImage:
    """An image as the firmware store hands it out."""
    sha256 = hashlib.sha256(data).hexdigest()
    path = folder / f"{sha256}.bin"
    path.write_bytes(data)
    return StoredImage(path=path, sha256=sha256, size=len(data), info=parse_image(data))


@pytest.fixture
def certificate() -> ServerCertificate:
    return make_server_certificate(["127.0.0.1", "ha.local"])


@pytest.fixture
async def server(
    socket_enabled: None, certificate: ServerCertificate
) -> AsyncIterator[FirmwareServer]:
    firmware = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
    await firmware.start()
    yield firmware
    await firmware.close()


@pytest.fixture
def image_data() -> bytes:
    return build_app_image(project=PROJECT, version="1.1.0", size=SIZE)


@pytest.fixture
def image(tmp_path: Path, image_data: bytes) -> StoredImage:
    return store_image(tmp_path, image_data)


def pinned(cert_pem: str) -> ssl.SSLContext:
    """A client context trusting exactly this certificate (host name checked, strict)."""
    return ssl.create_default_context(cadata=cert_pem)


@pytest.fixture
async def client(server: FirmwareServer) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=pinned(server.cert_pem))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


Fetch = Callable[..., Awaitable[tuple[int, dict[str, str], bytes]]]


@pytest.fixture
def fetch(server: FirmwareServer, client: aiohttp.ClientSession) -> Fetch:
    """GET (or another method) a grant's URL with its token: status, headers, body."""

    async def run(
        grant: Grant,
        *,
        method: str = "GET",
        range_: str | None = None,
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(server.headers(grant) if headers is None else headers)
        if range_ is not None:
            sent["Range"] = range_
        url = server.url(grant, "127.0.0.1")
        if path is not None:
            url = f"https://127.0.0.1:{server.port}{path}"
        async with client.request(method, url, headers=sent) as response:
            return response.status, dict(response.headers), await response.read()

    return run


# --- whole file, HEAD, ranges ------------------------------------------------------------


async def test_get_serves_the_whole_image(
    server: FirmwareServer, image: StoredImage, image_data: bytes, fetch: Fetch
) -> None:
    grant = server.grant(image, device_id="24:0a:c4:00:00:01", ttl_s=60)
    assert grant.path == f"/firmware/{image.sha256}.bin"
    assert grant.sha256 == image.sha256
    assert grant.device_id == "24:0a:c4:00:00:01"
    assert grant.expires_at == pytest.approx(time.time() + 60, abs=2)
    assert len(grant.token) >= 40
    assert server.url(grant, "127.0.0.1") == f"https://127.0.0.1:{server.port}{grant.path}"
    assert server.headers(grant) == {"Authorization": f"Bearer {grant.token}"}
    assert server.bytes_served(grant.token) == 0
    status, headers, body = await fetch(grant)
    assert status == 200
    assert body == image_data
    assert headers["Content-Length"] == str(SIZE)
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert server.bytes_served(grant.token) == SIZE


async def test_head_gives_the_size_and_sends_nothing(
    server: FirmwareServer, image: StoredImage, fetch: Fetch
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    status, headers, body = await fetch(grant, method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(SIZE)
    assert headers["Accept-Ranges"] == "bytes"
    assert server.bytes_served(grant.token) == 0


@pytest.mark.parametrize(
    "case",
    [
        ("bytes=0-0", 0, 0),  # esp_https_ota's size probe when HEAD fails
        ("bytes=0-65535", 0, 65535),  # a max_http_request_size chunk
        ("bytes=65536-131071", 65536, 131071),
        (f"bytes=131072-{SIZE}", 131072, SIZE - 1),  # the quirk: image_length, clamped
        ("bytes=131072-999999999", 131072, SIZE - 1),
        ("bytes=4096-", 4096, SIZE - 1),  # resumption
        ("bytes=-100", SIZE - 100, SIZE - 1),  # a suffix
        (f"bytes=-{SIZE * 2}", 0, SIZE - 1),
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
        ("Bytes = 10 - 19", 10, 19),
    ],
)
async def test_single_ranges(
    server: FirmwareServer,
    image: StoredImage,
    image_data: bytes,
    fetch: Fetch,
    case: tuple[str, int, int],
) -> None:
    range_, start, end = case
    grant = server.grant(image, device_id="d", ttl_s=60)
    status, headers, body = await fetch(grant, range_=range_)
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert headers["Content-Length"] == str(end - start + 1)
    assert body == image_data[start : end + 1]
    assert server.bytes_served(grant.token) == end + 1


@pytest.mark.parametrize("range_", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
async def test_past_the_end_is_416_with_the_size(
    server: FirmwareServer, image: StoredImage, fetch: Fetch, range_: str
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    status, headers, body = await fetch(grant, range_=range_)
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{SIZE}"
    assert server.bytes_served(grant.token) == 0
    assert body == b""


@pytest.mark.parametrize("range_", ["bytes=20-10", "items=0-10", "bytes=0-1,4-5", "bytes=-"])
async def test_a_range_it_does_not_read_is_ignored(
    server: FirmwareServer, image: StoredImage, image_data: bytes, fetch: Fetch, range_: str
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    status, headers, body = await fetch(grant, range_=range_)
    assert status == 200
    assert "Content-Range" not in headers
    assert body == image_data


def test_parse_range_on_an_empty_file() -> None:
    assert parse_range("bytes=-5", 0) is None
    assert parse_range("bytes=0-", 0) is None
    with pytest.raises(ValueError, match="single byte range"):
        parse_range("bytes=0-1, 3-4", 10)


async def test_bytes_served_is_the_highest_end_sent(
    server: FirmwareServer, image: StoredImage, fetch: Fetch
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    await fetch(grant, range_="bytes=0-65535")
    assert server.bytes_served(grant.token) == 65536
    await fetch(grant, range_="bytes=100-199")  # a retry of earlier bytes
    assert server.bytes_served(grant.token) == 65536
    await fetch(grant, range_="bytes=65536-")
    assert server.bytes_served(grant.token) == SIZE
    other = server.grant(image, device_id="e", ttl_s=60)
    assert server.bytes_served(other.token) == 0  # per grant
    assert server.bytes_served("unknown") == 0


async def test_large_image_in_chunks_and_a_client_hanging_up(
    server: FirmwareServer, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    data = build_app_image(project=PROJECT, version="2.0.0", size=3 * 1024 * 1024)
    image = store_image(tmp_path, data)
    grant = server.grant(image, device_id="d", ttl_s=60)
    url = server.url(grant, "127.0.0.1")
    async with client.get(url, headers=server.headers(grant)) as response:
        assert await response.content.readexactly(1000) == data[:1000]
    # The connection was dropped mid-body; the server goes on serving.
    async with client.get(url, headers=server.headers(grant)) as response:
        assert hashlib.sha256(await response.read()).hexdigest() == image.sha256
    assert server.bytes_served(grant.token) == len(data)


async def test_a_file_that_shrank_ends_the_body_short(
    server: FirmwareServer, image: StoredImage, image_data: bytes, client: aiohttp.ClientSession
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    image.path.write_bytes(image_data[:1000])  # not what the store hands out, but seen
    async with client.get(
        server.url(grant, "127.0.0.1"),
        headers=server.headers(grant),
        timeout=aiohttp.ClientTimeout(total=5),
    ) as answer:
        assert answer.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await answer.read()
    assert server.bytes_served(grant.token) == 1000


async def test_a_file_gone_from_the_store_is_404(
    server: FirmwareServer, image: StoredImage, fetch: Fetch
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    image.path.unlink()
    status, _, _ = await fetch(grant)
    assert status == 404


# --- tokens --------------------------------------------------------------------------------


def assert_unauthorized(status: int, headers: dict[str, str]) -> None:
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="esp-ota-firmware"'


async def test_no_token_or_a_wrong_one_is_401(
    server: FirmwareServer, image: StoredImage, fetch: Fetch
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {grant.token}"},
        {"Authorization": f"Bearer {grant.token}x"},
        {"Authorization": "Bearer"},
    ):
        status, answer, body = await fetch(grant, headers=headers)
        assert_unauthorized(status, answer)
        assert body.startswith(b"a valid download token")
    # Whatever the path or method: nothing is said before the token is good.
    status, answer, _ = await fetch(grant, headers={}, path="/anything")
    assert_unauthorized(status, answer)
    status, answer, _ = await fetch(grant, headers={}, method="POST")
    assert_unauthorized(status, answer)
    assert server.bytes_served(grant.token) == 0
    # The scheme is case-insensitive (RFC 6750).
    status, _, _ = await fetch(grant, headers={"Authorization": f"bearer {grant.token}"})
    assert status == 200


async def test_an_expired_grant_is_401(
    server: FirmwareServer, image: StoredImage, fetch: Fetch
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=0.3)
    status, _, _ = await fetch(grant, range_="bytes=0-99")
    assert status == 206
    await asyncio.sleep(0.4)
    status, headers, _ = await fetch(grant)
    assert_unauthorized(status, headers)
    assert server.bytes_served(grant.token) == 100  # still known for progress
    past = server.grant(image, device_id="d", ttl_s=60, expires_at=time.time() - 1)
    status, headers, _ = await fetch(past)
    assert_unauthorized(status, headers)


async def test_long_expired_grants_are_forgotten(
    server: FirmwareServer, image: StoredImage, fetch: Fetch
) -> None:
    old = server.grant(image, device_id="d", ttl_s=0, expires_at=time.time() - 7200)
    await fetch(old, range_="bytes=0-9")
    server.grant(image, device_id="e", ttl_s=60)  # granting tidies up
    assert server.bytes_served(old.token) == 0


async def test_a_revoked_grant_is_401(
    server: FirmwareServer, image: StoredImage, fetch: Fetch
) -> None:
    grant = server.grant(image, device_id="d", ttl_s=60)
    assert (await fetch(grant, method="HEAD"))[0] == 200
    server.revoke(grant.token)
    server.revoke(grant.token)  # twice is harmless
    status, headers, _ = await fetch(grant, method="HEAD")
    assert_unauthorized(status, headers)


async def test_the_right_token_for_another_path_is_404(
    server: FirmwareServer, image: StoredImage, tmp_path: Path, fetch: Fetch
) -> None:
    other_image = store_image(tmp_path, build_app_image(project=PROJECT, version="9.9.9"))
    grant = server.grant(image, device_id="d", ttl_s=60)
    other = server.grant(other_image, device_id="e", ttl_s=60)
    status, _, body = await fetch(grant, path=other.path)
    assert (status, body) == (404, b"not found\n")
    status, _, _ = await fetch(grant, path="/firmware/")
    assert status == 404
    status, headers, _ = await fetch(grant, method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert server.bytes_served(grant.token) == 0


async def test_a_grant_re_armed_after_a_restart(
    certificate: ServerCertificate,
    image: StoredImage,
    image_data: bytes,
    socket_enabled: None,
) -> None:
    first = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
    await first.start()
    grant = first.grant(image, device_id="d", ttl_s=600)
    port = first.port
    await first.close()
    await first.close()  # twice is harmless
    second = FirmwareServer(host="127.0.0.1", port=port, certificate=certificate)
    await second.start()
    try:
        again = second.grant(
            image, device_id="d", ttl_s=1, token=grant.token, expires_at=grant.expires_at
        )
        assert again == grant
        connector = aiohttp.TCPConnector(ssl=pinned(certificate.cert_pem))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(
                second.url(grant, "127.0.0.1"),
                headers={**second.headers(grant), "Range": "bytes=1024-"},
            ) as response,
        ):
            assert response.status == 206
            assert await response.read() == image_data[1024:]
        # Re-granting the same token keeps the progress of the same image.
        second.grant(image, device_id="d", ttl_s=600, token=grant.token)
        assert second.bytes_served(grant.token) == SIZE
    finally:
        await second.close()


async def test_nothing_secret_is_logged(
    server: FirmwareServer, image: StoredImage, fetch: Fetch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    grant = server.grant(image, device_id="d", ttl_s=60)
    await fetch(grant, range_="bytes=0-9")
    await fetch(grant, headers={"Authorization": "Bearer guessed-token"})
    await fetch(grant, path="/elsewhere")
    server.revoke(grant.token)
    await fetch(grant)
    assert "Granted /firmware/" in caplog.text
    assert "Refused" in caplog.text
    assert grant.token not in caplog.text
    assert "guessed-token" not in caplog.text


def test_url_brackets_ipv6_and_needs_a_started_server(
    certificate: ServerCertificate, image: StoredImage
) -> None:
    server = FirmwareServer(host="::1", port=0, certificate=certificate)
    grant = server.grant(image, device_id="d", ttl_s=60)
    with pytest.raises(RuntimeError, match="not started"):
        server.url(grant, "fd00::1")
    server._port = 8443  # as start() sets it
    assert server.url(grant, "fd00::1") == f"https://[fd00::1]:8443{grant.path}"
    assert server.url(grant, "[fd00::1]") == f"https://[fd00::1]:8443{grant.path}"
    assert server.url(grant, "ha.local") == f"https://ha.local:8443{grant.path}"


async def test_start_twice_and_a_port_in_use(
    server: FirmwareServer, certificate: ServerCertificate
) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        await server.start()
    taken = FirmwareServer(host="127.0.0.1", port=server.port, certificate=certificate)
    with pytest.raises(OSError, match="in use"):
        await taken.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = taken.port


# --- certificates ---------------------------------------------------------------------------


async def handshake(port: int, cert_pem: str, host: str = "127.0.0.1") -> str:
    """Connect pinned to `cert_pem`; return the DER fingerprint the server presented."""
    context = pinned(cert_pem)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=host)
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return hashlib.sha256(der).hexdigest()


async def test_set_certificate_applies_to_new_handshakes(
    server: FirmwareServer, certificate: ServerCertificate, image: StoredImage, fetch: Fetch
) -> None:
    assert server.cert_pem == certificate.cert_pem
    assert await handshake(server.port, certificate.cert_pem) == certificate.fingerprint
    assert await handshake(server.port, certificate.cert_pem, "ha.local") == (
        certificate.fingerprint
    )
    renewed = make_server_certificate(["127.0.0.1", "192.168.1.20"])
    await server.set_certificate(renewed)
    assert server.cert_pem == renewed.cert_pem
    assert server.certificate == renewed
    # Without SNI (a device told an IP address) and with it: the new certificate.
    assert await handshake(server.port, renewed.cert_pem) == renewed.fingerprint
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(server.port, certificate.cert_pem)
    # Back to the first one (the listening socket's own context).
    await server.set_certificate(certificate)
    assert await handshake(server.port, certificate.cert_pem) == certificate.fingerprint


async def test_a_host_the_certificate_does_not_name_is_refused(server: FirmwareServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        await handshake(server.port, server.cert_pem, "other.local")


async def test_set_certificate_before_start(
    certificate: ServerCertificate, socket_enabled: None
) -> None:
    server = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
    renewed = make_server_certificate(["127.0.0.1"])
    await server.set_certificate(renewed)
    await server.start()
    try:
        assert await handshake(server.port, renewed.cert_pem) == renewed.fingerprint
    finally:
        await server.close()


# --- a simulated ESP32 pulling from it ----------------------------------------------------


@pytest.fixture
async def make_device() -> AsyncIterator[Callable[..., Awaitable[SimulatedDevice]]]:
    devices: list[SimulatedDevice] = []
    factory_image = build_app_image(project=PROJECT, version="1.0.0", size=48 * 1024)

    async def factory(**ota: Any) -> SimulatedDevice:
        device = SimulatedDevice(
            DeviceConfig(
                mac=f"24:0a:c4:00:01:{len(devices) + 1:02x}",
                factory_image=factory_image,
                reboot_time_s=0.0,
                ota=OtaTaskConfig().with_settings(timeout_ms=1000, stall_abort_ms=3000, **ota),
            )
        )
        devices.append(device)
        await device.start()
        return device

    yield factory
    for device in devices:
        await device.close()


def request_for(
    server: FirmwareServer, grant: Grant, image: StoredImage, **changes: Any
) -> OtaRequest:
    """The OTA request Home Assistant posts to the device for this grant."""
    fields: dict[str, Any] = {
        "url": server.url(grant, "127.0.0.1"),
        "sha256": image.sha256,
        "size": image.size,
        "version": image.info.app.version,
        "cert_pem": server.cert_pem,
        "headers": server.headers(grant),
    }
    return OtaRequest(**(fields | changes))


async def install(device: SimulatedDevice, request: OtaRequest) -> OtaStatus:
    await device.start_ota(request)
    await device.wait_idle(20)
    return device.ota_status()


@pytest.mark.parametrize("partial", [False, True], ids=["one_get", "partial_download"])
async def test_a_simulated_device_installs_from_it(
    server: FirmwareServer,
    image: StoredImage,
    make_device: Callable[..., Awaitable[SimulatedDevice]],
    partial: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=firmware_server.__name__)
    device = await make_device(partial_http_download=partial, max_http_request_size=65536)
    grant = server.grant(image, device_id=device.config.mac, ttl_s=60)
    status = await install(device, request_for(server, grant, image))
    assert status.state is OtaState.SUCCEEDED, status
    assert status.bytes_written == SIZE
    info = device.info()
    assert info.version == "1.1.0"
    assert info.app_elf_sha256 == image.info.app.app_elf_sha256
    assert info.running_partition == "ota_1"
    assert info.image_state is ImageState.PENDING_VERIFY
    assert server.bytes_served(grant.token) == SIZE
    served = [
        r.getMessage().removeprefix(f"{r.getMessage().split()[0]} {grant.path} bytes ")
        for r in caplog.records
        if grant.path in r.getMessage() and " bytes " in r.getMessage()
    ]
    tail = f"/{SIZE} ({{}}) to device {device.config.mac}"
    if partial:  # HEAD, then max_http_request_size ranges, the last one clamped
        assert served == [
            f"0-{SIZE - 1}" + tail.format(200),
            "0-65535" + tail.format(206),
            "65536-131071" + tail.format(206),
            f"131072-{SIZE - 1}" + tail.format(206),
        ]
    else:  # one GET, `bytes=0-` (ota_resumption asks for a range from the start)
        assert served == [f"0-{SIZE - 1}" + tail.format(206)]


async def test_a_simulated_device_resumes_a_dropped_download(
    server: FirmwareServer,
    image: StoredImage,
    make_device: Callable[..., Awaitable[SimulatedDevice]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=firmware_server.__name__)
    device = await make_device()
    device.config.faults.drop_at_byte = 70_000
    grant = server.grant(image, device_id=device.config.mac, ttl_s=60)
    status = await install(device, request_for(server, grant, image))
    assert status.state is OtaState.SUCCEEDED, status
    assert device.info().version == "1.1.0"
    assert server.bytes_served(grant.token) == SIZE
    served = [r.getMessage() for r in caplog.records if r.getMessage().startswith("GET ")]
    # With ota_resumption the firmware asks `bytes=<written>-` from the start (0 first),
    # then from where its flash writes stopped after the drop: 206 both times.
    to_device = f"(206) to device {device.config.mac}"
    assert served[0] == f"GET {grant.path} bytes 0-{SIZE - 1}/{SIZE} {to_device}"
    assert len(served) == 2
    resumed_at = int(served[1].split(" bytes ")[1].split("-")[0])
    assert 1024 <= resumed_at <= 70_000
    assert served[1].endswith(f"-{SIZE - 1}/{SIZE} {to_device}")


@pytest.mark.parametrize("token", ["wrong", "expired", "revoked", "none"])
async def test_a_simulated_device_without_a_valid_token_fails(
    server: FirmwareServer,
    image: StoredImage,
    make_device: Callable[..., Awaitable[SimulatedDevice]],
    token: str,
) -> None:
    """esp_http_client answers a 401 by trying to authenticate; it knows Basic and
    Digest, not Bearer, so the job fails with ESP_ERR_NOT_SUPPORTED, boot untouched."""
    device = await make_device()
    grant = server.grant(image, device_id=device.config.mac, ttl_s=60)
    headers = server.headers(grant)
    match token:
        case "wrong":
            headers = {"Authorization": "Bearer not-the-token"}
        case "expired":
            grant = server.grant(image, device_id="d", ttl_s=60, expires_at=time.time() - 1)
            headers = server.headers(grant)
        case "revoked":
            server.revoke(grant.token)
        case "none":
            headers = {}
    status = await install(device, request_for(server, grant, image, headers=headers))
    assert status.state is OtaState.FAILED
    assert status.error == ESP_ERR_NOT_SUPPORTED
    assert status.message is not None
    assert "Bearer" in status.message
    info = device.info()
    assert (info.version, info.running_partition) == ("1.0.0", "ota_0")
    assert server.bytes_served(grant.token) == 0


async def test_a_simulated_device_sent_to_another_image_fails_not_found(
    server: FirmwareServer,
    image: StoredImage,
    tmp_path: Path,
    make_device: Callable[..., Awaitable[SimulatedDevice]],
) -> None:
    device = await make_device()
    other = store_image(tmp_path, build_app_image(project=PROJECT, version="1.2.0"))
    grant = server.grant(image, device_id=device.config.mac, ttl_s=60)
    other_grant = server.grant(other, device_id="someone else", ttl_s=60)
    request = request_for(server, grant, image, url=server.url(other_grant, "127.0.0.1"))
    status = await install(device, request)
    assert (status.state, status.error) == (OtaState.FAILED, ESP_FAIL)
    assert status.message == "File not found(404)"


async def test_many_simulated_devices_at_once(
    server: FirmwareServer,
    image: StoredImage,
    make_device: Callable[..., Awaitable[SimulatedDevice]],
) -> None:
    devices = [await make_device(partial_http_download=True) for _ in range(8)]
    grants = [server.grant(image, device_id=d.config.mac, ttl_s=60) for d in devices]
    statuses = await asyncio.gather(
        *(install(d, request_for(server, g, image)) for d, g in zip(devices, grants, strict=True))
    )
    assert all(status.state is OtaState.SUCCEEDED for status in statuses), statuses
    assert all(server.bytes_served(grant.token) == SIZE for grant in grants)


@pytest.mark.parametrize("chunk_size", [1000, firmware_server.CHUNK_SIZE])
async def test_any_chunk_size_serves_the_same_bytes(
    certificate: ServerCertificate,
    image: StoredImage,
    image_data: bytes,
    socket_enabled: None,
    chunk_size: int,
) -> None:
    server = FirmwareServer(
        host="127.0.0.1", port=0, certificate=certificate, chunk_size=chunk_size
    )
    await server.start()
    try:
        grant = server.grant(image, device_id="d", ttl_s=60)
        connector = aiohttp.TCPConnector(ssl=pinned(certificate.cert_pem))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(
                server.url(grant, "127.0.0.1"),
                headers={**server.headers(grant), "Range": "bytes=999-100998"},
            ) as response,
        ):
            assert await response.read() == image_data[999:100999]
        assert server.bytes_served(grant.token) == 100999
    finally:
        await server.close()


# --- no file I/O in the event loop --------------------------------------------------------

_FILE_EVENTS = frozenset(
    {"open", "os.remove", "os.rename", "os.scandir", "os.listdir", "os.mkdir", "os.utime"}
)
_loop_file_events: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if (
        _loop_file_events is not None
        and event in _FILE_EVENTS
        and threading.current_thread() is threading.main_thread()
    ):
        target = str(args[0]) if args else ""
        # asyncio's debug mode (on in these tests) reads sources for task tracebacks.
        if not target.endswith(".py"):
            _loop_file_events.append((event, target))


async def test_no_file_io_in_the_event_loop(
    server: FirmwareServer, tmp_path: Path, fetch: Fetch, socket_enabled: None
) -> None:
    """Home Assistant flags blocking calls in its loop: fetching (download, cached reuse,
    eviction) and serving open, rename, list and delete files only in worker threads."""
    global _loop_file_events  # noqa: PLW0603 - an audit hook cannot be removed, only muted
    release_app = web.Application()
    data = [build_app_image(project=PROJECT, version="1.1.0", seed=n) for n in range(3)]

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=data[int(request.match_info["n"])])

    release_app.router.add_get("/{n}.bin", serve)
    runner = web.AppRunner(release_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    device = DeviceFirmware(
        project=PROJECT, chip="esp32", chip_revision=301, version="1.0.0", secure_version=0
    )
    releases = [
        Release(
            project=PROJECT,
            chip="esp32",
            version="1.1.0",
            channel=Channel.STABLE,
            url=f"{base}/{n}.bin",
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            md5=None,
            secure_version=0,
            min_chip_rev=None,
            max_chip_rev=None,
            summary=None,
            release_notes_url=None,
            published=None,
        )
        for n, body in enumerate(data)
    ]
    sys.addaudithook(_audit)
    try:
        async with aiohttp.ClientSession() as session:
            store = FirmwareStore(tmp_path / "store", session, max_bytes=2 * len(data[0]))
            _loop_file_events = []
            stored = [await store.fetch(release, device) for release in releases]  # evicts
            again = await store.fetch(releases[2], device)  # cached: re-hashed
            grant = server.grant(again, device_id="d", ttl_s=60)
            status, _, body = await fetch(grant, range_="bytes=1000-")
            events, _loop_file_events = _loop_file_events, None
    finally:
        _loop_file_events = None
        await runner.cleanup()
    assert (status, body) == (206, data[2][1000:])
    assert not stored[0].path.exists()  # the eviction did happen
    assert events == [], "\n".join(map(str, events))


# --- what a client without a token can hold ------------------------------------------------


async def open_tls(
    port: int, cert_pem: str, *, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TLS connection to the server from `source` (any 127.x address is loopback)."""
    return await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=pinned(cert_pem),
        server_hostname="127.0.0.1",
        local_addr=(source, 0),
    )


async def closed_within(reader: asyncio.StreamReader, ceiling_s: float) -> bool:
    """Whether the server closes the connection within `ceiling_s` (what it sends first
    is read and dropped)."""
    try:
        async with asyncio.timeout(ceiling_s):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError, ssl.SSLError:
        pass  # reset: closed too
    return True


async def eventually(condition: Callable[[], bool], ceiling_s: float = 5.0) -> None:
    """Wait until `condition()` holds; fail after `ceiling_s` (a generous ceiling)."""
    for _ in range(int(ceiling_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition()


async def wait_for_count(server: FirmwareServer, count: int) -> None:
    """Until the server's own count of open connections is `count`."""
    await eventually(lambda: server.connection_count == count)


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounds small enough for a test to see them act (raising=False: today's code had
    none, and its tests must fail on the behaviour, not on a missing name)."""
    for name, value in {
        "REQUEST_TIMEOUT_S": 0.5,
        "TLS_HANDSHAKE_TIMEOUT_S": 1.0,
        "TLS_SHUTDOWN_TIMEOUT_S": 0.5,
        "FLOOD_QUIET_S": 0.3,
        "ACCEPT_RETRY_S": 0.01,
    }.items():
        monkeypatch.setattr(bounded_listener, name, value, raising=False)


@pytest.fixture
async def bounded_server(
    socket_enabled: None, certificate: ServerCertificate, short_bounds: None
) -> AsyncIterator[FirmwareServer]:
    """A server started with the short bounds."""
    server = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
    await server.start()
    yield server
    await server.close()


async def test_a_client_dripping_its_headers_is_cut(bounded_server: FirmwareServer) -> None:
    """A request line, then a header byte at a time, never finishing: the connection is
    closed once the request bound has passed, however regularly bytes come."""
    reader, writer = await open_tls(bounded_server.port, bounded_server.cert_pem)
    writer.write(b"GET /firmware/x.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nX")
    cut = asyncio.ensure_future(closed_within(reader, 10))
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while not cut.done():
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.1)
    assert await cut, "a dripping client kept its connection"
    writer.close()
    await wait_for_count(bounded_server, 0)


async def test_an_idle_connection_is_closed(
    bounded_server: FirmwareServer, image: StoredImage
) -> None:
    """Idle before any request, and idle on keep-alive after a served one: both closed."""
    grant = bounded_server.grant(image, device_id="d", ttl_s=60)
    silent_reader, silent = await open_tls(bounded_server.port, bounded_server.cert_pem)
    reader, writer = await open_tls(bounded_server.port, bounded_server.cert_pem)
    writer.write(
        f"HEAD {grant.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {grant.token}\r\n\r\n".encode()
    )
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    assert await closed_within(silent_reader, 10), "a silent connection stayed open"
    assert await closed_within(reader, 10), "an idle keep-alive connection stayed open"
    for stream in (silent, writer):
        stream.close()
    await wait_for_count(bounded_server, 0)


async def test_a_request_without_a_valid_token_loses_its_connection(
    server: FirmwareServer, image: StoredImage
) -> None:
    """A 401 ends the connection: without a token there is nothing to ask for next."""
    server.grant(image, device_id="d", ttl_s=60)
    reader, writer = await open_tls(server.port, server.cert_pem)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 401")
    assert await closed_within(reader, 10)
    writer.close()


async def download_from(server: FirmwareServer, grant: Grant, source: str) -> bytes:
    """The whole granted image, downloaded from the address `source`."""
    connector = aiohttp.TCPConnector(ssl=pinned(server.cert_pem), local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(server.url(grant, "127.0.0.1"), headers=server.headers(grant)) as answer,
    ):
        assert answer.status == 200
        return await answer.read()


async def refused(server: FirmwareServer, source: str) -> bool:
    """Whether a connection from `source` is refused before its TLS handshake ends."""
    try:
        _, writer = await open_tls(server.port, server.cert_pem, source=source)
    except ConnectionError, ssl.SSLError:
        return True
    writer.close()
    return False


async def test_connections_beyond_the_caps_are_refused(
    bounded_server: FirmwareServer,
    image: StoredImage,
    image_data: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One address holds at most MAX_CONNECTIONS_PER_PEER, all together MAX_CONNECTIONS;
    beyond that a connection is reset, while another address still downloads, and a freed
    slot is taken again. The flood is logged once, then its end once. (127.0.0.1 is this
    host itself, capped by the total only: the flood comes from other loopback addresses.)"""
    monkeypatch.setattr(bounded_listener, "MAX_CONNECTIONS_PER_PEER", 3, raising=False)
    monkeypatch.setattr(bounded_listener, "MAX_CONNECTIONS", 6, raising=False)
    # Held connections must outlive the test's steps (handlers take it at start), and the
    # flood its pauses.
    monkeypatch.setattr(bounded_listener, "REQUEST_TIMEOUT_S", 30.0, raising=False)
    monkeypatch.setattr(bounded_listener, "FLOOD_QUIET_S", 2.0, raising=False)
    await bounded_server.close()
    await bounded_server.start()
    caplog.set_level(logging.DEBUG)
    port, cert_pem = bounded_server.port, bounded_server.cert_pem
    grant = bounded_server.grant(image, device_id="d", ttl_s=60)
    held = [await open_tls(port, cert_pem, source="127.0.0.3") for _ in range(3)]
    for _ in range(20):  # a flood from that one address
        assert await refused(bounded_server, "127.0.0.3")
    # Another address (a device) still downloads the whole image, and so does this host.
    assert await download_from(bounded_server, grant, "127.0.0.2") == image_data
    held += [await open_tls(port, cert_pem, source="127.0.0.1") for _ in range(3)]
    await wait_for_count(bounded_server, 6)  # the device's connection gone too
    assert await refused(bounded_server, "127.0.0.4")  # all together: full
    _, writer = held.pop(0)
    writer.close()
    await wait_for_count(bounded_server, 5)
    assert await download_from(bounded_server, grant, "127.0.0.3") == image_data
    for _, writer in held:
        writer.close()
    await wait_for_count(bounded_server, 0)
    flood_start = [r for r in caplog.records if "refusing new connections" in r.getMessage()]
    assert len(flood_start) == 1, caplog.text
    assert "3 connections from 127.0.0.3" in flood_start[0].getMessage()
    # FLOOD_QUIET_S without a refusal: the end, once.
    await eventually(lambda: any("flood over" in r.getMessage() for r in caplog.records), 10)
    flood_end = [r for r in caplog.records if "flood over" in r.getMessage()]
    assert len(flood_end) == 1
    assert "21 connections refused" in flood_end[0].getMessage()
    noisy = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r not in flood_start and r not in flood_end
    ]
    assert noisy == []


async def test_accept_out_of_descriptors_is_logged_once(
    bounded_server: FirmwareServer,
    image: StoredImage,
    image_data: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """accept() failing with EMFILE (the process's file table full): accepting pauses and
    retries, logged once for the whole episode, and serving resumes after it."""
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    real_accept = loop.sock_accept
    failures = 0

    async def out_of_descriptors(listener: socket.socket) -> tuple[socket.socket, Any]:
        nonlocal failures
        if failures < 50:
            failures += 1
            await asyncio.sleep(0)
            raise OSError(errno.EMFILE, "Too many open files")
        return await real_accept(listener)

    monkeypatch.setattr(loop, "sock_accept", out_of_descriptors)
    await bounded_server.close()  # its accept() was already waiting: again, patched
    await bounded_server.start()
    grant = bounded_server.grant(image, device_id="d", ttl_s=60)
    assert await download_from(bounded_server, grant, "127.0.0.2") == image_data
    assert failures == 50
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "Too many open files" in warnings[0].getMessage()


async def test_a_malformed_request_is_refused_without_an_error_logged(
    server: FirmwareServer, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logs a request it cannot parse as an error, with a traceback: any client
    could fill the log. Here: a 4xx, logged at debug level."""
    caplog.set_level(logging.DEBUG)
    for request in (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ):
        reader, writer = await open_tls(server.port, server.cert_pem)
        writer.write(request)
        status = await reader.readline()
        assert status[:10] in (b"HTTP/1.1 4", b"HTTP/1.0 4"), status
        assert await closed_within(reader, 10)
        writer.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [], caplog.text


# --- hostile clients, fuzzed ---------------------------------------------------------------

_TOKEN_CHOICES = ("valid", "lower-scheme", "none", "wrong", "truncated", "extended", "random")
_header_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=60
).map(lambda text: text.encode("utf-8", "surrogatepass"))


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    """A raw request (bytes) and which token it carries (one of _TOKEN_CHOICES)."""
    method = draw(
        st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"TRACE", b"CONNECT"])
        | st.binary(min_size=1, max_size=10)
    )
    path = draw(
        st.sampled_from(
            [
                b"{grant}",
                b"{grant}?x=1",
                b"/firmware/../{grant}",
                b"/firmware/%2e%2e/etc/passwd",
                b"/firmware/",
                b"/",
                b"*",
                b"//{grant}",
                b"{grant}%00",
                b"http://127.0.0.1{grant}",
            ]
        )
        | st.binary(max_size=80)
    )
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b""]))
    token = draw(st.sampled_from(_TOKEN_CHOICES))
    headers = [b"Host: 127.0.0.1"]
    match token:
        case "valid":
            headers.append(b"Authorization: Bearer {token}")
        case "lower-scheme":
            headers.append(b"authorization: bearer {token}")
        case "wrong":
            headers.append(b"Authorization: Bearer " + draw(st.binary(max_size=50)))
        case "truncated":
            headers.append(b"Authorization: Bearer {token_truncated}")
        case "extended":
            headers.append(b"Authorization: Bearer {token}x")
        case "random":
            headers.append(b"Authorization: " + draw(_header_text))
    if draw(st.booleans()):
        headers.append(
            b"Range: "
            + draw(
                st.sampled_from([b"bytes=0-0", b"bytes=-5", b"bytes=99999999-", b"bytes=5-1"])
                | st.from_regex(rb"\Abytes ?= ?-?[0-9]{0,12}-?[0-9]{0,12}(,[0-9]+-)?\Z")
                | _header_text
            )
        )
    headers += [
        draw(_header_text) + b": " + draw(_header_text) for _ in range(draw(st.integers(0, 3)))
    ]
    headers.append(b"Connection: close")
    head = b"\r\n".join([b" ".join(part for part in (method, path, version) if part), *headers])
    return head + b"\r\n\r\n", token


@dataclass
class ThreadedServer:
    """A started server with one grant, its loop in a thread of its own."""

    server: FirmwareServer
    grant: Grant
    loop: asyncio.AbstractEventLoop
    image_data: bytes = field(repr=False)


@pytest.fixture
def threaded_server(
    socket_enabled: None, certificate: ServerCertificate, image: StoredImage, image_data: bytes
) -> Iterator[ThreadedServer]:
    """Shared by every example of a hypothesis test (which runs them synchronously)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    grant = server.grant(image, device_id="d", ttl_s=600)
    yield ThreadedServer(server, grant, loop, image_data)
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def exchange(port: int, cert_pem: str, request: bytes) -> bytes:
    """Send `request`, read all the server answers until it closes (or 10 s pass)."""
    reader, writer = await open_tls(port, cert_pem)
    answer = b""
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                answer += chunk
    except ConnectionError, ssl.SSLError:
        pass  # closed without (more of) an answer: allowed
    finally:
        writer.close()
    return answer


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=hostile_requests())
def test_fuzz_hostile_clients_get_4xx_or_a_close(
    threaded_server: ThreadedServer, caplog: pytest.LogCaptureFixture, case: tuple[bytes, str]
) -> None:
    """Whatever a client sends: a 4xx or a closed connection, never a 5xx; the image only
    with the valid token, and then exactly its bytes; nothing logged above debug level."""
    server, grant, loop = threaded_server.server, threaded_server.grant, threaded_server.loop
    image_data = threaded_server.image_data
    template, token = case
    request = (
        template.replace(b"{grant}", grant.path.encode())
        .replace(b"{token_truncated}", grant.token[:-1].encode())
        .replace(b"{token}", grant.token.encode())
    )
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        answer = asyncio.run_coroutine_threadsafe(
            exchange(server.port, server.cert_pem, request), loop
        ).result(30)
    status_line, _, rest = answer.partition(b"\r\n")
    if answer:
        version, status = status_line.split(b" ", 2)[:2]
        assert version.startswith(b"HTTP/"), answer[:200]
        code = int(status)
        assert code < 500, answer[:500]
        if 200 <= code < 300:
            assert token in ("valid", "lower-scheme"), request
            body = rest.partition(b"\r\n\r\n")[2]
            assert body in image_data, answer[:300]  # the image, or a range of it
        else:
            assert 400 <= code < 500, answer[:300]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
