"""An idle device costs its event stream and nothing more: no polling while the stream is
healthy; a stream that goes silent is given up within two heartbeats and the device read
at once (unavailable when it does not answer); what changed while the stream was down is
read when it returns. Over real sockets: the simulator on 127.0.0.1, Home Assistant's
connections through a proxy the tests break."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from homeassistant.const import CONF_PORT, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)

from custom_components.esp_ota.const import DOMAIN, FALLBACK_POLL_MAX, FALLBACK_POLL_MIN
from custom_components.esp_ota.coordinator import EspOtaDeviceCoordinator
from custom_components.esp_ota.espota import device_client
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import DeviceInfo
from tests.simulator.firmware_server import start_firmware_server

from .conftest import (
    CHIP,
    PROJECT,
    SimDevice,
    StartDevice,
    make_entry,
    setup_entry,
    start_device_update,
    wait_for,
)
from .link_proxy import LinkProxy

FIRMWARE = "update.garden_34_56_firmware"
OTA_STATE = "sensor.garden_34_56_update_state"
RESET_REASON = "sensor.garden_34_56_reset_reason"
# The devices' heartbeat here, and the client's read timeout: two of them.
HEARTBEAT_S = 0.2


@pytest.fixture(autouse=True)
def short_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two heartbeats of silence end a stream; reconnection pauses of 50 to 200 ms."""
    monkeypatch.setattr(device_client, "EVENT_STREAM_READ_TIMEOUT", 2 * HEARTBEAT_S)
    monkeypatch.setattr(device_client, "EVENT_RECONNECT_MIN_S", 0.05)
    monkeypatch.setattr(device_client, "EVENT_RECONNECT_MAX_S", 0.2)


@pytest.fixture
async def device(start_device: StartDevice) -> SimDevice:
    return await start_device(mac="24:0a:c4:12:34:56", event_heartbeat_s=HEARTBEAT_S)


@pytest.fixture
async def link(device: SimDevice) -> AsyncIterator[LinkProxy]:
    proxy = LinkProxy(device.port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def loaded_through(
    hass: HomeAssistant, device: SimDevice, link: LinkProxy
) -> EspOtaDeviceCoordinator:
    """The device's entry set up, reaching the device through `link`; its stream open."""
    direct = make_entry(device)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=direct.title,
        unique_id=direct.unique_id,
        data={**direct.data, CONF_PORT: link.port},
        options=dict(direct.options),
    )
    await setup_entry(hass, entry)
    coordinator: EspOtaDeviceCoordinator = entry.runtime_data.device
    await wait_for(lambda: coordinator.stream_up and device.server.open_streams == 1)
    return coordinator


