"""OctoPrint's file endpoints: the list, one file, select and print, delete, upload and
download, each through the ``files``, ``file``, ``file_delete``, ``job_history`` and
``job_start`` requests (uploads are received as Hydrogen's own are).
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from aiohttp import web

from hydrogen.jobs.files import FileError
from hydrogen.jobs.requests import file_error
from hydrogen.octoprint import answers
from hydrogen.octoprint.adapter import (
    NOT_OPERATIONAL,
    Ask,
    OctoPrintAdapter,
    Refused,
    bad,
    body,
    no_content,
)
from hydrogen.server import audit_edge
from hydrogen.server.jobs_api import receive_upload, send_file


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
        await adapter.start(ask, stored["name"])
    return no_content()


async def file_delete(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    name = request.match_info["name"]
    await ask.call("file_delete", file=name)
    for printer, selected in list(adapter.selected.items()):
        if selected == name:
            del adapter.selected[printer]
    return no_content()


async def upload(adapter: OctoPrintAdapter, request: web.Request, ask: Ask) -> web.Response:
    ask.may("job_start")
    if adapter.jobs is None:
        raise Refused(404, "No file storage")
    try:
        stored, fields = await receive_upload(request)
    except FileError as exc:
        audit_edge.record(
            request, ask.identity, "upload", outcome=str(file_error(exc).code), via="octoprint"
        )
        raise Refused(exc.status, exc.message) from None
    audit_edge.record(request, ask.identity, "upload", target=stored.name, via="octoprint")
    truthy = ("true", "1", "yes", "on")
    start = fields.get("print", "").lower() in truthy
    select = start or fields.get("select", "").lower() in truthy
    if select:
        adapter.selected[ask.printer] = stored.name
    if start:
        try:
            await adapter.start(ask, stored.name)
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
    """The stored file, as Hydrogen's own download sends it (jobs_api.send_file: a
    file deleted while it is sent arrives whole; one gone before is OctoPrint's 404)."""
    stored = await ask.call("file", file=request.match_info["name"])
    assert adapter.jobs is not None  # the route exists only with a job manager
    name = stored["name"]
    sent = await send_file(request, adapter.jobs.files.path(name), {"Content-Type": "text/x-gcode"})
    if sent is None:
        raise Refused(404, f"no file named {name!r}")
    return sent
