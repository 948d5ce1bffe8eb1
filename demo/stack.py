"""Everything the demo runs, started in order and stopped in reverse: `DemoStack`.

    async with DemoStack(DemoOptions(config_dir=Path("out/demo-ha"))) as info:
        print(info.url, info.owner.username, info.owner.password)

Home Assistant runs as a child process (`hass -c <config_dir>`); the feed server and the
simulated fleet run on the caller's event loop. Home Assistant is started first because it
takes longest; firmware, feed and fleet are made while it boots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiohttp

from custom_components.esp_ota.espota.feed import Channel
from simulator.fleet import Fleet, FleetDevice, FleetOptions
from simulator.pace import Pace

from .errors import DemoError
from .feed_server import FeedServer
from .firmware import PublishedFirmware, build_and_publish
from .hass import (
    HassApi,
    HassProcess,
    Owner,
    log_problems,
    missing_packages,
    missing_programs,
    prepare_config_dir,
    venv_python,
)

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
# Inside the config folder, beside Home Assistant's own files: what the demo itself keeps.
DEMO_SUBDIR: Final = "esp-ota-demo"
# A real ESP32 app is about 1 MB; at the realistic pace its OTA takes about 25 s.
DEFAULT_IMAGE_SIZE: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to start, and where."""

    config_dir: Path
    port: int = 8123
    feed_port: int = 0  # 0: any free port
    count: int = 4
    beta_devices: int = 1  # the last this many devices follow the beta channel
    pace: Pace = Pace.REALISTIC
    reboot_time_s: float | None = None  # None: the simulator's default for the pace
    project: str = "garden"
    chip: str = "esp32"
    factory_version: str = "1.0.0"
    image_size: int = DEFAULT_IMAGE_SIZE
    reboot_timeout_s: int = 180
    fresh: bool = False
    start_timeout_s: float = 300.0
    # `hass` of another venv (script/smoke-ha-release: another release); None: this venv's.
    hass_executable: Path | None = None
    # Config flows run this many at a time (a benchmark adding hundreds of devices); the
    # demo adds them one after the other, as a person would.
    add_concurrency: int = 1
    offer_timeout_s: float = 60.0  # until every added device's update entity offers
    # The checkout whose integration Home Assistant loads (a benchmark compares two).
    integration_repo: Path = REPO_ROOT


@dataclass(frozen=True, slots=True)
class DemoDevice:
    """One simulated device as Home Assistant knows it."""

    fleet: FleetDevice
    title: str  # the config entry's (and device's) name
    channel: Channel
    entry_id: str
    entity_id: str  # its update entity (the configured channel)
    offered_version: str


@dataclass(slots=True)
class DemoInfo:
    """What a person (or a test) needs to use the running demo."""

    url: str
    owner: Owner
    feed_url: str
    public_key: str
    config_dir: Path
    devices: list[DemoDevice] = field(default_factory=list)
    # Seconds since the start, at each milestone.
    timings: dict[str, float] = field(default_factory=dict)
    token: str = ""  # an access token of the owner (tests use the REST API with it)

    def render(self) -> str:
        """The text the demo prints once everything is up."""
        lines = [
            "",
            f"Home Assistant: {self.url}   (updates: {self.url}config/updates)",
            f"  username: {self.owner.username}",
            f"  password: {self.owner.password}",
            f"Feed: {self.feed_url} (signed; public key {self.public_key})",
            "Devices:",
        ]
        lines += [
            f"  {device.title:<20} {device.fleet.host}:{device.fleet.port:<6} "
            f"{device.channel.value:<7} offered {device.offered_version:<8} {device.entity_id}"
            for device in self.devices
        ]
        lines.append(f"Home Assistant's files: {self.config_dir}")
        return "\n".join(lines)


def entry_title(project: str, mac: str) -> str:
    """The integration's title for a device (config_flow: project and the MAC's end)."""
    return f"{project} {mac.lower()[-5:]}"


