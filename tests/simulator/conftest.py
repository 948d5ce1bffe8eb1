"""Shared fixtures of the simulator tests: images, an HTTPS firmware server, devices."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import DeviceEvent, EventType, OtaState, OtaStatus
from simulator.device import DeviceConfig, SimulatedDevice
from simulator.model import OtaRequest
from simulator.ota_task import OtaTaskConfig

from .firmware_server import FirmwareServer, start_firmware_server

PROJECT = "esp-ota-demo"
FACTORY_VERSION = "1.0.0"


def make_image(
    version: str, *, project: str = PROJECT, size: int = 48 * 1024, **kwargs: Any
) -> bytes:
    """A valid app image (the library's builder; esp32 and ESP-IDF v5.5.1 by default)."""
    kwargs.setdefault("chip", "esp32")
    kwargs.setdefault("idf_ver", "v5.5.1")
    return build_app_image(project=project, version=version, size=size, **kwargs)


def request_for(
    server: FirmwareServer, path: str, data: bytes, version: str, **changes: Any
) -> OtaRequest:
    """Publish `data` on the server and describe it as an OTA request."""
    url = server.add(path, data)
    request = OtaRequest(
        url=url,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        version=version,
        cert_pem=server.cert_pem,
    )
    return replace(request, **changes)


@pytest.fixture
def factory_image() -> bytes:
    """The image every test device starts with (project esp-ota-demo, version 1.0.0)."""
    return make_image(FACTORY_VERSION)


@pytest.fixture
async def firmware_server(socket_enabled: None) -> AsyncIterator[FirmwareServer]:
    """An HTTPS firmware server on 127.0.0.1 with a self-signed certificate."""
    server = await start_firmware_server()
    yield server
    await server.close()


DeviceFactory = Callable[..., Awaitable[SimulatedDevice]]
# Test devices give up sooner than real ones: a short socket timeout and stall watchdog.
DEVICE_OTA_SETTINGS: dict[str, Any] = {"timeout_ms": 500, "stall_abort_ms": 2000}


@pytest.fixture
async def make_device(factory_image: bytes) -> AsyncIterator[DeviceFactory]:
    """Build, start and (at the end) close simulated devices.

    Keyword arguments are DeviceConfig fields; `ota=` may be a dict of OtaTaskConfig
    settings (OtaTaskConfig.with_settings names).
    Defaults: unthrottled, instant reboots, short stall watchdog.
    """
    devices: list[SimulatedDevice] = []
    counter = iter(range(1, 1_000_000))

    async def factory(**kwargs: Any) -> SimulatedDevice:
        ota = kwargs.pop("ota", {})
        if isinstance(ota, dict):
            ota = OtaTaskConfig().with_settings(**{**DEVICE_OTA_SETTINGS, **ota})
        config = DeviceConfig(
            mac=kwargs.pop("mac", f"24:0a:c4:00:00:{next(counter):02x}"),
            factory_image=kwargs.pop("factory_image", factory_image),
            reboot_time_s=kwargs.pop("reboot_time_s", 0.0),
            ota=ota,
            **kwargs,
        )
        device = SimulatedDevice(config)
        devices.append(device)
        await device.start()
        return device

    yield factory
    for device in devices:
        await device.close()


async def wait_until(condition: Callable[[], bool], within_s: float = 10) -> None:
    """Poll `condition` until it holds (device state has no event for every detail)."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - polling plain attributes is the point
            await asyncio.sleep(0.005)


def events_of(queue: Any) -> list[DeviceEvent]:
    """Everything queued so far."""
    out: list[DeviceEvent] = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


E = EventType
# esp_https_ota's partial_http_download (off by default, as in ESP-IDF).
PARTIAL: dict[str, Any] = {"partial_http_download": True}


async def run_ota(
    device: SimulatedDevice, request: OtaRequest
) -> tuple[OtaStatus, list[DeviceEvent]]:
    """Start an OTA, wait for it (and any reboot) to end; the final status and events."""
    queue = device.subscribe()
    ota_id = await device.start_ota(request)
    await device.wait_idle(20)
    device.unsubscribe(queue)
    events = events_of(queue)
    assert all(event.ota_id in (ota_id, None) for event in events)
    return device.ota_status(), events


def types_of(events: list[DeviceEvent]) -> list[EventType]:
    """Event types with consecutive WRITE_FLASH collapsed into one."""
    out: list[EventType] = []
    for event in events:
        if event.type is E.WRITE_FLASH and out and out[-1] is E.WRITE_FLASH:
            continue
        out.append(event.type)
    return out


SUCCESS_EVENTS = [
    E.START,
    E.CONNECTED,
    E.GET_IMG_DESC,
    E.VERIFY_CHIP_ID,
    E.VERIFY_CHIP_REVISION,
    E.WRITE_FLASH,
    E.UPDATE_BOOT_PARTITION,
    E.FINISH,
    E.REBOOT,
]


def assert_failed(
    device: SimulatedDevice, status: OtaStatus, events: list[DeviceEvent], error: str
) -> None:
    """The job failed with `error`, announced by a terminal ABORT or FINISH, boot untouched."""
    assert status.state is OtaState.FAILED, status
    assert status.error == error, status
    terminal = [e for e in events if e.type in (E.ABORT, E.FINISH)]
    assert terminal, events
    assert terminal[-1].error == error
    assert E.UPDATE_BOOT_PARTITION not in types_of(events)
    assert E.REBOOT not in types_of(events)
    info = device.info()
    assert info.running_partition == "ota_0"
    assert info.boot_partition == "ota_0"
    assert info.version == "1.0.0"
    assert device.online
