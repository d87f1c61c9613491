"""Parser for Marlin-family temperature reports (pure, never raises).

The same report shape reaches the host in three ways, and all of them go through
`parse_temperatures`:

* inline in the `ok` of an `M105` (``ok T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0``);
* as a bare line when the firmware auto-reports (`M155 S<n>`), which Marlin prefixes
  with a space;
* once a second while `M109`/`M190`/`M191` block, with a trailing residency countdown
  (``... W:?`` / ``W:5``); very old Marlin and Prusa print the short form
  ``T:195.3 E:0 W:?`` where `E` is the *index* of the extruder being waited on.

Heater names (the keys of the returned mapping):

=========  ===========  ====================================================
Firmware   Name         Notes
=========  ===========  ====================================================
``Tn:``    ``tool<n>``  explicit per-hotend value, always preferred
``T:``     ``tool<e>``  the active hotend; ``e`` is the ``E:`` index when the
                        line has one, else 0. Dropped when the same tool is
                        also reported explicitly (multi-hotend Marlin prints
                        ``T:`` *and* ``T0: T1:``; the explicit one is exact).
``B:``     ``bed``
``C:``     ``chamber``
``P:``     ``probe``    Prusa prints it without a target
``A:``     ``ambient``  Prusa, no target
``L:``     ``cooler``   Marlin laser cooler
``M:``     ``board``    Marlin board sensor
``R:``     ``redundant``
``S:``     ``soc``
=========  ===========  ====================================================

Power is Marlin's 0..127 PWM scale: ``@:`` belongs to the same tool as plain ``T:``
(unless an explicit ``@<n>:`` names it), ``@<n>:`` to ``tool<n>``, ``B@:`` to the bed
and ``C@:`` to the chamber. Anything else on the line (ADC readings in parentheses,
Smoothieware's colon-less ``@0``, ``W:``) is ignored.

A line is only treated as a report if it carries a hotend (``T`` / ``Tn``) reading:
that keeps `M114` output on machines with extra axes (``A:0.00 B:0.00 C:0.00``) from
being mistaken for bed and chamber temperatures. Malformed values (``TT::``,
``T:21.2.3``, ``T:nan``) are skipped rather than guessed at.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["HeaterReading", "is_heating_wait", "parse_temperatures"]


@dataclass(frozen=True, slots=True)
class HeaterReading:
    """One sensor: `target` is None when the firmware reports no setpoint (probe,
    ambient); `power` is None when no ``@`` value was reported for it."""

    actual: float
    target: float | None = None
    power: int | None = None


_NUMBER = r"-?\d+(?:\.\d*)?"
# A value must end at whitespace, end of line, a "/" (target follows) or "(" (ADC
# reading follows); otherwise it is line noise such as "21.2.3" and is dropped.
_READING = re.compile(
    rf"(?:(?<=\s)|^)(?P<key>[TBCPALMRS])(?P<index>\d*):\s*(?P<actual>{_NUMBER})(?=[\s/(]|$)"
    rf"(?:\s*/\s*(?P<target>{_NUMBER})(?=[\s(]|$))?"
)
_POWER = re.compile(rf"(?:(?<=\s)|^)(?P<key>[BC]?)@(?P<index>\d*):\s*(?P<value>{_NUMBER})(?=\s|$)")
_EXTRUDER_INDEX = re.compile(r"(?:(?<=\s)|^)E:\s*(\d+)(?=\s|$)")
_RESIDENCY = re.compile(r"(?:(?<=\s)|^)W:\s*(?:\?|\d+)(?=\s|$)")

_NAMES = {
    "B": "bed",
    "C": "chamber",
    "P": "probe",
    "A": "ambient",
    "L": "cooler",
    "M": "board",
    "R": "redundant",
    "S": "soc",
}


def _finite(text: str) -> float | None:
    """A float that JSON can carry, or None (``inf``, ``nan`` and overflow are noise)."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and abs(value) < 1e6 else None


def parse_temperatures(text: str) -> dict[str, HeaterReading] | None:
    """Return the heaters reported on `text`, or None if it is not a temperature
    report. The leading ``ok`` must already be stripped by the caller."""
    explicit_tools: dict[int, HeaterReading] = {}
    plain_tool: HeaterReading | None = None
    others: dict[str, HeaterReading] = {}
    for match in _READING.finditer(text):
        actual = _finite(match["actual"])
        if actual is None:
            continue  # line noise such as 400 digits: never a temperature
        target = _finite(match["target"]) if match["target"] is not None else None
        reading = HeaterReading(actual=actual, target=target)
        key, index = match["key"], match["index"]
        if key == "T":
            if index:
                explicit_tools.setdefault(int(index), reading)
            elif plain_tool is None:
                plain_tool = reading
        elif not index:
            others.setdefault(_NAMES[key], reading)
    if plain_tool is None and not explicit_tools:
        return None

    plain_index = 0
    if extruder := _EXTRUDER_INDEX.search(text):
        plain_index = int(extruder[1])
    heaters: dict[str, HeaterReading] = {
        f"tool{index}": reading for index, reading in sorted(explicit_tools.items())
    }
    plain_name = f"tool{plain_index}"
    if plain_tool is not None and plain_name not in heaters:
        heaters[plain_name] = plain_tool
    heaters.update(others)

    explicit_power: dict[str, int] = {}
    plain_power: int | None = None
    for match in _POWER.finditer(text):
        number = _finite(match["value"])
        if number is None or not 0 <= number <= 255:
            continue
        value = int(number)
        key, index = match["key"], match["index"]
        if key == "B" and not index:
            explicit_power.setdefault("bed", value)
        elif key == "C" and not index:
            explicit_power.setdefault("chamber", value)
        elif not key and index:
            explicit_power.setdefault(f"tool{index}", value)
        elif not key and plain_power is None:
            plain_power = value
    if plain_power is not None:
        explicit_power.setdefault(plain_name, plain_power)
    for name, power in explicit_power.items():
        if (reading := heaters.get(name)) is not None:
            heaters[name] = HeaterReading(reading.actual, reading.target, power)
    return heaters


def is_heating_wait(text: str) -> bool:
    """True for the once-a-second lines Marlin prints while `M109`/`M190`/`M191`
    block (``W:`` residency countdown, or the old ``E:<index>`` form). They prove the
    firmware is alive and working on the blocking command, so the protocol treats them
    as keep-alives; plain auto-reports are not, or a lost ``ok`` would never time out
    on a printer with `M155` enabled."""
    return bool(_RESIDENCY.search(text) or _EXTRUDER_INDEX.search(text))
