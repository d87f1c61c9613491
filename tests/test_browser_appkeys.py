"""Home Assistant asks for a key and the operator approves it on the dashboard (issue 12).

Real parts end to end: Home Assistant's own OctoPrint library (``pyoctoprintapi``, in
``.venv/clients``) runs its setup's ``request_app_key`` against a gateway process,
and a headless Chromium signed in as an operator sees "Home Assistant on 127.0.0.1
asks for access to sim" appear and clicks Approve; the library then gets its key
and uses it. A read-only user's dashboard never shows the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio

from tests import test_octoprint_clients
from tests.browser import (  # noqa: F401 - pytestmark skips without Chromium
    Gateway,
    config_with,
    gateway_in,
    open_page,
    pytestmark,
    running,
    sign_in,
)
from tests.test_octoprint_clients import drive

with contextlib.suppress(ImportError):  # without playwright, pytestmark skips
    from playwright.async_api import expect

OPERATOR_KEY = "browser-operator-appkeys-1d0e"
VIEWER_KEY = "browser-viewer-appkeys-77c1"

clients_python = test_octoprint_clients.clients_python

FARM_CONFIG = config_with(("operator", "control", OPERATOR_KEY), ("viewer", "monitor", VIEWER_KEY))


@pytest_asyncio.fixture(loop_scope="session")
async def farm(browser, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running(gateway_in(tmp_path, FARM_CONFIG), browser) as gw:
        yield gw


async def test_the_operator_approves_home_assistant_on_the_dashboard(browser, farm, clients_python):
    page, problems = await open_page(browser)
    await sign_in(page, farm, OPERATOR_KEY)
    viewer, _ = await open_page(browser, width=390, height=844)  # a phone
    await sign_in(viewer, farm, VIEWER_KEY)
    panel = page.locator("#appkeys-panel")
    await expect(panel).to_be_hidden()

    setup = asyncio.create_task(
        drive(clients_python, "drive_pyoctoprintapi.py", f"{farm.url}/octoprint/sim/", "--appkey")
    )
    request = panel.locator(".appkey-request")
    await expect(request).to_have_count(1)
    await expect(request.locator(".appkey-text")).to_have_text(
        "Home Assistant on 127.0.0.1 asks for access to sim"
    )
    await expect(request).to_contain_text("as “ha”")
    await request.get_by_role("button", name="Approve Home Assistant for sim").click()
    await expect(panel).to_be_hidden()
    await expect(page.locator("#toasts")).to_contain_text("Home Assistant may now use sim")

    results = await setup
    assert results["request_app_key"]["ok"], results
    assert results["get_printer_info"]["ok"], results
    key = results["request_app_key"]["value"]
    async with aiohttp.ClientSession() as http:
        job = await http.get(f"{farm.url}/octoprint/sim/api/job", headers={"X-Api-Key": key})
        assert job.status == 200
        keys = await http.get(f"{farm.url}/api/keys", headers={"X-Api-Key": key})
        assert keys.status == 403  # a control key, not an admin's

    # the read-only phone never saw it, and a reload shows nothing waiting
    await expect(viewer.locator("#appkeys-panel")).to_be_hidden()
    assert await viewer.locator(".appkey-request").count() == 0
    await page.reload()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    await expect(panel).to_be_hidden()
    assert not problems, problems


async def test_a_denied_request_leaves_every_open_dashboard(browser, farm):
    """Two operators' pages show the request; one denies it; it leaves the other too,
    and the app's poll answers 404."""
    first, problems = await open_page(browser)
    second, _ = await open_page(browser)
    for page in (first, second):
        await sign_in(page, farm, OPERATOR_KEY)
    async with aiohttp.ClientSession() as http:
        asked = await http.post(
            f"{farm.url}/octoprint/sim/plugin/appkeys/request", json={"app": "<b>Nosy</b> app"}
        )
        answer = await asked.json()
        for page in (first, second):
            await expect(page.locator(".appkey-request")).to_have_count(1)
        # the app's name is text, never markup
        await expect(first.locator(".appkey-app")).to_have_text("<b>Nosy</b> app")
        # the auth_dialog link opens the dashboard at this request
        assert answer["auth_dialog"].startswith(farm.url + "/#appkey-")
        await first.get_by_role("button", name="Deny <b>Nosy</b> app").click()
        await expect(second.locator(".appkey-request")).to_have_count(0)
        await expect(second.locator("#toasts")).to_contain_text("request was denied by operator")
        poll = await http.get(
            f"{farm.url}/octoprint/sim/plugin/appkeys/request/{answer['app_token']}"
        )
        assert poll.status == 404
    assert not problems, problems
