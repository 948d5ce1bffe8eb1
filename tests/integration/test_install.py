"""Pressing Install: Home Assistant serves a verified image, the simulated device pulls it
over real HTTPS, reboots, is verified and confirmed; every way it can go wrong ends, and
says why. No mock of the device, the feed server or the firmware server."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from homeassistant.components.update.const import (
    ATTR_IN_PROGRESS,
    ATTR_INSTALLED_VERSION,
    ATTR_UPDATE_PERCENTAGE,
    ATTR_VERSION,
    SERVICE_INSTALL,
)
from homeassistant.components.update.const import DOMAIN as UPDATE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from homeassistant.util import ssl as ssl_util
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.esp_ota import async_setup_shared
from custom_components.esp_ota import installer as installer_module
from custom_components.esp_ota.const import (
    CONF_DIRECT_DOWNLOAD,
    CONF_MAX_PARALLEL_INSTALLS,
    CONF_REBOOT_TIMEOUT,
    DOMAIN,
    EVENT_UPDATE_FINISHED,
)
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.job_record import UpdateStep
from custom_components.esp_ota.espota.protocol import EventType as OtaEventType
from custom_components.esp_ota.espota.update_job import JobTimeouts
from custom_components.esp_ota.firmware import FIRMWARE_SERVICE
from tests.simulator.firmware_server import FirmwareServer as HttpsFileServer
from tests.simulator.firmware_server import start_firmware_server

from .conftest import CHIP, PROJECT, ReleaseServer, SimDevice, StartDevice, make_entry

FIRMWARE = "update.garden_34_56_firmware"
OTA_STATE = "sensor.garden_34_56_update_state"
LAST_RESULT = "sensor.garden_34_56_last_update_result"
IMAGE_SIZE = 96 * 1024
# Short bounds so a failing path ends in seconds, not minutes.
TEST_TIMEOUTS = JobTimeouts(
    start_s=5.0, stall_s=2.0, reboot_s=5.0, confirm_s=5.0, total_s=60.0, poll_s=0.2
)


@pytest.fixture(autouse=True)
def firmware_server_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Home Assistant's firmware server on 127.0.0.1, any free port; short job bounds."""
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_PORT", 0)
    monkeypatch.setattr(installer_module, "INSTALL_TIMEOUTS", TEST_TIMEOUTS)


def image_of(version: str, *, chip: str = CHIP, project: str = PROJECT) -> bytes:
    """A firmware image of the garden project."""
    return build_app_image(project=project, version=version, chip=chip, size=IMAGE_SIZE)


@pytest.fixture
async def https_files(socket_enabled: None) -> AsyncIterator[HttpsFileServer]:
    """An HTTPS file server, as a feed host for direct mode."""
    server = await start_firmware_server()
    yield server
    await server.close()


