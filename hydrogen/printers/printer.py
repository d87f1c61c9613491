"""One printer: the serial link, its Marlin protocol session, and its live state.

Thin I/O around :mod:`hydrogen.printers.marlin`: bytes from pyserial-asyncio go
into the sans-I/O protocol, its events become state changes and hub frames,
and whatever it wants written goes to the port. Nothing here parses firmware
text. Opening the link, a session's handshake and reconnecting with backoff are
in :mod:`hydrogen.printers.connection`; the states are in :mod:`hydrogen.printers.state`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol, assert_never

import serial

from hydrogen import protocol
from hydrogen.config import PrinterConfig
from hydrogen.hub import Hub
from hydrogen.printers import marlin
from hydrogen.printers.connection import Notify, Opener, PrinterConnection, _describe
from hydrogen.printers.history import HeaterSample, TemperatureHistory, TemperatureSample
from hydrogen.printers.pending import PendingLine
from hydrogen.printers.serial_link import EagerSerialTransport, LinkProtocol, open_serial
from hydrogen.printers.state import (
    HANDSHAKEN,
    OPERATIONAL,
    CommandFailed,
    LinkStats,
    PrinterState,
    PrinterUnavailable,
)
from hydrogen.printers.telemetry import Telemetry

__all__ = [
    "CommandFailed",
    "EagerSerialTransport",
    "LinkStats",
    "PendingLine",
    "Printer",
    "PrinterListener",
    "PrinterState",
    "PrinterUnavailable",
    "open_serial",
]

log = logging.getLogger(__name__)


class PrinterListener(Protocol):
    """What another layer (the jobs) hears from a printer, registered once in
    `Printer.listeners`. Called synchronously from the printer's event handling:
    a listener must not block, and starts a task for anything that awaits."""

    def on_state(self, printer: Printer, state: PrinterState, reason: str | None) -> None:
        """The printer's state or its reason changed."""

    def on_reset(self, printer: Printer, reason: str) -> None:
        """The firmware reset mid-session: everything in flight was lost."""

    def on_host_action(self, printer: Printer, action: str, argument: str) -> None:
        """The firmware sent ``//action:<action> <argument>`` (pause, resume, cancel, ...)."""


