"""`python -m simulator`: run simulated ESP32 devices on 127.0.0.1 until Ctrl-C.

    python -m simulator --count 20 --pace realistic --json out/fleet.json
    python -m simulator --count 3 --fault crash_versions=2.0.0 --fault 1:never_come_back=true
    python -m simulator --count 50 --partition-table large_ota_16mb

Each device's address, MAC, secret and certificate fingerprint are printed (and written
as JSON with --json) so that Home Assistant, a test or a script can reach it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .fleet import Fleet, FleetOptions
from .pace import Pace
from .partitions import PartitionScheme


def parse_fault(text: str) -> tuple[int | None, str, Any]:
    """`[INDEX:]NAME=VALUE` -> (device index or None for all, name, typed value)."""
    target: int | None = None
    head, sep, rest = text.partition(":")
    if sep and head.isdigit():
        target, text = int(head), rest
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"fault {text!r} is not NAME=VALUE")
    value: Any
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    elif name == "crash_versions":
        value = set(raw.split(","))
    elif name in ("api_fault_path", "api_fault"):
        value = raw  # a path of the API ("/ota/confirm"), an ApiFault ("drop", "stall", ...)
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError as err:
                raise argparse.ArgumentTypeError(f"fault {name}: {raw!r} is not a value") from err
    return target, name, value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The simulator's command line."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=positive_int, default=1, help="devices (default 1)")
    parser.add_argument("--base-port", type=int, default=0, help="first port (default: any)")
    parser.add_argument("--chip", default="esp32")
    parser.add_argument("--chip-revision", type=int, default=301, help="major*100+minor")
    parser.add_argument("--project", default="esp-ota-demo")
    parser.add_argument("--version", default="1.0.0", help="factory firmware version")
    parser.add_argument("--image-size", type=int, default=256 * 1024)
    parser.add_argument("--pace", choices=[pace.value for pace in Pace], default="unthrottled")
    parser.add_argument("--reboot-time", type=float, help="seconds offline per reboot")
    parser.add_argument(
        "--partition-table",
        choices=[scheme.value for scheme in PartitionScheme],
        default=PartitionScheme.ADVANCED_HTTPS_OTA.value,
        help="advanced_https_ota: 4 MB flash, 1700 KiB OTA slots (default); "
        "large_ota_16mb: 16 MB flash, 7 MiB OTA slots",
    )
    parser.add_argument("--secret", help="one secret for all (default: derived per device)")
    parser.add_argument("--state-dir", type=Path, help="keep flash state here across runs")
    parser.add_argument("--mdns", action="store_true", help="advertise _esp-ota._tcp.local.")
    parser.add_argument(
        "--fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="[INDEX:]NAME=VALUE",
        help="a FaultPlan field for all devices, or for device INDEX",
    )
    parser.add_argument("--json", type=Path, help="write the devices as JSON to this file")
    return parser


def fleet_options(args: argparse.Namespace) -> FleetOptions:
    """The parsed command line as FleetOptions."""
    faults: dict[int | None, dict[str, Any]] = {}
    for target, name, value in args.fault:
        faults.setdefault(target, {})[name] = value
    return FleetOptions(
        count=args.count,
        base_port=args.base_port,
        chip=args.chip,
        chip_revision=args.chip_revision,
        project=args.project,
        version=args.version,
        image_size=args.image_size,
        pace=Pace(args.pace),
        reboot_time_s=args.reboot_time,
        partition_table=PartitionScheme(args.partition_table),
        secret=args.secret,
        state_dir=args.state_dir,
        mdns=args.mdns,
        faults=faults,
    )


async def run(args: argparse.Namespace, out: TextIO, stop: asyncio.Event) -> int:
    """Start the fleet, print it, wait for `stop`, shut down."""
    fleet = Fleet(fleet_options(args))
    try:
        members = await fleet.start()
        for member in members:
            print(
                f"{member.host}:{member.port}  mac {member.mac}  secret {member.secret}  "
                f"cert sha256 {member.cert_fingerprint}",
                file=out,
            )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps([m.as_json() for m in members], indent=2) + "\n")
        print(f"{len(members)} device(s) running; Ctrl-C stops them", file=out, flush=True)
        await stop.wait()
    finally:
        await fleet.stop()
    print("stopped", file=out, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)

    async def entry() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            return await run(args, sys.stdout, stop)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)

    try:
        return asyncio.run(entry())
    except (ValueError, OSError) as err:  # a bad fault name, a port already taken
        print(f"python -m simulator: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
