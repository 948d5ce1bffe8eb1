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

from custom_components.esp_ota.espota import feed_client
from custom_components.esp_ota.espota.errors import (
    FeedConnectionError,
    FeedFormatError,
    FeedHttpError,
    FeedSignatureError,
    FeedTimeoutError,
    KeyFormatError,
)
from custom_components.esp_ota.espota.feed import Feed, FeedKind, parse_feed
from custom_components.esp_ota.espota.feed_client import FeedClient, verify_feed_signature
from custom_components.esp_ota.espota.feed_signing import (
    generate_signing_key,
    public_key_text,
    sign_feed,
)

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


# An access token in the feed's URL: no error message may show it.
SECRET = "SECRET123"


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
        self.requests.append((request.path_qs, dict(request.headers)))
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

    sig_status: int = 200

    async def sig(self, request: web.Request) -> web.Response:
        self.requests.append((request.path_qs, dict(request.headers)))
        if self.signature is None:
            return web.Response(status=404)
        return web.Response(status=self.sig_status, body=self.signature)

    async def redirect(self, request: web.Request) -> web.Response:
        self.requests.append((request.path_qs, dict(request.headers)))
        raise web.HTTPFound("/elsewhere/feed.json")

    async def streamed(self, request: web.Request) -> web.StreamResponse:
        """Chunked, no Content-Length: 64 KiB of spaces until the client hangs up."""
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(40):  # 2.5 MiB at most
            await response.write(b" " * 65536)
        return response

    async def truncated(self, request: web.Request) -> web.StreamResponse:
        """Promises 4096 bytes, sends 10, and closes the connection."""
        response = web.StreamResponse(headers={"Content-Length": "4096"})
        await response.prepare(request)
        await response.write(b'{"format":')
        assert request.transport is not None
        request.transport.close()
        return response

    async def always_304(self, request: web.Request) -> web.Response:
        return web.Response(status=304)

    async def leaky_redirect(self, request: web.Request) -> web.Response:
        """A redirect aiohttp refuses, naming its target (with a token) in its error."""
        raise web.HTTPFound(f"ftp://user:{SECRET}@fw.example.com/feed.json?token={SECRET}")


