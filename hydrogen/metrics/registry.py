"""One registry per app, built from the parts it is given (no global state).

Every collector is created here, by name, from :class:`Sources` (the gateway, the
managers, the connection gate); no manager imports this package.  As in
node_exporter, each collector runs isolated on every scrape: one that raises is
logged and left out, the others are exported, and
``hydrogen_scrape_collector_success{collector}`` /
``hydrogen_scrape_collector_duration_seconds{collector}`` say which one failed and
what each cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen.gateway import Gateway
from hydrogen.metrics.families import FamilySpec, describe
from hydrogen.metrics.gateway import ConnectionGateCollector, GatewayCollector
from hydrogen.metrics.host import HostCollector
from hydrogen.metrics.instruments import PrometheusInstruments
from hydrogen.metrics.jobs import JobCollector
from hydrogen.metrics.printers import PrinterCollector

if TYPE_CHECKING:
    from hydrogen.jobs.manager import JobManager
    from hydrogen.printers.manager import PrinterManager
    from hydrogen.server.gate import ConnectionGate

log = logging.getLogger(__name__)

SCRAPE_SUCCESS = FamilySpec(
    "hydrogen_scrape_collector_success",
    "gauge",
    "1 if the collector's last run succeeded, 0 if it raised (its families are left out).",
    ("collector",),
)
SCRAPE_DURATION = FamilySpec(
    "hydrogen_scrape_collector_duration_seconds",
    "gauge",
    "Seconds the collector's last run took.",
    ("collector",),
)
#: The families the scrape collector adds about the others.
FAMILIES: tuple[FamilySpec, ...] = (SCRAPE_SUCCESS, SCRAPE_DURATION)


@dataclass(frozen=True, slots=True)
class Sources:
    """What collectors are built from; a part an app lacks is ``None``."""

    gateway: Gateway
    instruments: PrometheusInstruments
    printers: PrinterManager | None = None
    jobs: JobManager | None = None
    gate: ConnectionGate | None = None


#: Builds one collector from the sources, or ``None`` when its part is missing.
Factory = Callable[[Sources], Collector | None]


def _process(sources: Sources) -> Collector:
    # prometheus-client's own process collector: standard process_* names that
    # every Grafana process dashboard already understands.
    return ProcessCollector(registry=None)


def _printers(sources: Sources) -> Collector | None:
    if sources.printers is None:
        return None
    return PrinterCollector(sources.printers.printers, sources.instruments)


#: Every collector by name, in exposition order (node_exporter's ``registerCollector``).
COLLECTORS: dict[str, Factory] = {
    "process": _process,
    "gateway": lambda s: GatewayCollector(s.gateway),
    "host": lambda s: HostCollector(s.gateway.sampler, s.gateway.config.state_dir),
    "printers": _printers,
    "jobs": lambda s: None if s.jobs is None else JobCollector(s.jobs),
    "connections": lambda s: None if s.gate is None else ConnectionGateCollector(s.gate),
}


class ScrapeCollector(Collector):
    """Runs each named collector isolated and reports how each run went."""

    def __init__(self, collectors: dict[str, Collector]) -> None:
        self._collectors = collectors
        self._logged: set[str] = set()
        names = {spec.name: "scrape" for spec in FAMILIES}
        for owner, collector in collectors.items():
            for family in _described(collector):
                if family.name in names:
                    raise ValueError(
                        f"metric family {family.name} is exported by both "
                        f"{names[family.name]} and {owner}"
                    )
                names[family.name] = owner

    def describe(self) -> Iterable[Metric]:
        families = describe(FAMILIES)
        for collector in self._collectors.values():
            families.extend(_described(collector))
        return families

    def collect(self) -> Iterator[Metric]:
        success, duration = SCRAPE_SUCCESS.family(), SCRAPE_DURATION.family()
        for name, collector in self._collectors.items():
            started = time.perf_counter()
            try:
                families = list(collector.collect())
            except Exception as exc:
                # Logged with its traceback once per collector, then one line a scrape.
                log.error(
                    "metrics collector %s failed: %r",
                    name,
                    exc,
                    exc_info=name not in self._logged,
                )
                self._logged.add(name)
                families, ok = [], 0.0
            else:
                ok = 1.0
            duration.add_metric([name], time.perf_counter() - started)
            success.add_metric([name], ok)
            yield from families
        yield success
        yield duration


def _described(collector: object) -> list[Metric]:
    """The families a collector declares (``FamilySpec`` tables; none for the others)."""
    describe_ = getattr(collector, "describe", None)
    return list(describe_()) if describe_ is not None else []


def build_registry(
    gateway: Gateway,
    *,
    printers: PrinterManager | None = None,
    jobs: JobManager | None = None,
    gate: ConnectionGate | None = None,
) -> CollectorRegistry:
    """A registry with every collector whose part is given, run through one
    :class:`ScrapeCollector`; also plugs the gateway's instruments in (once per gateway,
    so a second registry on the same gateway exports the same observations)."""
    instruments = gateway.instruments
    if not isinstance(instruments, PrometheusInstruments):
        instruments = PrometheusInstruments()
        gateway.instruments = instruments
    sources = Sources(gateway, instruments, printers=printers, jobs=jobs, gate=gate)
    collectors: dict[str, Collector] = {}
    for name, factory in COLLECTORS.items():
        collector = factory(sources)
        if collector is not None:
            collectors[name] = collector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(collectors))
    return registry
