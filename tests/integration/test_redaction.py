"""A feed URL's access token (query or user:password) never leaves Home Assistant: not in
log lines, diagnostics, repair issues, the stored job record or an install's error, while
the feed and its images are still fetched with it (the server here refuses them without)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from homeassistant.components.update.const import DOMAIN as UPDATE_DOMAIN
from homeassistant.components.update.const import SERVICE_INSTALL
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.esp_ota.const import DOMAIN
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.feed_coordinator import FAILURES_BEFORE_REPAIR, FeedCoordinator
from custom_components.esp_ota.firmware import FIRMWARE_SERVICE

from .conftest import CHIP, PROJECT, SimDevice, make_entry, setup_entry, wait_for_event_stream

SECRET = "SECRET123"
FIRMWARE = "update.garden_34_56_firmware"
IMAGE = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=64 * 1024)


@dataclass
class TokenServer:
    """A feed and its image that are only served to a request carrying the token, in the
    query (?token=) or as the user:password of the URL (HTTP Basic)."""

    base: str = ""  # http://127.0.0.1:<port>
    image_url: str = "garden-1.1.0.bin"  # what the feed lists
    feed_status: int = 200
    refused: list[str] = field(default_factory=list)  # requests without the token
    served: list[str] = field(default_factory=list)  # paths served with the token

    def _authorized(self, request: web.Request) -> bool:
        basic = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
        if request.query.get("token") == SECRET or request.headers.get("Authorization") == basic:
            self.served.append(request.path)
            return True
        self.refused.append(request.path)
        return False

    async def feed(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        if self.feed_status != 200:
            return web.Response(status=self.feed_status)
        release = {
            "project": PROJECT,
            "chip": CHIP,
            "version": "1.1.0",
            "url": self.image_url,
            "size": len(IMAGE),
            "sha256": hashlib.sha256(IMAGE).hexdigest(),
        }
        return web.json_response(
            {"format": "esp-ota-feed", "format_version": 1, "releases": [release]}
        )

    async def image(self, request: web.Request) -> web.StreamResponse:
        """Half the image, then the connection breaks (a broken download)."""
        if not self._authorized(request):
            return web.Response(status=401)
        response = web.StreamResponse(headers={"Content-Length": str(len(IMAGE))})
        await response.prepare(request)
        await response.write(IMAGE[: len(IMAGE) // 2])
        assert request.transport is not None
        request.transport.close()
        return response


@pytest.fixture
async def token_server(socket_enabled: None) -> AsyncIterator[TokenServer]:
    """The server on 127.0.0.1; no access log (its lines would name the token: they are
    the test server's, not Home Assistant's)."""
    server = TokenServer()
    app = web.Application()
    app.add_routes([web.get("/feed.json", server.feed), web.get("/{name}", server.image)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        server.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield server
    finally:
        await runner.cleanup()


def secret_free(what: str, value: Any) -> None:
    """Assert that `value`, as JSON (or text), does not contain the token."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    assert SECRET not in text, f"{what} shows the token: {text}"


