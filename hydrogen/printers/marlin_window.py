"""The line window of `hydrogen.printers.marlin.MarlinProtocol`: numbering,
checksums, the lines queued, in flight and waiting to be re-sent, and the firmware's
resend requests.

Framing and flow control
    Every line goes out as ``N<n> <cmd>*<cs>`` (``cs`` = XOR of the bytes before
    ``*``) so the firmware can detect corruption and gaps. At most ``window`` lines
    are unacknowledged at once: Marlin sends one ``ok`` per line, in order, when it
    has *executed* (not merely received) it. `begin_handshake` resets numbering with
    ``N0 M110 N0`` (Marlin exempts M110 from the sequence check) and asks for `M115`.
    Users may not send M110 or their own ``N`` words: they would desynchronise the
    numbering this class relies on.

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
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final, Literal

from hydrogen.printers.marlin_events import Event, LineSent, Resending
from hydrogen.printers.marlin_text import LONG_COMMANDS, _command_word, checksum

# Response lines kept per command (M20 on a big SD card can print thousands).
MAX_RESPONSE_LINES: Final = 4096
# Lines remembered after their ok, to serve a resend request for an acknowledged line.
HISTORY_SIZE: Final = 64


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


class _LineWindow:
    """What is queued, in flight and to be re-sent on the link, and how lines are
    numbered; the state is set up by `MarlinProtocol.__init__`."""

    _window: int
    _ok_timeout: float
    _long_timeout: float
    _max_resends: int
    _queue: deque[_Line]  # not yet numbered
    _resend_queue: deque[_Line]  # numbered, waiting to go out again
    _in_flight: deque[_Line]  # written, awaiting ok, in number order
    _history: dict[int, str]
    _next_number: int
    _last_number: int | None
    _events: list[Event]
    _failed: bool
    _halted: bool
    _resend_target: int | None
    _resend_attempts: int
    _stale_budget: int
    _swallow_oks: int
    _lines_sent: int
    _resends: int

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
            if line.text.split(" ", 1)[0] == "M110":
                # M110 sets the firmware's counter to its argument: the two must agree, or
                # "N1 M110 N0" leaves the firmware expecting 1 again, asking for N1 once
                # more and so on for ever (a stale Resend: renumbered a handshake that
                # way after a reset mid-print). Only this module writes M110.
                line.text = f"M110 N{line.number}"
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

    def _reset_numbering(self, next_number: int) -> None:
        self._next_number = next_number
        self._last_number = None
        self._history.clear()

    def _add_response(self, text: str) -> None:
        if self._in_flight and len(self._in_flight[0].response) < MAX_RESPONSE_LINES:
            self._in_flight[0].response.append(text)

    def _fail(self, reason: str) -> None:
        raise NotImplementedError  # drops everything: see _OkAccounting._fail

    # ---------------------------------------------------------------- resend requests

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
