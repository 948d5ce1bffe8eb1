"""Ed25519 keys and detached feed signatures."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from custom_components.esp_ota.espota import errors
from custom_components.esp_ota.espota.errors import FeedError, FeedSignatureError
from custom_components.esp_ota.espota.feed_signing import (
    KeyFormatError,
    generate_signing_key,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_text,
    sign_feed,
    signature_url,
    verify_feed_signature,
)

FEED = b'{"format": "esp-ota-feed", "format_version": 1, "releases": []}\n'


def test_round_trip_through_text_forms() -> None:
    """A key written as PEM and public text signs and verifies after reading back."""
    key = load_private_key(private_key_to_pem(generate_signing_key()))
    public_text = public_key_text(key)
    assert len(base64.b64decode(public_text)) == 32
    assert public_key_text(key.public_key()) == public_text
    signature = sign_feed(FEED, key)
    assert signature.endswith(b"\n")
    verify_feed_signature(FEED, signature, load_public_key(public_text))
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verify_feed_signature(FEED, signature, load_public_key(pem.decode()))


def test_tampered_feed_or_signature_fails() -> None:
    """One changed byte in the feed, or a signature that is not one, is refused."""
    key = generate_signing_key()
    signature = sign_feed(FEED, key)
    with pytest.raises(FeedSignatureError, match="does not match"):
        verify_feed_signature(FEED.replace(b"[]", b"[ ]"), signature, key.public_key())
    with pytest.raises(FeedSignatureError, match="not base64"):
        verify_feed_signature(FEED, b"%%%", key.public_key())
    with pytest.raises(FeedSignatureError, match="64"):
        verify_feed_signature(FEED, base64.b64encode(b"short"), key.public_key())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64 !!", "neither PEM nor base64"),
        (base64.b64encode(b"x" * 31).decode(), "32 bytes"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a PEM public key"),
    ],
)
def test_malformed_public_keys(text: str, message: str) -> None:
    """Every malformed key text says what is wrong."""
    with pytest.raises(KeyFormatError, match=message):
        load_public_key(text)


def test_keys_of_other_algorithms_are_refused() -> None:
    """An EC key is a valid PEM but not an Ed25519 key."""
    ec_key = generate_private_key(SECP256R1())
    private_pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="not Ed25519"):
        load_private_key(private_pem)
    with pytest.raises(KeyFormatError, match="not Ed25519"):
        load_public_key(public_pem.decode())
    with pytest.raises(KeyFormatError, match="not a PEM private key"):
        load_private_key(b"garbage")


def test_public_key_text_forms() -> None:
    """Pasted keys: spaces and line breaks inside the base64 are ignored; str keys verify."""
    key = generate_signing_key()
    text = public_key_text(key)
    wrapped = f"  {text[:20]}\n{text[20:]} \n"
    signature = sign_feed(FEED, key)
    verify_feed_signature(FEED, signature, wrapped)  # text is loaded on the fly
    with pytest.raises(KeyFormatError, match="neither PEM nor base64"):
        verify_feed_signature(FEED, signature, "clé")


def test_a_private_key_is_not_taken_for_a_public_one() -> None:
    """Pasting the private key where the public one belongs says so."""
    pem = private_key_to_pem(generate_signing_key()).decode()
    with pytest.raises(KeyFormatError, match="this is a private key"):
        load_public_key(pem)


def test_encrypted_private_key_is_refused() -> None:
    """The publisher has no password prompt: an encrypted key is a KeyFormatError."""
    encrypted = generate_signing_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFormatError, match="not a PEM private key"):
        load_private_key(encrypted)


def test_key_format_error_is_a_feed_error() -> None:
    """Callers catching FeedError see key problems too; both modules export the one class."""
    assert issubclass(KeyFormatError, FeedError)
    assert KeyFormatError is errors.KeyFormatError


def test_signature_is_over_the_exact_bytes() -> None:
    """Re-serialising the same JSON differently breaks the signature: bytes, not meaning."""
    key = generate_signing_key()
    signature = sign_feed(FEED, key)
    assert len(base64.b64decode(signature)) == 64
    with pytest.raises(FeedSignatureError):
        verify_feed_signature(FEED.replace(b", ", b","), signature, key.public_key())
    with pytest.raises(FeedSignatureError, match="not base64"):
        verify_feed_signature(FEED, "é".encode(), key.public_key())


@pytest.mark.parametrize(
    ("feed_url", "expected"),
    [
        ("https://h/feed.json", "https://h/feed.json.sig"),
        ("https://h/feed.json?t=%2Bab&x=1", "https://h/feed.json.sig?t=%2Bab&x=1"),
        ("https://h/a%20b/feed.json#top", "https://h/a%20b/feed.json.sig"),
        ("http://127.0.0.1:8123/local/manifest", "http://127.0.0.1:8123/local/manifest.sig"),
    ],
)
def test_signature_url(feed_url: str, expected: str) -> None:
    """.sig goes on the path; the query is kept byte for byte, a fragment dropped."""
    assert signature_url(feed_url) == expected
