"""Hydrogen's state in OctoPrint's words: pure functions from the dispatch's payloads
(and a printer's summary) to the JSON OctoPrint answers. No I/O, no aiohttp.

The shapes are OctoPrint 1.11's, as recorded in tests/octoprint_truth/octoprint.json;
a value Hydrogen does not know is ``null``, as OctoPrint answers ``null`` for what it
does not know yet (a file's hash, the uploader, the travel area).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from hydrogen.protocol import Role

#: The OctoPrint release whose API these answers follow.
OCTOPRINT_VERSION = "1.11.0"
API_VERSION = "0.1"
#: OctoPrint's own defaults, offered as temperature presets.
TEMPERATURE_PROFILES = (
    {"name": "ABS", "extruder": 210, "bed": 100},
    {"name": "PLA", "extruder": 180, "bed": 60},
)
FILAMENT_DIAMETER_MM = 1.75
#: A printer's bed when its configuration says nothing (OctoPrint's default profile).
DEFAULT_VOLUME_MM = 200.0

#: What each role may do, in OctoPrint's permission names.
_MONITOR_PERMISSIONS = ("STATUS", "CONNECTION", "WEBCAM", "FILES_LIST", "FILES_DOWNLOAD")
_CONTROL_PERMISSIONS = (
    *_MONITOR_PERMISSIONS,
    "FILES_UPLOAD",
    "FILES_DELETE",
    "FILES_SELECT",
    "PRINT",
    "MONITOR_TERMINAL",
    "CONTROL",
    "SETTINGS_READ",
)

# -- printer state ------------------------------------------------------------------------
_ACTIVE = frozenset({"queued", "printing", "paused"})


def state_text(printer_state: str, job_state: str | None) -> str:
    """OctoPrint's state string from the printer's and its job's state."""
    if printer_state == "disconnected":
        return "Offline"
    if printer_state == "connecting":
        return "Opening serial connection"
    if printer_state == "error":
        return "Error"
    return {"printing": "Printing", "paused": "Paused", "queued": "Starting"}.get(
        job_state or "", "Operational"
    )


def operational(printer_state: str) -> bool:
    return printer_state in ("ready", "busy")


def state(printer_state: str, reason: str | None, job_state: str | None) -> dict[str, Any]:
    ok = operational(printer_state)
    printing = ok and job_state in ("printing", "queued")
    paused = ok and job_state == "paused"
    error = printer_state == "error"
    return {
        "text": state_text(printer_state, job_state),
        "error": (reason or "") if error else "",
        "flags": {
            "operational": ok,
            "printing": printing,
            "paused": paused,
            "pausing": False,
            "resuming": False,
            "cancelling": False,
            "finishing": False,
            "ready": ok and not printing and not paused,
            "error": error,
            "closedOrError": not ok,
            "sdReady": False,
        },
    }


def temperatures(
    summary: Mapping[str, Any], prefix: str | None = None, offsets: Mapping[str, float] = {}
) -> dict[str, Any]:
    """``{"tool0": {"actual", "target", "offset"}, "bed": ...}`` (only ``prefix``'s heaters)."""
    return {
        name: {
            "actual": reading.get("actual"),
            "target": reading.get("target"),
            "offset": offsets.get(name, 0),
        }
        for name, reading in summary.get("temperatures", {}).items()
        if prefix is None or name.startswith(prefix)
    }


def history(
    samples: Iterable[Mapping[str, Any]], prefix: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The temperature samples, oldest first, as OctoPrint's ``history`` list (its
    per-heater endpoints, ``prefix`` given, leave the time out of each sample)."""
    entries = [
        {
            **({} if prefix else {"time": int(sample["timestamp"])}),
            **{
                name: {"actual": h.get("actual"), "target": h.get("target")}
                for name, h in sample.get("heaters", {}).items()
                if prefix is None or name.startswith(prefix)
            },
        }
        for sample in samples
    ]
    return entries[-limit:] if limit else entries


# -- files --------------------------------------------------------------------------------
def filament(length_mm: float | None) -> dict[str, Any] | None:
    if length_mm is None:
        return None
    radius = FILAMENT_DIAMETER_MM / 2
    return {"tool0": {"length": length_mm, "volume": math.pi * radius**2 * length_mm / 1000}}


def analysis(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """``gcodeAnalysis`` from the slicer's own figures (none when it left none)."""
    seconds = metadata.get("estimated_seconds")
    length = metadata.get("filament_mm")
    if seconds is None and length is None:
        return None
    return {
        "estimatedPrintTime": seconds,
        "filament": filament(length),
        # Read from the moves by OctoPrint; Hydrogen does not simulate the moves.
        "dimensions": None,
        "printingArea": None,
        "travelArea": None,
        "travelDimensions": None,
    }


