"""A simulated Marlin 2.1 printer behind a real pseudo-terminal.

The gateway talks to printers through pyserial-asyncio on a tty path. So that the
default demo (no hardware) and the integration tests exercise exactly that path,
this module opens a pty pair, keeps the slave end in raw mode and plays Marlin
on the master end: start banner, line numbers and checksums with Marlin's error
and resend texts, M105/M155 temperature reports, M114/M154 position reports,
M220/M221 factors, blocking M109/M190 with wait lines, busy keep-alives, the
emergency parser (M112/M108 act even while a command blocks), kill() after thermal
runaway, and a device that can vanish and come back (hangup/replug).

Deliberate, documented differences from a real board:

* After a line error Marlin throws away whatever sits in its 128-byte RX buffer,
  byte by byte, so the tail of a half-discarded line can run as a command of its
  own. The simulator discards whole lines only (those ending within the first
  ``rx_buffer_size`` pending bytes) so that "every line exactly once" stays a
  property a correct host can actually achieve.
* All firmware timers (wait lines, keep-alives, M155 intervals, dwell, homing,
  heating) run on simulated time, ``time_scale`` times faster than the wall
  clock; ``banner_delay`` is wall-clock time because it models what the host sees.
* Opening the port does not reset the board (like most 32-bit USB boards);
  ``reset()`` models a reset explicitly.

The package is a tool for the demo and the tests, not part of the gateway: only
``PrinterManager`` imports it (lazily, through ``wiring``) when a printer is configured
as a simulator, and ``hydrogen simulator`` runs it on its own.

model.py     Marlin's texts, line framing and checksums, the heater model.
faults.py    the fault switches and the seeded draws made from them.
pty.py       the pty pair, the link path, reads with the emergency parser, bounded writes.
firmware.py  boot, simulated time and heat, line checks and resends, kill, dispatch.
gcode.py     one handler per supported G-code.
printer.py   ``SimulatedPrinter``: its state and public API.
run.py       ``run_simulator``, what ``hydrogen simulator`` serves.
wiring.py    a configured simulated printer plugged into a ``Printer``.
"""

from __future__ import annotations

from hydrogen.simulator.faults import Faults
from hydrogen.simulator.model import (
    FIRMWARE_VERSION,
    Heater,
    digest_of,
    gcode_checksum,
    numbered_line,
)
from hydrogen.simulator.printer import SimulatedPrinter
from hydrogen.simulator.run import run_simulator

__all__ = [
    "FIRMWARE_VERSION",
    "Faults",
    "Heater",
    "SimulatedPrinter",
    "digest_of",
    "gcode_checksum",
    "numbered_line",
    "run_simulator",
]
