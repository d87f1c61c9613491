"""A `hydrogen serve` subprocess whose every log line is kept, and raw-socket helpers."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.process import GatewayProcess, start_gateway


@dataclass
class LoggedGateway:
    """A gateway process; a thread drains its stderr so a chatty log never blocks it."""

    process: GatewayProcess
    lines: list[str] = field(default_factory=list)
    _drain: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.process.port

    def log_text(self) -> str:
        return "".join(self.lines)

    def stop(self) -> tuple[int, str]:
        """Stop the process; its exit status and everything it wrote (log and stdout)."""
        status = self.process.stop()
        if self._drain is not None:
            self._drain.join(timeout=10)
        assert self.process.proc.stdout is not None
        return status, self.log_text() + self.process.banner + self.process.proc.stdout.read()


@contextmanager
def logged_gateway(
    args: Sequence[str], env: Mapping[str, str] | None = None
) -> Iterator[LoggedGateway]:
    gateway = LoggedGateway(start_gateway(args, env))
    stderr = gateway.process.proc.stderr
    assert stderr is not None
    gateway._drain = threading.Thread(target=lambda: gateway.lines.extend(stderr), daemon=True)
    gateway._drain.start()
    try:
        yield gateway
    finally:
        if gateway.process.proc.poll() is None:
            gateway.process.stop()


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` as is on a fresh TCP connection and read one answer.

    Reads until the server closes (malformed requests) or one response is complete: its
    headers for a 101, else headers and ``Content-Length`` bytes of body.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if _complete(received):
                    break
        except ConnectionResetError:
            pass
    return received


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    if head.startswith(b"HTTP/1.1 101"):
        return True
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is not None and len(body) >= int(length.group(1))
