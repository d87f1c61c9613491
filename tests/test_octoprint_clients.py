"""Real OctoPrint client libraries against a running gateway.

``pyoctoprintapi`` (what Home Assistant's OctoPrint integration uses) and ``octorest``
run in a venv of their own, ``.venv/clients`` (as .ci/run makes it: their pins must
not change the gateway's environment), as subprocesses driving a gateway on a real
loopback port: tests/octoprint_clients/drive_*.py make every call the library has
that OctoPrint's core answers and print each outcome. A call that fails must be one
of the few listed here with the reason (docs/octoprint.md lists the same).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hydrogen.config import ApiKey
from hydrogen.protocol import Role
from tests.conftest import CONTROL_KEY
from tests.octoprint_truth.cases import GCODE
from tests.test_octoprint_api import octoprint_gateway

KEY = {"X-Api-Key": CONTROL_KEY}
ROOT = Path(__file__).resolve().parent.parent
CLIENTS_PYTHON = ROOT / ".venv" / "clients" / "bin" / "python"
DRIVERS = Path(__file__).with_name("octoprint_clients")
INSTALL_HINT = (
    "python3 -m venv .venv/clients && .venv/clients/bin/python -m pip install "
    "'pyoctoprintapi==0.1.14' 'octorest==0.4' (what .ci/run does)"
)

#: Calls that fail against Hydrogen, and why that is right (or not done yet).
PYOCTOPRINTAPI_FAILS = {
    "restart": "no system commands: Hydrogen does not restart or shut down its host",
    "reboot_system": "no system commands",
    "shutdown": "no system commands",
}
OCTOREST_FAILS = {
    "sd": "no SD card support: 404, as OctoPrint answers with SD support disabled",
}


@pytest.fixture(scope="session")
def clients_python() -> str:
    if not CLIENTS_PYTHON.exists():
        pytest.skip(f"the OctoPrint client libraries are not installed: {INSTALL_HINT}")
    check = subprocess.run(
        [str(CLIENTS_PYTHON), "-c", "import pyoctoprintapi, octorest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        pytest.skip(f"the OctoPrint client libraries do not import ({check.stderr.strip()})")
    return str(CLIENTS_PYTHON)


async def drive(python: str, script: str, *args: str) -> dict[str, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        python,
        str(DRIVERS / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    results = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return {r["call"]: r for r in results}


def outcome(results: dict[str, dict[str, Any]], expected_fails: dict[str, str]) -> list[str]:
    wrong = [
        f"{name}: {r.get('error')}"
        for name, r in results.items()
        if not r["ok"] and name not in expected_fails
    ]
    wrong += [
        f"{name}: passed, but is listed as failing"
        for name in expected_fails
        if results.get(name, {}).get("ok")
    ]
    return wrong


async def start_print(client) -> None:
    form = aiohttp.FormData()
    form.add_field("print", "true")
    form.add_field("file", GCODE, filename="ha.gcode")
    headers = {"X-Api-Key": CONTROL_KEY}
    response = await client.post("/octoprint/mk3/api/files/local", data=form, headers=headers)
    assert response.status == 201, await response.text()
    async with asyncio.timeout(10):
        while (await (await client.get("/api/job", headers=headers)).json())["state"] != "Printing":
            await asyncio.sleep(0.05)


async def test_home_assistants_library_makes_every_call(gateway_client, clients_python):
    """pyoctoprintapi against mk3's own URL, with a print running so that pause,
    resume and cancel have a job to act on."""
    _, client = await octoprint_gateway(gateway_client)
    await start_print(client)
    url = str(client.make_url("/octoprint/mk3/"))
    results = await drive(clients_python, "drive_pyoctoprintapi.py", url, CONTROL_KEY)
    assert not outcome(results, PYOCTOPRINTAPI_FAILS), "\n".join(
        outcome(results, PYOCTOPRINTAPI_FAILS)
    )
    printer = results["get_printer_info"]["value"]
    assert printer["state"]["flags"]["printing"] is True
    assert printer["has_heated_bed"] is True
    assert {t["name"] for t in printer["temperatures"]} >= {"tool0", "bed"}
    job = results["get_job_info"]["value"]
    assert job["job"]["file"]["name"] == "ha.gcode"
    assert job["state"] == "Printing"
    assert results["get_webcam_info"]["value"]["enabled"] is False
    print(f"pyoctoprintapi: {sum(r['ok'] for r in results.values())}/{len(results)} calls")


async def test_octorest_makes_every_call(gateway_client, clients_python, tmp_path):
    """octorest against the default printer (it keeps only the URL's host)."""
    _, client = await octoprint_gateway(gateway_client)
    gcode = tmp_path / "rest.gcode"
    gcode.write_bytes(GCODE)
    url = str(client.make_url("/")).rstrip("/")
    results = await drive(clients_python, "drive_octorest.py", url, CONTROL_KEY, str(gcode))
    core = {name: r for name, r in results.items() if r["core"]}
    assert not outcome(core, OCTOREST_FAILS), "\n".join(outcome(core, OCTOREST_FAILS))
    # the rest (users, timelapses, slicing, ...): refused as a client error, never a 5xx
    server_errors = [
        f"{name}: {r.get('error')}"
        for name, r in results.items()
        if not r["core"] and not r["ok"] and not re.search(r"\(4\d\d\)$", r["error"])
    ]
    assert not server_errors, "\n".join(server_errors)
    assert results["job_info"]["value"]["job"]["file"]["name"] == "rest.gcode"
    assert results["state"]["value"] == "Operational"
    assert "tool0" in results["tool"]["value"]
    print(
        f"octorest: {sum(r['ok'] for r in core.values())}/{len(core)} calls of OctoPrint's core, "
        f"{sum(r['ok'] for r in results.values())}/{len(results)} of all it has"
    )


ADMIN_KEY = "admin-key-0123456789"
MONITOR_KEY = "monitor-key-0123456789"


async def appkey_gateway(gateway_client):
    return await octoprint_gateway(
        gateway_client,
        keys=(
            ApiKey(CONTROL_KEY, Role.CONTROL, "ctl"),
            ApiKey(ADMIN_KEY, Role.ADMIN, "adm"),
            ApiKey(MONITOR_KEY, Role.MONITOR, "viewer"),
        ),
    )


async def waiting_requests(client, headers) -> list[dict[str, Any]]:
    async with asyncio.timeout(30):
        while not (
            waiting := (await (await client.get("/api/appkeys", headers=headers)).json())[
                "requests"
            ]
        ):
            await asyncio.sleep(0.05)
    return waiting


async def test_home_assistants_setup_gets_a_key_once_an_operator_approves(
    gateway_client, clients_python
):
    """``request_app_key`` (probe, request, poll) while a control user approves over the
    API: the app gets a control key for mk3 alone, named after it; a read-only user can
    neither see nor decide the request. (tests/test_browser_appkeys.py approves from
    the dashboard in a real browser.)"""
    _, client = await appkey_gateway(gateway_client)
    url = str(client.make_url("/octoprint/mk3/"))
    driver = asyncio.create_task(drive(clients_python, "drive_pyoctoprintapi.py", url, "--appkey"))
    waiting = await waiting_requests(client, KEY)
    assert waiting[0]["app"] == "Home Assistant" and waiting[0]["printer"] == "mk3"
    assert waiting[0]["text"].startswith("Home Assistant on 127.0.0.1 asks for access to mk3")
    assert "token" not in waiting[0]  # the app's polling token is the app's alone
    handle = waiting[0]["appkey"]
    viewer = {"X-Api-Key": MONITOR_KEY}
    assert (await client.get("/api/appkeys", headers=viewer)).status == 403
    refused = await client.post(f"/api/appkeys/{handle}", json={"approve": True}, headers=viewer)
    assert refused.status == 403
    decided = await client.post(f"/api/appkeys/{handle}", json={"approve": True}, headers=KEY)
    assert decided.status == 200, await decided.text()
    again = await client.post(f"/api/appkeys/{handle}", json={"approve": True}, headers=KEY)
    assert again.status == 404  # decided once
    results = await driver
    assert results["request_app_key"]["ok"], results
    assert results["get_printer_info"]["ok"], results
    key = {"X-Api-Key": results["request_app_key"]["value"]}
    assert (await client.post("/api/job", json={"command": "cancel"}, headers=key)).status == 409
    assert (await client.get("/octoprint/ghost/api/job", headers=key)).status == 404
    keys = (await (await client.get("/api/keys", headers={"X-Api-Key": ADMIN_KEY})).json())["keys"]
    name = (await decided.json())["key"]
    assert [(k["role"], k["printers"]) for k in keys if k["name"] == name] == [
        ("control", ["mk3"])
    ], keys
    audit = await client.get("/api/audit", headers={"X-Api-Key": ADMIN_KEY})
    records = [
        (r["identity"], r["target"], r["outcome"])
        for r in (await audit.json())["records"]
        if r["action"] == "appkey_decide"
    ]
    assert records == [
        ("ctl", handle, "not_found"),
        ("ctl", handle, "ok"),
        ("viewer", handle, "forbidden"),
    ]


async def test_a_denied_app_gets_no_key(gateway_client):
    _, client = await appkey_gateway(gateway_client)
    assert (await client.get("/plugin/appkeys/probe")).status == 204
    asked = await client.post("/plugin/appkeys/request", json={"app": "Nosy app"})
    assert asked.status == 201
    answer = await asked.json()
    token = answer["app_token"]
    assert asked.headers["Location"].endswith(f"/plugin/appkeys/request/{token}")
    assert (await client.get(f"/plugin/appkeys/request/{token}")).status == 202
    (waiting,) = (await (await client.get("/api/appkeys", headers=KEY)).json())["requests"]
    # OctoPrint's page for the decision: the dashboard, at this request
    assert answer["auth_dialog"] == str(client.make_url(f"/#appkey-{waiting['appkey']}"))
    denied = await client.post(
        f"/api/appkeys/{waiting['appkey']}", json={"approve": False}, headers=KEY
    )
    assert (await denied.json())["decision"] == "denied"
    assert (await client.get(f"/plugin/appkeys/request/{token}")).status == 404
    # another printer's root does not know this printer's request
    other = await client.post("/octoprint/ghost/plugin/appkeys/request", json={"app": "A"})
    other_token = (await other.json())["app_token"]
    assert (await client.get(f"/octoprint/mk3/plugin/appkeys/request/{other_token}")).status == 404
    # a printer that does not exist takes no requests
    nowhere = await client.post("/octoprint/nowhere/plugin/appkeys/request", json={"app": "A"})
    assert nowhere.status == 404