@pytest.fixture
async def feed_server(socket_enabled: None) -> AsyncIterator[FeedServer]:
    """A feed server on 127.0.0.1."""
    server = FeedServer()
    app = web.Application()
    app.router.add_get("/feed.json", server.feed)
    app.router.add_get("/feed.json.sig", server.sig)
    app.router.add_get("/elsewhere/feed.json", server.feed)
    app.router.add_get("/moved/feed.json", server.redirect)
    app.router.add_get("/streamed.json", server.streamed)
    app.router.add_get("/truncated.json", server.truncated)
    app.router.add_get("/always-304.json", server.always_304)
    app.router.add_get("/leaky-redirect.json", server.leaky_redirect)
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
    feed_server: FeedServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second fetch sends the ETag, gets 304, and parses nothing."""
    parsed: list[bytes] = []

    def counting_parse_feed(raw: bytes, *, feed_url: str) -> Feed:
        parsed.append(raw)
        return parse_feed(raw, feed_url=feed_url)

    monkeypatch.setattr(feed_client, "parse_feed", counting_parse_feed)
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
    assert len(parsed) == 1  # the parser itself was not called for the 304
    assert client.requests == 2
    assert feed_server.requests[1][1]["If-None-Match"] == '"v1"'
    assert feed_server.requests[1][1]["If-Modified-Since"] == feed_server.last_modified

    feed_server.etag = '"v2"'
    third = await client.fetch()
    assert third.feed is not None
    assert third.etag == '"v2"'
    assert client.parses == 2
    assert len(parsed) == 2


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
    assert client.signed
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


async def test_oversized_stream_is_cut_off(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """Without a Content-Length the body is read in chunks and dropped past 1 MiB."""
    client = FeedClient(session, f"{feed_server.base_url}/streamed.json")
    with pytest.raises(FeedFormatError, match="larger than 1048576 bytes"):
        await client.fetch()


async def test_connection_closed_mid_body(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """A body that ends before its Content-Length is a connection error, not bad JSON."""
    client = FeedClient(session, f"{feed_server.base_url}/truncated.json")
    with pytest.raises(FeedConnectionError, match="could not fetch"):
        await client.fetch()


async def test_not_modified_without_validators_is_an_error(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """A 304 to an unconditional request has no copy to refer to: an HTTP error."""
    client = FeedClient(session, f"{feed_server.base_url}/always-304.json")
    with pytest.raises(FeedHttpError) as caught:
        await client.fetch()
    assert caught.value.status == 304


async def test_bad_json_and_schema_errors_over_http(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """What the server sends is parsed with the same errors as a local file."""
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    feed_server.body = b"<html>502 Bad Gateway</html>"
    with pytest.raises(FeedFormatError, match="not valid JSON"):
        await client.fetch()
    broken = json.loads(json.dumps(FEED))
    broken["releases"][0]["sha256"] = "nope"
    feed_server.body = json.dumps(broken).encode()
    with pytest.raises(FeedFormatError, match=r"releases\[0\]\.sha256: expected 64 hex digits"):
        await client.fetch()


async def test_relative_urls_resolve_against_the_configured_url(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """After a redirect, release URLs still resolve against the URL the client was given."""
    client = FeedClient(session, f"{feed_server.base_url}/moved/feed.json")
    result = await client.fetch()
    assert result.feed is not None
    assert [path for path, _ in feed_server.requests] == [
        "/moved/feed.json",
        "/elsewhere/feed.json",
    ]
    assert result.feed.url == f"{feed_server.base_url}/moved/feed.json"
    assert result.feed.releases[0].url == f"{feed_server.base_url}/moved/garden.bin"


async def test_web_tools_manifest_over_http(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """An ESPHome manifest is served and read like a feed."""
    feed_server.body = json.dumps(
        {
            "name": "garden",
            "version": "2024.11.1",
            "builds": [{"chipFamily": "ESP32-S3", "ota": {"path": "g.bin", "md5": "ab" * 16}}],
        }
    ).encode()
    result = await FeedClient(session, f"{feed_server.base_url}/feed.json").fetch()
    assert result.feed is not None
    assert result.feed.kind is FeedKind.WEB_TOOLS
    (release,) = result.feed.releases
    assert (release.chip, release.md5, release.sha256) == ("esp32s3", "ab" * 16, None)
    assert release.url == f"{feed_server.base_url}/g.bin"


async def test_signature_keeps_the_query(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """A token in the feed URL's query is sent for the signature too; a text key works."""
    key = generate_signing_key()
    feed_server.signature = sign_feed(feed_server.body, key)
    client = FeedClient(
        session, f"{feed_server.base_url}/feed.json?token=a%2Bb", public_key=public_key_text(key)
    )
    assert client.signature_url == f"{feed_server.base_url}/feed.json.sig?token=a%2Bb"
    assert (await client.fetch()).feed is not None
    assert [path for path, _ in feed_server.requests] == [
        "/feed.json?token=a%2Bb",
        "/feed.json.sig?token=a%2Bb",
    ]


async def test_malformed_key_text_is_refused_at_once(session: aiohttp.ClientSession) -> None:
    """A bad key is a configuration error, found before any request."""
    with pytest.raises(KeyFormatError):
        FeedClient(session, "https://h/feed.json", public_key="not a key")


async def test_signature_server_error(
    feed_server: FeedServer, session: aiohttp.ClientSession
) -> None:
    """A failing .sig request is an HTTP error naming the signature's URL."""
    key = generate_signing_key()
    feed_server.signature = b"x"
    feed_server.sig_status = 503
    client = FeedClient(session, f"{feed_server.base_url}/feed.json", public_key=key.public_key())
    with pytest.raises(FeedHttpError) as caught:
        await client.fetch()
    assert caught.value.status == 503
    assert caught.value.url.endswith("/feed.json.sig")


