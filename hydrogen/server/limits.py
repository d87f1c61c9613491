"""Per-connection rate limiting and connection-count limits.

Kept free of aiohttp so they are unit-testable with a fake clock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    A bucket rather than a fixed window: a dashboard that sends a burst of
    subscribe requests on connect is fine, a client looping is slowed.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> float:
        """Take a token; returns 0 on success, else seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class ConnectionLimiter:
    """Counts open connections in total and per client address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: Counter[str] = Counter()

    def refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` would be refused, or None."""
        if self.total >= self.max_total:
            return "max_connections"
        if self._per_ip[ip] >= self.max_per_ip:
            return "max_connections_per_ip"
        return None

    def acquire(self, ip: str) -> None:
        self.total += 1
        self._per_ip[ip] += 1

    def release(self, ip: str) -> None:
        if self._per_ip.get(ip, 0) <= 0:
            return  # never acquired: counting it would open a slot that does not exist
        self.total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]


class FailureLimiter:
    """Failed authentications per client address: ``limit`` in a ``window`` of seconds,
    then that address is refused (429) until the window that began with its first
    failure ends. A fixed window, so a blocked guesser gets no new tries by waiting a
    little; the table is bounded whatever the traffic.
    """

    MAX_ADDRESSES = 10_000

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: dict[str, tuple[float, int]] = {}

    def retry_after(self, ip: str) -> float:
        """Seconds until ``ip`` may try again; 0 when it may now."""
        start, count = self._failures.get(ip, (0.0, 0))
        left = start + self.window - self._clock()
        if left <= 0:
            self._failures.pop(ip, None)
            return 0.0
        return left if count >= self.limit else 0.0

    def fail(self, ip: str) -> int:
        """Count a failure; returns how many ``ip`` has in its window (1: a new burst)."""
        now = self._clock()
        start, count = self._failures.get(ip, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if len(self._failures) >= self.MAX_ADDRESSES and ip not in self._failures:
            self._failures = {k: v for k, v in self._failures.items() if now - v[0] < self.window}
            if len(self._failures) >= self.MAX_ADDRESSES:
                self._failures.clear()
        self._failures[ip] = (start, count + 1)
        return count + 1
