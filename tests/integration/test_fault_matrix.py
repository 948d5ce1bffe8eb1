"""Issue #12's fault x phase matrix, end to end: Home Assistant, its firmware server, a feed
and image host, and a simulated ESP32 over real HTTPS (nothing mocked).

Each cell presses Install, waits for the phase (the job's step as Home Assistant shows it,
and the device's own state where the window is the device's), injects the fault there,
and checks that the install ends within its bound in the expected result with the right
translated reason, that the device is left bootable (its API answers, a valid or
pending_verify image runs from an OTA slot; for a few cells a second install succeeds),
and that the device received at most one start. `idle` cells inject with no install
running: nothing starts, nothing ends, and the entity and device are as they were.

Phases: `prepare` (Home Assistant fetches and checks the image; its host is held until
the fault is in), `download` (the device pulls it, bytes written), `verify` (every byte
in, the device checks the staged image, boot partition not switched yet: held by the
simulator's verify_seconds), `reboot` (the device is restarting into the new image),
`confirm` (the new image runs pending_verify and Home Assistant confirms it: the job
confirms at once, so these faults are armed on the device's confirm endpoint and strike
when the confirm arrives), `idle`.

What each fault is in each phase (-: the cell cannot happen, see below):

    fault          prepare            download            verify, reboot, confirm    idle
    drop           host resets        link resets,        one API answer lost        a poll's
                   the connection     resumed             (the device acted)         answer lost
    corrupt        host flips a byte  device gets one     -                          armed, unused
    truncate       host ends early    every body short    -                          armed, unused
    stall          host silent past   nothing past        one API request held       a poll held
                   the read timeout   stall_s             (within the bound)
    slow_link      slow host          slow download       verify: longer than        polls late
                                                          stall_s; reboot, confirm:
                                                          the API answers late
    never_back     device off for     power lost mid-     off for good: while        off, then
                   good               write, off for good verifying / after the      back
                                                          reboot / during the confirm
    crash_on_boot  -                  -                   reboot: the new image      a panic
                                                          panics at its first boot;
                                                          confirm: panics right
                                                          after the confirm
    power_loss     a power cycle      power lost mid-     before the boot partition  a power
                                      write               switch / during the        cycle
                                                          restart / as the confirm
                                                          arrives
    wrong_sha256   the feed's is not  the feed changes    -                          -
                   the image's        under the job
    wrong_chip     another chip's     -                   -                          -
                   image listed
    token_misuse   -                  strangers: no, a    -                          the done
                                      wrong, the device's                            job's token
                                      token on another
                                      image
    ha_restart     Home Assistant stops and starts again; the stored job resumes        nothing
                   (verify: while verifying; confirm: while the confirm is held)     to resume

50 cells run. The 22 that cannot happen, and why:

- corrupt, truncate x verify, reboot, confirm: transport faults of the download. By verify
  every byte is in and nothing is downloaded after; the device's verification is what
  catches a corrupt byte, which the download cell checks (ESP_ERR_OTA_VALIDATE_FAILED).
- crash_on_boot x prepare, download, verify: no new image boots before the reboot; a panic
  of the running firmware before it is a reset like the power_loss row's.
- wrong_sha256 x verify, reboot, confirm, idle: the job reads the feed's sha256 once, when
  it prepares; a feed changing after that is the download cell (no other code path); with
  no install the feed's sha256 is never used.
- wrong_chip x download, verify, reboot, confirm, idle: the image's chip is checked before
  any device sees it (prepare); a feed changing later is the wrong_sha256 download cell;
  the device's own chip check cannot be reached through Home Assistant (tests/simulator).
- token_misuse x prepare: no token exists before prepare ends (it is granted at its end).
- token_misuse x verify, reboot, confirm: the device makes no download request after its
  last byte; a token used then is the download cell's case (the grant lives until the
  job ends, then dies: the idle cell).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from homeassistant.components.update.const import (
    ATTR_IN_PROGRESS,
    ATTR_INSTALLED_VERSION,
    ATTR_LATEST_VERSION,
    ATTR_VERSION,
)
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.esp_ota import firmware as firmware_module
from custom_components.esp_ota import installer as installer_module
from custom_components.esp_ota.const import CONF_REBOOT_TIMEOUT
from custom_components.esp_ota.espota.firmware_store import FirmwareStore
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.job_record import UpdateJobRecord, UpdateStep
from custom_components.esp_ota.espota.protocol import ImageState, OtaState
from custom_components.esp_ota.espota.update_job import JobTimeouts
from custom_components.esp_ota.firmware import FIRMWARE_SERVICE
from simulator.board import ESP_RST_PANIC, ESP_RST_POWERON
from simulator.faults import ApiFault, FaultPlan

from .conftest import (
    PROJECT,
    ReleaseServer,
    SimDevice,
    StartDevice,
    serving,
    wait_for_event_stream,
)
from .test_install import (  # the install tests' helpers
    FIRMWARE,
    IMAGE_SIZE,
    LAST_RESULT,
    OTA_STATE,
    StartCounter,
    entry_for,
    finished_events,
    firmware_server_on_loopback,  # noqa: F401 - a fixture, requested by matrix_bounds
    image_of,
    install,
    load,
    restart_home_assistant_side,
    state_attr,
    state_of,
    wait_for,
)

# Short bounds so the failing cells end in about a second (poll often).
MATRIX_TIMEOUTS = JobTimeouts(
    start_s=2.0, stall_s=1.0, reboot_s=2.0, confirm_s=2.5, total_s=30.0, poll_s=0.1
)
REBOOT_LIMIT_S = 2  # the entry's option (the job's reboot_s)
STORE_READ_TIMEOUT_S = 1.0  # Home Assistant's image download gives up after this silence
# The ceiling on one install, pressed to finished event: total_s and the last look, plus
# Home Assistant's own restart in the restart cells.
INSTALL_BOUND_S = MATRIX_TIMEOUTS.total_s + MATRIX_TIMEOUTS.confirm_s + 5.0
DOWNLOAD_RATE = 384 * 1024  # bytes/s: a download window of a quarter second
VERIFY_HOLD_S = 0.8  # the device verifies this long in the verify cells (below stall_s)
SLOW_VERIFY_S = MATRIX_TIMEOUTS.stall_s + 0.8  # a verification longer than the stall bound
API_STALL_S = 1.0  # a held API request, answered within every bound
API_LATENCY_S = 0.2


@pytest.fixture(autouse=True)
def matrix_bounds(
    firmware_server_on_loopback: None,  # noqa: F811 - set up first: these bounds win
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The matrix's short job bounds, and a short read timeout for image downloads."""
    monkeypatch.setattr(installer_module, "INSTALL_TIMEOUTS", MATRIX_TIMEOUTS)
    monkeypatch.setattr(
        firmware_module, "FirmwareStore", partial(FirmwareStore, timeout=STORE_READ_TIMEOUT_S)
    )


