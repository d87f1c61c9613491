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

from hydrogen import protocol
from hydrogen.dispatch import Session
from hydrogen.gateway import Gateway
from hydrogen.hub import Subscriber, topic_matches
from hydrogen.printers.printer import (
    CommandFailed,
    Printer,
    PrinterUnavailable,
    open_serial,
)
from hydrogen.protocol import ErrorCode, ProtocolError, Request, Role

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
        d = gateway.dispatcher
        d.register("printers", self._on_printers)
        d.register("temperature_history", self._on_history)
        d.register("command", self._on_command, role=Role.CONTROL, background=True)
        d.register("emergency_stop", self._on_emergency_stop, role=Role.CONTROL)
        d.register("printer_reconnect", self._on_reconnect, role=Role.CONTROL)

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

    def get(self, name: Any, request: Request | None = None) -> Printer:
        printer = self.printers.get(name) if isinstance(name, str) else None
        if printer is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"no printer named {name!r}",
                {"printer": name, "printers": sorted(self.printers)},
                request_id=request.id if request else None,
            )
        return printer

    def _summary(self) -> tuple[str, Any]:
        return "printers", [p.summary() for p in self.printers.values()]

    def _on_subscribe(self, subscriber: Subscriber, patterns: list[str]) -> None:
        """A new temperature subscriber gets the history first, so its chart starts full."""
        for printer in self.printers.values():
            topic = printer.topic("temperature")
            if any(topic_matches(p, topic) for p in patterns) and len(printer.history):
                subscriber.push_frame(printer.history_frame())

    # -- request handlers ---------------------------------------------------------------
    async def _on_printers(self, session: Session, request: Request) -> dict[str, Any]:
        return protocol.reply(
            request, "printers", printers=[p.summary() for p in self.printers.values()]
        )

    async def _on_history(self, session: Session, request: Request) -> dict[str, Any]:
        printer = self.get(request.get("printer"), request)
        since = request.optional_number("since")
        return printer.history_frame(request.id, since)

    async def _on_command(self, session: Session, request: Request) -> dict[str, Any]:
        printer = self.get(request.get("printer"), request)
        gcode = request.require_str("gcode", max_length=MAX_GCODE_CHARS)
        response = await run_command(printer, gcode, request.id)
        return protocol.reply(request, "command_result", printer=printer.name, **response)

    async def _on_emergency_stop(self, session: Session, request: Request) -> dict[str, Any]:
        name = request.get("printer")
        targets = [self.get(name, request)] if name is not None else list(self.printers.values())
        stopped = []
        for printer in targets:
            try:
                printer.emergency_stop()
                stopped.append(printer.name)
            except PrinterUnavailable:
                continue
        if name is not None and not stopped:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                targets[0]._unavailable_reason(),
                {"printer": name, "state": targets[0].state.value},
            )
        return protocol.reply(request, "emergency_stop_sent", printers=stopped)

    async def _on_reconnect(self, session: Session, request: Request) -> dict[str, Any]:
        printer = self.get(request.get("printer"), request)
        printer.reconnect()
        return protocol.reply(request, "printer_reconnecting", printer=printer.name)


async def run_command(printer: Printer, gcode: str, request_id: Any = None) -> dict[str, Any]:
    """Shared by the WebSocket and HTTP command interfaces."""
    if len(gcode.splitlines()) > MAX_GCODE_LINES:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"at most {MAX_GCODE_LINES} lines per command",
            {"member": "gcode"},
            request_id=request_id,
        )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        response = await printer.command(gcode)
    except ValueError as exc:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, str(exc), {"member": "gcode"}, request_id=request_id
        ) from None
    except PrinterUnavailable as exc:
        raise ProtocolError(
            ErrorCode.UNAVAILABLE,
            str(exc),
            {"printer": printer.name, "state": printer.state.value},
            request_id=request_id,
        ) from None
    except CommandFailed as exc:
        raise ProtocolError(
            ErrorCode.PRINTER_ERROR, str(exc), {"printer": printer.name}, request_id=request_id
        ) from None
    return {
        "gcode": gcode,
        "response": response,
        "duration_seconds": round(loop.time() - started, 4),
    }