async def load(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Add and set up an entry (its options as given)."""
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


def entry_for(
    sim: SimDevice,
    server: ReleaseServer,
    *,
    title: str = "garden 34:56",
    options: dict[str, Any] | None = None,
) -> MockConfigEntry:
    """An entry on the release server's feed; short reboot limit."""
    base = make_entry(sim, feed_url=server.url)
    return MockConfigEntry(
        domain=DOMAIN,
        title=title,
        unique_id=sim.mac,
        data=dict(base.data),
        options={**base.options, CONF_REBOOT_TIMEOUT: 5, **(options or {})},
    )


class StartCounter:
    """Counts the OTA jobs a device started, across its reboots (a resumed download starts
    esp_https_ota again, with the same ota_id)."""

    def __init__(self, sim: SimDevice) -> None:
        self._queue = sim.device.subscribe()
        self.ota_ids: set[str | None] = set()

    def __call__(self) -> int:
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event.type is OtaEventType.START:
                self.ota_ids.add(event.ota_id)
        return len(self.ota_ids)


async def install(hass: HomeAssistant, entity_id: str = FIRMWARE, **data: Any) -> None:
    """Press Install and wait for the end, as the frontend's service call does."""
    await hass.services.async_call(
        UPDATE_DOMAIN, SERVICE_INSTALL, {ATTR_ENTITY_ID: entity_id, **data}, blocking=True
    )


def finished_events(hass: HomeAssistant) -> list[Event]:
    """Collect esp_ota_update_finished events from now on."""
    events: list[Event] = []
    # A callback runs in the loop as the event fires (a plain function would go to the
    # executor, and arrive late); callback() cannot mark a builtin method, hence the lambda.
    listener = callback(lambda event: events.append(event))  # noqa: PLW0108
    hass.bus.async_listen(EVENT_UPDATE_FINISHED, listener)
    return events


async def wait_for(predicate: Callable[[], bool], *, within: float = 20.0) -> None:
    """Let Home Assistant run until `predicate` holds (it reads state no event announces)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def state_attr(hass: HomeAssistant, entity_id: str, name: str) -> Any:
    state = hass.states.get(entity_id)
    assert state is not None
    return state.attributes.get(name)


def state_of(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None
    return state.state


async def test_good_update_is_verified_and_confirmed(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer
) -> None:
    """Progress moves, the reboot keeps the entity in progress, the new firmware is
    confirmed valid, and only then does the installed version change."""
    release_server.publish("1.1.0", image_of("1.1.0"))
    sim_device.device.faults.slow_link_bytes_per_s = 192 * 1024
    starts = StartCounter(sim_device)
    entry = entry_for(sim_device, release_server)
    await load(hass, entry)
    events = finished_events(hass)
    assert state_of(hass, FIRMWARE) == STATE_ON

    seen_steps: list[str] = []
    percentages: list[float] = []
    installed_while_running: set[str] = set()
    after_download: set[float | None] = set()
    firmware_states: set[str] = set()

    def sample(event: Event) -> None:
        step = state_of(hass, OTA_STATE)
        if not seen_steps or seen_steps[-1] != step:
            seen_steps.append(step)
        if event.data["entity_id"] != FIRMWARE:
            return
        firmware_states.add(state_of(hass, FIRMWARE))
        if not state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS):
            return
        installed_while_running.add(state_attr(hass, FIRMWARE, ATTR_INSTALLED_VERSION))
        percentage = state_attr(hass, FIRMWARE, ATTR_UPDATE_PERCENTAGE)
        job = entry.runtime_data.device.data.job
        assert job is not None  # the step the entity was just written at
        if job.step in (UpdateStep.REBOOTING, UpdateStep.CONFIRMING):
            after_download.add(percentage)
        elif percentage is not None:
            percentages.append(percentage)

    rewrites: list[UpdateStep | None] = []  # the step at each rewrite of every entity

    def rewritten() -> None:
        if entry.runtime_data.installer.in_progress:
            job = entry.runtime_data.device.data.job
            rewrites.append(job.step if job else None)

    unsubscribe = hass.bus.async_listen("state_changed", callback(sample))
    stop_counting = entry.runtime_data.device.async_add_listener(rewritten)
    await install(hass)
    unsubscribe()
    stop_counting()

    # The entities are rewritten at the install's steps, not again at each device event
    # (start, connected, get_img_desc, verify_chip_id, ...); progress moves only its own.
    assert len(rewrites) <= len(set(rewrites)) + 1, rewrites
    assert state_of(hass, FIRMWARE) == STATE_OFF
    assert state_attr(hass, FIRMWARE, ATTR_INSTALLED_VERSION) == "1.1.0"
    assert state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS) is False
    assert installed_while_running == {"1.0.0"}
    assert percentages == sorted(percentages)
    assert any(0 < value < 100 for value in percentages), (percentages, seen_steps)
    assert after_download == {None}  # an indeterminate bar while it reboots, not "100 %"
    assert firmware_states == {STATE_ON, STATE_OFF}  # available through the reboot
    for step in ("preparing", "downloading", "rebooting", "confirming"):
        assert step in seen_steps, seen_steps
    assert seen_steps[-1] == "succeeded"
    assert state_of(hass, LAST_RESULT) == "succeeded"
    info = sim_device.device.info()
    assert info.version == "1.1.0"
    assert info.image_state.value == "valid"
    assert info.running_partition == "ota_1"
    assert starts() == 1
    assert [event.data["result"] for event in events] == ["succeeded"]
    assert events[0].data["from_version"] == "1.0.0"
    assert events[0].data["to_version"] == "1.1.0"
    assert events[0].data["device_id"] is not None


async def test_specific_version_and_unknown_version(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer
) -> None:
    """An older release can be asked for by version; a version the feed lacks is refused."""
    release_server.publish("0.9.0", image_of("0.9.0"))
    release_server.publish("1.1.0", image_of("1.1.0"))
    starts = StartCounter(sim_device)
    await load(hass, entry_for(sim_device, release_server))
    with pytest.raises(HomeAssistantError) as refused:
        await install(hass, **{ATTR_VERSION: "7.0.0"})
    assert refused.value.translation_key == "no_release"
    assert starts() == 0
    await install(hass, **{ATTR_VERSION: "0.9.0"})
    assert sim_device.device.info().version == "0.9.0"


async def test_wrong_sha256_in_the_feed_never_reaches_the_device(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer
) -> None:
    """Home Assistant verifies the image first: the device is not even asked."""
    release_server.publish("1.1.0", image_of("1.1.0"), sha256="0" * 64)
    starts = StartCounter(sim_device)
    await load(hass, entry_for(sim_device, release_server))
    events = finished_events(hass)
    with pytest.raises(HomeAssistantError) as failed:
        await install(hass)
    assert failed.value.translation_key == "install_image_invalid"
    assert starts() == 0
    assert sim_device.device.info().boot_partition == "ota_0"
    assert state_attr(hass, FIRMWARE, ATTR_INSTALLED_VERSION) == "1.0.0"
    assert state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS) is False
    assert state_of(hass, LAST_RESULT) == "failed"
    assert [event.data["reason"] for event in events] == ["image_invalid"]


async def test_image_for_another_chip_is_refused(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer
) -> None:
    """A feed that lists an ESP32 image as the C3's release: refused, by name."""
    release_server.publish("1.1.0", image_of("1.1.0", chip="esp32"))
    starts = StartCounter(sim_device)
    await load(hass, entry_for(sim_device, release_server))
    with pytest.raises(HomeAssistantError) as failed:
        await install(hass)
    assert failed.value.translation_key == "install_image_mismatch"
    assert "chip" in str(failed.value.translation_placeholders)
    assert starts() == 0


@pytest.mark.parametrize(
    ("fault", "value", "result", "reason"),
    [
        ("drop_at_byte", 40_000, "succeeded", None),
        ("stall_at_byte", 30_000, "failed", "stalled"),
        ("corrupt_at_byte", 50_000, "failed", "download_failed"),
        ("truncate_at_byte", 60_000, "failed", "download_failed"),
        ("power_loss_at_byte", 50_000, "failed", "download_failed"),
        ("crash_on_next_boot", True, "rolled_back", "rolled_back"),
        ("never_come_back", True, "failed", "not_back"),
    ],
)
async def test_every_fault_ends_with_its_reason(
    hass: HomeAssistant,
    sim_device: SimDevice,
    *,
    release_server: ReleaseServer,
    issue_registry: ir.IssueRegistry,
    fault: str,
    value: object,
    result: str,
    reason: str | None,
) -> None:
    """Each injected fault ends the install in bounded time, with the right result; the
    device keeps a good firmware; rollbacks and lost devices raise a repair issue."""
    release_server.publish("1.1.0", image_of("1.1.0"))
    setattr(sim_device.device.faults, fault, value)
    if fault == "stall_at_byte":
        sim_device.device.faults.stall_seconds = 30.0
    starts = StartCounter(sim_device)
    entry = entry_for(sim_device, release_server)
    await load(hass, entry)
    events = finished_events(hass)
    if result == "succeeded":
        await install(hass)
    else:
        with pytest.raises(HomeAssistantError) as failed:
            await install(hass)
        assert failed.value.translation_key == f"install_{reason}"
    assert [(event.data["result"], event.data["reason"]) for event in events] == [(result, reason)]
    assert starts() == 1
    if fault == "never_come_back":
        # Gone: the device's entities are unavailable; the error, the event and the repair
        # issue say what happened.
        assert state_of(hass, FIRMWARE) == STATE_UNAVAILABLE
        assert state_of(hass, LAST_RESULT) == STATE_UNAVAILABLE
    else:
        expected_version = "1.1.0" if result == "succeeded" else "1.0.0"
        assert state_of(hass, LAST_RESULT) == result
        assert state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS) is False
        assert state_attr(hass, FIRMWARE, ATTR_INSTALLED_VERSION) == expected_version
        info = sim_device.device.info()
        assert info.version == expected_version
        assert info.image_state.value == "valid"
    issues = {issue_id for (domain, issue_id) in issue_registry.issues if domain == DOMAIN}
    if reason == "rolled_back":
        assert issues == {f"update_rolled_back_{entry.entry_id}"}
        assert sim_device.device.info().last_invalid_partition == "ota_1"
    elif reason == "not_back":
        assert issues == {f"update_not_back_{entry.entry_id}"}
    else:
        assert issues == set()


