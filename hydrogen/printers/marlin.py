"""Sans-I/O Marlin serial line protocol: bytes in -> events out, commands in -> bytes out.

`MarlinProtocol` owns no port, no task and no clock (the model is h11 and the websockets
core). The I/O layer feeds it whatever the port returned (`receive_data`), writes
whatever it asks for (`data_to_send`), drains `next_events`, and calls
`check_timeouts` now and then; every method that cares about time takes ``now``
(monotonic seconds). That keeps every firmware quirk below testable as a transcript.

Firmware quirks handled, and why
================================

Receiving
    Bytes arrive in arbitrary chunks, with ``\\n``, ``\\r\\n`` or bare ``\\r``
    endings, and with line noise (NULs, non-ASCII) right after the port opens or the
    board resets. Lines are decoded as ASCII with replacement and NULs dropped, so
    nothing in the input can raise; noise around a line is trimmed and a line of
    nothing but noise dropped. A line longer than `MAX_RECEIVED_LINE` is cut there
    and the rest of it discarded, so a flood without newlines cannot grow memory.

Errors
    Marlin reports one problem on several ``Error:`` lines (``Error:MINTEMP
    triggered, system stopped! Heater_ID: 0`` then ``Error:Printer halted. kill()
    called!``), and Marlin 1.0 continued errors on lines starting with ``:``.
    Consecutive error lines are joined into one `FirmwareError`, closed by the first
    other line, by a kill/halt line (nothing follows it), or `ERROR_GROUP_GRACE`
    seconds later via `check_timeouts`. Checksum and sequence errors are reported
    alone, non-fatal: the ``Resend`` that follows repairs them. ``!!`` lines are
    fatal halts; ``echo:Unknown command: "X"`` is a non-fatal error. After a fatal
    error (Marlin has called kill() or stopped) nothing more is written: no ok will
    come for what is in flight, and the caller collects those tags with
    ``cancel_pending(include_in_flight=True)``.

Tags
    Every tag given to `MarlinProtocol.send` comes back exactly once: in a
    `CommandAcknowledged`, or from whatever dropped its line: the return value of
    `cancel_pending`, `begin_handshake` or `emergency_stop`, or the ``lost_tags`` of
    a `FirmwareReset` or `LinkFailed`.

Reset, host actions, firmware info
    ``start`` means the board rebooted (power blip, watchdog, DTR on port open):
    everything queued or in flight is gone, so their tags go out in `FirmwareReset`
    and the handshake is queued again (numbering restarts, `FirmwareInfo` follows:
    the firmware may have been reflashed). Noise glued to the front of ``start`` (the
    UART garbage of a reset) is stripped first so the banner is still recognised.
    ``//action:<name> <argument>`` lines (pause, resume, cancel, disconnect, prompts,
    notifications) become `ActionCommand`. The `M115` reply (Marlin, Prusa
    MK3/Buddy: ``FIRMWARE_NAME:... PROTOCOL_VERSION:... MACHINE_TYPE:...`` plus
    ``Cap:NAME:0|1`` lines) becomes `FirmwareInfo` when its ``ok`` arrives.

The line window (framing, numbering, resends) is in `marlin_window`, the ``ok``
accounting (ok variants, lost oks, probes, keep-alives) in `marlin_oks`.
"""

from __future__ import annotations

from collections import deque
from typing import Final

# The events, the pure text helpers, the line window and the ok accounting live in
# modules of their own; their public names are re-exported here, so `marlin.LineSent`,
# `marlin.validate_gcode` and `marlin.PROBE_TIMEOUT` keep working.
from hydrogen.printers.marlin_events import (
    ActionCommand,
    Busy,
    CommandAcknowledged,
    ErrorKind,
    Event,
    FirmwareError,
    FirmwareInfo,
    FirmwareReset,
    LineReceived,
    LineSent,
    LinkFailed,
    LinkRecovered,
    LinkStalled,
    ProbeSent,
    Resending,
    TemperatureReport,
)
from hydrogen.printers.marlin_oks import (
    MIN_PROBES,
    PROBE_TIMEOUT,
    WAIT_MEANS_IDLE_AFTER,
    _OkAccounting,
)
from hydrogen.printers.marlin_text import (
    _ACTION,
    _BUSY,
    _EDGE_NOISE,
    _EOL,
    _ERROR,
    _ERROR_PRIORITY,
    _OK,
    _RESEND,
    _UNKNOWN,
    INTERRUPTIBLE_WAITS,
    LONG_COMMANDS,
    MAX_GCODE_LENGTH,
    _classify_error,
    _command_word,
    checksum,
    validate_gcode,
)
from hydrogen.printers.marlin_window import HISTORY_SIZE, MAX_RESPONSE_LINES, _Line
from hydrogen.printers.telemetry import parse_position
from hydrogen.printers.temperature import HeaterReading, is_heating_wait, parse_temperatures

