"""Fixtures of the conformance suite: every device test runs against both devices.

`device_kind` is parametrized ("simulator", "c"); the C variant skips when the host
build is missing. `make_dut(options)` starts devices of that kind (closed at the end of
the test, also when it is cancelled or interrupted), `dut` is one with default options,
`firmware` serves images through the fault proxy. When a test fails, the log of every C
device it started is attached to the report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Generator
from pathlib import Path
from typing import Protocol

import aiohttp
import pytest

from .devices import (
    DEVICE_KINDS,
    HOST_NOT_BUILT,
    HOST_PARTITION_TABLE,
    HOST_PROGRAM,
    DeviceOptions,
    DeviceUnderTest,
    create_device,
)
from .support import FirmwareHost

_DEVICES = pytest.StashKey[list[DeviceUnderTest]]()


class DutFactory(Protocol):
    """Starts a device under test of the test's kind."""

    def __call__(self, options: DeviceOptions | None = None) -> Awaitable[DeviceUnderTest]:
        """A started, factory-fresh device with these options (defaults if None)."""
        ...


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the test's devices to a failure."""
    report = yield
    if report.failed:
        for device in item.stash.get(_DEVICES, []):
            tail = device.log_tail()
            if tail:
                report.sections.append((f"log of {device}", tail))
    return report


@pytest.fixture(params=DEVICE_KINDS)
def device_kind(request: pytest.FixtureRequest) -> str:
    """Which device the test runs against."""
    kind: str = request.param
    if kind == "c" and not (HOST_PROGRAM.is_file() and HOST_PARTITION_TABLE.is_file()):
        pytest.skip(HOST_NOT_BUILT)
    return kind


@pytest.fixture
async def session(socket_enabled: None) -> AsyncIterator[aiohttp.ClientSession]:
    """The aiohttp session the test's clients share."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def make_dut(
    device_kind: str,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[DutFactory]:
    """Start devices under test; every one is switched off at the end."""
    devices: list[DeviceUnderTest] = []
    request.node.stash[_DEVICES] = devices

    async def factory(options: DeviceOptions | None = None) -> DeviceUnderTest:
        device = create_device(
            device_kind,
            options or DeviceOptions(),
            session,
            tmp_path / f"device-{len(devices) + 1}",
        )
        devices.append(device)
        await device.start()
        return device

    try:
        yield factory
    finally:
        failures: list[BaseException] = []
        for device in devices:
            try:
                await device.close()
            except Exception as err:  # every device is switched off, whatever happens
                failures.append(err)
        if failures:
            raise failures[0]


@pytest.fixture
async def dut(make_dut: DutFactory) -> DeviceUnderTest:
    """A factory-fresh device with the default options (esp32 v3.1, esp-ota-demo 1.0.0)."""
    return await make_dut()


@pytest.fixture
async def firmware(socket_enabled: None, tmp_path: Path) -> AsyncIterator[FirmwareHost]:
    """The library's FirmwareServer behind a fault proxy."""
    host = FirmwareHost(tmp_path / "firmware")
    await host.start()
    try:
        yield host
    finally:
        await host.close()
