"""The adapter's state and its one way into the dispatch.

:class:`Ask` is one OctoPrint request on its way into :meth:`hydrogen.api.Api.call`
(who asks, for which printer); :class:`OctoPrintAdapter` keeps what OctoPrint has and
Hydrogen does not, small: the file each printer has *selected* (OctoPrint prints the
selected file; Hydrogen starts a named one), the sessions of passive logins, and the
push sockets open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from hydrogen.api import Api, Payload
from hydrogen.identity import Identity
from hydrogen.jobs.manager import JobManager
from hydrogen.octoprint import answers
from hydrogen.octoprint.appkeys import AppKeys
from hydrogen.octoprint.auth import forbidden, identify
from hydrogen.protocol import ErrorCode, ProtocolError, Role
from hydrogen.server import http_api

log = logging.getLogger(__name__)

#: How long a G-code command is waited for before OctoPrint's 204 is answered anyway
#: (OctoPrint answers at once; a G28 on a real printer takes longer than clients wait).
COMMAND_WAIT_SECONDS = 2.0
#: How long a message to all push sockets waits for one of them.
BROADCAST_WAIT_SECONDS = 1.0
NOT_OPERATIONAL = "Printer is not operational"
ALREADY_PRINTING = "Printer already has an active print job, did you mean 'restart'?"

#: The HTTP status of each error code on OctoPrint's API: Hydrogen's own
#: (:data:`hydrogen.server.http_api.STATUS_FOR`, so a new code has one here too) but
#: where OctoPrint answers otherwise.
STATUS_FOR: Mapping[ErrorCode, int] = {
    **http_api.STATUS_FOR,
    # OctoPrint answers a missing or wrong key with 403, never 401
    ErrorCode.AUTH_FAILED: 403,
    # OctoPrint answers 409 where the printer cannot do what is asked
    ErrorCode.PRINTER_ERROR: 409,
}


class Refused(Exception):
    """Answer with OctoPrint's ``{"error": message}`` and this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refusal(exc: ProtocolError) -> Refused:
    return Refused(STATUS_FOR.get(exc.code, 400), exc.message)


def bad(message: str) -> Refused:
    return Refused(400, message)


@dataclass
class Ask:
    """One OctoPrint request on its way into the dispatch: who, for which printer."""

    api: Api
    identity: Identity
    printer: str
    #: The URL of this printer's OctoPrint root (file refs point below it).
    base: str
    #: The client's address, for the audit trail.
    remote: str | None = None

    @property
    def origin(self) -> str:
        """The gateway's own root as the client reached it (the dashboard is there)."""
        scheme, _, rest = self.base.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    async def call(self, name: str, **members: Any) -> Payload:
        try:
            payload = await self.api.call(
                name, members, self.identity, transport="octoprint", remote=self.remote
            )
        except ProtocolError as exc:
            raise refusal(exc) from None
        return payload or {}

    async def on_printer(self, name: str, **members: Any) -> Payload:
        return await self.call(name, printer=self.printer, **members)

    def as_identity(self, identity: Identity) -> Ask:
        return dataclasses.replace(self, identity=identity)

    def may(self, request_name: str) -> None:
        """The dispatch's role rule for an adapter-only step (select a file)."""
        definition = self.api.get(request_name)
        if definition is not None:
            try:
                self.api.authorize(definition, self.identity)
            except ProtocolError as exc:
                raise refusal(exc) from None


Handler = Callable[["OctoPrintAdapter", web.Request, Ask], Awaitable[web.StreamResponse]]


class Pushed(Protocol):
    """An open push socket, as the adapter tells it of an upload."""

    ask: Ask

    async def send(self, message: Any) -> None: ...

    def drop(self) -> None:
        """End the connection at once, whatever it has not sent."""


