"""Unit tests for hydrogen.server.limits with a fake clock."""

from __future__ import annotations

import pytest

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
