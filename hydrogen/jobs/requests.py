"""The jobs' and files' requests, defined once for WebSocket, HTTP and the adapters to come.

Uploads and downloads stay HTTP routes of their own (server/jobs_api.py): a
streamed multipart body or file is not a request with members.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from hydrogen.api import Call, Definition, HttpRoute, Param
from hydrogen.jobs.files import FileError
from hydrogen.jobs.job import JobError
from hydrogen.jobs.manager import JobManager
from hydrogen.protocol import ErrorCode, ProtocolError, Role

_PRINTER = Param("printer", str, doc="the printer's name")
_FILE = Param("file", str, required=True, max_length=256, doc="a stored file's name")
_JOB_ROUTE = "/api/printers/{printer}/job"
# (/api/files/local/... is OctoPrint's, answered in its shape by hydrogen.octoprint)
_FILE_ROUTES = ("/api/files/{file}",)

#: FileError's HTTP status -> the protocol's error code (the status comes back from it).
_FILE_ERROR_CODES = {
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
}


@contextlib.contextmanager
def protocol_errors() -> Iterator[None]:
    """The job engine's and file store's refusals as the protocol's errors."""
    try:
        yield
    except JobError as exc:
        raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from None
    except FileError as exc:
        raise file_error(exc) from None


def file_error(exc: FileError) -> ProtocolError:
    code = _FILE_ERROR_CODES.get(exc.status, ErrorCode.INVALID_MESSAGE)
    return ProtocolError(code, exc.message, exc.details)


def _who(call: Call) -> str | None:
    """Who asked, as the job history shows it: the identity's name (never its key)."""
    return call.identity.name or None


def _job_topic(payload: dict[str, Any]) -> str:
    return f"printer/{payload['printer']}/job"


def job_requests(manager: JobManager) -> tuple[Definition, ...]:
    printers = manager.printers

    async def jobs(call: Call) -> dict[str, Any]:
        return {"jobs": [manager.job_payload(p.name) for p in printers.visible(call.identity)]}

    async def job(call: Call) -> dict[str, Any]:
        return manager.job_payload(printers.get(call["printer"], call.identity).name)

    async def history(call: Call) -> dict[str, Any]:
        name = call.get("printer")
        if name is not None:
            name = printers.get(name, call.identity).name
        records = await manager.store.history(printer=name, limit=call["limit"])
        return {"jobs": [r.as_dict() for r in records if call.identity.sees(r.printer)]}

    async def start(call: Call) -> dict[str, Any]:
        name = printers.get(call["printer"], call.identity).name
        with protocol_errors():
            started = await manager.start_job(name, call["file"], by=_who(call))
        return started.payload(manager.queue(name))

    async def pause(call: Call) -> dict[str, Any]:
        name = printers.get(call["printer"], call.identity).name
        with protocol_errors():
            await manager.runner(name).pause()
        return manager.job_payload(name)

    async def resume(call: Call) -> dict[str, Any]:
        name = printers.get(call["printer"], call.identity).name
        with protocol_errors():
            await manager.runner(name).resume()
        return manager.job_payload(name)

    async def cancel(call: Call) -> dict[str, Any]:
        name = printers.get(call["printer"], call.identity).name
        with protocol_errors():
            cancelled = manager.cancel(name, call.get("job_id"), by=_who(call))
        return cancelled.payload(manager.queue(name))

    control = {"role": Role.CONTROL, "printer": "printer", "reply": "job", "topic": _job_topic}
    return (
        Definition(
            "jobs",
            jobs,
            http=(HttpRoute("GET", "/api/jobs"),),
            summary="every printer's current or last job",
        ),
        Definition(
            "job",
            job,
            params=(_PRINTER,),
            printer="printer",
            topic=_job_topic,
            http=(HttpRoute("GET", _JOB_ROUTE),),
            summary="one printer's current or last job",
        ),
        Definition(
            "job_history",
            history,
            params=(
                _PRINTER,
                Param("limit", int, minimum=1, maximum=500, clamp=True, default=100),
            ),
            printer="printer",
            http=(HttpRoute("GET", "/api/jobs/history"),),
            summary="finished jobs, newest first",
        ),
        Definition(
            "job_start",
            start,
            params=(_PRINTER, _FILE),
            http=(HttpRoute("POST", _JOB_ROUTE, status=201, action="start"),),
            summary="print a stored file (queued when the printer has a job)",
            **control,
        ),
        Definition(
            "job_pause",
            pause,
            params=(_PRINTER,),
            background=True,
            http=(HttpRoute("POST", _JOB_ROUTE, action="pause"),),
            summary="pause the running job",
            **control,
        ),
        Definition(
            "job_resume",
            resume,
            params=(_PRINTER,),
            background=True,
            http=(HttpRoute("POST", _JOB_ROUTE, action="resume"),),
            summary="resume the paused job",
            **control,
        ),
        Definition(
            "job_cancel",
            cancel,
            params=(_PRINTER, Param("job_id", str, max_length=64)),
            http=(HttpRoute("POST", _JOB_ROUTE, action="cancel"),),
            summary="cancel the running job, or remove a queued one by job_id",
            **control,
        ),
    )


def file_requests(manager: JobManager) -> tuple[Definition, ...]:
    async def files(call: Call) -> dict[str, Any]:
        return {"files": [f.as_dict() for f in await manager.files.list()]}

    async def file(call: Call) -> dict[str, Any]:
        with protocol_errors():
            return (await manager.files.get(call["file"])).as_dict()

    async def delete(call: Call) -> dict[str, Any]:
        with protocol_errors():
            # the in-use check and the removal happen with no await between them
            await manager.files.delete(call["file"], may_delete=manager.file_in_use)
        return {"file": call["file"], "deleted": True}

    return (
        Definition(
            "files",
            files,
            http=(HttpRoute("GET", "/api/files"),),
            summary="the stored G-code files",
        ),
        Definition(
            "file",
            file,
            params=(_FILE,),
            http=tuple(HttpRoute("GET", path) for path in _FILE_ROUTES),
            summary="one stored file's metadata",
        ),
        Definition(
            "file_delete",
            delete,
            role=Role.CONTROL,
            params=(_FILE,),
            reply="file_deleted",
            http=tuple(HttpRoute("DELETE", path, status=204) for path in _FILE_ROUTES),
            summary="delete a stored file (not while a job prints or waits for it)",
        ),
    )