def prints(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``prints`` from the job history of one file (newest first); None if never printed."""
    done = [r for r in records if r.get("outcome") in ("completed", "failed", "cancelled")]
    if not done:
        return None
    last = done[0]
    return {
        "success": sum(r["outcome"] == "completed" for r in done),
        "failure": sum(r["outcome"] != "completed" for r in done),
        "last": {
            "date": int(last.get("ended_at") or last["started_at"]),
            "success": last["outcome"] == "completed",
        },
    }


def file_object(
    stored: Mapping[str, Any], base: str, records: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """One stored file (the ``file`` request's payload) as OctoPrint's file object.

    ``base`` is the URL of the printer's OctoPrint root (``http://host/octoprint/mk3``).
    """
    name = stored["name"]
    answer: dict[str, Any] = {
        "name": name,
        "display": name,
        "path": name,
        "type": "machinecode",
        "typePath": ["machinecode", "gcode"],
        "origin": "local",
        "size": stored["size_bytes"],
        "date": int(stored["uploaded_at"]),
        "hash": None,
        "user": None,
        "refs": {
            "resource": f"{base}/api/files/local/{name}",
            "download": f"{base}/downloads/files/local/{name}",
        },
    }
    found = analysis(stored.get("metadata") or {})
    if found is not None:
        answer["gcodeAnalysis"] = found
    printed = prints(records)
    if printed is not None:
        answer["prints"] = printed
        answer["statistics"] = {"averagePrintTime": {}, "lastPrintTime": {}}
    return answer


def upload(name: str, base: str, *, selected: bool, printing: bool) -> dict[str, Any]:
    return {
        "done": True,
        "files": {
            "local": {
                "name": name,
                "path": name,
                "origin": "local",
                "refs": {
                    "resource": f"{base}/api/files/local/{name}",
                    "download": f"{base}/downloads/files/local/{name}",
                },
            }
        },
        "effectiveSelect": selected,
        "effectivePrint": printing,
    }


# -- the job ------------------------------------------------------------------------------
_NO_JOB = {
    "job": {
        "file": {"name": None, "path": None, "size": None, "origin": None, "date": None},
        "estimatedPrintTime": None,
        "filament": {"length": None, "volume": None},
        "lastPrintTime": None,
        "user": None,
    },
    "progress": {
        "completion": None,
        "filepos": None,
        "printTime": None,
        "printTimeLeft": None,
        "printTimeLeftOrigin": None,
    },
}


def job(
    text: str, payload: Mapping[str, Any] | None, selected: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``GET /api/job``: the running (or paused) job, else the selected file, else nothing.

    ``payload`` is the ``job`` request's payload, ``selected`` the ``file`` request's
    payload of the file selected (or last printed), both None when there is none.
    """
    if selected is None:
        return {**_NO_JOB, "state": text}
    metadata = selected.get("metadata") or {}
    answer: dict[str, Any] = {
        "job": {
            "file": {
                "name": selected["name"],
                "display": selected["name"],
                "path": selected["name"],
                "origin": "local",
                "size": selected["size_bytes"],
                "date": int(selected["uploaded_at"]),
            },
            "estimatedPrintTime": metadata.get("estimated_seconds"),
            "averagePrintTime": None,
            "lastPrintTime": None,
            "filament": filament(metadata.get("filament_mm")),
            "user": None,
        },
        "progress": dict(_NO_JOB["progress"]),
        "state": text,
    }
    if payload is not None and payload.get("state") in _ACTIVE:
        eta = payload.get("eta_seconds")
        answer["progress"] = {
            "completion": round(100 * float(payload.get("progress") or 0.0), 4),
            "filepos": payload.get("bytes_sent"),
            "printTime": int(payload.get("elapsed_seconds") or 0),
            "printTimeLeft": None if eta is None else int(eta),
            "printTimeLeftOrigin": None
            if eta is None
            else ("analysis" if payload.get("estimated_seconds") else "linear"),
        }
    return answer


def job_file(selected: str | None, payload: Mapping[str, Any] | None) -> str | None:
    """The file a job answer shows and ``start`` prints: the running job's, else the
    selected one, else the last printed (OctoPrint keeps a printed file selected)."""
    if payload is None:
        return selected
    if is_active(payload):
        return payload.get("file")
    return selected or payload.get("file")


def is_active(payload: Mapping[str, Any] | None) -> bool:
    return payload is not None and payload.get("state") in _ACTIVE


# -- connection, profile, settings, user --------------------------------------------------
def connection(summary: Mapping[str, Any], text: str) -> dict[str, Any]:
    name, device, baud = summary["printer"], summary["device"], summary["baud"]
    connected = text not in ("Offline", "Error")
    return {
        "current": {
            "state": "Closed" if text == "Offline" else text,
            "port": device if connected else None,
            "baudrate": baud if connected else None,
            "printerProfile": name,
        },
        "options": {
            "ports": [device],
            "baudrates": [baud],
            "printerProfiles": [{"id": name, "name": name}],
            "portPreference": device,
            "baudratePreference": baud,
            "printerProfilePreference": name,
        },
    }


def profile(summary: Mapping[str, Any], base: str) -> dict[str, Any]:
    """The printer's profile, from what its firmware reports (tools, heated bed)."""
    name = summary["printer"]
    heaters = summary.get("temperatures", {})
    tools = sum(1 for heater in heaters if heater.startswith("tool")) or 1
    volume = {
        "width": DEFAULT_VOLUME_MM,
        "depth": DEFAULT_VOLUME_MM,
        "height": DEFAULT_VOLUME_MM,
        "formFactor": "rectangular",
        "origin": "lowerleft",
        "custom_box": False,
    }
    axis = {"inverted": False}
    return {
        "id": name,
        "name": name,
        "model": (summary.get("firmware") or {}).get("fields", {}).get("MACHINE_TYPE") or name,
        "color": "default",
        "current": True,
        "default": True,
        "resource": f"{base}/api/printerprofiles/{name}",
        "volume": volume,
        "heatedBed": "bed" in heaters or not heaters,
        "heatedChamber": "chamber" in heaters,
        "extruder": {
            "count": tools,
            "offsets": [[0.0, 0.0]] * tools,
            "nozzleDiameter": 0.4,
            "sharedNozzle": False,
            "defaultExtrusionLength": 5,
        },
        "axes": {
            "x": {**axis, "speed": 6000},
            "y": {**axis, "speed": 6000},
            "z": {**axis, "speed": 200},
            "e": {**axis, "speed": 300},
        },
    }


def settings(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The sections of ``GET /api/settings`` clients read; no webcam is configured."""
    return {
        "api": {"allowCrossOrigin": False},
        "appearance": {"name": summary["printer"], "color": "default"},
        "feature": {"sdSupport": False, "temperatureGraph": True},
        "serial": {
            "port": summary["device"],
            "baudrate": summary["baud"],
            "portOptions": [summary["device"]],
            "baudrateOptions": [summary["baud"]],
            "autoconnect": True,
        },
        "temperature": {"profiles": [dict(p) for p in TEMPERATURE_PROFILES]},
        "webcam": {
            "webcamEnabled": False,
            "timelapseEnabled": False,
            "streamUrl": "",
            "snapshotUrl": "",
            "flipH": False,
            "flipV": False,
            "rotate90": False,
            "streamRatio": "16:9",
            "streamTimeout": 5,
            "snapshotTimeout": 5,
            "snapshotSslValidation": True,
            "cacheBuster": False,
            "bitrate": "10000k",
            "webcams": [],
        },
        # No plugins: clients look up theirs by name and find none.
        "plugins": {},
    }


def permissions(role: Role) -> list[str]:
    return list(_CONTROL_PERMISSIONS if role >= Role.CONTROL else _MONITOR_PERMISSIONS)


def groups(role: Role) -> list[str]:
    return ["users"] if role >= Role.CONTROL else ["readonly"]


def current_user(name: str | None, role: Role | None) -> dict[str, Any]:
    if role is None:
        return {"name": None, "groups": ["guests"], "permissions": []}
    return {"name": name, "groups": groups(role), "permissions": permissions(role)}


def login(name: str, role: Role, key: str, session: str, seen: str) -> dict[str, Any]:
    """``POST /api/login`` with ``passive``: the key's user and a session for the socket."""
    return {
        "name": name,
        "active": True,
        "user": True,
        "admin": False,
        "apikey": key,
        "session": session,
        "groups": groups(role),
        "permissions": [],
        "roles": ["user"],
        "settings": {},
        "needs": {
            "group": groups(role),
            "role": [p.lower() for p in permissions(role)],
        },
        "_login_mechanism": "apikey",
        "_is_external_client": False,
        "_credentials_seen": seen,
    }
