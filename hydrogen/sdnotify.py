"""The systemd notification protocol (sd_notify), spoken directly.

The gateway runs as a ``Type=notify`` service with ``WatchdogSec=``: it tells systemd when
it is ready, what it is doing (``systemctl status`` shows the STATUS= line) and, through
the watchdog, that its event loop is still turning.  The protocol is one datagram of
newline-separated ``KEY=value`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET``, simple enough that a libsystemd binding (a C extension that would
have to be built for every Python on every printer host) is not worth it.

Notification is best effort by design: a vanished or unwritable notify socket must never
take the gateway down, so sending never raises; the first failure is logged at debug level
and later ones are silent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from types import TracebackType

__all__ = ["Notifier", "watchdog_loop"]

_log = logging.getLogger(__name__)

# Upper bound for one send. systemd's socket has a large receive buffer, so a send only
# blocks if PID 1 is badly stuck; the event loop must not hang with it, and a notification
# that cannot be delivered within this time is not worth more waiting.
SEND_TIMEOUT = 1.0


def _one_line(value: object) -> str:
    """Render a field value so it cannot break out of its ``KEY=value`` line.

    A newline inside a value would start a new assignment: a STATUS text taken from a
    printer ("...\\nREADY=1") could otherwise forge notifications.
    """
    return " ".join(str(value).splitlines()).strip()


def _socket_address(raw: str) -> str | None:
    """Translate ``$NOTIFY_SOCKET`` into an address for ``sendto``, or None if unusable.

    ``@name`` denotes a Linux abstract socket, whose real address starts with a NUL byte.
    Other schemes (``vsock:`` in newer systemd) are not supported and disable notification.
    """
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    if raw.startswith("/") and "\0" not in raw:
        return raw
    return None


class Notifier:
    """Sends sd_notify messages; a disabled instance accepts every call and does nothing.

    Build it with :meth:`from_environment` so that running outside systemd (a developer's
    terminal, the tests) needs no special casing by callers.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        """Use ``address`` (a path, or ``"\\0name"`` for an abstract socket; None = disabled).

        ``watchdog_usec``/``watchdog_pid`` are the values systemd passed in
        ``$WATCHDOG_USEC``/``$WATCHDOG_PID``, kept so :meth:`watchdog_interval` can decide
        whether the watchdog is meant for this process.
        """
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._closed = False
        self._failure_logged = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Configure from the variables systemd sets; disabled when NOTIFY_SOCKET is unset.

        The environment is only read, never modified: the variables stay visible to child
        processes, which ``NotifyAccess=main`` already stops from notifying on our behalf.
        """
        raw = environ.get("NOTIFY_SOCKET", "")
        address = _socket_address(raw) if raw else None
        if raw and address is None:
            _log.debug("unsupported NOTIFY_SOCKET %r: systemd notification disabled", raw)
        return cls(
            address,
            watchdog_usec=_parse_int(environ.get("WATCHDOG_USEC")),
            watchdog_pid=_parse_int(environ.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        """True when notifications are actually sent somewhere."""
        return self._address is not None and not self._closed

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True if it was handed to the kernel.

        Values are flattened to one line each (see :func:`_one_line`). Never raises.
        """
        if not self.enabled or not fields:
            return False
        for key in fields:
            if not key.isidentifier() or not key.isupper():
                raise ValueError(f"invalid sd_notify field name: {key!r}")
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        return self._send(message.encode("utf-8", "replace"))

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete (``READY=1``), optionally with a status text."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """Set the free-form status line that ``systemctl status`` shows."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """Reset the service watchdog timer (``WATCHDOG=1``)."""
        return self.notify(WATCHDOG=1)

    def stopping(self) -> bool:
        """Announce an orderly shutdown, so systemd does not mistake it for a crash."""
        return self.notify(STOPPING=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of WatchdogSec=), or None if no watchdog.

        systemd sets ``WATCHDOG_PID`` to the process it expects pings from; a process that
        inherited the variables (a child of the gateway) must not ping.
        """
        if not self.enabled or self._watchdog_usec is None or self._watchdog_usec <= 0:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        """Release the socket; later calls are silently ignored. Idempotent."""
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Notifier(address={self._address!r}, enabled={self.enabled})"

    def _send(self, data: bytes) -> bool:
        assert self._address is not None
        try:
            if self._sock is None:
                # An unconnected socket: each datagram is addressed anew, so systemd
                # re-creating its socket (daemon-reexec) does not leave us talking to a
                # stale peer.
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(SEND_TIMEOUT)
                self._sock = sock
            self._sock.sendto(data, self._address)
        except (OSError, ValueError) as exc:
            if not self._failure_logged:
                self._failure_logged = True
                _log.debug(
                    "sd_notify to %r failed (further failures not logged): %s", self._address, exc
                )
            return False
        return True


def _parse_int(raw: str | None) -> int | None:
    """Parse an integer environment value, None when absent or malformed."""
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        _log.debug("ignoring malformed integer in environment: %r", raw)
        return None


def _is_healthy(health: Callable[[], bool] | None) -> bool:
    if health is None:
        return True
    try:
        return bool(health())
    except Exception:
        _log.exception("watchdog health check raised; treating the gateway as unhealthy")
        return False


async def watchdog_loop(
    notifier: Notifier,
    interval: float,
    health: Callable[[], bool] | None = None,
) -> None:
    """Ping the systemd watchdog every ``interval`` seconds until cancelled.

    The pings are sent by the event loop itself, not by a thread: if the loop stalls (a
    blocking call, a busy coroutine that never yields), the pings stop and systemd kills
    and restarts the service, which is exactly the failure the watchdog is there to catch.
    When ``health`` returns False (or raises) the ping is skipped, so a gateway that is
    running but broken in a way it can detect also gets restarted.

    Returns at once when ``notifier`` is disabled. Use ``notifier.watchdog_interval()`` as
    ``interval``.
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval!r}")
    if not notifier.enabled:
        return
    was_healthy = True
    while True:
        healthy = _is_healthy(health)
        if healthy:
            notifier.watchdog()
            if not was_healthy:
                _log.info("health check passes again; resuming watchdog pings")
        elif was_healthy:
            _log.warning("health check failed; withholding watchdog pings")
        was_healthy = healthy
        await asyncio.sleep(interval)
