"""Job metrics: outcomes (from the history database's counts), live progress and time,
the file being printed, and printing seconds.

The collector reads the job manager's public state through :class:`JobSource`; it
imports no manager.  Cardinality is bounded by the printers, never by file names:
the file is the one label of ``hydrogen_job_file_info``, which has one series per
printer while a job is active and none otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen.metrics.families import FamilySpec, describe

OUTCOMES = ("completed", "failed", "cancelled")
_P = ("printer",)

PRINTER_JOBS = FamilySpec(
    "hydrogen_printer_jobs", "counter", "Finished print jobs, by outcome.", ("printer", "outcome")
)
PRINTING_SECONDS = FamilySpec(
    "hydrogen_printer_printing_seconds",
    "counter",
    "Seconds spent printing (paused time excluded) since the gateway started.",
    _P,
)
PRINTING = FamilySpec(
    "hydrogen_job_printing",
    "gauge",
    "1 while a job is printing or paused on the printer.",
    _P,
)
PROGRESS = FamilySpec(
    "hydrogen_job_progress_ratio",
    "gauge",
    "Progress of the printer's current job (0..1).",
    _P,
)
ELAPSED = FamilySpec(
    "hydrogen_job_print_time_elapsed_seconds",
    "gauge",
    "Printing time of the running job so far, paused time excluded (absent when idle).",
    _P,
)
LEFT = FamilySpec(
    "hydrogen_job_print_time_left_seconds",
    "gauge",
    "Estimated printing time left of the running job: the slicer's estimate, else the "
    "observed rate (absent when idle or not yet known).",
    _P,
)
FILE = FamilySpec(
    "hydrogen_job_file",
    "info",
    "The file the printer's running job prints (one series per busy printer).",
    _P,
)
JOBS = FamilySpec(
    "hydrogen_jobs",
    "counter",
    "Finished print jobs, by outcome. DEPRECATED: removed in the next release; use "
    "hydrogen_printer_jobs_total.",
    ("printer", "outcome"),
)

#: Every family :class:`JobCollector` exports, in exposition order.
FAMILIES: tuple[FamilySpec, ...] = (
    PRINTER_JOBS,
    PRINTING_SECONDS,
    PRINTING,
    PROGRESS,
    ELAPSED,
    LEFT,
    FILE,
    JOBS,
)


class _Job(Protocol):
    @property
    def file(self) -> str: ...

    @property
    def progress(self) -> float: ...

    def elapsed(self, now: float | None = None) -> float: ...

    def eta(self, now: float | None = None) -> float | None: ...


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

    @property
    def last_jobs(self) -> Mapping[str, _Job]: ...


class _PrintingClock:
    """``printing_seconds_total`` of one printer, from the jobs the scrapes see.

    The printer's latest job (running or just ended) counts with its elapsed time; when
    another job replaces it, its final elapsed time moves into the finished sum, so the
    counter never goes down.  A job already over when first seen (restored from the
    history at start-up) is a baseline, not printing this gateway did.  A job that
    starts *and* ends between two scrapes while a third starts is not seen: with
    scrapes every 15 s that is a test print, not a farm's hours.
    """

    __slots__ = ("_baseline", "_finished", "_job")

    def __init__(self) -> None:
        self._finished = 0.0
        self._job: _Job | None = None
        self._baseline = 0.0

    def total(self, job: _Job | None, running: bool, now: float) -> float:
        if job is not None and job is not self._job:
            if self._job is not None:
                self._finished += max(self._job.elapsed(now) - self._baseline, 0.0)
            first_and_over = self._job is None and not running
            self._baseline = job.elapsed(now) if first_and_over else 0.0
            self._job = job
        if self._job is None:
            return self._finished
        return self._finished + max(self._job.elapsed(now) - self._baseline, 0.0)


class JobCollector(Collector):
    def __init__(self, source: JobSource) -> None:
        self._source = source
        self._clocks: dict[str, _PrintingClock] = {}

    def describe(self) -> Iterable[Metric]:
        return describe(FAMILIES)

    def collect(self) -> Iterator[Metric]:
        m = self._source
        now = time.time()
        jobs, legacy = PRINTER_JOBS.family(), JOBS.family()
        seconds, printing, progress = (
            PRINTING_SECONDS.family(),
            PRINTING.family(),
            PROGRESS.family(),
        )
        elapsed, left, file = ELAPSED.family(), LEFT.family(), FILE.family()
        last_jobs = getattr(m, "last_jobs", {})
        for name in m.printers.printers:
            for outcome in OUTCOMES:
                count = m.counts.get((name, outcome), 0)
                jobs.add_metric([name, outcome], count)
                legacy.add_metric([name, outcome], count)
            runner = m.runners.get(name)
            job = runner.job if runner is not None else last_jobs.get(name)
            clock = self._clocks.setdefault(name, _PrintingClock())
            seconds.add_metric([name], clock.total(job, runner is not None, now))
            printing.add_metric([name], 1.0 if runner is not None else 0.0)
            progress.add_metric([name], runner.job.progress if runner is not None else 0.0)
            if runner is not None:
                elapsed.add_metric([name], runner.job.elapsed(now))
                eta = runner.job.eta(now)
                if eta is not None:
                    left.add_metric([name], eta)
                file.add_metric([name], {"file": runner.job.file})
        yield jobs
        yield seconds
        yield printing
        yield progress
        yield elapsed
        yield left
        yield file
        yield legacy
