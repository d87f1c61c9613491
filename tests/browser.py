"""What the dashboard's browser tests share (tests/test_browser*.py): one headless
Chromium for the whole session, driven by Playwright; gateway subprocesses with the
simulated printer ``sim``, exactly as ``hydrogen serve`` runs for a person; and the
page helpers (sign in, wait for the printer, a G-code file that prints for a while).

Every browser test runs on the session's event loop (``pytestmark``), the loop the
shared Chromium was started on. Each test gets the browser through the ``browser``
fixture, which closes the contexts (pages, cookies) the test opened once it ends.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.process import GatewayProcess, start_gateway

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        async_playwright is None or not os.path.exists(CHROMIUM),
        reason=f"needs the playwright package and Chromium at {CHROMIUM} "
        "(pip install playwright; apt-get install chromium)",
    ),
    # the loop the session's Chromium lives on
    pytest.mark.asyncio(loop_scope="session"),
]

KEY = "browser-control-key-0123"
MONITOR_KEY = "browser-monitor-key-0123"
#: Milliseconds for one expectation in the page (the simulated printer takes ~1 s to connect).
WAIT = 15_000


# -- the browser ----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """One Chromium for the session (tests/conftest.py makes it a session fixture)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def browser(chromium: Browser) -> AsyncIterator[Browser]:
    """The session's Chromium; what a test opened in it is closed after the test."""
    yield chromium
    await close_pages(chromium)


async def close_pages(browser: Browser) -> None:
    """Close every context (its pages, cookies and WebSockets)."""
    for context in list(browser.contexts):
        await context.close()


# -- gateways -------------------------------------------------------------------------------


class Gateway:
    """A gateway subprocess that can be restarted on the same port and state dir."""

    def __init__(self, state_dir: Path, extra: list[str]) -> None:
        self.state_dir = state_dir
        self.extra = extra
        self.process: GatewayProcess | None = None
        self.port = 0

    def start(self) -> None:
        args = ["--host", "127.0.0.1", "--state-dir", str(self.state_dir), *self.extra]
        if self.port:
            args += ["--port", str(self.port)]
        self.process = start_gateway(args)
        self.port = self.process.port

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def config_with(*keys: tuple[str, str, str], printers: tuple[str, ...] = ("sim",)) -> str:
    """A hydrogen.toml with these ``(name, role, key)`` keys and simulated printers."""
    parts = [f'[[keys]]\nname = "{n}"\nrole = "{r}"\nkey = "{k}"\n' for n, r, k in keys]
    parts += [f'[[printers]]\nname = "{p}"\ndevice = "simulator"\n' for p in printers]
    return "\n".join(parts)


def gateway_in(directory: Path, config: str | None = None, extra: tuple[str, ...] = ()) -> Gateway:
    """A gateway (not started) with its state in ``directory/state`` and, if given,
    ``config`` as its configuration file ``directory/hydrogen.toml``."""
    args = list(extra)
    if config is not None:
        path = directory / "hydrogen.toml"
        path.write_text(config)
        args = ["--config", str(path), *args]
    return Gateway(directory / "state", args)


@contextlib.asynccontextmanager
async def running(gateway: Gateway, browser: Browser) -> AsyncIterator[Gateway]:
    """Start ``gateway``; at the end close the browser's pages first, so the gateway
    stops with no WebSocket open (an open one makes its shutdown wait half a second to
    flush a last status frame), then stop it."""
    gateway.start()
    try:
        yield gateway
    finally:
        with contextlib.suppress(Exception):
            await close_pages(browser)
        gateway.stop()


# -- pages ----------------------------------------------------------------------------------


class PageProblems(list):
    """Script errors and console errors (a CSP violation shows up as one)."""

    def check(self, allow: str | None = None) -> None:
        problems = [p for p in self if not (allow and re.search(allow, p))]
        assert not problems, problems


async def open_page(
    browser: Browser, width: int = 1280, height: int = 800
) -> tuple[Page, PageProblems]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(WAIT)
    problems = PageProblems()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    return page, problems


async def sign_in(page: Page, gateway: Gateway, key: str = KEY) -> None:
    await page.goto(gateway.url + "/")
    await expect(page).to_have_url(gateway.url + "/login")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(gateway.url + "/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")


async def printer_ready(page: Page, name: str = "sim") -> Any:
    card = page.locator(f'article[data-printer="{name}"]')
    await expect(card.locator(".state-badge")).to_have_attribute("data-state", "ready")
    return card


def job_gcode(lines: int, dwell_ms: int = 60) -> bytes:
    """A print that takes a while on the simulator (G4 dwells) so it can be paused."""
    body = ["; estimated printing time (normal mode) = 1m 0s", "G28", "G90"]
    for i in range(lines):
        body.append(f"G1 X{i % 100} Y{(i * 3) % 100} F3000")
        body.append(f"G4 P{dwell_ms}")
    return ("\n".join(body) + "\n").encode()
