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

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    return {
        "octoprint": server.version,
        "recorded_by": "tests/octoprint_truth/record.py",
        "cases": Recorder(server).run(),
    }


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
