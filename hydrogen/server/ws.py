"""The hydrogen-protocol WebSocket endpoint (thin I/O around hub and dispatcher).

Each connection has a reader (this handler: size and rate checks, then the
dispatcher) and a writer task draining the client's hub queue, so a client
that stops reading never blocks anyone else and can pin only a bounded amount
of memory before it is cut off with close code 4001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from hydrogen import protocol
from hydrogen.dispatch import Session
from hydrogen.hub import Subscriber, SubscriberOverflow
from hydrogen.protocol import SUBPROTOCOL, CloseCode, ErrorCode, ProtocolError
from hydrogen.server import auth
from hydrogen.server import session as cookie_session
from hydrogen.server.credentials import Login
from hydrogen.server.errors import ErrorResponse, json_error
from hydrogen.server.keys import CREDENTIALS, GATEWAY, LIMITER, SOCKETS
from hydrogen.server.limits import TokenBucket
from hydrogen.server.wsframing import direct_writer

log = logging.getLogger(__name__)

#: Seconds a close handshake may take before the transport is simply closed.
CLOSE_TIMEOUT = 2.0


def hard_frame_limit(max_frame_bytes: int) -> int:
    """The largest client frame that still gets a ``too_large`` error before the close."""
    return max(2 * max_frame_bytes, max_frame_bytes + 65536)


def offered_subprotocols(request: web.Request) -> list[str]:
    header = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    return [p.strip() for p in header.split(",") if p.strip()]


def is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def _refuse(request: web.Request) -> tuple[web.Response | None, auth.Authenticated | None]:
    """Every check that happens before the upgrade, in the documented order."""
    gateway = request.app[GATEWAY]
    if SUBPROTOCOL not in offered_subprotocols(request):
        return json_error(
            400,
            ErrorCode.INVALID_MESSAGE,
            f"the WebSocket handshake must offer the subprotocol {SUBPROTOCOL!r}",
            {"offered": offered_subprotocols(request)[:8], "required": SUBPROTOCOL},
        ), None
    if gateway.shutting_down:
        return json_error(
            503, ErrorCode.UNAVAILABLE, "the gateway is shutting down", headers={"Retry-After": "5"}
        ), None
    reason = request.app[LIMITER].refusal(request.remote or "")
    if reason is not None:
        gateway.connections.refused_by_reason[reason] += 1
        status = 503 if reason == "max_connections" else 429
        code = ErrorCode.TOO_MANY_CONNECTIONS
        message = (
            "the gateway has reached its connection limit"
            if status == 503
            else "too many connections from this address"
        )
        return json_error(
            status, code, message, {"limit": reason}, headers={"Retry-After": "10"}
        ), None
    try:
        authenticated = auth.check(request, allow_query=True)
    except ErrorResponse as exc:
        limited = exc.response.status == 429
        refused = "auth_rate_limited" if limited else "auth_failed"
        gateway.connections.refused_by_reason[refused] += 1
        gateway.dispatcher.count_error(ErrorCode.RATE_LIMITED if limited else ErrorCode.AUTH_FAILED)
        return exc.response, None
    identity = authenticated.identity
    if identity.via == "cookie" and not cookie_session.origin_allowed(request):
        # Browsers send cookies on cross-site handshakes: cross-site WebSocket hijacking.
        gateway.connections.refused_by_reason["forbidden_origin"] += 1
        gateway.dispatcher.count_error(ErrorCode.FORBIDDEN)
        return cookie_session.origin_refused(request), None
    return None, authenticated


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    await auth.prepare(request, allow_query=True)  # a stored key's slow hash, off the loop
    refusal, authenticated = _refuse(request)
    if refusal is not None:
        return refusal
    assert authenticated is not None
    identity = authenticated.identity
    gateway = request.app[GATEWAY]
    limits = gateway.config.limits
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=limits.heartbeat_seconds or None,
        # Above the soft limit the client gets a too_large error frame before
        # the 1009 close; past the hard limit aiohttp closes with 1009 itself.
        # aiohttp refuses a message of exactly max_msg_size bytes, hence the + 1.
        max_msg_size=hard_frame_limit(limits.max_frame_bytes) + 1,
        # Compression would be per client and per frame, defeating encode-once fan-out.
        compress=False,
        timeout=CLOSE_TIMEOUT,
    )
    try:
        await ws.prepare(request)
    except ConnectionResetError:
        # The client hung up while its handshake was being answered: routine on flaky
        # links and port scans, and nothing was set up yet. (aiohttp's
        # ClientConnectionResetError is a ConnectionResetError.)
        log.debug("client from %s hung up during the handshake", request.remote)
        gateway.connections.refused_by_reason["hung_up"] += 1
        # A fresh response: aiohttp finds the transport closed when it writes this one
        # and drops the connection quietly (returning the half-prepared WebSocket
        # would make it close that, which raises). 499: nginx's "client closed request".
        return web.Response(status=499, reason="Client Closed Request")

    ip = request.remote or ""
    limiter = request.app[LIMITER]
    limiter.acquire(ip)
    gateway.connections.active += 1
    gateway.connections.total += 1
    subscriber = gateway.attach(identity)  # only the topics and printers it may see
    session = Session(subscriber.client_id, identity, subscriber, remote=ip)
    writer: asyncio.Task[None] | None = None
    cut: list[asyncio.Task[None]] = []  # holds the cut-off task while it runs
    login = _log_in(request, ws, session, authenticated)
    try:
        request.app[SOCKETS].add(ws)
        session.send(gateway.welcome_frame(session) | {"subscriptions": ["status"]})
        gateway.hub.subscribe(subscriber, ["status"])
        # A fresh status (counting this connection) so a client sees data at once.
        session.send(gateway.status_frame(identity))
        writer = asyncio.create_task(_write(ws, subscriber), name=f"ws-writer-{session.id}")
        subscriber.direct = direct_writer(request.transport)
        subscriber.on_overflow = lambda: cut.append(
            asyncio.ensure_future(_cut_slow(ws, subscriber, writer))
        )
        log.info(
            "client %s connected from %s (%r, role %s, via %s)",
            session.id,
            ip,
            identity.name,
            identity.role.label,
            identity.via,
        )
        if login.expires_at is not None:
            login.task = asyncio.create_task(
                _expiry(login, gateway.config.auth.token_refresh_warning_seconds),
                name=f"ws-expiry-{session.id}",
            )
        await _read(ws, session, request)
    except Exception:
        log.exception("client %s: connection handler failed", session.id)
        with contextlib.suppress(Exception):
            await _close(ws, CloseCode.INTERNAL_ERROR, b"internal error")
    finally:
        _log_out(request, login)
        session.cancel_tasks()
        gateway.hub.detach(subscriber)
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        # Out of the set shutdown waits on: aiohttp keeps a closed response alive, and a
        # gateway that ever had a client waited its flush for nobody on every stop.
        request.app[SOCKETS].discard(ws)
        gateway.connections.active -= 1
        limiter.release(ip)
        log.info("client %s disconnected (close code %s)", session.id, ws.close_code)
    return ws


def _log_in(
    request: web.Request,
    ws: web.WebSocketResponse,
    session: Session,
    authenticated: auth.Authenticated,
) -> Login:
    """Register the connection where revocation and token expiry can end it."""

    async def end(code: int, reason: str, frame: dict[str, Any]) -> None:
        # Straight to the socket, not through the queue: the close follows at once.
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(protocol.encode(frame))
        await _close(ws, code, reason.encode())

    login = Login(session, end, authenticated.expires_at)
    request.app[CREDENTIALS].logins[session.id] = login
    request.app[GATEWAY].connections.active_by_role[session.role.label] += 1
    return login


def _log_out(request: web.Request, login: Login) -> None:
    request.app[CREDENTIALS].logins.pop(login.session.id, None)
    if login.task is not None:
        login.task.cancel()
    by_role = request.app[GATEWAY].connections.active_by_role
    by_role[login.role_label] -= 1
    if by_role[login.role_label] <= 0:
        del by_role[login.role_label]


async def _expiry(login: Login, warning: float) -> None:
    """Warn before the token expires; end the connection if no refresh came in time."""
    warned_for: float | None = None
    while login.expires_at is not None:
        login.changed.clear()
        expires = login.expires_at
        left = expires - time.time()
        if (
            warned_for != expires
            and left > warning
            and await _changed_within(login, left - warning)
        ):
            continue
        if warned_for != expires and left > 0:
            warned_for = expires
            login.session.send(
                {
                    "type": "auth_status",
                    "status": "token_expiring",
                    "expires_at": protocol.utc_iso(expires),
                    "refresh_required": True,
                }
            )
        if await _changed_within(login, expires - time.time()):
            continue
        log.info(
            "client %s: token of %r expired; closing with %d",
            login.session.id,
            login.identity.name,
            CloseCode.TOKEN_EXPIRED,
        )
        await login.end(
            CloseCode.TOKEN_EXPIRED,
            "token expired",
            {"type": "auth_status", "status": "expired", "expires_at": protocol.utc_iso(expires)},
        )
        return


async def _changed_within(login: Login, seconds: float) -> bool:
    if seconds <= 0:
        return login.changed.is_set()
    try:
        async with asyncio.timeout(seconds):
            await login.changed.wait()
    except TimeoutError:
        return False
    return True


async def _read(ws: web.WebSocketResponse, session: Session, request: web.Request) -> None:
    gateway = request.app[GATEWAY]
    limits = gateway.config.limits
    dispatcher = gateway.dispatcher
    bucket = TokenBucket(limits.messages_per_second, limits.message_burst)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            data: str = msg.data
            if (
                len(data) > limits.max_frame_bytes // 4
                and len(data.encode("utf-8", "surrogatepass")) > limits.max_frame_bytes
            ):
                dispatcher.stats.total_requests += 1
                await _close_with_error(
                    ws,
                    session,
                    dispatcher,
                    ProtocolError(
                        ErrorCode.TOO_LARGE,
                        f"frame larger than {limits.max_frame_bytes} bytes",
                        {"max_frame_bytes": limits.max_frame_bytes},
                    ),
                    CloseCode.MESSAGE_TOO_BIG,
                )
                return
            wait = bucket.take()
            if wait:
                dispatcher.stats.total_requests += 1
                dispatcher.send_error(
                    session,
                    ProtocolError(
                        ErrorCode.RATE_LIMITED,
                        "too many messages; slow down",
                        {
                            "retry_after": round(wait, 3),
                            "messages_per_second": limits.messages_per_second,
                        },
                        request_id=_request_id(data),
                    ),
                )
                continue
            await dispatcher.handle_text(session, data)
        elif msg.type is WSMsgType.BINARY:
            dispatcher.stats.total_requests += 1
            if bucket.take():
                continue  # a flood of binary frames is rate limited like any other
            dispatcher.send_error(
                session,
                ProtocolError(
                    ErrorCode.INVALID_MESSAGE, "binary frames are not supported; send JSON text"
                ),
            )
        elif msg.type is WSMsgType.ERROR:
            log.info("client %s: %s", session.id, ws.exception())
            return


def _request_id(data: str) -> protocol.RequestId | None:
    """The id of a frame we refuse unread, so even that refusal carries it."""
    try:
        return protocol.parse(data).id
    except protocol.ProtocolError as exc:
        return exc.request_id


async def _write(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    try:
        while not ws.closed:
            batch = await subscriber.next_batch()
            if not batch:
                return
            for text in batch:
                await ws.send_str(text)
            subscriber.mark_sent(len(batch))
    except SubscriberOverflow:
        return  # _cut_slow closes the socket
    except (ConnectionError, RuntimeError) as exc:
        log.debug("writer for %s stopped: %s", subscriber.client_id, exc)


async def _cut_slow(
    ws: web.WebSocketResponse, subscriber: Subscriber, writer: asyncio.Task[None]
) -> None:
    log.warning(
        "client %s stopped reading (%d frames dropped); disconnecting with %d",
        subscriber.client_id,
        subscriber.dropped_total,
        CloseCode.SLOW_CONSUMER,
    )
    writer.cancel()
    await _close(ws, CloseCode.SLOW_CONSUMER, b"slow consumer: outbound backlog overflowed")


async def _close_with_error(
    ws: web.WebSocketResponse, session: Session, dispatcher, exc: ProtocolError, code: int
) -> None:
    dispatcher.count_error(exc.code)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(protocol.encode(protocol.error_from_exception(exc)))
    await _close(ws, code, exc.message.encode()[:120])


async def _close(ws: web.WebSocketResponse, code: int, message: bytes) -> None:
    """Close without waiting on a peer that may never read (drain=False, bounded)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT + 1):
            await ws.close(code=code, message=message, drain=False)


async def close_all(app: web.Application, code: int = CloseCode.GOING_AWAY) -> None:
    """Close every open WebSocket (graceful shutdown)."""
    sockets = list(app[SOCKETS])
    await asyncio.gather(*(_close(ws, code, b"server shutting down") for ws in sockets))
