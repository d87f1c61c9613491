"""The dashboard while frames pour in: it must not fight its user (issue 11).

Status frames arrive ten times a second (``status.interval = 0.1``) and a print
streams serial lines, while a person types at human speed, reads the terminal,
selects text and answers a confirmation. Frames are counted as Chromium receives
them off the WebSocket, so every test knows it really ran under live updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.browser import (  # noqa: F401 - pytestmark skips without Chromium
    KEY,
    WAIT,
    Gateway,
    close_pages,
    gateway_in,
    job_gcode,
    open_page,
    printer_ready,
    pytestmark,
    sign_in,
)

with contextlib.suppress(ImportError):  # without playwright, pytestmark skips
    from playwright.async_api import Page, expect

#: Milliseconds between key presses: a person typing at a normal pace.
KEY_DELAY = 80

LIVE_CONFIG = textwrap.dedent(
    """
    [status]
    interval = 0.1
    slow_interval = 1.0

    [[printers]]
    name = "sim"
    device = "simulator"
    """
)


@pytest.fixture(scope="module")
def shared_live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = gateway_in(tmp_path_factory.mktemp("live"), LIVE_CONFIG, ("--api-key", KEY))
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def live_gateway(shared_live_gateway: Gateway, browser: Any) -> AsyncIterator[Gateway]:
    """A gateway with its simulated printer and status frames at 10 Hz: the module's
    one, left after each test as the next needs it (no job, no file, heaters off)."""
    gw = shared_live_gateway
    if not gw.running:
        gw.start()
    yield gw
    await close_pages(browser)
    if gw.running:
        await tidy_up(gw)


async def tidy_up(gateway: Gateway) -> None:
    """Cancel the test's print, turn the heaters off and delete the uploaded files."""
    async with aiohttp.ClientSession(gateway.url, headers={"X-Api-Key": KEY}) as http:
        await http.post("/api/printers/sim/job", json={"action": "cancel"})
        async with asyncio.timeout(30):
            while (await (await http.get("/api/printers/sim/job")).json()).get("state") in (
                "printing",
                "paused",
                "queued",
            ):
                await asyncio.sleep(0.05)
        await http.post("/api/printers/sim/command", json={"gcode": "M104 S0\nM140 S0"})
        for file in (await (await http.get("/api/files")).json())["files"]:
            await http.delete(f"/api/files/{file['name']}")


class FrameCounter:
    """Counts the status frames the page receives, as the browser's network layer sees them."""

    def __init__(self, page: Page) -> None:
        self.status = 0
        page.on("websocket", self._watch)

    def _watch(self, ws: Any) -> None:
        ws.on("framereceived", self._frame)

    def _frame(self, payload: Any) -> None:
        if isinstance(payload, bytes):
            return
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if isinstance(frame, dict) and frame.get("type") == "status":
            self.status += 1

    async def wait_for(self, count: int, timeout: float = WAIT / 1000) -> None:
        """Wait until ``count`` more status frames have arrived."""
        target = self.status + count
        deadline = asyncio.get_running_loop().time() + timeout
        while self.status < target:
            assert asyncio.get_running_loop().time() < deadline, (
                f"only {self.status - target + count} of {count} status frames in {timeout} s"
            )
            await asyncio.sleep(0.05)


async def live_page(browser: Any, gateway: Gateway) -> tuple[Page, Any, FrameCounter]:
    page, problems = await open_page(browser)
    frames = FrameCounter(page)
    await sign_in(page, gateway)
    await frames.wait_for(3)
    return page, problems, frames


async def type_like_a_person(page: Page, frames: FrameCounter, field: Any, text: str) -> None:
    """Click into a field and type at 80 ms a key while status frames arrive.

    A status frame is awaited after the first key, so at least one arrives while
    the field is being edited however short the text (``65`` took the old page
    to ``6``); longer texts see one every 100 ms or so.
    """
    await field.click()
    await page.keyboard.type(text[0])
    await frames.wait_for(1)
    await page.keyboard.type(text[1:], delay=KEY_DELAY)
    await expect(field).to_have_value(text)
    await expect(field).to_be_focused()