@dataclass
class FaultyReleaseServer(ReleaseServer):
    """The feed and image host with faults on its image responses (the prepare phase) and
    a gate that holds every image request until the test opens it."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    drop_at: int | None = None  # reset the connection after this many bytes
    corrupt_at: int | None = None  # this byte goes out XOR 0xFF
    truncate_at: int | None = None  # end the body here (sent without a length)
    stall_at: int | None = None  # send nothing more (until the client gives up)
    bytes_per_s: float | None = None

    async def file(self, request: web.Request) -> web.StreamResponse:
        self.image_requests += 1
        await self.gate.wait()
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if self.truncate_at is None:
            response.content_length = len(data)
        await response.prepare(request)
        end = len(data) if self.truncate_at is None else self.truncate_at
        chunk = 8 * 1024
        for offset in range(0, end, chunk):
            piece = bytearray(data[offset : min(offset + chunk, end)])
            if self.corrupt_at is not None and offset <= self.corrupt_at < offset + len(piece):
                piece[self.corrupt_at - offset] ^= 0xFF
            if self.drop_at is not None and offset + len(piece) > self.drop_at:
                await response.write(bytes(piece[: self.drop_at - offset]))
                assert request.transport is not None
                request.transport.abort()  # a reset, not a clean end
                return response
            if self.stall_at is not None and offset + len(piece) > self.stall_at:
                transport = request.transport
                while transport is not None and not transport.is_closing():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # silent until the client hangs up
                return response
            if self.bytes_per_s:
                await asyncio.sleep(len(piece) / self.bytes_per_s)
            await response.write(bytes(piece))
        await response.write_eof()
        return response


@pytest.fixture
async def release_server(socket_enabled: None) -> AsyncIterator[FaultyReleaseServer]:
    """Serves /feed.json and the images it lists, with faults (the gate open)."""
    server = FaultyReleaseServer()
    server.gate.set()
    async with serving(web.get("/feed.json", server.feed), web.get("/{name}", server.file)) as port:
        server.url = f"http://127.0.0.1:{port}/feed.json"
        yield server


@dataclass
class Run:
    """One cell's world: Home Assistant with the entry loaded, the device, the servers."""

    hass: HomeAssistant
    entry: MockConfigEntry
    sim: SimDevice
    server: FaultyReleaseServer
    resumed: bool = False  # Home Assistant restarted: the pressed call was cancelled

    @property
    def faults(self) -> FaultPlan:
        return self.sim.device.faults

    def job(self) -> UpdateJobRecord | None:
        job: UpdateJobRecord | None = self.entry.runtime_data.device.data.job
        return job

    def at_step(self, step: UpdateStep) -> bool:
        job = self.job()
        return job is not None and job.step is step

    def device_state(self) -> OtaState:
        return self.sim.device.ota_status().state

    def arm_api(self, path: str, fault: ApiFault, stall_s: float = API_STALL_S) -> None:
        """One request to `path` of the device's API suffers `fault`."""
        self.faults.api_fault_path, self.faults.api_fault = path, fault
        self.faults.api_stall_seconds = stall_s

    def ahead(self, bytes_ahead: int = 16 * 1024) -> int:
        """A file offset the device's download has not reached yet."""
        return min(self.sim.device.ota_status().bytes_written + bytes_ahead, IMAGE_SIZE - 1)

    async def restart_home_assistant(self) -> None:
        """Stop the integration and start it again once the device answers: the stored
        job resumes (the setup would otherwise wait for its retry, seconds later)."""
        await restart_home_assistant_side(self.hass, self.entry)
        self.resumed = True
        await self.sim.device.wait_online(10)
        assert await self.hass.config_entries.async_setup(self.entry.entry_id)

    async def refresh(self) -> None:
        await self.entry.runtime_data.device.async_refresh()


