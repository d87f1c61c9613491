"""OctoPrint's REST API, one instance per printer, translated into the one dispatch.

Every handler here reads its request, calls :meth:`hydrogen.api.Api.call` with the
operation's name (``job_start``, ``command``, ``file_delete``...), the caller's
identity and the printer of the path (:class:`~hydrogen.octoprint.adapter.Ask`), and
shapes the payload or the refusal into what OctoPrint answers
(:mod:`hydrogen.octoprint.answers`). The role rule, the printer scope, the validation
and the audit are the dispatch's; nothing here runs an operation of its own.
"""

from __future__ import annotations

import logging
import secrets
import time

from aiohttp import web

from hydrogen import __version__
from hydrogen.api import Api, Payload
from hydrogen.jobs.manager import JobManager
from hydrogen.octoprint import answers
from hydrogen.octoprint import file_routes as files
from hydrogen.octoprint import printer_routes as printer
from hydrogen.octoprint.adapter import (
    ALREADY_PRINTING,
    NOT_OPERATIONAL,
    Ask,
    Handler,
    OctoPrintAdapter,
    Refused,
    bad,
    body,
    error,
    no_content,
)
from hydrogen.octoprint.appkeys import MAX_APP_CHARS, AppKeys, UnknownPrinter
from hydrogen.octoprint.auth import presented_key
from hydrogen.octoprint.push import serve
from hydrogen.protocol import utc_iso
from hydrogen.server.keys import CREDENTIALS, GATEWAY

log = logging.getLogger(__name__)


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
    return no_content()


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
            raise Refused(409, ALREADY_PRINTING)
        name = _job_file(adapter, ask.printer, payload)
        if name is not None:  # nothing selected: OctoPrint answers 204 and does nothing
            await adapter.start(ask, name)
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
        await adapter.start(ask, payload["file"], cancelled=True)
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
    return no_content()


async def appkeys_probe(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return no_content()


async def appkeys_request(
    adapter: OctoPrintAdapter, request: web.Request, ask: Ask
) -> web.Response:
    members = await body(request)
    app, user = members.get("app"), members.get("user")
    if not isinstance(app, str) or not app.strip() or len(app) > MAX_APP_CHARS:
        raise bad("app must be the application's name")
    if user is not None and (not isinstance(user, str) or len(user) > MAX_APP_CHARS):
        raise bad("user must be a name")
    try:
        pending = adapter.appkeys.ask(app, user, ask.printer, request.remote or "?")
    except UnknownPrinter:
        return error(404, f"No printer named {ask.printer!r}")
    location = f"{ask.base}/plugin/appkeys/request/{pending.token}"
    return web.json_response(
        # OctoPrint's page where a person decides: here, the gateway's dashboard
        {"app_token": pending.token, "auth_dialog": f"{ask.origin}/#appkey-{pending.handle}"},
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
    appkeys = AppKeys(app.get(CREDENTIALS), printer_names, publish=app[GATEWAY].hub.publish)
    adapter = OctoPrintAdapter(api, jobs, default, appkeys)
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
        (get, "/printer", printer.printer, False),
        (get, "/printer/tool", printer.heaters("tool"), False),
        (post, "/printer/tool", printer.tool_command, False),
        (get, "/printer/bed", printer.heaters("bed"), False),
        (post, "/printer/bed", printer.bed_command, False),
        (post, "/printer/printhead", printer.printhead, False),
        (post, "/printer/command", printer.command, False),
        (get, "/printer/sd", printer.sd, False),
        (post, "/printer/sd", printer.sd, False),
        (get, "/job", job, False),
        (post, "/job", job_command, False),
        (get, "/files/local", files.files, False),
        (post, "/files/local", files.upload, False),
        (get, "/files/local/{name}", files.file_info, False),
        (post, "/files/local/{name}", files.file_command, False),
        (delete, "/files/local/{name}", files.file_delete, False),
    ]
    roots = ["/octoprint/{printer}/api", "/octoprint/{printer}//api", "/api", "//api"]
    for root in roots:
        for method, path, handler, anonymous in api_routes:
            app.router.add_route(method, root + path, adapter.route(handler, anonymous=anonymous))
        # bare GET /api/files is Hydrogen's own listing (docs/protocol.md)
        if root != "/api":
            app.router.add_get(root + "/files", adapter.route(files.files))
    if jobs is not None:
        for root in ("/octoprint/{printer}", ""):
            app.router.add_get(
                root + "/downloads/files/local/{name}", adapter.route(files.download)
            )
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
