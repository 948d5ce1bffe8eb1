"""Self-signed TLS certificates: the firmware server's, pinned by the device per update.

A device downloads with esp_https_ota, whose esp_http_client trusts exactly the
``cert_pem`` of the OTA request and checks the host name of the URL against the
certificate's subject alternative names (mbedtls_ssl_set_hostname). So the certificate
must name every host a device may be told to use: the IP addresses and DNS names given.

The project's one certificate builder: the simulator makes its devices' own certificates
(and the wrong one a faulty device pins) with make_server_certificate too.

Everything here that touches files or builds an SSL context blocks: call it in a thread
(``asyncio.to_thread``), never in the event loop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE: Final = "firmware-server-cert.pem"
KEY_FILE: Final = "firmware-server-key.pem"
COMMON_NAME: Final = "ESP OTA firmware server"
VALIDITY: Final = dt.timedelta(days=3650)
# A certificate with less than this left is replaced: a device with a correct clock
# (SNTP) would refuse it once it expires, half way through an update.
RENEW_BEFORE: Final = dt.timedelta(days=30)
# Backdated so a device whose clock is a little behind still accepts it.
_BACKDATE: Final = dt.timedelta(days=1)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(host: str) -> IPAddress | None:
    """The host as an IP address, or None for a DNS name ("[::1]" is accepted too)."""
    try:
        return ipaddress.ip_address(host.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _dns(host: str) -> str:
    """A DNS name as certificates compare it: lower case, no trailing dot."""
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A certificate and its private key, PEM encoded."""

    cert_pem: str
    key_pem: str

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, hex (what `openssl x509 -fingerprint` shows)."""
        return certificate_fingerprint(self.cert_pem)

    @property
    def not_valid_after(self) -> dt.datetime:
        """When the certificate expires (aware, UTC)."""
        return self.certificate.not_valid_after_utc

    def hosts(self) -> tuple[str, ...]:
        """The IP addresses and DNS names in the subject alternative names."""
        try:
            names = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
        except x509.ExtensionNotFound:
            return ()
        return tuple(
            [str(address) for address in names.get_values_for_type(x509.IPAddress)]
            + names.get_values_for_type(x509.DNSName)
        )

    def covers(self, host: str) -> bool:
        """Whether a client connecting to `host` accepts this certificate's name.

        IP addresses match IP entries exactly, DNS names match DNS entries ignoring case
        and a trailing dot (no wildcards: this module never makes any).
        """
        address = _ip(host)
        for name in self.hosts():
            if address is not None:
                if _ip(name) == address:
                    return True
            elif _ip(name) is None and _dns(name) == _dns(host):
                return True
        return False

    def key_matches(self) -> bool:
        """Whether the private key is the certificate's (a half-written pair is not)."""
        key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        public = self.certificate.public_key()
        raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        return key.public_key().public_bytes(*raw) == public.public_bytes(*raw)

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side SSL context presenting this certificate (TLS 1.2 or newer).

        Blocking (see server_ssl_context): call it in a thread.
        """
        return server_ssl_context(self.cert_pem, self.key_pem)


def certificate_fingerprint(cert_pem: str) -> str:
    """SHA-256 of a PEM certificate's DER encoding, hex: what a client pins."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def server_ssl_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A server-side SSL context presenting a PEM certificate and key (TLS 1.2 or newer).

    Blocking (the ssl module loads chains from files only, so this writes them to a
    private temporary folder): call it in a thread.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="esp-ota-cert-") as folder:
        cert_path, key_path = Path(folder) / CERT_FILE, Path(folder) / KEY_FILE
        cert_path.write_text(cert_pem)
        write_private_file(key_path, key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def make_server_certificate(
    hosts: Iterable[str],
    *,
    common_name: str = COMMON_NAME,
    validity: dt.timedelta = VALIDITY,
    ca: bool = True,
    subject_serial_number: str | None = None,
) -> ServerCertificate:
    """A new self-signed ECDSA P-256 certificate naming `hosts` (IPs and DNS names).

    `ca=True` (the default) makes it its own trust anchor with the extensions strict
    verifiers want (key usage, key identifiers), so Python's default client context,
    OpenSSL and mbedTLS all accept it pinned; `ca=False` makes a plain leaf, as some
    tools do (mbedTLS accepts a pinned leaf too). `subject_serial_number` adds the
    subject's serialNumber attribute: a device puts its MAC there, so that its
    certificate says which device it belongs to.
    """
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(host.strip() for host in hosts if host.strip()):
        address = _ip(host)
        names.append(x509.IPAddress(address) if address is not None else x509.DNSName(_dns(host)))
    if not names:
        raise ValueError("a server certificate needs at least one host name or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if subject_serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, subject_serial_number))
    subject = x509.Name(attributes)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    certificate = builder.sign(key, hashes.SHA256())
    return ServerCertificate(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


def write_private_file(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from the first byte): a private key."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)  # an older file kept the mode it had


def _replace(path: Path, text: str, *, private: bool) -> None:
    """Write `text` to `path` atomically (a crash leaves the old file or the new one)."""
    temporary = path.with_name(f".{path.name}.tmp")
    if private:
        write_private_file(temporary, text)
    else:
        temporary.write_text(text)
    temporary.replace(path)


def _usable(certificate: ServerCertificate, hosts: list[str]) -> bool:
    """A stored pair that is whole, covers every host and is not close to expiry."""
    try:
        if not certificate.key_matches():
            return False
        remaining = certificate.not_valid_after - dt.datetime.now(dt.UTC)
    except ValueError, TypeError:  # not PEM, not readable, or a key with a password
        return False
    return remaining > RENEW_BEFORE and all(certificate.covers(host) for host in hosts)


def load_or_create_certificate(folder: Path, hosts: Iterable[str]) -> ServerCertificate:
    """The firmware server's certificate, kept in `folder` across restarts.

    Blocking: call it in a thread. The stored certificate is reused while it covers
    every one of `hosts` and has more than RENEW_BEFORE left; otherwise (or when the
    files are missing, unreadable or do not belong together) a new one is made for
    exactly `hosts` and stored, the key with mode 0600.
    """
    wanted = [host.strip() for host in hosts if host.strip()]
    if not wanted:
        raise ValueError("a server certificate needs at least one host name or IP address")
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
        stored = ServerCertificate(cert_path.read_text(), key_path.read_text())
        if _usable(stored, wanted):
            if key_path.stat().st_mode & 0o077:
                key_path.chmod(0o600)
            return stored
    certificate = make_server_certificate(wanted)
    folder.mkdir(parents=True, exist_ok=True)
    # Key first: a crash in between leaves a pair that does not match, made anew next time.
    _replace(key_path, certificate.key_pem, private=True)
    _replace(cert_path, certificate.cert_pem, private=False)
    return certificate