Inject = Callable[[Run], Awaitable[None]]


async def nothing(run: Run) -> None:
    """No action at this point."""


@dataclass(frozen=True)
class Cell:
    """One (fault, phase): what is done before Install is pressed (`arm`) and once the
    phase is reached (`inject`), and how the install must end (no end for `idle`)."""

    fault: str
    phase: str
    inject: Inject
    arm: Inject = nothing
    after: Inject = nothing  # checks once the install ended, before the device is healed
    result: str | None = None  # succeeded, failed, rolled_back; None for idle
    reason: str | None = None
    second_install: bool = False  # also check that a second install succeeds

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.phase}"


CELLS: list[Cell] = []


def cell(
    fault: str,
    phase: str,
    result: str | None = None,
    reason: str | None = None,
    *,
    second_install: bool = False,
    arm: Inject = nothing,
    after: Inject = nothing,
) -> Callable[[Inject], Inject]:
    """Register the decorated injection as the matrix's (fault, phase) cell."""

    def register(inject: Inject) -> Inject:
        CELLS.append(Cell(fault, phase, inject, arm, after, result, reason, second_install))
        return inject

    return register


async def reach(run: Run, phase: str) -> None:
    """Wait until the install is in `phase` (confirm: its faults are armed beforehand)."""
    if phase == "prepare":
        await wait_for(lambda: run.at_step(UpdateStep.PREPARING) and run.server.image_requests > 0)
    elif phase == "download":
        await wait_for(
            lambda: (
                run.at_step(UpdateStep.DOWNLOADING)
                and run.job().bytes_written > 0  # type: ignore[union-attr]
                and run.device_state() is OtaState.DOWNLOADING
            )
        )
    elif phase == "verify":
        await wait_for(
            lambda: run.at_step(UpdateStep.VERIFYING) and run.device_state() is OtaState.VERIFYING
        )
    elif phase == "reboot":
        await wait_for(lambda: run.at_step(UpdateStep.REBOOTING) and not run.sim.device.online)


