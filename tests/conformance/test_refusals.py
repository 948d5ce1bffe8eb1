"""Requests the device refuses at once (400), and images it refuses after reading their
first 1024 bytes: each leaves it on its old firmware, boot partition unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from custom_components.esp_ota.espota.certificates import make_server_certificate
from custom_components.esp_ota.espota.protocol import EventType, ImageState, OtaState

from .conftest import DutFactory
from .devices import DeviceOptions, DeviceUnderTest
from .support import (
    API,
    EventRecorder,
    FirmwareHost,
    Offer,
    assert_on,
    make_image,
    raw_request,
    update,
    update_successfully,
)

OTA_SLOT_SIZE = 1700 * 1024  # ota_0 and ota_1 of advanced_https_ota's partitions.csv


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != name}


def _malformed(offer: Offer) -> dict[str, bytes]:
    body = offer.body()

    def encode(value: Any) -> bytes:
        return json.dumps(value).encode()

    cases: dict[str, bytes] = {
        "not JSON": b"this is not JSON",
        "truncated JSON": encode(body)[:-5],
        "empty body": b"",
        "a JSON list": encode([body]),
        "a JSON string": encode("https://example.invalid/fw.bin"),
        "http URL": encode({**body, "url": body["url"].replace("https://", "http://")}),
        "ftp URL": encode({**body, "url": "ftp://127.0.0.1/fw.bin"}),
        "URL without a host": encode({**body, "url": "https:///fw.bin"}),
        "sha256 too short": encode({**body, "sha256": body["sha256"][:-1]}),
        "sha256 not hex": encode({**body, "sha256": "z" * 64}),
        "size under 1024": encode({**body, "size": 1023}),
        "size 0": encode({**body, "size": 0}),
        "size negative": encode({**body, "size": -1}),
        "empty cert_pem": encode({**body, "cert_pem": ""}),
        "cert_pem not a certificate": encode({**body, "cert_pem": "not a certificate"}),
        "empty version": encode({**body, "version": ""}),
        "size a string": encode({**body, "size": str(body["size"])}),
        "size a float": encode({**body, "size": body["size"] + 0.5}),
        "size a boolean": encode({**body, "size": True}),
        "url a number": encode({**body, "url": 42}),
        "sha256 null": encode({**body, "sha256": None}),
        "version a number": encode({**body, "version": 2}),
        "cert_pem a list": encode({**body, "cert_pem": [body["cert_pem"]]}),
        "headers a list": encode({**body, "headers": ["Authorization"]}),
        "header value a number": encode({**body, "headers": {"X-Token": 5}}),
    }
    for name in ("url", "sha256", "size", "version", "cert_pem"):
        cases[f"no {name}"] = encode(_without(body, name))
    return cases


async def test_malformed_requests_get_400_and_start_nothing(
    dut: DeviceUnderTest, firmware: FirmwareHost
) -> None:
    """400 ESP_ERR_INVALID_ARG for every malformed request; 400 ESP_ERR_INVALID_SIZE for an
    image larger than the OTA slot; no job starts, the server hears nothing."""
    offer = firmware.publish(make_image("1.1.0"), "1.1.0")
    failures: list[str] = []
    for name, body in _malformed(offer).items():
        response = await raw_request(dut, "POST", f"{API}/ota", body=body)
        error = response.error() if response.status >= 400 else None
        if (response.status, error) != (400, "ESP_ERR_INVALID_ARG"):
            failures.append(f"{name}: HTTP {response.status} {response.body[:160]!r}")
    too_large = json.dumps({**offer.body(), "size": OTA_SLOT_SIZE + 16}).encode()
    response = await raw_request(dut, "POST", f"{API}/ota", body=too_large)
    if (response.status, response.error()) != (400, "ESP_ERR_INVALID_SIZE"):
        failures.append(f"larger than the slot: HTTP {response.status} {response.body!r}")
    assert not failures, "\n".join(failures)

    status = await dut.client.ota_status()
    assert (status.state, status.ota_id) == (OtaState.IDLE, None), status
    assert firmware.proxy.connections == [], "a refused request reached the firmware server"


REFUSED_IMAGES: dict[str, tuple[bytes, str, str, str | None]] = {
    # name: (image, requested version, error, a word the message must contain)
    "another chip": (make_image("1.1.0", chip="esp32c3"), "1.1.0", "ESP_ERR_INVALID_VERSION", None),
    "chip revision too old": (
        make_image("1.1.0", min_chip_rev_full=400, max_chip_rev_full=499),
        "1.1.0",
        "ESP_ERR_INVALID_VERSION",
        None,
    ),
    "chip revision too new": (
        make_image("1.1.0", max_chip_rev_full=300),
        "1.1.0",
        "ESP_ERR_INVALID_VERSION",
        None,
    ),
    "another project": (
        make_image("1.1.0", project="sprinkler"),
        "1.1.0",
        "ESP_FAIL",
        "sprinkler",
    ),
    "the running version": (make_image("1.0.0"), "1.0.0", "ESP_FAIL", None),
    "not the requested version": (make_image("1.2.0"), "1.1.0", "ESP_FAIL", None),
}


@pytest.mark.parametrize("case", list(REFUSED_IMAGES))
async def test_refused_images(dut: DeviceUnderTest, firmware: FirmwareHost, case: str) -> None:
    """Accepted (202), then refused on the image's header or descriptor: the job fails
    with ESP-IDF's error, no boot partition change, no reboot."""
    image, version, error, word = REFUSED_IMAGES[case]
    offer = firmware.publish(image, version)
    async with EventRecorder(dut) as recorder:
        ota_id, status, info = await update(dut, offer)
        await recorder.wait_for("abort", lambda e: e.type is EventType.ABORT)
        events = recorder.job(ota_id)
    assert (status.state, status.error) == (OtaState.FAILED, error), status
    assert status.message, status
    if word is not None:
        assert word in status.message, status
    assert status.bytes_written < offer.size
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
    assert info.reset_reason == "ESP_RST_POWERON"
    assert info.last_ota == status
    types = [e.type for e in events]
    assert EventType.UPDATE_BOOT_PARTITION not in types, recorder.types(events)
    assert EventType.REBOOT not in types, recorder.types(events)
    abort = next(e for e in events if e.type is EventType.ABORT)
    assert abort.error == error, abort


