"""The update job against the simulator, over real HTTPS on 127.0.0.1.

Each test starts a simulated ESP32 with its device API, and an HTTPS image server that,
like Home Assistant's firmware server, serves an image only to holders of a token and
counts what it sent. Faults come from the device's FaultPlan. A "restart" of the process
running a job is a job whose on_change raises (or whose task is cancelled) after the
record was stored; a new UpdateJob then resumes from the stored JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import (
    DeviceBusyError,
    DeviceRefusedError,
    DeviceUnreachableError,
    EspOtaError,
    FeedConnectionError,
    FirmwareDownloadError,
    FirmwareIntegrityError,
    FirmwareMismatchError,
    Sha256MismatchError,
)
from custom_components.esp_ota.espota.image import read_app_descriptor
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.image_source import PreparedImage
from custom_components.esp_ota.espota.job_record import (
    DownloadGrant,
    FailureReason,
    UpdateJobRecord,
    UpdateStep,
    new_record,
)
from custom_components.esp_ota.espota.protocol import (
    DeviceEvent,
    EventType,
    ImageState,
    OtaState,
    OtaStatus,
)
from custom_components.esp_ota.espota.update_job import JobTimeouts, UpdateJob
from simulator.api import DeviceApiServer
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.model import DeviceRefusedError as SimRefusedError
from simulator.model import OtaRequest
from simulator.ota_task import OtaTaskConfig
from simulator.tls import make_device_certificate
from tests.simulator.firmware_server import make_certificate

SECRET = "device-secret-for-tests"
PROJECT = "garden"
OLD, NEW = "1.0.0", "2.0.0"
SIZE = 32 * 1024
FAST = JobTimeouts(start_s=1.0, stall_s=2.0, reboot_s=3.0, confirm_s=2.0, total_s=20.0, poll_s=0.05)
# For a client with a short timeout: room for the retries after a lost answer.
PATIENT_START = JobTimeouts(
    start_s=4.0, stall_s=2.0, reboot_s=3.0, confirm_s=2.0, total_s=20.0, poll_s=0.05
)
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
# Room for a loaded test machine in assertions that a job ends near its bound (each bound
# tested is far from the next one that would end it otherwise: the client's 10 s timeout,
# the device's 15 s stall watchdog, a download that would take longer).
SLACK_S = 3.0

pytestmark = pytest.mark.usefixtures("socket_enabled")


def make_image(version: str, *, chip: str = "esp32", size: int = SIZE) -> bytes:
    return build_app_image(project=PROJECT, version=version, chip=chip, size=size)


# --- an image server and source, as Home Assistant has them ----------------------------


@dataclass
class ImageServer:
    """HTTPS on 127.0.0.1: each image to the holder of its token; single ranges."""

    runner: web.AppRunner | None = None
    port: int = 0
    cert_pem: str = ""
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)  # highest offset sent, per path
    ranges: list[str | None] = field(default_factory=list)

    def add(self, path: str, data: bytes, token: str) -> str:
        self.files[path] = (token, data)
        return f"https://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path not in self.files:
            return web.Response(status=404)
        token, data = self.files[request.path]
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.Response(status=401)
        self.ranges.append(request.headers.get("Range"))
        start, end, status = 0, len(data) - 1, 200
        headers = {"Accept-Ranges": "bytes"}
        if (header := request.headers.get("Range")) and (match := _RANGE.match(header)):
            start = int(match.group(1))
            end = min(int(match.group(2) or end), end)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end + 1 - start
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        for offset in range(start, end + 1, 4096):
            chunk = data[offset : min(offset + 4096, end + 1)]
            await response.write(chunk)
            self.sent[request.path] = max(self.sent.get(request.path, 0), offset + len(chunk))
        await response.write_eof()
        return response


@pytest.fixture
async def image_server() -> AsyncIterator[ImageServer]:
    certificate = make_certificate()
    server = ImageServer(cert_pem=certificate.cert_pem)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    server.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await server.runner.setup()
    context = await asyncio.to_thread(certificate.server_context)
    site = web.TCPSite(server.runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server.port = server.runner.addresses[0][1]
    yield server
    await server.runner.cleanup()


@dataclass
class Source:
    """An ImageSource over the test image server."""

    server: ImageServer
    image: bytes
    version: str = NEW
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    path: str = "/firmware/garden.bin"
    sha256: str | None = None  # what prepare claims (default: the real digest)
    error: EspOtaError | None = None
    report_served: bool = True
    prepared: int = 0

    async def prepare(self) -> PreparedImage:
        self.prepared += 1
        if self.error is not None:
            raise self.error
        url = self.server.add(self.path, self.image, self.token)
        _, app = read_app_descriptor(self.image)
        return PreparedImage(
            url=url,
            headers={"Authorization": f"Bearer {self.token}"},
            cert_pem=self.server.cert_pem,
            sha256=self.sha256 or hashlib.sha256(self.image).hexdigest(),
            size=len(self.image),
            version=self.version,
            app_elf_sha256=app.app_elf_sha256,
            download=self.grant(),
        )

    def grant(self) -> DownloadGrant:
        """What the record keeps to re-arm the download (the path is the source's own)."""
        return DownloadGrant(token=self.token, expires_at=time.time() + 600, host="127.0.0.1")

    def bytes_served(self) -> int | None:
        return self.server.sent.get(self.path) if self.report_served else None

    def rearmed(self, download: DownloadGrant | None) -> Source:
        """The source a restarted process makes from the stored record's `download`."""
        assert download is not None
        return Source(self.server, self.image, self.version, download.token, self.path)


# --- devices ------------------------------------------------------------------------


@dataclass
class Sim:
    """A simulated device, its API and a pinned client; every start it received."""

    device: SimulatedDevice
    server: DeviceApiServer
    client: DeviceClient
    starts: list[OtaRequest]
    session: aiohttp.ClientSession

    def client_with(self, **changes: Any) -> DeviceClient:
        """Another client of the same device (another secret, another timeout)."""
        options: dict[str, Any] = {
            "secret": SECRET,
            "cert_fingerprint": self.server.certificate.fingerprint,
        } | changes
        secret = options.pop("secret")
        return DeviceClient(self.session, "127.0.0.1", self.server.port, secret, **options)

    async def info(self) -> Any:
        return await self.client.info()


StartSim = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def start_sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartSim]:
    session = aiohttp.ClientSession()
    started: list[Sim] = []
    counter = iter(range(1, 250))

    async def factory(*, reboot_time_s: float = 0.05, **config: Any) -> Sim:
        mac = f"24:0a:c4:77:00:{next(counter):02x}"
        device = SimulatedDevice(
            DeviceConfig(
                mac=mac,
                secret=SECRET,
                factory_image=make_image(OLD),
                reboot_time_s=reboot_time_s,
                ota=OtaTaskConfig().with_settings(timeout_ms=500, stall_abort_ms=15_000),
                **config,
            )
        )
        certificate = make_device_certificate(mac, "esp-ota-job-test.local")
        server = DeviceApiServer(device, certificate)
        await device.start()
        starts: list[OtaRequest] = []
        real_start = device.start_ota

        async def counted_start(request: OtaRequest) -> str:
            starts.append(request)
            return await real_start(request)

        monkeypatch.setattr(device, "start_ota", counted_start)
        client = DeviceClient(
            session, "127.0.0.1", server.port, SECRET, cert_fingerprint=certificate.fingerprint
        )
        sim = Sim(device, server, client, starts, session)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        await sim.server.close()
        await sim.device.close()
    await session.close()