async def wrong_sha256(run: Run) -> None:
    """The feed now lists 1.1.0 with a SHA-256 that is not its image's."""
    release = next(item for item in run.server.releases if item["version"] == "1.1.0")
    release["sha256"] = "0" * 64
    await refresh_feed(run)


async def wrong_chip(run: Run) -> None:
    """The feed lists an image for another chip (with its true SHA-256) as 1.1.0."""
    run.server.releases = [item for item in run.server.releases if item["version"] != "1.1.0"]
    image = build_app_image(project=PROJECT, version="1.1.0", chip="esp32", size=IMAGE_SIZE)
    run.server.publish("1.1.0", image)
    await refresh_feed(run)


async def stays_away(run: Run) -> None:
    """The device is still off the network when the install has ended."""
    assert not run.sim.device.online


async def reset_by(reason: str, run: Run) -> None:
    """The device's last boot was after this reset (the fault struck)."""
    await run.sim.device.wait_idle(10)
    assert run.sim.device.reset_reason == reason


async def interrupted_before_the_switch(reason: str, run: Run) -> None:
    """The device's OTA was cut by a reset before the boot partition changed."""
    await reset_by(reason, run)
    info = run.sim.device.info()
    assert info.boot_partition == info.running_partition == "ota_0"
    assert info.last_ota.message == f"the OTA was interrupted by a reset ({reason})"


# --- prepare: Home Assistant fetches the image (the host holds it until injected) -----------


@cell("drop", "prepare", "failed", "image_unavailable")
async def drop_prepare(run: Run) -> None:
    run.server.drop_at = IMAGE_SIZE // 2


@cell("corrupt", "prepare", "failed", "image_invalid")
async def corrupt_prepare(run: Run) -> None:
    run.server.corrupt_at = IMAGE_SIZE // 2


@cell("truncate", "prepare", "failed", "image_invalid")
async def truncate_prepare(run: Run) -> None:
    run.server.truncate_at = IMAGE_SIZE // 2


@cell("stall", "prepare", "failed", "image_unavailable")
async def stall_prepare(run: Run) -> None:
    run.server.stall_at = IMAGE_SIZE // 2


@cell("slow_link", "prepare", "succeeded")
async def slow_link_prepare(run: Run) -> None:
    run.server.bytes_per_s = 256 * 1024


@cell("never_back", "prepare", "failed", "device_unreachable", after=stays_away)
async def never_back_prepare(run: Run) -> None:
    run.faults.never_come_back = True
    await run.sim.device.power_cycle()


@cell("power_loss", "prepare", "succeeded")
async def power_loss_prepare(run: Run) -> None:
    await run.sim.device.power_cycle()


@cell("wrong_sha256", "prepare", "failed", "image_invalid", arm=wrong_sha256)
async def wrong_sha256_prepare(run: Run) -> None:
    """Armed in the feed before Install: the job takes the release as it is pressed."""


@cell("wrong_chip", "prepare", "failed", "image_mismatch", arm=wrong_chip)
async def wrong_chip_prepare(run: Run) -> None:
    """Armed in the feed before Install, as the wrong sha256."""


@cell("ha_restart", "prepare", "succeeded")
async def ha_restart_prepare(run: Run) -> None:
    await run.restart_home_assistant()


# --- download: the device pulls the image --------------------------------------------------


@cell("drop", "download", "succeeded")
async def drop_download(run: Run) -> None:
    run.faults.drop_at_byte = run.ahead()


@cell("corrupt", "download", "failed", "download_failed")
async def corrupt_download(run: Run) -> None:
    run.faults.corrupt_at_byte = run.ahead()


