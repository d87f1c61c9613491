"""OctoPrint's push socket, followed through a print, diffed against a real OctoPrint's.

A client opens ``/octoprint/mk3/sockjs/websocket`` as OctoPrint's apps do, gets
``connected``, authenticates with the session of a passive login, and follows a print
from the upload to PrintDone (and another to a cancel). The message shapes and the
event payloads must be those tests/octoprint_truth/record.py recorded from OctoPrint.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from hydrogen.octoprint.push import job_events, state_events
from tests.conftest import CONTROL_KEY, MONITOR_KEY
from tests.octoprint_truth.cases import GCODE
from tests.octoprint_truth.record import QUICK_GCODE, SOCKET_EVENTS, SOCKET_MAPS, TRUTH
from tests.octoprint_truth.shapes import diff, shape
from tests.test_octoprint_api import octoprint_gateway

HEADERS = {"X-Api-Key": CONTROL_KEY}


def socket_truth() -> dict[str, Any]:
    return json.loads(TRUTH.read_text())["socket"]


class Follower:
    """The socket's messages as they come, kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []

    async def until(self, predicate, timeout: float = 20.0) -> dict[str, Any]:
        for message in self.messages:
            if predicate(message):
                return message
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads((await self.ws.receive()).data)
                self.messages.append(message)
                if predicate(message):
                    return message

    async def event(self, kind: str) -> dict[str, Any]:
        found = await self.until(lambda m: m.get("event", {}).get("type") == kind)
        return found["event"]

    def events(self) -> list[str]:
        return [m["event"]["type"] for m in self.messages if "event" in m]


async def open_socket(client, key: str = CONTROL_KEY) -> Follower:
    ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    follower = Follower(ws)
    await follower.until(lambda m: "connected" in m)
    login = await (
        await client.post(
            "/octoprint/mk3/api/login", json={"passive": True}, headers={"X-Api-Key": key}
        )
    ).json()
    await ws.send_json({"auth": f"{login['name']}:{login['session']}"})
    return follower


async def upload(client, name: str, data: bytes, **fields: str) -> None:
    form = aiohttp.FormData()
    for field, value in fields.items():
        form.add_field(field, value)
    form.add_field("file", data, filename=name)
    response = await client.post("/octoprint/mk3/api/files/local", data=form, headers=HEADERS)
    assert response.status == 201, await response.text()


async def job_command(client, body: dict[str, Any]) -> None:
    response = await client.post("/octoprint/mk3/api/job", json=body, headers=HEADERS)
    assert response.status == 204, await response.text()


def differences(truth: Any, ours: Any, what: str) -> list[str]:
    # A printer without a chamber reports none; OctoPrint's virtual one reports null.
    return [
        f"{what}: {line}"
        for line in diff(truth, ours)
        if not line.startswith("$.temps[].chamber: missing")
    ]


async def test_a_print_followed_on_the_push_socket(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    truth = socket_truth()
    follower = await open_socket(client)
    history = (await follower.until(lambda m: "history" in m))["history"]
    await upload(client, "socket.gcode", GCODE, print="true")
    await follower.event("PrintStarted")
    current = (
        await follower.until(
            lambda m: (
                "current" in m
                and m["current"]["state"]["text"] == "Printing"
                and any("tool0" in t for t in m["current"]["temps"])
            )
        )
    )["current"]
    await job_command(client, {"command": "pause", "action": "pause"})
    await follower.event("PrintPaused")
    await job_command(client, {"command": "pause", "action": "resume"})
    await follower.event("PrintResumed")
    await job_command(client, {"command": "cancel"})
    await follower.event("PrintFailed")
    await upload(client, "quick.gcode", QUICK_GCODE, print="true")
    await follower.event("PrintDone")
    for command, event in (("disconnect", "Disconnected"), ("connect", "Connected")):
        response = await client.post(
            "/octoprint/mk3/api/connection", json={"command": command}, headers=HEADERS
        )
        assert response.status == 204
        await follower.event(event)

    lines = differences(truth["history"], shape(history, SOCKET_MAPS), "history")
    lines += differences(truth["current"], shape(current, SOCKET_MAPS), "current")
    connected = follower.messages[0]["connected"]
    lines += differences(truth["connected"], shape(connected), "connected")
    for kind in SOCKET_EVENTS:
        found = await follower.event(kind)
        lines += differences(truth["events"][kind], shape(found["payload"]), f"event {kind}")
    assert not lines, "\n".join(lines)
    assert follower.events().count("PrintStarted") == 2, follower.events()
    assert history["state"]["text"] == "Operational"
    assert current["job"]["file"]["name"] == "socket.gcode"
    await follower.ws.close()


async def test_throttle_and_a_wrong_session(gateway_client):
    _, client = await octoprint_gateway(gateway_client)
    ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    first = await ws.receive_json()
    assert "connected" in first
    await ws.send_json({"auth": "ctl:not-a-session"})
    closing = await ws.receive()
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    follower = await open_socket(client, MONITOR_KEY)
    await follower.ws.send_json({"throttle": 2})
    await follower.until(lambda m: "current" in m)
    await follower.ws.close()


def test_job_frames_become_octoprints_events():
    printing = {"job_id": "a", "state": "printing"}
    assert job_events(None, printing) == []  # the first frame is where the socket starts
    assert job_events({"job_id": None, "state": "idle"}, printing) == ["PrintStarted"]
    assert job_events(printing, {"job_id": "a", "state": "paused"}) == ["PrintPaused"]
    assert job_events({"job_id": "a", "state": "paused"}, printing) == ["PrintResumed"]
    assert job_events(printing, {"job_id": "a", "state": "completed"}) == ["PrintDone"]
    assert job_events(printing, {"job_id": "a", "state": "cancelled"}) == [
        "PrintCancelled",
        "PrintFailed",
    ]
    # a job that started and ended between two frames the socket saw
    assert job_events(printing, {"job_id": "b", "state": "completed"}) == [
        "PrintStarted",
        "PrintDone",
    ]
    assert job_events(printing, printing) == []


def test_printer_states_become_octoprints_events():
    assert state_events("connecting", "ready") == ["Connected"]
    assert state_events("ready", "disconnected") == ["Disconnected"]
    assert state_events("busy", "error") == ["Error"]
    assert state_events(None, "ready") == []
    assert state_events("ready", "busy") == []
