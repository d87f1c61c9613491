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
