"""Hydrogen's OctoPrint API, diffed against what a real OctoPrint answered.

The cases of tests/octoprint_truth/cases.py run against a gateway with a simulated
printer (``mk3``) and one whose port does not exist (``ghost``, the "printer is not
operational" phase), through the same phases as the recording: offline, connected,
a file selected, printing, paused, finished. Each answer's status and JSON shape must
be OctoPrint's (tests/octoprint_truth/octoprint.json), except the few differences
listed in :data:`DIFFERENCES`, each with its reason (docs/octoprint.md says the same).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import aiohttp
import pytest
from yarl import URL

from hydrogen.config import ApiKey, OctoPrintConfig, PrinterConfig
from hydrogen.printers.printer import PrinterState
from hydrogen.protocol import Role
from tests.conftest import ADMIN_KEY as GATEWAY_ADMIN_KEY
from tests.conftest import CONTROL_KEY, MONITOR_KEY
from tests.octoprint_truth.cases import CASES, GCODE, PHASES, Case
from tests.octoprint_truth.record import TRUTH
from tests.octoprint_truth.server import ADMIN_KEY
from tests.octoprint_truth.shapes import diff, shape
from tests.test_printers import sim_printer, wait_state

KEYS = {"admin": CONTROL_KEY, "viewer": MONITOR_KEY, "wrong": "not-a-key", "none": None}
GHOST = PrinterConfig(name="ghost", device="/dev/hydrogen-no-such-port", reconnect=False)

#: Where Hydrogen answers differently from OctoPrint on purpose: case -> why.
DIFFERENCES = {
    # OctoPrint sends str(5) to the printer; a number is no G-code line.
    "command_not_string": "a command that is not a string is refused (400)",
}
#: Members OctoPrint has that Hydrogen leaves out: (case, path) -> why.
LEFT_OUT: dict[tuple[str, str], str] = {}


def truth() -> dict[str, Any]:
    return json.loads(TRUTH.read_text())["cases"]


async def octoprint_gateway(gateway_client, **config: Any) -> Any:
    gateway, client = await gateway_client(
        printers=(sim_printer("mk3"), GHOST),
        octoprint=OctoPrintConfig(default_printer="mk3"),
        **config,
    )
    mk3 = client.printers.printers["mk3"]
    await wait_state(mk3, PrinterState.READY)
    async with asyncio.timeout(10):  # and its first temperature report
        while "tool0" not in mk3.temperatures:
            await asyncio.sleep(0.02)
    return gateway, client


class GatewayRunner:
    """Runs the cases against the gateway: the offline phase on ``ghost``, the rest on
    ``mk3``, each under its ``/octoprint/<printer>`` root."""

    def __init__(self, client) -> None:
        self.client = client

    def root(self, case: Case) -> str:
        return "/octoprint/ghost" if case.phase == "offline" else "/octoprint/mk3"

    async def request(self, case: Case) -> tuple[int, Any]:
        headers = {k: v.replace(ADMIN_KEY, CONTROL_KEY) for k, v in case.headers.items()}
        if KEYS[case.key] is not None:
            headers["X-Api-Key"] = KEYS[case.key]
        path = self.root(case) + case.path.replace(ADMIN_KEY, CONTROL_KEY)
        data: Any = None
        if case.upload is not None:
            data = aiohttp.FormData()
            data.add_field("file", GCODE, filename=case.upload)
        elif case.raw is not None:
            data = case.raw
            headers["Content-Type"] = "application/json"
        elif case.body is not None:
            data = json.dumps(case.body)
            headers["Content-Type"] = "application/json"
        response = await self.client.request(case.method, path, data=data, headers=headers)
        text = await response.text()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text

    async def state(self) -> str:
        status, body = await self.request(Case("state", "GET", "/api/job", "operational"))
        assert status == 200, body
        return body["state"]

    async def heaters(self) -> Any:
        status, body = await self.request(
            Case("heaters", "GET", "/api/printer/tool", "operational")
        )
        return body if status == 200 else {}

    async def enter(self, phase: str) -> None:
        wanted = {
            "offline": None,
            "operational": "Operational",
            "selected": "Operational",
            "printing": "Printing",
            "paused": "Paused",
            "finished": "Operational",
        }[phase]
        if wanted is None:
            return
        if phase == "operational":  # as the recording did: once temperatures are known
            async with asyncio.timeout(20):
                while "tool0" not in (await self.heaters()):
                    await asyncio.sleep(0.05)
        async with asyncio.timeout(20):
            while (now := await self.state()) != wanted:
                assert now != "Error", f"the printer failed entering {phase}"
                await asyncio.sleep(0.05)

    async def run(self) -> dict[str, tuple[int, Any]]:
        answers: dict[str, tuple[int, Any]] = {}
        phase = None
        for case in CASES:
            if case.phase != phase:
                phase = case.phase
                await self.enter(phase)
            answers[case.name] = await self.request(case)
        return answers


def compare(case: Case, recorded: dict[str, Any], status: int, body: Any) -> list[str]:
    lines = []
    if status != recorded["status"]:
        lines.append(f"status {status}, OctoPrint {recorded['status']}: {body}")
    if recorded["shape"] is None or (status >= 400 and status != recorded["status"]):
        return lines
    if case.only and isinstance(body, dict):
        body = {k: v for k, v in body.items() if k in case.only}
    ours = shape(body, case.maps) if body is not None else None
    if ours is None:
        return [*lines, "no body, OctoPrint has one"]
    for line in diff(recorded["shape"], ours, subset=case.subset):
        path = line.split(":", 1)[0]
        if (case.name, path) not in LEFT_OUT:
            lines.append(line)
    return lines


async def test_every_endpoint_answers_as_octoprint_does(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    answers = await GatewayRunner(client).run()
    recorded = truth()
    differences = []
    for case in CASES:
        if case.name in DIFFERENCES:
            continue
        status, body = answers[case.name]
        differences += [
            f"{case.name} ({case.method} {case.path}): {line}"
            for line in compare(case, recorded[case.name], status, body)
        ]
    assert not differences, "\n".join(differences)


async def test_the_deliberate_differences_still_differ(gateway_client):
    """A difference that is no longer one is taken off the list."""
    _, client = await octoprint_gateway(gateway_client)
    runner = GatewayRunner(client)
    await runner.enter("operational")
    recorded = truth()
    for case in CASES:
        if case.name in DIFFERENCES and case.phase == "operational":
            status, body = await runner.request(case)
            assert status != recorded[case.name]["status"], (case.name, status, body)


async def test_bare_and_doubled_slash_paths_are_the_default_printer(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    headers = {"X-Api-Key": CONTROL_KEY}
    root = str(client.make_url("/")).rstrip("/")
    for path in ("/api/connection", "//api/connection", "/octoprint/mk3//api/connection"):
        url = URL(root + path, encoded=True)  # as sent: yarl would read "//api" as a host
        response = await client.session.get(url, headers=headers)
        assert response.status == 200, path
        body = await response.json()
        assert body["current"]["printerProfile"] == "mk3", (path, body)
    ghost = await (await client.get("/octoprint/ghost/api/connection", headers=headers)).json()
    assert ghost["current"] == {
        "state": "Closed",
        "port": None,
        "baudrate": None,
        "printerProfile": "ghost",
    }


async def test_each_printer_has_its_own_name_and_profile(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    headers = {"X-Api-Key": MONITOR_KEY}
    for name in ("mk3", "ghost"):
        settings = await (
            await client.get(f"/octoprint/{name}/api/settings", headers=headers)
        ).json()
        assert settings["appearance"]["name"] == name
        assert settings["webcam"]["webcamEnabled"] is False
        profiles = await (
            await client.get(f"/octoprint/{name}/api/printerprofiles", headers=headers)
        ).json()
        assert list(profiles["profiles"]) == [name]


async def test_unknown_printer_and_path_are_octoprints_404(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    headers = {"X-Api-Key": CONTROL_KEY}
    for path in ("/octoprint/nope/api/job", "/octoprint/mk3/api/nothing-here"):
        response = await client.get(path, headers=headers)
        assert response.status == 404, path
        assert set(await response.json()) == {"error"}


async def test_hostile_requests_get_octoprints_error_shape(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    headers = {"X-Api-Key": CONTROL_KEY, "Content-Type": "application/json"}
    hostile = [
        b"",
        b"{",
        b"null",
        b'"text"',
        b"[" * 10000 + b"]" * 10000,
        b'{"command": ' + b"9" * 5000 + b"}",
        json.dumps({"command": "target", "targets": {"tool0": 1e308}}).encode(),
        json.dumps({"command": "target", "targets": {"tool0": True}}).encode(),
        json.dumps({"command": "jog", "x": "1; M112"}).encode(),
        json.dumps({"command": "home", "axes": "xyz"}).encode(),
        json.dumps({"command": "M105\nM112"}).encode(),
        json.dumps({"commands": [{"x": 1}]}).encode(),
        b'{"command": "M105", "pad": "' + b"x" * (80 * 1024) + b'"}',
    ]
    paths = ("/printer/tool", "/printer/printhead", "/printer/command", "/job", "/connection")
    for raw in hostile:
        for path in paths:
            response = await client.post(f"/octoprint/mk3/api{path}", data=raw, headers=headers)
            text = await response.text()
            assert "Traceback" not in text
            if response.status == 204:  # a string command G-code takes ("target")
                assert path == "/printer/command" and not text, (raw[:60], text)
                continue
            assert response.status in (400, 409, 413), (path, raw[:60], response.status, text)
            assert list(json.loads(text)) == ["error"], (path, raw[:60], text)


async def test_a_newline_cannot_smuggle_a_second_command(gateway_client):
    """``{"command": "M105\\nM112"}`` is one command: refused, not an emergency stop."""
    _, client = await octoprint_gateway(gateway_client)
    response = await client.post(
        "/octoprint/mk3/api/printer/command",
        json={"command": "M105\nM112"},
        headers={"X-Api-Key": CONTROL_KEY},
    )
    assert response.status == 400
    assert client.printers.printers["mk3"].state is PrinterState.READY


async def test_keys_in_every_form_octoprint_accepts(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    forms = [
        ({"X-Api-Key": CONTROL_KEY}, ""),
        ({"Authorization": f"Bearer {CONTROL_KEY}"}, ""),
        ({"Authorization": f"Key {CONTROL_KEY}"}, ""),
        ({}, f"?apikey={CONTROL_KEY}"),
    ]
    for headers, query in forms:
        response = await client.get(f"/api/job{query}", headers=headers)
        assert response.status == 200, (headers, query)
    for headers in ({}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        response = await client.get("/api/job", headers=headers)
        assert response.status == 403
        assert list(await response.json()) == ["error"]


async def test_a_monitor_key_reads_but_does_not_act(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    headers = {"X-Api-Key": MONITOR_KEY}
    user = await (await client.get("/api/currentuser", headers=headers)).json()
    assert user["name"] == "mon" and "PRINT" not in user["permissions"]
    assert (await client.get("/api/printer", headers=headers)).status == 200
    for path, body in [
        ("/api/printer/command", {"command": "M105"}),
        ("/api/printer/tool", {"command": "target", "targets": {"tool0": 200}}),
        ("/api/job", {"command": "start"}),
        ("/api/connection", {"command": "connect"}),
    ]:
        response = await client.post(path, json=body, headers=headers)
        assert response.status == 403, path


async def test_a_print_through_the_octoprint_api_reaches_the_printer(gateway_client):
    """Upload with ``print``, see it in ``/api/job``, cancel it: the job engine's job,
    visible in Hydrogen's own API too."""
    _, client = await octoprint_gateway(gateway_client)
    headers = {"X-Api-Key": CONTROL_KEY}
    form = aiohttp.FormData()
    form.add_field("print", "true")
    form.add_field("file", GCODE, filename="part.gcode")
    response = await client.post("/api/files/local", data=form, headers=headers)
    assert response.status == 201, await response.text()
    assert (await response.json())["effectivePrint"] is True
    async with asyncio.timeout(10):
        while (job := await (await client.get("/api/job", headers=headers)).json())[
            "state"
        ] != "Printing":
            await asyncio.sleep(0.05)
    assert job["job"]["file"]["name"] == "part.gcode"
    assert job["job"]["estimatedPrintTime"] == 90
    ours = await (await client.get("/api/printers/mk3/job", headers=headers)).json()
    assert ours["state"] == "printing" and ours["file"] == "part.gcode"
    response = await client.post("/api/job", json={"command": "cancel"}, headers=headers)
    assert response.status == 204
    async with asyncio.timeout(10):
        while (await (await client.get("/api/job", headers=headers)).json())[
            "state"
        ] != "Operational":
            await asyncio.sleep(0.05)
    info = await (await client.get("/api/files/local/part.gcode", headers=headers)).json()
    assert info["prints"]["failure"] == 1 and info["prints"]["last"]["success"] is False
    # The audit trail says who did it, and through which door.
    trail = await client.get("/api/audit", headers={"X-Api-Key": GATEWAY_ADMIN_KEY})
    records = (await trail.json())["records"]
    done = {(r["action"], r["identity"], r["transport"]) for r in records}
    assert ("upload", "ctl", "octoprint") in done, records
    assert ("job_start", "ctl", "octoprint") in done, records
    assert ("job_cancel", "ctl", "octoprint") in done, records
    assert all(r["remote"] for r in records if r["transport"] == "octoprint")


