"""The shared feed coordinator, against a real feed server on 127.0.0.1."""

from __future__ import annotations

import logging

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.update_coordinator import UpdateFailed

from custom_components.esp_ota.const import DOMAIN
from custom_components.esp_ota.espota.feed_signing import (
    generate_signing_key,
    public_key_text,
    sign_feed,
)
from custom_components.esp_ota.feed_coordinator import (
    FAILURES_BEFORE_REPAIR,
    FEED_COORDINATORS,
    FeedCoordinator,
    FeedCoordinators,
)

from .conftest import FeedServer, feed_document


def shared_feeds(hass: HomeAssistant) -> FeedCoordinators:
    """The feed coordinators the integration's setup makes once per Home Assistant."""
    return hass.data.setdefault(FEED_COORDINATORS, FeedCoordinators(hass))


async def async_acquire_feed_coordinator(
    hass: HomeAssistant, entry_id: str, url: str, public_key_text: str | None
) -> FeedCoordinator:
    """An entry's use of a feed, as its setup asks for it."""
    return await shared_feeds(hass).async_acquire(entry_id, url, public_key_text)


def async_release_feed_coordinator(
    hass: HomeAssistant, entry_id: str, url: str, public_key_text: str | None
) -> None:
    """An entry leaves a feed, as its unload does."""
    shared_feeds(hass).async_release(entry_id, url, public_key_text)


@pytest.fixture(autouse=True)
def one_release(feed_server: FeedServer) -> None:
    """These tests follow a feed of one release at a time."""
    feed_server.body = feed_document("1.0.0")


def feed_issue(hass: HomeAssistant, coordinator: FeedCoordinator) -> ir.IssueEntry | None:
    """The coordinator's repair issue, if raised."""
    return ir.async_get(hass).async_get_issue(DOMAIN, coordinator.repair_issue_id)


async def test_one_request_per_interval_for_every_device(
    hass: HomeAssistant, feed_server: FeedServer
) -> None:
    """Two hundred entries on one feed share one coordinator and one request."""
    coordinators = [
        await async_acquire_feed_coordinator(hass, f"entry{i}", feed_server.url, None)
        for i in range(200)
    ]
    assert len({id(coordinator) for coordinator in coordinators}) == 1
    coordinator = coordinators[0]
    assert feed_server.feed_requests == 1
    assert coordinator.data.releases[0].version == "1.0.0"

    await coordinator.async_refresh()  # unchanged: 304, nothing parsed
    assert feed_server.feed_requests == 2
    assert coordinator.client.parses == 1

    feed_server.body = feed_document("1.1.0")
    await coordinator.async_refresh()
    assert coordinator.data.releases[0].version == "1.1.0"
    assert coordinator.client.parses == 2

    for i in range(200):
        async_release_feed_coordinator(hass, f"entry{i}", feed_server.url, None)
    await hass.async_block_till_done()
    assert hass.data[FEED_COORDINATORS].coordinators == {}


async def test_failing_feed_keeps_last_good_copy_and_raises_repair(
    hass: HomeAssistant, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures keep the data and availability; logged once; repair after a while; cleared."""
    coordinator = await async_acquire_feed_coordinator(hass, "entry", feed_server.url, None)
    good = coordinator.data
    feed_server.status = 500
    caplog.set_level(logging.INFO)
    for attempt in range(1, FAILURES_BEFORE_REPAIR + 1):
        await coordinator.async_refresh()
        assert coordinator.last_update_success is True
        assert coordinator.data is good
        assert coordinator.consecutive_failures == attempt
        raised = feed_issue(hass, coordinator) is not None
        assert raised is (attempt >= FAILURES_BEFORE_REPAIR)
    warnings = [r for r in caplog.records if "failed, keeping the last good copy" in r.message]
    assert len(warnings) == 1
    assert "HTTP 500" in (coordinator.last_error or "")

    feed_server.status = 200
    await coordinator.async_refresh()
    assert coordinator.consecutive_failures == 0
    assert feed_issue(hass, coordinator) is None
    assert any("is back after 3 failures" in r.message for r in caplog.records)
    async_release_feed_coordinator(hass, "entry", feed_server.url, None)
    await hass.async_block_till_done()


async def test_bad_signature_raises_repair_at_once(
    hass: HomeAssistant, feed_server: FeedServer
) -> None:
    """A feed that stops verifying is a repair issue on the first failure."""
    key = generate_signing_key()
    key_text = public_key_text(key)
    feed_server.signature = sign_feed(feed_server.body, key)
    coordinator = await async_acquire_feed_coordinator(hass, "entry", feed_server.url, key_text)
    assert coordinator.data.releases[0].version == "1.0.0"

    feed_server.body = feed_document("6.6.6")  # changed, signature not renewed
    await coordinator.async_refresh()
    issue = feed_issue(hass, coordinator)
    assert issue is not None
    assert issue.translation_key == "feed_bad_signature"
    assert coordinator.data.releases[0].version == "1.0.0"

    feed_server.signature = sign_feed(feed_server.body, key)
    await coordinator.async_refresh()
    assert feed_issue(hass, coordinator) is None
    assert coordinator.data.releases[0].version == "6.6.6"
    async_release_feed_coordinator(hass, "entry", feed_server.url, key_text)
    await hass.async_block_till_done()


async def test_feed_failing_from_the_start(hass: HomeAssistant, feed_server: FeedServer) -> None:
    """With no good copy yet the coordinator reports the failure, translated."""
    feed_server.status = 404
    coordinator = await async_acquire_feed_coordinator(hass, "entry", feed_server.url, None)
    assert coordinator.last_update_success is False
    assert coordinator.client.parses == 0  # no feed, so no data
    error = coordinator.last_exception
    assert isinstance(error, UpdateFailed)
    assert error.translation_key == "feed_failed"
    assert error.translation_placeholders == {
        "url": feed_server.url,
        "error": f"feed server answered HTTP 404 for {feed_server.url}",
    }
    async_release_feed_coordinator(hass, "entry", feed_server.url, None)
    async_release_feed_coordinator(hass, "entry", feed_server.url, None)  # twice is harmless
    await hass.async_block_till_done()


async def test_entries_with_different_keys_get_their_own_coordinator(
    hass: HomeAssistant, feed_server: FeedServer
) -> None:
    """The same URL with and without a key is not the same trust decision."""
    key_text = public_key_text(generate_signing_key())
    plain = await async_acquire_feed_coordinator(hass, "a", feed_server.url, None)
    keyed = await async_acquire_feed_coordinator(hass, "b", feed_server.url, key_text)
    assert plain is not keyed
    # The unsigned feed is refused under a key: nothing parsed, nothing offered.
    assert (keyed.last_update_success, keyed.client.parses) == (False, 0)
    assert plain.client.parses == 1
    async_release_feed_coordinator(hass, "a", feed_server.url, None)
    async_release_feed_coordinator(hass, "b", feed_server.url, key_text)
    await hass.async_block_till_done()
