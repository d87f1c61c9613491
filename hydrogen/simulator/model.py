"""What the simulated firmware is made of, apart from its behaviour: Marlin's texts,
line framing and checksums, the accepted-command digest, one heater's thermal model,
and the firmware's states."""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

FIRMWARE_VERSION = "2.1.2.1"

# Marlin's own texts (language.h / M115.cpp), reproduced as the host sees them.
_ERR_CHECKSUM = "checksum mismatch"
_ERR_NO_CHECKSUM = "No Checksum with line number"
_ERR_LINE_NO = "Line Number is not Last Line Number+1"
_MSG_KILLED = "Error:Printer halted. kill() called!"
_MSG_BUSY = "echo:busy: processing"

_EOL = re.compile(rb"[\r\n]")
# Marlin's emergency parser: optional N<number>, then M108/M112/M410; whatever follows
# up to the end of line is ignored (so "N7 M112*24" and "M112" both trigger).
_EMERGENCY = re.compile(rb"^ *(?:N[-0-9 ]*)?M *(108|112|410)")
_WORD = re.compile(r"([A-Za-z])\s*([-+]?\d+)")
_PARAM = re.compile(r"([A-Za-z])\s*([-+]?(?:\d+\.?\d*|\.\d+))?")
_INT_PREFIX = re.compile(r"\s*([-+]?\d+)")

# Accepted with nothing observable to simulate.
_NOOP_CODES = frozenset({"G20", "G21", "M17", "M18", "M84", "M108", "M400", "M410", "M999"})
_STEPS_PER_MM = {"X": 80.0, "Y": 80.0, "Z": 400.0, "E": 93.0}
# Marlin defaults: HEATER_0_MAXTEMP 275 - HOTEND_OVERSHOOT 15, BED_MAXTEMP 150 - BED_OVERSHOOT 10.
_HOTEND_MAX_TARGET = 260.0
_BED_MAX_TARGET = 140.0
# TEMP_RESIDENCY_TIME / TEMP_WINDOW / TEMP_HYSTERESIS (same values for the bed).
_RESIDENCY_TIME = 10.0
_TEMP_WINDOW = 1.0
_TEMP_HYSTERESIS = 3.0
_KEEPALIVE_INTERVAL = 2.0  # DEFAULT_KEEPALIVE_INTERVAL
_HOMING_TIME = 3.0  # simulated seconds G28 takes
_PHYSICS_STEP = 0.25  # simulated seconds per heater integration step
_MAX_PENDING_RX = 1 << 20  # stop reading the pty beyond this much unprocessed input
_MAX_PENDING_TX = 1 << 18  # drop output beyond this much unread by the host (like a UART would)


def gcode_checksum(text: str | bytes) -> int:
    """Marlin's line checksum: XOR of every byte before the ``*``."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    value = 0
    for byte in data:
        value ^= byte
    return value


def numbered_line(number: int, command: str) -> str:
    """Frame ``command`` as ``N<number> <command>*<checksum>`` (no newline)."""
    body = f"N{number} {command}"
    return f"{body}*{gcode_checksum(body)}"


def digest_of(commands: Iterable[str]) -> str:
    """The digest ``SimulatedPrinter.accepted_digest`` would show after accepting
    exactly ``commands`` in this order (each already stripped of N/checksum/comment)."""
    h = hashlib.sha256()
    for i, command in enumerate(commands):
        if i:
            h.update(b"\n")
        h.update(command.strip().encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _strtol(text: str) -> int:
    """C ``strtol`` as Marlin uses it: leading integer, 0 when there is none."""
    m = _INT_PREFIX.match(text)
    return int(m.group(1)) if m else 0


@dataclass
class Heater:
    """One heater with a first-order thermal model and a P+feed-forward controller.

    Readable by tests; ``actual`` is the true temperature (reports add sensor noise).
    The model advances lazily, whenever the firmware looks at it; use
    ``SimulatedPrinter.temperature()`` for an up-to-date value.
    """

    name: str
    ambient: float
    max_rise: float
    """Degrees above ambient at full power (steady state)."""
    tau: float
    """Thermal time constant in simulated seconds."""
    max_target: float
    actual: float
    target: float = 0.0
    power: float = 0.0
    """0..127, the scale Marlin reports as ``@:``."""

    def step(self, dt: float) -> None:
        """Advance ``dt`` simulated seconds."""
        if self.target > 0:
            feed_forward = (self.target - self.ambient) / self.max_rise * 127.0
            self.power = min(127.0, max(0.0, feed_forward + 12.7 * (self.target - self.actual)))
        else:
            self.power = 0.0
        equilibrium = self.ambient + self.max_rise * self.power / 127.0
        self.actual += (equilibrium - self.actual) * (1.0 - math.exp(-dt / self.tau))

    def set_target(self, value: float) -> None:
        """Clamp like Marlin does (silently, to MAXTEMP minus overshoot)."""
        self.target = min(max(0.0, value), self.max_target)


class _State(enum.Enum):
    OFF = "off"  # no pty (before start, after hangup/stop)
    BOOTING = "booting"  # pty open, bootloader: input is lost
    RUNNING = "running"
    HALTED = "halted"  # kill() called: deaf and mute until reset


class _Halted(Exception):
    """Unwinds the firmware task after an in-queue kill."""


class _NoOk(Exception):
    """A handler already sent its own ``ok`` line (M105)."""


class _Unknown(Exception):
    """A handler found the command unsupported in this configuration."""
