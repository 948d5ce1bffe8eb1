"""The demo in a real browser: log in, open a device's update, install it, watch it finish.

Home Assistant, the feed and the devices are the demo's (demo.stack); Chromium is Debian's,
driven by Playwright. Screenshots go to out/screenshots/ and stay there after the run.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from custom_components.esp_ota.espota.protocol import ImageState
from demo.firmware import RELEASES
from demo.stack import DemoDevice, DemoInfo, DemoStack

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

PERCENT = re.compile(r"Installing \((\d+)\s*%\)")
# The in-progress screenshot is taken once the download is at least this far.
SHOT_PERCENT = 20
# A 1 MiB image at the realistic pace: about 30 s from the press to the verified boot.
INSTALL_TIMEOUT_S = 180.0


async def log_in(page: Page, info: DemoInfo) -> None:
    """The login page, as a person fills it in."""
    await page.goto(info.url)
    await page.get_by_label("Username").fill(info.owner.username)
    await page.get_by_label("Password", exact=True).fill(info.owner.password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(lambda url: "auth_callback" not in url and "/auth/" not in url)
    await page.get_by_role("link", name="Settings").wait_for(timeout=60_000)


async def open_update(page: Page, info: DemoInfo, device: DemoDevice) -> Locator:
    """Settings → Updates → the device: its update's more-info dialog."""
    await page.goto(info.url + "config/updates")
    await page.get_by_text(device.title, exact=True).first.click()
    dialog = page.locator("ha-more-info-dialog")
    await dialog.get_by_text("Update available").wait_for(timeout=30_000)
    return dialog


async def entity_state(info: DemoInfo, entity_id: str) -> dict[str, Any]:
    """The entity's state from Home Assistant's REST API, as the owner."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{info.url}api/states/{entity_id}",
            headers={"Authorization": f"Bearer {info.token}"},
        ) as response,
    ):
        assert response.status == 200
        state: dict[str, Any] = await response.json()
        return state


async def watch_percentages(dialog: Locator, until_s: float) -> list[int]:
    """Every percentage the dialog shows, in order, until it has shown two different ones
    strictly between 0 and 100 (the download visibly under way) and reached SHOT_PERCENT
    (so the screenshot shows it well under way), or the time is up."""
    label = dialog.get_by_text(PERCENT)
    seen: list[int] = []
    deadline = time.monotonic() + until_s
    while time.monotonic() < deadline:
        text = await label.first.text_content() if await label.count() else None
        if text and (match := PERCENT.search(text)):
            value = int(match[1])
            if not seen or seen[-1] != value:
                seen.append(value)
            if len({v for v in seen if 0 < v < 100}) >= 2 and value >= SHOT_PERCENT:
                break
        await asyncio.sleep(0.1)
    return seen


async def test_install_from_the_browser(
    demo: DemoStack, browser: Browser, screenshots: Path
) -> None:
    """Log in, open a stable device's update, press Install, see the percentage move, then
    the new version installed and verified; a screenshot of each."""
    info = demo.info
    assert info is not None
    device = next(d for d in info.devices if d.channel == "stable")
    target = device.offered_version
    before = await entity_state(info, device.entity_id)
    assert before["state"] == "on"
    assert before["attributes"]["installed_version"] != target

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, info)
    dialog = await open_update(page, info, device)
    await dialog.get_by_text(target, exact=True).first.wait_for()
    # The release notes (the feed's summary) have loaded: the screenshot shows them.
    summary = next(r.summary for r in RELEASES if r.version == target)
    await dialog.get_by_text(summary).wait_for()
    await page.screenshot(path=screenshots / "e2e-1-update-available.png")

    install = dialog.get_by_role("button", name=re.compile(r"^(Install|Update)$"))
    await install.click(timeout=10_000)

    seen = await watch_percentages(dialog, until_s=60)
    await page.screenshot(path=screenshots / "e2e-2-install-in-progress.png")
    under_way = [value for value in seen if 0 < value < 100]
    assert len(set(under_way)) >= 2, f"the percentage did not move through the download: {seen}"
    assert under_way == sorted(under_way), f"the percentage went backwards: {seen}"

    await dialog.get_by_text("Up-to-date").wait_for(timeout=INSTALL_TIMEOUT_S * 1000)
    await page.screenshot(path=screenshots / "e2e-3-install-verified.png")
    after = await entity_state(info, device.entity_id)
    assert after["state"] == "off"
    assert after["attributes"]["installed_version"] == target
    assert after["attributes"]["in_progress"] is False
    # The device itself runs the new image and its boot was confirmed (not left pending,
    # where the next reset would roll it back).
    assert demo.fleet is not None
    simulated = demo.fleet.devices[device.fleet.index]
    assert simulated.running_app.version == target
    assert simulated.image_state() is ImageState.VALID


async def test_crashing_beta_rolls_back_and_says_so(
    demo: DemoStack, browser: Browser, screenshots: Path
) -> None:
    """The device on the beta channel installs 1.2.0b1, which panics on every boot: the
    bootloader rolls back, Home Assistant says so, and the device runs what it ran."""
    info = demo.info
    assert info is not None
    device = next(d for d in info.devices if d.channel == "beta")
    before = await entity_state(info, device.entity_id)
    installed = before["attributes"]["installed_version"]
    assert device.offered_version != installed

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, info)
    dialog = await open_update(page, info, device)
    await dialog.get_by_role("button", name=re.compile(r"^(Install|Update)$")).click()
    await dialog.get_by_text(PERCENT).wait_for(timeout=30_000)

    await page.get_by_text(re.compile("rolled back", re.IGNORECASE)).first.wait_for(
        timeout=INSTALL_TIMEOUT_S * 1000
    )
    await page.screenshot(path=screenshots / "e2e-4-rolled-back.png")
    after = await entity_state(info, device.entity_id)
    assert after["attributes"]["in_progress"] is False
    assert after["attributes"]["installed_version"] == installed
    assert demo.fleet is not None
    simulated = demo.fleet.devices[device.fleet.index]
    assert simulated.running_app.version == installed
    assert simulated.image_state() is ImageState.VALID