class DemoStack:
    """Starts and stops the feed server, the fleet and Home Assistant."""

    def __init__(
        self,
        options: DemoOptions,
        report: Callable[[str], None] = lambda _message: None,
        *,
        started_at: float | None = None,
    ) -> None:
        self.options = options
        self.config_dir = options.config_dir.resolve()
        self.demo_dir = self.config_dir / DEMO_SUBDIR
        self._report = report
        self._t0 = started_at if started_at is not None else time.monotonic()
        self.hass = HassProcess(
            self.config_dir,
            self.demo_dir / "hass-console.log",
            executable=options.hass_executable,
        )
        self.feed_server: FeedServer | None = None
        self.fleet: Fleet | None = None
        self._session: aiohttp.ClientSession | None = None
        self.info: DemoInfo | None = None
        self.timings: dict[str, float] = {}

    def _mark(self, milestone: str, message: str) -> None:
        elapsed = time.monotonic() - self._t0
        self.timings[milestone] = round(elapsed, 1)
        self._report(f"[{elapsed:6.1f} s] {message}")

    @property
    def url(self) -> str:
        """Home Assistant's URL."""
        return f"http://127.0.0.1:{self.options.port}/"

    async def __aenter__(self) -> DemoInfo:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> DemoInfo:
        """Start everything; on any failure (or cancellation) stop what was started."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    def _prepare(self) -> Owner:
        """The folder, configuration.yaml and the owner. Blocking."""
        # Otherwise whatever holds the port would answer in Home Assistant's place.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As Home Assistant binds: connections of its last run, closing (TIME_WAIT),
            # do not hold the port; a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.options.port))
            except OSError as err:
                raise DemoError(
                    f"port {self.options.port} on 127.0.0.1 is taken ({err.strerror}): "
                    "stop what uses it or pick another with --port"
                ) from err
        if self.options.fresh and self.config_dir.exists():
            shutil.rmtree(self.config_dir)
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        prepare_config_dir(self.config_dir, self.options.port, self.options.integration_repo)
        return Owner.load_or_create(self.demo_dir / "owner.json")

    async def _start(self) -> DemoInfo:
        options = self.options
        owner = await asyncio.to_thread(self._prepare)
        python = venv_python(options.hass_executable)
        if missing := await asyncio.to_thread(missing_packages, python):
            # Home Assistant would otherwise serve a frontend stuck at "Loading..."
            self.hass.skip_pip = False
            self._report(
                "demo: not in the venv, so Home Assistant installs them on start (slow; "
                f"needs PyPI): {' '.join(missing)}"
            )
        if programs := await asyncio.to_thread(missing_programs):
            self._report(
                "demo: Home Assistant will log errors for what this machine lacks "
                f"(apt-get install {' '.join(programs)})"
            )
        await self.hass.start()
        self._mark("hass_started", f"Home Assistant starting (output: {self.hass.console_log})")

        firmware = await asyncio.to_thread(
            build_and_publish,
            self.demo_dir,
            project=options.project,
            chip=options.chip,
            image_size=options.image_size,
        )
        self.feed_server = await self._start_feed_server(firmware.feed_dir)
        feed_url = self.feed_server.base_url + firmware.feed_path.name
        self._mark("feed", f"signed feed at {feed_url}")

        fleet_options = self._fleet_options(firmware)
        await self._seed_fleet_state(fleet_options)
        self.fleet = Fleet(fleet_options)
        members = await self.fleet.start()
        self._mark("fleet", f"{len(members)} simulated devices ({options.pace.value} pace)")

        self._session = aiohttp.ClientSession()
        api = HassApi(self._session, self.url)
        await api.wait_for_http(self.hass, options.start_timeout_s)
        self._mark("hass_http", f"Home Assistant answers at {self.url}")
        await api.onboard(owner)
        await api.wait_running(options.start_timeout_s)
        self._mark("hass_running", "onboarding done; Home Assistant running")

        devices = await self._add_devices(api, members, firmware, feed_url)
        assert api.token is not None
        self.info = DemoInfo(
            url=self.url,
            owner=owner,
            feed_url=feed_url,
            public_key=firmware.public_key,
            config_dir=self.config_dir,
            devices=devices,
            timings=self.timings,
            token=api.token,
        )
        self._mark("ready", f"Home Assistant up with {len(devices)} devices added")
        return self.info

    async def _start_feed_server(self, feed_dir: Path) -> FeedServer:
        """The feed server on --feed-port; else on the port of the last start in this
        folder when it is free (Home Assistant's entries keep that feed URL: a new port
        would fail their first feed fetches, logged as errors, until the demo sets the new
        URL), else on any free port. The port is saved for the next start."""
        saved = self.demo_dir / "feed-port"
        port = self.options.feed_port
        if port == 0:
            with contextlib.suppress(OSError, ValueError):
                port = int(await asyncio.to_thread(saved.read_text))
        server = FeedServer(feed_dir, port)
        try:
            await server.start()
        except OSError:
            if self.options.feed_port != 0:
                raise
            server = FeedServer(feed_dir, 0)
            await server.start()
        await asyncio.to_thread(saved.write_text, f"{server.port}\n")
        return server

    def _fleet_options(self, firmware: PublishedFirmware) -> FleetOptions:
        options = self.options
        faults: dict[int | None, dict[str, Any]] = {}
        if firmware.crash_versions:
            faults[None] = {"crash_versions": set(firmware.crash_versions)}
        return FleetOptions(
            count=options.count,
            chip=options.chip,
            project=options.project,
            version=options.factory_version,
            image_size=options.image_size,
            pace=options.pace,
            reboot_time_s=options.reboot_time_s,
            # Certificates and flash survive a restart, so a reused config folder still
            # matches the pinned certificates (and remembers installed firmware).
            state_dir=self.demo_dir / "fleet",
            faults=faults,
        )

    @staticmethod
    async def _seed_fleet_state(options: FleetOptions) -> None:
        """Save the shared factory sectors once, with one device, before the whole fleet.

        Devices of a fleet share sector files, and simulator.persistence writes a new one
        through a temporary file named by the process id only: devices saving the same new
        sector at once (every device's first save) collide on it. Once the files exist
        nobody writes them again. (Workaround until the simulator names its temporaries
        uniquely.)
        """
        assert options.state_dir is not None
        if await asyncio.to_thread((options.state_dir / "sectors").is_dir):
            return
        seed = Fleet(dataclasses.replace(options, count=1))
        await seed.start()
        await seed.stop()

    def channel_of(self, index: int) -> Channel:
        """The channel device `index` is configured to follow."""
        first_beta = self.options.count - self.options.beta_devices
        return Channel.BETA if index >= first_beta else Channel.STABLE

    async def _add_devices(
        self,
        api: HassApi,
        members: list[FleetDevice],
        firmware: PublishedFirmware,
        feed_url: str,
    ) -> list[DemoDevice]:
        """Each device through the config flow, then its options; then wait for the offers."""
        slots = asyncio.Semaphore(self.options.add_concurrency)

        async def add(member: FleetDevice) -> tuple[FleetDevice, str, str]:
            title = entry_title(self.options.project, member.mac)
            async with slots:
                entry_id = await api.add_device(member.host, member.port, member.secret, title)
                await api.set_options(
                    entry_id,
                    {
                        "feed_url": feed_url,
                        "feed_public_key": firmware.public_key,
                        "channel": self.channel_of(member.index).value,
                        "reboot_timeout": self.options.reboot_timeout_s,
                    },
                )
            return member, title, entry_id

        entries = list(await asyncio.gather(*(add(member) for member in members)))
        self._mark("devices_added", f"{len(entries)} devices added through the config flow")

        # Until every device's update entity exists and knows what the feed offers it.
        deadline = time.monotonic() + self.options.offer_timeout_s
        while True:
            by_name = {
                state["attributes"].get("friendly_name"): state
                for state in await api.states()
                if state["entity_id"].startswith("update.")
            }
            found = [by_name.get(f"{title} Firmware") for _, title, _ in entries]
            loaded = {e["entry_id"] for e in await api.entries() if e["state"] == "loaded"}
            if all(entry_id in loaded for _, _, entry_id in entries) and all(
                state is not None and state["state"] == "on" for state in found
            ):
                break
            if time.monotonic() > deadline:
                missing = [t for (_, t, _), s in zip(entries, found, strict=True) if s is None]
                raise DemoError(
                    f"no update offered within {self.options.offer_timeout_s:.0f} s "
                    f"(entities missing: {missing or 'none'})"
                )
            await asyncio.sleep(0.5)
        return [
            DemoDevice(
                fleet=member,
                title=title,
                channel=self.channel_of(member.index),
                entry_id=entry_id,
                entity_id=state["entity_id"],
                offered_version=state["attributes"]["latest_version"],
            )
            for (member, title, entry_id), state in zip(entries, found, strict=True)
            if state is not None
        ]

    async def problems(self) -> list[str]:
        """What a person would see as wrong right after the start: Home Assistant's
        persistent notifications, and the lines of its log at WARNING or above that
        hass.ALLOWED_LOG_LINES does not explain. Empty: a clean start."""
        api = self.api()
        found = [
            f"notification: {note.get('title') or ''}: {note.get('message')}"
            for note in await api.persistent_notifications()
        ]
        log = await asyncio.to_thread(self.home_assistant_log.read_text, errors="replace")
        return found + [f"log: {line}" for line in log_problems(log)]

    def api(self) -> HassApi:
        """Home Assistant's API, logged in as the owner, while the demo runs."""
        if self._session is None or self.info is None:
            raise DemoError("the demo is not running")
        api = HassApi(self._session, self.url)
        api.token = self.info.token
        return api

    @property
    def home_assistant_log(self) -> Path:
        """Home Assistant's own log file."""
        return self.config_dir / "home-assistant.log"

    async def wait_hass_exit(self) -> None:
        """Returns when Home Assistant's process ends (it should not, until stop)."""
        await self.hass.wait()

    async def stop(self) -> None:
        """Stop Home Assistant, then the fleet, then the feed server; each even if another
        fails. Safe to call twice and after a failed start."""
        errors: list[BaseException] = []
        for step in (self.hass.stop, self._stop_fleet, self._stop_feed, self._close_session):
            try:
                await step()
            except Exception as err:  # the others must still run
                errors.append(err)
        if errors:
            raise errors[0]

    async def _stop_fleet(self) -> None:
        if self.fleet is not None:
            fleet, self.fleet = self.fleet, None
            await fleet.stop()

    async def _stop_feed(self) -> None:
        if self.feed_server is not None:
            server, self.feed_server = self.feed_server, None
            await server.stop()

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
