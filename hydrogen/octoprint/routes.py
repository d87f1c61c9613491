"""OctoPrint's REST API, one instance per printer, translated into the one dispatch.

Every handler here reads its request, calls :meth:`hydrogen.api.Api.call` with the
operation's name (``job_start``, ``command``, ``file_delete``...), the caller's
identity and the printer of the path (:class:`~hydrogen.octoprint.adapter.Ask`), and
shapes the payload or the refusal into what OctoPrint answers
(:mod:`hydrogen.octoprint.answers`). The role rule, the printer scope, the validation
and the audit are the dispatch's; nothing here runs an operation of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import time
from typing import Any

from aiohttp import web

from hydrogen import __version__
from hydrogen.api import Api, Payload
from hydrogen.jobs.files import FileError
from hydrogen.jobs.manager import JobManager
from hydrogen.octoprint import answers
from hydrogen.octoprint.adapter import (
    NOT_OPERATIONAL,
    Ask,
    Handler,
    OctoPrintAdapter,
    Refused,
    bad,
    error,
)
from hydrogen.octoprint.appkeys import MAX_APP_CHARS
from hydrogen.octoprint.auth import presented_key
from hydrogen.octoprint.push import serve
from hydrogen.protocol import utc_iso
from hydrogen.server.jobs_api import receive_upload
from hydrogen.server.keys import GATEWAY

log = logging.getLogger(__name__)

#: Bodies of OctoPrint's commands are small JSON objects.
MAX_BODY_BYTES = 64 * 1024
_AXES = ("x", "y", "z")


def _no_content() -> web.Response:
    return web.Response(status=204)


async def body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a command; OctoPrint's 400 (413) otherwise."""
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise Refused(413, f"Request body larger than {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        raise bad("Malformed JSON body in request") from None
    if not isinstance(value, dict):
        raise bad("Expected content-type JSON with an object in the body")
    return value


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1", "yes")


def _limit(request: web.Request) -> int | None:
    text = request.query.get("limit", "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def _number(value: Any, message: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(message)
    if not -10000 <= value <= 10000:
        raise bad(message)
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:g}"


# -- version, server, settings, profiles, users -----------------------------------------------
async def version(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return web.json_response(
        {
            "api": answers.API_VERSION,
            "server": answers.OCTOPRINT_VERSION,
            "text": f"OctoPrint {answers.OCTOPRINT_VERSION} (Hydrogen {__version__})",
        }
    )


async def server(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return web.json_response({"version": answers.OCTOPRINT_VERSION, "safemode": None})


async def settings(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return web.json_response(answers.settings(await adapter.summary(ask)))


async def profiles(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    profile = answers.profile(await adapter.summary(ask), ask.base)
    return web.json_response({"profiles": {profile["id"]: profile}})


async def current_user(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    known = ask.identity.via != "none"
    return web.json_response(
        answers.current_user(
            ask.identity.name if known else None, ask.identity.role if known else None
        )
    )


async def login(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    members = await body(request)
    if not members.get("passive"):
        raise Refused(403, "Only a passive login with an API key is supported")
    session = secrets.token_hex(32)
    if len(adapter.sessions) >= 1024:
        adapter.sessions.pop(next(iter(adapter.sessions)))
    adapter.sessions[session] = ask.identity
    key = (presented_key(request) or ("", ""))[0]
    name = ask.identity.name
    return web.json_response(
        answers.login(name, ask.identity.role, key, session, utc_iso(time.time()))
    )


# -- connection -----------------------------------------------------------------------
async def connection(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    summary, job = await adapter.job_state(ask)
    text = answers.state_text(summary["state"], job.get("state"))
    return web.json_response(answers.connection(summary, text))


async def connection_command(
    adapter: OctoPrintAdapter, request: web.Request, ask: Ask
) -> web.Response:
    members = await body(request)
    command = members.get("command")
    summary = await adapter.summary(ask)
    if command == "connect":
        port, baud = members.get("port"), members.get("baudrate")
        if port is not None and port != summary["device"]:
            raise bad(f"Invalid port: {port}")
        if baud is not None and baud != summary["baud"]:
            raise bad(f"Invalid baudrate: {baud}")
        if not answers.operational(summary["state"]):
            # Already connected: OctoPrint would drop the link and open it again, which
            # ends a running print; here it stays as it is.
            await ask.on_printer("printer_reconnect")
        else:
            ask.may("printer_reconnect")
    elif command == "disconnect":
        if adapter.api.get("printer_disconnect") is None:
            raise bad("disconnect is not supported by this gateway")
        await ask.on_printer("printer_disconnect")
    elif command == "fake_ack":
        raise bad("fake_ack is not supported")
    else:
        raise bad("command is invalid")
    return _no_content()


# -- printer ------------------------------------------------------------------------------
async def printer(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    summary = await adapter.operational_summary(ask)
    job = await ask.on_printer("job")
    exclude = {part.strip() for part in request.query.get("exclude", "").split(",")}
    answer: dict[str, Any] = {}
    if "temperature" not in exclude:
        answer["temperature"] = await _temperature(ask, summary, request, None)
    if "state" not in exclude:
        answer["state"] = answers.state(summary["state"], summary.get("reason"), job.get("state"))
    return web.json_response(answer)


async def _temperature(
    ask: Ask, summary: Payload, request: web.Request, prefix: str | None
) -> dict[str, Any]:
    answer = answers.temperatures(summary, prefix)
    if _flag(request, "history"):
        samples = (await ask.on_printer("temperature_history"))["samples"]
        answer["history"] = answers.history(samples, prefix, _limit(request))
    return answer


def _heaters(prefix: str) -> Handler:
    async def get(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
        summary = await adapter.operational_summary(ask)
        return web.json_response(await _temperature(ask, summary, request, prefix))

    return get


def _offsets(value: Any) -> None:
    """Temperature offsets are not kept; only 0 (none) is accepted."""
    values = value.values() if isinstance(value, dict) else [value]
    for offset in values:
        if _number(offset, "offsets contains invalid value") != 0:
            raise bad("temperature offsets are not supported; only 0 is accepted")


async def tool_command(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    members = await body(request)
    command = members.get("command")
    if command not in ("target", "offset", "select", "extrude", "flowrate"):
        raise bad("command is invalid")
    await adapter.operational_summary(ask)
    lines: list[str] = []
    if command == "target":
        targets = members.get("targets")
        if not isinstance(targets, dict) or not targets:
            raise bad("targets is invalid")
        for tool, target in targets.items():
            index = _tool_index(tool, "targets contains invalid key")
            degrees = _number(target, "targets contains invalid value")
            lines.append(f"M104 T{index} S{_fmt(degrees)}")
    elif command == "offset":
        offsets = members.get("offsets")
        if not isinstance(offsets, dict) or not offsets:
            raise bad("offsets is invalid")
        for tool in offsets:
            _tool_index(tool, "offsets contains invalid key")
        _offsets(offsets)
        return _no_content()
    elif command == "select":
        lines.append(f"T{_tool_index(members.get('tool'), 'tool is invalid')}")
    elif command == "extrude":
        amount = _number(members.get("amount"), "amount is invalid")
        speed = _number(members.get("speed", 300), "speed is invalid")
        lines += ["M83", f"G1 E{_fmt(amount)} F{_fmt(speed)}", "M82"]
    else:
        lines.append(f"M221 S{_fmt(_number(members.get('factor'), 'factor is invalid'))}")
    await adapter.gcode(ask, *lines)
    return _no_content()


def _tool_index(tool: Any, message: str) -> int:
    if not isinstance(tool, str) or not tool.startswith("tool") or not tool[4:].isdigit():
        raise bad(message)
    return int(tool[4:])


async def bed_command(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    members = await body(request)
    command = members.get("command")
    if command not in ("target", "offset"):
        raise bad("command is invalid")
    await adapter.operational_summary(ask)
    if command == "offset":
        _offsets(members.get("offset"))
        return _no_content()
    degrees = _number(members.get("target"), "target is invalid")
    await adapter.gcode(ask, f"M140 S{_fmt(degrees)}")
    return _no_content()


async def printhead(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    members = await body(request)
    command = members.get("command")
    if command not in ("jog", "home", "feedrate"):
        raise bad("command is invalid")
    await adapter.operational_summary(ask)
    if command == "jog":
        moves = [
            f"{axis.upper()}{_fmt(_number(members[axis], f'{axis} is invalid'))}"
            for axis in _AXES
            if axis in members
        ]
        if not moves:
            raise bad("jog needs at least one of x, y, z")
        speed = members.get("speed")
        feed = "" if speed in (None, False) else f" F{_fmt(_number(speed, 'speed is invalid'))}"
        absolute = members.get("absolute") is True
        lines = [] if absolute else ["G91"]
        lines += [f"G1 {' '.join(moves)}{feed}", "G90"]
    elif command == "home":
        axes = members.get("axes")
        if not isinstance(axes, list) or not axes or any(a not in _AXES for a in axes):
            raise bad("axis is invalid")
        lines = ["G28 " + " ".join(f"{a.upper()}0" for a in axes)]
    else:
        factor = _number(members.get("factor"), "factor is invalid")
        if not 50 <= factor <= 200:
            raise bad("factor must be between 50 and 200 percent")
        lines = [f"M220 S{_fmt(factor)}"]
    await adapter.gcode(ask, *lines)
    return _no_content()


async def command(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    members = await body(request)
    if "commands" in members:
        lines = members["commands"]
        if not isinstance(lines, list) or not all(isinstance(c, str) for c in lines):
            raise bad("commands must be a list of strings")
    elif "command" in members:
        if not isinstance(members["command"], str):
            raise bad("command must be a string")
        lines = [members["command"]]
    else:
        raise bad("Need one of 'command', 'commands' or 'script'")
    if any("\n" in line or "\r" in line for line in lines):
        raise bad("one command per line: a command must not contain a line break")
    lines = [line for line in lines if line.strip()]
    await adapter.operational_summary(ask)
    if lines:
        await adapter.gcode(ask, *lines)
    return _no_content()


async def sd(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return error(404, "SD support is disabled")


# -- job --------------------------------------------------------------------------------
async def job(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    summary, payload = await adapter.job_state(ask)
    text = answers.state_text(summary["state"], payload.get("state"))
    selected = await adapter.stored(ask, _job_file(adapter, ask.printer, payload))
    return web.json_response(answers.job(text, payload, selected))


def _job_file(adapter: OctoPrintAdapter, printer: str, payload: Payload) -> str | None:
    return answers.job_file(adapter.selected.get(printer), payload)


async def job_command(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    members = await body(request)
    command = members.get("command")
    if command not in ("start", "cancel", "restart", "pause"):
        raise bad("command is invalid")
    summary, payload = await adapter.job_state(ask)
    state = payload.get("state")
    if command == "start":
        ask.may("job_start")
        if not answers.operational(summary["state"]):
            raise Refused(409, NOT_OPERATIONAL)
        if answers.is_active(payload):
            raise Refused(409, "Printer already has an active print job, did you mean 'restart'?")
        name = _job_file(adapter, ask.printer, payload)
        if name is not None:  # nothing selected: OctoPrint answers 204 and does nothing
            await ask.on_printer("job_start", file=name)
    elif command == "cancel":
        if not answers.is_active(payload):
            ask.may("job_cancel")
            raise Refused(
                409, "Printer is neither printing nor paused, 'cancel' command cannot be performed"
            )
        await ask.on_printer("job_cancel")
    elif command == "restart":
        ask.may("job_start")
        if state != "paused":
            raise Refused(409, "Printer does not have an active print job or is not paused")
        await ask.on_printer("job_cancel")
        await ask.on_printer("job_start", file=payload["file"])
    else:
        action = members.get("action", "toggle")
        if action not in ("pause", "resume", "toggle"):
            raise bad("action is invalid")
        ask.may("job_pause")
        if state not in ("printing", "paused"):
            raise Refused(
                409, "Printer is neither printing nor paused, 'pause' command cannot be performed"
            )
        if action == "toggle":
            action = "resume" if state == "paused" else "pause"
        if action == "pause" and state == "printing":
            await ask.on_printer("job_pause")
        elif action == "resume" and state == "paused":
            await ask.on_printer("job_resume")
    return _no_content()


# -- files ------------------------------------------------------------------------------
async def files(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    listed = (await ask.call("files"))["files"]
    records = await adapter.records(ask)
    answer: dict[str, Any] = {
        "files": [
            answers.file_object(f, ask.base, [r for r in records if r["file"] == f["name"]])
            for f in listed
        ]
    }
    if adapter.jobs is not None:
        usage = await asyncio.to_thread(shutil.disk_usage, adapter.jobs.files.directory)
        answer.update(free=usage.free, total=usage.total)
    return web.json_response(answer)


async def file_info(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    stored = await ask.call("file", file=request.match_info["name"])
    records = [r for r in await adapter.records(ask) if r["file"] == stored["name"]]
    return web.json_response(answers.file_object(stored, ask.base, records))


async def file_command(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    members = await body(request)
    command = members.get("command")
    if command not in ("select", "slice", "analyse", "copy", "move"):
        raise bad("command is invalid")
    stored = await ask.call("file", file=request.match_info["name"])
    if command != "select":
        raise bad(f"{command} is not supported")
    ask.may("job_start")
    summary, payload = await adapter.job_state(ask)
    if answers.is_active(payload):
        raise Refused(409, "Printer is already printing, cannot select a new file")
    start = members.get("print") is True
    if start and not answers.operational(summary["state"]):
        raise Refused(409, NOT_OPERATIONAL)
    adapter.selected[ask.printer] = stored["name"]
    if start:
        await ask.on_printer("job_start", file=stored["name"])
    return _no_content()


async def file_delete(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    name = request.match_info["name"]
    await ask.call("file_delete", file=name)
    for printer, selected in list(adapter.selected.items()):
        if selected == name:
            del adapter.selected[printer]
    return _no_content()


async def upload(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    ask.may("job_start")
    if adapter.jobs is None:
        raise Refused(404, "No file storage")
    try:
        stored, fields = await receive_upload(request)
    except FileError as exc:
        raise Refused(exc.status, exc.message) from None
    truthy = ("true", "1", "yes", "on")
    start = fields.get("print", "").lower() in truthy
    select = start or fields.get("select", "").lower() in truthy
    if select:
        adapter.selected[ask.printer] = stored.name
    if start:
        try:
            await ask.on_printer("job_start", file=stored.name)
        except Refused as exc:
            raise Refused(409, f"Uploaded, but could not print: {exc.message}") from None
    answer = answers.upload(stored.name, ask.base, selected=select, printing=start)
    upload_event = {
        "name": stored.name,
        "path": stored.name,
        "target": "local",
        "select": select,
        "print": start,
        "effective_select": select,
        "effective_print": start,
    }
    await adapter.broadcast(ask.printer, {"event": {"type": "Upload", "payload": upload_event}})
    location = answer["files"]["local"]["refs"]["resource"]
    return web.json_response(answer, status=201, headers={"Location": location})


async def download(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.StreamResponse:
    stored = await ask.call("file", file=request.match_info["name"])
    assert adapter.jobs is not None  # the route exists only with a job manager
    return web.FileResponse(
        adapter.jobs.files.path(stored["name"]),
        headers={"Content-Type": "text/x-gcode"},
    )


async def appkeys_probe(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return _no_content()


async def appkeys_request(
    adapter: OctoPrintAdapter, request: web.Request, ask: Ask
) -> web.Response:
    members = await body(request)
    app, user = members.get("app"), members.get("user")
    if not isinstance(app, str) or not app.strip() or len(app) > MAX_APP_CHARS:
        raise bad("app must be the application's name")
    if user is not None and (not isinstance(user, str) or len(user) > MAX_APP_CHARS):
        raise bad("user must be a name")
    pending = adapter.appkeys.ask(app.strip(), user, ask.printer, request.remote or "?")
    location = f"{ask.base}/plugin/appkeys/request/{pending.token}"
    return web.json_response(
        # no page of the dashboard decides yet: the decision is appkey_decide (docs/octoprint.md)
        {"app_token": pending.token, "auth_dialog": None},
        status=201,
        headers={"Location": location},
    )


async def appkeys_poll(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    pending = adapter.appkeys.poll(request.match_info["token"], ask.printer)
    if pending is None or pending.decision == "denied":
        return error(404, "No pending application key request with that token")
    if pending.decision == "approved":
        return web.json_response({"api_key": pending.secret})
    return web.json_response({"message": "Awaiting decision"}, status=202)


async def not_found(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return error(404, "The requested URL was not found on the server.")


def setup(
    app: web.Application, api: Api, jobs: JobManager | None, printer_names: list[str]
) -> OctoPrintAdapter:
    """Every printer's OctoPrint at ``/octoprint/<printer>/``, the default one's at ``/``
    (and at ``//api``: one popular client doubles the slash)."""
    config = app[GATEWAY].config
    default = config.octoprint.default_printer or next(iter(printer_names), None)
    adapter = OctoPrintAdapter(api, jobs, default)
    api.define(*adapter.appkeys.definitions())
    get, post, delete = "GET", "POST", "DELETE"
    api_routes: list[tuple[str, str, Handler, bool]] = [
        (get, "/version", version, False),
        (get, "/server", server, False),
        (get, "/settings", settings, False),
        (get, "/printerprofiles", profiles, False),
        (get, "/currentuser", current_user, True),
        (post, "/login", login, False),
        (get, "/connection", connection, False),
        (post, "/connection", connection_command, False),
        (get, "/printer", printer, False),
        (get, "/printer/tool", _heaters("tool"), False),
        (post, "/printer/tool", tool_command, False),
        (get, "/printer/bed", _heaters("bed"), False),
        (post, "/printer/bed", bed_command, False),
        (post, "/printer/printhead", printhead, False),
        (post, "/printer/command", command, False),
        (get, "/printer/sd", sd, False),
        (post, "/printer/sd", sd, False),
        (get, "/job", job, False),
        (post, "/job", job_command, False),
        (get, "/files/local", files, False),
        (post, "/files/local", upload, False),
        (get, "/files/local/{name}", file_info, False),
        (post, "/files/local/{name}", file_command, False),
        (delete, "/files/local/{name}", file_delete, False),
    ]
    roots = ["/octoprint/{printer}/api", "/octoprint/{printer}//api", "/api", "//api"]
    for root in roots:
        for method, path, handler, anonymous in api_routes:
            app.router.add_route(method, root + path, adapter.route(handler, anonymous=anonymous))
        # bare GET /api/files is Hydrogen's own listing (docs/protocol.md)
        if root != "/api":
            app.router.add_get(root + "/files", adapter.route(files))
    if jobs is not None:
        for root in ("/octoprint/{printer}", ""):
            app.router.add_get(root + "/downloads/files/local/{name}", adapter.route(download))
    for root in ("/octoprint/{printer}", "", "/"):
        app.router.add_get(root + "/sockjs/websocket", adapter.route(serve, anonymous=True))
    for root in ("/octoprint/{printer}", ""):
        appkeys = root + "/plugin/appkeys"
        app.router.add_get(appkeys + "/probe", adapter.route(appkeys_probe, anonymous=True))
        app.router.add_post(appkeys + "/request", adapter.route(appkeys_request, anonymous=True))
        app.router.add_get(
            appkeys + "/request/{token}", adapter.route(appkeys_poll, anonymous=True)
        )
    app.router.add_route(
        "*", "/octoprint/{printer}/{tail:.*}", adapter.route(not_found, anonymous=True)
    )
    return adapter
