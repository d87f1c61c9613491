"""HTTP interface to the printers, for scripts (the same roles as the WebSocket)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hydrogen.printers.manager import MAX_GCODE_CHARS, PrinterManager, run_command
from hydrogen.printers.printer import PrinterUnavailable
from hydrogen.protocol import ErrorCode, ProtocolError, Role
from hydrogen.server import auth
from hydrogen.server.errors import json_error, raise_error

PRINTERS = web.AppKey("printers", PrinterManager)

_STATUS_FOR = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.UNAVAILABLE: 409,
    ErrorCode.PRINTER_ERROR: 502,
}


def _printer(request: web.Request) -> Any:
    try:
        return request.app[PRINTERS].get(request.match_info["name"])
    except ProtocolError as exc:
        raise_error(404, exc.code, exc.message, exc.details)


async def list_printers(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    manager = request.app[PRINTERS]
    return web.json_response({"printers": [p.summary() for p in manager.printers.values()]})


async def get_printer(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    return web.json_response(_printer(request).summary())


async def temperature_history(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    frame = _printer(request).history_frame()
    del frame["type"], frame["topic"]
    return web.json_response(frame)


async def command(request: web.Request) -> web.Response:
    auth.require(request, Role.CONTROL)
    printer = _printer(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    gcode = body.get("gcode") if isinstance(body, dict) else None
    if not isinstance(gcode, str) or not gcode.strip() or len(gcode) > MAX_GCODE_CHARS:
        return json_error(
            400,
            ErrorCode.INVALID_MESSAGE,
            'body must be JSON {"gcode": "<one or more lines>"}',
            {"max_chars": MAX_GCODE_CHARS},
        )
    try:
        result = await run_command(printer, gcode)
    except ProtocolError as exc:
        return json_error(_STATUS_FOR.get(exc.code, 400), exc.code, exc.message, exc.details)
    return web.json_response({"printer": printer.name, **result})


async def emergency_stop(request: web.Request) -> web.Response:
    auth.require(request, Role.CONTROL)
    printer = _printer(request)
    try:
        printer.emergency_stop()
    except PrinterUnavailable as exc:
        return json_error(409, ErrorCode.UNAVAILABLE, str(exc), {"printer": printer.name})
    return web.json_response({"printer": printer.name, "emergency_stop": "sent"})


async def reconnect(request: web.Request) -> web.Response:
    """Open the link again (after an emergency stop or a halt)."""
    auth.require(request, Role.CONTROL)
    printer = _printer(request)
    printer.reconnect()
    return web.json_response({"printer": printer.name, "reconnect": "requested"}, status=202)


def setup(app: web.Application, manager: PrinterManager) -> None:
    app[PRINTERS] = manager
    app.router.add_get("/api/printers", list_printers)
    app.router.add_get("/api/printers/{name}", get_printer)
    app.router.add_get("/api/printers/{name}/temperature/history", temperature_history)
    app.router.add_post("/api/printers/{name}/command", command)
    app.router.add_post("/api/printers/{name}/emergency_stop", emergency_stop)
    app.router.add_post("/api/printers/{name}/reconnect", reconnect)
