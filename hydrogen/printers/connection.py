"""A printer's link over time: open the port, run one session (banner, handshake,
temperature reporting set up), notice the link is lost, reopen it with capped,
jittered backoff, and stop. The device vanishing is normal life: the printer goes
``disconnected``, a notification goes out, and the link retries.

`PrinterConnection` is the part of :class:`hydrogen.printers.printer.Printer` that
does this; the printer's live state, its events and its commands are in printer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import serial

from hydrogen.config import PrinterConfig
from hydrogen.printers import marlin
from hydrogen.printers.pending import PendingLine
from hydrogen.printers.serial_link import LinkProtocol
from hydrogen.printers.state import LinkStats, PrinterState
from hydrogen.printers.telemetry import Telemetry

log = logging.getLogger("hydrogen.printers.printer")

Notify = Callable[..., None]
Opener = Callable[[PrinterConfig, asyncio.Protocol], Awaitable[asyncio.WriteTransport]]


#: Seconds without a byte from the firmware after which the handshake starts even
#: without a banner: boards that do not reset on open (and OctoPrint's virtual
#: printer) say nothing until asked.
QUIET_BEFORE_HANDSHAKE = 0.3


class PrinterConnection:
    """Reconnect loop and session lifecycle of a `Printer` (which sets every attribute
    below in its ``__init__`` and provides the state and pump methods used here:
    ``_set_state``, ``_process``, ``_flush``, ``_fail_tags``, ``_fail_outstanding``,
    ``_send_internal``)."""

    config: PrinterConfig
    name: str
    stats: LinkStats
    firmware: marlin.FirmwareInfo | None
    telemetry: Telemetry
    _notify: Notify
    _opener: Opener
    _on_open: Callable[[], None] | None
    _proto: marlin.MarlinProtocol | None
    _transport: asyncio.WriteTransport | None
    _task: asyncio.Task[None] | None
    _handshake_done: asyncio.Future[marlin.FirmwareInfo] | None
    _link_lost: asyncio.Future[str] | None
    _firmware_busy: bool
    _reconnect_now: asyncio.Event
    _reconnect_requested: bool
    _stopping: bool
    #: Set by :meth:`disconnect`: the link stays closed until :meth:`reconnect`.
    _held: bool = False
    _banner_seen: asyncio.Event
    _line_seen: asyncio.Event
    _last_rx: float
    _poller: asyncio.Task[None] | None
    _poll_pending: bool
    _link_protocol_in_use: LinkProtocol | None

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

    def disconnect(self) -> None:
        """Close the link and keep it closed until :meth:`reconnect` (an operator's
        explicit disconnect). What was in flight fails as on any lost link."""
        self._held = True
        if self._link_lost is not None and not self._link_lost.done():
            self._link_lost.set_result("disconnected on request")
        self._reconnect_now.set()

    def reconnect(self) -> None:
        """Drop the link and open it again now (after a halt, or to retry at once)."""
        self._held = False
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
            if self._held:
                self._set_state(PrinterState.DISCONNECTED, "disconnected on request")
                self._reconnect_now.clear()
                await self._reconnect_now.wait()
                continue
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
            if self._held:  # disconnected while the port was opening
                transport.close()
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
        self.telemetry.firmware_reset()  # a new session or a reset: E, fans, factors unknown
        interval = max(1, round(self.config.temperature_interval))
        poller = None
        if firmware.capabilities.get("AUTOREPORT_POS"):
            self._send_internal(f"M154 S{interval}")
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
                self._send_internal("M105", PendingLine("M105", on_done=self._poll_answered))

    def _poll_answered(self) -> None:
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


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:200] if text else type(exc).__name__
