"""What the serial benchmark's parts share: the printer under test, the tables' arithmetic.

The child processes (``serial_children``) and the parent's sections (``serial_latency``,
``serial_commands``, ``serial_jobs``) must agree on the printer's name, the topic its
firmware lines are published on, the marker line the latency test sends through the
link and the command the commands test sends; they are defined once, here. So are
the nearest-rank percentile (a child's report and the parent's tables both use it)
and the ratio and cell formats every table is printed with.
"""

from __future__ import annotations

import math

PRINTER = "sim"
SERIAL_TOPIC = f"printer/{PRINTER}/serial"
MARKER = "echo:bench "
#: The command every path sends in the commands test: the simulator acknowledges it
#: at once and it is not one of the "long" commands that make the printer busy.
PING_COMMAND = "G91"


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"
