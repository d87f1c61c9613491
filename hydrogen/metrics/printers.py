"""Printer metrics, read from each printer's live state and link counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hydrogen.printers.printer import PrinterState

if TYPE_CHECKING:
    from hydrogen.printers.manager import PrinterManager

#: Marlin reports heater PWM as 0..127.
_MAX_POWER = 127.0


class PrinterCollector:
    def __init__(self, manager: PrinterManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        printers = list(self._manager.printers.values())
        connected = GaugeMetricFamily(
            "hydrogen_printer_connected",
            "1 when the printer's link is up and handshaken.",
            labels=["printer"],
        )
        state = GaugeMetricFamily(
            "hydrogen_printer_state",
            "1 for the printer's current state, 0 for the others.",
            labels=["printer", "state"],
        )
        temp = GaugeMetricFamily(
            "hydrogen_printer_temperature_celsius",
            "Heater temperature reported by the firmware.",
            labels=["printer", "heater"],
        )
        target = GaugeMetricFamily(
            "hydrogen_printer_target_temperature_celsius",
            "Heater target temperature (0: off).",
            labels=["printer", "heater"],
        )
        power = GaugeMetricFamily(
            "hydrogen_printer_heater_power_ratio",
            "Heater power as a fraction of full power.",
            labels=["printer", "heater"],
        )
        counters = {
            "lines_sent": CounterMetricFamily(
                "hydrogen_printer_lines_sent", "Lines written to the printer.", labels=["printer"]
            ),
            "lines_received": CounterMetricFamily(
                "hydrogen_printer_lines_received",
                "Lines received from the printer.",
                labels=["printer"],
            ),
            "resends": CounterMetricFamily(
                "hydrogen_printer_resends", "Resend requests from the firmware.", labels=["printer"]
            ),
            "reconnects": CounterMetricFamily(
                "hydrogen_printer_reconnects",
                "Times the link was opened again after a loss.",
                labels=["printer"],
            ),
            "recoveries": CounterMetricFamily(
                "hydrogen_printer_link_recoveries",
                "Times the firmware answered again after lost oks (the link was kept).",
                labels=["printer"],
            ),
        }
        errors = CounterMetricFamily(
            "hydrogen_printer_errors",
            "Errors reported by the firmware or the link, by kind.",
            labels=["printer", "kind"],
        )
        for p in printers:
            up = p.state in (PrinterState.READY, PrinterState.BUSY)
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
            for attr, family in counters.items():
                family.add_metric([p.name], getattr(p.stats, attr))
            for kind, count in sorted(p.stats.errors_by_kind.items()):
                errors.add_metric([p.name, kind], count)
        yield connected
        yield state
        yield temp
        yield target
        yield power
        yield from counters.values()
        yield errors
        yield from self._manager.command_seconds.collect()
