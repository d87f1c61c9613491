"""The WebSocket transport of the one dispatch: one client frame in, exactly one reply out.

Independent of aiohttp: the WebSocket edge hands text to
:meth:`Dispatcher.handle_text` and the reply lands in the client's
:class:`~hydrogen.hub.Subscriber` queue. What a request means, who may send it
and how its members are checked is in its :class:`~hydrogen.api.Definition`;
this module only parses the frame, calls :meth:`~hydrogen.api.Api.call` and
wraps the payload in a reply frame.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hydrogen import protocol
from hydrogen.api import Api, Definition, Payload
from hydrogen.hub import Subscriber
from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, ProtocolError, Request, Role

log = logging.getLogger(__name__)

#: Long-running requests (a printer command waiting for its ``ok``) run as tasks
#: so one slow request never blocks the client's next frame; this bounds them.
MAX_PENDING_PER_SESSION = 32


@dataclass
class Session:
    """What the dispatcher knows about one connected client."""

    id: str
    identity: Identity
    subscriber: Subscriber
    remote: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def role(self) -> Role:
        return self.identity.role

    def send(self, frame: dict[str, Any]) -> None:
        self.subscriber.push_frame(frame)

    def cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()


@dataclass
class DispatchStats:
    total_requests: int = 0
    requests_by_type: Counter[str] = field(default_factory=Counter)
    errors_by_code: Counter[str] = field(default_factory=Counter)


class Dispatcher:
    """The WebSocket transport of :class:`~hydrogen.api.Api`: frames in, frames out."""

    def __init__(self, api: Api | None = None) -> None:
        self.api = api if api is not None else Api()
        self.stats = DispatchStats()

    def features(self, role: Role | None = None) -> list[str]:
        """Request types a WebSocket client may send, optionally only those ``role`` may use."""
        return self.api.names(role, websocket=True)

    def count_error(self, code: ErrorCode | str) -> None:
        self.stats.errors_by_code[str(code)] += 1

    def send_error(self, session: Session, exc: ProtocolError) -> None:
        self.count_error(exc.code)
        session.send(protocol.error_from_exception(exc))

    async def handle_text(self, session: Session, text: str | bytes) -> None:
        """Parse and run one frame; every failure becomes an error frame, never an exception.

        A bug anywhere on the way (parser, role check, handler, reply encoder) is a
        ``server_error`` for this one frame: a 1011 close would punish every other
        request on the connection for it.
        """
        try:
            await self._handle_text(session, text)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._server_error(session, None, None, "the server failed to handle this frame")

    async def _handle_text(self, session: Session, text: str | bytes) -> None:
        self.stats.total_requests += 1
        try:
            request = protocol.parse(text)
        except ProtocolError as exc:
            self.stats.requests_by_type["invalid"] += 1
            self.send_error(session, exc)
            return
        definition = self.api.get(request.type)
        if definition is not None and not definition.websocket:
            definition = None
        self.stats.requests_by_type[request.type if definition else "unknown"] += 1
        if definition is None:
            self.send_error(
                session,
                ProtocolError(
                    ErrorCode.UNKNOWN_TYPE,
                    f"unknown request type {request.type!r}",
                    {"type": request.type, "known": self.features(session.role)},
                    request_id=request.id,
                ),
            )
            return
        if not definition.background:
            await self._run(session, definition, request)
            return
        if len(session.tasks) >= MAX_PENDING_PER_SESSION:
            self.send_error(
                session,
                ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    "too many requests still pending on this connection",
                    {"pending": len(session.tasks), "retry_after": 1.0},
                    request_id=request.id,
                ),
            )
            return
        task = asyncio.create_task(self._run(session, definition, request))
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def _run(self, session: Session, definition: Definition, request: Request) -> None:
        try:
            payload = await self.api.call(
                definition,
                request.body,
                session.identity,
                session=session,
                request_id=request.id,
                transport="websocket",
                remote=session.remote or None,
            )
        except ProtocolError as exc:
            if exc.request_id is None:
                exc.request_id = request.id
            self.send_error(session, exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            self._server_error(
                session, request.type, request.id, "the server failed to handle this request"
            )
            return
        if payload is None:
            return  # the handler answered itself (subscribe: the reply before retained frames)
        try:
            session.send(reply_frame(definition, request, payload))
        except Exception:  # unencodable (NaN, a set, too deep for json.dumps)
            self._server_error(session, request.type, request.id, "the reply could not be encoded")

    def _server_error(
        self,
        session: Session,
        request_type: str | None,
        request_id: protocol.RequestId | None,
        message: str,
    ) -> None:
        """Log the current exception under a fresh incident id and send that id to the client.

        The id is the only link between what a user reports and the traceback in the
        log; the client learns nothing else about the failure.
        """
        incident = secrets.token_hex(6)
        log.exception("incident %s: %s (request type %r)", incident, message, request_type)
        details: dict[str, Any] = {"incident": incident}
        if request_type is not None:
            details["type"] = request_type
        try:
            self.send_error(
                session,
                ProtocolError(ErrorCode.SERVER_ERROR, message, details, request_id=request_id),
            )
        except Exception:
            # Not even the error frame could be queued; the log line has the incident.
            log.exception("incident %s: the server_error frame could not be sent", incident)


def reply_frame(definition: Definition, request: Request, payload: Payload) -> dict[str, Any]:
    """The WebSocket envelope of a payload: ``type``, the topic it snapshots, the ``id``."""
    frame: dict[str, Any] = {"type": definition.reply_type}
    if definition.topic is not None:
        frame["topic"] = definition.topic(payload)
    frame.update(payload)
    if request.id is not None:
        frame["id"] = request.id
    return frame
