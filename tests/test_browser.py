"""The dashboard in a real browser (headless Chromium driven by Playwright).

The gateway runs as a subprocess with its simulated printer ``sim``, exactly as
``hydrogen serve`` runs for a person. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from tests import browser as shared
from tests.browser import (  # noqa: F401 - re-exported: other browser tests import them here
    CHROMIUM,
    CHROMIUM_ARGS,
    KEY,
    MONITOR_KEY,
    WAIT,
    Gateway,
    PageProblems,
    config_with,
    gateway_in,
    job_gcode,
    open_page,
    printer_ready,
    pytestmark,
    running,
    sign_in,
)

with contextlib.suppress(ImportError):  # without playwright, pytestmark skips
    from playwright.async_api import Page, expect


# -- fixtures -------------------------------------------------------------------------------


#: The session's Chromium (tests/browser.py), for the modules that take it from here.
browser = shared.browser


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the module's tests: each signs in on pages of its own, and none
    needs a printer nobody used before (the jobs test, which moves the head, is last)."""
    gw = gateway_in(tmp_path_factory.mktemp("browser"), extra=("--api-key", KEY))
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(autouse=True)
def _gateway_running(request: pytest.FixtureRequest) -> None:
    """The module's gateway is running for each test (the restart test may have failed
    with it stopped)."""
    if "gateway" in request.fixturenames:
        gw = request.getfixturevalue("gateway")
        if not gw.running:
            gw.start()


MONITOR_CONFIG = config_with(("viewer", "monitor", MONITOR_KEY), ("operator", "control", KEY))


