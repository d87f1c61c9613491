"""Printer metrics, read from each printer's public live state and link counters.

The collector is given what it reads (the printers by name and the instruments the
printer manager reports command round trips to); it imports no manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen.metrics.families import FamilySpec, describe
from hydrogen.metrics.instruments import COMMAND_DURATION
from hydrogen.printers.printer import Printer, PrinterState
from hydrogen.printers.state import OPERATIONAL

#: Marlin reports heater PWM as 0..127.
_MAX_POWER = 127.0

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
