"""The demo in a real browser: log in, open a device's update, install it, watch it finish;
the update entity's icon (the platform's state icons) and the result sensors in words.

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
# The update platform's state icons, which ours no longer override (icons.json).
ICON_AVAILABLE = "mdi:package-up"
ICON_UP_TO_DATE = "mdi:package"
# What the Updates page and the more-info dialog show instead: the integration's brand.
BRAND_PICTURE = "/api/brands/integration/esp_ota/icon.png"
# The icon of the only <ha-state-icon> on the page (the entities page filtered down to one
# row), found through the shadow roots, once it is the entity's and has resolved (icons.json,
# the platform's, the domain's); null until then.
STATE_ICON_JS = """(entityId) => {
  const found = [];
  const walk = (root) => {
    for (const element of root.querySelectorAll("*")) {
      if (element.localName === "ha-state-icon") found.push(element);
      if (element.shadowRoot) walk(element.shadowRoot);
    }
  };
  walk(document);
  if (found.length !== 1 || found[0].stateObj?.entity_id !== entityId) return null;
  return found[0].shadowRoot?.querySelector("ha-icon")?.icon || null;
}"""
# The pictures of every <state-badge> of an entity (its background image), shadow roots too.
BADGE_PICTURES_JS = """(entityId) => {
  const found = [];
  const walk = (root) => {
    for (const element of root.querySelectorAll("*")) {
      if (element.localName === "state-badge" && element.stateObj?.entity_id === entityId) {
        found.push(element.style.backgroundImage);
      }
      if (element.shadowRoot) walk(element.shadowRoot);
    }
  };
  walk(document);
  return found;
}"""
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


async def page_loaded(page: Page) -> None:
    """Home Assistant's launch screen (its logo and "Loading…", fading out after a page
    load) is gone, so a screenshot shows the page."""
    await page.locator("#ha-launch-screen").wait_for(state="detached", timeout=30_000)


async def open_update(
    page: Page, info: DemoInfo, device: DemoDevice, updates_shot: Path | None = None
) -> Locator:
    """Settings → Updates → the device: its update's more-info dialog (a screenshot of the
    Updates page first, if asked)."""
    await page.goto(info.url + "config/updates")
    entry = page.get_by_text(device.title, exact=True).first
    await entry.wait_for(timeout=30_000)
    if updates_shot is not None:
        await page_loaded(page)
        await page.screenshot(path=updates_shot)
    await entry.click()
    dialog = page.locator("ha-more-info-dialog")
    await dialog.get_by_text("Update available").wait_for(timeout=30_000)
    return dialog


async def entities_page_icon(page: Page, info: DemoInfo, entity_id: str, shot: Path) -> str:
    """Settings → Entities, searched for the entity: the icon its row shows (a screenshot)."""
    await page.goto(info.url + "config/entities")
    await page.get_by_placeholder(re.compile(r"^Search \d+ entities")).fill(entity_id)
    icon = await page.wait_for_function(STATE_ICON_JS, arg=entity_id, timeout=30_000)
    await page_loaded(page)
    await page.screenshot(path=shot)
    return str(await icon.json_value())


async def badge_pictures(page: Page, entity_id: str) -> list[str]:
    """The pictures the entity's badges show on the page (Updates list, dialog header)."""
    pictures: list[str] = await page.evaluate(BADGE_PICTURES_JS, entity_id)
    return pictures


async def device_page(page: Page, info: DemoInfo, entity_id: str) -> None:
    """The device page of the entity's device (its sensors and diagnostics)."""
    device_id = await render_template(info, f"{{{{ device_id('{entity_id}') }}}}")
    await page.goto(f"{info.url}config/devices/device/{device_id}")


async def render_template(info: DemoInfo, template: str) -> str:
    """A template rendered by Home Assistant's REST API, as the owner."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{info.url}api/template",
            headers={"Authorization": f"Bearer {info.token}"},
            json={"template": template},
        ) as response,
    ):
        assert response.status == 200
        return await response.text()


def sensor_of(update_entity_id: str, key: str) -> str:
    """The device's sensor `key` (update.garden_00_00_firmware, last_update_error →
    sensor.garden_00_00_last_update_error)."""
    device = update_entity_id.removeprefix("update.").removesuffix("_firmware")
    return f"sensor.{device}_{key}"


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
    # Our icons.json leaves the update entities the platform's state icons: where an icon
    # shows (the entities page, tile cards, pickers) it says an update is available.
    shot = screenshots / "e2e-0a-entities-update-available.png"
    assert await entities_page_icon(page, info, device.entity_id, shot) == ICON_AVAILABLE
    dialog = await open_update(
        page, info, device, updates_shot=screenshots / "e2e-0b-updates-page.png"
    )
    # The Updates page and the dialog show the integration's brand, not an icon.
    pictures = await badge_pictures(page, device.entity_id)
    assert pictures, "no badge of the update entity on the Updates page or in the dialog"
    assert all(BRAND_PICTURE in picture for picture in pictures), pictures
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

    shot = screenshots / "e2e-3a-entities-up-to-date.png"
    assert await entities_page_icon(page, info, device.entity_id, shot) == ICON_UP_TO_DATE
    # The result sensors read in words on the device page.
    await device_page(page, info, device.entity_id)
    no_error = page.get_by_text("No error", exact=True).first
    await no_error.wait_for(timeout=30_000)
    await no_error.scroll_into_view_if_needed()
    await page_loaded(page)
    await page.screenshot(path=screenshots / "e2e-3b-device-page-succeeded.png")
    result = await entity_state(info, sensor_of(device.entity_id, "last_update_result"))
    assert result["state"] == "succeeded"
    error = await entity_state(info, sensor_of(device.entity_id, "last_update_error"))
    assert error["state"] == "none"


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
    # The device page says why in words.
    await device_page(page, info, device.entity_id)
    why = page.get_by_text("New firmware did not start", exact=True).first
    await why.wait_for(timeout=30_000)
    await why.scroll_into_view_if_needed()
    await page_loaded(page)
    await page.screenshot(path=screenshots / "e2e-5-device-page-rolled-back.png")
    error = await entity_state(info, sensor_of(device.entity_id, "last_update_error"))
    assert error["state"] == "rolled_back"
    after = await entity_state(info, device.entity_id)
    assert after["attributes"]["in_progress"] is False
    assert after["attributes"]["installed_version"] == installed
    assert demo.fleet is not None
    simulated = demo.fleet.devices[device.fleet.index]
    assert simulated.running_app.version == installed
    assert simulated.image_state() is ImageState.VALID