class Restart(Exception):  # noqa: N818 - not an error: the process "restarts"
    """Raised by on_change to stop a job as a Home Assistant restart would."""


@dataclass
class Store:
    """What the caller persists: the record's JSON after every on_change."""

    saved: list[dict[str, Any]] = field(default_factory=list)
    stop_when: Callable[[UpdateJobRecord], bool] | None = None

    def on_change(self, record: UpdateJobRecord) -> None:
        self.saved.append(json.loads(json.dumps(record.to_dict())))
        if self.stop_when is not None and self.stop_when(record):
            raise Restart

    @property
    def last(self) -> dict[str, Any]:
        return self.saved[-1]

    def steps(self) -> list[UpdateStep]:
        steps: list[UpdateStep] = []
        for data in self.saved:
            step = UpdateStep(data["step"])
            if not steps or steps[-1] is not step:
                steps.append(step)
        return steps

    def percentages(self) -> list[float]:
        return [
            p
            for data in self.saved
            if (p := UpdateJobRecord.from_dict(data).percentage) is not None
        ]


def job_for(
    sim: Sim,
    source: Source,
    store: Store,
    *,
    record: UpdateJobRecord | None = None,
    timeouts: JobTimeouts = FAST,
) -> UpdateJob:
    if record is None:
        record = new_record(
            mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
        )
    return UpdateJob(sim.client, record, source, on_change=store.on_change, timeouts=timeouts)


async def resume(
    sim: Sim, source: Source, stored: dict[str, Any], timeouts: JobTimeouts = FAST
) -> tuple[UpdateJobRecord, Store]:
    """A new process: the record from its JSON, a re-armed source, a new job."""
    record = UpdateJobRecord.from_dict(json.loads(json.dumps(stored)))
    store = Store()
    job = job_for(sim, source.rearmed(record.download), store, record=record, timeouts=timeouts)
    return await job.run(), store


async def assert_runs_new_firmware(sim: Sim) -> None:
    info = await sim.info()
    assert (info.version, info.running_partition, info.image_state) == (
        NEW,
        "ota_1",
        ImageState.VALID,
    )


async def assert_runs_old_firmware(sim: Sim) -> None:
    info = await sim.info()
    assert (info.version, info.running_partition, info.image_state) == (
        OLD,
        "ota_0",
        ImageState.VALID,
    )


async def wait_until(condition: Callable[[], bool], within_s: float = 5) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - polling plain attributes is the point
            await asyncio.sleep(0.01)


ORDER = list(UpdateStep)


# --- the good update ----------------------------------------------------------------------


