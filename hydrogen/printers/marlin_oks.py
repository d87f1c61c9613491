"""The ``ok`` accounting of `hydrogen.printers.marlin.MarlinProtocol`: which line an
``ok`` acknowledges, lost oks, stall probes and their backoff, keep-alives, and when a
silent firmware is declared lost.

``ok`` variants
    ``ok``, ``ok 0`` (some forks), ``ok T:.. B:..`` (M105 answers inline: the
    temperatures become a `TemperatureReport`) and ADVANCED_OK's ``ok N12 P15 B3``.
    ADVANCED_OK names the line it acknowledges, which is used to resynchronise: every
    older in-flight line is retired too (its ``ok`` was lost; the firmware executes
    numbered lines strictly in order, so it must have run them).

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
"""

from __future__ import annotations

from typing import Final

from hydrogen.printers.marlin_events import (
    CommandAcknowledged,
    FirmwareInfo,
    LinkFailed,
    LinkRecovered,
    LinkStalled,
    ProbeSent,
    TemperatureReport,
)
from hydrogen.printers.marlin_text import _ADVANCED_OK, _command_word, _parse_firmware_info
from hydrogen.printers.marlin_window import _Line, _LineWindow, _number
from hydrogen.printers.temperature import parse_temperatures

# A `wait` this long after the oldest line was sent proves that line's ok was lost.
WAIT_MEANS_IDLE_AFTER: Final = 2.0
# Seconds the first stall probe waits for its answer; each further probe waits twice
# as long as the one before.
PROBE_TIMEOUT: Final = 2.0
# Unanswered probes before a silent firmware may be declared lost (with link_timeout).
MIN_PROBES: Final = 3


class _OkAccounting(_LineWindow):
    """Retires lines on their oks and recovers from lost ones; the state is set up by
    `MarlinProtocol.__init__`."""

    _link_timeout: float
    _probe_command: str
    _handshake_done: bool
    _probe_wanted: bool
    _interrupt_wanted: bool
    _probe: _Line | None
    _oks_since_probe: int
    _stall_started: float | None
    _stall_probes: int
    _lost_before_stall: int
    _probes_unanswered: int
    _oks_assumed_lost: int
    _unexpected_oks: int

    @property
    def oks_assumed_lost(self) -> int:
        return self._oks_assumed_lost

    @property
    def unexpected_oks(self) -> int:
        return self._unexpected_oks

    # ---------------------------------------------------------------- timeouts

    def _check_stall(self, now: float) -> None:
        """The lost-ok state machine: notice a stall, probe, back off, give up."""
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

    def _ok_deadline(self) -> float | None:
        """When `_check_stall` has something to do next, or None."""
        if self._failed or self._halted or self._probe_wanted or not self._in_flight:
            return None
        probe = self._probe
        return probe.deadline if probe and probe.written else self._in_flight[0].deadline

    # ---------------------------------------------------------------- probing and stalls

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

    # ---------------------------------------------------------------- oks

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