@cell("truncate", "download", "failed", "download_failed")
async def truncate_download(run: Run) -> None:
    run.faults.truncate_at_byte = run.ahead()


@cell("stall", "download", "failed", "stalled", second_install=True)
async def stall_download(run: Run) -> None:
    run.faults.stall_seconds = 30.0
    run.faults.stall_at_byte = run.ahead()


@cell("slow_link", "download", "succeeded")
async def slow_link_download(run: Run) -> None:
    run.faults.slow_link_bytes_per_s = 128 * 1024


@cell("never_back", "download", "failed", "not_back", after=stays_away)
async def never_back_download(run: Run) -> None:
    run.faults.never_come_back = True
    run.faults.power_loss_at_byte = run.ahead()


@cell("power_loss", "download", "failed", "download_failed")
async def power_loss_download(run: Run) -> None:
    run.faults.power_loss_at_byte = run.ahead()


@cell("wrong_sha256", "download", "succeeded")
async def wrong_sha256_download(run: Run) -> None:
    """The feed changes under the running job: it goes on with the image it verified."""
    await wrong_sha256(run)


@cell("token_misuse", "download", "succeeded")
async def token_misuse_download(run: Run) -> None:
    job = run.job()
    assert job is not None
    assert job.download is not None
    token = job.download.token
    refused = await firmware_requests(
        run,
        [
            (job.sha256, None),
            (job.sha256, "not-the-token"),
            ("0" * 64, token),  # the device's token, another image
        ],
    )
    assert refused == [401, 401, 404]


@cell("ha_restart", "download", "succeeded")
async def ha_restart_download(run: Run) -> None:
    await run.restart_home_assistant()


# --- verify: every byte in, the device checks the staged image (held VERIFY_HOLD_S) -------


@cell("drop", "verify", "succeeded")
async def drop_verify(run: Run) -> None:
    run.arm_api("/ota", ApiFault.DROP)  # the job's next status poll


@cell("stall", "verify", "succeeded")
async def stall_verify(run: Run) -> None:
    run.arm_api("/ota", ApiFault.STALL)


async def slow_verification(run: Run) -> None:
    run.faults.verify_seconds = SLOW_VERIFY_S


@cell("slow_link", "verify", "succeeded", arm=slow_verification)
async def slow_link_verify(run: Run) -> None:
    """The device verifies for longer than the job's stall bound (a big image, slow flash):
    no stall, no abort, the job waits for the reboot."""


@cell("never_back", "verify", "failed", "not_back", after=stays_away)
async def never_back_verify(run: Run) -> None:
    run.faults.never_come_back = True
    run.faults.power_loss_while_verifying = True


@cell(
    "power_loss",
    "verify",
    "failed",
    "download_failed",
    second_install=True,
    after=partial(interrupted_before_the_switch, ESP_RST_POWERON),
)
async def power_loss_verify(run: Run) -> None:
    run.faults.power_loss_while_verifying = True


@cell("ha_restart", "verify", "succeeded")
async def ha_restart_verify(run: Run) -> None:
    await run.restart_home_assistant()


# --- reboot: the device restarts into the new image ----------------------------------------


@cell("drop", "reboot", "succeeded")
async def drop_reboot(run: Run) -> None:
    run.arm_api("/info", ApiFault.DROP)  # the first look after the boot


@cell("stall", "reboot", "succeeded")
async def stall_reboot(run: Run) -> None:
    run.arm_api("/info", ApiFault.STALL)


@cell("slow_link", "reboot", "succeeded")
async def slow_link_reboot(run: Run) -> None:
    run.faults.api_latency_s = API_LATENCY_S


@cell("never_back", "reboot", "failed", "not_back", after=stays_away)
async def never_back_reboot(run: Run) -> None:
    run.faults.never_come_back = True


@cell("crash_on_boot", "reboot", "rolled_back", "rolled_back", second_install=True)
async def crash_on_boot_reboot(run: Run) -> None:
    run.faults.crash_on_next_boot = True


