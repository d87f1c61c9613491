"""A printer configured as ``device = "simulator"``: the simulated board and what the
``Printer`` needs to talk to it like to any other port.

``PrinterManager`` imports this module only when such a printer is configured, so a
gateway with real printers never loads the simulator.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hydrogen.config import PrinterConfig
from hydrogen.printers.serial_link import open_serial
from hydrogen.simulator.printer import SimulatedPrinter

Opener = Callable[[PrinterConfig, asyncio.Protocol], Awaitable[asyncio.WriteTransport]]


@dataclass(frozen=True)
class SimulatorWiring:
    simulator: SimulatedPrinter
    opener: Opener
    """Opens the simulator's pty in place of the configured device."""
    on_open: Callable[[], None]
    """Called after each open: opening a real port resets most boards (DTR); the
    simulator does the same."""


def wire_simulator(config: PrinterConfig, state_dir: Path) -> SimulatorWiring:
    """A simulator whose link is ``<state_dir>/<name>.pty``, and how to open it."""
    sim = SimulatedPrinter(link=str(state_dir / f"{config.name}.pty"))

    async def opener(cfg: PrinterConfig, link: asyncio.Protocol) -> asyncio.WriteTransport:
        return await open_serial(dataclasses.replace(cfg, device=sim.path), link)

    return SimulatorWiring(simulator=sim, opener=opener, on_open=sim.reset)
