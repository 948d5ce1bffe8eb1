"""Repair flows, driven as the frontend drives them (the repairs HTTP flow API), against
simulated devices: a rollback is skipped or installed again, a device that did not come
back is checked again, a changed certificate is reconfigured or, once shown, trusted."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.components.repairs.websocket_api import (
    RepairsFlowIndexView,
    RepairsFlowResourceView,
)
from homeassistant.components.update.const import (
    ATTR_INSTALLED_VERSION,
    ATTR_SKIPPED_VERSION,
    SERVICE_INSTALL,
)
from homeassistant.components.update.const import DOMAIN as UPDATE_DOMAIN
from homeassistant.config_entries import SOURCE_RECONFIGURE, ConfigEntryState
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.esp_ota import installer as installer_module
from custom_components.esp_ota.const import (
    CONF_CERT_FINGERPRINT,
    CONF_REBOOT_TIMEOUT,
    DOMAIN,
    EVENT_UPDATE_FINISHED,
)
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.update_job import JobTimeouts
from custom_components.esp_ota.repairs import shown_fingerprint
from simulator.api import DeviceApiServer
from simulator.tls import make_device_certificate

from .conftest import CHIP, PROJECT, ReleaseServer, SimDevice, StartDevice, make_entry

type Client = TestClient[Any, Any]

FIRMWARE = "update.garden_34_56_firmware"
# Generous bounds for the installs that succeed, even on a loaded machine; the reboot's
# bound comes from the entry's options (short where a device is to stay away).
TEST_TIMEOUTS = JobTimeouts(
    start_s=20.0, stall_s=20.0, reboot_s=20.0, confirm_s=20.0, total_s=120.0, poll_s=0.2
)
REBOOT_TIMEOUT_S = 20
NOT_BACK_TIMEOUT_S = 2


@pytest.fixture(autouse=True)
def firmware_server_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Home Assistant's firmware server on 127.0.0.1, any free port; short job bounds."""
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setattr("custom_components.esp_ota.const.FIRMWARE_SERVER_PORT", 0)
    monkeypatch.setattr(installer_module, "INSTALL_TIMEOUTS", TEST_TIMEOUTS)


@pytest.fixture
async def client(hass: HomeAssistant, hass_client: ClientSessionGenerator) -> Client:
    """The frontend's way in: the repairs flow HTTP API."""
    assert await async_setup_component(hass, "repairs", {})
    session: Client = await hass_client()
    return session


# Every flow's issue kind, to check that what the flow shows has a text.
KIND_OF_FLOW: dict[str, str] = {}
STRINGS = json.loads(
    (Path(__file__).parents[2] / "custom_components/esp_ota/strings.json").read_text()
)


def assert_translated(result: dict[str, Any]) -> None:
    """What the dialog shows (menu options, form, errors, progress, abort) has a text, and
    the flow gives every placeholder that text names."""
    fix_flow = STRINGS["issues"][KIND_OF_FLOW[result["flow_id"]]]["fix_flow"]
    texts: list[str] = []
    match result["type"]:
        case "menu":
            step = fix_flow["step"][result["step_id"]]
            assert set(result["menu_options"]) <= set(step["menu_options"])
            texts += [step["title"], step["description"]]
        case "form":
            step = fix_flow["step"][result["step_id"]]
            assert set((result["errors"] or {}).values()) <= set(fix_flow.get("error", {}))
            texts += [step["title"], step["description"]]
        case "progress":
            step = fix_flow["step"][result["step_id"]]
            texts += [step["title"], fix_flow["progress"][result["progress_action"]]]
        case "abort":
            texts.append(fix_flow["abort"][result["reason"]])
    named = {name for text in texts for name in re.findall(r"{(\w+)}", text)}
    assert named <= set(result.get("description_placeholders") or {})


async def start_fix_flow(client: Client, issue_id: str) -> dict[str, Any]:
    """Press "Fix" on an issue (as core's tests/components/repairs helpers do)."""
    response = await client.post(
        RepairsFlowIndexView.url, json={"handler": DOMAIN, "issue_id": issue_id}
    )
    assert response.status == HTTPStatus.OK, await response.text()
    result: dict[str, Any] = await response.json()
    KIND_OF_FLOW[result["flow_id"]] = issue_id.rsplit("_", 1)[0]
    assert_translated(result)
    return result


