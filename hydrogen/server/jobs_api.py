"""HTTP for files and jobs, including the OctoPrint subset slicers upload with.

PrusaSlicer, OrcaSlicer, SuperSlicer and Cura's OctoPrint connection call
``GET /api/version`` (it must carry ``api``, and ``text`` must start with
"OctoPrint") and then ``POST /api/files/local`` with a multipart ``file`` and
optional ``select``/``print`` fields, authenticating with ``X-Api-Key``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from hydrogen import __version__
from hydrogen.jobs.files import FileError, StoredFile, Upload, safe_download_name
from hydrogen.jobs.job import JobError, check_file
from hydrogen.jobs.manager import JobManager
from hydrogen.protocol import ErrorCode, ProtocolError, Role
from hydrogen.server import auth
from hydrogen.server.errors import json_error

JOBS = web.AppKey("jobs", JobManager)
#: Multipart framing overhead tolerated above the file size limit.
_MULTIPART_SLACK = 64 * 1024
_TRUE = ("true", "1", "yes", "on")


def _file_error(exc: FileError) -> web.Response:
    codes = {404: ErrorCode.NOT_FOUND, 409: ErrorCode.CONFLICT, 413: ErrorCode.TOO_LARGE}
    return json_error(
        exc.status, codes.get(exc.status, ErrorCode.INVALID_MESSAGE), exc.message, exc.details
    )


def _job_error(exc: Exception) -> web.Response:
    if isinstance(exc, FileError):
        return _file_error(exc)
    if isinstance(exc, ProtocolError):
        status = 404 if exc.code is ErrorCode.NOT_FOUND else 400
        return json_error(status, exc.code, exc.message, exc.details)
    return json_error(409, ErrorCode.CONFLICT, str(exc))


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(64 * 1024):
        yield chunk


async def _receive_upload(request: web.Request) -> tuple[StoredFile, dict[str, str]]:
    """Receive the multipart ``file`` into a temporary file and collect the small
    form fields; only once the whole body has arrived and passed every check does
    the file replace one of the same name. Any failure leaves the stored file as it
    was."""
    manager = request.app[JOBS]
    limit = manager.files.max_bytes
    if request.content_length is not None and request.content_length > limit + _MULTIPART_SLACK:
        raise FileError(413, f"file larger than {limit} bytes", max_bytes=limit)
    if not request.content_type.startswith("multipart/"):
        raise FileError(400, "send the file as multipart/form-data in a field named 'file'")
    received: list[Upload] = []
    try:
        try:
            fields = await _read_parts(request, received)
        except (HttpProcessingError, ValueError, AssertionError) as exc:
            # Hostile or broken framing (bad part headers, NUL bytes, no closing
            # boundary, a body cut short): a client error.
            message = getattr(exc, "message", None) or str(exc)
            raise FileError(
                400, "malformed multipart body", reason=str(message).splitlines()[0][:120]
            ) from None
        except ConnectionError:
            # The client went away mid-upload: routine, not a server error.
            raise FileError(400, "the upload was interrupted") from None
        # A file sent to be printed is checked line by line first, as job_start would:
        # an unprintable re-upload must not replace a printable file.
        check = check_file if fields.get("print", "").lower() in _TRUE else None
        stored = await manager.files.commit(
            received[0], may_replace=manager.file_in_use, check=check
        )
    finally:
        for upload in received:
            upload.discard()
    return stored, fields


async def _read_parts(request: web.Request, received: list[Upload]) -> dict[str, str]:
    """Read the whole body: the ``file`` part into ``received`` (not yet stored), the
    other fields returned. Returns only once the closing boundary has been read."""
    manager = request.app[JOBS]
    reader = await request.multipart()
    fields: dict[str, str] = {}
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file":
            if received:
                raise FileError(400, "one file per upload")
            received.append(await manager.files.receive(part.filename or "", _chunks(part)))
        elif part.name and len(fields) < 16:
            fields[part.name] = (await part.read_chunk(1024)).decode("utf-8", "replace").strip()
    if not received:
        raise FileError(400, "no multipart field named 'file'")
    return fields


async def _start_if_asked(request: web.Request, stored: StoredFile, fields: dict[str, str]) -> Any:
    if fields.get("print", "").lower() not in _TRUE:
        return None
    manager = request.app[JOBS]
    printer = (
        fields.get("printer")
        or manager.config.default_printer
        or next(iter(manager.printers.printers), None)
    )
    if printer is None:
        raise JobError("no printer is configured to print on")
    return await manager.start_job(printer, stored.name)


async def upload(request: web.Request) -> web.Response:
    auth.require(request, Role.CONTROL)
    try:
        stored, fields = await _receive_upload(request)
    except FileError as exc:
        return _file_error(exc)
    body: dict[str, Any] = {"file": stored.as_dict()}
    try:
        job = await _start_if_asked(request, stored, fields)
    except (JobError, FileError, ProtocolError) as exc:
        body["job_error"] = str(exc)
        job = None
    if job is not None:
        body["job"] = {"job_id": job.id, "printer": job.printer, "state": job.state.value}
    return web.json_response(body, status=201, headers={"Location": f"/api/files/{stored.name}"})


async def octoprint_upload(request: web.Request) -> web.Response:
    """``POST /api/files/local`` in OctoPrint's shape."""
    auth.require(request, Role.CONTROL)
    try:
        stored, fields = await _receive_upload(request)
        job = await _start_if_asked(request, stored, fields)
    except FileError as exc:
        return _file_error(exc)
    except (JobError, ProtocolError) as exc:
        return json_error(409, ErrorCode.CONFLICT, f"uploaded, but could not print: {exc}")
    location = f"{request.scheme}://{request.host}/api/files/local/{stored.name}"
    return web.json_response(
        {
            "done": True,
            "files": {
                "local": {
                    "name": stored.name,
                    "display": stored.name,
                    "path": stored.name,
                    "origin": "local",
                    "refs": {"resource": location, "download": f"{location}/content"},
                }
            },
            "effectivePrint": job is not None,
            "effectiveSelect": fields.get("select", "").lower() in _TRUE,
        },
        status=201,
        headers={"Location": location},
    )


