"""SimulatedDevice: its public interface, life cycle, events, network, persistence."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from simulator import device as device_module
from simulator import pace
from simulator.device import (
    ESP_RST_POWERON,
    ESP_RST_SW,
    DeviceConfig,
    FactoryFirmware,
    SimulatedDevice,
    validate_request,
)
from simulator.esp_err import (
    ESP_ERR_INVALID_ARG,
    ESP_ERR_INVALID_SIZE,
    ESP_ERR_INVALID_STATE,
    ESP_ERR_OTA_ROLLBACK_FAILED,
    ESP_ERR_OTA_ROLLBACK_INVALID_STATE,
    ESP_FAIL,
    EspError,
)
from simulator.faults import FaultPlan
from simulator.model import DeviceRefusedError, ImageState, OtaEventType, OtaRequest, OtaState
from simulator.otadata import OtaImgState
from simulator.pace import Pace

from .conftest import DeviceFactory, events_of, make_image, request_for, wait_until
from .firmware_server import FirmwareServer, make_certificate, start_firmware_server
from .test_https_ota import run_ota, types_of

E = OtaEventType


def top_folders_with_files(root: Path) -> set[str]:
    """The first path component of every file under `root`."""
    return {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()}


class RecordingNetwork:
    """A DeviceNetwork that remembers what the device asked for, and when."""

    def __init__(self, device: SimulatedDevice) -> None:
        self.device = device
        self.calls: list[tuple[str, bool]] = []

    async def go_offline(self) -> None:
        self.calls.append(("offline", self.device.online))

    async def go_online(self) -> None:
        self.calls.append(("online", self.device.online))


async def test_power_on_state(make_device: DeviceFactory, factory_image: bytes) -> None:
    device = await make_device(mac="24:0a:c4:12:34:56", chip="ESP32", chip_revision=100)
    assert device.online
    info = device.info()
    assert info.api == 1
    assert info.mac == "24:0a:c4:12:34:56"
    assert (info.chip, info.chip_revision) == ("esp32", 100)
    assert (info.project, info.version, info.idf_ver) == ("esp-ota-demo", "1.0.0", "v5.5.1")
    assert len(info.app_elf_sha256) == 64
    assert (info.running_partition, info.boot_partition) == ("ota_0", "ota_0")
    assert info.image_state is ImageState.VALID
    assert info.last_invalid_partition is None
    assert info.reset_reason == ESP_RST_POWERON
    assert 0 <= info.uptime_s < 5
    assert info.last_ota.state is OtaState.IDLE
    assert device.ota_status().ota_id is None
    assert device.flash.read(device.table.ota_apps[0].offset, len(factory_image)) == factory_image
    await device.start()  # idempotent
    assert device.boot_count == 1


async def test_device_built_from_factory_parameters(make_device: DeviceFactory) -> None:
    firmware = FactoryFirmware(project="thermostat", version="2.0.0", secure_version=2, size=64_000)
    device = await make_device(factory_image=None, factory=firmware, chip="esp32c3")
    info = device.info()
    assert (info.project, info.version, info.secure_version) == ("thermostat", "2.0.0", 2)
    assert info.chip == "esp32c3"
    assert device.efuse.secure_version == 2  # burnt at the first boot (anti-rollback)
    assert device.efuse.secure_version_bits == 16


async def test_factory_image_too_big(factory_image: bytes, tmp_path: Path) -> None:
    too_big = factory_image + b"\x00" * (1700 * 1024)
    device = SimulatedDevice(DeviceConfig(mac="aa", factory_image=too_big, state_dir=tmp_path))
    with pytest.raises(ValueError, match="does not fit"):
        await device.start()
    await device.close()
    assert not (tmp_path / "devices").exists()  # nothing half-made was saved


async def test_unbootable_flash_leaves_the_device_offline() -> None:
    device = SimulatedDevice(DeviceConfig(mac="aa", factory_image=b"\xe9" + b"\x00" * 2000))
    await device.start()
    assert not device.online
    assert device.boot_loop
    with pytest.raises(DeviceRefusedError) as caught:
        device.info()
    assert caught.value.error == ESP_ERR_INVALID_STATE
    with pytest.raises(DeviceRefusedError):
        _ = device.running_partition
    await device.close()
    await device.close()  # idempotent


async def test_confirm_makes_the_new_image_valid_and_burns_the_efuse(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.1.0", secure_version=3)
    status, _ = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.info().image_state is ImageState.PENDING_VERIFY
    assert device.efuse.secure_version == 0
    device.confirm()
    info = device.info()
    assert info.image_state is ImageState.VALID
    assert info.secure_version == 3
    assert device.efuse.secure_version == 3
    # Confirmed: a reboot keeps the new image.
    await device.reboot()
    await device.wait_idle(5)
    assert device.info().version == "1.1.0"
    # And the next update goes back into ota_0, with seq 3.
    image2 = make_image("1.2.0", secure_version=3)
    status, _ = await run_ota(device, request_for(firmware_server, "/g.bin", image2, "1.2.0"))
    assert status.state is OtaState.SUCCEEDED
    assert device.info().running_partition == "ota_0"
    assert device.ops.otadata.read()[0].seq == 3


async def test_reboot_without_confirm_rolls_back(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    image = make_image("1.1.0")
    await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    queue = device.subscribe()
    await device.reboot()
    assert not device.online
    await device.wait_idle(5)
    assert [e.type for e in events_of(queue)] == [E.REBOOT]
    info = device.info()
    assert (info.version, info.running_partition) == ("1.0.0", "ota_0")
    assert info.last_invalid_partition == "ota_1"
    assert info.reset_reason == ESP_RST_SW
    assert device.ops.state_of(device.table.ota_apps[1]) is OtaImgState.ABORTED


async def test_rollback_marks_invalid_and_reboots(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    with pytest.raises(DeviceRefusedError) as caught:
        await device.rollback()
    assert caught.value.error == ESP_ERR_OTA_ROLLBACK_FAILED
    image = make_image("1.1.0")
    await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await device.rollback()
    assert not device.online
    await device.wait_idle(5)
    info = device.info()
    assert (info.version, info.last_invalid_partition) == ("1.0.0", "ota_1")
    assert device.ops.state_of(device.table.ota_apps[1]) is OtaImgState.INVALID


async def test_start_ota_refusals(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=50_000))
    image = make_image("1.1.0")
    good = request_for(firmware_server, "/f.bin", image, "1.1.0")
    bad_requests = {
        "http": (replace(good, url=good.url.replace("https://", "http://")), ESP_ERR_INVALID_ARG),
        "no host": (replace(good, url="https:///fw.bin"), ESP_ERR_INVALID_ARG),
        "sha": (replace(good, sha256="xyz"), ESP_ERR_INVALID_ARG),
        "tiny": (replace(good, size=100), ESP_ERR_INVALID_ARG),
        "huge": (replace(good, size=1700 * 1024 + 1), ESP_ERR_INVALID_SIZE),
        "version": (replace(good, version=""), ESP_ERR_INVALID_ARG),
        "long version": (replace(good, version="v" * 32), ESP_ERR_INVALID_ARG),
        "no cert": (replace(good, cert_pem="  "), ESP_ERR_INVALID_ARG),
        "bad cert": (
            replace(good, cert_pem="-----BEGIN CERTIFICATE-----\nxx"),
            ESP_ERR_INVALID_ARG,
        ),
        "header": (replace(good, headers={"X": "a\r\nb"}), ESP_ERR_INVALID_ARG),
    }
    for name, (request, error) in bad_requests.items():
        with pytest.raises(DeviceRefusedError) as caught:
            await device.start_ota(request)
        assert caught.value.error == error, name
        assert caught.value.message
    assert device.ota_status().state is OtaState.IDLE
    ota_id = await device.start_ota(good)
    assert device.ota_status().ota_id == ota_id
    assert device.ota_status().state in (OtaState.CONNECTING, OtaState.DOWNLOADING)
    with pytest.raises(DeviceRefusedError) as caught:
        await device.start_ota(good)
    assert caught.value.error == ESP_ERR_INVALID_STATE
    await device.abort_ota()


async def test_pending_verify_device_refuses_the_next_update(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device()
    await run_ota(device, request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0"))
    with pytest.raises(DeviceRefusedError) as caught:
        await device.start_ota(request_for(firmware_server, "/g.bin", make_image("1.2.0"), "1.2.0"))
    assert caught.value.error == ESP_ERR_OTA_ROLLBACK_INVALID_STATE


async def test_abort_keeps_the_boot_partition(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=100_000))
    with pytest.raises(DeviceRefusedError) as caught:
        await device.abort_ota()
    assert caught.value.error == ESP_ERR_INVALID_STATE
    queue = device.subscribe()
    image = make_image("1.1.0", size=100_000)
    ota_id = await device.start_ota(request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await wait_until(lambda: device.ota_status().bytes_written >= 10_000)
    await device.abort_ota()
    status = device.ota_status()
    assert (status.state, status.ota_id, status.error) == (OtaState.ABORTED, ota_id, None)
    assert status.message == "aborted on request"
    events = events_of(queue)
    assert types_of(events)[-1] is E.ABORT
    assert events[-1].error is None
    info = device.info()
    assert (info.version, info.boot_partition) == ("1.0.0", "ota_0")
    assert device.ops.open_handles == 0
    await device.wait_idle(1)
    assert device.online
    # A new job can start right away, and the staged slot is simply rewritten.
    device.faults.clear()
    status, _ = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED


async def test_reboot_during_an_update_is_reported_after_the_boot(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(faults=FaultPlan(slow_link_bytes_per_s=100_000))
    queue = device.subscribe()
    image = make_image("1.1.0", size=100_000)
    ota_id = await device.start_ota(request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await wait_until(lambda: device.ota_status().bytes_written >= 5_000)
    await device.reboot()
    await device.wait_idle(5)
    status = device.ota_status()
    assert (status.state, status.ota_id, status.error) == (OtaState.FAILED, ota_id, ESP_FAIL)
    assert status.message == "the OTA was interrupted by a reset (ESP_RST_SW)"
    events = events_of(queue)
    assert E.ABORT not in types_of(events)  # a reset sends nothing
    assert types_of(events)[-1] is E.REBOOT
    assert device.info().version == "1.0.0"


async def test_network_goes_offline_for_the_reboot(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    device = await make_device(reboot_time_s=0.2)
    network = RecordingNetwork(device)
    device.attach_network(network)
    await device.reboot()
    assert not device.online
    with pytest.raises(DeviceRefusedError) as caught:
        device.confirm()
    assert caught.value.error == ESP_ERR_INVALID_STATE
    with pytest.raises(DeviceRefusedError):
        await device.reboot()
    started = time.monotonic()
    await device.wait_online(5)
    assert time.monotonic() - started >= 0.15
    await device.wait_idle(1)
    # The network is up before the device reports online, so whoever waits for
    # `online` can connect at once.
    assert network.calls == [("offline", False), ("online", False)]
    assert device.info().uptime_s < 1


async def test_power_cycle_cuts_a_reboot_short(make_device: DeviceFactory) -> None:
    device = await make_device(reboot_time_s=30)
    await device.reboot()
    device.reboot_time_s = 0
    await device.power_cycle()
    await device.wait_online(2)
    assert device.info().reset_reason == ESP_RST_POWERON


async def test_auto_confirm(make_device: DeviceFactory, firmware_server: FirmwareServer) -> None:
    device = await make_device(auto_confirm=True)
    await run_ota(device, request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0"))
    assert device.info().image_state is ImageState.VALID


async def test_events_since_and_subscribers(
    make_device: DeviceFactory, firmware_server: FirmwareServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_module, "SUBSCRIBER_QUEUE_SIZE", 4)
    device = await make_device(reboot_time_s=30)
    small = device.subscribe()
    gone = device.subscribe()
    device.unsubscribe(gone)
    image = make_image("1.1.0", size=40_000)
    await device.start_ota(request_for(firmware_server, "/f.bin", image, "1.1.0"))
    await wait_until(lambda: any(e.type is E.REBOOT for e in device.events_since(0)))
    ring = device.events_since(0)
    ids = [e.id for e in ring]
    assert ids == list(range(1, len(ring) + 1))
    assert [e.type for e in ring][-1] is E.REBOOT
    assert device.events_since(ids[-3]) == ring[-2:]
    assert device.events_since(ids[-1]) == []
    assert device.events_since(10**9) == ring  # a client of an earlier run gets everything
    assert gone.empty()
    kept = events_of(small)
    assert kept == ring[-4:]  # the small queue dropped the oldest
    device.reboot_time_s = 0
    await device.power_cycle()
    await device.wait_idle(5)
    assert device.events_since(0) == []  # the ring is RAM: gone after the reset
    await device.reboot()
    await device.wait_idle(5)
    assert device.events_since(0) == []
    assert events_of(small)[0].id == ids[-1] + 1  # ids keep counting


async def test_progress_events_are_paced(
    make_device: DeviceFactory, firmware_server: FirmwareServer
) -> None:
    """WRITE_FLASH (one per 4 KiB written) becomes an event at most every
    progress_event_interval_s, the first and the completing one always; 0 forwards all."""
    image = make_image("1.1.0", size=120_000)
    request = request_for(firmware_server, "/f.bin", image, "1.1.0")
    counts: dict[float, int] = {}
    for interval in (0.0, 0.2):
        device = await make_device(
            progress_event_interval_s=interval, faults=FaultPlan(slow_link_bytes_per_s=200_000)
        )
        began = time.monotonic()
        status, events = await run_ota(device, request)
        took = time.monotonic() - began
        assert status.state is OtaState.SUCCEEDED
        written = [e.bytes_written or 0 for e in events if e.type is E.WRITE_FLASH]
        assert written[-1] == len(image)
        assert written == sorted(written)
        counts[interval] = len(written)
        if interval:
            assert 2 <= len(written) <= took / interval + 2
    assert counts[0.0] >= len(image) // 4096  # every buffer written
    assert counts[0.0] > 3 * counts[0.2]


async def test_state_survives_a_simulator_restart(
    tmp_path: Path, factory_image: bytes, firmware_server: FirmwareServer
) -> None:
    config = DeviceConfig(
        mac="24:0a:c4:aa:bb:cc", factory_image=factory_image, state_dir=tmp_path, reboot_time_s=0
    )
    first = SimulatedDevice(config)
    await first.start()
    image = make_image("1.1.0", secure_version=2)
    status, events = await run_ota(first, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    assert status.state is OtaState.SUCCEEDED
    first.confirm()
    last_id = events[-1].id
    await first.close()
    assert top_folders_with_files(tmp_path) == {"devices", "sectors"}

    second = SimulatedDevice(config)
    await second.start()
    info = second.info()
    assert (info.version, info.running_partition, info.image_state) == (
        "1.1.0",
        "ota_1",
        ImageState.VALID,
    )
    assert info.reset_reason == ESP_RST_POWERON
    assert info.last_ota.state is OtaState.SUCCEEDED
    assert info.last_ota.ota_id == status.ota_id
    assert second.efuse.secure_version == 2
    queue = second.subscribe()
    await second.reboot()
    assert events_of(queue)[0].id > last_id  # ids never go back
    await second.wait_idle(5)
    await second.close()

    # Two devices with the same firmware share the sector files.
    other = SimulatedDevice(replace(config, mac="24:0a:c4:aa:bb:cd"))
    await other.start()
    await other.close()
    sector_files = list((tmp_path / "sectors").iterdir())
    assert len(sector_files) < 2 * (len(factory_image) + len(image)) // 4096


async def test_realistic_pace_small_image(
    make_device: DeviceFactory, firmware_server: FirmwareServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pace, "TLS_HANDSHAKE_S", (1.0, 1.0))
    device = await make_device(pace=Pace.REALISTIC, reboot_time_s=0)
    image = make_image("1.1.0", size=24 * 1024)
    started = time.monotonic()
    status, _ = await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    elapsed = time.monotonic() - started
    assert status.state is OtaState.SUCCEEDED
    # One GET: full handshake 1 s + latency + 6 sector erases (0.4 s) + receiving 24 KiB
    # (0.12 s) and programming it (0.03 s) + the 1 s pause before esp_restart.
    assert 2.4 < elapsed < 4.0


async def test_timing_model_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    timing = pace.Timing(Pace.REALISTIC)
    await timing.erase_sectors(256)
    await timing.erase_blocks(1024 * 1024)
    await timing.program(754_000)
    await timing.tls_handshake(resumed=False)
    await timing.tls_handshake(resumed=True)
    await timing.request()
    await timing.restart_delay()
    assert slept[:3] == pytest.approx([256 * 0.066, 16 * 0.2, 1.0])
    assert 1.0 <= slept[3] <= 3.0
    assert slept[4:] == pytest.approx([0.1, 0.03, 1.0])
    # The model's 1 MiB OTA: 23.6 s with sector erases, 9.8 s with block erases (guide).
    receive_and_program = (
        2**20 / pace.LAN_RECEIVE_BYTES_PER_S + 2**20 / pace.FLASH_PROGRAM_BYTES_PER_S
    )
    assert 256 * pace.SECTOR_ERASE_S + receive_and_program == pytest.approx(23.6, abs=0.5)
    assert 16 * pace.BLOCK_ERASE_S + receive_and_program == pytest.approx(9.8, abs=0.5)
    slept.clear()
    quiet = pace.Timing(Pace.UNTHROTTLED)
    await quiet.erase_sectors(256)
    await quiet.tls_handshake(resumed=False)
    assert slept == []


async def test_pinning_a_leaf_certificate_works(
    make_device: DeviceFactory, socket_enabled: None
) -> None:
    # mbedTLS trusts whatever certificate is pinned, CA or not.
    server = await start_firmware_server(make_certificate(ca=False))
    try:
        device = await make_device()
        image = make_image("1.1.0")
        status, _ = await run_ota(device, request_for(server, "/f.bin", image, "1.1.0"))
        assert status.state is OtaState.SUCCEEDED
    finally:
        await server.close()


async def test_close_during_an_update(
    firmware_server: FirmwareServer, factory_image: bytes, tmp_path: Path
) -> None:
    device = SimulatedDevice(
        DeviceConfig(
            mac="aa",
            factory_image=factory_image,
            state_dir=tmp_path,
            faults=FaultPlan(slow_link_bytes_per_s=50_000),
        )
    )
    await device.start()
    await device.start_ota(request_for(firmware_server, "/f.bin", make_image("1.1.0"), "1.1.0"))
    await asyncio.sleep(0.1)
    await device.close()
    assert not device.online
    assert device.ops.open_handles == 0
    assert device.ops.boot_partition().label == "ota_0"


async def test_a_second_restart_request_is_ignored(make_device: DeviceFactory) -> None:
    device = await make_device(reboot_time_s=0.1)
    queue = device.subscribe()
    await device.reboot()
    device._schedule_restart(ESP_RST_SW)  # e.g. a job finishing while the reboot began
    await device.wait_idle(5)
    assert [e.type for e in events_of(queue)] == [E.REBOOT]
    assert device.boot_count == 2


async def test_image_state_without_an_otadata_entry_is_undefined(
    make_device: DeviceFactory,
) -> None:
    device = await make_device()
    device.ops.otadata.erase_entry(0)
    assert device.info().image_state is ImageState.UNDEFINED


async def test_confirm_refused(make_device: DeviceFactory, firmware_server: FirmwareServer) -> None:
    device = await make_device()
    image = make_image("1.1.0", secure_version=40)  # more than the 32-bit eFuse field holds
    await run_ota(device, request_for(firmware_server, "/f.bin", image, "1.1.0"))
    with pytest.raises(DeviceRefusedError) as caught:
        device.confirm()
    assert caught.value.error == ESP_ERR_INVALID_ARG
    assert "Max secure version is 32" in caught.value.message


def read_bytes(path: Path) -> bytes:
    """A file's bytes (sync helper for async tests)."""
    return path.read_bytes()


