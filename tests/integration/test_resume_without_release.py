"""An install interrupted by a restart, resumed when the feed no longer has its release.

The resumed job looks its release up in the entry's feed again (by version and SHA-256);
without it Home Assistant cannot serve the image any more, says so, and the job ends as
the device reports it: failed, the device still on its old firmware.
"""

from __future__ import annotations

import logging

import pytest
from homeassistant.core import HomeAssistant

from custom_components.esp_ota.const import CONF_FEED_URL
from custom_components.esp_ota.espota.job_record import UpdateStep

from .conftest import ReleaseServer, StartDevice, wait_for, wait_for_event_stream
from .test_install import (  # the install tests' helpers and short bounds
    entry_for,
    finished_events,
    firmware_server_on_loopback,  # noqa: F401 - autouse fixture
    image_of,
    install,
    load,
    restart_home_assistant_side,
)


@pytest.mark.parametrize("feed_after", ["another_release", "no_feed"])
async def test_a_resumed_install_whose_release_is_gone_fails(
    hass: HomeAssistant,
    start_device: StartDevice,
    release_server: ReleaseServer,
    caplog: pytest.LogCaptureFixture,
    feed_after: str,
) -> None:
    """The feed now lists only 1.2.0, or the entry follows no feed any more."""
    sim = await start_device(mac="24:0a:c4:12:34:56", reboot_time_s=1.0)
    release_server.publish("1.1.0", image_of("1.1.0"))
    sim.device.faults.slow_link_bytes_per_s = 64 * 1024
    entry = entry_for(sim, release_server)
    await load(hass, entry)
    events = finished_events(hass)
    pressed = hass.async_create_task(install(hass))

    def downloading() -> bool:
        record = entry.runtime_data.device.data.job
        return (
            record is not None
            and record.step is UpdateStep.DOWNLOADING
            and record.bytes_written > 0
        )

    await wait_for(downloading, within_s=20)
    await restart_home_assistant_side(hass, entry)
    pressed.cancel()  # the service call ended with Home Assistant's side of the install

    release_server.releases.clear()
    if feed_after == "another_release":
        release_server.publish("1.2.0", image_of("1.2.0"))
    else:
        hass.config_entries.async_update_entry(entry, options={**entry.options, CONF_FEED_URL: ""})
    caplog.set_level(logging.WARNING)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: bool(events), within_s=30)

    assert any(
        "Cannot serve 1.1.0" in record.getMessage() and "no longer lists" in record.getMessage()
        for record in caplog.records
    )
    await sim.device.wait_idle(10)
    # The device may have had every byte already (in its socket buffers): whatever it did,
    # Home Assistant's verdict is what the device shows.
    running = sim.device.info().version
    assert [event.data["result"] for event in events] == [
        "succeeded" if running == "1.1.0" else "failed"
    ]
    await wait_for_event_stream(sim)