class Printer(PrinterConnection):
    def __init__(
        self,
        config: PrinterConfig,
        hub: Hub,
        notify: Notify,
        *,
        opener: Opener = open_serial,
        on_open: Callable[[], None] | None = None,
        observe_command: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._hub = hub
        self._notify = notify
        self._opener = opener
        self._on_open = on_open
        self._observe_command = observe_command
        self.state = PrinterState.DISCONNECTED
        self.state_reason: str | None = "not started"
        self.firmware: marlin.FirmwareInfo | None = None
        self.temperatures: dict[str, HeaterSample] = {}
        self.temperatures_at: float | None = None
        self.history = TemperatureHistory(
            config.history_seconds, min_interval=min(1.0, config.temperature_interval / 2)
        )
        self.stats = LinkStats()
        self.telemetry = Telemetry()  # filament, fans, factors, position (what was acknowledged)
        self._proto: marlin.MarlinProtocol | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._handshake_done: asyncio.Future[marlin.FirmwareInfo] | None = None
        self._link_lost: asyncio.Future[str] | None = None
        #: a ``busy:`` keep-alive arrived since the last ok
        self._firmware_busy = False
        self._reconnect_now = asyncio.Event()
        #: reconnect() asked during a session: reopen even with auto-reconnect off.
        self._reconnect_requested = False
        self._stopping = False
        self._banner_seen: asyncio.Event = asyncio.Event()
        #: the firmware sent a line in this session (it is awake and listening)
        self._line_seen: asyncio.Event = asyncio.Event()
        self._last_rx = 0.0
        self._poller: asyncio.Task[None] | None = None
        self._poll_pending = False
        self._link_protocol_in_use: LinkProtocol | None = None
        #: who hears of state changes, firmware resets and host actions (the job layer)
        self.listeners: list[PrinterListener] = []

    # -- topics -----------------------------------------------------------------------
    def topic(self, leaf: str) -> str:
        return f"printer/{self.name}/{leaf}"

    # -- the protocol pump ---------------------------------------------------------------
    def _flush(self) -> None:
        proto, transport = self._proto, self._transport
        if proto is None or transport is None:
            return
        data = proto.data_to_send(asyncio.get_running_loop().time())
        if data:
            try:
                transport.write(data)
            except (OSError, serial.SerialException, RuntimeError) as exc:
                self._lose_link(f"write failed: {_describe(exc)}")
        self._process_events()

    def _process(self) -> None:
        self._process_events()
        self._flush()

    def _process_events(self) -> None:
        proto = self._proto
        if proto is None:
            return
        for event in proto.next_events():
            self._handle(event)
        self._sync_busy()

    def _sync_busy(self) -> None:
        """``ready`` or ``busy``, derived from what the protocol has in flight (its one
        owner), never counted here: whatever withdraws, cancels, halts or resets lines
        leaves nothing stale behind."""
        if self.state not in OPERATIONAL or self._proto is None:
            return
        word = self._proto.running_long_command
        if word is not None:
            self._set_state(PrinterState.BUSY, f"running {word}")
        elif self._firmware_busy and self._proto.in_flight:
            self._set_state(PrinterState.BUSY, "firmware busy")
        else:
            self._set_state(PrinterState.READY, None)

    def _handle(self, event: marlin.Event) -> None:
        now = time.time()
        match event:
            case marlin.LineReceived(text=text):
                self.stats.lines_received += 1
                self._line_seen.set()
                self.telemetry.received(text)
                if text.strip() == "start":
                    self._banner_seen.set()
                self._publish_serial("recv", text, now)
            case marlin.LineSent(text=text):
                self.stats.lines_sent += 1
                self._publish_serial("send", text, now)
            case marlin.CommandAcknowledged(tag=tag, line=line, response=response):
                self._firmware_busy = False
                self.telemetry.acknowledged(line)
                self._acknowledged(tag, response)
            case marlin.TemperatureReport(heaters=heaters):
                self._temperatures(heaters, now)
            case marlin.FirmwareInfo():
                if self._handshake_done is not None and not self._handshake_done.done():
                    self._handshake_done.set_result(event)
                elif self.state is PrinterState.CONNECTING:
                    self._handshake_finished(event)  # the firmware reset and re-handshook
            case marlin.FirmwareReset():
                self._firmware_reset(event)
            case marlin.Busy():
                self._firmware_busy = True
            case marlin.FirmwareError():
                self._firmware_error(event)
            case marlin.ActionCommand(action=action, argument=argument):
                self._hub.publish(
                    self.topic("action"),
                    protocol.push(
                        protocol.Push.ACTION,
                        self.topic("action"),
                        {
                            "printer": self.name,
                            "action": action,
                            "argument": argument,
                            "time": protocol.utc_iso(now),
                        },
                    ),
                )
                for listener in self.listeners:
                    listener.on_host_action(self, action, argument)
            case marlin.Resending():
                self.stats.resends += 1
            case marlin.LinkFailed(reason=reason, lost_tags=lost):
                self.stats.errors_by_kind["link"] += 1
                self._fail_tags(lost, f"link failed: {reason}")
                self._lose_link(reason)
            case marlin.LinkStalled(reason=reason):
                log.info("printer %s: %s; probing", self.name, reason)
            case marlin.ProbeSent():
                pass  # shown in the serial topic as a LineSent
            case marlin.LinkRecovered():
                self._recovered(event)
            case _:
                assert_never(event)

    def _recovered(self, event: marlin.LinkRecovered) -> None:
        """Lost oks are line noise, not a lost link: a warning and a counter."""
        self.stats.recoveries += 1
        text = (
            f"{self.name}: the printer answered again after {event.seconds:.1f}s "
            f"({event.oks_lost} lost ok{'s' if event.oks_lost != 1 else ''}, "
            f"{event.probes} probe{'s' if event.probes != 1 else ''}); nothing was lost"
        )
        log.warning("printer %s", text)
        self._notify(
            "warning",
            "printer_link_recovered",
            text,
            printer=self.name,
            oks_lost=event.oks_lost,
            probes=event.probes,
            seconds=round(event.seconds, 1),
        )

    # -- events -> state and frames ------------------------------------------------------
    def _publish_serial(self, direction: str, line: str, now: float) -> None:
        topic = self.topic("serial")
        if self._hub.has_subscribers(topic):
            self._hub.publish(
                topic,
                protocol.push(
                    protocol.Push.SERIAL,
                    topic,
                    {
                        "printer": self.name,
                        "direction": direction,
                        "line": line,
                        "time": protocol.utc_iso(now),
                    },
                ),
            )

    def _temperatures(self, heaters: Mapping[str, Any], now: float) -> None:
        merged = dict(self.temperatures)
        for name, reading in heaters.items():
            previous = merged.get(name)
            target = (
                reading.target
                if reading.target is not None
                else (previous.target if previous else None)
            )
            power = reading.power if reading.power is not None else None
            merged[name] = HeaterSample(reading.actual, target, power)
        self.temperatures = merged
        self.temperatures_at = now
        sample = TemperatureSample(now, dict(merged))
        self.history.add(sample)
        topic = self.topic("temperature")
        self._hub.publish(
            topic,
            protocol.push(
                protocol.Push.TEMPERATURE, topic, {"printer": self.name, **sample.as_dict()}
            ),
            coalesce=True,
        )

    def _firmware_error(self, event: marlin.FirmwareError) -> None:
        self.stats.errors_by_kind[event.kind] += 1
        now = time.time()
        topic = self.topic("error")
        self._hub.publish(
            topic,
            protocol.push(
                protocol.Push.PRINTER_ERROR,
                topic,
                {
                    "printer": self.name,
                    "kind": event.kind,
                    "message": event.message,
                    "fatal": event.fatal,
                    "time": protocol.utc_iso(now),
                },
            ),
        )
        if not event.fatal:
            return
        log.error("printer %s: %s", self.name, event.message)
        event_name = "thermal_error" if event.kind == "thermal" else "printer_halted"
        self._notify(
            "critical",
            event_name,
            f"{self.name}: {event.message}",
            printer=self.name,
            kind=event.kind,
        )
        if self.state is not PrinterState.ERROR:
            # The first cause stays the reason: after an emergency stop the firmware's
            # own "kill() called!" is its answer, not news (its text is in the
            # printer_error frame and the notification).
            self._set_state(PrinterState.ERROR, event.message)
        self._fail_outstanding(f"printer halted: {event.message}")

    def _firmware_reset(self, event: marlin.FirmwareReset) -> None:
        """``start`` mid-session: everything in flight is lost; the protocol has
        queued a new handshake on the same link (reopening would reset the board again)."""
        self._banner_seen.set()
        self._fail_tags(event.lost_tags, "the firmware reset")
        if self.state in HANDSHAKEN:
            reason = "the firmware reset (start seen mid-session)"
            log.warning("printer %s: %s", self.name, reason)
            self._notify("warning", "printer_reset", f"{self.name}: {reason}", printer=self.name)
            for listener in self.listeners:
                listener.on_reset(self, reason)
            self._set_state(PrinterState.CONNECTING, reason)

    def _set_state(self, state: PrinterState, reason: str | None) -> None:
        if state is self.state and reason == self.state_reason:
            return
        self.state = state
        self.state_reason = reason
        self._publish_state()
        for listener in self.listeners:
            listener.on_state(self, state, reason)

    def _publish_state(self) -> None:
        topic = self.topic("state")
        self._hub.publish(topic, self.state_frame(), coalesce=True, retain=True)

    def state_frame(self) -> dict[str, Any]:
        return protocol.push(protocol.Push.PRINTER_STATE, self.topic("state"), self.summary())

    def summary(self) -> dict[str, Any]:
        fw = self.firmware
        return {
            "printer": self.name,
            "state": self.state.value,
            "reason": self.state_reason,
            "device": self.config.device,
            "baud": self.config.baud,
            "firmware": None
            if fw is None
            else {
                "name": fw.name,
                "fields": dict(fw.fields),
                "capabilities": dict(fw.capabilities),
            },
            "temperatures": {
                n: {"actual": h.actual, "target": h.target, "power": h.power}
                for n, h in self.temperatures.items()
            },
            "temperatures_at": None
            if self.temperatures_at is None
            else protocol.utc_iso(self.temperatures_at),
            "link": {
                "lines_sent": self.stats.lines_sent,
                "lines_received": self.stats.lines_received,
                "resends": self.stats.resends,
                "reconnects": self.stats.reconnects,
                "recoveries": self.stats.recoveries,
                "errors": dict(self.stats.errors_by_kind),
            },
            "telemetry": self.telemetry.as_dict(),
        }

    def history_payload(self, since: float | None = None) -> dict[str, Any]:
        """The temperature history as plain data (a reply's or a frame's payload)."""
        return {
            "printer": self.name,
            "seconds": self.history.seconds,
            "samples": [s.as_dict() for s in self.history.samples(since)],
        }

    def history_frame(self) -> dict[str, Any]:
        """The history as the frame a new temperature subscriber gets first."""
        topic = self.topic("temperature")
        return protocol.push(protocol.Push.TEMPERATURE_HISTORY, topic, self.history_payload())

    # -- commands ---------------------------------------------------------------------------
    @property
    def accepts_commands(self) -> bool:
        return self.state in OPERATIONAL and self._proto is not None

    def _send_internal(self, line: str, pending: PendingLine | None = None) -> None:
        """A line the gateway itself sends (temperature polling, autoreport setup);
        ``pending`` hears its ``ok`` (or the failure) when the caller needs to."""
        if self._proto is None:
            return
        self._proto.send(line, tag=pending)
        self._flush()

    def send_line(self, line: str, pending: PendingLine | None) -> None:
        """Queue one validated line; ``pending`` (None: nobody waits) hears its ``ok``
        or its failure (jobs use this)."""
        if not self.accepts_commands or self._proto is None:
            raise PrinterUnavailable(self.unavailable_reason())
        self._proto.send(line, tag=pending)
        self._flush()

    @property
    def queued_lines(self) -> int:
        return 0 if self._proto is None else self._proto.queued

    async def command(self, gcode: str) -> list[str]:
        """Send one or several lines; return the response lines once all are acknowledged."""
        lines = [marlin.validate_gcode(raw) for raw in gcode.splitlines() if _meaningful(raw)]
        if not lines:
            raise ValueError("no G-code in the command")
        loop = asyncio.get_running_loop()
        started = loop.time()
        pending = [PendingLine(line) for line in lines]
        for each in pending:
            self.send_line(each.line, each)
        responses = await asyncio.gather(*(each.future for each in pending))
        if self._observe_command is not None:
            self._observe_command(self.name, loop.time() - started)
        return [text for response in responses for text in response]

    def _acknowledged(self, tag: object, response: tuple[str, ...]) -> None:
        if isinstance(tag, PendingLine):
            tag.acknowledged(response)

    def withdraw(self, lines: Collection[PendingLine]) -> list[PendingLine]:
        """Take back those of ``lines`` not yet written (see ``MarlinProtocol.withdraw``);
        return them. Settling them is the caller's (`PendingLine.withdrawn`)."""
        if self._proto is None:
            return []
        return [tag for tag in self._proto.withdraw(lines) if isinstance(tag, PendingLine)]

    def interrupt_wait(self) -> tuple[str, ...]:
        """Break a heat-up or user wait in progress with ``M108`` (see
        ``MarlinProtocol.interrupt_wait``): a cancel or pause must not wait minutes for
        the firmware. Returns the waits broken."""
        if self._proto is None:
            return ()
        waits = self._proto.interrupt_wait()
        if waits:
            log.info("printer %s: breaking %s with M108", self.name, ", ".join(waits))
            self._flush()
        return waits

    def emergency_stop(self) -> None:
        """``M112`` ahead of everything queued; the printer halts and needs a reconnect."""
        if self._proto is None or self._transport is None:
            raise PrinterUnavailable(self.unavailable_reason())
        dropped = self._proto.emergency_stop()
        self._flush()
        self._fail_tags(dropped, "emergency stop")
        log.warning("printer %s: emergency stop sent", self.name)
        self._notify(
            "critical",
            "emergency_stop",
            f"{self.name}: emergency stop (M112) sent",
            printer=self.name,
        )
        self._set_state(PrinterState.ERROR, "emergency stop")
        self._fail_outstanding("emergency stop")

    def _fail_outstanding(self, reason: str) -> None:
        """The firmware lost everything written or queued (halt, reset, link closed)."""
        proto = self._proto
        if proto is None:
            return
        self._fail_tags(proto.cancel_pending(include_in_flight=True), reason)

    def _fail_tags(self, tags: list[object] | tuple[object, ...], reason: str) -> None:
        for tag in tags:
            if isinstance(tag, PendingLine):
                tag.failed(reason)

    def unavailable_reason(self) -> str:
        reason = f" ({self.state_reason})" if self.state_reason else ""
        return f"printer {self.name} is {self.state.value}{reason}"


def _meaningful(raw: str) -> bool:
    return bool(raw.split(";", 1)[0].strip())
