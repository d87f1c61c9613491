"""Raspberry Pi health: the firmware's throttling flags, and a warning during a print.

The VideoCore firmware keeps a bit field of what it did to protect the board:
under-voltage (the classic cause of failed prints and SD card corruption on a Pi
host), ARM frequency capping, throttling and the soft temperature limit, each "now"
(bits 0-3) and "since boot" (bits 16-19, sticky until reboot).  It is readable from
the firmware's sysfs node (no subprocess, no privileges) or, on older kernels, from
``vcgencmd get_throttled``.  On other hardware neither exists, and the snapshot's
``rpi_throttled`` stays ``None``: no series at all rather than zeros.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, NamedTuple

from hydrogen.host_snapshot import HostSnapshot

__all__ = [
    "FLAGS",
    "THROTTLED_NODE",
    "Flag",
    "UndervoltageWatch",
    "is_set",
    "parse_vcgencmd",
    "read_throttled",
    "run_vcgencmd",
    "watch_undervoltage",
]

log = logging.getLogger(__name__)

#: The firmware's sysfs node, relative to the filesystem root.
THROTTLED_NODE = "sys/devices/platform/soc/soc:firmware/get_throttled"


class Flag(NamedTuple):
    """One throttling flag: its metric suffix and its bits now and since boot."""

    name: str
    now_bit: int
    occurred_bit: int


FLAGS: tuple[Flag, ...] = (
    Flag("undervoltage", 0, 16),
    Flag("frequency_capped", 1, 17),
    Flag("throttled", 2, 18),
    Flag("soft_temperature_limit", 3, 19),
)
_UNDERVOLTAGE = FLAGS[0]


def read_throttled(root: Path) -> int | None:
    """The sysfs node's value (hexadecimal, as the driver prints it), or ``None``."""
    try:
        text = (root / THROTTLED_NODE).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text, 16)


def parse_vcgencmd(text: str) -> int | None:
    """``throttled=0x50005`` -> 0x50005; anything else -> ``None``."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    return None if match is None else int(match.group(1), 0)


def run_vcgencmd() -> int | None:
    """``vcgencmd get_throttled`` where it is installed, else ``None``."""
    program = shutil.which("vcgencmd")
    if program is None:
        return None
    result = subprocess.run(
        [program, "get_throttled"], capture_output=True, text=True, timeout=2, check=False
    )
    return parse_vcgencmd(result.stdout) if result.returncode == 0 else None


def is_set(bits: int, bit: int) -> bool:
    return bool(bits >> bit & 1)


class UndervoltageWatch:
    """Notifies when under-voltage appears while a printer is printing.

    Fed every host snapshot.  "Appears" is the "now" flag turning on, or the sticky
    "since boot" flag turning on (a dip shorter than the sampling interval); one
    notification per appearance, not one per sample.
    """

    def __init__(
        self,
        notify: Callable[..., None],
        printing: Callable[[], Collection[str]],
    ) -> None:
        self._notify = notify
        self._printing = printing
        self._previous: int | None = None

    def __call__(self, snapshot: HostSnapshot) -> None:
        bits = snapshot.rpi_throttled
        if bits is None:
            return
        previous, self._previous = self._previous, bits
        if previous is None:
            # First reading: a flag set since boot happened before we watched.
            appeared = is_set(bits, _UNDERVOLTAGE.now_bit)
        else:
            appeared = (
                is_set(bits, _UNDERVOLTAGE.now_bit) and not is_set(previous, _UNDERVOLTAGE.now_bit)
            ) or (
                is_set(bits, _UNDERVOLTAGE.occurred_bit)
                and not is_set(previous, _UNDERVOLTAGE.occurred_bit)
            )
        if not appeared:
            return
        printers = sorted(self._printing())
        if not printers:
            return
        log.warning("under-voltage on the host while printing on %s", ", ".join(printers))
        self._notify(
            "error",
            "host_undervoltage",
            "Under-voltage on the printer host while printing: check the power supply "
            "(prints and the SD card can fail)",
            printers=printers,
            throttled=hex(bits),
        )


def watch_undervoltage(
    sampler: Any, notify: Callable[..., None], printing: Callable[[], Collection[str]]
) -> UndervoltageWatch:
    """Attach an :class:`UndervoltageWatch` to a :class:`hydrogen.host.HostSampler`."""
    watch = UndervoltageWatch(notify, printing)
    sampler.add_listener(watch)
    return watch