async def octoprint_version(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    return web.json_response(
        {"api": "0.1", "server": "1.9.0", "text": f"OctoPrint 1.9.0 (Hydrogen {__version__})"}
    )


async def list_files(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    files = await request.app[JOBS].files.list()
    return web.json_response({"files": [f.as_dict() for f in files]})


async def get_file(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    try:
        stored = await request.app[JOBS].files.get(request.match_info["name"])
    except FileError as exc:
        return _file_error(exc)
    return web.json_response(stored.as_dict())


async def file_content(request: web.Request) -> web.StreamResponse:
    auth.require(request, Role.MONITOR)
    manager = request.app[JOBS]
    try:
        stored = await manager.files.get(request.match_info["name"])
    except FileError as exc:
        return _file_error(exc)
    return web.FileResponse(
        manager.files.path(stored.name),
        headers={
            "Content-Type": "text/x-gcode",
            "Content-Disposition": f'attachment; filename="{safe_download_name(stored.name)}"',
        },
    )


async def delete_file(request: web.Request) -> web.Response:
    auth.require(request, Role.CONTROL)
    manager = request.app[JOBS]
    try:
        # the in-use check and the removal happen with no await between them
        await manager.files.delete(request.match_info["name"], may_delete=manager.file_in_use)
    except FileError as exc:
        return _file_error(exc)
    return web.Response(status=204)


async def get_job(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    manager = request.app[JOBS]
    try:
        name = manager.printers.get(request.match_info["name"]).name
    except ProtocolError as exc:
        return _job_error(exc)
    frame = manager.job_frame(name)
    del frame["type"], frame["topic"]
    return web.json_response(frame)


async def control_job(request: web.Request) -> web.Response:
    """``{"action": "start", "file": ...}`` or ``{"action": "pause"|"resume"|"cancel"}``."""
    auth.require(request, Role.CONTROL)
    manager = request.app[JOBS]
    try:
        body = await request.json()
    except ValueError:
        body = None
    action = body.get("action") if isinstance(body, dict) else None
    name = request.match_info["name"]
    try:
        if action == "start":
            file = body.get("file")
            if not isinstance(file, str):
                return json_error(400, ErrorCode.INVALID_MESSAGE, "'file' is required")
            job = await manager.start_job(name, file)
            return web.json_response(
                {
                    "job_id": job.id,
                    "state": job.state.value,
                    "printer": job.printer,
                    "file": job.file,
                },
                status=201,
            )
        if action == "pause":
            await manager.runner(name).pause()
        elif action == "resume":
            await manager.runner(name).resume()
        elif action == "cancel":
            job_id = body.get("job_id")
            manager.cancel(name, job_id if isinstance(job_id, str) else None)
        else:
            return json_error(
                400,
                ErrorCode.INVALID_MESSAGE,
                'body must be {"action": "start"|"pause"|"resume"|"cancel"}',
            )
    except (JobError, FileError, ProtocolError) as exc:
        return _job_error(exc)
    frame = manager.job_frame(manager.printers.get(name).name)
    del frame["type"], frame["topic"]
    return web.json_response(frame)


async def job_history(request: web.Request) -> web.Response:
    auth.require(request, Role.MONITOR)
    manager = request.app[JOBS]
    printer = request.query.get("printer")
    if printer is not None:
        try:
            printer = manager.printers.get(printer).name
        except ProtocolError as exc:
            return _job_error(exc)
    limit = 100
    with contextlib.suppress(ValueError):
        limit = max(1, min(500, int(request.query.get("limit", "100"))))
    records = await manager.store.history(printer=printer, limit=limit)
    return web.json_response({"jobs": [r.as_dict() for r in records]})


def setup(app: web.Application, manager: JobManager) -> None:
    app[JOBS] = manager
    r = app.router
    r.add_get("/api/version", octoprint_version)
    r.add_get("/api/files", list_files)
    r.add_post("/api/files", upload)
    r.add_post("/api/files/local", octoprint_upload)
    r.add_get("/api/files/local/{name}", get_file)
    r.add_get("/api/files/local/{name}/content", file_content)
    r.add_get("/api/files/{name}", get_file)
    r.add_get("/api/files/{name}/content", file_content)
    r.add_delete("/api/files/{name}", delete_file)
    r.add_delete("/api/files/local/{name}", delete_file)
    r.add_get("/api/printers/{name}/job", get_job)
    r.add_post("/api/printers/{name}/job", control_job)
    r.add_get("/api/jobs/history", job_history)