@pytest_asyncio.fixture(loop_scope="session")
async def monitor_gateway(browser, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running(gateway_in(tmp_path, MONITOR_CONFIG), browser) as gw:
        yield gw


async def chart_samples(page: Page, name: str = "sim") -> int:
    return await page.evaluate(
        "name => window.hydrogenDashboard.app.cards.get(name).times.length", name
    )


# Predicates are functions, not expression strings: the page's CSP forbids eval.
async def more_samples(page: Page, than: int, name: str = "sim") -> None:
    await page.wait_for_function(
        "([name, than]) => window.hydrogenDashboard.app.cards.get(name).times.length > than",
        arg=[name, than],
        timeout=WAIT,
    )


async def progress_above(page: Page, value: float, name: str = "sim") -> None:
    await page.wait_for_function(
        "([name, value]) => document.querySelector(`[data-printer=${name}] .job-progress`).value"
        " > value",
        arg=[name, value],
        timeout=WAIT,
    )


# -- tests ------------------------------------------------------------------------------------


async def test_sign_in_and_see_live_status(browser, gateway):
    page, problems = await open_page(browser)
    await sign_in(page, gateway)
    cookies = await page.context.cookies()
    session = next(c for c in cookies if c["name"] == "hydrogen_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    # The host panel fills in from status frames and keeps changing.
    await expect(page.locator("#cpu-value")).to_have_text(re.compile(r"\d+(\.\d)?\s%"))
    await expect(page.locator("#mem-sub")).to_contain_text("GiB")
    await expect(page.locator("#uptime")).to_have_text(re.compile(r"\d"))
    first = await page.locator("#gateway-sub").text_content()
    await expect(page.locator("#gateway-sub")).not_to_have_text(first or "")
    # The printer card: state, firmware, temperatures, a chart that grows.
    card = await printer_ready(page)
    await expect(card.locator(".firmware")).to_contain_text("Marlin")
    await expect(card.locator('.heater[data-heater="tool0"] .heater-actual')).to_have_text(
        re.compile(r"^\d+\.\d\s°C$")
    )
    await expect(card.locator('.heater[data-heater="bed"] .heater-actual')).to_contain_text("°C")
    await expect(card.locator(".chart canvas")).to_be_visible()
    await more_samples(page, await chart_samples(page))
    # Notifications arrive live: reconnecting the printer announces itself.
    problems.check()


async def test_set_a_target_and_the_chart_follows(browser, gateway):
    page, problems = await open_page(browser)
    await sign_in(page, gateway)
    card = await printer_ready(page)
    hotend = card.locator('.heater[data-heater="tool0"]')
    await hotend.get_by_label(re.compile("Hotend target")).fill("200")
    await hotend.get_by_role("button", name="Set").click()
    await expect(card.locator(".card-status")).to_contain_text("Hotend target set to 200.0")
    # The next temperature reports carry the new target: the row and the chart follow.
    await expect(hotend).to_have_attribute("data-target", "200")
    await expect(hotend.locator(".heater-target")).to_have_text(re.compile(r"^→ 200\.0\s°C$"))
    await page.wait_for_function(
        """() => {
            const card = window.hydrogenDashboard.app.cards.get('sim');
            const i = card.chartHeaters.indexOf('tool0');
            const target = card.plot.data[2 + 2 * i];
            return target[target.length - 1] === 200;
        }""",
        timeout=WAIT,
    )
    # And the (simulated) hotend heats up.
    await page.wait_for_function(
        "() => window.hydrogenDashboard.app.cards.get('sim').values.get('tool0').actual.at(-1)"
        " > 30",
        timeout=30_000,
    )
    await hotend.get_by_role("button", name="Turn hotend off").click()
    await expect(hotend.locator(".heater-target")).to_have_text("off")
    # The bed gets M140.
    bed = card.locator('.heater[data-heater="bed"]')
    await bed.get_by_label(re.compile("Bed target")).fill("60")
    await bed.get_by_label(re.compile("Bed target")).press("Enter")
    await expect(bed).to_have_attribute("data-target", "60")
    problems.check()


async def test_terminal_sends_commands_and_shows_replies(browser, gateway):
    page, problems = await open_page(browser)
    await sign_in(page, gateway)
    card = await printer_ready(page)
    await card.locator(".terminal summary").click()
    command = card.get_by_label("G-code")
    await expect(command).to_be_focused()
    await command.fill("M114")
    await command.press("Enter")
    log = card.locator(".term-log")
    await expect(log.locator(".term-line.send", has_text="M114").first).to_be_visible()
    await expect(log.locator(".term-line.recv", has_text="X:0.00 Y:0.00").first).to_be_visible()
    await expect(log.locator(".term-line.info", has_text="M114: done")).to_be_visible()
    # Firmware text is shown as text, never as markup.
    await command.fill("M118 <b>bold</b><img src=x onerror=alert(1)>")
    await command.press("Enter")
    await expect(log.locator(".term-line.recv", has_text="<b>bold</b>").first).to_be_visible()
    assert await log.locator("b, img").count() == 0
    # History: up recalls, down goes back to the empty line.
    await command.press("ArrowUp")
    await expect(command).to_have_value(re.compile("^M118"))
    await command.press("ArrowUp")
    await expect(command).to_have_value("M114")
    await command.press("ArrowDown")
    await command.press("ArrowDown")
    await expect(command).to_have_value("")
    # An unknown command: the firmware's complaint appears.
    await command.fill("M9999")
    await command.press("Enter")
    await expect(log.locator(".term-line", has_text="Unknown command").first).to_be_visible()
    problems.check()


async def test_emergency_stop_needs_no_confirmation(browser, gateway):
    page, problems = await open_page(browser)
    await sign_in(page, gateway)
    card = await printer_ready(page)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    # The top bar's stop button is on screen even when scrolled to the bottom.
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    await expect(page.locator("#estop-all")).to_be_in_viewport()
    await card.get_by_role("button", name="Emergency stop sim").click()
    await expect(card.locator(".state-badge")).to_have_attribute("data-state", "error")
    await expect(page.locator(".toast", has_text="emergency stop").first).to_be_visible()
    await expect(page.locator("#notification-list")).to_contain_text("emergency stop (M112)")
    assert not dialogs
    assert not await page.locator("#confirm-dialog").is_visible()
    # Back to work.
    await card.get_by_role("button", name="Reconnect").click()
    await printer_ready(page)
    problems.check()


async def test_monitor_role_sees_everything_and_no_controls(browser, monitor_gateway):
    page, problems = await open_page(browser)
    await sign_in(page, monitor_gateway, key=MONITOR_KEY)
    card = await printer_ready(page)
    await expect(page.locator("#role-badge")).to_have_text("read-only")
    await expect(card.locator('.heater[data-heater="tool0"] .heater-actual')).to_contain_text("°C")
    # No control anywhere: no E-stop, no target forms, no command line, no upload.
    await expect(page.locator("#estop-all")).to_be_hidden()
    await expect(card.locator(".printer-estop")).to_be_hidden()
    await expect(card.locator(".heater-set").first).to_be_hidden()
    await card.locator(".terminal summary").click()
    await expect(card.locator(".term-form")).to_be_hidden()
    await expect(card.locator(".term-log")).to_be_visible()  # reading is fine
    visible_controls = await page.evaluate(
        "[...document.querySelectorAll('.control')].filter(e => e.offsetParent !== null).length"
    )
    assert visible_controls == 0
    # And the gateway refuses anyway.
    code = await page.evaluate(
        """() => window.hydrogenDashboard.conn
            .request({type: 'command', printer: 'sim', gcode: 'M104 S200'})
            .then(() => 'accepted', (error) => error.code)"""
    )
    assert code == "forbidden"
    problems.check()


async def test_page_reconnects_after_a_gateway_restart(browser, gateway):
    page, problems = await open_page(browser)
    await sign_in(page, gateway)
    await printer_ready(page)
    gateway.stop()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "offline")
    await expect(page.locator("#conn-text")).to_contain_text("retry in")
    gateway.start()  # same port, same state dir: the session cookie is still good
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=40_000)
    await expect(page).to_have_url(gateway.url + "/")
    # Subscriptions were made again: temperatures flow into the chart once more.
    card = await printer_ready(page)
    await more_samples(page, await chart_samples(page))
    await expect(card.locator(".state-badge")).to_have_attribute("data-state", "ready")
    # Connection failures while the gateway was down are the browser's own reports.
    problems.check(allow=r"WebSocket connection to .* failed|Failed to load resource")


