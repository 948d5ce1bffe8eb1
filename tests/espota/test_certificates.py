"""The firmware server's certificate: hosts it names, what it is kept as, when it is renewed."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from custom_components.esp_ota.espota import certificates
from custom_components.esp_ota.espota.certificates import (
    CERT_FILE,
    KEY_FILE,
    ServerCertificate,
    load_or_create_certificate,
    make_server_certificate,
)


def test_names_every_host_given_and_covers_only_those() -> None:
    certificate = make_server_certificate(
        ["192.168.1.10", "homeassistant.local", "fd00::1", "HA.Example.org.", "192.168.1.10"]
    )
    assert certificate.hosts() == (
        "192.168.1.10",
        "fd00::1",
        "homeassistant.local",
        "ha.example.org",
    )
    assert certificate.covers("192.168.1.10")
    assert certificate.covers("[fd00::1]")
    assert certificate.covers("fd00:0:0::1")  # the same address written another way
    assert certificate.covers("HomeAssistant.local.")
    assert certificate.covers("ha.example.org")
    assert not certificate.covers("192.168.1.11")
    assert not certificate.covers("other.local")
    # An IP never matches a DNS entry spelled like it, nor the reverse.
    assert not make_server_certificate(["10.0.0.1.example"]).covers("10.0.0.1")
    assert not certificate.covers("192.168.1.10.example")


def test_is_p256_self_signed_for_server_auth() -> None:
    certificate = make_server_certificate(["127.0.0.1"]).certificate
    assert certificate.issuer == certificate.subject
    key = certificate.public_key()
    assert key.curve.name == "secp256r1"  # type: ignore[union-attr]
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    remaining = certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert remaining > dt.timedelta(days=3000)
    assert certificate.not_valid_before_utc < dt.datetime.now(dt.UTC) - dt.timedelta(hours=12)


def test_needs_a_host() -> None:
    with pytest.raises(ValueError, match="at least one host"):
        make_server_certificate([" ", ""])
    with pytest.raises(ValueError, match="at least one host"):
        load_or_create_certificate(Path("/nonexistent"), [])


def test_a_certificate_without_names_covers_nothing() -> None:
    # A pair made elsewhere (no subject alternative name) is simply not usable for a host.
    made = make_server_certificate(["127.0.0.1"])
    builder = (
        x509.CertificateBuilder()
        .subject_name(made.certificate.subject)
        .issuer_name(made.certificate.subject)
        .public_key(made.certificate.public_key())
        .serial_number(1)
        .not_valid_before(made.certificate.not_valid_before_utc)
        .not_valid_after(made.certificate.not_valid_after_utc)
    )
    key = serialization.load_pem_private_key(made.key_pem.encode(), password=None)
    bare = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    pem = bare.public_bytes(serialization.Encoding.PEM).decode()
    assert ServerCertificate(pem, made.key_pem).hosts() == ()
    assert not ServerCertificate(pem, made.key_pem).covers("127.0.0.1")


def test_key_file_is_private_and_reloaded(tmp_path: Path) -> None:
    first = load_or_create_certificate(tmp_path / "tls", ["127.0.0.1", "ha.local"])
    key_path = tmp_path / "tls" / KEY_FILE
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls" / CERT_FILE).read_text() == first.cert_pem
    assert first.key_matches()
    # The same hosts, or fewer: the stored pair is kept.
    assert load_or_create_certificate(tmp_path / "tls", ["ha.local"]) == first
    # A key file someone made readable is locked down again.
    key_path.chmod(0o644)
    assert load_or_create_certificate(tmp_path / "tls", ["127.0.0.1"]) == first
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert not list((tmp_path / "tls").glob(".*.tmp"))


def test_regenerated_for_a_host_not_covered(tmp_path: Path) -> None:
    first = load_or_create_certificate(tmp_path, ["192.168.1.10"])
    second = load_or_create_certificate(tmp_path, ["192.168.1.20", "ha.local"])
    assert second != first
    assert second.covers("192.168.1.20")
    assert second.covers("ha.local")
    assert not second.covers("192.168.1.10")  # exactly the hosts asked for
    assert load_or_create_certificate(tmp_path, ["ha.local"]) == second
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_regenerated_near_expiry(tmp_path: Path) -> None:
    short = make_server_certificate(["127.0.0.1"], validity=dt.timedelta(days=10))
    (tmp_path / CERT_FILE).write_text(short.cert_pem)
    (tmp_path / KEY_FILE).write_text(short.key_pem)
    renewed = load_or_create_certificate(tmp_path, ["127.0.0.1"])
    assert renewed != short
    assert renewed.not_valid_after - dt.datetime.now(dt.UTC) > certificates.RENEW_BEFORE
    # Just outside the renewal window: kept.
    lasting = make_server_certificate(
        ["127.0.0.1"], validity=certificates.RENEW_BEFORE + dt.timedelta(days=2)
    )
    (tmp_path / CERT_FILE).write_text(lasting.cert_pem)
    (tmp_path / KEY_FILE).write_text(lasting.key_pem)
    assert load_or_create_certificate(tmp_path, ["127.0.0.1"]) == lasting


@pytest.mark.parametrize(
    "damage", ["garbage_cert", "garbage_key", "other_key", "binary", "encrypted_key"]
)
def test_regenerated_when_the_stored_pair_is_unusable(tmp_path: Path, damage: str) -> None:
    first = load_or_create_certificate(tmp_path, ["127.0.0.1"])
    match damage:
        case "garbage_cert":
            (tmp_path / CERT_FILE).write_text("not a certificate")
        case "garbage_key":
            (tmp_path / KEY_FILE).write_text("not a key")
        case "other_key":  # a crash between writing the key and the certificate
            (tmp_path / KEY_FILE).write_text(make_server_certificate(["127.0.0.1"]).key_pem)
        case "binary":
            (tmp_path / CERT_FILE).write_bytes(b"\xff\xfe\x00")
        case "encrypted_key":  # someone protected it with a password
            key = serialization.load_pem_private_key(first.key_pem.encode(), password=None)
            (tmp_path / KEY_FILE).write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"secret"),
                )
            )
    second = load_or_create_certificate(tmp_path, ["127.0.0.1"])
    assert second != first
    assert second.key_matches()
    assert load_or_create_certificate(tmp_path, ["127.0.0.1"]) == second


def test_fingerprint_is_sha256_of_der() -> None:
    certificate = make_server_certificate(["127.0.0.1"])
    der = certificate.certificate.public_bytes(serialization.Encoding.DER)
    assert certificate.fingerprint == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("ca", [True, False])
async def test_ssl_context_serves_it_to_a_strict_pinned_client(
    socket_enabled: None, ca: bool
) -> None:
    """Python's default client context (VERIFY_X509_STRICT, host name checked) accepts it
    pinned when `ca` is set; the host name decides."""
    certificate = make_server_certificate(["127.0.0.1"], ca=ca)
    server_context = await asyncio.to_thread(certificate.ssl_context)
    assert server_context.minimum_version == ssl.TLSVersion.TLSv1_2

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ssl.create_default_context(cadata=certificate.cert_pem)
        if not ca:  # a leaf is a trust anchor only with a partial chain allowed (as mbedTLS)
            client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            client.verify_flags &= ~ssl.VERIFY_X509_STRICT
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        assert await reader.read() == b"ok"
        writer.close()
        await writer.wait_closed()
        # Another certificate pinned: refused.
        other = ssl.create_default_context(cadata=make_server_certificate(["127.0.0.1"]).cert_pem)
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=other)
    finally:
        server.close()
        await server.wait_closed()
