"""Real Home Assistant for the demo: its config folder, its process, and its HTTP API.

Everything a person would do in a fresh instance is done through the same HTTP API the
frontend uses: onboarding (owner account, core config, analytics, integration), login,
adding a device with the integration's config flow and setting its options.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp

from . import ha_requirements
from .errors import DemoError

DOMAIN: Final = "esp_ota"
LANGUAGE: Final = "en"
# What the demo needs of default_config, which fails here (no go2rtc binary, no libpcap for
# dhcp, no ffmpeg): the frontend and what its pages use. Recorder comes with history.
INTEGRATIONS: Final = ("frontend", "config", "history", "logbook", "system_health", "person")
STOP_GRACE_S: Final = 30.0
ONBOARDING_STEPS: Final = ("user", "core_config", "analytics", "integration")
# Finishing onboarding's core_config step through its API adds Met.no weather, Radio
# Browser, Google Translate speech and a shopping list: the first three fetch from the
# internet, and the demo runs on 127.0.0.1 alone. configuration.yaml already holds what
# the step's page asks (location, units, time zone), so the demo marks the step done itself.
ONBOARDING_PRESET_DONE: Final = ("core_config",)
# What Home Assistant logs when the frontend failed to load: it will never serve onboarding.
RECOVERY_MODE_LOG: Final = "Activating recovery mode"


@dataclass(frozen=True, slots=True)
class Owner:
    """The owner account the demo creates and prints."""

    name: str
    username: str
    password: str

    @classmethod
    def new(cls) -> Owner:
        """The demo's owner with a fresh random password."""
        return cls(name="Demo Owner", username="demo", password=secrets.token_urlsafe(12))

    @classmethod
    def load_or_create(cls, path: Path) -> Owner:
        """The owner saved in `path` (mode 0600), or a new one saved there. Blocking."""
        if path.exists():
            return cls(**json.loads(path.read_text()))
        owner = cls.new()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(asdict(owner), file)
        return owner


def configuration_yaml(port: int) -> str:
    """configuration.yaml: only the integrations that work here, and no `http:` section.

    Home Assistant 2026.10 moves `http:` from YAML into its storage as a *pending* config
    that a person must confirm within 5 minutes; unconfirmed, it restarts on the default
    0.0.0.0:8123. The demo writes the confirmed (stable) config itself: http_storage().
    """
    lines = [
        "# Written by `python -m demo`; --fresh rewrites it.",
        f"# HTTP (127.0.0.1:{port}) is in .storage/http, written by the demo: see docs/demo.md.",
        "homeassistant:",
        "  name: ESP OTA demo",
        "  unit_system: metric",
        "  time_zone: UTC",
        "  country: DE",
        "  latitude: 52.52",
        "  longitude: 13.40",
        "  elevation: 34",
        f"  internal_url: http://127.0.0.1:{port}",
        "logger:",
        "  default: warning",
        "  logs:",
        "    custom_components.esp_ota: debug",
    ]
    lines += [f"{name}:" for name in INTEGRATIONS]
    return "\n".join(lines) + "\n"


def http_storage(port: int) -> dict[str, Any]:
    """Home Assistant's `.storage/http`: a confirmed config on 127.0.0.1:<port>.

    The shape of homeassistant.components.http.config (storage version 2.2): `stable` is
    what the server starts with when nothing is pending, and the YAML migration is marked
    done so configuration.yaml is never read for `http:`.
    """
    stable = {
        "server_host": ["127.0.0.1"],
        "server_port": port,
        "cors_allowed_origins": ["https://cast.home-assistant.io"],
        "login_attempts_threshold": -1,
        "ip_ban_enabled": True,
        "ssl_profile": "modern",
        "use_x_frame_options": True,
        "created_at": datetime.now(UTC).isoformat(),
        "error": None,
        "error_message": None,
    }
    return {
        "version": 2,
        "minor_version": 2,
        "key": "http",
        "data": {"stable": stable, "pending": None, "yaml_migration_done": True},
    }


