"""Record OctoPrint's answers to every case of cases.py as shapes: the ground truth.

    .venv/bin/python -m tests.octoprint_truth.record     # rewrites octoprint.json

Runs a real OctoPrint (server.py) with its virtual printer, brings it through the
phases of cases.py (offline, connected, a file selected, printing, paused,
finished) and writes each case's status and shape to ``octoprint.json`` beside this
file, which is committed. tests/test_octoprint_truth.py records again when OctoPrint
is installed and fails on any difference, so a new OctoPrint that changes a shape is
noticed; tests/test_octoprint_api.py diffs the gateway's answers against the file.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.octoprint_truth.cases import CASES, GCODE, GCODE_NAME, Case
from tests.octoprint_truth.server import ADMIN_KEY, VIEWER_KEY, OctoPrintServer
from tests.octoprint_truth.shapes import shape

TRUTH = Path(__file__).with_name("octoprint.json")
KEYS = {"admin": ADMIN_KEY, "viewer": VIEWER_KEY, "wrong": "NOT-A-KEY-OF-ANYONE", "none": None}
#: States OctoPrint passes through on its way to the next stable one.
TRANSITIONAL = {
    "Pausing",
    "Resuming",
    "Cancelling",
    "Starting",
    "Starting print from SD",
    "Finishing",
    "Connecting",
    "Opening serial connection",
    "Detecting serial connection",
    "Detecting baudrate",
}
#: The stable state each phase starts in.
PHASE_STATE = {
    "offline": "Offline",
    "operational": "Operational",
    "selected": "Operational",
    "printing": "Printing",
    "paused": "Paused",
    "finished": "Operational",
}


def multipart(name: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"OctoPrint never got to: {what}")
        time.sleep(0.1)


def answer(status: int, body: Any, case: Case) -> dict[str, Any]:
    if case.only and isinstance(body, dict):
        body = {k: v for k, v in body.items() if k in case.only}
    recorded: dict[str, Any] = {
        "request": f"{case.method} {case.path}",
        "status": status,
        "shape": shape(body, case.maps) if body is not None else None,
    }
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        recorded["error"] = body["error"]  # for reading; only the shape is compared
    return recorded


class Recorder:
    def __init__(self, server: OctoPrintServer) -> None:
        self.op = server

    def state(self) -> str:
        return str(self.op.request("GET", "/api/job")[1]["state"])

    def settle(self) -> None:
        wait_until("a stable state", lambda: self.state() not in TRANSITIONAL)

    def enter(self, phase: str) -> None:
        if phase == "operational":
            status, body = self.op.request(
                "POST", "/api/connection", {"command": "connect", "port": "VIRTUAL"}
            )
            assert status == 204, (status, body)
            wait_until("a temperature report", self.temperatures_known)
        wanted = PHASE_STATE[phase]
        wait_until(f"state {wanted} for phase {phase}", lambda: self.state() == wanted)

    def send(self, case: Case) -> tuple[int, Any]:
        headers = dict(case.headers)
        raw = case.raw
        if case.upload is not None:
            raw, headers["Content-Type"] = multipart(case.upload, GCODE)
        elif raw is not None:
            headers["Content-Type"] = "application/json"
        return self.op.request(
            case.method, case.path, case.body, key=KEYS[case.key], raw=raw, headers=headers
        )

    def run(self) -> dict[str, Any]:
        recorded: dict[str, Any] = {}
        phase = None
        for case in CASES:
            if case.phase != phase:
                phase = case.phase
                self.enter(phase)
            status, body = self.send(case)
            recorded[case.name] = answer(status, body, case)
            if case.upload is not None:
                wait_until("the upload's analysis", self.analysed, timeout=60)
            if case.method != "GET":
                self.settle()
        return recorded

    def temperatures_known(self) -> bool:
        status, body = self.op.request("GET", "/api/printer?history=true")
        return (
            status == 200
            and "tool0" in body["temperature"]
            and len(body["temperature"]["history"]) >= 2
        )

    def analysed(self) -> bool:
        status, body = self.op.request("GET", f"/api/files/local/{GCODE_NAME}")
        return status == 200 and "gcodeAnalysis" in body and "analysisPending" not in body


def record(server: OctoPrintServer) -> dict[str, Any]:
    cases = Recorder(server).run()
    return {
        "octoprint": server.version,
        "recorded_by": "tests/octoprint_truth/record.py",
        "cases": cases,
        "socket": record_socket(server),
    }


#: The push socket's events Hydrogen carries (from its printer state, jobs and uploads).
SOCKET_EVENTS = (
    "Connected",
    "Disconnected",
    "Upload",
    "PrintStarted",
    "PrintPaused",
    "PrintResumed",
    "PrintCancelled",
    "PrintFailed",
    "PrintDone",
)
#: Objects of the socket's messages whose keys are data (heater names).
SOCKET_MAPS = ("offsets",)
#: A file that prints at once, for PrintDone.
QUICK_GCODE = b"G28\nG1 X5 Y5 F3000\n"


class SocketTap:
    """The push socket (``/sockjs/websocket``, raw WebSocket) read on a thread of its
    own, so the recorder's blocking requests can go on beside it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ws: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the push socket did not open")

    def _run(self) -> None:
        self._loop.run_until_complete(self._read())

    async def _read(self) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url) as ws:
                self._ws = ws
                self._ready.set()
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        with self._lock:
                            self._messages.append(json.loads(message.data))

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)

    def first(self, kind: str, where: Callable[[Any], bool] = lambda _: True) -> Any:
        return next((m[kind] for m in self.messages() if kind in m and where(m[kind])), None)

    def event(self, kind: str) -> Any:
        return self.first("event", lambda e: e["type"] == kind)

    def send(self, message: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(self._ws.send_json(message), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop).result(10)
        self._thread.join(10)


def event_payload(tap: SocketTap, kind: str) -> Any:
    payload = tap.event(kind)["payload"]
    if kind == "PrintCancelled" and isinstance(payload, dict):
        # OctoPrint adds "reason" to this dict after firing the event, racing the socket's
        # serialisation of it: whether it is there is chance. Left out, as Hydrogen does.
        payload = {k: v for k, v in payload.items() if k != "reason"}
    return payload


def record_socket(server: OctoPrintServer) -> dict[str, Any]:
    """``connected``, then ``auth`` with a passive login's session, ``history``,
    ``current`` while printing, and the payload of each of :data:`SOCKET_EVENTS`."""
    op = server
    tap = SocketTap(op.url.replace("http", "ws", 1) + "/sockjs/websocket")
    try:
        wait_until("connected", lambda: tap.first("connected") is not None)
        _, user = op.request("POST", "/api/login", {"passive": True})
        tap.send({"auth": f"{user['name']}:{user['session']}"})
        wait_until("history", lambda: tap.first("history") is not None)
        op.request("POST", "/api/connection", {"command": "connect", "port": "VIRTUAL"})
        wait_until("Connected", lambda: tap.event("Connected") is not None)
        wait_until(
            "Operational", lambda: op.request("GET", "/api/job")[1]["state"] == "Operational"
        )
        op.request("POST", "/api/connection", {"command": "disconnect"})
        wait_until("Disconnected", lambda: tap.event("Disconnected") is not None)
        op.request("POST", "/api/connection", {"command": "connect", "port": "VIRTUAL"})
        wait_until(
            "Operational", lambda: op.request("GET", "/api/job")[1]["state"] == "Operational"
        )
        raw, content_type = multipart("socket.gcode", GCODE)
        op.request("POST", "/api/files/local", raw=raw, headers={"Content-Type": content_type})
        wait_until("Upload", lambda: tap.event("Upload") is not None)
        op.request("POST", "/api/files/local/socket.gcode", {"command": "select", "print": True})

        def printing_with_temperatures(current: Any) -> bool:
            temps = current["temps"]
            return current["state"]["text"] == "Printing" and any("tool0" in t for t in temps)

        wait_until(
            "current while printing", lambda: tap.first("current", printing_with_temperatures)
        )
        for body, event in [
            ({"command": "pause", "action": "pause"}, "PrintPaused"),
            ({"command": "pause", "action": "resume"}, "PrintResumed"),
            ({"command": "cancel"}, "PrintFailed"),
        ]:
            op.request("POST", "/api/job", body)
            wait_until(event, lambda event=event: tap.event(event) is not None)
        wait_until(
            "Operational", lambda: op.request("GET", "/api/job")[1]["state"] == "Operational"
        )
        raw, content_type = multipart("quick.gcode", QUICK_GCODE)
        op.request("POST", "/api/files/local", raw=raw, headers={"Content-Type": content_type})
        op.request("POST", "/api/files/local/quick.gcode", {"command": "select", "print": True})
        wait_until("PrintDone", lambda: tap.event("PrintDone") is not None)
        answer = {
            "connected": shape(tap.first("connected")),
            "history": shape(tap.first("history"), SOCKET_MAPS),
            "current": shape(tap.first("current", printing_with_temperatures), SOCKET_MAPS),
            "events": {kind: shape(event_payload(tap, kind)) for kind in SOCKET_EVENTS},
        }
    finally:
        tap.close()
    return answer


def dump(truth: dict[str, Any]) -> str:
    return json.dumps(truth, indent=1, sort_keys=True) + "\n"


def main() -> int:
    with OctoPrintServer() as server:
        truth = record(server)
    TRUTH.write_text(dump(truth))
    print(f"recorded {len(truth['cases'])} answers of OctoPrint {truth['octoprint']} to {TRUTH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