async def scroll_settled(log: Any, frames: FrameCounter) -> None:
    """Wait until a smooth (wheel) scroll has come to rest."""
    previous = None
    for _ in range(100):
        now = await log.evaluate("log => log.scrollTop")
        if now == previous:
            return
        previous = now
        await frames.wait_for(1)
    raise AssertionError("the terminal never stopped scrolling")


async def start_print(page: Page, tmp_path: Path, lines: int = 2000, dwell_ms: int = 20) -> Any:
    part = tmp_path / "part.gcode"
    part.write_bytes(job_gcode(lines, dwell_ms=dwell_ms))
    await page.locator("#file-input").set_input_files(str(part))
    await expect(page.locator("#upload-status")).to_have_text("Uploaded part.gcode.")
    await page.get_by_role("button", name="Print part.gcode").click()
    card = page.locator('article[data-printer="sim"]')
    await expect(card.locator(".job-state")).to_have_text("Printing")
    return card


# -- typing ---------------------------------------------------------------------------------


async def test_typing_at_human_speed_while_frames_arrive(browser, live_gateway):
    page, problems, frames = await live_page(browser, live_gateway)
    card = await printer_ready(page)
    # The terminal's command line: the whole command arrives, and is sent.
    await card.locator(".terminal summary").click()
    command = card.get_by_label("G-code")
    await type_like_a_person(page, frames, command, "M104 S200")
    await page.keyboard.press("Enter")
    await expect(card.locator(".term-line.info", has_text="M104 S200: done")).to_be_visible()
    # Every heater's target field: the whole number arrives, and becomes the target.
    bed = card.locator('.heater[data-heater="bed"]')
    await type_like_a_person(page, frames, bed.get_by_label(re.compile("Bed target")), "65")
    await page.keyboard.press("Enter")
    await expect(bed).to_have_attribute("data-target", "65")
    hotend = card.locator('.heater[data-heater="tool0"]')
    field = hotend.get_by_label(re.compile("Hotend target"))
    await type_like_a_person(page, frames, field, "215")
    # A live value never overwrites a field being edited: the target changes under it.
    await page.request.post(
        live_gateway.url + "/api/printers/sim/command",
        headers={"X-Api-Key": KEY},
        data={"gcode": "M104 S180"},
    )
    await expect(hotend).to_have_attribute("data-target", "180")
    await frames.wait_for(5)
    await expect(field).to_have_value("215")
    await expect(field).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(hotend).to_have_attribute("data-target", "215")
    problems.check()


# -- the terminal during a print ------------------------------------------------------------

#: Where the reader is: the first line at least half in view, marked, and its offset.
MARK_TOP_LINE = """log => {
  const rows = [...log.querySelectorAll('.term-line')];
  const row = rows.find((r) => r.offsetTop + r.offsetHeight / 2 >= log.scrollTop);
  row.dataset.mark = 'reading';
  return {offset: row.offsetTop - log.scrollTop, text: row.textContent, scrollTop: log.scrollTop};
}"""

WHERE_IS_MARK = """log => {
  const row = log.querySelector('[data-mark=reading]');
  return row ? {offset: row.offsetTop - log.scrollTop, scrollTop: log.scrollTop} : null;
}"""

DISTANCE_FROM_BOTTOM = "log => log.scrollHeight - log.scrollTop - log.clientHeight"


async def test_terminal_keeps_the_readers_place_during_a_print(browser, live_gateway, tmp_path):
    page, problems, frames = await live_page(browser, live_gateway)
    card = await printer_ready(page)
    await card.locator(".terminal summary").click()
    log = card.locator(".term-log")
    await start_print(page, tmp_path)
    # Enough lines to scroll; the log follows them while the reader is at the bottom.
    await expect(log.locator(".term-line").nth(120)).to_be_attached()
    await page.wait_for_function(
        f"() => ({DISTANCE_FROM_BOTTOM})(document.querySelector('.term-log')) <= 2",
        timeout=WAIT,
    )
    # Scroll up with the mouse wheel, as a person would, and note what is in view.
    await log.hover()
    await page.mouse.wheel(0, -400)
    await page.wait_for_function(
        f"() => ({DISTANCE_FROM_BOTTOM})(document.querySelector('.term-log')) > 200",
        timeout=WAIT,
    )
    await scroll_settled(log, frames)
    mark = await log.evaluate(MARK_TOP_LINE)
    # Lines and frames keep coming; the line being read stays put.
    await frames.wait_for(30)
    where = await log.evaluate(WHERE_IS_MARK)
    assert where is not None, "the line being read was removed"
    assert abs(where["offset"] - mark["offset"]) <= 2, (mark, where)
    assert where["scrollTop"] > 0
    more = card.locator(".term-more")
    await expect(more).to_be_visible()
    await expect(more).to_have_text(re.compile(r"^↓ [\d,]+ new lines?$"))
    # Back to the bottom: the log follows again and the button goes.
    await more.click()
    await expect(more).to_be_hidden()
    await log.locator(".term-line:last-child").evaluate("r => (r.dataset.last = '1')")
    await page.wait_for_function(
        "() => !document.querySelector('.term-log .term-line:last-child[data-last]')",
        timeout=WAIT,
    )
    await frames.wait_for(5)
    assert await log.evaluate(DISTANCE_FROM_BOTTOM) <= 2
    await expect(more).to_be_hidden()
    problems.check()


