"""What a printer's motion and tool are doing, worked out from the lines the firmware
acknowledged and the reports it printed: filament extruded, fan speeds, feed-rate and
flow factors, position. Pure: lines in, figures out, no I/O (the printer feeds it from
its one event loop, the metrics and the printer summary read it).

Filament is counted the way OctoPrint's G-code analysis counts it: the E axis is
followed through absolute (``M82``, ``G90``) and relative (``M83``, ``G91``) extrusion
and ``G92 E`` resets, and what was extruded is how far the E axis went past its
furthest point so far. A retraction (E going back) is therefore not counted, and
neither is the move that primes the same length again; only new filament is. Marlin's
``G90``/``G91`` set the E axis too, and an ``M82``/``M83`` after them overrides that.
Firmware retraction (``G10``/``G11``) retracts and primes the same length, so it adds
nothing and is ignored (its ``S1`` swap length and recover extra too). An absolute E
move while the E position is unknown (after the gateway starts, a reconnect or a
firmware reset, which may or may not have reset the firmware's E position) counts
nothing: it only tells where E now is. One E axis is followed whatever the tool.

Fans: ``M106 P<fan> S<0-255>`` (no ``S``: full speed) and ``M107 P<fan>`` as
acknowledged, as a ratio 0..1 by fan index (no ``P``: fan 0; fans 0 to 7). Feed-rate factor:
``M220 S<percent>`` (``B``/``R`` back it up and restore it), flow factor: ``M221
S<percent>`` for the active tool (``T<n>`` names another) as acknowledged, and the
firmware's ``FR:100%`` and ``E0 Flow: 100%`` reports (``M220``/``M221`` without
``S``). Position: the firmware's ``X:.. Y:.. Z:.. E:..`` reports (``M114``, ``G28``'s
answer, ``M154`` auto-reports), never computed from moves. Everything is None (or
empty) until the firmware has said or acknowledged it.
"""

from __future__ import annotations

import re
from typing import Any, Final

from hydrogen.printers.marlin_text import _command_word

__all__ = ["AXES", "MAX_FANS", "Telemetry", "parse_position"]

#: Position axes as reported, in order; also the ``axis`` label's values (lower case).
AXES: Final = ("x", "y", "z", "e")

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_PARAM = re.compile(rf"([A-Z])\s*({_NUMBER})?")
# "X:10.00 Y:20.00 Z:0.30 E:5.00 Count X:800 ...", also on the ok line ("ok X:...",
# OctoPrint's virtual printer) or after "C:" (Smoothieware).
_POSITION = re.compile(
    rf"^(?:ok\s+)?(?:C:\s*)?X:\s*({_NUMBER})\s+Y:\s*({_NUMBER})\s+Z:\s*({_NUMBER})"
    rf"(?:\s+E:\s*({_NUMBER}))?"
)
_FEEDRATE_REPORT = re.compile(r"(?:^|[\s:])FR:\s*(\d+(?:\.\d+)?)\s*%")
_FLOW_REPORT = re.compile(r"(?:^|[\s:])E(\d+)\s+Flow:\s*(\d+(?:\.\d+)?)\s*%")
_MOVES: Final = frozenset({"G0", "G1", "G2", "G3"})
_FAN_FULL: Final = 255.0
#: Fan indices followed (Marlin has at most 8 part fans); a higher P is one the firmware
#: ignores, and must not grow the fan series without bound.
MAX_FANS: Final = 8


def parse_position(text: str) -> dict[str, float] | None:
    """The position in a firmware report line, by axis (``e`` when reported), or None
    if the line is not one."""
    match = _POSITION.match(text)
    if match is None:
        return None
    return {
        axis: float(value)
        for axis, value in zip(AXES, match.groups(), strict=True)
        if value is not None
    }


def _params(text: str) -> dict[str, float | None]:
    """The parameter words after the command word (a letter without a number: None)."""
    body = text.upper().split(None, 1)
    out: dict[str, float | None] = {}
    if len(body) == 2:
        for letter, value in _PARAM.findall(body[1]):
            out[letter] = float(value) if value else None
    return out