def shown(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


async def test_a_healthy_stream_is_never_polled(
    hass: HomeAssistant, device: SimDevice, link: LinkProxy
) -> None:
    """Many heartbeats and several read timeouts' worth of time: the device serves not one
    request nor one TLS handshake beyond its stream, and nothing is scheduled to poll it.

    (Home Assistant's clock is not moved ahead: that would also fire the sockets' own
    timeouts, which real time never would.)"""
    coordinator = await loaded_through(hass, device, link)
    before = device.server.counters()
    await asyncio.sleep(8 * HEARTBEAT_S)
    await hass.async_block_till_done()
    after = device.server.counters()
    assert after.keepalives_sent >= before.keepalives_sent + 4  # the stream was quiet
    assert (after.tls_handshakes, dict(after.requests)) == (
        before.tls_handshakes,
        dict(before.requests),
    )
    # No poll is due, ever, while the stream stays up.
    assert (coordinator.stream_up, coordinator.update_interval) == (True, None)
    assert coordinator.last_update_success


async def test_a_silent_stream_makes_the_device_unavailable_within_two_heartbeats(
    hass: HomeAssistant, device: SimDevice, link: LinkProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link goes silent (open connections carry nothing, new ones are dropped): the
    stream is given up after two heartbeats, the device is read at once and shown
    unavailable; polling takes over, each pause twice the last."""
    coordinator = await loaded_through(hass, device, link)
    assert shown(hass, FIRMWARE) != STATE_UNAVAILABLE
    link.go_silent()
    silent_at = time.monotonic()
    await wait_for(lambda: shown(hass, FIRMWARE) == STATE_UNAVAILABLE)
    # Two heartbeats, then a request refused at once: a generous ceiling on a busy machine.
    assert time.monotonic() - silent_at < 2 * HEARTBEAT_S + 3.0
    assert not coordinator.stream_up
    assert coordinator.update_interval == FALLBACK_POLL_MIN
    # Each fallback poll that finds it still away waits twice as long, up to the bound.
    reads: list[str] = []
    info = coordinator.client.info

    async def counted_info() -> DeviceInfo:
        try:
            return await info()
        finally:
            reads.append("info")  # when it ended: the next poll is scheduled by then

    monkeypatch.setattr(coordinator.client, "info", counted_info)
    pauses: list[timedelta | None] = []
    for _ in range(6):
        async_fire_time_changed(hass, dt_util.utcnow() + 2 * FALLBACK_POLL_MAX)
        # (Not wait_for: moving the clock ahead would fire its own timeout as well.)
        for _ in range(500):
            if len(reads) > len(pauses):
                break
            await asyncio.sleep(0.01)
        await hass.async_block_till_done()
        assert len(reads) == len(pauses) + 1
        pauses.append(coordinator.update_interval)
    assert pauses == [
        FALLBACK_POLL_MIN * 2,
        FALLBACK_POLL_MIN * 4,
        FALLBACK_POLL_MIN * 8,
        FALLBACK_POLL_MAX,
        FALLBACK_POLL_MAX,
        FALLBACK_POLL_MAX,
    ]


async def test_a_change_while_the_stream_is_up_is_pushed(
    hass: HomeAssistant, device: SimDevice, link: LinkProxy
) -> None:
    """An update someone else starts on the device shows at once: pushed on the stream
    (nothing is scheduled to poll), not read at some later poll."""
    coordinator = await loaded_through(hass, device, link)
    assert coordinator.update_interval is None
    before = device.server.counters()
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=128 * 1024)
    device.device.faults.slow_link_bytes_per_s = 64 * 1024  # a download of about 2 s
    server = await start_firmware_server()
    try:
        started_at = time.monotonic()
        await start_device_update(device, server, image)
        await wait_for(lambda: shown(hass, OTA_STATE) == "downloading")
        # A generous ceiling for a loaded machine; the push itself takes milliseconds.
        assert time.monotonic() - started_at < 5.0
        # Nothing was asked of the device to learn it.
        assert device.server.counters().requests == before.requests
    finally:
        await server.close()


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_a_change_made_while_the_stream_was_down_is_read_when_it_returns(
    hass: HomeAssistant, device: SimDevice, link: LinkProxy
) -> None:
    """The link is cut; meanwhile the device restarts (its event ring starts empty: no
    event tells). When the link is back, the stream returns and the device is read at
    once, with no poll (no time passes for Home Assistant's timers)."""
    coordinator = await loaded_through(hass, device, link)
    assert shown(hass, RESET_REASON) == "esp_rst_poweron"
    link.cut()
    await wait_for(lambda: shown(hass, FIRMWARE) == STATE_UNAVAILABLE)
    await device.device.reboot()
    await device.device.wait_online(10)
    link.restore()
    await wait_for(lambda: shown(hass, RESET_REASON) == "esp_rst_sw")
    assert shown(hass, FIRMWARE) != STATE_UNAVAILABLE
    assert coordinator.stream_up
    # Polling stopped with the stream's return, including the poll already scheduled.
    assert coordinator.update_interval is None
    assert coordinator._unsub_refresh is None


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_a_restart_announced_on_the_stream_is_not_shown_as_the_device_gone(
    hass: HomeAssistant, device: SimDevice, link: LinkProxy
) -> None:
    """The device says it reboots, then its stream ends: no read at once (it would find
    the device away and show it unavailable for its restart); the stream's return reads
    it."""
    coordinator = await loaded_through(hass, device, link)
    reads = device.server.counters().requests.get("GET /api/v1/info", 0)
    states: list[str] = []
    hass.bus.async_listen(
        "state_changed",
        lambda event: (
            states.append(event.data["new_state"].state)
            if event.data["entity_id"] == FIRMWARE
            else None
        ),
    )
    await device.device.reboot()
    await wait_for(lambda: shown(hass, RESET_REASON) == "esp_rst_sw")
    assert STATE_UNAVAILABLE not in states
    assert coordinator.stream_up
    # One read: the one when the stream returned.
    assert device.server.counters().requests.get("GET /api/v1/info", 0) == reads + 1