async def test_session_raising_for_status_still_gives_typed_errors(
    feed_server: FeedServer, socket_enabled: None
) -> None:
    """An injected session with raise_for_status=True changes nothing: 404 is still an
    HTTP error for the feed, and "not signed" for the signature."""
    async with aiohttp.ClientSession(raise_for_status=True) as strict:
        key = generate_signing_key()
        client = FeedClient(
            strict, f"{feed_server.base_url}/feed.json", public_key=key.public_key()
        )
        with pytest.raises(FeedSignatureError, match="not signed"):
            await client.fetch()
        feed_server.status = 404
        with pytest.raises(FeedHttpError):
            await client.fetch()


async def test_forget_validators(feed_server: FeedServer, session: aiohttp.ClientSession) -> None:
    """After forget_validators the next fetch is a full download."""
    client = FeedClient(session, f"{feed_server.base_url}/feed.json")
    await client.fetch()
    client.forget_validators()
    result = await client.fetch()
    assert result.feed is not None
    assert "If-None-Match" not in feed_server.requests[1][1]
    assert not client.signed


async def test_signature_url_of_a_broken_url(session: aiohttp.ClientSession) -> None:
    """Even an unparsable URL has a signature URL to show; fetching reports the URL."""
    client = FeedClient(session, "http://[::1/feed.json")
    assert client.signature_url == "http://[::1/feed.json.sig"


def test_offline_verification_is_exported() -> None:
    """verify_feed_signature is reachable from the client module for offline checks."""
    key = generate_signing_key()
    body = json.dumps(FEED).encode()
    verify_feed_signature(body, sign_feed(body, key), public_key_text(key))
    with pytest.raises(FeedSignatureError):
        verify_feed_signature(body + b"\n", sign_feed(body, key), public_key_text(key))


@pytest.mark.parametrize("credentials", ["query", "userinfo"])
@pytest.mark.parametrize(
    ("failure", "error", "shown"),
    [
        ("404", FeedHttpError, "feed server answered HTTP 404 for {base}/feed.json{q}"),
        ("sig 503", FeedHttpError, "feed server answered HTTP 503 for {base}/feed.json.sig{q}"),
        ("not signed", FeedSignatureError, "not signed ({base}/feed.json.sig{q} not found)"),
        ("timeout", FeedTimeoutError, "{base}/feed.json{q} did not answer within 0.2 s"),
        ("oversized", FeedFormatError, "{base}/streamed.json{q} is larger than 1048576 bytes"),
        ("truncated", FeedConnectionError, "could not fetch {base}/truncated.json{q}: "),
        ("redirect", FeedConnectionError, "ftp://fw.example.com/feed.json?REDACTED"),
    ],
)
async def test_errors_never_show_a_token_or_password_of_the_url(
    feed_server: FeedServer,
    session: aiohttp.ClientSession,
    *,
    credentials: str,
    failure: str,
    error: type[Exception],
    shown: str,
) -> None:
    """The URL in every error is redacted (query ?REDACTED, no user:password); the
    request still went to the real URL, token and all."""
    path = {"oversized": "/streamed.json", "truncated": "/truncated.json"}.get(
        failure, "/leaky-redirect.json" if failure == "redirect" else "/feed.json"
    )
    host = feed_server.base_url.removeprefix("http://")
    if credentials == "query":
        url, query = f"http://{host}{path}?token={SECRET}", "?REDACTED"
    else:
        url, query = f"http://user:{SECRET}@{host}{path}", ""
    key = None
    if failure == "404":
        feed_server.status = 404
    elif failure in ("sig 503", "not signed"):
        key = generate_signing_key().public_key()
        feed_server.signature = b"x" if failure == "sig 503" else None
        feed_server.sig_status = 503
    elif failure == "timeout":
        feed_server.delay = 2
    client = FeedClient(session, url, public_key=key, timeout=0.2)
    with pytest.raises(error) as caught:
        await client.fetch()
    message = str(caught.value)
    assert SECRET not in message
    assert shown.format(base=feed_server.base_url, q=query) in message
    if isinstance(caught.value, FeedHttpError):
        assert SECRET in caught.value.url  # the attribute is the URL requested
    if credentials == "query" and feed_server.requests:
        assert feed_server.requests[0][0].endswith(f"?token={SECRET}")