async def test_a_good_update(
    start_sim: StartSim, image_server: ImageServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every step in order, progress that only grows, the device confirmed on 2.0.0, one
    start, and the download token in no log line."""
    caplog.set_level(logging.DEBUG)
    sim = await start_sim(reboot_time_s=0.2)
    sim.device.faults.slow_link_bytes_per_s = 200_000
    image = make_image(NEW, size=64 * 1024)
    source = Source(image_server, image)
    store = Store()
    began = time.monotonic()
    record = await job_for(sim, source, store).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert (record.reason, record.error) == (None, None)
    assert time.monotonic() - began < 10
    steps = store.steps()
    assert steps == sorted(steps, key=ORDER.index), steps
    for step in (
        UpdateStep.PREPARING,
        UpdateStep.STARTING,
        UpdateStep.DOWNLOADING,
        UpdateStep.REBOOTING,
        UpdateStep.CONFIRMING,
        UpdateStep.SUCCEEDED,
    ):
        assert step in steps
    percentages = store.percentages()
    assert percentages == sorted(percentages)
    assert len({p for p in percentages if 0 < p < 100}) >= 3  # progress was shown
    assert percentages[-1] == record.percentage == 100.0
    assert record.bytes_written == record.size == len(image)
    assert record.sha256 == hashlib.sha256(image).hexdigest()
    assert record.app_elf_sha256 == read_app_descriptor(image)[1].app_elf_sha256
    assert record.ota_id is not None
    assert record.start_sent
    assert record.download is not None
    assert record.download.token == source.token
    # Progress notifications are throttled (about 1 % steps), not one per 4 KiB write.
    assert len(store.saved) < 120
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)
    assert source.token not in caplog.text
    results = [r for r in caplog.records if r.name.endswith("update_job") and r.levelname == "INFO"]
    assert [r.getMessage() for r in results] == [
        f"{sim.device.config.mac}: updated from {OLD} to {NEW}"
    ]
    assert UpdateJobRecord.from_dict(record.to_dict()) == record


async def test_a_finished_record_runs_no_more(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    record = await job_for(sim, source, Store()).run()
    store = Store()
    again = await job_for(sim, source, store, record=record).run()
    assert again is record
    assert record.step is UpdateStep.SUCCEEDED
    assert store.saved == []
    assert len(sim.starts) == 1


async def test_a_slow_link_is_fine(start_sim: StartSim, image_server: ImageServer) -> None:
    """A link much slower than a LAN (and no server-side progress): still done, and the
    stall bound is about no progress, not about a slow one."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 40_000
    source = Source(image_server, make_image(NEW, size=24 * 1024), report_served=False)
    store = Store()
    timeouts = JobTimeouts(start_s=1, stall_s=0.5, reboot_s=2, confirm_s=1, total_s=10, poll_s=0.1)
    record = await job_for(sim, source, store, timeouts=timeouts).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(set(store.percentages())) >= 5
    await assert_runs_new_firmware(sim)


async def test_events_carry_the_progress_between_polls(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """With polls far apart, the device's event stream still moves the progress."""
    sim = await start_sim(progress_event_interval_s=0)
    sim.device.faults.slow_link_bytes_per_s = 128_000
    source = Source(image_server, make_image(NEW), report_served=False)
    store = Store()
    timeouts = JobTimeouts(start_s=1, stall_s=2, reboot_s=3, confirm_s=2, total_s=10, poll_s=0.5)
    began = time.monotonic()
    record = await job_for(sim, source, store, timeouts=timeouts).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    download_s = SIZE / 128_000
    polls = download_s / timeouts.poll_s + 1
    assert len({p for p in store.percentages() if 0 < p < 100}) > 2 * polls
    assert time.monotonic() - began < 6


async def test_a_download_it_started_is_followed_by_events_before_any_poll(
    start_sim: StartSim, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device has just taken the start: the job follows its events, and GET /ota is
    for when they stop (one request less per device as an install begins)."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 128_000
    timeouts = JobTimeouts(start_s=1, stall_s=2, reboot_s=3, confirm_s=2, total_s=10, poll_s=0.5)
    job = job_for(sim, Source(image_server, make_image(NEW)), Store(), timeouts=timeouts)
    polled: list[tuple[UpdateStep, int]] = []  # the job's step and bytes at each GET /ota
    ota_status = sim.client.ota_status

    async def watched() -> OtaStatus:
        polled.append((job.record.step, job.record.bytes_written))
        return await ota_status()

    monkeypatch.setattr(sim.client, "ota_status", watched)
    record = await job.run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert polled[0] == (UpdateStep.STARTING, 0)  # what the device ran before the start
    assert all(written > 0 for step, written in polled if step is UpdateStep.DOWNLOADING)


async def test_progress_follows_the_device_not_the_server(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """The server has "sent" the whole image into the sockets' buffers long before the
    device has written it: the percentage follows the device."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 200_000
    source = Source(image_server, make_image(NEW))
    store = Store()
    ahead: list[tuple[int, int]] = []

    def watch(record: UpdateJobRecord) -> None:
        store.on_change(record)
        served = source.bytes_served()
        if record.step is UpdateStep.DOWNLOADING and served is not None:
            ahead.append((served, record.bytes_written))

    job = UpdateJob(
        sim.client,
        new_record(
            mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
        ),
        source,
        on_change=watch,
        timeouts=FAST,
    )
    record = await job.run()
    assert record.step is UpdateStep.SUCCEEDED
    assert any(served > written for served, written in ahead)  # the server was ahead
    assert len({p for p in store.percentages() if 0 < p < 100}) >= 3


# --- faults during the download -----------------------------------------------------------


async def test_a_dropped_connection_resumes(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    sim.device.faults.drop_at_byte = 20_000
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert any(r and r.startswith("bytes=") for r in image_server.ranges)  # resumed by Range
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)


async def test_a_corrupt_byte_fails_the_download(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    sim.device.faults.corrupt_at_byte = 30_000
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.DOWNLOAD_FAILED)
    assert record.error == "ESP_ERR_OTA_VALIDATE_FAILED"
    assert record.message
    await assert_runs_old_firmware(sim)


async def test_a_truncated_download_fails(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    sim.device.faults.truncate_at_byte = 10_000
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DOWNLOAD_FAILED,
        "ESP_FAIL",
    )
    await assert_runs_old_firmware(sim)


@pytest.mark.parametrize(
    "abort_failure",
    [
        None,
        DeviceRefusedError("ESP_ERR_INVALID_STATE", "no OTA to abort"),
        DeviceUnreachableError("the abort was lost"),
    ],
    ids=["aborted", "abort-refused", "abort-lost"],
)
async def test_a_long_stall_is_aborted(
    start_sim: StartSim,
    image_server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
    abort_failure: EspOtaError | None,
) -> None:
    """No progress for stall_s: the job aborts the device's OTA and ends STALLED, long
    before the device's own watchdog (15 s) would. An abort refused (the device, asked
    again, is still stuck downloading) or lost ends the job STALLED all the same."""
    sim = await start_sim()
    sim.device.faults.stall_at_byte = 16_384
    sim.device.faults.stall_seconds = 10
    real_abort = sim.client.abort_ota
    if abort_failure is not None:

        async def abort_fails() -> None:
            raise abort_failure

        monkeypatch.setattr(sim.client, "abort_ota", abort_fails)
    timeouts = JobTimeouts(start_s=1, stall_s=0.3, reboot_s=2, confirm_s=1, total_s=10, poll_s=0.05)
    source = Source(image_server, make_image(NEW), report_served=False)
    began = time.monotonic()
    record = await job_for(sim, source, Store(), timeouts=timeouts).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.STALLED)
    assert time.monotonic() - began < timeouts.stall_s + SLACK_S
    assert 0 < record.bytes_written <= 16_384
    assert record.message is not None
    assert "aborted" in record.message
    status = await sim.client.ota_status()
    if abort_failure is not None:
        assert (status.state, status.ota_id) == (OtaState.DOWNLOADING, record.ota_id)
        await real_abort()  # nothing aborted it: end it for the next test's sake
        return
    assert (status.state, status.ota_id) == (OtaState.ABORTED, record.ota_id)
    await assert_runs_old_firmware(sim)


async def test_a_short_stall_recovers(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    sim.device.faults.stall_at_byte = 16_384
    sim.device.faults.stall_seconds = 0.3
    timeouts = JobTimeouts(start_s=1, stall_s=1.0, reboot_s=2, confirm_s=1, total_s=10, poll_s=0.1)
    source = Source(image_server, make_image(NEW), report_served=False)
    record = await job_for(sim, source, Store(), timeouts=timeouts).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    await assert_runs_new_firmware(sim)


async def test_a_verification_longer_than_stall_s_is_waited_for(
    start_sim: StartSim, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device verifies the staged image for longer than stall_s: it has every byte and
    cannot be aborted then, so it is not stalled; the job waits for its reboot."""
    sim = await start_sim()
    sim.device.faults.verify_seconds = 1.0
    aborts: list[None] = []
    real_abort = sim.client.abort_ota

    async def counted_abort() -> None:
        aborts.append(None)
        await real_abort()

    monkeypatch.setattr(sim.client, "abort_ota", counted_abort)
    timeouts = JobTimeouts(start_s=1, stall_s=0.3, reboot_s=2, confirm_s=1, total_s=10, poll_s=0.05)
    source = Source(image_server, make_image(NEW), report_served=False)
    record = await job_for(sim, source, Store(), timeouts=timeouts).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert aborts == []
    await assert_runs_new_firmware(sim)


async def test_only_its_own_events_count_and_a_reboot_event_moves_on(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """A tap on the device's one stream carries every job's events: another job's progress
    moves nothing. The device's reboot event moves the job to REBOOTING at once."""
    sim = await start_sim(reboot_time_s=0.3)
    sim.device.faults.slow_link_bytes_per_s = 200_000

    async def tap() -> AsyncIterator[DeviceEvent]:
        async for event in sim.client.events():
            yield replace(event, ota_id="another-job", bytes_written=SIZE)
            yield event
            if event.type is EventType.UPDATE_BOOT_PARTITION:
                yield replace(event, type=EventType.REBOOT)

    store = Store()
    job = UpdateJob(
        sim.client,
        new_record(
            mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
        ),
        Source(image_server, make_image(NEW), report_served=False),
        on_change=store.on_change,
        timeouts=FAST,
        events=tap,
    )
    record = await job.run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert UpdateStep.REBOOTING in store.steps()
    assert store.percentages()[0] < 50  # not the other job's SIZE bytes
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)


async def test_power_loss_mid_write(start_sim: StartSim, image_server: ImageServer) -> None:
    """The device vanishes mid-download and comes back on the old firmware: the job
    follows it through the reboot and reports the device's own error, not a hang."""
    sim = await start_sim(reboot_time_s=0.3)
    sim.device.faults.slow_link_bytes_per_s = 200_000
    sim.device.faults.power_loss_at_byte = 16_384
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.DOWNLOAD_FAILED)
    assert record.error == "ESP_FAIL"
    assert record.message is not None
    assert "ESP_RST_POWERON" in record.message
    await assert_runs_old_firmware(sim)
    assert (await sim.info()).reset_reason == "ESP_RST_POWERON"


async def test_a_wrong_sha256_is_refused_at_the_end(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW), sha256="ab" * 32)
    record = await job_for(sim, source, Store()).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DOWNLOAD_FAILED,
        "ESP_ERR_OTA_VALIDATE_FAILED",
    )
    await assert_runs_old_firmware(sim)


