"""How every collector declares what it exports: one table of :class:`FamilySpec`.

Each collector module keeps a ``FAMILIES`` tuple; ``describe`` returns the empty
families of that table and ``collect`` fills families built from the same specs, so
the names the registry checks for clashes are exactly the names a scrape produces,
and a family's type, help and labels are written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

__all__ = ["Family", "FamilySpec", "describe"]

Kind = Literal["gauge", "counter", "info", "histogram"]
#: The family types a spec builds (each has ``add_metric``).
Family = GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily | HistogramMetricFamily


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """Name, type, help and labels of one exported family.

    A counter's name is given without ``_total`` (prometheus_client strips it anyway
    and appends it to the samples and, in the text format, to HELP/TYPE).
    """

    name: str
    kind: Kind
    documentation: str
    labels: tuple[str, ...] = ()

    def family(self) -> Family:
        """An empty family ready for ``add_metric``."""
        labels = list(self.labels)
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=labels)
        if self.kind == "info":
            return InfoMetricFamily(self.name, self.documentation, labels=labels)
        if self.kind == "histogram":
            return HistogramMetricFamily(self.name, self.documentation, labels=labels)
        return GaugeMetricFamily(self.name, self.documentation, labels=labels)


def describe(specs: Iterable[FamilySpec]) -> list[Metric]:
    """Empty families for every spec: what a collector's ``describe`` returns."""
    return [spec.family() for spec in specs]
