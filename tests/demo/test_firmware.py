"""The demo's firmware and feed: built, signed, served over real HTTP, read by the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from custom_components.esp_ota.espota.feed import Channel, parse_feed
from custom_components.esp_ota.espota.feed_client import FeedClient
from custom_components.esp_ota.espota.feed_signing import verify_feed_signature
from custom_components.esp_ota.espota.publisher import read_image
from demo.feed_server import FeedServer
from demo.firmware import RELEASES, build_and_publish

IMAGE_SIZE = 64 * 1024


def test_every_release_is_published_signed(tmp_path: Path) -> None:
    """One feed with each release on its channel, signed by the kept key; the crashing
    release is named for the simulator."""
    published = build_and_publish(tmp_path, project="garden", chip="esp32", image_size=IMAGE_SIZE)

    feed_bytes = published.feed_path.read_bytes()
    signature = published.feed_path.with_name("feed.json.sig").read_bytes()
    verify_feed_signature(feed_bytes, signature, published.public_key)
    feed = parse_feed(feed_bytes, feed_url=published.feed_path.resolve().as_uri())
    assert {(r.version, r.channel) for r in feed.releases} == {
        ("1.1.0", Channel.STABLE),
        ("1.2.0b1", Channel.BETA),
    }
    for release in feed.releases:
        image = published.feed_dir / "firmware" / f"garden-{release.version}-esp32.bin"
        info = read_image(image)
        assert (info.app.project_name, info.app.version, info.chip) == (
            "garden",
            release.version,
            "esp32",
        )
        assert release.size == IMAGE_SIZE
    assert published.crash_versions == {r.version for r in RELEASES if r.crashes_on_boot}
    assert published.crash_versions == {"1.2.0b1"}
    assert (tmp_path / "keys" / "feed.key").stat().st_mode & 0o777 == 0o600


def test_a_second_run_keeps_the_key(tmp_path: Path) -> None:
    """A restarted demo must still match the public key Home Assistant was given."""
    first = build_and_publish(tmp_path, project="garden", chip="esp32", image_size=IMAGE_SIZE)
    second = build_and_publish(tmp_path, project="garden", chip="esp32", image_size=IMAGE_SIZE)
    assert second.public_key == first.public_key
    feed = parse_feed(second.feed_path.read_bytes(), feed_url="https://h/feed.json")
    assert len(feed.releases) == len(RELEASES)  # republished, not appended to the old feed


@pytest.mark.usefixtures("socket_enabled")
async def test_feed_server_serves_what_the_client_verifies(tmp_path: Path) -> None:
    """The feed, its signature and the images over http://127.0.0.1, as Home Assistant
    reads them; after stop nothing listens."""
    published = await asyncio.to_thread(
        build_and_publish, tmp_path, project="garden", chip="esp32", image_size=IMAGE_SIZE
    )
    server = FeedServer(published.feed_dir)
    await server.start()
    try:
        assert server.port > 0
        async with aiohttp.ClientSession() as session:
            client = FeedClient(
                session, server.base_url + "feed.json", public_key=published.public_key
            )
            result = await client.fetch()
            assert result.feed is not None
            release = next(r for r in result.feed.releases if r.version == "1.1.0")
            assert release.url == server.base_url + "firmware/garden-1.1.0-esp32.bin"
            async with session.get(release.url) as response:
                body = await response.read()
            expected = (published.feed_dir / "firmware" / "garden-1.1.0-esp32.bin").read_bytes()
            assert body == expected
        # Counted by path, so a benchmark can tell feed reads from downloads.
        assert server.requests == {
            "/feed.json": 1,
            "/feed.json.sig": 1,
            "/firmware/garden-1.1.0-esp32.bin": 1,
        }
    finally:
        await server.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(server.base_url + "feed.json")