class OctoPrintAdapter:
    def __init__(
        self, api: Api, jobs: JobManager | None, default_printer: str | None, appkeys: AppKeys
    ) -> None:
        self.api = api
        self.jobs = jobs
        self.default_printer = default_printer
        self.selected: dict[str, str] = {}
        self.sessions: dict[str, Identity] = {}
        self.sockets: set[Pushed] = set()
        self.appkeys = appkeys
        self._background: set[asyncio.Task[Any]] = set()
        self._starting: dict[str, asyncio.Lock] = {}

    # -- the request's edge ---------------------------------------------------------------
    def route(self, handler: Handler, *, anonymous: bool = False) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            identity = await identify(request)
            if identity is None and not anonymous:
                return forbidden()
            printer = request.match_info.get("printer") or self.default_printer
            prefix = f"/octoprint/{printer}" if "printer" in request.match_info else ""
            if printer is None:
                return error(404, "No printer is configured")
            if identity is not None and not identity.sees(printer):
                return error(404, f"No printer named {printer!r}")
            ask = Ask(
                self.api,
                identity or Identity(Role.MONITOR, "none", ""),
                printer,
                f"{request.scheme}://{request.host}{prefix}",
                request.remote,
            )
            try:
                return await handler(self, request, ask)
            except Refused as exc:
                return error(exc.status, exc.message)
            except web.HTTPException:
                raise
            except Exception:
                # OctoPrint's shape for our own failure too: its clients read {"error"}
                log.exception(
                    "octoprint: unhandled error serving %s %s", request.method, request.path
                )
                return error(500, "Internal server error")

        return handle

    async def summary(self, ask: Ask) -> Payload:
        return await ask.on_printer("printer")

    async def operational_summary(self, ask: Ask) -> Payload:
        summary = await self.summary(ask)
        if not answers.operational(summary["state"]):
            raise Refused(409, NOT_OPERATIONAL)
        return summary

    async def gcode(self, ask: Ask, *lines: str) -> None:
        """Send G-code through the ``command`` request; answer once it is done, or
        after :data:`COMMAND_WAIT_SECONDS` with the command still running."""
        task = asyncio.ensure_future(ask.on_printer("command", gcode="\n".join(lines)))
        done, _ = await asyncio.wait({task}, timeout=COMMAND_WAIT_SECONDS)
        if not done:
            self._background.add(task)
            task.add_done_callback(self._finished_late)
            return
        task.result()  # raises its refusal

    def _finished_late(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("octoprint: a command answered late failed: %s", task.exception())

    async def start(self, ask: Ask, name: str, *, cancelled: bool = False) -> None:
        """Print ``name`` unless the printer has a job (OctoPrint's 409; Hydrogen's
        own ``job_start`` would queue it), or ``cancelled`` (a restart: the job just
        cancelled may not have ended yet). One start at a time per printer: the check
        and the start of two requests at once would both find no job."""
        lock = self._starting.setdefault(ask.printer, asyncio.Lock())
        async with lock:
            if not cancelled and answers.is_active(await ask.on_printer("job")):
                raise Refused(409, ALREADY_PRINTING)
            await ask.on_printer("job_start", file=name)

    async def job_state(self, ask: Ask) -> tuple[Payload, Payload]:
        summary = await self.summary(ask)
        job = await ask.on_printer("job")
        return summary, job

    async def stored(self, ask: Ask, name: str | None) -> Payload | None:
        if name is None:
            return None
        try:
            return await ask.call("file", file=name)
        except Refused as exc:
            if exc.status == 404:
                return None
            raise

    def session_identity(self, auth: str) -> Identity | None:
        """The identity of ``<name>:<session>`` from a passive login."""
        name, _, session = auth.partition(":")
        identity = self.sessions.get(session)
        return identity if identity is not None and identity.name == name else None

    async def broadcast(self, printer: str, message: dict[str, Any]) -> None:
        """Tell every push socket of ``printer``, all at once; one whose client does
        not take the message within :data:`BROADCAST_WAIT_SECONDS` (it stopped
        reading: the send waits on a full socket) is dropped, so the request that
        broadcasts (an upload) is never held up by it."""
        targets = [socket for socket in list(self.sockets) if socket.ask.printer == printer]
        await asyncio.gather(*(self._tell(socket, message) for socket in targets))

    async def _tell(self, socket: Pushed, message: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(socket.send(message), BROADCAST_WAIT_SECONDS)
        except (ConnectionError, RuntimeError):
            pass
        except TimeoutError:
            log.info(
                "octoprint: a push client took no message in %ss; dropped", BROADCAST_WAIT_SECONDS
            )
            self.sockets.discard(socket)
            socket.drop()

    async def records(self, ask: Ask) -> list[Payload]:
        return (await ask.call("job_history", printer=ask.printer, limit=500))["jobs"]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


#: Bodies of OctoPrint's commands are small JSON objects.
MAX_BODY_BYTES = 64 * 1024


def no_content() -> web.Response:
    return web.Response(status=204)


async def body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a command; OctoPrint's 400 (413) otherwise.

    Read to its end: one ``read`` returns what has arrived so far, which for a body
    in several TCP segments is only its first part."""
    too_large = Refused(413, f"Request body larger than {MAX_BODY_BYTES} bytes")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise too_large
    raw = bytearray()
    while len(raw) <= MAX_BODY_BYTES:
        chunk = await request.content.read(MAX_BODY_BYTES + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_BODY_BYTES:
        raise too_large
    try:
        value = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        raise bad("Malformed JSON body in request") from None
    if not isinstance(value, dict):
        raise bad("Expected content-type JSON with an object in the body")
    return value
