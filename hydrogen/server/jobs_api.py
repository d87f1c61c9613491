"""HTTP for files that is not a request with members: streamed uploads and downloads.

OctoPrint's API, its version probe and ``POST /api/files/local`` upload included, is
:mod:`hydrogen.octoprint`; it receives uploads with :func:`receive_upload`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from hydrogen.identity import Identity
from hydrogen.jobs.files import FileError, StoredFile, Upload, safe_download_name
from hydrogen.jobs.job import JobError, check_file
from hydrogen.jobs.manager import JobManager
from hydrogen.jobs.requests import file_error
from hydrogen.protocol import ProtocolError, Role
from hydrogen.server import audit_edge, auth
from hydrogen.server.http_api import error_response

JOBS = web.AppKey("jobs", JobManager)
#: Multipart framing overhead tolerated above the file size limit.
_MULTIPART_SLACK = 64 * 1024
_TRUE = ("true", "1", "yes", "on")


def _file_error(exc: FileError) -> web.Response:
    return error_response(file_error(exc))


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(64 * 1024):
        yield chunk


async def receive_upload(request: web.Request) -> tuple[StoredFile, dict[str, str]]:
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
    identity = request.get(_UPLOADER)
    if identity is None:
        return await manager.start_job(printer, stored.name)
    # As job_start would: a printer outside the uploader's scope does not exist.
    found = manager.printers.get(printer, identity).name
    try:
        job = await manager.start_job(found, stored.name, by=identity.name or None)
    except (JobError, FileError, ProtocolError) as exc:
        code = exc.code if isinstance(exc, ProtocolError) else "conflict"
        audit_edge.record(request, identity, "job_start", outcome=str(code), printer=found)
        raise
    audit_edge.record(request, identity, "job_start", printer=found, target=stored.name)
    return job


#: The identity an upload came from, for the job its ``print`` field starts.
_UPLOADER = web.RequestKey("uploader", Identity)


async def upload(request: web.Request) -> web.Response:
    identity = auth.require(request, Role.CONTROL)
    request[_UPLOADER] = identity
    try:
        stored, fields = await receive_upload(request)
    except FileError as exc:
        audit_edge.record(request, identity, "upload", outcome=str(file_error(exc).code))
        return _file_error(exc)
    audit_edge.record(request, identity, "upload", target=stored.name)
    body: dict[str, Any] = {"file": stored.as_dict()}
    try:
        job = await _start_if_asked(request, stored, fields)
    except (JobError, FileError, ProtocolError) as exc:
        body["job_error"] = str(exc)
        job = None
    if job is not None:
        body["job"] = {"job_id": job.id, "printer": job.printer, "state": job.state.value}
    return web.json_response(body, status=201, headers={"Location": f"/api/files/{stored.name}"})


#: What a download reads at a time, off the event loop.
DOWNLOAD_CHUNK_BYTES = 256 * 1024


async def send_file(
    request: web.Request, path: Path, headers: Mapping[str, str]
) -> web.StreamResponse | None:
    """Send a stored file from a handle opened first; None if it is gone.

    aiohttp's FileResponse opens the path only when it prepares, so a file deleted
    between the lookup and the open was an empty 404 (no error body), and a file
    replaced meanwhile could be another file than the one looked up. Here the file
    is opened first (off the loop): one deleted before that is the caller's 404, and
    one deleted or replaced while it is sent arrives whole, as it was. Range requests
    are not honoured (G-code is fetched whole by every client we know).
    """
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        return None
    try:
        response = web.StreamResponse(headers=headers)
        response.content_length = os.fstat(handle.fileno()).st_size
        await response.prepare(request)
        if request.method != "HEAD":
            while chunk := await asyncio.to_thread(handle.read, DOWNLOAD_CHUNK_BYTES):
                await response.write(chunk)
        await response.write_eof()
    finally:
        handle.close()
    return response


async def file_content(request: web.Request) -> web.StreamResponse:
    auth.require(request, Role.MONITOR)
    manager = request.app[JOBS]
    try:
        stored = await manager.files.get(request.match_info["name"])
    except FileError as exc:
        return _file_error(exc)
    headers = {
        "Content-Type": "text/x-gcode",
        "Content-Disposition": f'attachment; filename="{safe_download_name(stored.name)}"',
    }
    sent = await send_file(request, manager.files.path(stored.name), headers)
    if sent is None:
        return _file_error(FileError(404, f"no file named {stored.name!r}", file=stored.name))
    return sent


def setup(app: web.Application, manager: JobManager) -> None:
    """The routes that are not requests with members: streamed uploads and downloads
    (the other file and job routes come from the request definitions,
    server/http_api.py; OctoPrint's from hydrogen/octoprint)."""
    app[JOBS] = manager
    r = app.router
    r.add_post("/api/files", upload)
    r.add_get("/api/files/local/{name}/content", file_content)
    r.add_get("/api/files/{name}/content", file_content)
