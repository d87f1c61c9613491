"""The connection gate: every TCP connection, from accept to close, within a file budget.

aiohttp accepts every connection it is offered and leaves limits to the application
(aio-libs/aiohttp#675), and asyncio's own accept loop, out of file descriptors, logs a
traceback for every failed ``accept()`` (up to 100 per loop turn, on every turn): the
gateway went deaf to health checks and wrote 170 000 ``Too many open files`` lines in
20 s. So the gateway accepts for itself (:class:`Acceptor`) and decides about each
connection *before* any transport or protocol exists for it:

* the open files limit is split into a reserve (printers, the job database, uploads,
  logs, refusals in flight) and a connection budget (:func:`file_budget`);
* a connection that has not completed a request (a fresh one, or a keep-alive one
  between requests) is *waiting*; waiting connections are capped per address and in
  total, and must complete their request headers within ``limits.header_timeout``
  (aiohttp's ``keepalive_timeout``, whose timer starts at ``connection_made`` and after
  each response and is never extended by received bytes);
* when the budget or the waiting cap is full, a newcomer from an address that holds
  fewer waiting connections than the busiest address takes the place of that
  address's oldest waiting connection, so a health check gets in while a few addresses
  hold hundreds of half-sent requests; otherwise it is answered ``503`` (or ``429``)
  ``too_many_connections`` and closed at once, in the same loop turn as its accept.

``accept()`` failing with EMFILE is logged when it starts and once when it clears, with
the count, never per accept. The accounting (:class:`ConnectionGate`) knows nothing of
aiohttp or sockets, so it is tested with plain objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from hydrogen.config import LimitsConfig
from hydrogen.protocol import ErrorCode, error_frame

log = logging.getLogger(__name__)

#: Files the process keeps open whatever the clients do: stdio, the state lock, the
#: event loop and its self-pipe, listening sockets, executor threads, the journal and
#: sd_notify sockets, modules imported late, psutil's /proc and /sys reads.
RESERVE_PROCESS = 32
#: The SQLite job history: database, -wal, -shm, a rollback journal, temp files.
RESERVE_DATABASE = 8
#: A printer's serial device (a simulator's pty pair) and the file of the job it prints.
RESERVE_PER_PRINTER = 4
#: Uploads being written and files read for their metadata.
RESERVE_UPLOADS = 16
#: Sockets accepted in one loop turn only to be refused, and evicted ones still closing.
ACCEPT_BATCH = 16
#: Below this many connections the gateway would not be usable; it still starts.
MIN_CONNECTIONS = 8
#: Seconds between accept attempts while the process is out of file descriptors.
ACCEPT_RETRY_SECONDS = 0.5
#: What an unlimited RLIMIT_NOFILE counts as.
UNLIMITED_FILES = 1 << 20


@dataclass(frozen=True)
class FileBudget:
    """How the open files limit is shared out (documented in protocol.md §8.5)."""

    open_files: int
    reserve: int
    #: Connections of every kind (WebSocket, HTTP, waiting) open at once.
    connections: int
    #: WebSocket connections (``limits.max_connections``, lowered to fit).
    websockets: int
    #: Connections that have not completed a request, in total and per address.
    pending: int
    pending_per_ip: int


def file_budget(limits: LimitsConfig, printers: int, open_files: int) -> FileBudget:
    """Derive the connection caps from the open files limit.

    The waiting cap is at most a quarter of the budget and the WebSocket cap leaves
    room for it, so WebSocket clients can never take the places a health check or a
    new client needs to get its request in.
    """
    if open_files < 0 or open_files > UNLIMITED_FILES:
        open_files = UNLIMITED_FILES
    reserve = (
        RESERVE_PROCESS
        + RESERVE_DATABASE
        + RESERVE_PER_PRINTER * printers
        + RESERVE_UPLOADS
        + ACCEPT_BATCH
    )
    connections = max(MIN_CONNECTIONS, open_files - reserve)
    pending = max(1, min(limits.max_pending_connections, connections // 4))
    return FileBudget(
        open_files=open_files,
        reserve=reserve,
        connections=connections,
        websockets=max(0, min(limits.max_connections, connections - pending)),
        pending=pending,
        pending_per_ip=max(1, min(limits.max_pending_per_ip, pending)),
    )


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_open_files_limit() -> tuple[int, int, str | None]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: (before, after, why not).

    The soft limit is commonly 1024 with a hard limit of 524288 (systemd's default);
    only the soft one binds. Under the shipped unit LimitNOFILE= sets both and the
    system call filter forbids setrlimit, so there is nothing to do there.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft, soft, None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        return soft, soft, str(exc)
    return soft, hard, None


class Evictable(Protocol):
    def evict(self, reason: str) -> None: ...


class Connection:
    """One accepted TCP connection, as the gate counts it."""

    __slots__ = ("closed", "gate", "ip", "since", "target", "waiting")

    def __init__(self, gate: ConnectionGate, ip: str, now: float) -> None:
        self.gate = gate
        self.ip = ip
        self.since = now
        self.waiting = True
        self.closed = False
        #: What :meth:`ConnectionGate.evict` closes (the aiohttp handler), once known.
        self.target: Evictable | None = None

    def busy(self) -> None:
        """Its request's headers are complete: no longer waiting."""
        self.gate._leave_waiting(self)

    def idle(self) -> bool:
        """Its request is done: waiting again. False when there is no room to wait (the
        connection should be closed after its response instead of kept alive)."""
        return self.gate._rejoin_waiting(self)

    def lost(self) -> None:
        self.gate._release(self)


