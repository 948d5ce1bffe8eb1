"""The feed as the entities see it: shared by every entry, failing, recovering, signed."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from unittest.mock import patch

from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import (
    ClientSessionGenerator,
    WebSocketGenerator,
)

from custom_components.esp_ota import feed_coordinator
from custom_components.esp_ota.const import (
    CONF_CHANNEL,
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_REBOOT_TIMEOUT,
    DOMAIN,
)
from custom_components.esp_ota.espota.feed_signing import (
    generate_signing_key,
    public_key_text,
    sign_feed,
)
from custom_components.esp_ota.feed_coordinator import (
    FAILURES_BEFORE_REPAIR,
    FEED_COORDINATORS,
    FeedCoordinator,
)

from .conftest import (
    CHIP,
    PROJECT,
    FeedServer,
    SimDevice,
    StartDevice,
    feed_document,
    make_entry,
    setup_entry,
    wait_for,
    wait_for_event_stream,
)

FIRMWARE = "update.garden_34_56_firmware"
# The shortened feed interval (an hour in use).
INTERVAL = timedelta(seconds=3)


def titled(sim: SimDevice, title: str, **options: str) -> MockConfigEntry:
    """make_entry's entry under another title (entity ids follow the device's name)."""
    made = make_entry(sim, **options)
    return MockConfigEntry(
        domain=DOMAIN, title=title, unique_id=sim.mac, data=made.data, options=made.options
    )


def feed_of(entry: MockConfigEntry) -> FeedCoordinator:
    """The entry's feed coordinator (it must have one)."""
    feed: FeedCoordinator | None = entry.runtime_data.feed
    assert feed is not None
    return feed


def offer(hass: HomeAssistant, entity_id: str = FIRMWARE) -> tuple[str, str]:
    """An update entity's state and the version it offers."""
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state, state.attributes["latest_version"]


def feed_issue(hass: HomeAssistant, feed: FeedCoordinator) -> ir.IssueEntry | None:
    """The feed's repair issue, if raised."""
    return ir.async_get(hass).async_get_issue(DOMAIN, feed.repair_issue_id)


async def test_every_entry_shares_one_feed_request_per_interval(
    hass: HomeAssistant, start_device: StartDevice, feed_server: FeedServer
) -> None:
    """Three devices on one feed: one request at start, then one (conditional) per interval.

    The interval is shortened rather than the clock jumped: a jump of an hour would also
    fire every TLS handshake and read timeout of the devices' connections."""
    sims = [await start_device() for _ in range(3)]
    entries = [titled(sim, f"garden {i}", feed_url=feed_server.url) for i, sim in enumerate(sims)]
    with patch(f"{feed_coordinator.__name__}.FEED_UPDATE_INTERVAL", INTERVAL):
        for entry in entries:
            await setup_entry(hass, entry)
    feed = feed_of(entries[0])
    assert all(feed_of(entry) is feed for entry in entries)
    assert feed_server.feed_requests == 1
    entity_ids = [f"update.garden_{i}_firmware" for i in range(3)]
    assert [offer(hass, entity_id) for entity_id in entity_ids] == [(STATE_ON, "1.1.0")] * 3

    await wait_for(lambda: feed_server.feed_requests >= 2)
    # Three coordinators would have asked three times by now; the next interval is far.
    await asyncio.sleep(INTERVAL.total_seconds() / 4)
    assert feed_server.feed_requests == 2
    assert feed.client.parses == 1  # 304: the copy held is current
    for sim in sims:
        await wait_for_event_stream(sim)


async def test_a_failing_feed_keeps_the_offer_raises_a_repair_and_recovers(
    hass: HomeAssistant, sim_device: SimDevice, feed_server: FeedServer
) -> None:
    """Nothing goes unavailable; the repair comes after sustained failure, then clears."""
    entry = make_entry(sim_device, feed_url=feed_server.url)
    await setup_entry(hass, entry)
    feed = feed_of(entry)
    feed_server.status = 503
    for attempt in range(1, FAILURES_BEFORE_REPAIR + 1):
        await feed.async_refresh()
        await hass.async_block_till_done()
        assert offer(hass) == (STATE_ON, "1.1.0")
        assert (feed_issue(hass, feed) is not None) is (attempt >= FAILURES_BEFORE_REPAIR)
    issue = feed_issue(hass, feed)
    assert issue is not None
    assert issue.translation_key == "feed_failing"
    assert issue.translation_placeholders == {
        "url": feed_server.url,
        "error": f"feed server answered HTTP 503 for {feed_server.url}",
    }

    feed_server.status = 200
    feed_server.body = feed_document("1.0.0", "1.1.0", "1.2.0")
    await feed.async_refresh()
    await hass.async_block_till_done()
    assert feed_issue(hass, feed) is None
    assert offer(hass) == (STATE_ON, "1.2.0")  # the feed pushes to the entity itself
    await wait_for_event_stream(sim_device)


