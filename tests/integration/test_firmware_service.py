"""The shared install machinery on its own: the queue's order and limits, stored jobs that
cannot be read, and the logbook's lines."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers.translation import async_get_translations
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.esp_ota.const import DOMAIN, EVENT_UPDATE_FINISHED
from custom_components.esp_ota.espota.firmware_store import StoredImage
from custom_components.esp_ota.espota.image import parse_image
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.firmware import (
    SERVER_IDLE_CHECK_S,
    FirmwareService,
    InstallQueue,
)
from custom_components.esp_ota.logbook import async_describe_events, describe_update_finished


async def hold(queue: InstallQueue, order: list[str], name: str, release: asyncio.Event) -> None:
    """Take a slot, note it, keep it until `release` is set."""
    async with queue.slot():
        order.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_queue_hands_slots_over_in_order() -> None:
    """Beyond the limit installs wait; a freed slot goes to the longest waiter."""
    queue = InstallQueue()
    queue.set_limit("a", 1)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "xyz"}
    tasks = [asyncio.create_task(hold(queue, order, name, releases[name])) for name in "xyz"]
    await settle()
    assert order == ["x"]
    assert (queue.running, queue.waiting) == (1, 2)
    releases["x"].set()
    await settle()
    assert order == ["x", "y"]
    releases["y"].set()
    releases["z"].set()
    await asyncio.gather(*tasks)
    assert order == ["x", "y", "z"]
    assert (queue.running, queue.waiting) == (0, 0)


async def test_queue_limit_is_the_smallest_and_raising_it_wakes_waiters() -> None:
    """The smallest limit of the loaded entries applies; a larger one lets more run."""
    queue = InstallQueue()
    assert queue.limit == 2  # nothing loaded: the default
    queue.set_limit("a", 3)
    queue.set_limit("b", 1)
    assert queue.limit == 1
    order: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(queue, order, name, release)) for name in "xyz"]
    await settle()
    assert order == ["x"]
    queue.set_limit("b", None)  # entry b unloads: a's 3 applies
    await settle()
    assert sorted(order) == ["x", "y", "z"]
    release.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_loses_its_place_and_passes_a_slot_on() -> None:
    """Cancelled while waiting: gone from the queue. Cancelled just as its turn came: the
    slot goes to the next one, nothing leaks."""
    queue = InstallQueue()
    queue.set_limit("a", 1)
    order: list[str] = []
    release = asyncio.Event()
    first = asyncio.create_task(hold(queue, order, "first", release))
    waiting = asyncio.create_task(hold(queue, order, "waiting", release))
    await settle()
    waiting.cancel()
    await settle()
    assert queue.waiting == 0

    release.set()
    await first
    held = queue.slot()
    await held.__aenter__()  # the test holds the only slot
    woken = asyncio.create_task(hold(queue, order, "woken", release))
    last = asyncio.create_task(hold(queue, order, "last", release))
    await settle()
    assert queue.waiting == 2
    await held.__aexit__(None, None, None)  # hands the slot to "woken" (no await inside) ...
    woken.cancel()  # ... which is cancelled before it could run
    await asyncio.gather(woken, last, return_exceptions=True)
    assert order == ["first", "last"]
    assert (queue.running, queue.waiting) == (0, 0)
    assert waiting.cancelled()


async def test_unreadable_stored_job_is_ignored(
    hass: HomeAssistant, hass_storage: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A stored job that is not a job record (an older format, a hand edit) is ignored
    with a warning, not a crash at setup."""
    hass_storage[f"{DOMAIN}.jobs"] = {
        "version": 1,
        "key": f"{DOMAIN}.jobs",
        "data": {"24:0a:c4:00:00:01": {"step": "teleporting"}},
    }
    service = FirmwareService(hass)
    await service.async_load()
    caplog.set_level(logging.WARNING)
    assert service.jobs.get("24:0a:c4:00:00:01") is None
    assert service.jobs.get("24:0a:c4:00:00:02") is None
    assert "unreadable stored update job" in caplog.text


