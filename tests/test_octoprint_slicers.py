"""The requests slicers send to an OctoPrint host, replayed against the gateway.

Not the slicers themselves (they are desktop programs): the sequences their OctoPrint
connections are documented to send, with what each step needs from the answer.
"""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import CONTROL_KEY
from tests.octoprint_truth.cases import GCODE
from tests.test_octoprint_api import octoprint_gateway

KEY = {"X-Api-Key": CONTROL_KEY}


async def wait_state(client, root: str, state: str) -> None:
    async with asyncio.timeout(10):
        while (await (await client.get(f"{root}/api/job", headers=KEY)).json())["state"] != state:
            await asyncio.sleep(0.05)


async def test_prusaslicer_send_and_print(gateway_client):
    """PrusaSlicer's (and OrcaSlicer's, SuperSlicer's) OctoPrint host: "Test" is
    ``GET /api/version`` (``text`` must start with "OctoPrint"), "Upload and print" a
    multipart ``file`` with ``path`` and ``print`` fields."""
    _, client = await octoprint_gateway(gateway_client)
    version = await client.get("/octoprint/mk3/api/version", headers=KEY)
    assert version.status == 200
    assert (await version.json())["text"].startswith("OctoPrint")
    form = aiohttp.FormData()
    form.add_field("path", "")
    form.add_field("print", "true")
    form.add_field("file", GCODE, filename="benchy.gcode")
    response = await client.post("/octoprint/mk3/api/files/local", data=form, headers=KEY)
    assert response.status == 201, await response.text()
    await wait_state(client, "/octoprint/mk3", "Printing")
    wrong = await client.get("/octoprint/mk3/api/version", headers={"X-Api-Key": "typo"})
    assert wrong.status == 403  # what PrusaSlicer reports as a wrong key


async def test_cura_connect_and_print(gateway_client):
    """Cura's OctoPrint connection: it probes for application keys (the flow itself is
    tests/test_octoprint_clients.py's), checks the key, reads the settings it shows
    (webcam, SD support, the instance's name), the printer profile, polls printer and
    job, and uploads with ``select`` and ``print``."""
    _, client = await octoprint_gateway(gateway_client)
    root = "/octoprint/mk3"
    probe = await client.get(f"{root}/plugin/appkeys/probe")
    assert probe.status == 204
    user = await (await client.get(f"{root}/api/currentuser", headers=KEY)).json()
    assert "PRINT" in user["permissions"]
    settings = await (await client.get(f"{root}/api/settings", headers=KEY)).json()
    assert settings["webcam"]["webcamEnabled"] is False
    assert settings["feature"]["sdSupport"] is False
    assert settings["appearance"]["name"] == "mk3"
    profiles = (await (await client.get(f"{root}/api/printerprofiles", headers=KEY)).json())[
        "profiles"
    ]
    assert profiles["mk3"]["heatedBed"] is True
    printer = await (await client.get(f"{root}/api/printer", headers=KEY)).json()
    assert printer["state"]["flags"]["ready"] is True
    form = aiohttp.FormData()
    form.add_field("select", "true")
    form.add_field("print", "true")
    form.add_field("file", GCODE, filename="cura.gcode")
    response = await client.post(f"{root}/api/files/local", data=form, headers=KEY)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["effectiveSelect"] is True and body["effectivePrint"] is True
    await wait_state(client, root, "Printing")
    job = await (await client.get(f"{root}/api/job", headers=KEY)).json()
    assert job["job"]["file"]["name"] == "cura.gcode"
    assert 0 <= job["progress"]["completion"] <= 100
    response = await client.post(f"{root}/api/job", json={"command": "cancel"}, headers=KEY)
    assert response.status == 204
