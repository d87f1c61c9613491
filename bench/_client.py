"""The load generator: many WebSocket clients in one process, cheap per frame.

    python -m bench._client --port P --clients N [--key KEY] [--subscribe bench/events]

On a 2-core machine the clients share the CPU with the server under test, so
every microsecond they spend per frame is taken from the server and shows up
as server latency. A general-purpose client (a task and a future per
connection, a queue per message) costs several times more than the server's
send path. These clients are therefore bare :class:`asyncio.Protocol` objects:
no task per connection, frames parsed straight out of the receive buffer and
handled in the transport's callback, one clock read per ``recv``.

They speak exactly the subset of RFC 6455 the servers under test use: the
HTTP upgrade (with the ``hydrogen-protocol`` subprotocol and, for the gateway,
``Authorization: Key``), unfragmented text frames from the server, masked
text frames to it (one ``subscribe`` request), and ping/pong and close.

Control channel (see ``bench/_common.py``): after connecting, the process
prints ``BENCH {"connected": n, "failed": f, ...}``. It then waits for
``window T0 T1 TEND`` on stdin: event frames published in ``[T0, T1)`` and
status frames received in ``[T0, T1)`` are counted, and at ``TEND`` (a grace
period after ``T1`` for frames still in flight) it prints its result line and
exits. Latencies go into 50 microsecond bins so the parent can merge several
client processes exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections import Counter

from bench._common import SUBPROTOCOL, emit, encode, raise_nofile_limit, stdin_reader

#: Latency histogram bins per millisecond (50 us bins).
BINS_PER_MS = 20
#: A server that sends more than this before finishing the upgrade is broken.
MAX_HANDSHAKE_BYTES = 64 * 1024

_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, unfragmented frame (RFC 6455 requires clients to mask)."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    repeated = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        size, "big"
    )
    return header + key + masked


class Collector:
    """Counts and latencies shared by every connection of this process."""

    def __init__(self) -> None:
        #: The measurement window; infinite until the parent sends it.
        self.t0 = float("inf")
        self.t1 = float("inf")
        self.events = 0
        self.status = 0
        self.dropped = 0
        self.other = 0
        self.lost_in_window = 0
        self.max_ms = 0.0
        self.bins: Counter[int] = Counter()

    def in_window(self, now: float) -> bool:
        return self.t0 <= now < self.t1


class BenchClient(asyncio.Protocol):
    """One WebSocket connection; all the work happens in ``data_received``."""

    def __init__(self, collector: Collector, request: bytes, subscribe: bytes | None) -> None:
        self._collector = collector
        self._request = request
        self._subscribe = subscribe
        self._buffer = bytearray()
        self._upgraded = False
        self.transport: asyncio.Transport | None = None
        #: Done when the upgrade (and the subscription, if any) is acknowledged.
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Event frames this connection counted (to see whether some clients starve).
        self.events = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed during the handshake"))
        elif self._collector.in_window(time.time()):
            self._collector.lost_in_window += 1

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self._buffer
        buffer += data
        if not self._upgraded and not self._finish_upgrade():
            return
        collector = self._collector
        size = len(buffer)
        pos = 0
        while size - pos >= 2:
            second = buffer[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = buffer[pos] & 0x0F
            payload = buffer[start:end]
            pos = end
            if second & 0x80:  # a server must not mask
                self._fail("masked frame from the server")
                return
            if opcode == _OP_TEXT:
                self._on_text(payload, now, collector)
            elif opcode == _OP_PING:
                self._write(client_frame(_OP_PONG, bytes(payload)))
            elif opcode == _OP_CLOSE:
                self._write(client_frame(_OP_CLOSE, bytes(payload[:2])))
                assert self.transport is not None
                self.transport.close()
                return
            elif opcode != _OP_PONG:
                collector.other += 1
        del buffer[:pos]

    def _on_text(self, payload: bytearray, now: float, collector: Collector) -> None:
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "event":
            t = frame["t"]
            if collector.t0 <= t < collector.t1:
                collector.events += 1
                self.events += 1
                latency_ms = max(0.0, (now - t) * 1000.0)
                collector.bins[int(latency_ms * BINS_PER_MS)] += 1
                if latency_ms > collector.max_ms:
                    collector.max_ms = latency_ms
        elif kind == "status":
            if collector.t0 <= now < collector.t1:
                collector.status += 1
        elif kind == "dropped":
            collector.dropped += int(frame.get("count", 0))
        elif kind == "subscribed":
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind not in ("welcome",):
            collector.other += 1

    def _finish_upgrade(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HANDSHAKE_BYTES:
                self._fail("no end of the upgrade response")
            return False
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        status_line = head.split("\r\n", 1)[0]
        if " 101 " not in status_line + " ":
            self._fail(f"upgrade refused: {status_line}")
            return False
        self._upgraded = True
        if self._subscribe is None:
            self.ready.set_result(None)
        else:
            self._write(client_frame(_OP_TEXT, self._subscribe))
        return True

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.abort()


def upgrade_request(port: int, key: str | None) -> bytes:
    lines = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}",
    ]
    if key:
        lines.append(f"Authorization: Key {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect_all(
    args: argparse.Namespace, collector: Collector
) -> tuple[list[BenchClient], list[str]]:
    """Open ``args.clients`` connections, a bounded number at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.connect_concurrency)
    subscribe = (
        encode({"type": "subscribe", "id": 1, "topics": args.subscribe}).encode()
        if args.subscribe
        else None
    )

    async def one() -> BenchClient | str:
        async with gate:
            try:
                async with asyncio.timeout(args.connect_timeout):
                    _, client = await loop.create_connection(
                        lambda: BenchClient(
                            collector, upgrade_request(args.port, args.key), subscribe
                        ),
                        "127.0.0.1",
                        args.port,
                    )
                    await client.ready
                    return client
            except (OSError, TimeoutError) as exc:
                return f"{type(exc).__name__}: {exc}"

    outcomes = await asyncio.gather(*(one() for _ in range(args.clients)))
    clients = [c for c in outcomes if isinstance(c, BenchClient)]
    errors = [c for c in outcomes if isinstance(c, str)]
    return clients, errors


async def run(args: argparse.Namespace) -> None:
    collector = Collector()
    clients, errors = await connect_all(args, collector)
    emit({"connected": len(clients), "failed": len(errors), "errors": sorted(set(errors))[:5]})
    try:
        reader = await stdin_reader()
        async with asyncio.timeout(args.control_timeout):
            line = await reader.readline()
        words = line.decode().split()
        if len(words) != 4 or words[0] != "window":
            return  # end of file or nonsense: the parent gave up
        collector.t0, collector.t1, t_end = (float(w) for w in words[1:])
        await asyncio.sleep(max(0.0, t_end - time.time()))
        per_client = [c.events for c in clients]
        emit(
            {
                "clients": len(clients),
                "events": collector.events,
                "status": collector.status,
                "dropped": collector.dropped,
                "other": collector.other,
                "lost_in_window": collector.lost_in_window,
                "max_ms": collector.max_ms,
                "bins": {str(k): v for k, v in collector.bins.items()},
                "per_client_min": min(per_client, default=0),
                "per_client_max": max(per_client, default=0),
            }
        )
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--key", help="sent as 'Authorization: Key ...'")
    parser.add_argument("--subscribe", action="append", default=[], metavar="TOPIC")
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument(
        "--control-timeout", type=float, default=120.0, help="seconds to wait for the window"
    )
    args = parser.parse_args(argv)
    raise_nofile_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
