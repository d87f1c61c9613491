"""Request dispatch: one client frame in, exactly one reply (or error) out.

Independent of aiohttp: the WebSocket edge hands text to
:meth:`Dispatcher.handle_text` and the reply lands in the client's
:class:`~hydrogen.hub.Subscriber` queue. Handlers are registered by the layers
that own the feature (core, printers, jobs), each with the role it needs, so
the permission check lives in one place.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hydrogen import protocol
from hydrogen.hub import Subscriber
from hydrogen.protocol import ErrorCode, ProtocolError, Request, Role

log = logging.getLogger(__name__)

Reply = dict[str, Any] | None
Handler = Callable[["Session", Request], Awaitable[Reply]]

#: Long-running requests (a printer command waiting for its ``ok``) run as tasks
#: so one slow request never blocks the client's next frame; this bounds them.
MAX_PENDING_PER_SESSION = 32


@dataclass
class Session:
    """What the dispatcher knows about one connected client."""

    id: str
    role: Role
    subscriber: Subscriber
    remote: str = ""
    key_name: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def send(self, frame: dict[str, Any]) -> None:
        self.subscriber.push_frame(frame)

    def cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()


@dataclass(frozen=True)
class Route:
    handler: Handler
    role: Role
    background: bool


@dataclass
class DispatchStats:
    total_requests: int = 0
    requests_by_type: Counter[str] = field(default_factory=Counter)
    errors_by_code: Counter[str] = field(default_factory=Counter)


class Dispatcher:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self.stats = DispatchStats()

    def register(
        self,
        frame_type: str,
        handler: Handler,
        *,
        role: Role = Role.MONITOR,
        background: bool = False,
    ) -> None:
        if frame_type in self._routes:
            raise ValueError(f"request type {frame_type!r} registered twice")
        self._routes[frame_type] = Route(handler, role, background)

    def features(self, role: Role | None = None) -> list[str]:
        """Request types, optionally only those ``role`` may use."""
        return sorted(t for t, r in self._routes.items() if role is None or role >= r.role)

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
        route = self._routes.get(request.type)
        self.stats.requests_by_type[request.type if route else "unknown"] += 1
        if route is None:
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
        if session.role < route.role:
            self.send_error(
                session,
                ProtocolError(
                    ErrorCode.FORBIDDEN,
                    f"'{request.type}' needs the {route.role.label} role",
                    {"required_role": route.role.label, "role": session.role.label},
                    request_id=request.id,
                ),
            )
            return
        if not route.background:
            await self._run(session, route, request)
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
        task = asyncio.create_task(self._run(session, route, request))
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def _run(self, session: Session, route: Route, request: Request) -> None:
        try:
            reply = await route.handler(session, request)
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
        if reply is not None:
            try:
                session.send(reply)
            except Exception:  # unencodable (NaN, a set, too deep for json.dumps)
                self._server_error(
                    session, request.type, request.id, "the reply could not be encoded"
                )

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