async def test_an_image_for_another_chip_is_refused(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW, chip="esp32s3"))
    record = await job_for(sim, source, Store()).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DOWNLOAD_FAILED,
        "ESP_ERR_INVALID_VERSION",
    )
    await assert_runs_old_firmware(sim)


# --- after the reboot ---------------------------------------------------------------------


async def test_a_device_that_never_comes_back(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    sim.device.faults.never_come_back = True
    timeouts = JobTimeouts(start_s=1, stall_s=2, reboot_s=0.4, confirm_s=1, total_s=10, poll_s=0.05)
    began = time.monotonic()
    record = await job_for(
        sim, Source(image_server, make_image(NEW)), Store(), timeouts=timeouts
    ).run()
    elapsed = time.monotonic() - began
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.NOT_BACK)
    assert timeouts.reboot_s <= elapsed < timeouts.reboot_s + SLACK_S
    assert record.percentage is None  # finished: no progress bar


async def test_a_crash_on_boot_is_rolled_back(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    sim.device.faults.crash_on_next_boot = True
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert (record.step, record.reason) == (UpdateStep.ROLLED_BACK, FailureReason.ROLLED_BACK)
    assert record.message is not None
    assert "ota_1" in record.message
    info = await sim.info()
    assert (info.version, info.running_partition, info.last_invalid_partition) == (
        OLD,
        "ota_0",
        "ota_1",
    )


async def test_a_device_back_on_other_firmware(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """The image says 2.0.0 but is not the build the job expects (another ELF)."""
    sim = await start_sim()
    image = make_image(NEW)
    source = Source(image_server, image)
    store = Store()
    job = job_for(sim, source, store)
    real_prepare = source.prepare

    async def prepare_expecting_another_build() -> PreparedImage:
        prepared = await real_prepare()
        return PreparedImage(**{**prepared.__dict__, "app_elf_sha256": "cd" * 32})

    source.prepare = prepare_expecting_another_build  # type: ignore[method-assign]
    record = await job.run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.WRONG_FIRMWARE)
    assert record.message is not None
    assert "app_elf_sha256" in record.message
    # Not confirmed: the next reboot rolls the unknown build back.
    assert (await sim.info()).image_state is ImageState.PENDING_VERIFY


def refuse_confirm() -> None:
    # esp_ota_mark_app_valid_cancel_rollback() can fail (an otadata write error).
    raise SimRefusedError("ESP_ERR_FLASH_OP_FAIL", "otadata could not be written")


def ignore_confirm() -> None:
    # A firmware bug: it answers ok and marks nothing.
    return


@pytest.mark.parametrize(
    "case",
    [
        (refuse_confirm, "ESP_ERR_FLASH_OP_FAIL", "otadata could not be written"),
        (ignore_confirm, None, "the image is still pending_verify after the confirm"),
    ],
    ids=["refused", "ignored"],
)
async def test_a_confirm_that_does_not_take(
    start_sim: StartSim,
    image_server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[Callable[[], None], str | None, str],
) -> None:
    confirm, error, message = case
    sim = await start_sim()
    monkeypatch.setattr(sim.device, "confirm", confirm)
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert (record.step, record.reason, record.error, record.message) == (
        UpdateStep.FAILED,
        FailureReason.CONFIRM_FAILED,
        error,
        message,
    )
    assert (await sim.info()).image_state is ImageState.PENDING_VERIFY


# --- refusals at the start ----------------------------------------------------------------


async def test_a_busy_answer_to_its_own_start(
    start_sim: StartSim, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device took the start, but the answer that came back says busy (a retried
    request on a flaky network): the job finds its own job and adopts it."""
    sim = await start_sim()
    real_start = sim.client.start_ota

    async def busy_after_starting(**request: Any) -> str:
        await real_start(**request)
        raise DeviceBusyError("ESP_ERR_INVALID_STATE", "an OTA is already running")

    monkeypatch.setattr(sim.client, "start_ota", busy_after_starting)
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 1
    assert record.ota_id == (await sim.client.ota_status()).ota_id
    await assert_runs_new_firmware(sim)


@pytest.mark.parametrize("request_name", ["start_ota", "confirm"])
async def test_a_request_that_never_reaches_the_device(
    start_sim: StartSim,
    image_server: ImageServer,
    monkeypatch: pytest.MonkeyPatch,
    request_name: str,
) -> None:
    """The device answers its reads, but POST /ota (or POST /ota/confirm) never reaches
    it: retried within start_s (while the device shows no job of ours) or confirm_s, then
    DEVICE_UNREACHABLE. No start went twice; an unconfirmed image is the bootloader's."""
    sim = await start_sim()

    async def lost(**request: Any) -> str:
        raise DeviceUnreachableError("connection reset")

    monkeypatch.setattr(sim.client, request_name, lost)
    timeouts = JobTimeouts(
        start_s=0.5, stall_s=2, reboot_s=3, confirm_s=0.5, total_s=10, poll_s=0.05
    )
    store = Store()
    record = await job_for(
        sim, Source(image_server, make_image(NEW)), store, timeouts=timeouts
    ).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DEVICE_UNREACHABLE,
        "DeviceUnreachableError",
    )
    retried_in = UpdateStep.STARTING if request_name == "start_ota" else UpdateStep.CONFIRMING
    entered = next(data["step_since"] for data in store.saved if data["step"] == retried_in)
    assert 0.5 <= record.step_since - entered < 0.5 + SLACK_S
    assert record.start_sent
    if request_name == "start_ota":
        assert sim.starts == []
    else:
        assert (await sim.info()).image_state is ImageState.PENDING_VERIFY


async def test_a_busy_device(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 20_000
    other = make_image("1.5.0")
    url = image_server.add("/other.bin", other, "other-token")
    await sim.device.start_ota(
        OtaRequest(
            url=url,
            sha256=hashlib.sha256(other).hexdigest(),
            size=len(other),
            version="1.5.0",
            cert_pem=image_server.cert_pem,
            headers={"Authorization": "Bearer other-token"},
        )
    )
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DEVICE_BUSY,
        "ESP_ERR_INVALID_STATE",
    )
    assert record.ota_id is None
    await sim.client.abort_ota()  # the other update was never the job's to stop


async def test_a_device_still_pending_verify(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    first = make_image("1.5.0")
    url = image_server.add("/first.bin", first, "first")
    await sim.device.start_ota(
        OtaRequest(
            url=url,
            sha256=hashlib.sha256(first).hexdigest(),
            size=len(first),
            version="1.5.0",
            cert_pem=image_server.cert_pem,
            headers={"Authorization": "Bearer first"},
        )
    )
    await wait_until(
        lambda: sim.device.online and sim.device.image_state() is ImageState.PENDING_VERIFY
    )
    record = new_record(
        mac=sim.device.config.mac, from_version="1.5.0", to_version=NEW, from_partition="ota_1"
    )
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store(), record=record).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DEVICE_REFUSED,
        "ESP_ERR_OTA_ROLLBACK_INVALID_STATE",
    )
    assert record.message


