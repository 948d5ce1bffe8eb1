"""The simulated device's own TLS certificate: self-signed, as a real device makes one.

A real firmware generates (or is provisioned with) a key pair and a self-signed
certificate and serves its API with esp_https_server (httpd_ssl_start). Clients pin it by
the SHA-256 fingerprint of its DER encoding, trusting it on first use. The certificate
itself comes from the project's one builder (espota/certificates.py).
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from custom_components.esp_ota.espota.certificates import (
    certificate_fingerprint,
    make_server_certificate,
    server_ssl_context,
    write_private_file,
)

CERT_FILE = "device-cert.pem"
KEY_FILE = "device-key.pem"


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """A device's certificate and private key, PEM encoded (as the files on the device)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, hex: what a client pins."""
        return certificate_fingerprint(self.cert_pem.decode())

    def server_context(self) -> ssl.SSLContext:
        """An SSL context serving this certificate over TLS 1.2, as ESP-IDF's mbedTLS
        does by default (CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 is off): what a client of a real
        fleet negotiates and keeps in memory for each device's stream."""
        context = server_ssl_context(self.cert_pem.decode(), self.key_pem.decode())
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        return context


def make_device_certificate(mac: str, hostname: str) -> DeviceCertificate:
    """A new self-signed P-256 certificate for the device's mDNS name and 127.0.0.1.

    The common name is the mDNS host name; the MAC goes in the serial-number attribute so
    the certificate says which device it belongs to."""
    made = make_server_certificate(
        [hostname, "127.0.0.1"], common_name=hostname, subject_serial_number=mac
    )
    return DeviceCertificate(made.cert_pem.encode(), made.key_pem.encode())


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
    write_private_file(key_path, certificate.key_pem.decode())
    return certificate
