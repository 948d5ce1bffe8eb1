"""One install on another Home Assistant release: `python -m demo.smoke --hass VENV/bin/hass`.

script/smoke-ha-release makes the venv with that release and runs this: the demo stack
starts that `hass` (fresh config folder, one device, full speed, a small image), the
integration loads through its config flow, one update is installed through Home
Assistant's API (update.install, as the Update button does) until the device runs the new
version with its boot confirmed and the entity says so. Then Home Assistant's log is read
for what concerns us: any WARNING or worse from our integration or naming it, and any
line about a deprecation that names it. Exit 0: clean; 1: a finding or a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from custom_components.esp_ota.const import FIRMWARE_SERVER_PORT
from custom_components.esp_ota.espota.protocol import ImageState
from simulator.pace import Pace

from .errors import DemoError
from .hass import DOMAIN, LOG_LINE
from .stack import REPO_ROOT, DemoOptions, DemoStack

INSTALL_TIMEOUT_S: Final = 120.0
# Lines naming us: our loggers (custom_components.esp_ota...), our domain in a message
# (Home Assistant's frame helper: "Detected that custom integration 'esp_ota' ...").
OURS: Final = re.compile(r"custom_components[./]esp_ota|\besp_ota\b")
DEPRECATION: Final = re.compile(r"deprecat", re.IGNORECASE)
# What Home Assistant logs at WARNING about every custom integration: not a finding.
NOT_A_FINDING: Final = (
    re.compile(r"We found a custom integration esp_ota which has not been tested"),
)


def findings(log: str) -> list[str]:
    """The lines of a Home Assistant log that concern us: WARNING or worse and naming us
    (or from our loggers), or about a deprecation and naming us, at any level. A
    traceback's lines count with the record they follow."""
    found: list[str] = []
    record: list[str] = []

    def close() -> None:
        if not record:
            return
        text = "\n".join(record)
        head = LOG_LINE.match(record[0])
        serious = head is not None
        if (
            OURS.search(text)
            and (serious or DEPRECATION.search(text))
            and not any(pattern.search(record[0]) for pattern in NOT_A_FINDING)
        ):
            found.append(text)
        record.clear()

    for line in log.splitlines():
        if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line):
            close()
        record.append(line)
    close()
    return found


def free_port() -> int:
    """A port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def install_one(stack: DemoStack, out: TextIO) -> None:
    """update.install on the first device; until it runs the new version, confirmed."""
    info = stack.info
    assert info is not None
    assert stack.fleet is not None
    api = stack.api()
    device = info.devices[0]
    target = device.offered_version
    before = await api.state(device.entity_id)
    if before["state"] != "on" or before["attributes"]["installed_version"] == target:
        raise DemoError(f"{device.entity_id} offers nothing to install: {before}")
    started = time.monotonic()
    await api.call_service("update", "install", {"entity_id": device.entity_id})
    simulated = stack.fleet.devices[device.fleet.index]
    while True:
        state = await api.state(device.entity_id)
        attributes = state["attributes"]
        if (
            state["state"] == "off"
            and attributes["installed_version"] == target
            and not attributes["in_progress"]
            and simulated.running_app.version == target
            and simulated.image_state() is ImageState.VALID
        ):
            break
        if time.monotonic() - started > INSTALL_TIMEOUT_S:
            raise DemoError(
                f"{device.entity_id} did not reach {target} in {INSTALL_TIMEOUT_S:.0f} s: "
                f"entity {state['state']} {attributes}, device runs "
                f"{simulated.running_app.version} ({simulated.image_state()})"
            )
        await asyncio.sleep(0.2)
    print(
        f"smoke: {device.title} {before['attributes']['installed_version']} -> {target} "
        f"installed and confirmed in {time.monotonic() - started:.1f} s",
        file=out,
    )


def check_firmware_server_port() -> None:
    """The integration serves firmware on a fixed port: another Home Assistant with it
    (a demo, the browser test) would make the install fail with "Address already in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", FIRMWARE_SERVER_PORT))  # noqa: S104 - as the server binds
        except OSError as err:
            raise DemoError(
                f"port {FIRMWARE_SERVER_PORT}, where the integration serves firmware, is "
                f"taken ({err.strerror}): is another Home Assistant with esp_ota running?"
            ) from err


async def run(hass: Path, version: str, config_dir: Path, out: TextIO) -> int:
    """Start, check the version, install one update, read the log; the exit status."""
    check_firmware_server_port()
    stack = DemoStack(
        DemoOptions(
            config_dir=config_dir,
            port=free_port(),
            count=1,
            beta_devices=0,
            pace=Pace.UNTHROTTLED,
            image_size=64 * 1024,
            fresh=True,
            hass_executable=hass,
        ),
        lambda message: print(f"smoke: {message}", file=out, flush=True),
    )
    async with stack:
        api = stack.api()
        running = (await api.get("api/config"))["version"]
        if running != version:
            raise DemoError(f"{hass} runs Home Assistant {running}, not {version}")
        entries = await api.entries()
        print(
            f"smoke: Home Assistant {running}; {DOMAIN} entries: "
            f"{[entry['state'] for entry in entries]}",
            file=out,
        )
        await install_one(stack, out)
        # Not ours to fix, but worth seeing when a release changes what it logs.
        for problem in await stack.problems():
            if not OURS.search(problem):  # ours are reported below, as findings
                print(f"smoke: (not ours) {problem}", file=out)
    logs = [stack.home_assistant_log, stack.hass.console_log]
    found: list[str] = []
    for path in logs:
        for finding in findings(path.read_text(errors="replace")):
            if finding not in found:
                found.append(finding)
    for finding in found:
        print(f"smoke: FINDING in Home Assistant {version}'s log:\n{finding}", file=out)
    if found:
        return 1
    print(f"smoke: Home Assistant {version}: no warning or deprecation of ours", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (script/smoke-ha-release)."""
    parser = argparse.ArgumentParser(prog="python -m demo.smoke", description=__doc__)
    parser.add_argument("--hass", type=Path, required=True, help="the release's `hass`")
    parser.add_argument("--version", required=True, help="the release it must report")
    parser.add_argument(
        "--config-dir", type=Path, default=REPO_ROOT / "build" / "smoke-ha" / "config"
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.hass, args.version, args.config_dir, sys.stdout))
    except (DemoError, OSError) as err:
        print(f"smoke: FAILED: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
