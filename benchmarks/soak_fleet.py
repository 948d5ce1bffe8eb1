"""The devices' side of bench_soak: a fleet of simulated devices in a child process whose
faults are set, cleared and checked on command, so that Home Assistant's process counts
none of their work, memory or sockets.

    python -m benchmarks.soak_fleet --count N [--reboot-time S]

The devices listen on consecutive ports below the kernel's ephemeral range (see
start_fleet).
Speaks JSON lines: its first line on stdout is {"members": [FleetDevice...]} once every
device answers; then one reply line per command line read on stdin:
- {"op": "faults", "faults": {"<index>": {FaultPlan field: value}}}: every device's faults
  cleared, then these set (crash_versions as a list); reply {"ok": true}.
- {"op": "check"}: every device's faults cleared; a device still restarting is given
  RESTART_WAIT_S, one that is offline then is power-cycled (what its owner would do) and
  given BOOT_WAIT_S; then each is asked GET /api/v1/info over HTTPS (pinned, with its
  secret). Reply {"devices": [{"index", "power_cycled", "boot_loop", "version",
  "image_state", "error", "restart_error"}]}, error None when it answered.
- {"op": "stop"}: the fleet stops; reply {"ok": true}, then the process ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bench_install import CHIP, FACTORY, PROJECT
from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import DeviceError
from simulator.device import SimulatedDevice
from simulator.fleet import Fleet, FleetDevice, FleetOptions, apply_faults
from simulator.pace import Pace

RESTART_WAIT_S = 10.0
BOOT_WAIT_S = 30.0
EPHEMERAL_PORTS = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST_PORT = 10_000
PORT_ATTEMPTS = 5


def set_faults(fleet: Fleet, faults: dict[str, dict[str, Any]]) -> None:
    """Every device healthy, then the given devices' faults set."""
    for device in fleet.devices:
        device.faults.clear()
    for index, changes in faults.items():
        typed = {
            name: set(value) if name == "crash_versions" else value
            for name, value in changes.items()
        }
        apply_faults(fleet.devices[int(index)].faults, typed)


async def check_one(
    device: SimulatedDevice, member: FleetDevice, session: aiohttp.ClientSession
) -> dict[str, Any]:
    """Healthy again, back on the network, and what it says it runs."""
    device.faults.clear()
    power_cycled = False
    if not device.online:
        try:
            await device.wait_online(RESTART_WAIT_S)
        except TimeoutError:
            power_cycled = True
            await device.power_cycle()
            with contextlib.suppress(TimeoutError):  # the request below says how it fails
                await device.wait_online(BOOT_WAIT_S)
    restart = device.board.restart_task
    restart_error = (
        repr(restart.exception())
        if restart is not None and restart.done() and not restart.cancelled()
        else None
    )
    client = DeviceClient(
        session, member.host, member.port, member.secret, cert_fingerprint=member.cert_fingerprint
    )
    out: dict[str, Any] = {
        "index": member.index,
        "power_cycled": power_cycled,
        "boot_loop": device.boot_loop,
        "version": None,
        "image_state": None,
        "error": None,
        "restart_error": restart_error,  # why its last restart did not bring it back
    }
    try:
        info = await client.info()
    except DeviceError as err:
        out["error"] = f"{type(err).__name__}: {err}"
    else:
        out["version"] = info.version
        out["image_state"] = info.image_state.value
    return out


async def check(fleet: Fleet, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """Every device's check (see the module docstring)."""
    for device in fleet.devices:
        device.faults.clear()  # all first: none fails again while another is looked at
    return list(
        await asyncio.gather(
            *(
                check_one(device, member, session)
                for device, member in zip(fleet.devices, fleet.members, strict=True)
            )
        )
    )


def reply(message: dict[str, Any]) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def lowest_ephemeral_port() -> int:
    """The first port the kernel hands out to outgoing connections."""
    return int(Path(EPHEMERAL_PORTS).read_text().split()[0])


async def start_fleet(count: int, reboot_time_s: float) -> Fleet:
    """The fleet on consecutive ports below the ephemeral range: a device that is offline
    has closed its port, and a port from that range could meanwhile be any outgoing
    connection's, so the device could not listen on it again."""
    highest = await asyncio.to_thread(lowest_ephemeral_port) - count
    rng = random.Random()

    async def started() -> Fleet:
        fleet = Fleet(
            FleetOptions(
                count=count,
                base_port=rng.randrange(LOWEST_PORT, highest),
                project=PROJECT,
                chip=CHIP,
                version=FACTORY,
                pace=Pace.UNTHROTTLED,
                reboot_time_s=reboot_time_s,
            )
        )
        await fleet.start()  # on failure, stops what it started
        return fleet

    for _ in range(PORT_ATTEMPTS - 1):
        with contextlib.suppress(OSError):  # a port taken: elsewhere
            return await started()
    return await started()


async def serve(count: int, reboot_time_s: float) -> None:
    """Start the fleet, answer commands until "stop" or the end of stdin."""
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    fleet = await start_fleet(count, reboot_time_s)
    members = fleet.members
    try:
        async with aiohttp.ClientSession() as session:
            reply({"members": [member.as_json() for member in members]})
            while line := await commands.readline():
                command = json.loads(line)
                if command["op"] == "faults":
                    set_faults(fleet, command["faults"])
                    reply({"ok": True})
                elif command["op"] == "check":
                    reply({"devices": await check(fleet, session)})
                elif command["op"] == "stop":
                    break
                else:
                    raise ValueError(f"unknown command {command['op']!r}")
    finally:
        await fleet.stop()
    reply({"ok": True})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--reboot-time", type=float, default=0.5, help="seconds per reboot")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(serve(arguments.count, arguments.reboot_time))