@pytest.mark.parametrize("credentials", ["query", "userinfo"])
async def test_a_token_in_the_feed_url_is_never_shown(
    hass: HomeAssistant,
    sim_device: SimDevice,
    token_server: TokenServer,
    *,
    hass_client: ClientSessionGenerator,
    hass_storage: dict[str, Any],
    issue_registry: ir.IssueRegistry,
    caplog: pytest.LogCaptureFixture,
    credentials: str,
) -> None:
    """The feed fails (404) from the start, works with the token, its image download
    breaks, the feed fails for long enough to raise a repair: every place that shows the
    feed's or the image's URL shows it redacted."""
    caplog.set_level(logging.DEBUG)
    host = token_server.base.removeprefix("http://")
    if credentials == "query":
        feed_url = f"{token_server.base}/feed.json?token={SECRET}"
        shown_feed_url = f"{token_server.base}/feed.json?REDACTED"
        # A query is not carried over to relative references: a signed image URL has its
        # own (as a CDN's does).
        token_server.image_url = f"{token_server.base}/garden-1.1.0.bin?token={SECRET}"
        shown_image_url = f"{token_server.base}/garden-1.1.0.bin?REDACTED"
    else:
        feed_url = f"http://user:{SECRET}@{host}/feed.json"
        shown_feed_url = f"{token_server.base}/feed.json"
        # A relative reference keeps the feed's user:password.
        shown_image_url = f"{token_server.base}/garden-1.1.0.bin"

    token_server.feed_status = 404
    entry = make_entry(sim_device, feed_url=feed_url)
    await setup_entry(hass, entry)
    state = hass.states.get(FIRMWARE)
    assert state is not None
    assert state.state == STATE_OFF  # no feed yet
    feed: FeedCoordinator | None = entry.runtime_data.feed
    assert feed is not None
    assert f"Error fetching ESP OTA feed {shown_feed_url} data" in caplog.text

    token_server.feed_status = 200
    await feed.async_refresh()
    await hass.async_block_till_done()
    state = hass.states.get(FIRMWARE)
    assert state is not None
    assert (state.state, state.attributes["latest_version"]) == (STATE_ON, "1.1.0")

    with pytest.raises(HomeAssistantError) as failed:
        await hass.services.async_call(
            UPDATE_DOMAIN, SERVICE_INSTALL, {ATTR_ENTITY_ID: FIRMWARE}, blocking=True
        )
    assert failed.value.translation_key == "install_image_unavailable"
    placeholders = failed.value.translation_placeholders or {}
    assert f"could not download {shown_image_url}" in placeholders["error"]
    secret_free("the install's error", [str(failed.value), placeholders])
    # The token was sent: the image was served (half of it), not refused.
    assert "/garden-1.1.0.bin" in token_server.served

    token_server.feed_status = 404
    for _ in range(FAILURES_BEFORE_REPAIR):
        await feed.async_refresh()
    await hass.async_block_till_done()
    issue = issue_registry.async_get_issue(DOMAIN, feed.repair_issue_id)
    assert issue is not None
    assert issue.translation_placeholders == {
        "url": shown_feed_url,
        "error": f"feed server answered HTTP 404 for {shown_feed_url}",
    }
    assert token_server.refused == []  # every request carried the token

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["entry"]["options"]["feed_url"] == shown_feed_url
    assert diagnostics["feed"]["url"] == shown_feed_url
    assert diagnostics["feed"]["last_error"] == issue.translation_placeholders["error"]
    record = diagnostics["install"]["record"]
    assert record["reason"] == "image_unavailable"
    assert shown_image_url in record["message"]
    secret_free("diagnostics", diagnostics)

    await hass.data[FIRMWARE_SERVICE].jobs.async_flush()
    stored = hass_storage[f"{DOMAIN}.jobs"]["data"][sim_device.mac]
    assert shown_image_url in stored["message"]
    secret_free("the stored job record", stored)

    secret_free(
        "repair issues",
        [
            (issue_id, entry.translation_placeholders)
            for (domain, issue_id), entry in issue_registry.issues.items()
            if domain == DOMAIN
        ],
    )
    secret_free("entity states", [state.as_dict() for state in hass.states.async_all()])
    assert f"Feed {shown_feed_url} failed, keeping the last good copy" in caplog.text
    secret_free("the log", caplog.text)
    await wait_for_event_stream(sim_device)


async def test_a_repair_named_by_the_url_itself_is_removed(
    hass: HomeAssistant,
    sim_device: SimDevice,
    token_server: TokenServer,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Earlier versions named the feed's repair issue by its URL, token and all; the
    issue registry keeps such ids across restarts, so following the feed removes it."""
    feed_url = f"{token_server.base}/feed.json?token={SECRET}"
    legacy = f"feed_unavailable_{feed_url}"
    ir.async_create_issue(
        hass,
        DOMAIN,
        legacy,
        is_fixable=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key="feed_failing",
        translation_placeholders={"url": feed_url, "error": "HTTP 404"},
    )
    await setup_entry(hass, make_entry(sim_device, feed_url=feed_url))
    assert issue_registry.async_get_issue(DOMAIN, legacy) is None
    secret_free("repair issues", [issue_id for (_, issue_id) in issue_registry.issues])
    await wait_for_event_stream(sim_device)
