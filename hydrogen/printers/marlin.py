"""Sans-I/O Marlin serial line protocol: bytes in -> events out, commands in -> bytes out.

`MarlinProtocol` owns no port, no task and no clock (the model is h11 and the websockets
core). The I/O layer feeds it whatever the port returned (`receive_data`), writes
whatever it asks for (`data_to_send`), drains `next_events`, and calls
`check_timeouts` now and then; every method that cares about time takes ``now``
(monotonic seconds). That keeps every firmware quirk below testable as a transcript.

Firmware quirks handled, and why
================================

Framing and flow control
    Every line goes out as ``N<n> <cmd>*<cs>`` (``cs`` = XOR of the bytes before
    ``*``) so the firmware can detect corruption and gaps. At most ``window`` lines
    are unacknowledged at once: Marlin sends one ``ok`` per line, in order, when it
    has *executed* (not merely received) it. `begin_handshake` resets numbering with
    ``N0 M110 N0`` (Marlin exempts M110 from the sequence check) and asks for `M115`.
    Users may not send M110 or their own ``N`` words: they would desynchronise the
    numbering this class relies on.

Receiving
    Bytes arrive in arbitrary chunks, with ``\\n``, ``\\r\\n`` or bare ``\\r``
    endings, and with line noise (NULs, non-ASCII) right after the port opens or the
    board resets. Lines are decoded as ASCII with replacement and NULs dropped, so
    nothing in the input can raise; noise around a line is trimmed and a line of
    nothing but noise dropped. A line longer than `MAX_RECEIVED_LINE` is cut there
    and the rest of it discarded, so a flood without newlines cannot grow memory.

``ok`` variants
    ``ok``, ``ok 0`` (some forks), ``ok T:.. B:..`` (M105 answers inline: the
    temperatures become a `TemperatureReport`) and ADVANCED_OK's ``ok N12 P15 B3``.
    ADVANCED_OK names the line it acknowledges, which is used to resynchronise: every
    older in-flight line is retired too (its ``ok`` was lost; the firmware executes
    numbered lines strictly in order, so it must have run them).

Resend requests
    On a checksum or sequence error Marlin prints ``Error:<why>, Last Line: <n>``,
    flushes its receive buffer and sends ``Resend: <n+1>`` followed by an ``ok``;
    other firmware says ``rs <n>`` / ``rs N<n>``. Everything from that line on is
    re-sent, with its original number. The trailing ``ok`` frees the slot of the
    rejected line: it is swallowed, never counted as an acknowledgement. Lines that
    were already on the wire behind the corrupted one each earn another ``Resend``
    for the same number (bytes in transit survive the flush); up to that many
    repeats are recognised as stale and ignored (their ``ok`` swallowed too) instead
    of triggering another retransmission. After `max_resends` genuine requests for
    one line the link is declared failed. A request for the line after the last one
    sent needs nothing; a request for a line already acknowledged is served from a
    short history.

Lost ``ok`` (timeouts)
    If the oldest line sees no ``ok`` for ``ok_timeout`` seconds
    (``long_command_timeout`` for homing, leveling, heating waits, M400, dwell, PID
    tuning, filament change, user waits), a `LinkStalled` is emitted and a *numbered*
    probe (`M105`) is sent past the window. Numbered, because if the stalled line itself
    was lost the firmware answers the probe with a ``Resend`` and the line is recovered
    instead of being silently skipped. When the answer is an ``ok`` carrying
    temperatures, it is the probe's: every line up to the probe is retired, i.e. the
    stalled line's ``ok`` is assumed lost (OctoPrint's conclusion, made safe by the
    numbering). A bare ``ok`` still acknowledges the oldest line (it was just slow; the
    probe's own ok follows). If the probe becomes the oldest line and times out after at
    least one ``ok`` arrived since it was sent, that ``ok`` was its own and it is
    retired. A probe whose own answer is lost too (noise does not stop at one line) is
    followed by another, numbered after it, with backoff (`PROBE_TIMEOUT`, doubled each
    time): the firmware's answer to any of them settles all. Only a firmware that stays
    silent through `MIN_PROBES` probes *and* ``link_timeout`` seconds after the stall
    was noticed ends the link with `LinkFailed`; a ``busy:`` keep-alive restarts that
    clock (the firmware is working). The first answer after a stall emits
    `LinkRecovered`.

Keep-alives
    ``echo:busy: processing`` / ``busy: paused for user`` (Marlin's
    HOST_KEEPALIVE_FEATURE) and the once-a-second ``... W:?`` heating-wait lines
    push the deadline out. Plain temperature auto-reports do *not*: they arrive every
    few seconds no matter what, and would hide a lost ``ok`` forever. Old Marlin's
    ``wait`` (NO_TIMEOUTS) means the opposite of busy: "my queue is empty and you
    have not sent anything for a second". It is never an error, but if it arrives
    while a line has been in flight for `WAIT_MEANS_IDLE_AFTER` seconds, the ``ok``
    was lost and the probe goes out right away rather than after ``ok_timeout``.

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
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final, Literal

# The events and the pure text helpers live in modules of their own; they are
# re-exported here, so `marlin.LineSent` and `marlin.validate_gcode` keep working.
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
from hydrogen.printers.marlin_text import (
    _ACTION,
    _ADVANCED_OK,
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
    _parse_firmware_info,
    checksum,
    validate_gcode,
)
from hydrogen.printers.temperature import HeaterReading, is_heating_wait, parse_temperatures

__all__ = [
    "INTERRUPTIBLE_WAITS",
    "LONG_COMMANDS",
    "MAX_GCODE_LENGTH",
    "MAX_RECEIVED_LINE",
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
# Response lines kept per command (M20 on a big SD card can print thousands).
MAX_RESPONSE_LINES: Final = 4096
# Lines remembered after their ok, to serve a resend request for an acknowledged line.
HISTORY_SIZE: Final = 64
# Seconds after the last Error: line before a multi-line error is closed.
ERROR_GROUP_GRACE: Final = 0.5
# A `wait` this long after the oldest line was sent proves that line's ok was lost.
WAIT_MEANS_IDLE_AFTER: Final = 2.0
# Seconds the first stall probe waits for its answer; each further probe waits twice
# as long as the one before.
PROBE_TIMEOUT: Final = 2.0
# Unanswered probes before a silent firmware may be declared lost (with link_timeout).
MIN_PROBES: Final = 3


# ------------------------------------------------------------------ protocol


@dataclass(eq=False, slots=True)
class _Line:
    text: str
    tag: object
    # user: from send(); detached: user line whose tag cancel_pending handed back;
    # handshake/probe/interrupt: generated here; replay: acknowledged line the firmware
    # re-requested
    origin: Literal["user", "detached", "handshake", "probe", "interrupt", "replay"]
    timeout: float
    #: its command word, when it is one of LONG_COMMANDS (the printer shows busy)
    long_word: str | None = None
    number: int | None = None
    written: bool = False
    sent_at: float = 0.0
    deadline: float = 0.0
    response: list[str] = field(default_factory=list)


_DWELL = re.compile(r"\s([PS])\s*(\d+(?:\.\d*)?)", re.IGNORECASE)


def _dwell(text: str) -> float:
    """Seconds a ``G4`` waits: ``P`` milliseconds or ``S`` seconds (Marlin takes the
    last one given); none given: Marlin waits for nothing."""
    seconds = 0.0
    for unit, value in _DWELL.findall(text):
        seconds = float(value) / 1000.0 if unit.upper() == "P" else float(value)
    return seconds


def _number(line: _Line) -> int:
    assert line.number is not None, "only written lines are numbered"
    return line.number


class MarlinProtocol:
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

    def withdraw(self, tags: Collection[object]) -> list[object]:
        """Take back the queued, not yet written lines carrying one of ``tags`` (a
        cancelled job's read-ahead); return the tags withdrawn. Lines already written
        stay: the firmware has them."""
        wanted = set(tags)
        kept: deque[_Line] = deque()
        taken: list[object] = []
        for line in self._queue:
            if line.origin == "user" and line.tag in wanted:
                taken.append(line.tag)
            else:
                kept.append(line)
        self._queue = kept
        return taken

    def cancel_pending(
        self, reason: str = "cancelled", *, include_in_flight: bool = False
    ) -> list[object]:
        """Drop the queued lines and return their tags. With `include_in_flight`, also
        return the tags of lines already written (for a halted, reset or closed link,
        where no ok will come): those lines keep their slot in the ok window until
        their ok arrives, so the accounting stays right, but produce no
        `CommandAcknowledged`. `reason` is for the caller's records only."""
        tags: list[object] = []
        if include_in_flight:
            for line in (*self._in_flight, *self._resend_queue):
                if line.origin == "user":
                    if line.tag is not None:
                        tags.append(line.tag)
                    line.origin = "detached"
                    line.tag = None
        # The protocol's own lines (a queued handshake) stay: they are not the caller's.
        tags += [line.tag for line in self._queue if line.origin == "user" and line.tag is not None]
        self._queue = deque(line for line in self._queue if line.origin != "user")
        return tags

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
        if self._failed or self._halted or not self._in_flight:
            return
        probe = self._probe
        if probe is not None and probe.written:
            if now < probe.deadline or self._probe_wanted:
                return
            if self._oks_since_probe and self._in_flight[0] is probe:
                # The ok we credited to the stalled line was the probe's own.
                self._oks_assumed_lost += 1
                self._retire(1, now)
                return
            self._probes_unanswered += 1
            assert self._stall_started is not None
            silent = now - self._stall_started
            if self._probes_unanswered >= MIN_PROBES and silent >= self._link_timeout:
                self._fail(
                    f"no answer for {silent:.0f}s: the firmware stayed silent through "
                    f"{self._probes_unanswered} probes (last N{probe.number})"
                )
            else:
                self._probe_wanted = True  # its answer may be lost too: ask again
            return
        oldest = self._in_flight[0]
        if now >= oldest.deadline and not self._probe_wanted:
            self._stall(
                oldest,
                f"no ok for N{oldest.number} {oldest.text!r} within {oldest.timeout:g}s",
                now,
            )

    def next_timeout(self) -> float | None:
        """Earliest ``now`` at which `check_timeouts` has something to do, for I/O
        layers that prefer sleeping to polling."""
        times: list[float] = []
        if self._error_lines:
            times.append(self._error_at + ERROR_GROUP_GRACE)
        live = not (self._failed or self._halted or self._probe_wanted)
        if live and self._in_flight:
            probe = self._probe
            times.append(probe.deadline if probe and probe.written else self._in_flight[0].deadline)
        return min(times, default=None)

    # ---------------------------------------------------------------- stats

    @property
    def window(self) -> int:
        return self._window

    @property
    def lines_sent(self) -> int:
        """Lines written, retransmissions, probes and M112 included."""
        return self._lines_sent

    @property
    def resends(self) -> int:
        """Lines written again because the firmware asked for them."""
        return self._resends

    @property
    def in_flight(self) -> int:
        """Numbered lines the firmware has not acknowledged (incl. awaiting resend)."""
        return len(self._in_flight) + len(self._resend_queue)

    @property
    def queued(self) -> int:
        """Lines waiting for a slot in the window."""
        return len(self._queue)

    @property
    def last_line_number(self) -> int | None:
        """Number of the newest line written since the last reset of numbering."""
        return self._last_number

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

    @property
    def oks_assumed_lost(self) -> int:
        return self._oks_assumed_lost

    @property
    def unexpected_oks(self) -> int:
        return self._unexpected_oks

    # ---------------------------------------------------------------- writing

    def _new_line(
        self,
        text: str,
        tag: object,
        origin: Literal["user", "handshake", "probe", "interrupt", "replay"],
        word: str | None = None,
        number: int | None = None,
    ) -> _Line:
        """A line with the ok timeout its command deserves: a dwell says how long it
        takes (``G4 P20`` is 20 ms, so its lost ok is noticed after ok_timeout, not
        after the long-command allowance); other long commands get that allowance."""
        word = _command_word(text) if word is None else word
        if word == "G4":
            return _Line(text, tag, origin, self._ok_timeout + _dwell(text), word, number)
        if word in LONG_COMMANDS:
            return _Line(text, tag, origin, self._long_timeout, word, number)
        return _Line(text, tag, origin, self._ok_timeout, None, number)

    def _emit_sent(self, event: LineSent) -> None:
        self._lines_sent += 1
        self._events.append(event)

    def _write(self, line: _Line, now: float, out: list[bytes]) -> None:
        resend = line.number is not None
        if line.number is None:
            line.number = self._next_number
            self._next_number += 1
            self._last_number = line.number
            self._history[line.number] = line.text
            while len(self._history) > HISTORY_SIZE:
                del self._history[next(iter(self._history))]
        else:
            self._resends += 1
            line.response.clear()
        body = f"N{line.number} {line.text}"
        raw = f"{body}*{checksum(body)}\n".encode("ascii")
        line.written = True
        line.sent_at = now
        line.deadline = now + line.timeout
        self._in_flight.append(line)
        out.append(raw)
        self._emit_sent(LineSent(line.text, line.number, raw, resend))

    def _send_probe(self, now: float, out: list[bytes]) -> None:
        if not self._in_flight:
            return  # the overdue ok arrived before the probe could be written
        if self._resend_queue:
            # A new number would overtake lines waiting to be re-sent; send the next
            # of those past the window instead, it provokes an answer just as well.
            line = self._resend_queue.popleft()
        else:
            line = self._new_line(self._probe_command, None, "probe")
        self._probe = line
        self._oks_since_probe = 0
        self._write(line, now, out)
        # backoff: 2 s, 4 s, 8 s ... for the answer to each further probe
        line.deadline = now + min(self._ok_timeout, PROBE_TIMEOUT) * 2**self._probes_unanswered
        self._stall_probes += 1
        self._events.append(ProbeSent(line.text, _number(line)))

    # ---------------------------------------------------------------- state changes

    def _reset_numbering(self, next_number: int) -> None:
        self._next_number = next_number
        self._last_number = None
        self._history.clear()

    def _start_handshake(self) -> None:
        self._failed = self._halted = False
        self._handshake_done = False
        self._reset_numbering(0)
        self._queue.append(self._new_line("M110 N0", None, "handshake"))
        self._queue.append(self._new_line("M115", None, "handshake"))

    def _drop_all(self) -> list[object]:
        lines = [*self._in_flight, *self._resend_queue, *self._queue]
        self._in_flight.clear()
        self._resend_queue.clear()
        self._queue.clear()
        self._probe = None
        self._probe_wanted = False
        self._interrupt_wanted = False
        self._oks_since_probe = 0
        self._stall_started = None
        self._probes_unanswered = 0
        self._swallow_oks = 0
        self._resend_target = None
        self._resend_attempts = 0
        self._stale_budget = 0
        return [line.tag for line in lines if line.origin == "user" and line.tag is not None]

    def _fail(self, reason: str) -> None:
        lost = self._drop_all()
        self._failed = True
        self._events.append(LinkFailed(reason, tuple(lost)))

    def _stall(self, oldest: _Line, reason: str, now: float) -> None:
        # Repeats of a resend request arrive within milliseconds; after a stall any
        # further request is genuine.
        self._stale_budget = 0
        self._probe_wanted = True
        if self._stall_started is None:
            self._stall_started = now
            self._stall_probes = self._probes_unanswered = 0
            self._lost_before_stall = self._oks_assumed_lost
        self._events.append(LinkStalled(reason, oldest.number))

    def _retire(self, count: int, now: float) -> None:
        """Acknowledge the `count` oldest in-flight lines."""
        if self._stall_started is not None:
            self._events.append(
                LinkRecovered(
                    self._oks_assumed_lost - self._lost_before_stall,
                    self._stall_probes,
                    now - self._stall_started,
                )
            )
            self._stall_started = None
            self._probes_unanswered = 0
        for _ in range(count):
            line = self._in_flight.popleft()
            if line is self._probe:
                self._probe = None
                self._oks_since_probe = 0
            if line.number == self._resend_target:
                self._resend_target = None
                self._resend_attempts = 0
                self._stale_budget = 0
            response = tuple(line.response)
            if line.origin == "user":
                self._events.append(CommandAcknowledged(line.tag, line.text, response))
            if _command_word(line.text) == "M115" and line.origin != "probe":
                info = _parse_firmware_info(response)
                if line.origin == "handshake":
                    self._handshake_done = True
                    info = info or FirmwareInfo("", {}, {})
                if info is not None:
                    self._events.append(info)
        if self._in_flight:
            oldest = self._in_flight[0]
            oldest.deadline = max(oldest.deadline, now + oldest.timeout)

    @property
    def _probe_outstanding(self) -> bool:
        return self._probe is not None and self._probe.written

    def _keep_alive(self, now: float) -> None:
        if self._stall_started is not None:
            self._stall_started = now  # working, not gone: the silence clock restarts
            self._probes_unanswered = 0
        if self._in_flight:
            oldest = self._in_flight[0]
            oldest.deadline = max(oldest.deadline, now + self._ok_timeout)
        if self._probe is not None and self._probe.written:
            self._probe.deadline = max(self._probe.deadline, now + self._ok_timeout)

    def _add_response(self, text: str) -> None:
        if self._in_flight and len(self._in_flight[0].response) < MAX_RESPONSE_LINES:
            self._in_flight[0].response.append(text)

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
        else:
            self._add_response(text)

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

    def _handle_ok(self, payload: str, now: float) -> None:
        heaters = parse_temperatures(payload) if payload else None
        if heaters is not None:
            self._events.append(TemperatureReport(heaters, payload))
        if self._probe_outstanding:
            self._oks_since_probe += 1
        if self._swallow_oks:
            self._swallow_oks -= 1  # the ok Marlin sends after "Resend:" frees no line
            return
        if not self._in_flight:
            self._unexpected_oks += 1
            return
        if heaters is not None:
            if _command_word(self._in_flight[0].text) == "M105":
                self._add_response(payload)
        elif payload and not payload.isdigit() and not _ADVANCED_OK.match(payload):
            # an answer on the ok line itself: OctoPrint's virtual printer and
            # Smoothieware answer M114 as "ok X:0.0 Y:0.0 ..." ("ok 0" is just an ok)
            self._add_response(payload)
        count = 1
        if match := _ADVANCED_OK.match(payload):
            number = int(match[1])
            if number < _number(self._in_flight[0]):
                self._unexpected_oks += 1  # names a line already acknowledged
                return
            for index, line in enumerate(self._in_flight):
                if line.number == number:
                    count = index + 1
                    break
        elif (
            heaters is not None
            and self._probe is not None
            and self._probe.written
            and _command_word(self._probe.text) == "M105"
        ):
            # The inline temperatures mark the probe's own ok: the stalled lines' oks
            # were lost (they ran: the firmware accepted the numbered probe after them).
            count = self._in_flight.index(self._probe) + 1
        self._oks_assumed_lost += count - 1
        self._retire(count, now)

    def _handle_wait(self, now: float) -> None:
        if (
            self._in_flight
            and not self._failed
            and not self._halted
            and not self._probe_outstanding
            and not self._probe_wanted
            and now - self._in_flight[0].sent_at >= WAIT_MEANS_IDLE_AFTER
        ):
            oldest = self._in_flight[0]
            self._stall(oldest, f"firmware idle ('wait') with N{oldest.number} unacknowledged", now)

    def _handle_resend(self, number: int) -> None:
        self._swallow_oks += 1  # Marlin follows every Resend: with an ok
        if self._failed or self._halted:
            return
        if number == self._resend_target and self._stale_budget > 0:
            self._stale_budget -= 1  # caused by a line that was already on the wire
            return
        last = self._next_number - 1
        if number > last:
            # The firmware has everything we sent. If its counter is ahead of ours
            # (a reset we did not see, a stray M110), continue from its numbering.
            if number > last + 1:
                self._reset_numbering(number)
            return
        kept = [line for line in self._in_flight if _number(line) < number]
        pending = [line for line in self._in_flight if _number(line) >= number]
        pending += self._resend_queue
        first = _number(pending[0]) if pending else self._next_number
        if any(n not in self._history for n in range(number, first)):
            self._fail(f"firmware asked to resend N{number}, which is no longer available")
            return
        if number == self._resend_target:
            self._resend_attempts += 1
        else:
            self._resend_target = number
            self._resend_attempts = 1
        if self._resend_attempts > self._max_resends:
            self._fail(f"N{number} rejected {self._max_resends} times (resend loop)")
            return
        self._stale_budget = sum(1 for line in pending if line.written and line.number != number)
        replay = [
            self._new_line(self._history[n], None, "replay", number=n) for n in range(number, first)
        ]
        for line in pending:
            line.written = False
        self._in_flight = deque(kept)
        self._resend_queue = deque([*replay, *pending])
        self._events.append(Resending(number, self._resend_attempts))