async def test_secure_version_below_the_efuse(make_dut: DutFactory, firmware: FirmwareHost) -> None:
    """With anti-rollback, confirming an image burns its secure_version into the eFuse;
    an image with a lower one is then refused (ESP_FAIL)."""
    dut = await make_dut()
    await update_successfully(dut, firmware.publish(make_image("1.1.0", secure_version=2), "1.1.0"))
    await dut.client.confirm()
    info = await dut.client.info()
    assert (info.secure_version, info.image_state) == (2, ImageState.VALID)

    older = firmware.publish(make_image("1.2.0", secure_version=1), "1.2.0")
    _, status, info = await update(dut, older)
    assert (status.state, status.error) == (OtaState.FAILED, "ESP_FAIL"), status
    assert_on(info, "1.1.0", "ota_1", image_state=ImageState.VALID)
    assert info.secure_version == 2

    same = firmware.publish(make_image("1.2.0", secure_version=2), "1.2.0")
    info = await update_successfully(dut, same)
    assert_on(info, "1.2.0", "ota_0", image_state=ImageState.PENDING_VERIFY)


async def test_without_anti_rollback_a_lower_secure_version_installs(
    make_dut: DutFactory, firmware: FirmwareHost
) -> None:
    """The same sequence on a device built without anti-rollback: nothing is refused."""
    dut = await make_dut(DeviceOptions(anti_rollback=False))
    await update_successfully(dut, firmware.publish(make_image("1.1.0", secure_version=2), "1.1.0"))
    await dut.client.confirm()
    info = await update_successfully(
        dut, firmware.publish(make_image("1.2.0", secure_version=1), "1.2.0")
    )
    assert_on(info, "1.2.0", "ota_0", image_state=ImageState.PENDING_VERIFY)
    assert info.secure_version == 1


def _not_as_served(offer: Offer, case: str) -> Offer:
    """The offer, but the download cannot be trusted or is not granted."""
    if case == "another certificate":
        other = make_server_certificate(["127.0.0.1"], common_name="not the firmware server")
        return offer.but(cert_pem=other.cert_pem)
    if case == "no token":
        return offer.but(headers={})
    # A valid token for another path: the firmware server answers 404.
    return offer.but(url=offer.url.replace(offer.sha256, "0" * 64))


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("another certificate", "ESP_ERR_HTTP_CONNECT", None),
        ("no token", "ESP_ERR_NOT_SUPPORTED", None),
        ("another path", "ESP_FAIL", "File not found(404)"),
    ],
)
async def test_downloads_it_cannot_trust_or_may_not_take(
    dut: DeviceUnderTest, firmware: FirmwareHost, case: str, error: str, message: str | None
) -> None:
    """The download trusts only cert_pem and sends the request's headers: another
    certificate fails the TLS handshake, no token gets the firmware server's 401 (a Bearer
    challenge esp_http_client cannot answer), a token for another path its 404. Nothing
    is written, the boot partition is unchanged."""
    offer = _not_as_served(firmware.publish(make_image("1.1.0"), "1.1.0"), case)
    _, status, info = await update(dut, offer)
    assert (status.state, status.error) == (OtaState.FAILED, error), status
    if message is not None:
        assert message in (status.message or ""), status
    assert status.bytes_written == 0
    assert_on(info, "1.0.0", "ota_0", image_state=ImageState.VALID)
