"""Fetching a feed over HTTP(S): conditional requests, signature check, typed errors.

The aiohttp session is injected (Home Assistant's shared one in the integration); the
client never makes or closes one. An unchanged feed costs one request answered 304 and
no parsing. The validators (ETag, Last-Modified) are only kept for a feed that verified
and parsed, so a broken feed is fetched again in full next time rather than being
remembered as "not modified".

Relative release URLs resolve against the URL the client was given, not the one a
redirect led to: a feed behind a redirect to a signed, expiring CDN address (GitHub
release assets) keeps working, and the same holds for ESPHome, which resolves against
its configured ``source``.

Errors name the URLs redacted (urls.redacted_url): a token in the query, or a user and
password, must not reach a log line, diagnostics or a repair issue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import (
    FeedConnectionError,
    FeedFormatError,
    FeedHttpError,
    FeedSignatureError,
    FeedTimeoutError,
)
from .feed import MAX_FEED_BYTES, Feed, parse_feed
from .feed_signing import load_public_key, signature_url, verify_feed_signature
from .urls import redacted_text, redacted_url

__all__ = [
    "DEFAULT_TIMEOUT",
    "FeedClient",
    "FeedFetchResult",
    "verify_feed_signature",
]

DEFAULT_TIMEOUT: Final = 30.0
_READ_CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class FeedFetchResult:
    """What one fetch learned: a new feed, or that the last one still holds."""

    feed: Feed | None  # None exactly when not_modified
    not_modified: bool  # the server answered 304: the feed fetched last time still holds
    etag: str | None
    last_modified: str | None


class FeedClient:
    """Fetches one feed URL, remembering its validators between fetches.

    `public_key` (a key or its text, see feed_signing.load_public_key) makes a valid
    signature at ``<url>.sig`` mandatory. `timeout` bounds each request, in seconds.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        public_key: Ed25519PublicKey | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._session = session
        self.url = url
        self._public_key = (
            load_public_key(public_key) if isinstance(public_key, str) else public_key
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._etag: str | None = None
        self._last_modified: str | None = None
        self.requests = 0  # HTTP requests made (feed and signature), for diagnostics
        self.parses = 0  # feed documents parsed

    @property
    def signature_url(self) -> str:
        """Where the detached signature is fetched from (see feed_signing.signature_url)."""
        try:
            return signature_url(self.url)
        except ValueError:  # not a URL at all: the feed request itself reports it
            return self.url + ".sig"

    @property
    def signed(self) -> bool:
        """Whether a public key is configured (an unsigned feed is then refused)."""
        return self._public_key is not None

    def forget_validators(self) -> None:
        """Make the next fetch unconditional (a full download and parse)."""
        self._etag = self._last_modified = None

    async def fetch(self) -> FeedFetchResult:
        """Fetch the feed; raise a FeedError subclass on any failure.

        FeedTimeoutError, FeedConnectionError, FeedHttpError (with the status),
        FeedSignatureError (key configured: .sig missing or not matching; the feed is
        then not parsed), FeedFormatError (not JSON, schema errors, over 1 MiB).
        """
        headers: dict[str, str] = {}
        if self._etag:
            headers["If-None-Match"] = self._etag
        if self._last_modified:
            headers["If-Modified-Since"] = self._last_modified
        status, body, response_headers = await self._get(self.url, headers)
        if status == 304:
            if not headers:
                # Nothing to be "not modified" from: a misbehaving server or proxy.
                raise FeedHttpError(status, self.url)
            return FeedFetchResult(None, True, self._etag, self._last_modified)
        if self._public_key is not None:
            sig_url = self.signature_url
            sig_status, signature, _ = await self._get(sig_url, {}, missing_ok=True)
            if sig_status == 404:
                raise FeedSignatureError(
                    "a public key is configured but the feed is not signed "
                    f"({redacted_url(sig_url)} not found)"
                )
            verify_feed_signature(body, signature, self._public_key)
        self.parses += 1
        feed = parse_feed(body, feed_url=self.url)
        self._etag = response_headers.get("ETag")
        self._last_modified = response_headers.get("Last-Modified")
        return FeedFetchResult(feed, False, self._etag, self._last_modified)

    async def _get(
        self, url: str, headers: Mapping[str, str], *, missing_ok: bool = False
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """GET with the client's timeout; return status, body (<= MAX_FEED_BYTES), headers.

        200 and 304 come back, and 404 when `missing_ok`; any other status raises.
        """
        self.requests += 1
        shown = redacted_url(url)
        try:
            # raise_for_status=False: an injected session may set it, and the statuses
            # are mapped to typed errors here.
            async with self._session.get(
                url, headers=headers, timeout=self._timeout, raise_for_status=False
            ) as response:
                status = response.status
                if status not in (200, 304) and not (status == 404 and missing_ok):
                    raise FeedHttpError(status, url)
                if status != 200:
                    return status, b"", response.headers
                if (response.content_length or 0) > MAX_FEED_BYTES:
                    raise FeedFormatError(f"{shown} is larger than {MAX_FEED_BYTES} bytes")
                body = bytearray()
                # Read at most MAX_FEED_BYTES: a runaway answer is cut off, not buffered.
                async for chunk in response.content.iter_chunked(_READ_CHUNK):
                    body += chunk
                    if len(body) > MAX_FEED_BYTES:
                        raise FeedFormatError(f"{shown} is larger than {MAX_FEED_BYTES} bytes")
                return status, bytes(body), response.headers
        except TimeoutError as err:
            raise FeedTimeoutError(
                f"{shown} did not answer within {self._timeout.total} s"
            ) from err
        except aiohttp.InvalidURL as err:
            raise FeedConnectionError(f"{shown} is not a valid URL") from err
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as err:
            # aiohttp's own text may name the URL, or where a redirect led (a signed URL).
            raise FeedConnectionError(
                f"could not fetch {shown}: {redacted_text(str(err))}"
            ) from err
