"""One printer: the serial link, its Marlin protocol session, and its live state.

Thin I/O around :mod:`hydrogen.printers.marlin`: bytes from pyserial-asyncio go
into the sans-I/O protocol, its events become state changes and hub frames,
and whatever it wants written goes to the port. Nothing here parses firmware
text. The device vanishing is normal life: the printer goes ``disconnected``,
a notification goes out, and the link retries with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, assert_never

import serial

from hydrogen import protocol
from hydrogen.config import PrinterConfig
from hydrogen.hub import Hub
from hydrogen.printers import marlin
from hydrogen.printers.history import HeaterSample, TemperatureHistory, TemperatureSample
from hydrogen.printers.serial_link import EagerSerialTransport, LinkProtocol, open_serial

__all__ = [
    "CommandFailed",
    "EagerSerialTransport",
    "LinkStats",
    "Printer",
    "PrinterState",
    "PrinterUnavailable",
    "open_serial",
]

log = logging.getLogger(__name__)

Notify = Callable[..., None]
Opener = Callable[[PrinterConfig, asyncio.Protocol], Awaitable[asyncio.WriteTransport]]


#: Seconds without a byte from the firmware after which the handshake starts even
#: without a banner: boards that do not reset on open (and OctoPrint's virtual
#: printer) say nothing until asked.
QUIET_BEFORE_HANDSHAKE = 0.3


class PrinterState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    READY = "ready"
    BUSY = "busy"
    ERROR = "error"


class PrinterUnavailable(Exception):
    """The printer cannot take commands now (state says why)."""


class CommandFailed(Exception):
    """A command was sent but the link or firmware failed before its ``ok``."""


@dataclass
class LinkStats:
    lines_sent: int = 0
    lines_received: int = 0
    resends: int = 0
    reconnects: int = 0
    #: stalls the firmware answered again after (lost oks, lost probe answers)
    recoveries: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    connected_since: float | None = None


class Printer:
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
        #: Listeners for host action commands and firmware resets (the job layer).
        self.action_listeners: list[Callable[[str, str], None]] = []
        self.reset_listeners: list[Callable[[str], None]] = []
        self.state_listeners: list[Callable[[PrinterState, str | None], None]] = []

    # -- topics -----------------------------------------------------------------------
    def topic(self, leaf: str) -> str:
        return f"printer/{self.name}/{leaf}"

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._publish_state()
        self._task = asyncio.create_task(self._run(), name=f"printer-{self.name}")

    async def stop(self) -> None:
        # asyncio.timeout, not wait_for, everywhere in this class: on Python 3.11 wait_for
        # can swallow a cancellation that races its inner future. Ending the session
        # directly as well means stop() never depends on cancellation alone.
        self._stopping = True
        self._lose_link("gateway stopped")
        self._reconnect_now.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_state(PrinterState.DISCONNECTED, "gateway stopped")

    def reconnect(self) -> None:
        """Drop the link and open it again now (after a halt, or to retry at once)."""
        if self._task is not None and not self._task.done() and not self._stopping:
            # also while a lost session is still winding down: the loop must go round
            # again even with auto-reconnect off
            self._reconnect_requested = True
        if self._link_lost is not None and not self._link_lost.done():
            self._link_lost.set_result("reconnect requested")
        self._reconnect_now.set()
        if self._task is not None and self._task.done() and not self._stopping:
            # auto-reconnect is off and the link loop ended: an explicit request restarts it
            self._task = asyncio.create_task(self._run(), name=f"printer-{self.name}")

    async def _run(self) -> None:
        delay = 1.0
        first = True
        last_failure: str | None = None
        while not self._stopping:
            self._set_state(PrinterState.CONNECTING, f"opening {self.config.device}")
            try:
                async with asyncio.timeout(10):
                    transport = await self._opener(self.config, self._link_protocol())
            except (OSError, serial.SerialException, TimeoutError) as exc:
                reason = f"cannot open {self.config.device}: {_describe(exc)}"
                if last_failure != reason:  # one notification per outage, not per retry
                    last_failure = reason
                    log.warning("printer %s: %s", self.name, reason)
                    self._notify(
                        "warning",
                        "printer_disconnected",
                        f"{self.name}: {reason}",
                        printer=self.name,
                    )
                self._set_state(PrinterState.DISCONNECTED, reason)
                if not self.config.reconnect:
                    return
                await self._backoff(delay)
                delay = min(delay * 2, self.config.reconnect_max_delay)
                continue
            if not first:
                self.stats.reconnects += 1
            first = False
            last_failure = None
            delay = 1.0
            reason = await self._session(transport)
            if self._stopping:
                return
            log.warning("printer %s: link lost: %s", self.name, reason)
            self._notify(
                "error", "printer_disconnected", f"{self.name}: {reason}", printer=self.name
            )
            self._set_state(PrinterState.DISCONNECTED, reason)
            requested, self._reconnect_requested = self._reconnect_requested, False
            if not self.config.reconnect and not requested:
                return
            await self._backoff(0.2 if self._reconnect_now.is_set() else delay)

    async def _backoff(self, delay: float) -> None:
        """Sleep ``delay`` with ±20 % jitter (a USB hub of printers must not retry in step)."""
        self._reconnect_now.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay * random.uniform(0.8, 1.2)):
                await self._reconnect_now.wait()
        self._reconnect_now.clear()

    async def _session(self, transport: asyncio.WriteTransport) -> str:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self._proto = marlin.MarlinProtocol(
            window=cfg.window,
            ok_timeout=cfg.ok_timeout,
            long_command_timeout=cfg.long_command_timeout,
            link_timeout=cfg.link_timeout,
        )
        self._transport = transport
        self._link_lost = loop.create_future()
        self._reconnect_requested = False
        self._handshake_done = loop.create_future()
        self._banner_seen.clear()
        self._line_seen.clear()
        self._last_rx = loop.time()
        self._firmware_busy = False
        self._poller = None
        self._poll_pending = False
        self.stats.connected_since = time.time()
        ticker = asyncio.create_task(self._tick(), name=f"printer-{self.name}-tick")
        poller: asyncio.Task[None] | None = None
        try:
            if self._on_open is not None:
                self._on_open()
            # Opening the port resets many boards: they answer only after their
            # bootloader, with a banner. Others say nothing until asked. So the
            # handshake starts at the first line, or after a short silence, capped by
            # banner_timeout; a banner arriving later restarts it (FirmwareReset).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.banner_timeout):
                    await self._wait_either(self._firmware_listening())
            if not self._link_lost.done():
                poller = await self._handshake()
            return await self._link_lost
        except (asyncio.CancelledError, GeneratorExit):
            raise
        finally:
            # Deaf first: an ok read while this session winds down must not feed a job
            # or a handshake of a link that is already over.
            self._link_protocol_in_use = None
            for task in (ticker, poller):
                if task is not None:
                    task.cancel()
            await asyncio.gather(ticker, *([poller] if poller else []), return_exceptions=True)
            self._fail_outstanding("link closed")
            self._proto = None
            self._transport = None
            # abort, not close: stale lines still buffered must not trickle into the
            # device under the next session, and a graceful close would tcdrain().
            with contextlib.suppress(Exception):
                transport.abort()
            self.stats.connected_since = None

    async def _wait_either(self, awaitable: Awaitable[Any]) -> None:
        """Wait for ``awaitable`` unless the link is lost first."""
        assert self._link_lost is not None
        waiter = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait([waiter, self._link_lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def _firmware_listening(self) -> None:
        """Return once the firmware sent a line, or stayed silent for
        `QUIET_BEFORE_HANDSHAKE` (bootloader noise without a line break restarts the
        silence)."""
        loop = asyncio.get_running_loop()
        while not self._line_seen.is_set():
            quiet_until = self._last_rx + QUIET_BEFORE_HANDSHAKE
            if loop.time() >= quiet_until:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(quiet_until):
                    await self._line_seen.wait()

    async def _handshake(self) -> asyncio.Task[None] | None:
        """``M110 N0`` + ``M115``, retried until the firmware answers or we give up."""
        assert self._proto is not None and self._handshake_done is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.handshake_timeout
        # A banner already made the protocol queue a handshake; starting another now
        # would credit the first one's oks to the second.
        restart = not self._banner_seen.is_set()
        while not self._handshake_done.done():
            if self._link_lost is None or self._link_lost.done():
                return None
            if restart:
                self._fail_tags(self._proto.begin_handshake(), "handshake restarted")
            restart = True
            self._flush()
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._lose_link("firmware did not answer the handshake (M110/M115)")
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(2.0, remaining)):
                    await self._wait_either(asyncio.shield(self._handshake_done))
        return self._handshake_finished(self._handshake_done.result())

    def _handshake_finished(self, firmware: marlin.FirmwareInfo) -> asyncio.Task[None] | None:
        """Temperature reporting set up, state ready (also after a reset mid-session)."""
        self.firmware = firmware
        interval = max(1, round(self.config.temperature_interval))
        poller = None
        if firmware.capabilities.get("AUTOREPORT_TEMP"):
            self._send_internal(f"M155 S{interval}")
        elif self._poller is None or self._poller.done():
            poller = self._poller = asyncio.create_task(self._poll_temperatures(interval))
        self._set_state(PrinterState.READY, None)
        log.info("printer %s: ready (%s)", self.name, firmware.name)
        self._notify(
            "info",
            "printer_connected",
            f"{self.name}: connected to {firmware.name}",
            printer=self.name,
            firmware=firmware.name,
        )
        return poller

    async def _poll_temperatures(self, interval: float) -> None:
        """``M105`` every interval for firmware without autoreport, also during a job
        (it goes out after the few job lines queued ahead of it); never more than one
        outstanding, so a firmware stuck in a long command does not collect a pile."""
        while True:
            await asyncio.sleep(interval)
            if self._proto is not None and not self._poll_pending:
                self._poll_pending = True
                self._send_internal("M105", tag=self._poll_answered)

    def _poll_answered(self, _result: object) -> None:
        self._poll_pending = False

    def _link_protocol(self) -> LinkProtocol:
        """The transport's protocol for one session. Only the newest one is listened
        to: a closed link's late ``connection_lost`` must not end the next session."""

        def on_data(data: bytes) -> None:
            proto = self._proto
            if proto is None or self._link_protocol_in_use is not protocol:
                return
            try:
                self._last_rx = now = asyncio.get_running_loop().time()
                proto.receive_data(data, now)
                self._process()
            except Exception:
                # A bug must not leave a printer that looks ready but reads nothing.
                log.exception("printer %s: internal error handling serial data", self.name)
                self._lose_link("internal error handling serial data")

        def on_lost(exc: Exception | None) -> None:
            if self._link_protocol_in_use is not protocol:
                return
            if exc is None:
                self._lose_link("the device closed the connection")
            else:
                self._lose_link(f"device error: {_describe(exc)}")

        protocol = LinkProtocol(on_data, on_lost)
        self._link_protocol_in_use = protocol
        return protocol

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.25)
            if self._proto is not None:
                self._proto.check_timeouts(loop.time())
                self._process()

    def _lose_link(self, reason: str) -> None:
        if self._link_lost is not None and not self._link_lost.done():
            self._link_lost.set_result(reason)

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
        if self.state not in (PrinterState.READY, PrinterState.BUSY) or self._proto is None:
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
                if text.strip() == "start":
                    self._banner_seen.set()
                self._publish_serial("recv", text, now)
            case marlin.LineSent(text=text):
                self.stats.lines_sent += 1
                self._publish_serial("send", text, now)
            case marlin.CommandAcknowledged(tag=tag, response=response):
                self._firmware_busy = False
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
                    {
                        "type": "action",
                        "topic": self.topic("action"),
                        "printer": self.name,
                        "action": action,
                        "argument": argument,
                        "time": protocol.utc_iso(now),
                    },
                )
                for listener in self.action_listeners:
                    listener(action, argument)
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
                {
                    "type": "serial",
                    "topic": topic,
                    "printer": self.name,
                    "direction": direction,
                    "line": line,
                    "time": protocol.utc_iso(now),
                },
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
            {"type": "temperature", "topic": topic, "printer": self.name, **sample.as_dict()},
            coalesce=True,
        )

    def _firmware_error(self, event: marlin.FirmwareError) -> None:
        self.stats.errors_by_kind[event.kind] += 1
        now = time.time()
        topic = self.topic("error")
        self._hub.publish(
            topic,
            {
                "type": "printer_error",
                "topic": topic,
                "printer": self.name,
                "kind": event.kind,
                "message": event.message,
                "fatal": event.fatal,
                "time": protocol.utc_iso(now),
            },
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
        if self.state in (PrinterState.READY, PrinterState.BUSY, PrinterState.ERROR):
            reason = "the firmware reset (start seen mid-session)"
            log.warning("printer %s: %s", self.name, reason)
            self._notify("warning", "printer_reset", f"{self.name}: {reason}", printer=self.name)
            for listener in self.reset_listeners:
                listener(reason)
            self._set_state(PrinterState.CONNECTING, reason)

    def _set_state(self, state: PrinterState, reason: str | None) -> None:
        if state is self.state and reason == self.state_reason:
            return
        self.state = state
        self.state_reason = reason
        self._publish_state()
        for listener in self.state_listeners:
            listener(state, reason)

    def _publish_state(self) -> None:
        topic = self.topic("state")
        self._hub.publish(topic, self.state_frame(), coalesce=True, retain=True)

    def state_frame(self) -> dict[str, Any]:
        return {"type": "printer_state", "topic": self.topic("state"), **self.summary()}

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
        }

    def history_frame(self, request_id: Any = None, since: float | None = None) -> dict[str, Any]:
        topic = self.topic("temperature")
        frame = {
            "type": "temperature_history",
            "topic": topic,
            "printer": self.name,
            "seconds": self.history.seconds,
            "samples": [s.as_dict() for s in self.history.samples(since)],
        }
        if request_id is not None:
            frame["id"] = request_id
        return frame

    # -- commands ---------------------------------------------------------------------------
    @property
    def accepts_commands(self) -> bool:
        return self.state in (PrinterState.READY, PrinterState.BUSY) and self._proto is not None

    def _send_internal(self, line: str, tag: Callable[[object], None] | None = None) -> None:
        """A line the gateway itself sends (temperature polling, autoreport setup);
        ``tag`` hears its ``ok`` (or the failure) when the caller needs to."""
        if self._proto is None:
            return
        self._proto.send(line, tag=tag)
        self._flush()

    def send_line(self, line: str, tag: Any) -> None:
        """Queue one validated line with a tag whose ``ok`` the caller awaits (jobs use this)."""
        if not self.accepts_commands or self._proto is None:
            raise PrinterUnavailable(self._unavailable_reason())
        self._proto.send(line, tag=tag)
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
        futures: list[asyncio.Future[tuple[str, ...]]] = []
        for line in lines:
            future: asyncio.Future[tuple[str, ...]] = loop.create_future()
            future.add_done_callback(_consume_exception)
            self.send_line(line, _Tag(future, line, self))
            futures.append(future)
        responses = await asyncio.gather(*futures)
        if self._observe_command is not None:
            self._observe_command(self.name, loop.time() - started)
        return [text for response in responses for text in response]

    def _acknowledged(self, tag: Any, response: tuple[str, ...]) -> None:
        if isinstance(tag, _Tag):
            tag.done(response)
        elif callable(tag):
            tag(response)

    def withdraw(self, tags: Collection[object]) -> list[object]:
        """Take back queued lines not yet written (see ``MarlinProtocol.withdraw``)."""
        return [] if self._proto is None else self._proto.withdraw(tags)

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
            raise PrinterUnavailable(self._unavailable_reason())
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
            if isinstance(tag, _Tag):
                tag.fail(reason)
            elif callable(tag):
                tag(CommandFailed(reason))

    def _unavailable_reason(self) -> str:
        reason = f" ({self.state_reason})" if self.state_reason else ""
        return f"printer {self.name} is {self.state.value}{reason}"


class _Tag:
    """Links a queued line to the future waiting for its ``ok``."""

    __slots__ = ("future", "line", "printer")

    def __init__(self, future: asyncio.Future[tuple[str, ...]], line: str, printer: Printer):
        self.future = future
        self.line = line
        self.printer = printer

    def done(self, response: tuple[str, ...]) -> None:
        if not self.future.done():
            self.future.set_result(response)

    def fail(self, reason: str) -> None:
        if not self.future.done():
            self.future.set_exception(CommandFailed(reason))


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _meaningful(raw: str) -> bool:
    return bool(raw.split(";", 1)[0].strip())


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:200] if text else type(exc).__name__