async def test_a_second_install_is_refused(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer
) -> None:
    """While one install runs, another of the same device is turned away."""
    release_server.publish("1.1.0", image_of("1.1.0"))
    sim_device.device.faults.slow_link_bytes_per_s = 128 * 1024
    starts = StartCounter(sim_device)
    entry = entry_for(sim_device, release_server)
    await load(hass, entry)
    first = hass.async_create_task(install(hass))
    await wait_for(lambda: state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS) is True)
    with pytest.raises(HomeAssistantError) as refused:
        await install(hass)  # Home Assistant's update service turns it away first
    assert refused.value.translation_key == "update_in_progress"
    release = entry.runtime_data.feed.data.releases[0] if entry.runtime_data.feed else None
    assert release is not None
    with pytest.raises(HomeAssistantError) as refused:  # an automation racing the service
        await entry.runtime_data.installer.async_install(release)
    assert refused.value.translation_key == "install_running"
    await first
    assert starts() == 1
    assert sim_device.device.info().version == "1.1.0"


async def test_installs_queue_beyond_the_limit(
    hass: HomeAssistant, start_device: StartDevice, release_server: ReleaseServer
) -> None:
    """With a limit of one, three devices update one after the other, all of them."""
    release_server.publish("1.1.0", image_of("1.1.0"))
    sims = [await start_device() for _ in range(3)]
    entities: list[str] = []
    for index, sim in enumerate(sims):
        sim.device.faults.slow_link_bytes_per_s = 256 * 1024
        title = f"garden {index}"
        await load(
            hass,
            entry_for(sim, release_server, title=title, options={CONF_MAX_PARALLEL_INSTALLS: 1}),
        )
        entities.append(f"update.garden_{index}_firmware")
    most_at_once = 0

    def count_running() -> None:
        nonlocal most_at_once
        running = sum(
            state_of(hass, f"sensor.garden_{index}_update_state")
            in ("preparing", "starting", "downloading", "verifying", "rebooting", "confirming")
            for index in range(3)
        )
        most_at_once = max(most_at_once, running)

    unsubscribe = hass.bus.async_listen("state_changed", callback(lambda _event: count_running()))
    await asyncio.gather(*(install(hass, entity) for entity in entities))
    unsubscribe()
    assert most_at_once == 1
    assert [sim.device.info().version for sim in sims] == ["1.1.0"] * 3
    service = hass.data[FIRMWARE_SERVICE]
    assert service.queue.running == 0
    assert service.queue.waiting == 0


