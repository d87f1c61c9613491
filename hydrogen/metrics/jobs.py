"""Job metrics: outcomes (from the history database's counts) and live progress."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from hydrogen.jobs.manager import JobManager

OUTCOMES = ("completed", "failed", "cancelled")


class JobCollector:
    def __init__(self, manager: JobManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        m = self._manager
        total = CounterMetricFamily(
            "hydrogen_jobs", "Finished print jobs, by outcome.", labels=["printer", "outcome"]
        )
        printing = GaugeMetricFamily(
            "hydrogen_job_printing",
            "1 while a job is printing or paused on the printer.",
            labels=["printer"],
        )
        progress = GaugeMetricFamily(
            "hydrogen_job_progress_ratio",
            "Progress of the printer's current job (0..1).",
            labels=["printer"],
        )
        for name in m.printers.printers:
            for outcome in OUTCOMES:
                total.add_metric([name, outcome], m.counts.get((name, outcome), 0))
            runner = m.runners.get(name)
            printing.add_metric([name], 1.0 if runner is not None else 0.0)
            progress.add_metric([name], runner.job.progress if runner is not None else 0.0)
        yield total
        yield printing
        yield progress
