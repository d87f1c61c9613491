"""Who is acting, in the dashboard (issue 14): the signed-in name and role, who started
and cancelled a job, and an admin's keys-and-audit page, in a real headless Chromium
against a real gateway process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio

from tests.browser import (  # noqa: F401 - pytestmark skips without Chromium
    Gateway,
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
    from playwright.async_api import expect

ADMIN_KEY = "browser-admin-key-5f2a91"
OPERATOR_KEY = "browser-operator-key-0c7d3e"

FARM_CONFIG = config_with(("boss", "admin", ADMIN_KEY), ("operator", "control", OPERATOR_KEY))


@pytest_asyncio.fixture(loop_scope="session")
async def farm(browser, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A fresh gateway per test: the audit log's filters count every record."""
    async with running(gateway_in(tmp_path, FARM_CONFIG), browser) as gw:
        yield gw


async def status_with(gateway: Gateway, key: str) -> int:
    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{gateway.url}/api/printers", headers={"X-Api-Key": key})
        return response.status


async def test_an_admin_manages_keys_and_reads_the_audit_log(browser, farm):
    page, problems = await open_page(browser)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=farm.url)
    await sign_in(page, farm, ADMIN_KEY)
    await expect(page.locator("#who")).to_have_text("boss")
    await expect(page.locator("#role-badge")).to_have_text("admin")
    await page.get_by_role("link", name="Keys & audit").click()
    await expect(page).to_have_url(farm.url + "/admin")
    keys = page.locator("#keys-body")
    await expect(keys.locator("tr")).to_have_count(2)  # the configuration's, not changeable here
    await expect(keys.get_by_role("button", name="Revoke")).to_have_count(0)

    # Create a key for a contractor who may touch only 'sim': its secret is shown once.
    await page.get_by_label("Name").fill("contractor")
    await page.get_by_label("Role").select_option("control")
    await page.get_by_label("Only these:").check()
    await page.locator("#scope-printers").get_by_label("sim").check()
    await page.get_by_role("button", name="Create key").click()
    secret_box = page.locator("#secret-box")
    await expect(secret_box).to_be_visible()
    secret = (await page.locator("#secret-value").text_content()).strip()
    assert len(secret) >= 20
    await secret_box.get_by_role("button", name="Copy").click()
    await expect(page.locator("#secret-copied")).to_have_text("Copied.")
    assert await page.evaluate("() => navigator.clipboard.readText()") == secret
    row = keys.locator('tr[data-key="contractor"]')
    await expect(row.locator(".key-printers")).to_have_text("sim")
    assert await status_with(farm, secret) == 200
    await secret_box.get_by_role("button", name="Done").click()
    await expect(secret_box).to_be_hidden()
    assert await page.locator("#secret-value").text_content() == ""  # gone, not hidden

    # Rotate: a new secret, and the old one stops working.
    await row.get_by_role("button", name="Rotate").click()
    await page.locator("#confirm-dialog").get_by_role("button", name="Rotate").click()
    await expect(secret_box).to_be_visible()
    rotated = (await page.locator("#secret-value").text_content()).strip()
    assert rotated and rotated != secret
    assert await status_with(farm, secret) == 401
    assert await status_with(farm, rotated) == 200
    await secret_box.get_by_role("button", name="Done").click()

    # Revoke: the key is gone from the list and refused.
    await row.get_by_role("button", name="Revoke").click()
    await page.locator("#confirm-dialog").get_by_role("button", name="Revoke").click()
    await expect(row).to_have_count(0)
    assert await status_with(farm, rotated) == 401

    # The audit log showed each change as it happened, by whom, and no secret.
    audit = page.locator("#audit-body")
    for action in ("key_add", "key_rotate", "key_revoke"):
        line = audit.locator("tr", has=page.locator(".audit-action", has_text=action))
        await expect(line.locator(".audit-who")).to_have_text("boss")
        await expect(line.locator(".audit-target")).to_have_text("contractor")
    text = await audit.text_content()
    assert secret not in text and rotated not in text
    # Filters: another identity's records only.
    assert await status_with(farm, "not-a-key") == 401
    async with aiohttp.ClientSession() as http:  # an action by the operator, over HTTP
        await http.post(
            f"{farm.url}/api/printers/sim/command",
            json={"gcode": "M105"},
            headers={"X-Api-Key": OPERATOR_KEY},
        )
    await page.get_by_label("Who").fill("operator")
    await page.get_by_role("button", name="Search").click()
    await expect(audit.locator("tr")).to_have_count(1)
    await expect(audit.locator(".audit-action")).to_have_text("command")
    await expect(audit.locator(".audit-target")).to_have_text("M105")
    problems.check()


async def test_the_job_panel_and_history_say_who_started_and_cancelled(browser, farm, tmp_path):
    page, problems = await open_page(browser)
    await sign_in(page, farm, OPERATOR_KEY)
    await expect(page.locator("#who")).to_have_text("operator")
    await expect(page.locator("#role-badge")).to_have_text("control")
    await expect(page.locator("#admin-link")).to_be_hidden()
    card = await printer_ready(page)
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", job_gcode(400), filename="bracket.gcode")
        response = await http.post(
            f"{farm.url}/api/files", data=form, headers={"X-Api-Key": OPERATOR_KEY}
        )
        assert response.status == 201
        response = await http.post(
            f"{farm.url}/api/printers/sim/job",
            json={"action": "start", "file": "bracket.gcode"},
            headers={"X-Api-Key": OPERATOR_KEY},
        )
        assert response.status == 201
        job = card.locator(".job")
        await expect(job.locator(".job-state")).to_have_text("Printing")
        await expect(job.locator(".job-who")).to_have_text("Started by operator")
        response = await http.post(
            f"{farm.url}/api/printers/sim/job",
            json={"action": "cancel"},
            headers={"X-Api-Key": ADMIN_KEY},
        )
        assert response.status == 200
    await expect(job.locator(".job-state")).to_have_text("Cancelled")
    await expect(job.locator(".job-who")).to_have_text("Started by operator · cancelled by boss")
    entry = page.locator("#history-list .history-item", has_text="bracket.gcode")
    await expect(entry.locator(".history-who")).to_have_text(
        "Started by operator · cancelled by boss"
    )
    await expect(entry.locator(".badge")).to_have_text("Cancelled")
    # An operator is not an admin: the keys-and-audit page says so and shows nothing.
    await page.goto(farm.url + "/admin")
    await expect(page.locator("#not-admin")).to_be_visible()
    await expect(page.locator("#keys-panel")).to_be_hidden()
    problems.check()