@cell("power_loss", "reboot", "succeeded", after=partial(reset_by, ESP_RST_POWERON))
async def power_loss_reboot(run: Run) -> None:
    """Cut during the restart, before the bootloader ran: the power-on boots the new image
    for the first time."""
    await run.sim.device.power_cycle()


@cell("ha_restart", "reboot", "succeeded")
async def ha_restart_reboot(run: Run) -> None:
    await run.restart_home_assistant()


# --- confirm: the new image runs pending_verify; the faults strike the confirm ---------------


async def arm_confirm(fault: ApiFault, run: Run) -> None:
    run.arm_api("/ota/confirm", fault)


@cell("drop", "confirm", "succeeded", arm=partial(arm_confirm, ApiFault.DROP), second_install=True)
async def drop_confirm(run: Run) -> None:
    """The device confirmed; its answer is lost."""


@cell("stall", "confirm", "succeeded", arm=partial(arm_confirm, ApiFault.STALL))
async def stall_confirm(run: Run) -> None:
    """The confirm is held API_STALL_S, within the bound."""


@cell("slow_link", "confirm", "succeeded")
async def slow_link_confirm(run: Run) -> None:
    """Armed as the device reboots: every request of the confirm phase is late."""
    await reach(run, "reboot")
    run.faults.api_latency_s = API_LATENCY_S


@cell(
    "never_back",
    "confirm",
    "failed",
    "device_unreachable",
    arm=partial(arm_confirm, ApiFault.STALL),
    after=stays_away,
    second_install=True,
)
async def never_back_confirm(run: Run) -> None:
    """While its confirm is held, the device loses power and never answers again."""
    await wait_for(lambda: run.faults.api_fault is None)  # the confirm arrived: held
    run.faults.never_come_back = True
    await run.sim.device.power_cycle()


@cell(
    "crash_on_boot",
    "confirm",
    "succeeded",
    arm=partial(arm_confirm, ApiFault.CRASH),
    after=partial(reset_by, ESP_RST_PANIC),
)
async def crash_on_boot_confirm(run: Run) -> None:
    """Panics right after the confirm: the next boot is of a valid image, no rollback."""


@cell(
    "power_loss",
    "confirm",
    "rolled_back",
    "rolled_back",
    arm=partial(arm_confirm, ApiFault.POWER_LOSS),
    second_install=True,
    after=partial(reset_by, ESP_RST_POWERON),
)
async def power_loss_confirm(run: Run) -> None:
    """Power lost as the confirm arrives: never confirmed, the bootloader rolls back."""


@cell("ha_restart", "confirm", "succeeded", arm=partial(arm_confirm, ApiFault.STALL))
async def ha_restart_confirm(run: Run) -> None:
    """Home Assistant stops while its confirm is held by the device."""
    await wait_for(lambda: run.faults.api_fault is None and run.at_step(UpdateStep.CONFIRMING))
    await run.restart_home_assistant()


# --- idle: no install running ----------------------------------------------------------------


@cell("drop", "idle")
async def drop_idle(run: Run) -> None:
    run.arm_api("/info", ApiFault.DROP)
    await run.refresh()  # lost: unavailable until the next poll
    await run.refresh()


@cell("corrupt", "idle")
async def corrupt_idle(run: Run) -> None:
    run.faults.corrupt_at_byte = 1000
    await run.refresh()


@cell("truncate", "idle")
async def truncate_idle(run: Run) -> None:
    run.faults.truncate_at_byte = 1000
    await run.refresh()


@cell("stall", "idle")
async def stall_idle(run: Run) -> None:
    run.arm_api("/info", ApiFault.STALL)
    await run.refresh()


@cell("slow_link", "idle")
async def slow_link_idle(run: Run) -> None:
    run.faults.api_latency_s = API_LATENCY_S
    run.faults.slow_link_bytes_per_s = 1024
    await run.refresh()


@cell("never_back", "idle")
async def never_back_idle(run: Run) -> None:
    run.faults.never_come_back = True
    await run.sim.device.power_cycle()
    await run.refresh()
    assert state_of(run.hass, FIRMWARE) == "unavailable"
    await back_for_good(run)


