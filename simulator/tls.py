"""The simulated device's own TLS certificate: self-signed, as a real device makes one.

A real firmware generates (or is provisioned with) a key pair and a self-signed
certificate and serves its API with esp_https_server (httpd_ssl_start). Clients pin it by
the SHA-256 fingerprint of its DER encoding, trusting it on first use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE = "device-cert.pem"
KEY_FILE = "device-key.pem"
VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """A device's certificate and private key, PEM encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, hex: what a client pins."""
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()

    def server_context(self) -> ssl.SSLContext:
        """An SSL context serving this certificate (TLS 1.2+, as mbedTLS offers)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # ssl loads chains from files only: write them to a private temporary folder.
        with tempfile.TemporaryDirectory(prefix="esp-ota-sim-") as folder:
            cert_path, key_path = Path(folder) / CERT_FILE, Path(folder) / KEY_FILE
            cert_path.write_bytes(self.cert_pem)
            key_path.write_bytes(self.key_pem)
            context.load_cert_chain(cert_path, key_path)
        return context


def make_device_certificate(mac: str, hostname: str) -> DeviceCertificate:
    """A new self-signed P-256 certificate for 127.0.0.1 and the device's mDNS name.

    The common name is the mDNS host name; the MAC goes in the serial-number attribute so
    the certificate says which device it belongs to."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hostname),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, mac),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return DeviceCertificate(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def load_or_create_certificate(folder: Path | None, mac: str, hostname: str) -> DeviceCertificate:
    """The device's certificate, kept in `folder` so a restarted simulator keeps it."""
    if folder is None:
        return make_device_certificate(mac, hostname)
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return DeviceCertificate(cert_path.read_bytes(), key_path.read_bytes())
    certificate = make_device_certificate(mac, hostname)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(certificate.cert_pem)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(certificate.key_pem)
    return certificate
