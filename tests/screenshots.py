"""Make the README's dashboard screenshots: ``python -m tests.screenshots [OUT_DIR]``.

Starts a gateway with its simulated printer, heats it, starts a print and types
a few commands, then photographs the page at desktop (1280x800) and phone
(375x812) sizes into ``docs/screenshots/`` (or OUT_DIR). Needs what
``tests/test_browser.py`` needs: playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright, expect

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, KEY, Gateway, job_gcode, sign_in

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


async def prepare(page, tmp: Path) -> None:
    card = page.locator('article[data-printer="sim"]')
    await expect(card.locator(".state-badge")).to_have_attribute("data-state", "ready")
    for heater, value in (("tool0", "210"), ("bed", "60")):
        row = card.locator(f'.heater[data-heater="{heater}"]')
        await row.locator("input").fill(value)
        await row.get_by_role("button", name="Set").click()
    part = tmp / "benchy.gcode"
    part.write_bytes(job_gcode(4000, dwell_ms=40))
    await page.locator("#file-input").set_input_files(str(part))
    await expect(page.locator(".file", has_text="benchy.gcode")).to_be_visible()
    (tmp / "calibration-cube.gcode").write_bytes(job_gcode(50))
    await page.locator("#file-input").set_input_files(str(tmp / "calibration-cube.gcode"))
    await expect(page.locator(".file", has_text="calibration-cube.gcode")).to_be_visible()
    await page.wait_for_timeout(25_000)  # a heating curve on the chart
    await page.get_by_role("button", name="Print benchy.gcode").click()
    await expect(card.locator(".job-state")).to_have_text("Printing")
    await page.wait_for_timeout(6_000)


async def dismiss_toasts(page) -> None:
    for button in await page.locator(".toast button").all():
        await button.click()


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        gateway = Gateway(tmp / "state", ["--api-key", KEY])
        gateway.start()
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                desktop = await browser.new_page(viewport={"width": 1280, "height": 800})
                await sign_in(desktop, gateway)
                await prepare(desktop, tmp)
                await desktop.mouse.move(0, 0)
                await dismiss_toasts(desktop)
                await desktop.screenshot(path=str(out / "dashboard-desktop.png"))
                phone = await browser.new_page(viewport={"width": 375, "height": 812})
                await sign_in(phone, gateway)
                card = phone.locator('article[data-printer="sim"]')
                await expect(card.locator(".job-state")).to_have_text("Printing")
                await phone.wait_for_timeout(3_000)
                await dismiss_toasts(phone)
                await phone.screenshot(path=str(out / "dashboard-phone.png"))
                await browser.close()
        finally:
            gateway.stop()
    print(f"wrote {out / 'dashboard-desktop.png'} and {out / 'dashboard-phone.png'}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