def onboarding_storage() -> dict[str, Any]:
    """Home Assistant's `.storage/onboarding` before anyone onboarded, with
    ONBOARDING_PRESET_DONE marked done (the shape of homeassistant.components.onboarding's
    store, version 4)."""
    return {
        "version": 4,
        "minor_version": 1,
        "key": "onboarding",
        "data": {"done": list(ONBOARDING_PRESET_DONE)},
    }


def prepare_config_dir(config_dir: Path, port: int, repo_root: Path) -> None:
    """Write configuration.yaml and the HTTP config, preset onboarding in a new folder,
    link the integration in. Blocking."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(configuration_yaml(port))
    storage = config_dir / ".storage"
    storage.mkdir(exist_ok=True)
    (storage / "http").write_text(json.dumps(http_storage(port), indent=2))
    onboarding = storage / "onboarding"
    if not onboarding.exists():  # once onboarded, Home Assistant's own record stands
        onboarding.write_text(json.dumps(onboarding_storage(), indent=2))
    components = config_dir / "custom_components"
    components.mkdir(exist_ok=True)
    link = components / DOMAIN
    target = (repo_root / "custom_components" / DOMAIN).resolve()
    if link.is_symlink() and link.resolve() == target:
        return
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise DemoError(f"{link} exists and is not a link to {target}: use --fresh")
    link.symlink_to(target, target_is_directory=True)


def missing_packages(python: Path | None = None) -> list[str]:
    """What the demo's Home Assistant needs (ha_requirements) and the venv of `python`
    lacks; None: this interpreter's venv. Empty: it starts offline and cleanly."""
    if python is None:
        return ha_requirements.missing()
    result = subprocess.run(  # noqa: S603 - a venv's own Python running our own file
        [str(python), str(Path(ha_requirements.__file__)), "--missing"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"{python} cannot read Home Assistant's manifests: {result.stderr}")
    return result.stdout.split()


def hass_command(config_dir: Path, *, skip_pip: bool, hass: Path | None = None) -> list[str]:
    """`hass -c <dir>`: `hass` is the given executable, else this interpreter's venv's
    (what .venv/bin/hass is).

    skip_pip: nothing needs installing, so skip the start-up's package checks. Without it
    Home Assistant installs what the integrations it sets up require (the venv must be
    writable and PyPI reachable).
    """
    args = ["-c", str(config_dir)]
    if skip_pip:
        args.append("--skip-pip")
    if hass is not None:
        return [str(hass), *args]
    script = Path(sys.executable).parent / "hass"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "homeassistant", *args]


def venv_python(hass: Path | None) -> Path | None:
    """The Python beside a `hass` executable (its venv's); None for None."""
    return None if hass is None else hass.parent / "python"


