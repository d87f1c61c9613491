"""Printer metrics, read from each printer's public live state and link counters.

The collector is given what it reads (the printers by name and the instruments the
printer manager reports command round trips to); it imports no manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen.metrics.families import Family, FamilySpec, describe
from hydrogen.metrics.instruments import COMMAND_DURATION
from hydrogen.printers.printer import Printer, PrinterState
from hydrogen.printers.state import OPERATIONAL
from hydrogen.printers.telemetry import AXES

#: Marlin reports heater PWM as 0..127.
_MAX_POWER = 127.0
#: G-code lengths are millimetres; Prometheus wants base units (promtool flags "millimeters").
_MM_PER_M = 1000.0

_P = ("printer",)
_HEATER = ("printer", "heater")

INFO = FamilySpec(
    "hydrogen_printer",
    "info",
    "The printer's firmware as its M115 reported it (after the first handshake).",
    _P,
)
CONNECTED = FamilySpec(
    "hydrogen_printer_connected", "gauge", "1 when the printer's link is up and handshaken.", _P
)
STATE = FamilySpec(
    "hydrogen_printer_state",
    "gauge",
    "1 for the printer's current state, 0 for the others.",
    ("printer", "state"),
)
TEMPERATURE = FamilySpec(
    "hydrogen_printer_temperature_celsius",
    "gauge",
    "Heater temperature reported by the firmware.",
    _HEATER,
)
TARGET = FamilySpec(
    "hydrogen_printer_target_temperature_celsius",
    "gauge",
    "Heater target temperature (0: off).",
    _HEATER,
)
POWER = FamilySpec(
    "hydrogen_printer_heater_power_ratio",
    "gauge",
    "Heater power as a fraction of full power.",
    _HEATER,
)
LINES_SENT = FamilySpec(
    "hydrogen_printer_lines_sent", "counter", "Lines written to the printer.", _P
)
LINES_RECEIVED = FamilySpec(
    "hydrogen_printer_lines_received", "counter", "Lines received from the printer.", _P
)
RESENDS = FamilySpec(
    "hydrogen_printer_resends", "counter", "Resend requests from the firmware.", _P
)
RECONNECTS = FamilySpec(
    "hydrogen_printer_reconnects", "counter", "Times the link was opened again after a loss.", _P
)
RECOVERIES = FamilySpec(
    "hydrogen_printer_link_recoveries",
    "counter",
    "Times the firmware answered again after lost oks (the link was kept).",
    _P,
)
ERRORS = FamilySpec(
    "hydrogen_printer_errors",
    "counter",
    "Errors reported by the firmware or the link, by kind.",
    ("printer", "kind"),
)
FILAMENT = FamilySpec(
    "hydrogen_printer_filament_extruded_meters",
    "counter",
    "Filament extruded since the gateway started, from the moves the firmware "
    "acknowledged (retractions and their primes not counted).",
    _P,
)
JOB_FILAMENT = FamilySpec(
    "hydrogen_printer_job_filament_extruded_meters",
    "gauge",
    "Filament extruded by the running job so far (absent when no job runs).",
    _P,
)
FAN = FamilySpec(
    "hydrogen_printer_fan_speed_ratio",
    "gauge",
    "Fan speed as a fraction of full speed, as set by M106/M107 (absent until set).",
    ("printer", "fan"),
)
FEEDRATE = FamilySpec(
    "hydrogen_printer_feedrate_factor_ratio",
    "gauge",
    "Feed-rate factor (M220; 1 is 100 %), absent until set or reported.",
    _P,
)
FLOW = FamilySpec(
    "hydrogen_printer_flow_factor_ratio",
    "gauge",
    "Flow factor of the active extruder (M221; 1 is 100 %), absent until set or reported.",
    _P,
)
POSITION = FamilySpec(
    "hydrogen_printer_position_meters",
    "gauge",
    "Position the firmware last reported (M114, M154 auto-report), absent until reported.",
    ("printer", "axis"),
)
#: What the printer's telemetry tracker knows (hydrogen.printers.telemetry).
_TELEMETRY: tuple[FamilySpec, ...] = (FILAMENT, JOB_FILAMENT, FAN, FEEDRATE, FLOW, POSITION)

#: (family, attribute of ``Printer.stats``) for the per-printer link counters.
_LINK_COUNTERS: tuple[tuple[FamilySpec, str], ...] = (
    (LINES_SENT, "lines_sent"),
    (LINES_RECEIVED, "lines_received"),
    (RESENDS, "resends"),
    (RECONNECTS, "reconnects"),
    (RECOVERIES, "recoveries"),
)

#: Every family :class:`PrinterCollector` exports, in exposition order.
FAMILIES: tuple[FamilySpec, ...] = (
    INFO,
    CONNECTED,
    STATE,
    TEMPERATURE,
    TARGET,
    POWER,
    *(spec for spec, _ in _LINK_COUNTERS),
    ERRORS,
    COMMAND_DURATION,
    *_TELEMETRY,
)


class CommandTimings(Protocol):
    """Where the command round-trip histogram comes from."""

    def command_families(self) -> Iterable[Metric]: ...


class PrinterCollector(Collector):
    def __init__(self, printers: Mapping[str, Printer], commands: CommandTimings) -> None:
        self._printers = printers
        self._commands = commands

    def describe(self) -> Iterable[Metric]:
        return describe(FAMILIES)

    def collect(self) -> Iterator[Metric]:
        info, connected, state = INFO.family(), CONNECTED.family(), STATE.family()
        temp, target, power = TEMPERATURE.family(), TARGET.family(), POWER.family()
        counters = [(spec.family(), attr) for spec, attr in _LINK_COUNTERS]
        errors = ERRORS.family()
        telemetry = [spec.family() for spec in _TELEMETRY]
        for p in list(self._printers.values()):
            up = p.state in OPERATIONAL
            firmware = p.firmware
            if firmware is not None:
                info.add_metric(
                    [p.name],
                    {
                        "firmware": firmware.name,
                        "machine_type": firmware.fields.get("MACHINE_TYPE", ""),
                        "protocol": firmware.fields.get("PROTOCOL_VERSION", ""),
                    },
                )
            connected.add_metric([p.name], 1.0 if up else 0.0)
            for s in PrinterState:
                state.add_metric([p.name, s.value], 1.0 if p.state is s else 0.0)
            if up:
                for heater, sample in sorted(p.temperatures.items()):
                    temp.add_metric([p.name, heater], sample.actual)
                    if sample.target is not None:
                        target.add_metric([p.name, heater], sample.target)
                    if sample.power is not None:
                        power.add_metric([p.name, heater], sample.power / _MAX_POWER)
            for family, attr in counters:
                family.add_metric([p.name], getattr(p.stats, attr))
            for kind, count in sorted(p.stats.errors_by_kind.items()):
                errors.add_metric([p.name, kind], count)
            _add_telemetry(telemetry, p, up=up)
        yield info
        yield connected
        yield state
        yield temp
        yield target
        yield power
        for family, _ in counters:
            yield family
        yield errors
        yield from self._commands.command_families()
        yield from telemetry


def _add_telemetry(families: list[Family], p: Printer, *, up: bool) -> None:
    """Filament always (a counter since start); the rest only what the firmware said,
    and only while the link is up (a stale fan or position is not exported)."""
    filament, job_filament, fan, feedrate, flow, position = families
    t = p.telemetry
    filament.add_metric([p.name], t.extruded_mm / _MM_PER_M)
    if t.job_extruded_mm is not None:
        job_filament.add_metric([p.name], t.job_extruded_mm / _MM_PER_M)
    if not up:
        return
    for index, ratio in sorted(t.fans.items()):
        fan.add_metric([p.name, str(index)], ratio)
    if t.feedrate_factor is not None:
        feedrate.add_metric([p.name], t.feedrate_factor)
    if t.flow_factor is not None:
        flow.add_metric([p.name], t.flow_factor)
    for axis in AXES:
        if t.position is not None and axis in t.position:
            position.add_metric([p.name, axis], t.position[axis] / _MM_PER_M)