async def test_installs_starting_together_share_one_server(
    hass: HomeAssistant, socket_enabled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installs that ask at once wait for the one start; a host the certificate does not
    cover gets it renewed (covering both), on the same server."""
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_PORT", 0)
    service = FirmwareService(hass)
    try:
        servers = await asyncio.gather(*(service.async_server_for("127.0.0.1") for _ in range(5)))
        assert len({id(server) for server in servers}) == 1
        server = servers[0]
        assert server.port > 0  # listening
        assert await service.async_server_for("127.0.0.2") is server
        assert server.certificate.covers("127.0.0.1")
        assert server.certificate.covers("127.0.0.2")
    finally:
        await service.async_close()
    assert service.server is None


def finished(result: str, reason: str | None = None, error: str | None = None) -> dict[str, Any]:
    return {
        "name": "garden 34:56",
        "entity_id": "update.garden_34_56_firmware",
        "from_version": "1.0.0",
        "to_version": "1.1.0",
        "result": result,
        "reason": reason,
        "error": error,
    }


def test_logbook_lines_say_what_happened() -> None:
    """Success, rollback and failure each read as what they are, with versions."""
    assert describe_update_finished(finished("succeeded")) == (
        "updated firmware from 1.0.0 to 1.1.0 (verified and confirmed)"
    )
    assert describe_update_finished(finished("rolled_back", "rolled_back")) == (
        "rolled back to 1.0.0: firmware 1.1.0 did not start correctly"
    )
    assert describe_update_finished(
        finished("failed", "download_failed", "ESP_ERR_OTA_VALIDATE_FAILED")
    ) == (
        "failed to update firmware to 1.1.0: download failed "
        "(ESP_ERR_OTA_VALIDATE_FAILED); still runs 1.0.0"
    )


async def test_logbook_describes_the_finished_event(hass: HomeAssistant) -> None:
    """The logbook platform registers a describer for esp_ota_update_finished."""
    described: dict[tuple[str, str], Callable[[Event], dict[str, Any]]] = {}

    def register(domain: str, event_type: str, describe: Callable[[Event], Any]) -> None:
        described[(domain, event_type)] = describe

    async_describe_events(hass, register)
    describe = described[(DOMAIN, EVENT_UPDATE_FINISHED)]
    # Once the entities' translations are loaded (as they are with any entry), the reason
    # reads as the "Last update error" sensor says it.
    await async_get_translations(hass, "en", "entity", {DOMAIN})
    entry = describe(Event(EVENT_UPDATE_FINISHED, finished("failed", "not_back", "ESP_FAIL")))
    assert entry["message"] == (
        "failed to update firmware to 1.1.0: device did not come back (ESP_FAIL); still runs 1.0.0"
    )


async def test_the_server_listens_only_while_a_grant_is_live(
    hass: HomeAssistant,
    socket_enabled: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The port is open while a device may download (a live grant), closed at the next
    idle check after the last grant ended, and opened again, the same server with its
    grants, for the next install."""
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_PORT", 0)
    data = build_app_image(version="1.1.0")
    sha256 = hashlib.sha256(data).hexdigest()
    (tmp_path / f"{sha256}.bin").write_bytes(data)
    image = StoredImage(
        path=tmp_path / f"{sha256}.bin", sha256=sha256, size=len(data), info=parse_image(data)
    )

    async def accepts(port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return False
        writer.close()
        return True

    def idle_check_passes() -> None:
        async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=SERVER_IDLE_CHECK_S + 1))

    service = FirmwareService(hass)
    try:
        server = await service.async_server_for("127.0.0.1")
        grant = server.grant(image, device_id="d", ttl_s=600)
        port = server.port
        idle_check_passes()
        await hass.async_block_till_done()
        assert await accepts(port), "closed while a grant was live"
        server.revoke(grant.token)
        idle_check_passes()
        await hass.async_block_till_done()
        assert not await accepts(port), "still listening with no grant live"
        again = await service.async_server_for("127.0.0.1")
        assert again is server
        assert await accepts(again.port)
        renewed = server.grant(image, device_id="d", ttl_s=600)
        idle_check_passes()
        await hass.async_block_till_done()
        assert await accepts(again.port)
        server.revoke(renewed.token)
    finally:
        await service.async_close()
    assert service.server is None
