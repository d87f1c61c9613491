"""A printer configured as ``device = "simulator"``: the simulated board and what the
``Printer`` needs to talk to it like to any other port.

``PrinterManager`` imports this module only when such a printer is configured, so a
gateway with real printers never loads the simulator; it hands in how a port is
opened, so the simulator imports nothing of the printers package.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hydrogen.config import PrinterConfig
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


def wire_simulator(config: PrinterConfig, state_dir: Path, open_port: Opener) -> SimulatorWiring:
    """A simulator whose link is ``<state_dir>/<name>.pty``, and how to open it:
    ``open_port`` (the printers' own) on the simulator's pty instead of the device."""
    sim = SimulatedPrinter(link=str(state_dir / f"{config.name}.pty"))

    async def opener(cfg: PrinterConfig, link: asyncio.Protocol) -> asyncio.WriteTransport:
        return await open_port(dataclasses.replace(cfg, device=sim.path), link)

    return SimulatorWiring(simulator=sim, opener=opener, on_open=sim.reset)