async def test_an_unreachable_device(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    await sim.server.go_offline()
    timeouts = JobTimeouts(start_s=0.5, stall_s=2, reboot_s=2, confirm_s=1, total_s=10, poll_s=0.1)
    began = time.monotonic()
    store = Store()
    record = await job_for(
        sim, Source(image_server, make_image(NEW)), store, timeouts=timeouts
    ).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.DEVICE_UNREACHABLE)
    assert time.monotonic() - began < timeouts.start_s + SLACK_S
    assert not record.start_sent
    assert sim.starts == []


async def test_a_device_that_accepts_but_never_answers(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """A hung device (TCP accepted, no TLS, no answer): the request is cut at the bound,
    not at the client's own 10 s timeout."""
    sim = await start_sim()
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    hung = await asyncio.start_server(hold, "127.0.0.1", 0)
    sim.client = DeviceClient(
        sim.session,
        "127.0.0.1",
        hung.sockets[0].getsockname()[1],
        SECRET,
        cert_fingerprint=sim.server.certificate.fingerprint,
    )
    timeouts = JobTimeouts(start_s=0.5, stall_s=1, reboot_s=1, confirm_s=1, total_s=10, poll_s=0.05)
    began = time.monotonic()
    try:
        record = await job_for(
            sim, Source(image_server, make_image(NEW)), Store(), timeouts=timeouts
        ).run()
    finally:
        for writer in held:
            writer.close()
        hung.close()
        await hung.wait_closed()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DEVICE_UNREACHABLE,
        "DeviceTimeoutError",
    )
    assert time.monotonic() - began < timeouts.start_s + SLACK_S
    assert not record.start_sent