async def continue_fix_flow(
    client: Client, flow_id: str, user_input: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Submit the flow's current step."""
    response = await client.post(
        RepairsFlowResourceView.url.format(flow_id=flow_id), json=user_input
    )
    assert response.status == HTTPStatus.OK, await response.text()
    result: dict[str, Any] = await response.json()
    assert_translated(result)
    return result


async def wait_for(predicate: Callable[[], bool], *, within: float = 60.0) -> None:
    """Let Home Assistant run until `predicate` holds (state no event announces)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def installed(
    hass: HomeAssistant,
    sim: SimDevice,
    release_server: ReleaseServer,
    *,
    reboot_timeout_s: int = REBOOT_TIMEOUT_S,
) -> MockConfigEntry:
    """An entry on a feed offering 1.1.0, loaded."""
    image = build_app_image(project=PROJECT, version="1.1.0", chip=CHIP, size=96 * 1024)
    release_server.publish("1.1.0", image)
    base = make_entry(sim, feed_url=release_server.url)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=base.title,
        unique_id=sim.mac,
        data=dict(base.data),
        options={**base.options, CONF_REBOOT_TIMEOUT: reboot_timeout_s},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def failed_install(hass: HomeAssistant, reason: str) -> None:
    """Press Install on the offered release; it ends failed, for `reason`."""
    with pytest.raises(HomeAssistantError) as failed:
        await hass.services.async_call(
            UPDATE_DOMAIN, SERVICE_INSTALL, {ATTR_ENTITY_ID: FIRMWARE}, blocking=True
        )
    assert failed.value.translation_key == f"install_{reason}"


def our_issue(hass: HomeAssistant, issue_id: str) -> ir.IssueEntry | None:
    """The integration's issue of that id, if it is raised."""
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id)


async def test_a_rolled_back_release_is_skipped_on_the_device(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer, client: Client
) -> None:
    """Skip: the update entity stops offering the release (its own skip), the issue goes."""
    entry = await installed(hass, sim_device, release_server)
    sim_device.device.faults.crash_on_next_boot = True
    await failed_install(hass, "rolled_back")
    issue_id = f"update_rolled_back_{entry.entry_id}"
    issue = our_issue(hass, issue_id)
    assert issue is not None
    assert issue.is_fixable
    assert issue.data == {"entry_id": entry.entry_id, "version": "1.1.0"}
    assert hass.states.get(FIRMWARE).state == STATE_ON  # type: ignore[union-attr]

    menu = await start_fix_flow(client, issue_id)
    assert menu["type"] == "menu"
    assert menu["menu_options"] == ["skip", "retry"]
    assert menu["description_placeholders"]["version"] == "1.1.0"
    done = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "skip"})

    assert done["type"] == "create_entry"
    assert our_issue(hass, issue_id) is None
    firmware = hass.states.get(FIRMWARE)
    assert firmware is not None
    assert firmware.state == STATE_OFF
    assert firmware.attributes[ATTR_SKIPPED_VERSION] == "1.1.0"
    assert firmware.attributes[ATTR_INSTALLED_VERSION] == "1.0.0"


async def test_a_release_no_longer_offered_is_not_skipped(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer, client: Client
) -> None:
    """The feed offers a newer release now: skipping would skip that one, so nothing is
    skipped, the flow says why, and the issue stays."""
    entry = await installed(hass, sim_device, release_server)
    sim_device.device.faults.crash_on_next_boot = True
    await failed_install(hass, "rolled_back")
    release_server.publish(
        "1.2.0", build_app_image(project=PROJECT, version="1.2.0", chip=CHIP, size=96 * 1024)
    )
    assert entry.runtime_data.feed is not None
    await entry.runtime_data.feed.async_refresh()
    await hass.async_block_till_done()
    issue_id = f"update_rolled_back_{entry.entry_id}"

    menu = await start_fix_flow(client, issue_id)
    refused = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "skip"})
    assert refused["type"] == "abort"
    assert refused["reason"] == "release_not_offered"
    firmware = hass.states.get(FIRMWARE)
    assert firmware is not None
    assert firmware.state == STATE_ON
    assert firmware.attributes[ATTR_SKIPPED_VERSION] is None
    assert our_issue(hass, issue_id) is not None


