"""What managers bump for metrics, backed by prometheus-client.

A manager never imports this package: it calls ``gateway.instruments`` (the
:class:`hydrogen.gateway.Instruments` interface), and :func:`build_registry`
plugs a :class:`PrometheusInstruments` in there, once per gateway, so every
registry built on the same gateway exports the same observations.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Histogram
from prometheus_client.core import Metric

from hydrogen.metrics.families import FamilySpec

#: Buckets for command round trips: from an instant ``ok`` to a long heat-up.
COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

COMMAND_DURATION = FamilySpec(
    "hydrogen_printer_command_duration_seconds",
    "histogram",
    "Seconds from sending a command until the firmware acknowledged every line.",
    ("printer",),
)


class PrometheusInstruments:
    """:class:`hydrogen.gateway.Instruments` as prometheus-client metrics."""

    def __init__(self) -> None:
        self._command_seconds = Histogram(
            COMMAND_DURATION.name,
            COMMAND_DURATION.documentation,
            COMMAND_DURATION.labels,
            buckets=COMMAND_BUCKETS,
            registry=None,
        )

    def observe_command(self, printer: str, seconds: float) -> None:
        self._command_seconds.labels(printer).observe(seconds)

    def command_families(self) -> Iterable[Metric]:
        """The command round-trip histogram, one series per printer that sent a command."""
        return self._command_seconds.collect()