@cell("crash_on_boot", "idle")
async def crash_on_boot_idle(run: Run) -> None:
    run.sim.device.board.restart(ESP_RST_PANIC)
    await run.sim.device.wait_idle(10)
    await run.refresh()
    assert run.sim.device.reset_reason == ESP_RST_PANIC


@cell("power_loss", "idle")
async def power_loss_idle(run: Run) -> None:
    await run.sim.device.power_cycle()
    await run.sim.device.wait_idle(10)
    await run.refresh()
    assert run.sim.device.reset_reason == ESP_RST_POWERON


@cell("token_misuse", "idle")
async def token_misuse_idle(run: Run) -> None:
    """The last job's token (the entity's state was taken after that install)."""
    job = run.job()
    assert job is not None
    assert job.download is not None
    refused = await firmware_requests(run, [(job.sha256, job.download.token)])
    assert refused == [401]


@cell("ha_restart", "idle")
async def ha_restart_idle(run: Run) -> None:
    await run.restart_home_assistant()
    await wait_for_event_stream(run.sim)


# --- helpers of the cells ------------------------------------------------------------------


async def refresh_feed(run: Run) -> None:
    feed = run.entry.runtime_data.feed
    assert feed is not None
    await feed.async_refresh()


async def firmware_requests(run: Run, attempts: list[tuple[str, str | None]]) -> list[int]:
    """GET /firmware/<sha256>.bin on Home Assistant's firmware server, as a pinned client
    with each (sha256, token); the statuses."""
    server = run.hass.data[FIRMWARE_SERVICE].server
    assert server is not None
    context = ssl.create_default_context(cadata=server.cert_pem)
    statuses = []
    async with aiohttp.ClientSession() as session:
        for sha256, token in attempts:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            url = f"https://127.0.0.1:{server.port}/firmware/{sha256}.bin"
            async with session.get(url, ssl=context, headers=headers) as response:
                statuses.append(response.status)
    return statuses


async def back_for_good(run: Run) -> None:
    """A device that stayed away is healthy again and plugged back in."""
    run.faults.clear()
    if not run.sim.device.online:
        await run.sim.device.power_cycle()
        await run.sim.device.wait_online(10)
    await run.refresh()


def count_aborts(sim: SimDevice) -> list[OtaState]:
    """The device's state at each POST /ota/abort it receives from now on."""
    aborts: list[OtaState] = []
    abort_ota = sim.device.abort_ota

    async def counted() -> None:
        aborts.append(sim.device.ota_status().state)
        await abort_ota()

    sim.device.abort_ota = counted  # type: ignore[method-assign]
    return aborts


def entity_view(run: Run) -> dict[str, Any]:
    """What the user sees of the device, and what it runs."""
    hass = run.hass
    info = run.sim.device.info()
    return {
        "firmware": state_of(hass, FIRMWARE),
        "installed": state_attr(hass, FIRMWARE, ATTR_INSTALLED_VERSION),
        "latest": state_attr(hass, FIRMWARE, ATTR_LATEST_VERSION),
        "in_progress": state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS),
        "ota_state": state_of(hass, OTA_STATE),
        "last_result": state_of(hass, LAST_RESULT),
        "job": run.job(),
        "device": (info.version, info.running_partition, info.image_state),
    }


def assert_fired(run: Run) -> None:
    """Every one-shot fault the cell armed struck (none is left waiting)."""
    faults = run.faults
    assert faults.api_fault is None
    assert (faults.drop_at_byte, faults.stall_at_byte, faults.power_loss_at_byte) == (None,) * 3
    assert not faults.power_loss_while_verifying
    assert not faults.crash_on_next_boot


def assert_bootable(run: Run, version: str) -> None:
    """The device answers, runs `version` from an OTA slot, valid or pending_verify."""
    info = run.sim.device.info()
    assert info.version == version, info
    assert info.running_partition in ("ota_0", "ota_1")
    assert info.image_state in (ImageState.VALID, ImageState.PENDING_VERIFY)
    assert not run.sim.device.boot_loop