async def test_a_rolled_back_release_is_installed_again(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer, client: Client
) -> None:
    """Try again: the same release through the update entity; a second rollback keeps the
    issue and says why, a good install ends the flow and the issue."""
    entry = await installed(hass, sim_device, release_server)
    sim_device.device.faults.crash_versions = {"1.1.0"}
    await failed_install(hass, "rolled_back")
    issue_id = f"update_rolled_back_{entry.entry_id}"

    menu = await start_fix_flow(client, issue_id)
    progress = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "retry"})
    assert progress["type"] == "progress"
    assert progress["progress_action"] == "installing"
    await hass.async_block_till_done()  # the install ends, the flow moves on
    failed = await continue_fix_flow(client, progress["flow_id"])
    assert failed["type"] == "abort"
    assert failed["reason"] == "install_failed"
    assert "rolled back" in failed["description_placeholders"]["error"]
    assert our_issue(hass, issue_id) is not None

    sim_device.device.faults.crash_versions = set()
    menu = await start_fix_flow(client, issue_id)
    progress = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "retry"})
    await hass.async_block_till_done()
    done = await continue_fix_flow(client, progress["flow_id"])
    assert done["type"] == "create_entry"
    assert our_issue(hass, issue_id) is None
    assert sim_device.device.info().version == "1.1.0"
    firmware = hass.states.get(FIRMWARE)
    assert firmware is not None
    assert firmware.attributes[ATTR_INSTALLED_VERSION] == "1.1.0"


async def test_closing_the_dialog_leaves_the_install_running(
    hass: HomeAssistant, sim_device: SimDevice, release_server: ReleaseServer, client: Client
) -> None:
    """The dialog is closed during the install (the frontend deletes the flow): the install
    goes on, and its success clears the issue."""
    entry = await installed(hass, sim_device, release_server)
    sim_device.device.faults.crash_on_next_boot = True
    await failed_install(hass, "rolled_back")
    issue_id = f"update_rolled_back_{entry.entry_id}"
    sim_device.device.faults.slow_link_bytes_per_s = 192 * 1024  # half a second's download

    finished: list[Event] = []
    # callback() cannot mark a builtin method, hence the lambda.
    on_finished = callback(lambda event: finished.append(event))  # noqa: PLW0108
    hass.bus.async_listen(EVENT_UPDATE_FINISHED, on_finished)
    menu = await start_fix_flow(client, issue_id)
    progress = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "retry"})
    assert progress["type"] == "progress"
    await wait_for(lambda: entry.runtime_data.installer.in_progress)
    closed = await client.delete(RepairsFlowResourceView.url.format(flow_id=progress["flow_id"]))
    assert closed.status == HTTPStatus.OK

    # The end is told on the bus, then the issue cleared, in one callback after the task.
    await wait_for(lambda: bool(finished))
    assert [event.data["result"] for event in finished] == ["succeeded"]
    assert sim_device.device.info().version == "1.1.0"
    assert our_issue(hass, issue_id) is None


