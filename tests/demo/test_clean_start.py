"""The demo starts clean: no notification, no warning or error that is not explained."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from homeassistant.components.onboarding import async_is_onboarded
from homeassistant.components.onboarding.const import DOMAIN as ONBOARDING
from homeassistant.components.onboarding.const import STEP_CORE_CONFIG, STEP_USER
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from demo import ha_requirements
from demo.hass import ALLOWED_LOG_LINES, AllowedLogLine, log_problems, onboarding_storage
from demo.stack import DemoOptions, DemoStack
from simulator.pace import Pace

LOG = """\
2026-12-06 07:55:24.259 WARNING (MainThread) [homeassistant.bootstrap] Skipping pip \
installation of required modules. This may cause issues
2026-12-06 07:55:24.262 WARNING (SyncWorker_0) [homeassistant.loader] We found a custom \
integration esp_ota which has not been tested by Home Assistant.
2026-12-06 07:55:24.300 ERROR (MainThread) [homeassistant.setup] Setup failed for \
'infrared': Unable to import component: No module named 'infrared_protocols'
Traceback (most recent call last):
  File "setup.py", line 341, in _async_setup_component
2026-12-06 07:55:24.400 INFO (MainThread) [homeassistant.setup] Setting up esp_ota
2026-12-06 07:55:24.500 WARNING (MainThread) [haffmpeg.tools] Error starting FFmpeg.
"""


def test_log_problems_are_what_the_allow_list_does_not_explain() -> None:
    """Only the WARNING+ lines outside the allow-list; a machine-dependent entry applies
    only while its condition holds."""
    ffmpeg_absent = AllowedLogLine(
        "haffmpeg.tools", re.compile("^Error starting FFmpeg"), "no ffmpeg", lambda: True
    )
    ffmpeg_present = AllowedLogLine(
        "haffmpeg.tools", re.compile("^Error starting FFmpeg"), "no ffmpeg", lambda: False
    )
    always = ALLOWED_LOG_LINES[:2]
    assert [line[24:29] for line in log_problems(LOG, (*always, ffmpeg_absent))] == ["ERROR"]
    assert len(log_problems(LOG, (*always, ffmpeg_present))) == 2
    assert len(log_problems(LOG, ())) == 4


async def test_onboarding_preset_leaves_the_owner_to_create(
    hass: HomeAssistant, hass_storage: dict[str, Any]
) -> None:
    """Home Assistant's onboarding reads the demo's preset: core_config done (so its
    internet integrations are never added), the owner still to create."""
    hass_storage[ONBOARDING] = onboarding_storage()
    assert await async_setup_component(hass, ONBOARDING, {})
    assert not async_is_onboarded(hass)
    done = hass.data[ONBOARDING].steps["done"]
    assert STEP_CORE_CONFIG in done
    assert STEP_USER not in done


def test_the_venv_has_what_home_assistant_sets_up() -> None:
    """The venv (made from pyproject.toml: in CI a fresh one) has every package, at Home
    Assistant's own pins, of the integrations its start sets up (read from this Home
    Assistant's manifests), so the demo's Home Assistant never fails to import one, nor
    installs one at start."""
    required = ha_requirements.requirements()
    assert "infrared-protocols==10.1.0" in required
    assert "rf-protocols==4.3.0" in required
    assert ha_requirements.missing() == []
    assert ha_requirements.missing(["surely-not-installed==1.0", "aiohttp==0.0.1"]) == [
        "surely-not-installed==1.0",
        "aiohttp==0.0.1",
    ]


def free_port() -> int:
    """A port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_options(config_dir: Path, port: int, *, fresh: bool) -> DemoOptions:
    """The demo as `script/demo` starts it, with one small device at full speed: what a
    user sees first is the same."""
    return DemoOptions(
        config_dir=config_dir,
        port=port,
        count=1,
        beta_devices=0,
        pace=Pace.UNTHROTTLED,
        image_size=64 * 1024,
        fresh=fresh,
    )


async def test_demo_starts_clean_and_restarts_clean(tmp_path: Path, socket_enabled: None) -> None:
    """`script/demo --fresh` (a new folder, onboarding), then `script/demo` again on that
    folder and port (login, devices re-added): each time no persistent notification and
    no unexplained WARNING or ERROR in home-assistant.log (demo/hass.py ALLOWED_LOG_LINES
    says why each allowed one is fine)."""
    port = free_port()
    fresh = DemoStack(demo_options(tmp_path / "ha", port, fresh=True))
    async with fresh:
        assert await fresh.problems() == []
        log = fresh.home_assistant_log.read_text()
    assert "custom integration esp_ota" in log  # the log that was checked is the real one

    again = DemoStack(demo_options(tmp_path / "ha", port, fresh=False))
    async with again:
        assert await again.problems() == []