__all__ = [
    "HISTORY_SIZE",
    "INTERRUPTIBLE_WAITS",
    "LONG_COMMANDS",
    "MAX_GCODE_LENGTH",
    "MAX_RECEIVED_LINE",
    "MAX_RESPONSE_LINES",
    "MIN_PROBES",
    "PROBE_TIMEOUT",
    "WAIT_MEANS_IDLE_AFTER",
    "ActionCommand",
    "Busy",
    "CommandAcknowledged",
    "ErrorKind",
    "Event",
    "FirmwareError",
    "FirmwareInfo",
    "FirmwareReset",
    "HeaterReading",
    "LineReceived",
    "LineSent",
    "LinkFailed",
    "LinkRecovered",
    "LinkStalled",
    "MarlinProtocol",
    "ProbeSent",
    "Resending",
    "TemperatureReport",
    "checksum",
    "validate_gcode",
]

# Longest received line kept; the rest of a longer line is discarded.
MAX_RECEIVED_LINE: Final = 1024
# Seconds after the last Error: line before a multi-line error is closed.
ERROR_GROUP_GRACE: Final = 0.5


# ------------------------------------------------------------------ protocol


class MarlinProtocol(_OkAccounting):
    """Line-numbered, checksummed, ok-windowed G-code streaming (see module docs).

    Every tag passed to `send` comes back exactly once: in a `CommandAcknowledged`,
    or from the call or event that dropped its line (`cancel_pending`,
    `begin_handshake`, `emergency_stop`, `FirmwareReset.lost_tags`,
    `LinkFailed.lost_tags`). Tags that are None are never handed back.
    """

    def __init__(
        self,
        *,
        window: int = 1,
        ok_timeout: float = 10.0,
        long_command_timeout: float = 300.0,
        link_timeout: float = 30.0,
        max_resends: int = 5,
        probe_command: str = "M105",
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._window = window
        self._ok_timeout = ok_timeout
        self._long_timeout = long_command_timeout
        self._link_timeout = link_timeout
        self._max_resends = max_resends
        self._probe_command = validate_gcode(probe_command)

        self._queue: deque[_Line] = deque()  # not yet numbered
        self._resend_queue: deque[_Line] = deque()  # numbered, waiting to go out again
        self._in_flight: deque[_Line] = deque()  # written, awaiting ok, in number order
        self._history: dict[int, str] = {}
        self._next_number = 1  # a freshly booted Marlin expects N1 next
        self._last_number: int | None = None
        self._events: list[Event] = []

        self._emergency = False
        self._failed = False
        self._halted = False
        self._handshake_done = False
        self._probe_wanted = False
        self._interrupt_wanted = False
        self._probe: _Line | None = None
        self._oks_since_probe = 0
        #: when the current stall was noticed, and its probes so far (recovery stats)
        self._stall_started: float | None = None
        self._stall_probes = 0
        #: oks_assumed_lost when the stall began (what it lost is the difference)
        self._lost_before_stall = 0
        self._probes_unanswered = 0
        self._swallow_oks = 0
        self._resend_target: int | None = None
        self._resend_attempts = 0
        self._stale_budget = 0

        self._rx = bytearray()
        self._discarding = False
        self._error_lines: list[str] = []
        self._error_at = 0.0

        self._lines_sent = 0
        self._resends = 0
        self._oks_assumed_lost = 0
        self._unexpected_oks = 0

    # ---------------------------------------------------------------- commands
    # `now` on the command methods is accepted for symmetry with the I/O calls; a
    # line's ok deadline starts when `data_to_send` writes it, not when it is queued.

    def begin_handshake(self, now: float | None = None) -> list[object]:
        """Drop all work (returning its tags), reset numbering with ``N0 M110 N0`` and
        ask for M115 (`FirmwareInfo` follows its ok). Also the way out of a failed or
        halted state. Not needed after a `FirmwareReset`, which queues it already;
        calling it while a previous M110 may still be answered can credit that late
        ok to the new M110."""
        lost = self._drop_all()
        self._start_handshake()
        return lost

    def send(self, line: str, now: float | None = None, *, tag: object = None) -> None:
        """Queue one G-code line; raises ValueError (from `validate_gcode`) for input
        that must not reach the firmware. M112 is not queued behind other work: it is
        written first, like `emergency_stop`, and the protocol halts; as `send` cannot
        return tags, nothing is dropped: `cancel_pending` hands them back (the M112's
        own included, as no ok will come for it)."""
        text = validate_gcode(line)
        word = _command_word(text)
        self._queue.append(self._new_line(text, tag, "user", word))
        if word == "M112":
            self._emergency = True
            self._halted = True

    def emergency_stop(self, now: float | None = None) -> list[object]:
        """Write an unnumbered M112 ahead of everything on the next `data_to_send`
        (Marlin's emergency parser acts on it without line numbers or checksums), drop
        all other work (returning its tags) and write nothing else until
        `begin_handshake` or a firmware ``start``: the firmware is about to kill
        itself."""
        self._emergency = True
        self._halted = True
        return self._drop_all()

    def interrupt_wait(self, now: float | None = None) -> tuple[str, ...]:
        """Break a heating or user wait the firmware is in (`INTERRUPTIBLE_WAITS`) with
        ``M108``, numbered and written past the ok window on the next `data_to_send`:
        Marlin's EMERGENCY_PARSER acts on it the moment it arrives, line number and
        all, and the wait ends with its usual ``ok``. A firmware without the emergency
        parser reads the ``M108`` only after the wait ends by itself; it is then a
        no-op with its own ``ok``, so the accounting holds either way. Returns the
        texts of the waits it breaks (a pause sends them again on resume), empty if
        the firmware is in none."""
        waits = tuple(
            line.text
            for line in self._in_flight
            if line.long_word in INTERRUPTIBLE_WAITS and line.origin != "probe"
        )
        if waits and not (self._failed or self._halted):
            self._interrupt_wanted = True
        return waits

    @property
    def running_long_command(self) -> str | None:
        """The command word of the oldest written, unacknowledged line of
        `LONG_COMMANDS` (what the firmware is busy with), or None. Derived from the
        lines in flight, so a withdraw, cancel, reset or halt can never leave it stale."""
        for line in self._in_flight:
            if line.long_word is not None:
                return line.long_word
        return None

    # ---------------------------------------------------------------- output

    def data_to_send(self, now: float) -> bytes:
        """Bytes to write now: the emergency stop, a due probe, then as many
        (re)queued lines as the ok window allows."""
        out: list[bytes] = []
        if self._emergency:
            self._emergency = False
            raw = b"M112\n"
            out.append(raw)
            self._emit_sent(LineSent("M112", None, raw))
        if self._failed or self._halted:
            return b"".join(out)
        if self._probe_wanted:
            self._probe_wanted = False
            self._send_probe(now, out)
        if self._interrupt_wanted and not self._resend_queue:
            # (a new number must not overtake lines waiting to be re-sent: then it
            # waits for them)
            self._interrupt_wanted = False
            if self._in_flight:
                self._write(self._new_line("M108", None, "interrupt"), now, out)
        while len(self._in_flight) < self._window:
            if self._resend_queue:
                self._write(self._resend_queue.popleft(), now, out)
            elif self._queue:
                self._write(self._queue.popleft(), now, out)
            else:
                break
        return b"".join(out)

    def next_events(self) -> list[Event]:
        """Drain the events produced so far, oldest first."""
        events, self._events = self._events, []
        return events

    # ---------------------------------------------------------------- input

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        buffer = self._rx
        buffer += data
        start = 0
        for match in _EOL.finditer(buffer):
            end = match.start()
            if self._discarding:
                self._discarding = False  # end of an over-long line already reported
            else:
                self._handle_raw(bytes(buffer[start : min(end, start + MAX_RECEIVED_LINE)]), now)
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_RECEIVED_LINE:
            if not self._discarding:
                self._handle_raw(bytes(buffer[:MAX_RECEIVED_LINE]), now)
                self._discarding = True
            buffer.clear()

    def check_timeouts(self, now: float) -> None:
        """Close a pending multi-line error and run the lost-ok state machine."""
        if self._error_lines and now - self._error_at >= ERROR_GROUP_GRACE:
            self._flush_error()
        self._check_stall(now)

    def next_timeout(self) -> float | None:
        """Earliest ``now`` at which `check_timeouts` has something to do, for I/O
        layers that prefer sleeping to polling."""
        times: list[float] = []
        if self._error_lines:
            times.append(self._error_at + ERROR_GROUP_GRACE)
        if (deadline := self._ok_deadline()) is not None:
            times.append(deadline)
        return min(times, default=None)

    # ---------------------------------------------------------------- stats

    @property
    def handshake_complete(self) -> bool:
        return self._handshake_done

    @property
    def failed(self) -> bool:
        """A `LinkFailed` was emitted; only `begin_handshake` or ``start`` revive it."""
        return self._failed

    @property
    def halted(self) -> bool:
        """Emergency stop sent or a fatal firmware error seen; nothing is written."""
        return self._halted

    # ---------------------------------------------------------------- state changes

    def _start_handshake(self) -> None:
        self._failed = self._halted = False
        self._handshake_done = False
        self._reset_numbering(0)
        self._queue.append(self._new_line("M110 N0", None, "handshake"))
        self._queue.append(self._new_line("M115", None, "handshake"))

    # ---------------------------------------------------------------- reading

    def _handle_raw(self, raw: bytes, now: float) -> None:
        text = _EDGE_NOISE.sub("", raw.decode("ascii", "replace").replace("\x00", ""))
        if text:
            self._events.append(LineReceived(text))
            self._handle_line(text, now)

    def _handle_line(self, text: str, now: float) -> None:
        if match := _ERROR.match(text):
            self._handle_error(match[1].strip(), now)
            return
        if text.startswith(":") and self._error_lines:
            self._error_lines[-1] += text  # Marlin 1.0: "Error:0" + ": Extruder switched off..."
            self._error_at = now
            return
        self._flush_error()

        if match := _OK.match(text):
            self._handle_ok(match[1].strip(), now)
        elif match := _RESEND.match(text):
            self._handle_resend(int(match[1]))
        elif match := _BUSY.match(text):
            self._keep_alive(now)
            self._events.append(Busy(match[1].strip()))
        elif text == "wait":
            self._handle_wait(now)
        elif text == "start":
            mid_session = self._handshake_done
            lost = self._drop_all()
            self._start_handshake()
            self._events.append(FirmwareReset(tuple(lost), mid_session))
        elif text.startswith("!!"):
            self._add_response(text)
            self._firmware_error(text[2:].strip(), "halted", fatal=True)
        elif match := _ACTION.match(text):
            self._events.append(ActionCommand(match[1], match[2].strip()))
        elif match := _UNKNOWN.match(text):
            self._add_response(text)
            self._firmware_error(match[1].strip(), "unknown_command", fatal=False)
        elif (heaters := parse_temperatures(text)) is not None:
            if is_heating_wait(text):
                self._keep_alive(now)
            if self._in_flight and _command_word(self._in_flight[0].text) == "M105":
                self._add_response(text)
            self._events.append(TemperatureReport(heaters, text))
        elif parse_position(text) is None or self._in_flight_word() in ("M114", "G28"):
            self._add_response(text)
        # else an M154 position auto-report: not the answer of the line in flight

    def _in_flight_word(self) -> str:
        return _command_word(self._in_flight[0].text) if self._in_flight else ""

    def _firmware_error(self, message: str, kind: ErrorKind, *, fatal: bool) -> None:
        self._events.append(FirmwareError(message, kind, fatal))
        if fatal:
            self._halted = True  # a killed or stopped firmware acts on nothing more

    def _handle_error(self, message: str, now: float) -> None:
        kind, _ = _classify_error(message)
        if kind in ("checksum", "line_number"):
            # Resend bookkeeping, reported alone; the Resend line that follows repairs it.
            self._flush_error()
            self._firmware_error(message, kind, fatal=False)
            return
        self._add_response(f"Error:{message}")
        self._error_lines.append(message)
        self._error_at = now
        if kind == "halted":
            self._flush_error()  # kill() is the last thing Marlin prints

    def _flush_error(self) -> None:
        if not self._error_lines:
            return
        lines, self._error_lines = self._error_lines, []
        classified = [_classify_error(line) for line in lines]
        kind = max((kind for kind, _ in classified), key=lambda k: _ERROR_PRIORITY.get(k, 0))
        fatal = any(fatal for _, fatal in classified)
        self._firmware_error("\n".join(lines), kind, fatal=fatal)
