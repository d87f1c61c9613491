"""All printers of one gateway: creation, request handlers, status summary.

The manager is where printers plug into the core without the core knowing
about them: it registers request types with the dispatcher, a ``printers``
member in the status frame and a hook that sends temperature history to new
subscribers.  Command round trips go to ``gateway.instruments``; the metrics registry
builds the printers' collector from this manager, which imports no metrics.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from hydrogen.gateway import Gateway
from hydrogen.hub import Subscriber, topic_matches
from hydrogen.identity import Identity
from hydrogen.printers.printer import (
    Printer,
    open_serial,
)
from hydrogen.protocol import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from hydrogen.simulator import SimulatedPrinter

log = logging.getLogger(__name__)

MAX_GCODE_CHARS = 8192
MAX_GCODE_LINES = 64


class PrinterManager:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.printers: dict[str, Printer] = {}
        self.simulators: dict[str, SimulatedPrinter] = {}
        for config in gateway.config.printers:
            opener, on_open = open_serial, None
            if config.is_simulator:
                # Imported here: only a gateway with a simulated printer loads the simulator.
                from hydrogen.simulator.wiring import wire_simulator

                wired = wire_simulator(config, gateway.config.state_dir, open_serial)
                self.simulators[config.name] = wired.simulator
                opener, on_open = wired.opener, wired.on_open

            self.printers[config.name] = Printer(
                config,
                gateway.hub,
                gateway.notify,
                opener=opener,
                on_open=on_open,
                observe_command=self._observe,
            )
        gateway.add_status_contributor(self._summary)
        gateway.hub.on_subscribe(self._on_subscribe)
        gateway.add_service(self)

    def _observe(self, printer: str, seconds: float) -> None:
        self.gateway.instruments.observe_command(printer, seconds)

    async def start(self) -> None:
        if self.gateway.config.printers:
            self.gateway.config.state_dir.mkdir(parents=True, exist_ok=True)
        for sim in self.simulators.values():
            await sim.start()
        for printer in self.printers.values():
            await printer.start()

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.printers.values()))
        for sim in self.simulators.values():
            await sim.stop()

    def get(self, name: Any, identity: Identity | None = None) -> Printer:
        """The printer called ``name``; one outside ``identity``'s scope does not exist."""
        printer = self.printers.get(name) if isinstance(name, str) else None
        if printer is None or (identity is not None and not identity.sees(printer.name)):
            known = identity.visible(self.printers) if identity else list(self.printers)
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"no printer named {name!r}",
                {"printer": name, "printers": sorted(known)},
            )
        return printer

    def visible(self, identity: Identity | None) -> list[Printer]:
        return [p for p in self.printers.values() if identity is None or identity.sees(p.name)]

    def _summary(self) -> tuple[str, Any]:
        return "printers", [p.summary() for p in self.printers.values()]

    def _on_subscribe(self, subscriber: Subscriber, patterns: list[str]) -> None:
        """A new temperature subscriber gets the history first, so its chart starts full
        (only of the printers its identity may see)."""
        for printer in self.printers.values():
            topic = printer.topic("temperature")
            if (
                any(topic_matches(p, topic) for p in patterns)
                and subscriber.allows(topic)
                and len(printer.history)
            ):
                subscriber.push_frame(printer.history_frame())
