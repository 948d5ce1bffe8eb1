"""Ed25519 signatures of feeds: keys, signing and verification.

A signature is detached: ``<feed>.sig`` holds the base64 of the 64-byte Ed25519
signature over the feed file's exact bytes. A public key is written as the base64 of its
32 raw bytes (one line, easy to paste into Home Assistant); PEM is accepted too.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from yarl import URL

from .errors import FeedSignatureError, KeyFormatError

__all__ = [
    "SIGNATURE_SUFFIX",
    "KeyFormatError",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_text",
    "sign_feed",
    "signature_url",
    "verify_feed_signature",
]

SIGNATURE_SUFFIX = ".sig"


def generate_signing_key() -> Ed25519PrivateKey:
    """Make a new private key for signing feeds."""
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """Serialize a private key as unencrypted PKCS#8 PEM (keep the file private)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Read a private key written by private_key_to_pem."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise KeyFormatError(f"not a PEM private key: {err}") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"the private key is {type(key).__name__}, not Ed25519")
    return key


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The one-line form of a public key: base64 of its 32 raw bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """Read a public key: base64 of the 32 raw bytes, or a PEM SubjectPublicKeyInfo.

    Whitespace anywhere in the base64 form is ignored (a key pasted across lines).
    """
    stripped = text.strip()
    if "PRIVATE KEY" in stripped:
        raise KeyFormatError(
            "this is a private key; give the public key (feed.pub, or the text keygen printed)"
        )
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped.encode())
        except (ValueError, TypeError) as err:
            raise KeyFormatError(f"not a PEM public key: {err}") from err
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"the public key is {type(key).__name__}, not Ed25519")
        return key
    try:
        raw = base64.b64decode("".join(stripped.split()), validate=True)
    except ValueError as err:  # binascii.Error, or non-ASCII text
        raise KeyFormatError("public key is neither PEM nor base64") from err
    if len(raw) != 32:
        raise KeyFormatError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_url(feed_url: str) -> str:
    """Where a feed's detached signature is: ``.sig`` appended to the URL's path.

    The query is kept (it may carry an access token) and a fragment dropped:
    ``https://h/feed.json?t=1`` -> ``https://h/feed.json.sig?t=1``.
    """
    url = URL(feed_url)
    # Raw path and query, so nothing is re-encoded (a token's "%2B" stays "%2B").
    return str(url.with_path(url.raw_path + SIGNATURE_SUFFIX, encoded=True, keep_query=True))


def sign_feed(feed_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The contents of the detached signature file for these exact feed bytes.

    Base64 (standard alphabet, padded) of the 64-byte Ed25519 signature, then a newline.
    """
    return base64.b64encode(key.sign(feed_bytes)) + b"\n"


def verify_feed_signature(feed_bytes: bytes, signature: bytes, key: Ed25519PublicKey | str) -> None:
    """Raise FeedSignatureError unless `signature` (the .sig file) signs `feed_bytes`.

    `key` is a loaded public key or its text (KeyFormatError if that is malformed).
    Works offline: nothing here touches the network.
    """
    public_key = load_public_key(key) if isinstance(key, str) else key
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except ValueError as err:  # binascii.Error, or non-ASCII text
        raise FeedSignatureError("feed signature is not base64") from err
    if len(raw) != 64:
        raise FeedSignatureError(f"feed signature is {len(raw)} bytes, Ed25519 gives 64")
    try:
        public_key.verify(raw, feed_bytes)
    except InvalidSignature as err:
        raise FeedSignatureError(
            "feed signature does not match the feed and the configured public key"
        ) from err