async def test_a_wrong_device_secret(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    sim.client = sim.client_with(secret="not-the-secret")
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store()).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        FailureReason.DEVICE_REFUSED,
        "HTTPD_401_UNAUTHORIZED",
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (FirmwareIntegrityError("sha256 differs"), FailureReason.IMAGE_INVALID),
        (Sha256MismatchError("appended hash"), FailureReason.IMAGE_INVALID),
        (
            FirmwareMismatchError("chip", expected="esp32", actual="esp32s3", against="device"),
            FailureReason.IMAGE_MISMATCH,
        ),
        (
            FirmwareDownloadError("HTTP 404", url="https://example.invalid/x", status=404),
            FailureReason.IMAGE_UNAVAILABLE,
        ),
        (FeedConnectionError("no route"), FailureReason.IMAGE_UNAVAILABLE),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
async def test_the_image_cannot_be_prepared(
    start_sim: StartSim, image_server: ImageServer, error: EspOtaError, reason: FailureReason
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW), error=error)
    record = await job_for(sim, source, Store()).run()
    assert (record.step, record.reason, record.error) == (
        UpdateStep.FAILED,
        reason,
        type(error).__name__,
    )
    assert record.message == str(error)
    assert sim.starts == []


async def test_an_image_of_another_version(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image("2.1.0"), version="2.1.0")
    record = await job_for(sim, source, Store()).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.IMAGE_MISMATCH)
    assert sim.starts == []


async def test_the_whole_job_is_bounded(start_sim: StartSim, image_server: ImageServer) -> None:
    """total_s passes during a (slow but moving) download: TIMED_OUT, and the device's
    download is aborted rather than left to reboot later."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 10_000
    timeouts = JobTimeouts(start_s=1, stall_s=5, reboot_s=2, confirm_s=1, total_s=0.6, poll_s=0.05)
    began = time.monotonic()
    record = await job_for(
        sim, Source(image_server, make_image(NEW)), Store(), timeouts=timeouts
    ).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.TIMED_OUT)
    assert time.monotonic() - began < timeouts.total_s + SLACK_S
    assert record.message is not None
    assert "aborted" in record.message
    assert (await sim.client.ota_status()).state is OtaState.ABORTED


# --- resuming after a restart -------------------------------------------------------------


async def run_until_restart(job: UpdateJob) -> None:
    with pytest.raises(Restart):
        await job.run()


async def test_resume_after_an_unanswered_start_that_arrived(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """The start went out, the process died before the answer was stored: the resumed
    job finds the device's job (a new ota_id for the target) and adopts it."""
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda record: record.ota_id is not None)
    await run_until_restart(job_for(sim, source, store))
    stored = next(d for d in store.saved if d["start_sent"] and d["ota_id"] is None)
    assert stored["step"] == "starting"
    record, _ = await resume(sim, source, stored)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 1
    assert record.ota_id == (await sim.client.ota_status()).ota_id
    await assert_runs_new_firmware(sim)


async def test_resume_after_a_start_that_never_arrived(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda record: record.start_sent)
    await run_until_restart(job_for(sim, source, store))
    assert sim.starts == []
    record, _ = await resume(sim, source, store.last)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)


async def test_an_old_job_to_the_same_version_is_not_adopted(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """A device whose last job (failed) targeted the same version: that one is not ours."""
    sim = await start_sim()
    sim.device.faults.corrupt_at_byte = 30_000
    source = Source(image_server, make_image(NEW))
    failed = await job_for(sim, source, Store()).run()
    assert failed.reason is FailureReason.DOWNLOAD_FAILED
    sim.device.faults.clear()
    store = Store(stop_when=lambda record: record.start_sent)
    await run_until_restart(job_for(sim, source, store))
    assert store.last["ota_id_before"] == failed.ota_id
    record, _ = await resume(sim, source, store.last)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert record.ota_id != failed.ota_id
    assert len(sim.starts) == 2  # one per job


async def test_resume_during_the_download(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 150_000
    source = Source(image_server, make_image(NEW), report_served=False)
    store = Store(
        stop_when=lambda r: r.step is UpdateStep.DOWNLOADING and 0 < r.bytes_written < SIZE // 2
    )
    await run_until_restart(job_for(sim, source, store))
    stored = store.last
    assert (await sim.client.ota_status()).state is OtaState.DOWNLOADING
    record, resumed = await resume(sim, source, stored)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert record.ota_id == stored["ota_id"]
    assert len(sim.starts) == 1
    percentages = resumed.percentages()
    assert percentages == sorted(percentages)
    assert percentages[0] >= stored["bytes_written"] * 100 / SIZE
    await assert_runs_new_firmware(sim)


async def test_a_cancelled_job_resumes(start_sim: StartSim, image_server: ImageServer) -> None:
    """Cancelling the task (Home Assistant stopping) raises CancelledError and leaves the
    stored record resumable."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 200_000
    source = Source(image_server, make_image(NEW))
    store = Store()
    task = asyncio.create_task(job_for(sim, source, store).run())
    await wait_until(lambda: bool(store.saved) and store.last["bytes_written"] > 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not UpdateJobRecord.from_dict(store.last).finished
    record, _ = await resume(sim, source, store.last)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 1


@pytest.mark.parametrize("stored_step", ["downloading", "rebooting"])
async def test_resume_when_the_download_failed_meanwhile(
    start_sim: StartSim, image_server: ImageServer, stored_step: str
) -> None:
    """The device's job failed while nobody watched: whether the record says downloading
    or rebooting, the device's last_ota tells, with its error."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 200_000
    sim.device.faults.corrupt_at_byte = 20_000
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.DOWNLOADING)
    await run_until_restart(job_for(sim, source, store))
    await sim.device.wait_idle(within_s=5)
    record, _ = await resume(sim, source, store.last | {"step": stored_step})
    assert (record.reason, record.error) == (
        FailureReason.DOWNLOAD_FAILED,
        "ESP_ERR_OTA_VALIDATE_FAILED",
    )
    assert len(sim.starts) == 1


async def test_resume_during_the_reboot(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim(reboot_time_s=0.5)
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.REBOOTING)
    await run_until_restart(job_for(sim, source, store))
    record, _ = await resume(sim, source, store.last)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)