async def test_wrong_key_is_refused(browser, gateway):
    page, problems = await open_page(browser)
    await page.goto(gateway.url + "/login")
    await page.get_by_label("API key").fill("not-the-key-0000")
    async with page.expect_response(lambda r: r.url.endswith("/login")) as response_info:
        await page.get_by_role("button", name="Sign in").click()
    assert (await response_info.value).status == 401
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    assert not [c for c in await page.context.cookies() if c["name"] == "hydrogen_session"]
    problems.check(allow=r"status of 401")


@contextlib.asynccontextmanager
async def foreign_site(gateway_port: int) -> AsyncIterator[str]:
    """Another origin (same host, other port) whose page tries the gateway's WebSocket."""
    page = f"""<!doctype html><title>elsewhere</title><script>
      window.result = 'pending';
      const ws = new WebSocket('ws://127.0.0.1:{gateway_port}/', 'hydrogen-protocol');
      ws.onopen = () => {{ window.result = 'open'; }};
      ws.onmessage = (e) => {{ window.result = 'message ' + e.data.slice(0, 40); }};
      ws.onclose = (e) => {{
        if (window.result === 'pending') window.result = 'closed ' + e.code;
      }};
    </script>"""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_another_origin_cannot_use_the_session(browser, gateway):
    page, _ = await open_page(browser)
    await sign_in(page, gateway)
    async with foreign_site(gateway.port) as url:
        other = await page.context.new_page()
        await other.goto(url)
        await other.wait_for_function("() => window.result !== 'pending'", timeout=WAIT)
        assert await other.evaluate("window.result") == "closed 1006"
    # The gateway saw the cookie and refused the handshake because of its Origin.
    metrics = await page.request.get(gateway.url + "/metrics", headers={"X-Api-Key": KEY})
    text = await metrics.text()
    assert re.search(r'hydrogen_connections_refused_total\{reason="forbidden_origin"\} 1', text)
    # The dashboard's own connection is unaffected.
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")


#: For every visible element with text of its own: WCAG contrast of its colour on the
#: first opaque background behind it (4.5:1, or 3:1 for large text). Returns failures.
CONTRAST_CHECK = r"""() => {
  const rgba = (text) => (text.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const node of document.querySelectorAll('body *')) {
    const own = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
    if (!own || !node.getClientRects().length || node.closest('.visually-hidden, .u-legend')) {
      continue;
    }
    const style = getComputedStyle(node);
    if (style.visibility === 'hidden') continue;
    const [a, b] = [lum(rgba(style.color)), lum(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      const text = node.textContent.trim().slice(0, 30);
      failures.push(`${node.className || node.tagName}: ${ratio.toFixed(2)} "${text}"`);
    }
  }
  return failures;
}"""