# -- dialogs, selections, focus -----------------------------------------------------------


async def test_confirm_dialog_stays_open_across_frames(browser, live_gateway, tmp_path):
    page, problems, frames = await live_page(browser, live_gateway)
    card = await printer_ready(page)
    await start_print(page, tmp_path)
    pause = card.get_by_role("button", name="Pause")
    await pause.click()
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await frames.wait_for(20)
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#confirm-message")).to_contain_text("sim (part.gcode)")
    await expect(dialog.get_by_role("button", name="Keep going")).to_be_focused()
    # Saying no: the print goes on, and focus is back on the button that asked.
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_hidden()
    await expect(pause).to_be_focused()
    await frames.wait_for(5)
    await expect(pause).to_be_focused()
    await expect(card.locator(".job-state")).to_have_text("Printing")
    problems.check()


async def test_badge_says_printing_while_the_job_prints(browser, live_gateway, tmp_path):
    page, problems, frames = await live_page(browser, live_gateway)
    card = await printer_ready(page)
    badge = card.locator(".state-badge")
    await start_print(page, tmp_path)
    await expect(badge).to_have_text("Printing")
    await expect(badge).to_have_attribute("data-state", "printing")
    await frames.wait_for(20)  # and it stays so, frame after frame
    await expect(badge).to_have_text("Printing")
    await expect(card.locator(".state-reason")).to_be_hidden()
    dialog = page.locator("#confirm-dialog")
    await card.get_by_role("button", name="Pause").click()
    await dialog.get_by_role("button", name="Pause").click()
    await expect(badge).to_have_text("Paused")
    await expect(badge).to_have_attribute("data-state", "paused")
    await card.get_by_role("button", name="Cancel job").click()
    await dialog.get_by_role("button", name="Cancel job").click()
    await expect(card.locator(".job-state")).to_have_text("Cancelled")
    # The job is over: the badge is the printer's own state again.
    await expect(badge).to_have_attribute("data-state", re.compile("^(ready|busy)$"))
    problems.check()


async def test_selection_and_focus_survive_frames(browser, live_gateway, tmp_path):
    page, problems, frames = await live_page(browser, live_gateway)
    card = await printer_ready(page)
    await expect(card.locator(".firmware")).to_contain_text("Marlin")
    # Select the firmware line with the mouse, as to copy it.
    box = await card.locator(".firmware").bounding_box()
    assert box is not None
    middle = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + 1, middle)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] - 1, middle, steps=5)
    await page.mouse.up()
    selected = await page.evaluate("() => getSelection().toString()")
    assert selected.startswith("Firmware: Marlin"), selected
    await frames.wait_for(20)
    assert await page.evaluate("() => getSelection().toString()") == selected
    # Focus on a file's Print button stays there when another file arrives.
    first = tmp_path / "first.gcode"
    first.write_bytes(job_gcode(5))
    await page.locator("#file-input").set_input_files(str(first))
    print_first = page.get_by_role("button", name="Print first.gcode")
    await expect(print_first).to_be_visible()
    await print_first.focus()
    second = tmp_path / "second.gcode"
    second.write_bytes(job_gcode(5))
    await page.locator("#file-input").set_input_files(str(second))
    await expect(page.get_by_role("button", name="Print second.gcode")).to_be_visible()
    await frames.wait_for(5)
    await expect(print_first).to_be_focused()
    problems.check()
