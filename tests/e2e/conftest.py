"""Fixtures for the browser tests: the demo stack on free ports, Debian's Chromium.

These tests start real Home Assistant and a browser, so they run in CI (CI=true: .ci/run
installs Chromium) or when asked: `ESP_OTA_E2E=1 .venv/bin/python -m pytest tests/e2e`.
Without Chromium at /usr/bin/chromium or without playwright they skip, saying which is
missing; in CI (CI=true), which installs both, they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import pytest

from demo.stack import DemoOptions, DemoStack
from simulator.pace import Pace

if TYPE_CHECKING:
    from playwright.async_api import Browser

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SCREENSHOTS: Final = REPO_ROOT / "out" / "screenshots"
CHROMIUM: Final = Path("/usr/bin/chromium")
# As root, on a machine whose network is closed (the machine doc's probe flags): no
# sandbox, no GPU, and nothing that phones home at start.
CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
E2E_ENV: Final = "ESP_OTA_E2E"


def _absent(reason: str) -> NoReturn:
    """Skip, except in CI (CI=true), which installs both: there a skip would hide that
    the browser test never ran."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true installs it: the browser test must run there)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _e2e_only() -> None:
    """Run in CI (CI=true, as .ci/run does) or when asked with ESP_OTA_E2E=1: they start
    real Home Assistant and a browser (about two minutes). Then the browser and its driver
    must be here."""
    if os.environ.get(E2E_ENV) != "1" and os.environ.get("CI") != "true":
        pytest.skip(
            f"browser tests run in CI (CI=true) or with {E2E_ENV}=1 (they start Home Assistant)"
        )
    if not CHROMIUM.exists():
        _absent(f"{CHROMIUM} is absent: apt-get install -y chromium")
    if importlib.util.find_spec("playwright") is None:
        _absent("playwright is absent: pip install playwright (no browser download)")


def free_port() -> int:
    """A port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def demo(tmp_path: Path, socket_enabled: None) -> AsyncIterator[DemoStack]:
    """The demo stack, started, in a fresh folder: Home Assistant, feed and two devices
    (one on the beta channel) at the realistic pace, so progress takes visible time."""
    stack = DemoStack(
        DemoOptions(
            config_dir=tmp_path / "ha",
            port=free_port(),
            count=2,
            beta_devices=1,
            pace=Pace.REALISTIC,
            fresh=True,
        ),
        print,
    )
    async with stack:
        yield stack


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def screenshots() -> Path:
    """Where the browser tests keep their screenshots (out/screenshots, kept after the run)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