@pytest.mark.parametrize(
    ("auto_confirm", "restarted", "fixed"), [(True, True, True), (False, False, False)]
)
async def test_a_device_that_did_not_come_back_is_checked_again(
    hass: HomeAssistant,
    start_device: StartDevice,
    release_server: ReleaseServer,
    client: Client,
    *,
    auto_confirm: bool,
    restarted: bool,
    fixed: bool,
) -> None:
    """Check again: still away is said and the form stays; back on the new release fixes
    the issue; back on the old one (its unconfirmed image rolled back) says so and keeps it.
    After a restart of Home Assistant meanwhile, the check sets the waiting entry up."""
    sim = await start_device(mac="24:0a:c4:12:34:56", auto_confirm=auto_confirm)
    entry = await installed(hass, sim, release_server, reboot_timeout_s=NOT_BACK_TIMEOUT_S)
    sim.device.faults.never_come_back = True
    await failed_install(hass, "not_back")
    issue_id = f"update_not_back_{entry.entry_id}"
    issue = our_issue(hass, issue_id)
    assert issue is not None
    assert issue.is_fixable
    assert issue.data == {"entry_id": entry.entry_id, "version": "1.1.0"}

    form = await start_fix_flow(client, issue_id)
    assert form["type"] == "form"
    assert form["step_id"] == "check"
    away = await continue_fix_flow(client, form["flow_id"], {})
    assert away["type"] == "form"
    assert away["errors"] == {"base": "still_away"}
    assert our_issue(hass, issue_id) is not None
    if restarted:
        await hass.config_entries.async_reload(entry.entry_id)
        assert entry.state is ConfigEntryState.SETUP_RETRY
        away = await continue_fix_flow(client, form["flow_id"], {})
        assert away["errors"] == {"base": "still_away"}
        assert entry.state is ConfigEntryState.SETUP_RETRY

    sim.device.faults.never_come_back = False
    await sim.device.power_cycle()
    await sim.device.wait_online(within_s=10)
    result = await continue_fix_flow(client, form["flow_id"], {})
    assert entry.state is ConfigEntryState.LOADED
    if fixed:
        assert result["type"] == "create_entry"
        assert our_issue(hass, issue_id) is None
        await wait_for(lambda: hass.states.get(FIRMWARE).state == STATE_OFF)  # type: ignore[union-attr]
        assert hass.states.get(FIRMWARE).attributes[ATTR_INSTALLED_VERSION] == "1.1.0"  # type: ignore[union-attr]
    else:
        assert result["type"] == "abort"
        assert result["reason"] == "back_on_other_version"
        assert result["description_placeholders"]["running"] == "1.0.0"
        assert our_issue(hass, issue_id) is not None


async def stale_pin_entry(
    hass: HomeAssistant, sim: SimDevice, *, unique_id: str
) -> MockConfigEntry:
    """An entry pinned to a certificate the device no longer presents (reflashed with a
    new key), set up: it retries, with its repair issue."""
    old_certificate = make_device_certificate(sim.mac, "esp-ota-old.local")
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="garden 34:56",
        unique_id=unique_id,
        data={**sim.entry_data(), CONF_CERT_FINGERPRINT: old_certificate.fingerprint},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    issue = our_issue(hass, f"certificate_mismatch_{entry.entry_id}")
    assert issue is not None
    assert issue.is_fixable
    assert issue.data == {"entry_id": entry.entry_id}
    return entry


async def test_a_new_certificate_is_trusted_only_once_shown_and_confirmed(
    hass: HomeAssistant, sim_device: SimDevice, client: Client
) -> None:
    """The fingerprint the device presents is shown first; confirmed, exactly that one is
    pinned, the entry loads and the issue goes."""
    entry = await stale_pin_entry(hass, sim_device, unique_id=sim_device.mac)
    issue_id = f"certificate_mismatch_{entry.entry_id}"

    menu = await start_fix_flow(client, issue_id)
    assert menu["menu_options"] == ["reconfigure", "trust_certificate"]
    shown = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "trust_certificate"})
    assert shown["type"] == "form"
    new_fingerprint = sim_device.certificate.fingerprint
    assert shown["description_placeholders"]["fingerprint"] == shown_fingerprint(new_fingerprint)
    assert entry.data[CONF_CERT_FINGERPRINT] != new_fingerprint  # nothing trusted yet

    done = await continue_fix_flow(client, shown["flow_id"], {})
    assert done["type"] == "create_entry"
    assert entry.data[CONF_CERT_FINGERPRINT] == new_fingerprint
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert our_issue(hass, issue_id) is None


async def test_a_certificate_that_changes_again_is_shown_again(
    hass: HomeAssistant, sim_device: SimDevice, client: Client
) -> None:
    """The certificate changes between showing and confirming: the one now presented is
    not pinned (the secret is not even sent to it) but shown, and needs its own yes."""
    entry = await stale_pin_entry(hass, sim_device, unique_id=sim_device.mac)
    menu = await start_fix_flow(client, f"certificate_mismatch_{entry.entry_id}")
    shown = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "trust_certificate"})
    first = sim_device.certificate.fingerprint
    assert shown["description_placeholders"]["fingerprint"] == shown_fingerprint(first)

    # Reflashed once more: the same device, yet another key, on the same port.
    await sim_device.server.go_offline()
    newest = make_device_certificate(sim_device.mac, "esp-ota-newest.local")
    replacement = DeviceApiServer(sim_device.device, newest, port=sim_device.port)
    await replacement.go_online()
    try:
        again = await continue_fix_flow(client, shown["flow_id"], {})
        assert again["type"] == "form"
        assert again["errors"] == {"base": "certificate_changed"}
        assert again["description_placeholders"]["fingerprint"] == shown_fingerprint(
            newest.fingerprint
        )
        assert entry.data[CONF_CERT_FINGERPRINT] not in (first, newest.fingerprint)

        done = await continue_fix_flow(client, again["flow_id"], {})
        assert done["type"] == "create_entry"
        assert entry.data[CONF_CERT_FINGERPRINT] == newest.fingerprint
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
        await hass.config_entries.async_unload(entry.entry_id)
    finally:
        await replacement.close()