class ConnectionGate:
    """Counts connections by state and decides admissions and evictions."""

    def __init__(
        self,
        budget: FileBudget,
        *,
        refused: Counter[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self._clock = clock
        self.open = 0
        self.waiting_total = 0
        #: Waiting connections per address, oldest first (dicts keep insertion order).
        self._waiting: dict[str, dict[Connection, None]] = {}
        self.accepted = 0
        self.evicted = 0
        self.refused: Counter[str] = refused if refused is not None else Counter()

    # -- admission -------------------------------------------------------------------
    def admit(self, ip: str) -> Connection | str:
        """A new connection from ``ip``: its :class:`Connection`, or why it is refused."""
        if self.open >= self.budget.connections and not self._make_room(ip, "max_connections"):
            return self._refuse("max_connections")
        held = len(self._waiting.get(ip, ()))
        if held >= self.budget.pending_per_ip:
            return self._refuse("max_pending_per_ip")
        if self.waiting_total >= self.budget.pending and not self._make_room(
            ip, "max_pending_connections"
        ):
            return self._refuse("max_pending_connections")
        conn = Connection(self, ip, self._clock())
        self.open += 1
        self.accepted += 1
        self._add_waiting(conn)
        return conn

    def _refuse(self, reason: str) -> str:
        self.refused[reason] += 1
        return reason

    def _make_room(self, ip: str, reason: str) -> bool:
        """Evict the oldest waiting connection of the address holding the most, if that
        address holds more than ``ip`` does (so nobody is evicted in favour of an equal)."""
        held = len(self._waiting.get(ip, ()))
        busiest, most = None, held
        for address, conns in self._waiting.items():
            if len(conns) > most:
                busiest, most = address, len(conns)
        if busiest is None:
            return False
        victim = next(iter(self._waiting[busiest]))
        self.evict(victim, reason)
        return True

    def evict(self, conn: Connection, reason: str) -> None:
        """Refuse a waiting connection after all (it gets the refusal for ``reason``) and
        close it. Its file counts until it is really gone, but its place is free now:
        the accept batch in the reserve covers the difference."""
        self._release(conn)
        self.evicted += 1
        if conn.target is not None:
            conn.target.evict(reason)

    # -- state changes ---------------------------------------------------------------
    def _add_waiting(self, conn: Connection) -> None:
        conn.waiting = True
        conn.since = self._clock()
        self._waiting.setdefault(conn.ip, {})[conn] = None
        self.waiting_total += 1

    def _leave_waiting(self, conn: Connection) -> None:
        if conn.closed or not conn.waiting:
            return
        conn.waiting = False
        conns = self._waiting[conn.ip]
        del conns[conn]
        if not conns:
            del self._waiting[conn.ip]
        self.waiting_total -= 1

    def _rejoin_waiting(self, conn: Connection) -> bool:
        if conn.closed or conn.waiting:
            return not conn.closed
        if (
            len(self._waiting.get(conn.ip, ())) >= self.budget.pending_per_ip
            or self.waiting_total >= self.budget.pending
        ):
            return False
        self._add_waiting(conn)
        return True

    def _release(self, conn: Connection) -> None:
        if conn.closed:
            return
        self._leave_waiting(conn)
        conn.closed = True
        self.open -= 1

    # -- figures ---------------------------------------------------------------------
    def waiting_by_address(self) -> dict[str, int]:
        return {ip: len(conns) for ip, conns in self._waiting.items()}

    def oldest_waiting(self) -> Iterator[Connection]:
        for conns in self._waiting.values():
            yield from conns


# -- the aiohttp side ------------------------------------------------------------------

_MESSAGES = {
    "max_connections": (503, "the gateway has reached its connection limit"),
    "max_pending_connections": (
        503,
        "the gateway has too many connections that have not sent a request",
    ),
    "max_pending_per_ip": (
        429,
        "too many connections from this address that have not sent a request",
    ),
}
_REASONS = {429: "Too Many Requests", 503: "Service Unavailable"}

GATE = web.AppKey("gate", ConnectionGate)


def refusal_bytes(reason: str) -> bytes:
    """The whole HTTP response a refused connection gets, written before its request is
    read (it fits any socket's send buffer, so one non-blocking send writes it)."""
    status, message = _MESSAGES[reason]
    body = error_frame(ErrorCode.TOO_MANY_CONNECTIONS, message, {"limit": reason})
    del body["type"]
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Retry-After: 10\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


class GatedRequestHandler(web.RequestHandler):
    """aiohttp's handler, telling the gate when its connection is gone."""

    __slots__ = ("gate_connection",)

    def __init__(self, connection: Connection, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.gate_connection = connection

    def evict(self, reason: str) -> None:
        """Answer the refusal (the connection is between requests) and close."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(refusal_bytes(reason))
        self.force_close()  # closes the transport once the refusal is written

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gate_connection.lost()
        super().connection_lost(exc)


def request_connection(request: web.BaseRequest) -> Connection | None:
    protocol = request.protocol
    return protocol.gate_connection if isinstance(protocol, GatedRequestHandler) else None


@web.middleware
async def gate_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Marks the connection busy while a request runs (a WebSocket: until it closes)."""
    conn = request_connection(request)
    if conn is None:
        return await handler(request)
    conn.busy()
    kept = True
    try:
        response = await handler(request)
    finally:
        kept = conn.idle()
    if not kept:
        response.force_close()
    return response


class Acceptor:
    """Accepts on the listening sockets and hands admitted connections to aiohttp."""

    def __init__(
        self,
        gate: ConnectionGate,
        server: web.Server,
        handler_args: dict[str, Any],
        *,
        retry_seconds: float = ACCEPT_RETRY_SECONDS,
    ) -> None:
        self.gate = gate
        self._server = server
        self._handler_args = handler_args
        self._retry = retry_seconds
        self._sockets: list[socket.socket] = []
        self._paused: dict[int, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The current run of accept() failures for want of file descriptors.
        self.failures = 0
        self.failures_total = 0
        self._failing_since = 0.0
        self._failure: str = ""

    def start(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        for sock in sockets:
            sock.setblocking(False)
            self._sockets.append(sock)
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def stop(self) -> None:
        """Stop accepting (the sockets stay open: the caller owns them)."""
        assert self._loop is not None
        for sock in self._sockets:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
        for handle in self._paused.values():
            handle.cancel()
        self._paused.clear()
        self._sockets.clear()

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_files(sock, exc)
                    return
                # ECONNABORTED, EPROTO and the like: that one connection is gone.
                log.debug("accept failed: %s", exc)
                continue
            self._recovered()
            self._handle(conn, address)

    def _handle(self, conn: socket.socket, address: Any) -> None:
        ip = address[0] if isinstance(address, tuple) else ""
        decision = self.gate.admit(ip)
        if isinstance(decision, str):
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.send(refusal_bytes(decision))
            conn.close()
            return
        task = asyncio.ensure_future(self._connect(conn, decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, connection: Connection) -> None:
        assert self._loop is not None

        def factory() -> GatedRequestHandler:
            handler = GatedRequestHandler(
                connection, self._server, loop=self._loop, **self._handler_args
            )
            connection.target = handler
            return handler

        try:
            await self._loop.connect_accepted_socket(factory, conn)
        except OSError as exc:
            log.debug("connection from %s lost before it started: %s", connection.ip, exc)
            connection.lost()
            conn.close()
            return
        if connection.closed and connection.target is not None:
            connection.target.evict("max_connections")  # evicted while it was set up

    def _out_of_files(self, sock: socket.socket, exc: OSError) -> None:
        assert self._loop is not None
        if self.failures == 0:
            self._failing_since = time.monotonic()
            self._failure = exc.strerror or str(exc)
            log.warning(
                "cannot accept connections: %s (open files limit %d, %d connections open); "
                "retrying every %.1f s, the count follows when it clears",
                self._failure,
                open_files_limit(),
                self.gate.open,
                self._retry,
            )
        self.failures += 1
        self.failures_total += 1
        fd = sock.fileno()
        if fd in self._paused:
            return
        self._loop.remove_reader(fd)
        self._paused[fd] = self._loop.call_later(self._retry, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._paused.pop(sock.fileno(), None)
        if sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def _recovered(self) -> None:
        if self.failures:
            log.warning(
                "accepting connections again: accept() failed %d times (%s) over %.1f s",
                self.failures,
                self._failure,
                time.monotonic() - self._failing_since,
            )
            self.failures = 0
