"""Slicers' print-time estimates as seconds: ``1d 2h 3m 4s``, ``1:02:03``, or a bare
number (Cura's ``;TIME:``); anything else is None."""

from __future__ import annotations

import math
import re

_UNITS = {
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
}
_DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)\s*,?", re.ASCII)
_CLOCK = re.compile(r"\s*(?:([0-9]+):)?([0-9]+):([0-9]+(?:\.[0-9]+)?)\s*", re.ASCII)
_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*", re.ASCII)


def parse_duration(text: str) -> float | None:
    """Seconds in a slicer's duration, or None if it is not one.

    Accepts ``1d 2h 3m 4s`` (any subset, with or without spaces, long unit
    names too), ``1:02:03`` / ``2:03``, and a bare number of seconds (Cura's
    ``;TIME:``). Anything else, including trailing junk, is None: a wrong
    estimate is worse than none.
    """
    if not isinstance(text, str) or len(text) > 200:
        return None
    if (number := _NUMBER.fullmatch(text)) is not None:
        return _finite(float(number.group(1)))
    if (clock := _CLOCK.fullmatch(text)) is not None:
        hours, minutes, seconds = clock.groups()
        m, s = int(minutes), float(seconds)
        if s >= 60 or (hours is not None and m >= 60):
            return None
        return _finite((int(hours) if hours else 0) * 3600.0 + m * 60.0 + s)
    total, position, seen = 0.0, 0, set()
    for part in _DURATION_PART.finditer(text):
        if part.start() != position:
            return None
        factor = _UNITS.get(part.group(2).lower())
        if factor is None or factor in seen:
            return None
        seen.add(factor)
        total += float(part.group(1)) * factor
        position = part.end()
    if not seen or position != len(text):
        return None
    return _finite(total)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None
