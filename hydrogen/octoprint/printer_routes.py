"""OctoPrint's printer endpoints: state and temperatures, tools, bed, print head,
G-code commands, and the SD card Hydrogen has not.

Each command becomes G-code sent through the ``command`` request
(:meth:`OctoPrintAdapter.gcode`); each read, the ``printer`` and
``temperature_history`` requests.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hydrogen.api import Payload
from hydrogen.octoprint import answers
from hydrogen.octoprint.adapter import (
    Ask,
    Handler,
    OctoPrintAdapter,
    bad,
    body,
    error,
    no_content,
)

_AXES = ("x", "y", "z")


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1", "yes")


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``²`` and ``٣``, which ``int``
    refuses or reads as another number."""
    return text.isascii() and text.isdigit()


def _limit(request: web.Request) -> int | None:
    """``limit=n``: the last n samples; anything else (0, -1, garbage, more digits
    than any history has samples) is no limit."""
    text = request.query.get("limit", "")
    if not _digits(text) or len(text) > 9:
        return None
    return int(text) or None


def _number(value: Any, message: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(message)
    if not -10000 <= value <= 10000:
        raise bad(message)
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:g}"


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


def heaters(prefix: str) -> Handler:
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
        return no_content()
    elif command == "select":
        lines.append(f"T{_tool_index(members.get('tool'), 'tool is invalid')}")
    elif command == "extrude":
        amount = _number(members.get("amount"), "amount is invalid")
        speed = _number(members.get("speed", 300), "speed is invalid")
        lines += ["M83", f"G1 E{_fmt(amount)} F{_fmt(speed)}", "M82"]
    else:
        lines.append(f"M221 S{_fmt(_number(members.get('factor'), 'factor is invalid'))}")
    await adapter.gcode(ask, *lines)
    return no_content()


def _tool_index(tool: Any, message: str) -> int:
    if not isinstance(tool, str) or not tool.startswith("tool"):
        raise bad(message)
    if not _digits(tool[4:]) or len(tool) > 7:  # tool0 .. tool999
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
        return no_content()
    degrees = _number(members.get("target"), "target is invalid")
    await adapter.gcode(ask, f"M140 S{_fmt(degrees)}")
    return no_content()


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
    return no_content()


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
    return no_content()


async def sd(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    return error(404, "SD support is disabled")
