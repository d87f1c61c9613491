"""Job metrics: outcomes (from the history database's counts) and live progress.

The collector reads the job manager's public state through :class:`JobSource`; it
imports no manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen.metrics.families import FamilySpec, describe

OUTCOMES = ("completed", "failed", "cancelled")

JOBS = FamilySpec(
    "hydrogen_jobs", "counter", "Finished print jobs, by outcome.", ("printer", "outcome")
)
PRINTING = FamilySpec(
    "hydrogen_job_printing",
    "gauge",
    "1 while a job is printing or paused on the printer.",
    ("printer",),
)
PROGRESS = FamilySpec(
    "hydrogen_job_progress_ratio",
    "gauge",
    "Progress of the printer's current job (0..1).",
    ("printer",),
)

#: Every family :class:`JobCollector` exports, in exposition order.
FAMILIES: tuple[FamilySpec, ...] = (JOBS, PRINTING, PROGRESS)


class _Job(Protocol):
    @property
    def progress(self) -> float: ...


class _Runner(Protocol):
    @property
    def job(self) -> _Job: ...


class _Printers(Protocol):
    @property
    def printers(self) -> Mapping[str, object]: ...


class JobSource(Protocol):
    """The public state of :class:`hydrogen.jobs.manager.JobManager` the collector reads."""

    @property
    def printers(self) -> _Printers: ...

    @property
    def counts(self) -> Mapping[tuple[str, str], int]: ...

    @property
    def runners(self) -> Mapping[str, _Runner]: ...


class JobCollector(Collector):
    def __init__(self, source: JobSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return describe(FAMILIES)

    def collect(self) -> Iterator[Metric]:
        m = self._source
        total, printing, progress = JOBS.family(), PRINTING.family(), PROGRESS.family()
        for name in m.printers.printers:
            for outcome in OUTCOMES:
                total.add_metric([name, outcome], m.counts.get((name, outcome), 0))
            runner = m.runners.get(name)
            printing.add_metric([name], 1.0 if runner is not None else 0.0)
            progress.add_metric([name], runner.job.progress if runner is not None else 0.0)
        yield total
        yield printing
        yield progress
