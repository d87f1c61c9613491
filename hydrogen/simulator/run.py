"""What ``hydrogen simulator --link PATH`` runs: one simulated printer until stopped."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hydrogen.simulator.printer import SimulatedPrinter

log = logging.getLogger("hydrogen.simulator")


async def run_simulator(
    link: str,
    *,
    seed: int | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Serve a simulated printer at ``link`` until cancelled or ``stop`` is set.

    ``options`` go to ``SimulatedPrinter`` (time_scale, banner_delay, ...); this is
    what ``hydrogen simulator --link PATH`` runs.
    """
    printer = SimulatedPrinter(link=link, seed=seed, **options)
    await printer.start()
    log.info("simulated printer on %s -> %s", link, printer.slave_path)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await printer.stop()