@pytest.mark.parametrize("matrix_cell", CELLS, ids=[item.id for item in CELLS])
async def test_fault_matrix(
    hass: HomeAssistant,
    start_device: StartDevice,
    release_server: FaultyReleaseServer,
    matrix_cell: Cell,
) -> None:
    """The fault strikes in its phase; the install ends in bounded time as expected."""
    sim = await start_device(mac="24:0a:c4:12:34:56", reboot_time_s=0.3)
    release_server.publish("1.1.0", image_of("1.1.0"))
    release_server.publish("1.2.0", image_of("1.2.0"))
    sim.device.faults.slow_link_bytes_per_s = DOWNLOAD_RATE
    entry = entry_for(sim, release_server, options={CONF_REBOOT_TIMEOUT: REBOOT_LIMIT_S})
    await load(hass, entry)
    await wait_for_event_stream(sim)
    run = Run(hass, entry, sim, release_server)
    starts = StartCounter(sim)
    aborts = count_aborts(sim)
    if matrix_cell.phase == "idle":
        await idle_cell(run, matrix_cell, starts)
        return

    await matrix_cell.arm(run)
    if matrix_cell.phase == "prepare":
        release_server.gate.clear()
    if matrix_cell.phase == "verify":
        sim.device.faults.verify_seconds = max(sim.device.faults.verify_seconds, VERIFY_HOLD_S)
    events = finished_events(hass)
    pressed = hass.async_create_task(install(hass, **{ATTR_VERSION: "1.1.0"}))
    async with asyncio.timeout(INSTALL_BOUND_S):
        await reach(run, matrix_cell.phase)
        await matrix_cell.inject(run)
        release_server.gate.set()
        await wait_for(lambda: bool(events), within=INSTALL_BOUND_S)
        outcome: BaseException | None = None
        try:
            await pressed
        except (HomeAssistantError, asyncio.CancelledError) as err:
            outcome = err

    result, reason = matrix_cell.result, matrix_cell.reason
    assert [(event.data["result"], event.data["reason"]) for event in events] == [(result, reason)]
    job = run.job()
    assert job is not None
    assert (job.step.value, job.reason) == (result, reason), job
    if run.resumed:
        assert isinstance(outcome, asyncio.CancelledError)  # the call ended with Home Assistant
    elif result == "succeeded":
        assert outcome is None
    else:
        assert isinstance(outcome, HomeAssistantError), outcome
        assert outcome.translation_key == f"install_{reason}"
        assert "{" not in str(outcome), str(outcome)  # translated, placeholders filled
        assert str(outcome) != outcome.translation_key
    device_started = not (matrix_cell.phase == "prepare" and result == "failed")
    assert starts() == int(device_started)
    # Only a stalled download is aborted (a verifying device cannot be, and need not be).
    assert len(aborts) == int(reason == "stalled")
    assert state_attr(hass, FIRMWARE, ATTR_IN_PROGRESS) in (False, None)
    assert_fired(run)
    await matrix_cell.after(run)

    await back_for_good(run)
    await sim.device.wait_idle(10)
    assert_bootable(run, "1.1.0" if result == "succeeded" else "1.0.0")
    if matrix_cell.second_install:
        await install(hass, **{ATTR_VERSION: "1.2.0"})
        assert_bootable(run, "1.2.0")
        assert sim.device.info().image_state is ImageState.VALID
        assert starts() == 1 + int(device_started)


async def idle_cell(run: Run, matrix_cell: Cell, starts: StartCounter) -> None:
    """No install runs: the fault changes nothing the user sees, and starts nothing."""
    if matrix_cell.fault == "token_misuse":
        await install(run.hass, **{ATTR_VERSION: "1.1.0"})  # a finished job, its token dead
    before = entity_view(run)
    events = finished_events(run.hass)
    await matrix_cell.inject(run)
    await run.sim.device.wait_idle(10)
    assert run.faults.api_fault is None
    await back_for_good(run)
    assert entity_view(run) == before
    assert events == []
    assert starts() == int(matrix_cell.fault == "token_misuse")