async def test_a_feed_down_at_start_does_not_hold_the_device_back(
    hass: HomeAssistant, sim_device: SimDevice, feed_server: FeedServer
) -> None:
    """The entry loads and shows the firmware; the offer appears when the feed does."""
    feed_server.status = 500
    entry = make_entry(sim_device, feed_url=feed_server.url)
    await setup_entry(hass, entry)
    assert offer(hass) == (STATE_OFF, "1.0.0")
    feed_server.status = 200
    await feed_of(entry).async_refresh()
    await hass.async_block_till_done()
    assert offer(hass) == (STATE_ON, "1.1.0")
    await wait_for_event_stream(sim_device)


async def test_the_last_entry_leaving_a_feed_clears_its_repair(
    hass: HomeAssistant, sim_device: SimDevice, feed_server: FeedServer
) -> None:
    """A repair about a feed nobody follows any more goes with it."""
    entry = make_entry(sim_device, feed_url=feed_server.url)
    await setup_entry(hass, entry)
    await wait_for_event_stream(sim_device)
    feed = feed_of(entry)
    feed_server.status = 500
    for _ in range(FAILURES_BEFORE_REPAIR):
        await feed.async_refresh()
    assert feed_issue(hass, feed) is not None
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert feed_issue(hass, feed) is None


async def test_a_signed_feed_is_offered_and_a_forged_one_is_not(
    hass: HomeAssistant,
    sim_device: SimDevice,
    feed_server: FeedServer,
    hass_client: ClientSessionGenerator,
) -> None:
    """With a key, a feed whose signature no longer matches offers nothing new."""
    key = generate_signing_key()
    feed_server.signature = sign_feed(feed_server.body, key)
    entry = make_entry(sim_device, feed_url=feed_server.url, public_key=public_key_text(key))
    await setup_entry(hass, entry)
    assert offer(hass) == (STATE_ON, "1.1.0")

    feed_server.body = feed_document("1.0.0", "6.6.6")  # changed, signature not renewed
    feed = feed_of(entry)
    await feed.async_refresh()
    await hass.async_block_till_done()
    assert offer(hass) == (STATE_ON, "1.1.0")  # the last good, signed copy
    issue = feed_issue(hass, feed)
    assert issue is not None
    assert issue.translation_key == "feed_bad_signature"

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["entry"]["options"]["feed_public_key"] == "**REDACTED**"
    assert public_key_text(key) not in str(diagnostics)
    assert diagnostics["feed"]["consecutive_failures"] == 1
    assert "signature" in diagnostics["feed"]["last_error"]
    await wait_for_event_stream(sim_device)


async def test_release_notes_of_a_bare_release_and_of_no_release(
    hass: HomeAssistant,
    start_device: StartDevice,
    feed_server: FeedServer,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """A release with only the required fields gets a one-line note; no feed, no notes."""
    release = {
        "project": PROJECT,
        "chip": CHIP,
        "version": "1.1.0",
        "url": "garden-1.1.0.bin",
        "size": 65536,
        "sha256": "ab" * 32,
    }
    feed_server.body = json.dumps(
        {"format": "esp-ota-feed", "format_version": 1, "releases": [release]}
    ).encode()
    with_feed, without_feed = await start_device(), await start_device()
    await setup_entry(hass, titled(with_feed, "fed", feed_url=feed_server.url))
    await setup_entry(hass, titled(without_feed, "bare"))
    entity = "update.fed_firmware"
    state = hass.states.get(entity)
    assert state is not None
    assert state.attributes["release_summary"] is None
    assert state.attributes["release_url"] is None

    client = await hass_ws_client(hass)
    notes = []
    for request_id, entity_id in enumerate((entity, "update.bare_firmware"), start=1):
        await client.send_json(
            {"id": request_id, "type": "update/release_notes", "entity_id": entity_id}
        )
        response = await client.receive_json()
        assert response["success"] is True, response
        notes.append(response["result"])
    assert notes == ["**garden 1.1.0** for esp32c3", None]
    for sim in (with_feed, without_feed):
        await wait_for_event_stream(sim)


async def test_changing_the_feed_key_releases_the_old_coordinator(
    hass: HomeAssistant, sim_device: SimDevice, feed_server: FeedServer
) -> None:
    """After a key change only the new (URL, key) coordinator is left, polling."""
    entry = make_entry(sim_device, feed_url=feed_server.url)
    await setup_entry(hass, entry)
    await wait_for_event_stream(sim_device)
    key = public_key_text(generate_signing_key())
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            CONF_FEED_URL: feed_server.url,
            CONF_FEED_PUBLIC_KEY: key,
            CONF_CHANNEL: "stable",
            CONF_REBOOT_TIMEOUT: 180,
        },
    )
    await hass.async_block_till_done()
    await wait_for_event_stream(sim_device)
    assert list(hass.data[FEED_COORDINATORS].coordinators) == [(feed_server.url, key)]