async def test_resume_during_the_reboot_of_a_rollback(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim(reboot_time_s=0.3)
    sim.device.faults.crash_on_next_boot = True
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.REBOOTING)
    await run_until_restart(job_for(sim, source, store))
    record, _ = await resume(sim, source, store.last)
    assert record.step is UpdateStep.ROLLED_BACK
    assert len(sim.starts) == 1


async def test_resume_after_the_reboot_before_the_confirm(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.CONFIRMING)
    await run_until_restart(job_for(sim, source, store))
    assert sim.device.image_state() is ImageState.PENDING_VERIFY  # not confirmed yet
    record, resumed = await resume(sim, source, store.last)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert resumed.steps() == [UpdateStep.SUCCEEDED]
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)


async def test_resume_before_the_confirm_while_the_device_is_away(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """The device is briefly off the network when the resumed job wants to confirm (its
    Wi-Fi reconnecting): the job retries within confirm_s."""
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.CONFIRMING)
    await run_until_restart(job_for(sim, source, store))
    await sim.server.go_offline()

    async def back_soon() -> None:
        await asyncio.sleep(0.3)
        await sim.server.go_online()

    back = asyncio.create_task(back_soon())
    record, _ = await resume(sim, source, store.last)
    await back
    assert record.step is UpdateStep.SUCCEEDED, record
    await assert_runs_new_firmware(sim)


async def test_resume_before_the_confirm_of_a_device_gone(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.CONFIRMING)
    await run_until_restart(job_for(sim, source, store))
    await sim.server.go_offline()
    timeouts = JobTimeouts(start_s=1, stall_s=1, reboot_s=1, confirm_s=0.5, total_s=10, poll_s=0.05)
    began = time.monotonic()
    record, _ = await resume(sim, source, store.last, timeouts)
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.DEVICE_UNREACHABLE)
    assert time.monotonic() - began < timeouts.confirm_s + SLACK_S


async def test_resume_after_the_confirm(start_sim: StartSim, image_server: ImageServer) -> None:
    """Confirmed, but the process died before SUCCEEDED was stored."""
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.SUCCEEDED)
    await run_until_restart(job_for(sim, source, store))
    stored = store.saved[-2]
    assert stored["step"] == "confirming"
    assert sim.device.image_state() is ImageState.VALID
    record, _ = await resume(sim, source, stored)
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)


