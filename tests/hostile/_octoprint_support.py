"""What the hostile tests of the OctoPrint-compatible API share: the gateway (``mk3``
simulated, ``ghost`` offline, one stored file, the access log ``hydrogen serve``
uses), the log check (no ERROR record, traceback or key) and small clients.

The tests: test_octoprint_walk.py (every route with hostile requests),
test_octoprint_push_socket.py (the push socket), test_octoprint_races.py (uploads,
starts, selects, deletes and downloads at once)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from hydrogen.config import AuthConfig, OctoPrintConfig
from hydrogen.gateway import Gateway
from hydrogen.jobs.manager import JobManager
from hydrogen.octoprint.adapter import OctoPrintAdapter
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.printer import PrinterState
from hydrogen.server.accesslog import RedactingAccessLogger
from hydrogen.server.app import create_app
from tests.conftest import ADMIN_KEY, CONTROL_KEY, MONITOR_KEY, make_config
from tests.octoprint_truth.cases import GCODE
from tests.test_octoprint_api import GHOST
from tests.test_printers import sim_printer, wait_state

CONTROL = {"X-Api-Key": CONTROL_KEY}
MONITOR = {"X-Api-Key": MONITOR_KEY}
KEPT = "keep.gcode"
SECRETS = (CONTROL_KEY, MONITOR_KEY, ADMIN_KEY)

#: Each command route's commands and the members each reads.
MEMBERS: dict[str, dict[str, tuple[str, ...]]] = {
    "/api/login": {"": ("passive",)},
    "/api/connection": {"connect": ("port", "baudrate"), "fake_ack": ()},
    "/api/printer/tool": {
        "target": ("targets",),
        "offset": ("offsets",),
        "select": ("tool",),
        "extrude": ("amount", "speed"),
        "flowrate": ("factor",),
    },
    "/api/printer/bed": {"target": ("target",), "offset": ("offset",)},
    "/api/printer/printhead": {
        "jog": ("x", "y", "z", "speed", "absolute"),
        "home": ("axes",),
        "feedrate": ("factor",),
    },
    "/api/printer/command": {"": ("command", "commands")},
    "/api/printer/sd": {"init": ()},
    "/api/job": {"start": (), "cancel": (), "restart": (), "pause": ("action",)},
    "/api/files/local/{name}": {"select": ("print",), "slice": (), "move": ("destination",)},
    "/plugin/appkeys/request": {"": ("app", "user")},
}


#: A well-formed body of each route that acts (a monitor key must get 403 for it).
def fill(path: str, name: str = KEPT) -> str:
    return path.replace("{name}", name).replace("{token}", "unknown").replace("{tail}", "nope")


@pytest.fixture
async def octo(aiohttp_client, tmp_path):
    """The gateway of tests/test_octoprint_api.py (``mk3`` simulated, ``ghost``
    offline) with the access log ``hydrogen serve`` uses, and one stored file."""
    config = make_config(
        tmp_path,
        printers=(sim_printer("mk3"), GHOST),
        octoprint=OctoPrintConfig(default_printer="mk3"),
        # the walk sends thousands of wrong keys; the limit has tests of its own
        auth=AuthConfig(max_failures=1_000_000),
    )
    gateway = Gateway(config)
    printers = PrinterManager(gateway)
    jobs = JobManager(gateway, printers)
    app = create_app(gateway, printers, jobs)
    client = await aiohttp_client(app, server_kwargs={"access_log_class": RedactingAccessLogger})
    client.printers, client.jobs, client.app_ = printers, jobs, app
    mk3 = printers.printers["mk3"]
    await wait_state(mk3, PrinterState.READY)
    async with asyncio.timeout(10):
        while "tool0" not in mk3.temperatures:
            await asyncio.sleep(0.02)
    form = aiohttp.FormData()
    form.add_field("file", GCODE, filename=KEPT)
    assert (await client.post("/api/files/local", data=form, headers=CONTROL)).status == 201
    return client


def adapter_of(client: Any) -> OctoPrintAdapter:
    found = [
        cell.cell_contents
        for r in client.app_.router.routes()
        for cell in (getattr(r.handler, "__closure__", None) or ())
        if isinstance(cell.cell_contents, OctoPrintAdapter)
    ]
    return found[0]


def check_log(caplog: pytest.LogCaptureFixture, context: str, *secrets: str) -> None:
    problems = []
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info or record.levelno >= logging.ERROR or "Traceback" in text:
            problems.append(f"{record.name} {record.levelname}: {text[:300]}")
        for secret in (*SECRETS, *secrets):
            if secret and secret in text:
                problems.append(f"a secret in {record.name}: {text[:300]}")
    assert not problems, f"{context}: " + "\n".join(problems)


async def state_of(client: Any) -> dict[str, Any]:
    job = await (await client.get("/octoprint/mk3/api/job", headers=CONTROL)).json()
    files = sorted(p.name for p in (client.jobs.files.directory).iterdir())
    records = await (await client.get("/api/printers/mk3/jobs", headers=CONTROL)).json()
    return {"job": job["state"], "file": job["job"]["file"]["name"], "files": files, "n": records}


async def login(client: Any, key: str = CONTROL_KEY) -> str:
    answer = await (
        await client.post(
            "/octoprint/mk3/api/login", json={"passive": True}, headers={"X-Api-Key": key}
        )
    ).json()
    return f"{answer['name']}:{answer['session']}"


async def upload(client: Any, name: str, data: bytes, **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    for field, value in fields.items():
        form.add_field(field, value)
    form.add_field("file", data, filename=name)
    async with aiohttp.ClientSession() as session:
        url = client.make_url("/octoprint/mk3/api/files/local")
        async with session.post(url, data=form, headers=CONTROL) as response:
            return response.status, await response.json()


async def jobs_of(client: Any) -> list[dict[str, Any]]:
    """The finished jobs of mk3."""
    answer = await client.get("/api/jobs/history?printer=mk3&limit=500", headers=CONTROL)
    return (await answer.json())["jobs"]


async def cancel_and_settle(client: Any) -> None:
    await client.post("/octoprint/mk3/api/job", json={"command": "cancel"}, headers=CONTROL)
    async with asyncio.timeout(10):
        while (await (await client.get("/api/job", headers=CONTROL)).json())["state"] != (
            "Operational"
        ):
            await asyncio.sleep(0.05)
