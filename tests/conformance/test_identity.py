"""Identity and state of a factory-fresh device: GET /api/v1/info, GET /api/v1/ota, TLS."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from custom_components.esp_ota.espota.protocol import ImageState, OtaState

from .conftest import DutFactory
from .devices import DeviceOptions, DeviceUnderTest
from .support import API, descriptor, mark_uptime, raw_request, reboot, wait_rebooted

INFO_FIELDS: dict[str, type | tuple[type, ...]] = {
    "api": int,
    "mac": str,
    "chip": str,
    "chip_revision": int,
    "project": str,
    "version": str,
    "idf_ver": str,
    "app_elf_sha256": str,
    "secure_version": int,
    "running_partition": str,
    "boot_partition": str,
    "image_state": str,
    "last_invalid_partition": type(None),
    "last_ota": dict,
    "reset_reason": str,
    "uptime_s": (int, float),
}
STATUS_FIELDS = ("state", "ota_id", "target_version", "bytes_written", "image_size", "error")


@pytest.mark.parametrize(
    "options",
    [
        DeviceOptions(),
        DeviceOptions(chip="esp32c3", chip_revision=4, project="garden", version="0.9.1"),
        DeviceOptions(secure_version=3, anti_rollback=False),
    ],
    ids=["esp32", "esp32c3", "secure-version"],
)
async def test_info_of_a_fresh_device(make_dut: DutFactory, options: DeviceOptions) -> None:
    """Every field, typed and equal to what was flashed; no update ever ran."""
    dut = await make_dut(options)
    factory = descriptor(dut.factory_image)

    raw = await raw_request(dut, "GET", f"{API}/info")
    assert raw.status == 200
    assert raw.headers["Content-Type"].startswith("application/json")
    data = raw.json()
    for name, kind in INFO_FIELDS.items():
        assert name in data, f"GET /info has no {name!r}: {data}"
        assert isinstance(data[name], kind), (name, data)
        assert not isinstance(data[name], bool), (name, data)
    last_ota = data["last_ota"]
    for name in STATUS_FIELDS:
        assert name in last_ota, f"last_ota has no {name!r}: {last_ota}"
    assert (last_ota["state"], last_ota["ota_id"], last_ota["error"]) == ("idle", None, None)
    assert last_ota["bytes_written"] == 0

    info = await dut.client.info()
    assert info.api == 1
    assert info.mac == dut.mac
    assert (info.chip, info.chip_revision) == (options.chip, options.chip_revision)
    assert (info.project, info.version) == (options.project, options.version)
    assert info.idf_ver == factory.idf_ver
    assert info.app_elf_sha256 == factory.app_elf_sha256
    assert info.secure_version == options.secure_version == factory.secure_version
    assert (info.running_partition, info.boot_partition) == ("ota_0", "ota_0")
    # The bootloader's first boot of a flash with otadata erased and no factory app
    # writes ota_seq 1 as VALID (bootloader_utility.c set_actual_ota_seq).
    assert info.image_state is ImageState.VALID
    assert info.last_invalid_partition is None
    assert info.last_ota.state is OtaState.IDLE
    assert info.reset_reason == "ESP_RST_POWERON"
    assert info.uptime_s >= 0

    status = await dut.client.ota_status()
    assert status.state is OtaState.IDLE
    assert (status.ota_id, status.error) == (None, None)
    raw_status = (await raw_request(dut, "GET", f"{API}/ota")).json()
    for name in STATUS_FIELDS:
        assert name in raw_status, f"GET /ota has no {name!r}: {raw_status}"


async def test_uptime_counts_from_the_boot(dut: DeviceUnderTest) -> None:
    """uptime_s grows while the firmware runs and starts again at a reboot (ESP_RST_SW)."""
    first = await dut.client.info()
    await asyncio.sleep(0.05)
    again = await dut.client.info()
    assert again.uptime_s >= first.uptime_s + 0.04, (first, again)
    mark = await mark_uptime(dut)
    asked = time.monotonic()
    answer = await raw_request(dut, "POST", f"{API}/reboot")
    assert (answer.status, answer.json()) == (200, {"ok": True})
    after = await wait_rebooted(dut, mark)
    assert after.uptime_s <= time.monotonic() - asked, (again, after)
    assert after.reset_reason == "ESP_RST_SW"
    assert (after.version, after.running_partition) == (first.version, "ota_0")


async def test_certificate_is_self_signed_p256_and_kept(dut: DeviceUnderTest) -> None:
    """The device's own ECDSA P-256 certificate, self-signed, the same after a reboot and
    a power cycle (kept in NVS); the pinned fingerprint is its DER's SHA-256."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    _, writer = await asyncio.open_connection(dut.host, dut.port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        version = ssl_object.version()
    finally:
        writer.close()
        await writer.wait_closed()
    # ESP-IDF's mbedTLS speaks TLS 1.2 by default (CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 off),
    # and a client offering 1.3 as well gets 1.2 from both devices.
    assert version == "TLSv1.2"
    assert hashlib.sha256(der).hexdigest() == dut.cert_fingerprint
    certificate = x509.load_der_x509_certificate(der)
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert certificate.issuer == certificate.subject

    await reboot(dut)
    assert await dut.client.fetch_certificate_fingerprint() == dut.cert_fingerprint
    await dut.power_cycle()  # fails if the certificate changed
    info = await dut.client.info()
    assert info.reset_reason == "ESP_RST_POWERON"
