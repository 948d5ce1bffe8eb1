"""The firmware server over real HTTPS on 127.0.0.1: grants, HEAD and ranges as
esp_https_ota sends them, certificates, and simulated devices installing from it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from custom_components.esp_ota.espota import firmware_server
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