class HassProcess:
    """Home Assistant as a child process in its own process group."""

    def __init__(
        self,
        config_dir: Path,
        console_log: Path,
        *,
        skip_pip: bool = True,
        executable: Path | None = None,
    ) -> None:
        self.config_dir = config_dir
        self.console_log = console_log
        self.skip_pip = skip_pip
        self.executable = executable  # `hass`; None: this venv's
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def exited(self) -> bool:
        """True once the process ended (or was never started)."""
        return self._process is None or self._process.returncode is not None

    async def start(self) -> None:
        """Start `hass`; its output goes to `console_log`."""
        log = await asyncio.to_thread(self.console_log.open, "wb")
        try:
            # Its own session: Ctrl-C in the terminal reaches the demo only, which then stops
            # Home Assistant itself, in order, and can kill the whole group if it hangs.
            self._process = await asyncio.create_subprocess_exec(
                *hass_command(self.config_dir, skip_pip=self.skip_pip, hass=self.executable),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            await asyncio.to_thread(log.close)

    async def log_text(self) -> str:
        """What Home Assistant printed so far."""
        try:
            return await asyncio.to_thread(self.console_log.read_text, errors="replace")
        except OSError:
            return ""

    async def log_tail(self, lines: int = 30) -> str:
        """The last lines Home Assistant printed."""
        return "\n".join((await self.log_text()).splitlines()[-lines:])

    async def recovery_mode_reason(self) -> str | None:
        """The errors that put Home Assistant in recovery mode, or None if it is not."""
        text = await self.log_text()
        if RECOVERY_MODE_LOG not in text:
            return None
        errors = [line for line in text.splitlines() if " ERROR " in line and "frontend" in line]
        return "\n".join(errors[:5]) or RECOVERY_MODE_LOG

    async def wait(self) -> None:
        """Until the process ends."""
        if self._process is not None:
            await self._process.wait()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (Home Assistant's clean shutdown), then SIGKILL for the whole group."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace_s)
        # Anything it started that is still in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        self._process = None


class HassApi:
    """The HTTP API of one Home Assistant, as the frontend uses it."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/") + "/"
        self.token: str | None = None

    @property
    def client_id(self) -> str:
        """The OAuth client id: the frontend's own URL, as the browser would send it."""
        return self.base_url

    def _headers(self) -> dict[str, str]:
        if self.token is None:
            raise DemoError("not logged in to Home Assistant")
        return {"Authorization": f"Bearer {self.token}"}

    async def _json(self, response: aiohttp.ClientResponse, what: str) -> Any:
        if response.status >= 400:
            body = await response.text()
            raise DemoError(f"Home Assistant refused {what}: HTTP {response.status} {body[:500]}")
        return await response.json()

    async def get(self, path: str) -> Any:
        """GET an authenticated JSON resource."""
        async with self.session.get(self.base_url + path, headers=self._headers()) as response:
            return await self._json(response, f"GET /{path}")

    async def post(self, path: str, data: Mapping[str, Any] | None = None) -> Any:
        """POST JSON to an authenticated resource."""
        async with self.session.post(
            self.base_url + path, json=dict(data or {}), headers=self._headers()
        ) as response:
            return await self._json(response, f"POST /{path}")

    async def wait_for_http(self, process: HassProcess, timeout_s: float) -> None:
        """Until the login API answers; fails at once if the process dies or is in recovery."""
        deadline = time.monotonic() + timeout_s
        while True:
            if process.exited:
                tail = await process.log_tail()
                raise DemoError(f"Home Assistant exited while starting:\n{tail}")
            if (reason := await process.recovery_mode_reason()) is not None:
                raise DemoError(f"Home Assistant started in recovery mode:\n{reason}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(
                    self.base_url + "auth/providers", timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    # 400 is "onboarding required": up, but nobody owns it yet.
                    if response.status in (200, 400):
                        return
            if time.monotonic() > deadline:
                raise DemoError(f"Home Assistant did not answer within {timeout_s:.0f} s")
            await asyncio.sleep(0.5)

    async def onboarding_done(self) -> set[str]:
        """The onboarding steps already done."""
        async with self.session.get(self.base_url + "api/onboarding") as response:
            if response.status == 404:  # onboarded: the onboarding API is not served any more
                return set(ONBOARDING_STEPS)
            steps = await self._json(response, "GET /api/onboarding")
        return {step["step"] for step in steps if step["done"]}

    async def _token(self, code: str) -> None:
        async with self.session.post(
            self.base_url + "auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": self.client_id},
        ) as response:
            self.token = (await self._json(response, "the authorization code"))["access_token"]

    async def onboard(self, owner: Owner) -> None:
        """Create the owner and finish every onboarding step, as the onboarding pages do."""
        done = await self.onboarding_done()
        if "user" in done:
            await self.login(owner)
        else:
            async with self.session.post(
                self.base_url + "api/onboarding/users",
                json={
                    "client_id": self.client_id,
                    "name": owner.name,
                    "username": owner.username,
                    "password": owner.password,
                    "language": LANGUAGE,
                },
            ) as response:
                code = (await self._json(response, "the owner account"))["auth_code"]
            await self._token(code)
        if "core_config" not in done:
            await self.post("api/onboarding/core_config")
        if "analytics" not in done:
            await self.post("api/onboarding/analytics")
        if "integration" not in done:
            await self.post(
                "api/onboarding/integration",
                {"client_id": self.client_id, "redirect_uri": self.client_id + "?auth_callback=1"},
            )

    async def login(self, owner: Owner) -> None:
        """Log in with the owner's username and password (the login page's flow)."""
        async with self.session.post(
            self.base_url + "auth/login_flow",
            json={
                "client_id": self.client_id,
                "handler": ["homeassistant", None],
                "redirect_uri": self.client_id + "?auth_callback=1",
            },
        ) as response:
            flow = await self._json(response, "a login")
        async with self.session.post(
            self.base_url + f"auth/login_flow/{flow['flow_id']}",
            json={
                "client_id": self.client_id,
                "username": owner.username,
                "password": owner.password,
            },
        ) as response:
            result = await self._json(response, "the owner's login")
        if result.get("type") != "create_entry":
            raise DemoError(
                f"Home Assistant refused the saved owner login ({result.get('errors')}): "
                "start with --fresh"
            )
        await self._token(result["result"])

    async def wait_running(self, timeout_s: float) -> None:
        """Until Home Assistant has finished starting (core state RUNNING)."""
        deadline = time.monotonic() + timeout_s
        while (await self.get("api/config"))["state"] != "RUNNING":
            if time.monotonic() > deadline:
                raise DemoError(f"Home Assistant did not finish starting in {timeout_s:.0f} s")
            await asyncio.sleep(0.5)

    async def entries(self) -> list[dict[str, Any]]:
        """This integration's config entries."""
        result: list[dict[str, Any]] = await self.get(
            f"api/config/config_entries/entry?domain={DOMAIN}"
        )
        return result

    async def add_device(self, host: str, port: int, secret: str, title: str) -> str:
        """The config flow a user goes through on "Add integration"; returns the entry id.

        A device added before (a restarted demo) aborts as already configured, after its
        new address has been saved; its entry is then found by its title.
        """
        flow = await self.post(
            "api/config/config_entries/flow", {"handler": DOMAIN, "show_advanced_options": False}
        )
        if flow.get("type") != "form" or flow.get("step_id") != "user":
            raise DemoError(f"the ESP OTA config flow did not ask for a device: {flow}")
        result = await self.post(
            f"api/config/config_entries/flow/{flow['flow_id']}",
            {"host": f"{host}:{port}", "secret": secret},
        )
        if result.get("type") == "create_entry":
            entry_id: str = result["result"]["entry_id"]
            return entry_id
        if result.get("type") == "abort" and result.get("reason") == "already_configured":
            for entry in await self.entries():
                if entry["title"] == title:
                    found: str = entry["entry_id"]
                    return found
        raise DemoError(f"adding {host}:{port} failed: {result}")

    async def set_options(self, entry_id: str, options: Mapping[str, Any]) -> None:
        """The options flow (the entry's "Configure"): one form, submitted."""
        flow = await self.post("api/config/config_entries/options/flow", {"handler": entry_id})
        if flow.get("type") != "form":
            raise DemoError(f"the options flow of {entry_id} showed no form: {flow}")
        result = await self.post(
            f"api/config/config_entries/options/flow/{flow['flow_id']}", options
        )
        if result.get("type") != "create_entry":
            raise DemoError(f"the options of {entry_id} were refused: {result}")

    async def states(self) -> list[dict[str, Any]]:
        """Every entity's state."""
        result: list[dict[str, Any]] = await self.get("api/states")
        return result

    async def state(self, entity_id: str) -> dict[str, Any]:
        """One entity's state."""
        result: dict[str, Any] = await self.get(f"api/states/{entity_id}")
        return result

    async def call_service(self, domain: str, service: str, data: Mapping[str, Any]) -> None:
        """Call a service as the frontend's buttons do (update.install, ...)."""
        await self.post(f"api/services/{domain}/{service}", data)

    async def websocket_command(self, command: Mapping[str, Any]) -> Any:
        """One command over the websocket API (its own connection); its result."""
        if self.token is None:
            raise DemoError("not logged in to Home Assistant")
        async with self.session.ws_connect(self.base_url + "api/websocket") as socket:
            greeting = await socket.receive_json()
            if greeting.get("type") != "auth_required":
                raise DemoError(f"unexpected websocket greeting: {greeting}")
            await socket.send_json({"type": "auth", "access_token": self.token})
            if (auth := await socket.receive_json()).get("type") != "auth_ok":
                raise DemoError(f"the websocket refused the owner's token: {auth}")
            await socket.send_json({"id": 1, **command})
            reply = await socket.receive_json()
        if not reply.get("success"):
            raise DemoError(f"Home Assistant refused {command.get('type')}: {reply}")
        return reply["result"]

    async def persistent_notifications(self) -> list[dict[str, Any]]:
        """The notifications the frontend shows in its sidebar."""
        result: list[dict[str, Any]] = await self.websocket_command(
            {"type": "persistent_notification/get"}
        )
        return result


# A line of home-assistant.log: "<date> <time> LEVEL (thread) [logger] message".
LOG_LINE: Final = re.compile(
    r"^\S+ \S+ (?P<level>WARNING|ERROR|CRITICAL) \((?P<thread>[^)]*)\) "
    r"\[(?P<logger>[^\]]+)\] (?P<message>.*)$"
)


@dataclass(frozen=True, slots=True)
class AllowedLogLine:
    """A warning or error the demo's start may log, and why it is not a problem."""

    logger: str
    message: re.Pattern[str]
    why: str
    # Allowed only while this is true (a fact about this machine); None: always.
    applies: Callable[[], bool] | None = None


# Everything else Home Assistant logs at WARNING or above while the demo starts is a
# problem: tests/demo/test_clean_start.py fails on it, and the demo prints it.
ALLOWED_LOG_LINES: Final = (
    # The demo passes --skip-pip only when its venv already has every package the start
    # needs (ha_requirements), so nothing is left for Home Assistant to install.
    AllowedLogLine(
        "homeassistant.bootstrap",
        re.compile(r"^Skipping pip installation of required modules"),
        "--skip-pip: the venv already has what the start needs",
    ),
    # What Home Assistant says of every custom integration: ours.
    AllowedLogLine(
        "homeassistant.loader",
        re.compile(r"^We found a custom integration esp_ota which has not been tested"),
        "every custom integration is announced so",
    ),
    # Programs of the machine, not Python packages: Home Assistant's images carry them,
    # a bare machine may not (apt-get install ffmpeg libturbojpeg0; .ci/run installs them,
    # so CI proves the log clean with them).
    AllowedLogLine(
        "haffmpeg.core",
        re.compile(r"^FFmpeg fails .*No such file or directory: 'ffmpeg'"),
        "no ffmpeg on this machine",
        lambda: shutil.which("ffmpeg") is None,
    ),
    AllowedLogLine(
        "haffmpeg.tools",
        re.compile(r"^Error starting FFmpeg"),
        "no ffmpeg on this machine",
        lambda: shutil.which("ffmpeg") is None,
    ),
    AllowedLogLine(
        "homeassistant.components.camera.img_util",
        re.compile(r"^Error loading libturbojpeg"),
        "no libturbojpeg on this machine",
        lambda: ctypes.util.find_library("turbojpeg") is None,
    ),
)


def missing_programs() -> list[str]:
    """The Debian packages whose absence Home Assistant logs as errors at start."""
    missing = []
    if shutil.which("ffmpeg") is None:
        missing.append("ffmpeg")
    if ctypes.util.find_library("turbojpeg") is None:
        missing.append("libturbojpeg0")
    return missing


def log_problems(log: str, allowed: tuple[AllowedLogLine, ...] = ALLOWED_LOG_LINES) -> list[str]:
    """The WARNING, ERROR and CRITICAL lines of a home-assistant.log that are not allowed."""
    problems = []
    for line in log.splitlines():
        if (match := LOG_LINE.match(line)) is None:
            continue
        if not any(
            rule.logger == match["logger"]
            and rule.message.search(match["message"])
            and (rule.applies is None or rule.applies())
            for rule in allowed
        ):
            problems.append(line)
    return problems
