"""The simulated device's own certificate: what it contains, and that it is kept."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from simulator.tls import (
    CERT_FILE,
    KEY_FILE,
    load_or_create_certificate,
    make_device_certificate,
)


def test_certificate_names_fingerprint_and_context() -> None:
    """Self-signed, for 127.0.0.1 and the mDNS name; the fingerprint is SHA-256 of the DER."""
    certificate = make_device_certificate("24:0a:c4:00:00:01", "esp-ota-240ac4000001.local")
    parsed = x509.load_pem_x509_certificate(certificate.cert_pem)
    assert parsed.issuer == parsed.subject
    assert parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "esp-ota-240ac4000001.local"
    )
    assert parsed.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == (
        "24:0a:c4:00:00:01"
    )
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["esp-ota-240ac4000001.local"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    der = parsed.public_bytes(serialization.Encoding.DER)
    assert certificate.fingerprint == hashlib.sha256(der).hexdigest()
    context = certificate.server_context()
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_kept_in_the_state_folder(tmp_path: Path) -> None:
    """With a folder the same certificate comes back (key readable by its owner only);
    without one, every call makes a new one."""
    folder = tmp_path / "certificates" / "240ac4000001"
    first = load_or_create_certificate(folder, "24:0a:c4:00:00:01", "a.local")
    again = load_or_create_certificate(folder, "24:0a:c4:00:00:01", "a.local")
    assert again == first
    assert (folder / CERT_FILE).read_bytes() == first.cert_pem
    assert (folder / KEY_FILE).stat().st_mode & 0o077 == 0
    fresh = load_or_create_certificate(None, "24:0a:c4:00:00:01", "a.local")
    assert fresh.fingerprint != load_or_create_certificate(None, "x", "a.local").fingerprint
    assert fresh.fingerprint != first.fingerprint
