"""Fetching a feed over HTTP(S): conditional requests, signature check, typed errors.

The aiohttp session is injected (Home Assistant's shared one in the integration). An
unchanged feed costs one request answered 304 and no parsing. The validators (ETag,
Last-Modified) are only kept for a feed that parsed and verified, so a broken feed is
fetched again in full next time rather than being remembered as "not modified".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

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
from .feed_signing import SIGNATURE_SUFFIX, verify_feed_signature

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class FeedFetchResult:
    """What one fetch learned: a new feed, or that the last one still holds."""

    feed: Feed | None  # None when the server answered 304 Not Modified
    not_modified: bool
    etag: str | None
    last_modified: str | None


class FeedClient:
    """Fetches one feed URL, remembering its validators between fetches."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        public_key: Ed25519PublicKey | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._session = session
        self.url = url
        self._public_key = public_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._etag: str | None = None
        self._last_modified: str | None = None
        self.requests = 0  # HTTP requests made (feed and signature), for diagnostics
        self.parses = 0  # feed documents parsed

    async def fetch(self) -> FeedFetchResult:
        """Fetch the feed; raises a FeedError subclass on any failure."""
        headers: dict[str, str] = {}
        if self._etag:
            headers["If-None-Match"] = self._etag
        if self._last_modified:
            headers["If-Modified-Since"] = self._last_modified
        status, body, response_headers = await self._get(self.url, headers)
        if status == 304:
            return FeedFetchResult(None, True, self._etag, self._last_modified)
        if self._public_key is not None:
            signature_url = self.url + SIGNATURE_SUFFIX
            sig_status, signature, _ = await self._get(signature_url, {})
            if sig_status == 404:
                raise FeedSignatureError(
                    f"a public key is configured but the feed is not signed "
                    f"({signature_url} not found)"
                )
            verify_feed_signature(body, signature, self._public_key)
        self.parses += 1
        feed = parse_feed(body, feed_url=self.url)
        self._etag = response_headers.get("ETag")
        self._last_modified = response_headers.get("Last-Modified")
        return FeedFetchResult(feed, False, self._etag, self._last_modified)

    async def _get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        """GET with the client's timeout; returns status, body (<= MAX_FEED_BYTES), headers.

        200 and 304 come back; 404 too (the caller may expect it); anything else raises.
        """
        self.requests += 1
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
                if response.status not in (200, 304, 404):
                    raise FeedHttpError(response.status, url)
                body = bytearray()
                if response.status == 200:
                    # Read at most MAX_FEED_BYTES: a runaway answer is cut off, not buffered.
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > MAX_FEED_BYTES:
                            raise FeedFormatError(f"{url} is larger than {MAX_FEED_BYTES} bytes")
                elif response.status == 404 and not url.endswith(SIGNATURE_SUFFIX):
                    raise FeedHttpError(response.status, url)
                return response.status, bytes(body), response.headers
        except TimeoutError as err:
            raise FeedTimeoutError(f"{url} did not answer within {self._timeout.total} s") from err
        except aiohttp.InvalidURL as err:
            raise FeedConnectionError(f"{url} is not a valid URL") from err
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as err:
            raise FeedConnectionError(f"could not fetch {url}: {err}") from err
