"""`python -m demo`: real Home Assistant with ESP OTA, a signed feed and a simulated fleet.

    python -m demo                  # reuse out/demo-ha if it is there
    python -m demo --fresh          # wipe it first: a brand-new Home Assistant
    python -m demo --cli            # the espota command-line walkthrough (script/demo-cli)

Prints the URL, username and password once everything is up; Ctrl-C (or SIGTERM) stops
Home Assistant, the fleet and the feed server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from custom_components.esp_ota.espota.image_builder import MIN_IMAGE_SIZE
from simulator.__main__ import positive_int
from simulator.pace import Pace

from .errors import DemoError
from .stack import DEFAULT_IMAGE_SIZE, REPO_ROOT, DemoOptions, DemoStack

# script/demo exports its start time (epoch seconds), so the start-up time printed at the
# end includes the bootstrap check and Python's imports.
STARTED_AT_ENV = "DEMO_STARTED_AT"
MAX_IMAGE_SIZE = 1700 * 1024  # simulator.partitions: advanced_https_ota's ota_0/ota_1


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line."""
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=REPO_ROOT / "out" / "demo-ha",
        help="Home Assistant's config folder (default out/demo-ha)",
    )
    parser.add_argument("--fresh", action="store_true", help="wipe the config folder first")
    parser.add_argument("--port", type=positive_int, default=8123, help="Home Assistant's port")
    parser.add_argument("--feed-port", type=int, default=0, help="the feed's port (default: any)")
    parser.add_argument("--count", type=positive_int, default=4, help="devices (default 4)")
    parser.add_argument(
        "--beta-devices", type=int, default=1, help="how many of them follow the beta channel"
    )
    parser.add_argument("--pace", choices=[pace.value for pace in Pace], default="realistic")
    parser.add_argument("--image-size", type=positive_int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument(
        "--cli", action="store_true", help="run the espota command-line walkthrough instead"
    )
    return parser


def options_from(args: argparse.Namespace) -> DemoOptions:
    """The parsed command line as DemoOptions."""
    if not 0 <= args.beta_devices <= args.count:
        raise DemoError(f"--beta-devices must be between 0 and --count ({args.count})")
    if not MIN_IMAGE_SIZE <= args.image_size <= MAX_IMAGE_SIZE or args.image_size % 16:
        raise DemoError(
            f"--image-size must be a multiple of 16 from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} "
            "(what fits the simulator's 1700 KiB app slots)"
        )
    return DemoOptions(
        config_dir=args.config_dir,
        port=args.port,
        feed_port=args.feed_port,
        count=args.count,
        beta_devices=args.beta_devices,
        pace=Pace(args.pace),
        image_size=args.image_size,
        fresh=args.fresh,
    )


def start_time() -> float:
    """The demo's start on the monotonic clock: script/demo's start when it says so."""
    now = time.monotonic()
    with contextlib.suppress(KeyError, ValueError):
        started = float(os.environ[STARTED_AT_ENV])
        if 0 <= time.time() - started < 3600:
            return now - (time.time() - started)
    return now


async def run(options: DemoOptions, out: TextIO, stop: asyncio.Event, started_at: float) -> int:
    """Start the stack, print how to use it, run until `stop` or Home Assistant exits."""

    def report(message: str) -> None:
        print(message, file=out, flush=True)

    stack = DemoStack(options, report, started_at=started_at)
    starting = asyncio.create_task(stack.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            report("demo: stopping before start-up finished")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 130
        info = starting.result()
        report(info.render())
        # A new user's first look must not be an error: say what Home Assistant reports.
        for problem in await stack.problems():
            report(f"demo: Home Assistant reports a problem: {problem}")
        report(
            f"\nStarted in {info.timings['ready']:.1f} s (Home Assistant up with the fleet "
            "added). Ctrl-C stops everything."
        )
        exited = asyncio.create_task(stack.wait_hass_exit())
        try:
            await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not stopping.done():
            report(f"demo: Home Assistant exited; see {stack.hass.console_log}")
            return 1
        return 0
    finally:
        stopping.cancel()
        report("demo: stopping Home Assistant, the fleet and the feed server")
        await stack.stop()
        report("demo: stopped; nothing left running")


def run_cli_walkthrough(argv: Sequence[str]) -> None:
    """Replace this process with the espota command-line walkthrough."""
    script = REPO_ROOT / "script" / "demo-cli"
    os.execv(script, [str(script), *argv])  # noqa: S606 - our own script, no shell


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT or SIGTERM."""
    args, rest = build_parser().parse_known_args(argv)
    if args.cli:
        run_cli_walkthrough(rest)
    if rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    started_at = start_time()

    async def entry() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            return await run(options_from(args), sys.stdout, stop, started_at)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)

    try:
        return asyncio.run(entry())
    except (DemoError, OSError) as err:
        print(f"python -m demo: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