async def test_resume_of_a_job_the_device_never_saw(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    record = new_record(
        mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
    )
    record = replace(
        record,
        step=UpdateStep.DOWNLOADING,
        start_sent=True,
        ota_id="0badc0ffee00",
        download=source.grant(),
    )
    finished, _ = await resume(sim, source, record.to_dict())
    assert (finished.step, finished.reason) == (UpdateStep.FAILED, FailureReason.INTERRUPTED)
    assert sim.starts == []
    await assert_runs_old_firmware(sim)


async def test_resume_past_the_deadline_still_confirms(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """Home Assistant was down longer than total_s while the device rebooted into the new
    image: one last look finds it pending and confirms it, instead of a rollback later."""
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    store = Store(stop_when=lambda r: r.step is UpdateStep.CONFIRMING)
    await run_until_restart(job_for(sim, source, store))
    stored = dict(store.last, started_at=store.last["started_at"] - 3600)
    record, _ = await resume(sim, source, stored)
    assert record.step is UpdateStep.SUCCEEDED, record
    await assert_runs_new_firmware(sim)


async def test_resume_past_the_deadline_of_a_job_that_went_nowhere(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """Preparing began two hours ago and nothing was sent: timed out, nothing is sent now."""
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    record = new_record(
        mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
    )
    record = replace(
        record, step=UpdateStep.PREPARING, started_at=time.time() - 7200, download=source.grant()
    )
    finished, _ = await resume(sim, source, record.to_dict())
    assert (finished.step, finished.reason) == (UpdateStep.FAILED, FailureReason.TIMED_OUT)
    assert sim.starts == []
    assert source.prepared == 0


async def test_time_in_a_queue_does_not_count(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """A job queued behind others for longer than total_s still runs: the bound starts
    when it leaves QUEUED (and is stored from then on)."""
    sim = await start_sim()
    record = new_record(
        mac=sim.device.config.mac,
        from_version=OLD,
        to_version=NEW,
        from_partition="ota_0",
        clock=lambda: time.time() - 7200,
    )
    store = Store()
    began = time.time()
    finished = await job_for(sim, Source(image_server, make_image(NEW)), store, record=record).run()
    assert finished.step is UpdateStep.SUCCEEDED, finished
    assert finished.started_at is not None
    assert finished.started_at >= began
    assert store.saved[0]["started_at"] == finished.started_at


async def test_a_start_whose_answer_is_lost(
    start_sim: StartSim, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device takes the start but its answer comes too late: the job asks the device
    before sending again, finds its job and adopts it."""
    sim = await start_sim()
    counted_start = sim.device.start_ota

    async def late_answer(request: OtaRequest) -> str:
        ota_id = await counted_start(request)
        await asyncio.sleep(0.6)  # the client has given up by now
        return ota_id

    monkeypatch.setattr(sim.device, "start_ota", late_answer)
    sim.client = sim.client_with(timeout=0.3)
    record = await job_for(
        sim, Source(image_server, make_image(NEW)), Store(), timeouts=PATIENT_START
    ).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 1
    await assert_runs_new_firmware(sim)


async def test_a_start_lost_on_the_way_is_sent_again(
    start_sim: StartSim, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start request is swallowed (it reaches the device's server but starts
    nothing, and no answer comes): the job asks, sees no job, and sends it again."""
    sim = await start_sim()
    counted_start = sim.device.start_ota

    async def lose_the_first(request: OtaRequest) -> str:
        if len(sim.starts) == 0:
            sim.starts.append(request)
            await asyncio.sleep(0.6)  # no answer before the client gives up
            raise SimRefusedError("ESP_FAIL", "the request was lost")
        return await counted_start(request)

    monkeypatch.setattr(sim.device, "start_ota", lose_the_first)
    sim.client = sim.client_with(timeout=0.3)
    record = await job_for(
        sim, Source(image_server, make_image(NEW)), Store(), timeouts=PATIENT_START
    ).run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert len(sim.starts) == 2  # the lost one and the one that started the job
    assert (await sim.client.ota_status()).ota_id == record.ota_id


async def test_power_lost_for_good(start_sim: StartSim, image_server: ImageServer) -> None:
    """Gone mid-download and not back within reboot_s: NOT_BACK, in time, saying when."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 200_000
    sim.device.faults.power_loss_at_byte = 8_192
    sim.device.faults.never_come_back = True
    timeouts = JobTimeouts(
        start_s=1, stall_s=0.3, reboot_s=0.4, confirm_s=1, total_s=10, poll_s=0.05
    )
    source = Source(image_server, make_image(NEW), report_served=False)
    began = time.monotonic()
    record = await job_for(sim, source, Store(), timeouts=timeouts).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.NOT_BACK)
    assert record.message is not None
    assert "during the download" in record.message
    assert time.monotonic() - began < timeouts.reboot_s + SLACK_S


async def test_timed_out_while_the_device_is_away(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """total_s passes while waiting for a device that never comes back; the last look
    cannot reach it either."""
    sim = await start_sim()
    sim.device.faults.never_come_back = True
    timeouts = JobTimeouts(
        start_s=1, stall_s=1, reboot_s=30, confirm_s=0.3, total_s=0.5, poll_s=0.05
    )
    began = time.monotonic()
    record = await job_for(
        sim, Source(image_server, make_image(NEW)), Store(), timeouts=timeouts
    ).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.TIMED_OUT)
    assert time.monotonic() - began < timeouts.total_s + timeouts.confirm_s + SLACK_S


async def test_back_on_the_slot_it_started_from(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """Running the target version from the partition the job started on is not the image
    that was written (here the record says the job started on ota_1)."""
    sim = await start_sim()
    record = new_record(
        mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_1"
    )
    record = await job_for(sim, Source(image_server, make_image(NEW)), Store(), record=record).run()
    assert (record.step, record.reason) == (UpdateStep.FAILED, FailureReason.WRONG_FIRMWARE)
    assert record.message is not None
    assert "still running from ota_1" in record.message


async def test_resume_while_preparing(start_sim: StartSim, image_server: ImageServer) -> None:
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    record = new_record(
        mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
    )
    record = replace(record, step=UpdateStep.PREPARING, download=source.grant())
    finished, store = await resume(sim, source, record.to_dict())
    assert finished.step is UpdateStep.SUCCEEDED, finished
    assert store.steps()[:2] == [UpdateStep.PREPARING, UpdateStep.STARTING]
    assert len(sim.starts) == 1


async def test_resume_of_a_started_job_at_starting(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """A record at STARTING that has the device's ota_id follows that job."""
    sim = await start_sim()
    source = Source(image_server, make_image(NEW))
    image = await source.prepare()
    ota_id = await sim.client.start_ota(
        url=image.url,
        sha256=image.sha256,
        size=image.size,
        version=NEW,
        cert_pem=image.cert_pem,
        headers=image.headers,
    )
    record = new_record(
        mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
    )
    record = replace(
        record,
        step=UpdateStep.STARTING,
        start_sent=True,
        ota_id=ota_id,
        sha256=image.sha256,
        size=image.size,
        download=image.download,
    )
    finished, _ = await resume(sim, source, record.to_dict())
    assert finished.step is UpdateStep.SUCCEEDED, finished
    assert len(sim.starts) == 1


async def test_resume_at_rebooting_of_a_device_still_downloading(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """A record says rebooting but the device is still downloading that job: follow it."""
    sim = await start_sim()
    sim.device.faults.slow_link_bytes_per_s = 150_000
    source = Source(image_server, make_image(NEW), report_served=False)
    store = Store(stop_when=lambda r: r.step is UpdateStep.DOWNLOADING and r.bytes_written > 0)
    await run_until_restart(job_for(sim, source, store))
    finished, resumed = await resume(sim, source, store.last | {"step": "rebooting"})
    assert finished.step is UpdateStep.SUCCEEDED, finished
    assert resumed.steps()[0] is UpdateStep.DOWNLOADING
    assert len(sim.starts) == 1


# --- the job and its records -------------------------------------------------------------


async def test_the_job_never_changes_a_record(
    start_sim: StartSim, image_server: ImageServer
) -> None:
    """Each change is a new record passed to on_change; the one the job began with, and
    every one it passed on, stay as they were; job.record and run() give the last one."""
    sim = await start_sim()
    first = new_record(
        mac=sim.device.config.mac, from_version=OLD, to_version=NEW, from_partition="ota_0"
    )
    before = first.to_dict()
    seen: list[tuple[UpdateJobRecord, dict[str, Any]]] = []
    job = UpdateJob(
        sim.client,
        first,
        Source(image_server, make_image(NEW)),
        on_change=lambda record: seen.append((record, record.to_dict())),
        timeouts=FAST,
    )
    assert job.record is first
    record = await job.run()
    assert record.step is UpdateStep.SUCCEEDED, record
    assert record is job.record is seen[-1][0]
    assert first.to_dict() == before
    assert all(r.to_dict() == data for r, data in seen)
    assert len({id(r) for r, _ in seen}) == len(seen)