async def test_real_esp_idf_images(
    make_device: DeviceFactory, firmware_server: FirmwareServer, esp_images_dir: Path
) -> None:
    # A real ESP-IDF v3.3 app (with a Secure Boot v1 signature block after it) as factory
    # firmware: the bootloader model loads it.
    hello = await make_device(factory_image=read_bytes(esp_images_dir / "hello-world-signed.bin"))
    info = hello.info()
    assert (info.project, info.version) == ("hello-world", "v3.3-beta3-21-g0706bd0d1-dirty")
    # A real ESP-IDF v5.0 app for the ESP32-S2, pulled over HTTPS by an S2 running "blink".
    blink = read_bytes(esp_images_dir / "esp_idf_blink_esp32s2.bin")
    device = await make_device(
        chip="esp32s2",
        chip_revision=0,
        factory_image=make_image("0.9.0", project="blink", chip="esp32s2", max_chip_rev_full=0),
    )
    version = "qa-test-v5.0-20220830-4-g4532e6"
    status, _ = await run_ota(device, request_for(firmware_server, "/blink.bin", blink, version))
    assert status.state is OtaState.SUCCEEDED
    info = device.info()
    assert (info.project, info.version, info.chip) == ("blink", version, "esp32s2")
    assert info.idf_ver == "v5.0-beta1-427-g4532e6e0b2-dirt"
    device.confirm()
    assert device.info().image_state is ImageState.VALID


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:99999/fw.bin",  # a port out of range
        "https://[::1/fw.bin",  # an unclosed IPv6 bracket
        "https://user@/fw.bin",  # no host
        "https://:443/fw.bin",
        "https:///fw.bin",
    ],
)
def test_a_url_without_a_usable_host_is_an_invalid_argument(url: str) -> None:
    """URLs yarl cannot read are refused like any other bad URL (400), not a server error."""
    request = OtaRequest(
        url=url,
        sha256="00" * 32,
        size=4096,
        version="2.0.0",
        cert_pem=make_certificate().cert_pem,
    )
    with pytest.raises(EspError) as refused:
        validate_request(request, 1024 * 1024)
    assert refused.value.name == ESP_ERR_INVALID_ARG
