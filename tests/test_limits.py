"""Unit tests for hydrogen.server.limits (fake clock) and the connection gate."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import socket
from collections import Counter

import pytest
from aiohttp import web

from hydrogen.config import LimitsConfig
from hydrogen.server.gate import (
    Acceptor,
    Connection,
    ConnectionGate,
    FileBudget,
    file_budget,
    refusal_bytes,
)
from hydrogen.server.limits import ConnectionLimiter, TokenBucket


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_allows_a_burst_then_refuses_with_retry_after() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=5, clock=clock)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    # Empty: one token takes 1/rate seconds.
    assert bucket.take() == pytest.approx(0.5)
    # A refusal does not consume anything: asking again gives the same wait.
    assert bucket.take() == pytest.approx(0.5)


def test_bucket_retry_after_shrinks_as_time_passes() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=1, clock=clock)
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.25)
    clock.advance(0.1)
    assert bucket.take() == pytest.approx(0.15)
    clock.advance(0.15)
    assert bucket.take() == 0.0


def test_bucket_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=10, clock=clock)
    for _ in range(10):
        assert bucket.take() == 0.0
    assert bucket.take() > 0
    clock.advance(0.5)  # five tokens
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() == pytest.approx(0.1)


def test_bucket_is_capped_at_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100.0, burst=3, clock=clock)
    clock.advance(3600)  # a long idle period saves up no more than the burst
    assert [bucket.take() for _ in range(3)] == [0.0] * 3
    assert bucket.take() == pytest.approx(0.01)


def test_bucket_steady_rate_is_sustainable() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=20.0, burst=1, clock=clock)
    for _ in range(100):
        assert bucket.take() == 0.0
        # A hair over the period: exact 1/rate steps lose ~1e-13 of a token to float rounding.
        clock.advance(0.0501)


def test_bucket_starts_full() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, clock=FakeClock())
    assert bucket.take() == 0.0
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)


def test_bucket_default_clock_is_monotonic() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.take() == 0.0
    assert 0 < bucket.take() <= 1.0


def test_connection_limiter_total() -> None:
    limiter = ConnectionLimiter(max_total=2, max_per_ip=5)
    assert limiter.refusal("10.0.0.1") is None
    limiter.acquire("10.0.0.1")
    limiter.acquire("10.0.0.2")
    assert limiter.total == 2
    assert limiter.refusal("10.0.0.3") == "max_connections"
    assert limiter.refusal("10.0.0.1") == "max_connections"
    limiter.release("10.0.0.2")
    assert limiter.total == 1
    assert limiter.refusal("10.0.0.3") is None


def test_connection_limiter_per_ip() -> None:
    limiter = ConnectionLimiter(max_total=10, max_per_ip=2)
    limiter.acquire("10.0.0.1")
    assert limiter.refusal("10.0.0.1") is None
    limiter.acquire("10.0.0.1")
    assert limiter.refusal("10.0.0.1") == "max_connections_per_ip"
    assert limiter.refusal("10.0.0.2") is None  # other addresses are unaffected
    limiter.release("10.0.0.1")
    assert limiter.refusal("10.0.0.1") is None


def test_connection_limiter_total_is_checked_before_per_ip() -> None:
    limiter = ConnectionLimiter(max_total=1, max_per_ip=1)
    limiter.acquire("::1")
    assert limiter.refusal("::1") == "max_connections"


def test_connection_limiter_release_forgets_idle_addresses() -> None:
    limiter = ConnectionLimiter(max_total=10, max_per_ip=1)
    for n in range(5):
        limiter.acquire(f"10.0.0.{n}")
    for n in range(5):
        limiter.release(f"10.0.0.{n}")
    assert limiter.total == 0
    assert not limiter._per_ip  # no per-address entries left behind
    assert all(limiter.refusal(f"10.0.0.{n}") is None for n in range(5))


# -- the connection gate ----------------------------------------------------------------


def _budget(
    connections: int = 10, pending: int = 4, per_ip: int = 2, websockets: int = 6
) -> FileBudget:
    return FileBudget(
        open_files=1024,
        reserve=1024 - connections,
        connections=connections,
        websockets=websockets,
        pending=pending,
        pending_per_ip=per_ip,
    )


class FakeHandler:
    def __init__(self) -> None:
        self.evicted: list[str] = []

    def evict(self, reason: str) -> None:
        self.evicted.append(reason)


def _admit(gate: ConnectionGate, ip: str) -> Connection:
    conn = gate.admit(ip)
    assert isinstance(conn, Connection), conn
    conn.target = FakeHandler()
    return conn


def test_budget_keeps_a_reserve_and_room_for_waiting_connections() -> None:
    limits = LimitsConfig()
    budget = file_budget(limits, printers=1, open_files=1024)
    assert budget.reserve == 32 + 8 + 4 + 16 + 16
    assert budget.connections == 1024 - budget.reserve
    assert budget.pending == min(limits.max_pending_connections, budget.connections // 4)
    assert budget.websockets == budget.connections - budget.pending  # lowered from 1024
    assert budget.pending_per_ip == limits.max_pending_per_ip
    # Each printer keeps files of its own.
    assert file_budget(limits, 3, 1024).connections == budget.connections - 8


def test_budget_with_plenty_of_files_keeps_the_configured_caps() -> None:
    limits = LimitsConfig(max_connections=1024, max_pending_connections=128)
    budget = file_budget(limits, printers=2, open_files=65536)
    assert (budget.websockets, budget.pending, budget.pending_per_ip) == (1024, 128, 16)
    unlimited = file_budget(limits, printers=2, open_files=resource.RLIM_INFINITY)
    assert unlimited.open_files == 1 << 20
    assert unlimited.websockets == 1024


def test_budget_at_a_tiny_limit_still_serves_someone() -> None:
    budget = file_budget(LimitsConfig(), printers=1, open_files=64)
    assert budget.connections == 8
    assert budget.pending == 2 and budget.pending_per_ip == 2
    assert budget.websockets == 6


def test_gate_counts_every_state_exactly() -> None:
    gate = ConnectionGate(_budget())
    a = _admit(gate, "10.0.0.1")
    b = _admit(gate, "10.0.0.2")
    assert (gate.open, gate.waiting_total) == (2, 2)
    a.busy()  # request headers complete
    assert (gate.open, gate.waiting_total) == (2, 1)
    assert a.idle() is True  # response done, keep-alive: waiting again
    assert gate.waiting_by_address() == {"10.0.0.1": 1, "10.0.0.2": 1}
    a.busy()
    a.lost()
    a.lost()  # twice is once
    a.idle()  # after the end: nothing
    b.lost()
    assert (gate.open, gate.waiting_total, gate.accepted) == (0, 0, 2)
    assert gate.waiting_by_address() == {}


def test_gate_refuses_an_address_over_its_waiting_cap() -> None:
    refused: Counter[str] = Counter()
    gate = ConnectionGate(_budget(per_ip=2), refused=refused)
    _admit(gate, "10.0.0.1")
    busy = _admit(gate, "10.0.0.1")
    assert gate.admit("10.0.0.1") == "max_pending_per_ip"
    busy.busy()  # one of them sent its request: room again
    _admit(gate, "10.0.0.1")
    assert refused == {"max_pending_per_ip": 1}
    # Back from a request with no room to wait: close after the response.
    assert busy.idle() is False
    assert gate.waiting_by_address() == {"10.0.0.1": 2}


def test_gate_evicts_the_busiest_address_oldest_first_for_a_newcomer() -> None:
    gate = ConnectionGate(_budget(pending=4, per_ip=3))
    first, second, third = (_admit(gate, "10.0.0.1") for _ in range(3))
    other = _admit(gate, "10.0.0.2")
    newcomer = _admit(gate, "10.0.0.3")  # the waiting cap is full
    assert first.target.evicted == ["max_pending_connections"]
    assert first.closed and not second.closed and not other.closed
    assert gate.evicted == 1 and gate.waiting_total == 4
    assert gate.waiting_by_address() == {"10.0.0.1": 2, "10.0.0.2": 1, "10.0.0.3": 1}
    # An address holding as many as the busiest is refused, not let in at another's cost.
    assert gate.admit("10.0.0.1") == "max_pending_connections"
    fourth = gate.admit("10.0.0.2")  # holds 1, the busiest 2: 10.0.0.1's oldest goes
    assert isinstance(fourth, Connection) and second.closed and not third.closed
    fifth = gate.admit("10.0.0.3")  # holds 1, 10.0.0.2 now holds 2: its oldest goes
    assert isinstance(fifth, Connection) and other.closed and not fourth.closed
    assert gate.waiting_by_address() == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 2}
    assert gate.admit("10.0.0.3") == "max_pending_connections"
    assert not newcomer.closed and gate.evicted == 3 and gate.open == 4


def test_gate_total_budget_never_evicts_busy_connections() -> None:
    gate = ConnectionGate(_budget(connections=3, pending=3, per_ip=3))
    conns = [_admit(gate, f"10.0.0.{n}") for n in range(3)]
    for conn in conns:
        conn.busy()  # e.g. WebSockets
    assert gate.admit("10.0.0.9") == "max_connections"
    conns[0].idle()  # a keep-alive connection between requests can make room
    assert isinstance(gate.admit("10.0.0.9"), Connection)
    assert conns[0].target.evicted == ["max_connections"]
    assert gate.open == 3


def test_refusal_is_the_documented_error() -> None:
    raw = refusal_bytes("max_pending_per_ip")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"Retry-After: 10\r\n" in head and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {
        "error": {
            "code": "too_many_connections",
            "message": "too many connections from this address that have not sent a request",
            "details": {"limit": "max_pending_per_ip"},
        }
    }
    assert refusal_bytes("max_connections").startswith(b"HTTP/1.1 503 Service Unavailable")
    assert len(refusal_bytes("max_pending_connections")) < 1024  # one send() writes it


class _FailingListener:
    """A listening socket whose accept() fails like a process out of descriptors."""

    def __init__(self, real: socket.socket, failures: int) -> None:
        self._real = real
        self.failures = failures

    def fileno(self) -> int:
        return self._real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self._real.accept()


def test_emfile_is_logged_once_per_burst_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        gate = ConnectionGate(_budget())
        acceptor = Acceptor(gate, web.Server(_ok), {}, retry_seconds=0.01)
        acceptor.start([listener])
        failing = _FailingListener(listener, failures=5000)
        for _ in range(5000):
            acceptor._on_readable(failing)  # the loop calls it on every readable event
        client = socket.create_connection(listener.getsockname())
        failing.failures = 0
        async with asyncio.timeout(10):
            while gate.accepted == 0:
                acceptor._on_readable(failing)
                await asyncio.sleep(0.01)
        acceptor.stop()
        client.close()
        listener.close()

    with caplog.at_level(logging.DEBUG, logger="hydrogen.server.gate"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if "accept" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("cannot accept connections: Too many open files")
    assert "accept() failed 5000 times (Too many open files)" in lines[1]


async def _ok(request: web.BaseRequest) -> web.Response:
    return web.Response(text="ok")