async def test_firmware_server_refuses_requests_without_the_token(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer
) -> None:
    """The image Home Assistant serves is not for anyone who asks: 401 without the token,
    and after the install the device's own token is dead too."""
    release_server.publish("1.1.0", image_of("1.1.0"))
    starts = StartCounter(sim_device)
    await load(hass, entry_for(sim_device, release_server))
    await install(hass)
    assert starts() == 1
    service = hass.data[FIRMWARE_SERVICE]
    server = service.server
    assert server is not None
    record = service.jobs.get(sim_device.mac)
    assert record is not None
    assert record.download is not None
    used_token = record.download.token
    url = f"https://127.0.0.1:{server.port}/firmware/{record.sha256}.bin"
    ssl_context = ssl.create_default_context(cadata=server.cert_pem)  # pinned, as a device
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            async with session.get(url, ssl=ssl_context, headers=headers) as response:
                assert response.status == 401
        # The device's own token died with its install.
        async with session.get(
            url, ssl=ssl_context, headers={"Authorization": f"Bearer {used_token}"}
        ) as response:
            assert response.status == 401


async def test_direct_mode_downloads_from_the_feed_host(
    hass: HomeAssistant,
    sim_device: SimDevice,
    release_server: ReleaseServer,
    https_files: HttpsFileServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In direct mode the device pulls from the release's own HTTPS URL, pinned to the
    certificate that host presents; Home Assistant still verified the image first."""
    # A feed host's certificate is one Home Assistant trusts (a public CA's); this one is
    # self-signed, so its client context (made when its session first connects) trusts it.
    trusting = ssl.create_default_context(cadata=https_files.cert_pem)
    monkeypatch.setattr(ssl_util, "client_context", lambda *_args: trusting)
    image = image_of("1.1.0")
    release_server.publish("1.1.0", image, url=https_files.add("/garden-1.1.0.bin", image))
    starts = StartCounter(sim_device)
    await load(hass, entry_for(sim_device, release_server, options={CONF_DIRECT_DOWNLOAD: True}))
    await install(hass)
    assert starts() == 1
    assert sim_device.device.info().version == "1.1.0"
    served = [request for request in https_files.requests if request.path.endswith(".bin")]
    assert served, "the device downloaded from the feed host"
    assert hass.data[FIRMWARE_SERVICE].server is None  # Home Assistant served nothing


async def restart_home_assistant_side(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Stop the integration as a Home Assistant shutdown does (the job is stored, not
    ended), check the shared service let go of everything (no entry, no server), then
    make the shared services anew, as the next start of Home Assistant does (the stored
    jobs read back from storage, nothing carried over in memory)."""
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    service = hass.data[FIRMWARE_SERVICE]
    assert service.users == set()
    assert service.server is None
    await async_setup_shared(hass)
    assert hass.data[FIRMWARE_SERVICE] is not service


@pytest.mark.parametrize("stop_at", ["preparing", "downloading", "rebooting", "pending_confirm"])
async def test_restart_mid_update_resumes_and_never_repeats(
    hass: HomeAssistant,
    start_device: StartDevice,
    release_server: ReleaseServer,
    stop_at: str,
) -> None:
    """Home Assistant stops mid-update, starts again, and ends the same job: one start on
    the device, verified and confirmed. Stops while preparing the image (nothing sent yet:
    the resumed job prepares and starts it), while downloading, while the device reboots,
    and after it came back but before Home Assistant confirmed it."""
    sim = await start_device(mac="24:0a:c4:12:34:56", reboot_time_s=1.0)
    release_server.publish("1.1.0", image_of("1.1.0"))
    sim.device.faults.slow_link_bytes_per_s = 128 * 1024
    starts = StartCounter(sim)
    entry = entry_for(sim, release_server)
    await load(hass, entry)
    events = finished_events(hass)
    pressed = hass.async_create_task(install(hass))
    target = {"preparing": UpdateStep.PREPARING, "downloading": UpdateStep.DOWNLOADING}.get(
        stop_at, UpdateStep.REBOOTING
    )
    if stop_at == "preparing":
        release_server.image_delay_s = 30.0  # Home Assistant stops while it downloads

    def at_target() -> bool:
        record = entry.runtime_data.device.data.job
        if record is None or record.step is not target:
            return False
        return target is UpdateStep.PREPARING or record.bytes_written > 0

    await wait_for(at_target)
    await restart_home_assistant_side(hass, entry)
    with pytest.raises(asyncio.CancelledError):
        await pressed
    release_server.image_delay_s = 0.0
    if stop_at == "pending_confirm":
        await wait_for(lambda: sim.device.online and sim.device.info().version == "1.1.0")
        assert sim.device.info().image_state.value == "pending_verify"

    # A device still rebooting makes the setup wait and retry (ConfigEntryNotReady); the
    # stored job is picked up whenever the setup succeeds.
    await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: bool(events), within=30)
    assert [event.data["result"] for event in events] == ["succeeded"]
    assert starts() == 1
    info = sim.device.info()
    assert info.version == "1.1.0"
    assert info.image_state.value == "valid"
    assert state_attr(hass, FIRMWARE, ATTR_INSTALLED_VERSION) == "1.1.0"
    assert state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS) is False


async def test_stored_job_survives_in_storage(
    hass: HomeAssistant,
    sim_device: SimDevice,
    release_server: ReleaseServer,
    hass_storage: dict[str, Any],
) -> None:
    """The job record is written to Home Assistant's storage, secrets included only there."""
    release_server.publish("1.1.0", image_of("1.1.0"))
    await load(hass, entry_for(sim_device, release_server))
    await install(hass)
    await hass.data[FIRMWARE_SERVICE].jobs.async_flush()
    stored = hass_storage[f"{DOMAIN}.jobs"]["data"][sim_device.mac]
    assert stored["step"] == "succeeded"
    assert stored["to_version"] == "1.1.0"
    json.dumps(stored)  # JSON-safe as stored
