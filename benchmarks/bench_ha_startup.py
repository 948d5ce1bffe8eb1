"""Home Assistant start-up with 200 ESP OTA entries on one feed: time and feed requests.

Run from the repository root: .venv/bin/python -m benchmarks.bench_ha_startup [--count N]
    [--profile out.prof]
A fleet of simulated devices (simulator/fleet.py) runs in this process, each with its HTTPS
API on a 127.0.0.1 port; one aiohttp feed server on 127.0.0.1 offers every device a newer
release. A real Home Assistant core (the test plugin's async_test_home_assistant, in a
temporary config folder; custom integrations enabled as the plugin's
enable_custom_integrations does, so the integration loads from this repository's
custom_components) gets one esp_ota config entry per device, as the config flow stores
them, all on the one feed. Timed: from the start of the integration's setup (which sets up
every entry) until every entry is loaded and every device's update entity has a state, and
until every update entity offers the feed's release. Prints those times, the feed requests
the feed server saw (the shared coordinator must make it 1) and the entity counts.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import logging
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

from aiohttp import web
from aiohttp.resolver import AsyncResolver
from homeassistant import loader
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_HOST, CONF_MAC, CONF_PORT, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
)

from custom_components.esp_ota.const import (
    CONF_CERT_FINGERPRINT,
    CONF_CHANNEL,
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_REBOOT_TIMEOUT,
    CONF_SECRET,
    DOMAIN,
)
from simulator.fleet import Fleet, FleetDevice, FleetOptions

PROJECT = "esp-ota-demo"
CHIP = "esp32"
OFFERED = "1.1.0"


class FeedServer:
    """One feed on 127.0.0.1 that counts its requests."""

    def __init__(self) -> None:
        release = {
            "project": PROJECT,
            "chip": CHIP,
            "version": OFFERED,
            "url": f"{PROJECT}-{OFFERED}.bin",
            "size": 256 * 1024,
            "sha256": hashlib.sha256(OFFERED.encode()).hexdigest(),
            "summary": f"{PROJECT} {OFFERED}",
        }
        self.body = json.dumps(
            {"format": "esp-ota-feed", "format_version": 1, "releases": [release]}
        ).encode()
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _feed(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(body=self.body, content_type="application/json")

    async def start(self) -> None:
        """Listen on a free 127.0.0.1 port."""
        app = web.Application()
        app.router.add_get("/feed.json", self._feed)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/feed.json"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


def plain_resolver() -> AsyncResolver:
    """aiohttp's resolver, closable the way Home Assistant closes its own one."""
    resolver = AsyncResolver()
    resolver.real_close = resolver.close  # type: ignore[attr-defined]
    return resolver


