"""Every call of ``octorest`` that OctoPrint's core answers, against one gateway.

Runs in the client libraries' own venv (.venv/clients); nothing here imports hydrogen.
octorest talks to the server's root only (it drops the URL's path), so this is the
default printer's OctoPrint. Prints one JSON line per call: ``{"call", "ok", "value" |
"error"}``; the test decides which outcomes are right.

    python drive_octorest.py http://127.0.0.1:5001 KEY FILE.gcode
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from octorest import OctoRest


def main(url: str, key: str, gcode: str) -> None:
    client = OctoRest(url=url, apikey=key)
    name = gcode.rsplit("/", 1)[-1]

    def upload() -> Any:
        with open(gcode, "rb") as f:
            return client.upload((name, f))

    calls: list[tuple[str, Any]] = [
        ("get_version", client.get_version),
        ("connection_info", client.connection_info),
        ("state", client.state),
        ("connect", lambda: client.connect()),
        ("printer", lambda: client.printer()),
        ("printer_history", lambda: client.printer(history=True, limit=3)),
        ("printer_exclude", lambda: client.printer(exclude=["sd"])),
        ("tool", lambda: client.tool()),
        ("tool_history", lambda: client.tool(history=True, limit=2)),
        ("bed", lambda: client.bed(history=True)),
        ("tool_target", lambda: client.tool_target({"tool0": 0})),
        ("tool_offset", lambda: client.tool_offset({"tool0": 0})),
        ("tool_select", lambda: client.tool_select("tool0")),
        ("extrude", lambda: client.extrude(1)),
        ("retract", lambda: client.retract(1)),
        ("flowrate", lambda: client.flowrate(100)),
        ("bed_target", lambda: client.bed_target(0)),
        ("bed_offset", lambda: client.bed_offset(0)),
        ("jog", lambda: client.jog(x=1, y=1)),
        ("home", lambda: client.home(["x", "y"])),
        ("feedrate", lambda: client.feedrate(100)),
        ("gcode", lambda: client.gcode("M105")),
        ("gcode_list", lambda: client.gcode(["M105", "M114"])),
        ("sd", client.sd),
        ("printer_profiles", client.printer_profiles),
        ("settings", lambda: client.settings()),
        ("upload", upload),
        ("files", lambda: client.files()),
        ("files_local", lambda: client.files("local")),
        ("files_info", lambda: client.files_info("local", name)),
        ("select", lambda: client.select(f"local/{name}")),
        ("job_info", client.job_info),
        ("start", client.start),
        ("pause", client.pause),
        ("resume", client.resume),
        ("toggle", client.toggle),
        ("restart", client.restart),
        ("cancel", client.cancel),
        ("delete", lambda: client.delete(f"local/{name}")),
        ("disconnect", client.disconnect),
    ]
    waits = {"start": "Printing", "pause": "Paused", "resume": "Printing", "toggle": "Paused"}
    waits |= {"restart": "Printing", "cancel": "Operational", "connect": "Operational"}
    for label, call in calls:
        try:
            value = call()
            result = {"call": label, "ok": True, "value": value}
        except Exception as exc:  # the outcome is what is reported
            result = {"call": label, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result, default=str)[:2000], flush=True)
        if label in waits and result["ok"]:
            deadline = time.monotonic() + 15
            while client.job_info()["state"] != waits[label] and time.monotonic() < deadline:
                time.sleep(0.05)


if __name__ == "__main__":
    main(*sys.argv[1:4])
