"""`python -m simulator`: options, output, JSON, signals; in process and as a real process."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custom_components.esp_ota.espota.device_client import DeviceClient
from simulator import __main__ as cli
from simulator.fleet import FleetDevice, derived_secret, mac_for
from tests.conftest import REPO_ROOT

from .conftest import wait_until


def client_for(session: aiohttp.ClientSession, member: FleetDevice) -> DeviceClient:
    """A pinned client of one device the command line started."""
    return DeviceClient(
        session, member.host, member.port, member.secret, cert_fingerprint=member.cert_fingerprint
    )


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("never_come_back=true", (None, "never_come_back", True)),
        ("3:drop_at_byte=4096", (3, "drop_at_byte", 4096)),
        ("slow_link_bytes_per_s=1.5e4", (None, "slow_link_bytes_per_s", 15000.0)),
        ("crash_versions=2.0.0,2.1.0", (None, "crash_versions", {"2.0.0", "2.1.0"})),
        ("api_fault_path=/ota/confirm", (None, "api_fault_path", "/ota/confirm")),
        ("0:api_fault=drop", (0, "api_fault", "drop")),
    ],
)
def test_parse_fault(text: str, parsed: tuple[int | None, str, Any]) -> None:
    """--fault [INDEX:]NAME=VALUE with typed values."""
    assert cli.parse_fault(text) == parsed


@pytest.mark.parametrize("text", ["oops", "=3", "x=abc"])
def test_parse_fault_errors(text: str) -> None:
    """Malformed faults are usage errors."""
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_fault(text)


@pytest.mark.parametrize("count", ["0", "-3", "many"])
def test_count_must_be_positive(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--count below 1 (or not a number) is a usage error, exit code 2."""
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["--count", count])
    assert exited.value.code == 2
    assert "--count" in capsys.readouterr().err


def test_options_reach_the_fleet() -> None:
    """Every option lands in FleetOptions."""
    args = cli.build_parser().parse_args(
        [
            "--count", "3", "--base-port", "18000", "--chip", "esp32s3", "--chip-revision",
            "2", "--project", "garden", "--version", "1.4.0", "--image-size", "65536",
            "--pace", "realistic", "--reboot-time", "0.5", "--secret", "shared",
            "--state-dir", "/tmp/x", "--mdns", "--fault", "1:never_come_back=true",
        ]
    )  # fmt: skip
    options = cli.fleet_options(args)
    assert (options.count, options.base_port, options.chip, options.chip_revision) == (
        3,
        18000,
        "esp32s3",
        2,
    )
    assert (options.project, options.version, options.image_size) == ("garden", "1.4.0", 65536)
    assert (options.pace.value, options.reboot_time_s, options.secret) == (
        "realistic",
        0.5,
        "shared",
    )
    assert (options.state_dir, options.mdns) == (Path("/tmp/x"), True)
    assert options.faults == {1: {"never_come_back": True}}


async def test_run_in_process(tmp_path: Path, socket_enabled: None) -> None:
    """run() starts the fleet, prints and writes it, serves it, and stops when asked."""
    json_path = tmp_path / "out" / "fleet.json"
    args = cli.build_parser().parse_args(
        ["--count", "2", "--json", str(json_path), "--fault", "0:never_come_back=1"]
    )
    out = io.StringIO()
    stop = asyncio.Event()
    task = asyncio.create_task(cli.run(args, out, stop))
    await wait_until(lambda: "running" in out.getvalue())
    members = [FleetDevice(**member) for member in json.loads(json_path.read_text())]
    assert [member.mac for member in members] == [mac_for(0), mac_for(1)]
    assert [member.secret for member in members] == [derived_secret(mac_for(i)) for i in (0, 1)]
    printed = out.getvalue().splitlines()
    for member, line in zip(members, printed, strict=False):
        assert line.startswith(f"127.0.0.1:{member.port}  mac {member.mac}")
        assert member.secret in line
        assert member.cert_fingerprint in line
    async with aiohttp.ClientSession() as session:
        info = await client_for(session, members[0]).info()
    assert info.mac == mac_for(0)
    stop.set()
    assert await task == 0
    assert out.getvalue().endswith("stopped\n")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", members[0].port)


class SignalOnRunning(io.StringIO):
    """Standard output that sends this process SIGTERM once the fleet says it runs."""

    def write(self, text: str) -> int:
        if "running" in text:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().write(text)


def test_main_stops_on_sigterm(
    tmp_path: Path, socket_enabled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main(argv) in this process: a real SIGTERM stops the fleet and main returns 0."""
    monkeypatch.chdir(tmp_path)
    out = SignalOnRunning()
    monkeypatch.setattr(sys, "stdout", out)
    previous = signal.getsignal(signal.SIGTERM)
    assert cli.main(["--count", "1"]) == 0
    assert f"mac {mac_for(0)}" in out.getvalue()
    assert out.getvalue().endswith("stopped\n")
    assert not list(tmp_path.iterdir())  # no --json, no file
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler was removed


def test_main_reports_errors(capsys: pytest.CaptureFixture[str], socket_enabled: None) -> None:
    """A bad fault name and a port already taken: a message on stderr, exit code 1."""
    assert cli.main(["--count", "1", "--fault", "gremlins=1"]) == 1
    assert "unknown fault 'gremlins'" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["--count", "1", "--base-port", str(port)]) == 1
    assert "address already in use" in capsys.readouterr().err


async def test_subprocess_stops_cleanly_on_ctrl_c(tmp_path: Path, socket_enabled: None) -> None:
    """The real command: two devices reachable, then SIGINT, exit 0, nothing left."""
    json_path = tmp_path / "fleet.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "--count", "2", "--secret", "shared",
        "--json", str(json_path),
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        printed: list[str] = []
        async with asyncio.timeout(60):
            while not printed or "running" not in printed[-1]:
                printed.append((await process.stdout.readline()).decode())
                assert printed[-1], "the simulator exited early"
        members = [FleetDevice(**m) for m in json.loads(json_path.read_text())]
        # What it printed is what it wrote.
        assert [line.split()[0] for line in printed[:2]] == [f"127.0.0.1:{m.port}" for m in members]
        async with aiohttp.ClientSession() as session:
            info = await client_for(session, members[1]).info()
        assert info.mac == mac_for(1)
        assert {m.secret for m in members} == {"shared"}
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().rstrip().endswith("stopped")
    assert b"Traceback" not in stderr
    for member in members:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", member.port)