def test_the_cases_cover_every_phase():
    assert {c.phase for c in CASES} == set(PHASES)


def test_the_deliberate_differences_name_real_cases():
    names = {c.name for c in CASES}
    assert set(DIFFERENCES) <= names
    assert {case for case, _ in LEFT_OUT} <= names
    assert dataclasses.is_dataclass(CASES[0])


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_each_difference_has_a_reason(name):
    assert DIFFERENCES[name]


async def test_a_key_scoped_to_one_printer_sees_only_its_octoprint(gateway_client):
    """A key for ``ghost`` only: mk3's OctoPrint (and the bare paths, mk3's) do not
    exist for it, as in Hydrogen's own API."""
    scoped = "ghost-only-key-0123456789"
    _, client = await gateway_client(
        printers=(sim_printer("mk3"), GHOST),
        octoprint=OctoPrintConfig(default_printer="mk3"),
        keys=(ApiKey(scoped, Role.CONTROL, "ghost-op", printers=frozenset({"ghost"})),),
    )
    headers = {"X-Api-Key": scoped}
    ghost = await client.get("/octoprint/ghost/api/connection", headers=headers)
    assert ghost.status == 200
    for path in ("/octoprint/mk3/api/connection", "/api/job", "/octoprint/mk3/api/printer"):
        response = await client.get(path, headers=headers)
        assert response.status == 404, path
        assert list(await response.json()) == ["error"]


async def test_guessing_keys_through_the_octoprint_paths_is_limited_too(gateway_client):
    """The per-address limit on failed authentications holds on the OctoPrint paths:
    they are no side door. After the limit, even the right key waits (429), as on
    Hydrogen's own API, and Hydrogen's own API refuses the address as well."""
    gateway, client = await octoprint_gateway(gateway_client)
    limit = gateway.config.auth.max_failures
    for attempt in range(limit):
        response = await client.get("/api/job", headers={"X-Api-Key": f"guess-{attempt}"})
        assert response.status == 403, attempt
    refused = await client.get("/api/job", headers={"X-Api-Key": CONTROL_KEY})
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert list(await refused.json()) == ["error"]
    ours = await client.get("/api/printers", headers={"X-Api-Key": CONTROL_KEY})
    assert ours.status == 429
    assert gateway.connections.auth_failures["invalid_key"] == limit