def entry_for(member: FleetDevice, feed_url: str, **options: Any) -> MockConfigEntry:
    """A config entry as the config flow stores it (data, unique id, title), on the feed;
    `options` adds to (or overrides) the default options."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"{PROJECT} {member.mac[-5:]}",
        unique_id=member.mac,
        data={
            CONF_HOST: member.host,
            CONF_PORT: member.port,
            CONF_SECRET: member.secret,
            CONF_CERT_FINGERPRINT: member.cert_fingerprint,
            CONF_MAC: member.mac,
        },
        options={
            CONF_FEED_URL: feed_url,
            CONF_FEED_PUBLIC_KEY: "",
            CONF_CHANNEL: "stable",
            CONF_REBOOT_TIMEOUT: 180,
            **options,
        },
    )


def update_entity_ids(hass: HomeAssistant, entries: list[MockConfigEntry]) -> list[str]:
    """The stable-channel update entity of every entry."""
    registry = er.async_get(hass)
    return [
        item.entity_id
        for entry in entries
        for item in er.async_entries_for_config_entry(registry, entry.entry_id)
        if item.domain == "update" and item.unique_id.endswith("_firmware")
    ]


async def wait_until(condition: Callable[[], bool], within_s: float) -> None:
    """Poll `condition` every 5 ms (the cost of the check is part of what is measured)."""
    async with asyncio.timeout(within_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


@dataclass
class Figures:
    """What one run measured."""

    loaded_s: float = 0.0
    offered_s: float = 0.0
    feed_requests: int = 0
    registered: int = 0
    with_state: int = 0
    stop_s: float = 0.0


async def measure(
    hass: HomeAssistant, entries: list[MockConfigEntry], feed: FeedServer, figures: Figures
) -> None:
    """Set the integration up (every entry at once) and time it until all is shown."""
    started = time.perf_counter()
    assert await async_setup_component(hass, DOMAIN, {})

    def all_loaded() -> bool:
        if any(entry.state is not ConfigEntryState.LOADED for entry in entries):
            return False
        ids = update_entity_ids(hass, entries)
        return len(ids) == len(entries) and all(hass.states.get(i) for i in ids)

    await wait_until(all_loaded, within_s=120)
    figures.loaded_s = time.perf_counter() - started
    ids = update_entity_ids(hass, entries)

    def all_offered() -> bool:
        return all(
            (state := hass.states.get(entity_id)) is not None
            and state.state == STATE_ON
            and state.attributes.get("latest_version") == OFFERED
            for entity_id in ids
        )

    await wait_until(all_offered, within_s=120)
    figures.offered_s = time.perf_counter() - started
    figures.feed_requests = feed.requests


async def run(count: int, profile: Path | None) -> None:
    """Start the fleet and the feed, then time Home Assistant setting up the entries."""
    fleet = Fleet(FleetOptions(count=count, project=PROJECT, chip=CHIP))
    feed = FeedServer()
    fleet_started = time.perf_counter()
    members = await fleet.start()
    fleet_s = time.perf_counter() - fleet_started
    await feed.start()
    profiler = cProfile.Profile() if profile else None
    figures = Figures()
    try:
        # Home Assistant's resolver asks zeroconf (multicast on every interface); every
        # address here is an IP literal: aiohttp's own resolver, as the plugin's
        # mock_zeroconf_resolver fixture does.
        with (
            tempfile.TemporaryDirectory(prefix="esp-ota-bench-") as config_dir,
            patch(
                "homeassistant.helpers.aiohttp_client._async_make_resolver",
                return_value=plain_resolver(),
            ),
        ):
            async with async_test_home_assistant(config_dir=config_dir) as hass:
                # What the plugin's enable_custom_integrations fixture does.
                hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
                entries = [entry_for(member, feed.url) for member in members]
                for entry in entries:
                    entry.add_to_hass(hass)
                if profiler:
                    profiler.enable()
                await measure(hass, entries, feed, figures)
                if profiler:
                    profiler.disable()
                registry = er.async_get(hass)
                figures.registered = sum(
                    len(er.async_entries_for_config_entry(registry, entry.entry_id))
                    for entry in entries
                )
                figures.with_state = len(hass.states.async_entity_ids(("update", "sensor")))
                stopping = time.perf_counter()
                await hass.async_stop(force=True)
                figures.stop_s = time.perf_counter() - stopping
    finally:
        await feed.stop()
        await fleet.stop()
    report(count, fleet_s, figures)
    if figures.feed_requests != 1:
        raise SystemExit(f"expected one feed request for {count} entries")
    if profiler and profile:
        profiler.dump_stats(profile)
        print(f"profile written to {profile}; top functions by own time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def report(count: int, fleet_s: float, figures: Figures) -> None:
    """Print the figures."""
    loaded_ms = figures.loaded_s / count * 1000
    print(f"devices / entries:        {count} / {count} (one feed)")
    print(f"fleet start-up:           {fleet_s:.2f} s (not part of the figures below)")
    print(f"entries loaded + states:  {figures.loaded_s:.2f} s ({loaded_ms:.1f} ms/entry)")
    print(f"every update offered:     {figures.offered_s:.2f} s")
    print(f"feed requests:            {figures.feed_requests}")
    print(f"entities:                 {figures.registered} registered, {figures.with_state} shown")
    print(f"Home Assistant stop:      {figures.stop_s:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile file")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(arguments.count, arguments.profile))