class Telemetry:
    """One printer's extrusion, fans, factors and position (see the module doc)."""

    def __init__(self) -> None:
        #: mm of filament extruded since the gateway started (never decreases)
        self.extruded_mm = 0.0
        #: mm extruded by the running job (None: no job runs)
        self.job_extruded_mm: float | None = None
        #: fan index -> speed ratio 0..1, for the fans set or reported
        self.fans: dict[int, float] = {}
        #: M220 factor (1.0 = 100 %), None until acknowledged or reported
        self.feedrate_factor: float | None = None
        #: M221 factor of the active tool, None until acknowledged or reported
        self.flows: dict[int, float] = {}
        #: the last reported position by axis, None until the firmware reported one
        self.position: dict[str, float] | None = None
        self._tool = 0
        self._feedrate_backup: float | None = None
        self._e_relative = False
        #: the firmware's E position (None: unknown)
        self._e: float | None = None
        #: E travelled since start (relative to an arbitrary origin) and its furthest point
        self._e_travel = 0.0
        self._e_furthest = 0.0

    @property
    def flow_factor(self) -> float | None:
        return self.flows.get(self._tool)

    # -- what happened ----------------------------------------------------------------
    def acknowledged(self, line: str) -> None:
        """The firmware acknowledged ``line`` (comments stripped, no N or checksum)."""
        word = _command_word(line)
        if word in _MOVES:
            e = _params(line).get("E")
            if e is not None:
                self._extrude(e)
        elif word == "G92":
            e = _params(line).get("E")
            if e is not None:
                self._e = e
        elif word in ("G90", "M82"):
            self._e_relative = False
        elif word in ("G91", "M83"):
            self._e_relative = True
        elif word in ("M106", "M107"):
            params = _params(line)
            fan = int(params.get("P") or 0)
            speed = params.get("S") if word == "M106" else 0.0
            speed = _FAN_FULL if speed is None else speed
            if 0 <= fan < MAX_FANS:
                self.fans[fan] = min(1.0, max(0.0, speed / _FAN_FULL))
        elif word == "M220":
            self._feedrate(_params(line))
        elif word == "M221":
            params = _params(line)
            if params.get("S") is not None:
                tool = self._tool if params.get("T") is None else int(params["T"] or 0)
                self.flows[tool] = max(0.0, (params["S"] or 0.0) / 100.0)
        elif word.startswith("T") and word[1:].isdigit():
            self._tool = int(word[1:])

    def received(self, text: str) -> None:
        """A line the firmware printed (a report, or anything else: ignored)."""
        if (position := parse_position(text)) is not None:
            self.position = position
            return
        if "FR:" in text and (match := _FEEDRATE_REPORT.search(text)):
            self.feedrate_factor = float(match[1]) / 100.0
        elif "Flow:" in text and (match := _FLOW_REPORT.search(text)):
            self.flows[int(match[1])] = float(match[2]) / 100.0

    def firmware_reset(self) -> None:
        """A new session or a firmware reset: what the firmware may have forgotten
        is unknown again (the totals stay)."""
        self._e = None
        self._e_relative = False
        self._tool = 0
        self._feedrate_backup = None
        self.fans = {}
        self.feedrate_factor = None
        self.flows = {}
        self.position = None

    def begin_job(self) -> None:
        self.job_extruded_mm = 0.0

    def end_job(self) -> None:
        self.job_extruded_mm = None

    # -- reading ---------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """The printer summary's ``telemetry`` member."""
        return {
            "filament_mm": round(self.extruded_mm, 3),
            "job_filament_mm": None
            if self.job_extruded_mm is None
            else round(self.job_extruded_mm, 3),
            "fans": {str(fan): round(ratio, 4) for fan, ratio in sorted(self.fans.items())},
            "feedrate_factor": self.feedrate_factor,
            "flow_factor": self.flow_factor,
            "position": None if self.position is None else dict(self.position),
        }

    # -- the E axis -----------------------------------------------------------------
    def _extrude(self, e: float) -> None:
        if self._e_relative:
            delta = e
            if self._e is not None:
                self._e += e
        elif self._e is None:
            self._e = e  # where E is now; how far it moved to get there is unknown
            return
        else:
            delta, self._e = e - self._e, e
        self._e_travel += delta
        if self._e_travel > self._e_furthest:
            gained = self._e_travel - self._e_furthest
            self._e_furthest = self._e_travel
            self.extruded_mm += gained
            if self.job_extruded_mm is not None:
                self.job_extruded_mm += gained

    def _feedrate(self, params: dict[str, float | None]) -> None:
        if "B" in params:
            self._feedrate_backup = self.feedrate_factor
        if "R" in params and self._feedrate_backup is not None:
            self.feedrate_factor = self._feedrate_backup
        if params.get("S") is not None:
            self.feedrate_factor = max(0.0, (params["S"] or 0.0) / 100.0)
