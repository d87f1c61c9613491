"""A timestamped ring buffer of temperature readings, per printer.

A chart opened on a phone should start full, not empty: a new subscriber
gets this history at once. Bounded by age (``seconds``) and by count, so a
firmware that reports far faster than configured cannot grow it without limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hydrogen.protocol import utc_iso


@dataclass(frozen=True, slots=True)
class HeaterSample:
    actual: float
    target: float | None
    power: int | None


@dataclass(frozen=True, slots=True)
class TemperatureSample:
    time: float
    heaters: Mapping[str, HeaterSample]

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": utc_iso(self.time),
            "timestamp": round(self.time, 3),
            "heaters": {
                name: {"actual": h.actual, "target": h.target, "power": h.power}
                for name, h in self.heaters.items()
            },
        }


class TemperatureHistory:
    def __init__(
        self, seconds: float = 1200.0, *, max_samples: int | None = None, min_interval: float = 0.5
    ) -> None:
        self.seconds = seconds
        # At most one sample per min_interval is kept; the cap follows from it.
        self.min_interval = min_interval
        self._samples: deque[TemperatureSample] = deque(
            maxlen=max_samples or int(seconds / min_interval) + 1
        )

    def add(self, sample: TemperatureSample) -> bool:
        """Keep ``sample`` unless it comes too soon after the last kept one."""
        samples = self._samples
        if samples and sample.time - samples[-1].time < self.min_interval:
            return False
        samples.append(sample)
        horizon = sample.time - self.seconds
        while samples and samples[0].time < horizon:
            samples.popleft()
        return True

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self, since: float | None = None) -> list[TemperatureSample]:
        if since is None:
            return list(self._samples)
        return [s for s in self._samples if s.time > since]

    def clear(self) -> None:
        self._samples.clear()
