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
        ("probe_app_keys_workflow_support", client.probe_app_keys_workflow_support),
        ("start_authorization_process", lambda: client.start_authorization_process("octorest")),
        ("disconnect", client.disconnect),
    ]
    # The rest of what octorest has: OctoPrint features Hydrogen has no counterpart for
    # (users, timelapses, slicing, languages, logs, system commands, the wizard, folders,
    # settings and profile edits, the SD card, the chamber). Run too: each must be refused
    # cleanly (a 4xx), never a server error.
    core = {label for label, _ in calls}
    profile = {"id": "x", "name": "x"}
    calls += [
        ("fake_ack", client.fake_ack),
        ("tmp_session_key", client.tmp_session_key),
        ("new_folder", lambda: client.new_folder("parts")),
        ("slice", lambda: client.slice(f"local/{name}")),
        ("copy", lambda: client.copy(f"local/{name}", "copy.gcode")),
        ("move", lambda: client.move(f"local/{name}", "moved.gcode")),
        ("languages", client.languages),
        ("delete_language", lambda: client.delete_language("de", "core")),
        ("logs", client.logs),
        ("delete_log", lambda: client.delete_log("octoprint.log")),
        ("custom_control_request", client.custom_control_request),
        ("printer_profile", lambda: client.printer_profile("mk3")),
        ("add_printer_profile", lambda: client.add_printer_profile(profile)),
        ("update_printer_profile", lambda: client.update_printer_profile("mk3", profile)),
        ("delete_printer_profile", lambda: client.delete_printer_profile("mk3")),
        ("settings_write", lambda: client.settings({"appearance": {"name": "x"}})),
        ("regenerate_apikey", client.regenerate_apikey),
        ("fetch_templates", client.fetch_templates),
        ("slicers", client.slicers),
        ("slicer_profiles", lambda: client.slicer_profiles("curalegacy")),
        ("slicer_profile", lambda: client.slicer_profile("curalegacy", "x")),
        ("add_slicer_profile", lambda: client.add_slicer_profile("curalegacy", "x", {})),
        ("delete_slicer_profile", lambda: client.delete_slicer_profile("curalegacy", "x")),
        ("system_commands", client.system_commands),
        ("source_system_commands", lambda: client.source_system_commands("core")),
        ("execute_system_command", lambda: client.execute_system_command("core", "reboot")),
        ("timelapses", client.timelapses),
        ("delete_timelapse", lambda: client.delete_timelapse("x.mp4")),
        ("render_timelapse", lambda: client.render_timelapse("x")),
        ("delete_unrendered_timelapse", lambda: client.delete_unrendered_timelapse("x")),
        ("change_timelapse_config", lambda: client.change_timelapse_config("off")),
        ("users", client.users),
        ("user", lambda: client.user("ctl")),
        ("add_user", lambda: client.add_user("eve", "secret")),
        ("update_user", lambda: client.update_user("eve", admin=True)),
        ("delete_user", lambda: client.delete_user("eve")),
        ("reset_user_password", lambda: client.reset_user_password("eve", "x")),
        ("user_settings", lambda: client.user_settings("ctl")),
        ("update_user_settings", lambda: client.update_user_settings("ctl", {})),
        ("regenerate_user_apikey", lambda: client.regenerate_user_apikey("ctl")),
        ("delete_user_apikey", lambda: client.delete_user_apikey("ctl")),
        ("util_test_path", lambda: client.util_test_path("/tmp", "dir", ["r"])),
        ("util_test_url", lambda: client.util_test_url("http://x", [200], "GET", "status")),
        ("util_test_server", lambda: client.util_test_server("x", 80, "tcp")),
        ("wizard", client.wizard),
        ("finish_wizards", lambda: client.finish_wizards([])),
        ("chamber", lambda: client.chamber()),
        ("chamber_target", lambda: client.chamber_target(0)),
        ("chamber_offset", lambda: client.chamber_offset(0)),
        ("sd_init", client.sd_init),
        ("sd_refresh", client.sd_refresh),
        ("sd_release", client.sd_release),
    ]
    waits = {"start": "Printing", "pause": "Paused", "resume": "Printing", "toggle": "Paused"}
    waits |= {"restart": "Printing", "cancel": "Operational", "connect": "Operational"}
    for label, call in calls:
        try:
            value = call()
            result = {"call": label, "ok": True, "value": value, "core": label in core}
        except Exception as exc:  # the outcome is what is reported
            result = {
                "call": label,
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "core": label in core,
            }
        print(json.dumps(result, default=str)[:2000], flush=True)
        if label in waits and result["ok"]:
            deadline = time.monotonic() + 15
            while client.job_info()["state"] != waits[label] and time.monotonic() < deadline:
                time.sleep(0.05)


if __name__ == "__main__":
    main(*sys.argv[1:4])