async def test_the_pinned_certificate_back_needs_no_trust(
    hass: HomeAssistant, sim_device: SimDevice, client: Client
) -> None:
    """The address presents the pinned certificate again: nothing is trusted anew, the
    entry is set up again and the issue clears itself."""
    entry = await stale_pin_entry(hass, sim_device, unique_id=sim_device.mac)
    issue_id = f"certificate_mismatch_{entry.entry_id}"
    entry_data = dict(entry.data)
    pinned_again = {**entry_data, CONF_CERT_FINGERPRINT: sim_device.certificate.fingerprint}
    hass.config_entries.async_update_entry(entry, data=pinned_again)  # as if never changed

    menu = await start_fix_flow(client, issue_id)
    result = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "trust_certificate"})
    assert result["type"] == "abort"
    assert result["reason"] == "certificate_pinned_again"
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert our_issue(hass, issue_id) is None
    assert entry.data == pinned_again


async def test_a_certificate_of_another_device_is_not_trusted(
    hass: HomeAssistant, sim_device: SimDevice, client: Client
) -> None:
    """Another device answers at the address (another MAC): its certificate is not pinned."""
    entry = await stale_pin_entry(hass, sim_device, unique_id="24:0a:c4:00:00:01")
    pinned = entry.data[CONF_CERT_FINGERPRINT]
    issue_id = f"certificate_mismatch_{entry.entry_id}"

    menu = await start_fix_flow(client, issue_id)
    shown = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "trust_certificate"})
    refused = await continue_fix_flow(client, shown["flow_id"], {})
    assert refused["type"] == "abort"
    assert refused["reason"] == "wrong_device"
    assert entry.data[CONF_CERT_FINGERPRINT] == pinned
    assert our_issue(hass, issue_id) is not None


async def test_a_certificate_mismatch_leads_to_reconfigure(
    hass: HomeAssistant, sim_device: SimDevice, client: Client
) -> None:
    """Change the address: the entry's reconfigure flow opens next; the issue stays until
    the device is reached with its pinned certificate."""
    entry = await stale_pin_entry(hass, sim_device, unique_id=sim_device.mac)
    issue_id = f"certificate_mismatch_{entry.entry_id}"

    menu = await start_fix_flow(client, issue_id)
    handed_over = await continue_fix_flow(client, menu["flow_id"], {"next_step_id": "reconfigure"})
    assert handed_over["type"] == "abort"
    assert handed_over["reason"] == "reconfigure"
    flow_type, flow_id = handed_over["next_flow"]
    assert flow_type == "config_flow"
    flow = hass.config_entries.flow.async_get(flow_id)
    assert flow["context"]["source"] == SOURCE_RECONFIGURE
    assert flow["context"]["entry_id"] == entry.entry_id
    assert flow["step_id"] == "reconfigure"
    assert our_issue(hass, issue_id) is not None


@pytest.mark.parametrize("kind", ["update_rolled_back", "update_not_back", "certificate_mismatch"])
async def test_an_issue_of_a_removed_device_is_simply_dropped(
    hass: HomeAssistant, client: Client, kind: str
) -> None:
    """The entry was deleted since: nothing is left to repair, Fix drops the issue."""
    assert await async_setup_component(hass, DOMAIN, {})
    issue_id = f"{kind}_01REMOVEDENTRY"
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=True,
        severity=ir.IssueSeverity.ERROR,
        translation_key=kind,
        translation_placeholders={"name": "garden 34:56", "version": "1.1.0", "host": "x"},
        data={"entry_id": "01REMOVEDENTRY", "version": "1.1.0"},
    )
    result = await start_fix_flow(client, issue_id)
    assert result["type"] == "create_entry"
    assert our_issue(hass, issue_id) is None
