"""Fetching feeds from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from custom_components.esp_ota.espota.errors import (
    FeedConnectionError,
    FeedFormatError,
    FeedHttpError,
    FeedSignatureError,
    FeedTimeoutError,
)
from custom_components.esp_ota.espota.feed_client import FeedClient
from custom_components.esp_ota.espota.feed_signing import generate_signing_key, sign_feed

FEED = {
    "format": "esp-ota-feed",
    "format_version": 1,
    "releases": [
        {
            "project": "garden",
            "chip": "esp32",
            "version": "1.0.0",
            "url": "garden.bin",
            "size": 4096,
            "sha256": "cd" * 32,
        }
    ],
}


@dataclass
class FeedServer:
    """What the test server serves and what it saw."""

    base_url: str = ""
    body: bytes = json.dumps(FEED).encode()
    signature: bytes | None = None
    etag: str | None = '"v1"'
    last_modified: str | None = "Wed, 25 Nov 2026 10:00:00 GMT"
    status: int = 200
    delay: float = 0.0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def feed(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers)))
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status)
        if self.etag and request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304)
        if (
            not self.etag
            and self.last_modified
            and request.headers.get("If-Modified-Since") == self.last_modified
        ):
            return web.Response(status=304)
        headers = {}
        if self.etag:
            headers["ETag"] = self.etag
        if self.last_modified:
            headers["Last-Modified"] = self.last_modified
        return web.Response(body=self.body, headers=headers, content_type="application/json")

    async def sig(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers)))
        if self.signature is None:
            return web.Response(status=404)
        return web.Response(body=self.signature)


@pytest.fixture
async def feed_server(socket_enabled: None) -> AsyncIterator[FeedServer]:
    """A feed server on 127.0.0.1."""
    server = FeedServer()
    app = web.Application()
    app.router.add_get("/feed.json", server.feed)
    app.router.add_get("/feed.json.sig", server.sig)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base_url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed after the test."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def test_fetch_then_not_modified_costs_no_parsing(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """The second fetch sends the ETag, gets 304, and parses nothing."""
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    first = await client.fetch()
    assert first.feed is not None
    assert first.not_modified is False
    assert first.etag == '"v1"'
    assert first.feed.releases[0].url == f"{feed_server.base_url}/garden.bin"
    assert client.parses == 1

    second = await client.fetch()
    assert second.not_modified is True
    assert second.feed is None
    assert client.parses == 1
    assert client.requests == 2
    assert feed_server.requests[1][1]["If-None-Match"] == '"v1"'
    assert feed_server.requests[1][1]["If-Modified-Since"] == feed_server.last_modified

    feed_server.etag = '"v2"'
    third = await client.fetch()
    assert third.feed is not None
    assert third.etag == '"v2"'
    assert client.parses == 2


async def test_last_modified_alone(feed_server: FeedServer, session: aiohttp.ClientSession) -> None:
    """A server with only Last-Modified gets If-Modified-Since and answers 304."""
    feed_server.etag = None
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    assert (await client.fetch()).last_modified == feed_server.last_modified
    result = await client.fetch()
    assert result.not_modified
    assert "If-None-Match" not in feed_server.requests[1][1]


async def test_broken_feed_is_not_remembered(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """A feed that fails to parse leaves no validators: the next fetch is a full one."""
    feed_server.body = b'{"format": "esp-ota-feed"}'
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    with pytest.raises(FeedFormatError, match="format_version: missing"):
        await client.fetch()
    feed_server.body = json.dumps(FEED).encode()
    result = await client.fetch()
    assert result.feed is not None
    assert "If-None-Match" not in feed_server.requests[1][1]


@pytest.mark.parametrize("status", [404, 500, 403])
async def test_http_errors(
    feed_server: FeedServer, session: aiohttp.ClientSession, status: int
) -> None:
    """HTTP errors become FeedHttpError with the status."""
    feed_server.status = status
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    with pytest.raises(FeedHttpError) as caught:
        await client.fetch()
    assert caught.value.status == status
    assert str(status) in str(caught.value)


async def test_timeout(feed_server: FeedServer, session: aiohttp.ClientSession) -> None:
    """A server slower than the timeout gives FeedTimeoutError."""
    feed_server.delay = 2
    client = FeedClient(session, f"{feed_server.base_url}/feed.json", timeout=0.2)
    with pytest.raises(FeedTimeoutError, match=r"did not answer within 0\.2 s"):
        await client.fetch()


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    """Nobody listening gives FeedConnectionError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = FeedClient(session, f"http://127.0.0.1:{port}/feed.json")
    with pytest.raises(FeedConnectionError, match="could not fetch"):
        await client.fetch()


async def test_invalid_url(session: aiohttp.ClientSession) -> None:
    """A URL aiohttp cannot use is a connection error that says so."""
    client = FeedClient(session, "http://[::1/feed.json")
    with pytest.raises(FeedConnectionError):
        await client.fetch()


async def test_oversized_feed(feed_server: FeedServer, session: aiohttp.ClientSession) -> None:
    """A huge document is cut off and refused, not read into memory."""
    feed_server.body = b" " * (1024 * 1024 + 10)
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    with pytest.raises(FeedFormatError, match="larger than"):
        await client.fetch()


async def test_signed_feed(feed_server: FeedServer, session: aiohttp.ClientSession) -> None:
    """With a key configured the signature is fetched and checked."""
    key = generate_signing_key()
    feed_server.signature = sign_feed(feed_server.body, key)
    client = FeedClient(session, f"{feed_server.base_url}/feed.json", public_key=key.public_key())
    result = await client.fetch()
    assert result.feed is not None
    assert [path for path, _ in feed_server.requests] == ["/feed.json", "/feed.json.sig"]
    # Not modified: neither the feed nor its signature is fetched or checked again.
    assert (await client.fetch()).not_modified
    assert [path for path, _ in feed_server.requests][2:] == ["/feed.json"]


async def test_unsigned_feed_refused_when_key_configured(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """No .sig with a key configured: refused."""
    key = generate_signing_key()
    client = FeedClient(session, f"{feed_server.base_url}/feed.json", public_key=key.public_key())
    with pytest.raises(FeedSignatureError, match="not signed"):
        await client.fetch()


async def test_badly_signed_feed_refused(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """A signature by another key, or over other bytes, is refused and nothing parsed."""
    ours, theirs = generate_signing_key(), generate_signing_key()
    feed_server.signature = sign_feed(feed_server.body, theirs)
    client = FeedClient(session, f"{feed_server.base_url}/feed.json", public_key=ours.public_key())
    with pytest.raises(FeedSignatureError, match="does not match"):
        await client.fetch()
    feed_server.signature = sign_feed(feed_server.body + b" ", ours)
    with pytest.raises(FeedSignatureError, match="does not match"):
        await client.fetch()
    assert client.parses == 0


async def test_unsigned_feed_accepted_without_key(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """Without a key, no signature is asked for."""
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    assert (await client.fetch()).feed is not None
    assert [path for path, _ in feed_server.requests] == ["/feed.json"]
