"""The printers' requests, defined once for WebSocket, HTTP and the adapters to come.

Each handler returns plain data; the transports add their envelopes. Where the
WebSocket and HTTP used to differ, the one behaviour is documented in
docs/protocol.md: ``emergency_stop`` without a printer stops every printer the
caller may see (``POST /api/emergency_stop``), with one it stops that one
(``POST /api/printers/{printer}/emergency_stop``), and both answer
``{"printers": [...], "emergency_stop": "sent"}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hydrogen.api import Call, Definition, HttpRoute, Param
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.printer import CommandFailed, Printer, PrinterUnavailable
from hydrogen.protocol import ErrorCode, ProtocolError, Role

MAX_GCODE_CHARS = 8192
MAX_GCODE_LINES = 64

_PRINTER = Param("printer", str, doc="the printer's name")
_PRINTER_REQUIRED = Param("printer", str, required=True, doc="the printer's name")


def _topic(kind: str) -> Any:
    return lambda payload: f"printer/{payload['printer']}/{kind}"


def printer_requests(manager: PrinterManager) -> tuple[Definition, ...]:
    async def printers(call: Call) -> dict[str, Any]:
        return {"printers": [p.summary() for p in manager.visible(call.identity)]}

    async def printer(call: Call) -> dict[str, Any]:
        return manager.get(call["printer"], call.identity).summary()

    async def temperature_history(call: Call) -> dict[str, Any]:
        found = manager.get(call["printer"], call.identity)
        return found.history_payload(call.get("since"))

    async def command(call: Call) -> dict[str, Any]:
        found = manager.get(call["printer"], call.identity)
        return {"printer": found.name, **await run_command(found, call["gcode"])}

    async def emergency_stop(call: Call) -> dict[str, Any]:
        name = call.get("printer")
        if name is not None:
            targets = [manager.get(name, call.identity)]
        else:
            targets = manager.visible(call.identity)
        stopped = []
        for target in targets:
            try:
                target.emergency_stop()
                stopped.append(target.name)
            except PrinterUnavailable:
                continue
        if name is not None and not stopped:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                targets[0].unavailable_reason(),
                {"printer": name, "state": targets[0].state.value},
            )
        payload: dict[str, Any] = {"printers": stopped, "emergency_stop": "sent"}
        if name is not None:
            payload["printer"] = targets[0].name
        return payload

    async def reconnect(call: Call) -> dict[str, Any]:
        found = manager.get(call["printer"], call.identity)
        found.reconnect()
        return {"printer": found.name, "reconnect": "requested"}

    async def disconnect(call: Call) -> dict[str, Any]:
        found = manager.get(call["printer"], call.identity)
        found.disconnect()
        return {"printer": found.name, "disconnect": "requested"}

    return (
        Definition(
            "printers",
            printers,
            http=(HttpRoute("GET", "/api/printers"),),
            summary="every printer's summary",
        ),
        Definition(
            "printer",
            printer,
            params=(_PRINTER,),
            printer="printer",
            http=(HttpRoute("GET", "/api/printers/{printer}"),),
            summary="one printer's summary",
        ),
        Definition(
            "temperature_history",
            temperature_history,
            params=(_PRINTER, Param("since", float)),
            printer="printer",
            topic=_topic("temperature"),
            http=(HttpRoute("GET", "/api/printers/{printer}/temperature/history"),),
            summary="the temperature samples kept for the chart",
        ),
        Definition(
            "command",
            command,
            role=Role.CONTROL,
            params=(_PRINTER, Param("gcode", str, required=True, max_length=MAX_GCODE_CHARS)),
            printer="printer",
            reply="command_result",
            background=True,
            http=(HttpRoute("POST", "/api/printers/{printer}/command"),),
            summary="send G-code and wait for the printer's answer",
        ),
        Definition(
            "emergency_stop",
            emergency_stop,
            role=Role.CONTROL,
            params=(_PRINTER,),
            printer="printer",
            reply="emergency_stop_sent",
            http=(
                HttpRoute("POST", "/api/printers/{printer}/emergency_stop"),
                HttpRoute("POST", "/api/emergency_stop"),
            ),
            summary="M112 to one printer, or to every printer the caller may see",
        ),
        Definition(
            "printer_reconnect",
            reconnect,
            role=Role.CONTROL,
            params=(_PRINTER,),
            printer="printer",
            reply="printer_reconnecting",
            http=(HttpRoute("POST", "/api/printers/{printer}/reconnect", status=202),),
            summary="open the printer's link again (after an emergency stop or a halt)",
        ),
        Definition(
            "printer_disconnect",
            disconnect,
            role=Role.CONTROL,
            params=(_PRINTER,),
            printer="printer",
            reply="printer_disconnecting",
            http=(HttpRoute("POST", "/api/printers/{printer}/disconnect", status=202),),
            summary="close the printer's link and keep it closed until printer_reconnect",
        ),
    )


async def run_command(printer: Printer, gcode: str) -> dict[str, Any]:
    """One command's round trip, its failures as the protocol's errors."""
    if len(gcode.splitlines()) > MAX_GCODE_LINES:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"at most {MAX_GCODE_LINES} lines per command",
            {"member": "gcode"},
        )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        response = await printer.command(gcode)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, str(exc), {"member": "gcode"}) from None
    except PrinterUnavailable as exc:
        raise ProtocolError(
            ErrorCode.UNAVAILABLE, str(exc), {"printer": printer.name, "state": printer.state.value}
        ) from None
    except CommandFailed as exc:
        raise ProtocolError(ErrorCode.PRINTER_ERROR, str(exc), {"printer": printer.name}) from None
    return {
        "gcode": gcode,
        "response": response,
        "duration_seconds": round(loop.time() - started, 4),
    }