async def test_text_contrast_meets_wcag_aa(browser, gateway):
    for width, height in ((1280, 800), (375, 812)):
        page, problems = await open_page(browser, width, height)
        await sign_in(page, gateway)
        card = await printer_ready(page)
        await card.locator(".terminal summary").click()
        await card.get_by_label("G-code").fill("M114")
        await card.get_by_label("G-code").press("Enter")
        await expect(card.locator(".term-line.info")).to_be_visible()
        assert await page.evaluate(CONTRAST_CHECK) == []
        # The check itself notices a pale text.
        await page.evaluate("document.getElementById('uptime').style.color = '#bbbbbb'")
        assert any("value" in f for f in await page.evaluate(CONTRAST_CHECK))
        problems.check()
        await page.context.close()


async def test_phone_layout_fits_and_keeps_the_stop_button_on_screen(browser, gateway, tmp_path):
    page, problems = await open_page(browser, 375, 812)
    await sign_in(page, gateway)
    await printer_ready(page)
    await expect(page.locator(".chart canvas")).to_be_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways on a phone ({width} px)"
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    await expect(page.locator("#estop-all")).to_be_in_viewport()
    # Every button has a name a screen reader can say; every input has a label.
    unnamed = await page.evaluate(
        """() => [...document.querySelectorAll('button, input, select')]
            .filter(e => e.offsetParent !== null && e.type !== 'hidden')
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !(e.textContent || '').trim())
            .map(e => e.outerHTML.slice(0, 80))"""
    )
    assert not unnamed
    await page.screenshot(path=str(tmp_path / "phone.png"))
    problems.check()


# -- jobs -------------------------------------------------------------------------------------


async def jobs_available(page: Page, gateway: Gateway) -> bool:
    response = await page.request.get(gateway.url + "/api/files", headers={"X-Api-Key": KEY})
    return response.status == 200


async def test_jobs_upload_start_pause_resume_cancel(browser, gateway, tmp_path):
    page, problems = await open_page(browser)
    await sign_in(page, gateway)
    if not await jobs_available(page, gateway):
        pytest.skip("the gateway has no jobs API (GET /api/files is not there)")
    card = await printer_ready(page)
    files = page.locator("#files-panel")
    await expect(files).to_be_visible()
    # Upload with the file picker...
    part = tmp_path / "part.gcode"
    part.write_bytes(job_gcode(300))
    await page.locator("#file-input").set_input_files(str(part))
    await expect(page.locator("#upload-status")).to_have_text("Uploaded part.gcode.")
    await expect(files.locator(".file", has_text="part.gcode")).to_be_visible()
    # ...and by dropping a file on the drop zone.
    await page.evaluate(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(['G28\\nG1 X10\\n'], 'dropped.gcode'));
            const zone = document.getElementById('dropzone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }"""
    )
    await expect(files.locator(".file", has_text="dropped.gcode")).to_be_visible()
    # Start: the job panel shows the file and progress that moves.
    await files.get_by_role("button", name="Print part.gcode").click()
    job = card.locator(".job")
    await expect(job.locator(".job-state")).to_have_text("Printing")
    await expect(job.locator(".job-file")).to_have_text("part.gcode")
    await progress_above(page, 0.05)
    await expect(job.locator(".job-elapsed")).to_have_text(re.compile(r"^\d+s$|^\d+m \d\ds$"))
    # Pause asks first; saying no changes nothing.
    await job.get_by_role("button", name="Pause").click()
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Keep going").click()
    await expect(dialog).to_be_hidden()
    await expect(job.locator(".job-state")).to_have_text("Printing")
    await job.get_by_role("button", name="Pause").click()
    await dialog.get_by_role("button", name="Pause").click()
    await expect(job.locator(".job-state")).to_have_text("Paused")
    # Lines already in flight still finish; after that, nothing moves.
    await page.wait_for_timeout(1000)
    paused_at = await job.locator(".job-progress").evaluate("e => e.value")
    await page.wait_for_timeout(1500)
    assert await job.locator(".job-progress").evaluate("e => e.value") == paused_at
    await job.get_by_role("button", name="Resume").click()
    await dialog.get_by_role("button", name="Resume").click()
    await expect(job.locator(".job-state")).to_have_text("Printing")
    await progress_above(page, paused_at)
    await job.get_by_role("button", name="Cancel job").click()
    await dialog.get_by_role("button", name="Cancel job").click()
    await expect(job.locator(".job-state")).to_have_text("Cancelled")
    await expect(job.locator(".job-actions")).to_be_hidden()
    # A finished print goes to notifications too.
    await expect(page.locator("#notification-list")).to_contain_text("part.gcode")
    problems.check()
