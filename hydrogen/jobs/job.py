"""One print job: a file streamed line by line into a printer, under its ``ok``s.

Why it streams the way it does: the job keeps only a couple of its lines
queued in the printer's protocol at a time (``depth``), so a command typed by
the operator goes out right after the line in flight instead of waiting
behind the file. Every line is handed to the protocol exactly once and in
order; resends are the protocol's business and never re-read the file. If the
printer halts, resets or disappears, the waiting line's future fails and the
job fails with that reason: it is never resumed on a printer that may have
lost its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydrogen.config import JobsConfig
from hydrogen.jobs.metadata import GcodeMetadata, strip_gcode_line
from hydrogen.printers import marlin
from hydrogen.printers.pending import PendingLine
from hydrogen.printers.printer import CommandFailed, Printer, PrinterUnavailable

log = logging.getLogger(__name__)

#: Lines read from disk per thread hop (reading never blocks the event loop).
READ_BATCH = 512


class JobState(enum.StrEnum):
    QUEUED = "queued"
    PRINTING = "printing"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED)


class JobError(Exception):
    """A job request that cannot be honoured in the job's current state."""


@dataclass
class Job:
    printer: str
    file: str
    path: Path
    metadata: GcodeMetadata
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    state: JobState = JobState.QUEUED
    reason: str | None = None
    lines_sent: int = 0
    bytes_sent: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    paused_seconds: float = 0.0
    #: Who started it and who cancelled it: identity names, never a key (None: not known,
    #: or not cancelled). A firmware's own cancel is "printer".
    started_by: str | None = None
    cancelled_by: str | None = None
    _paused_at: float | None = None

    @property
    def total_lines(self) -> int:
        return self.metadata.gcode_lines

    @property
    def progress(self) -> float:
        if self.state is JobState.COMPLETED:
            return 1.0
        return min(1.0, self.lines_sent / self.total_lines) if self.total_lines else 0.0

    def elapsed(self, now: float | None = None) -> float:
        """Printing time so far, without the time spent paused."""
        if self.started_at is None:
            return 0.0
        end = self.ended_at or now or time.time()
        paused = self.paused_seconds + ((end - self._paused_at) if self._paused_at else 0.0)
        return max(0.0, end - self.started_at - paused)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left: the slicer's estimate when there is one, else the observed rate."""
        if self.state.finished:
            return 0.0 if self.state is JobState.COMPLETED else None
        progress = self.progress
        estimate = self.metadata.estimated_seconds
        if estimate:
            return max(0.0, estimate * (1.0 - progress))
        elapsed = self.elapsed(now)
        if progress <= 0.01 or elapsed <= 0:
            return None
        return max(0.0, elapsed / progress - elapsed)

    def payload(self, queue: list[str]) -> dict[str, Any]:
        """The job as plain data: a job frame's payload, a reply's, an HTTP body."""
        now = time.time()
        eta = self.eta(now)
        return {
            "printer": self.printer,
            "job_id": self.id,
            "state": self.state.value,
            "file": self.file,
            "reason": self.reason,
            "lines_sent": self.lines_sent,
            "total_lines": self.total_lines,
            "bytes_sent": self.bytes_sent,
            "total_bytes": self.metadata.size_bytes,
            "progress": round(self.progress, 5),
            "elapsed_seconds": round(self.elapsed(now), 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "estimated_seconds": self.metadata.estimated_seconds,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "started_by": self.started_by,
            "cancelled_by": self.cancelled_by,
            "queue": queue,
        }


def _read_lines(path: Path) -> Iterator[list[tuple[str, int, int]]]:
    """Batches of (command, file offset after its line, its line number in the file,
    as an editor shows it); blank and comment lines dropped."""
    batch: list[tuple[str, int, int]] = []
    offset = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            offset += len(raw)
            command = strip_gcode_line(raw.decode("utf-8", "replace"))
            if command is not None:
                batch.append((command, offset, lineno))
                if len(batch) >= READ_BATCH:
                    yield batch
                    batch = []
    if batch:
        yield batch


def sendable(command: str) -> str | None:
    """The line as the firmware may receive it, or None to skip it.

    ``M110`` would fight the gateway's own line numbering; non-ASCII text (an
    ``M117`` message in another language) is replaced rather than failing a print.
    """
    if command.split(" ", 1)[0].upper() == "M110":
        return None
    if not command.isascii():
        command = command.encode("ascii", "replace").decode("ascii")
    if len(command) > marlin.MAX_GCODE_LENGTH and command[:4].upper() in ("M117", "M118"):
        command = command[: marlin.MAX_GCODE_LENGTH]  # a display message, not motion
    return marlin.validate_gcode(command)


def check_file(path: Path) -> str | None:
    """Why the file cannot be printed (the first unsendable line), or None.

    Run before a job starts, so a bad line fails the request, not the print hours in.
    """
    for batch in _read_lines(path):
        for command, _, lineno in batch:
            try:
                sendable(command)
            except ValueError as exc:
                return f"line {lineno} ({command[:40]!r}): {exc}"
    return None


class JobRunner:
    """Drives one :class:`Job` on one :class:`Printer`."""

    def __init__(
        self,
        job: Job,
        printer: Printer,
        *,
        on_change: Callable[[Job], None],
        config: JobsConfig,
    ) -> None:
        self.job = job
        self.printer = printer
        self._on_change = on_change
        self._config = config
        self._running = asyncio.Event()
        self._running.set()
        self._parked = asyncio.Event()
        #: pause/resume run scripts and await: never two at once.
        self._control = asyncio.Lock()
        self._cancel = False
        self._failure: str | None = None
        #: lines handed to the printer, oldest first (a pause or cancel withdraws the
        #: read-ahead among them)
        self._pending: deque[PendingLine] = deque()
        #: a pause took these back: the read-ahead not yet written, and the heat-up or
        #: user waits M108 broke; resume sends the waits, then the lines, in order
        self._held_lines: list[str] = []
        self._broken_waits: tuple[str, ...] = ()
        self._depth = printer.config.window + 2
        self._last_m73: int | None = None
        #: The file sets the display's progress itself (PrusaSlicer, OrcaSlicer, ...):
        #: ours would fight it.
        self._file_has_m73 = False
        self.task: asyncio.Task[None] | None = None

    # -- control ------------------------------------------------------------------------
    def start(self, prelude: Awaitable[Any] | None = None) -> asyncio.Task[None]:
        """Start streaming; ``prelude`` (recording the job) runs first inside the task,
        so its failure fails this job instead of wedging the printer's queue."""
        # The state changes now, so the reply to the start request already says so.
        self.job.state = JobState.PRINTING
        self.job.started_at = time.time()
        self._on_change(self.job)
        self.task = asyncio.create_task(self._run(prelude), name=f"job-{self.job.id}")
        return self.task

    async def pause(self) -> None:
        """Stop feeding, wait until every line already handed out is acknowledged,
        then run the pause script. Only the streamer awaits line futures: this waits
        for the streamer to say it is parked."""
        async with self._control:
            if self.job.state is not JobState.PRINTING:
                raise JobError(f"cannot pause a job that is {self.job.state.value}")
            if self._cancel or self._failure:
                # a cancel that arrived first must not be parked behind this pause
                raise JobError("the job is being cancelled")
            self._running.clear()
            self.job.state = JobState.PAUSED
            self.job._paused_at = time.time()
            self._on_change(self.job)
            # Nothing more reaches the firmware: the read-ahead comes back (sent again
            # on resume) and a heat-up in progress is broken, not waited out.
            self._held_lines = self._take_back_read_ahead()
            self._broken_waits = self.printer.interrupt_wait()
            await self._parked.wait()
            if self.job.state is not JobState.PAUSED:
                raise JobError(f"the job {self.job.state.value} before it could pause")
            await self._script(self._config.pause_script, "pause")

    async def resume(self) -> None:
        async with self._control:
            if self.job.state is not JobState.PAUSED:
                raise JobError(f"cannot resume a job that is {self.job.state.value}")
            if not self.printer.accepts_commands:
                raise JobError(f"cannot resume: {self.printer.unavailable_reason()}")
            if self._broken_waits:
                # the heat-up the pause broke: finish it before anything else moves
                try:
                    await self.printer.command("\n".join(self._broken_waits))
                except (CommandFailed, PrinterUnavailable) as exc:
                    raise JobError(f"cannot resume: {exc}") from None
                self._broken_waits = ()
            await self._script(self._config.resume_script, "resume")
            # The printer may have halted, or someone cancelled, while the script ran.
            if self._failure or self._cancel or self.job.state is not JobState.PAUSED:
                raise JobError(f"cannot resume: the job is {self.job.state.value}")
            if self.job._paused_at is not None:
                self.job.paused_seconds += time.time() - self.job._paused_at
                self.job._paused_at = None
            self.job.state = JobState.PRINTING
            self._on_change(self.job)
            self._running.set()

    def cancel(self) -> None:
        if self.job.state.finished:
            raise JobError(f"the job already {self.job.state.value}")
        self._cancel = True
        self._running.set()
        # The lines read ahead but not yet written must not reach the printer after
        # a cancel: take them back (only what the firmware already has is waited for),
        # and break a heat-up or user wait rather than sit it out.
        self._take_back_read_ahead()
        self._held_lines = []
        self.printer.interrupt_wait()

    def _take_back_read_ahead(self) -> list[str]:
        """Withdraw this job's lines not yet written; return them, oldest first."""
        taken = set(self.printer.withdraw([p for p in self._pending if not p.future.done()]))
        lines = []
        for pending in self._pending:
            if pending in taken:
                pending.withdrawn()
                self.job.lines_sent -= 1
                lines.append(pending.line)
        return lines

    def fail(self, reason: str) -> None:
        """The printer halted, reset or vanished: stop at once with this reason."""
        if self.job.state.finished or self._failure:
            return
        self._failure = reason
        self._running.set()
        for pending in self._pending:
            pending.failed(reason)

    # -- the stream -----------------------------------------------------------------------
    async def _run(self, prelude: Awaitable[Any] | None) -> None:
        try:
            if prelude is not None:
                try:
                    await prelude
                except Exception as exc:
                    raise CommandFailed(f"could not record the job: {exc}") from None
            await self._stream()
            await self._drain()
            if self._failure:
                raise CommandFailed(self._failure)
            if self._cancel:
                await self._script(self._config.cancel_script, "cancel")
                self._finish(JobState.CANCELLED, "cancelled by request")
            else:
                if self._config.m73_progress and not self._file_has_m73:
                    self._send_m73(100, 0)
                self._finish(JobState.COMPLETED, None)
        except (CommandFailed, PrinterUnavailable, ValueError, OSError) as exc:
            reason = self._failure or str(exc)
            # Do not leave a hot nozzle resting on the part when the printer can still listen.
            await self._script(self._config.cancel_script, "cancel")
            self._finish(JobState.FAILED, reason)
        except asyncio.CancelledError:
            self._finish(JobState.FAILED, "gateway stopped while the job was running")
            raise

    async def _stream(self) -> None:
        job = self.job
        iterator = _read_lines(job.path)
        while True:
            batch = await asyncio.to_thread(next, iterator, None)
            if batch is None:
                return
            for command, offset, lineno in batch:
                if not self._running.is_set():
                    await self._park()
                if self._cancel or self._failure:
                    return
                try:
                    line = sendable(command)
                except ValueError as exc:
                    raise ValueError(f"line {lineno} of {job.file}: {exc}") from None
                if line is not None:
                    if line[:3] == "M73" and not line[3:4].isdigit():
                        self._file_has_m73 = True
                    if not await self._send(line):
                        return
                job.lines_sent += 1
                job.bytes_sent = offset
                if self._config.m73_progress:
                    self._maybe_m73()

    async def _park(self) -> None:
        """Paused: settle what is in flight, tell pause() we are idle, wait for resume."""
        await self._drain()
        self._parked.set()
        try:
            await self._running.wait()
        finally:
            self._parked.clear()
        held, self._held_lines = self._held_lines, []
        for line in held:  # older than the line the stream stopped at
            if not await self._send(line):
                return
            self.job.lines_sent += 1

    async def _send(self, line: str) -> bool:
        """Hand one line to the printer once there is room; False if the job was
        cancelled or failed while waiting for it (the line is not sent)."""
        while len(self._pending) >= self._depth:
            await self._settle_oldest()
        if not self._running.is_set():
            # paused while waiting for room: the lines the pause took back are older
            # than this one and go first on resume
            await self._park()
        if self._cancel or self._failure:
            return False
        pending = PendingLine(line)
        self.printer.send_line(line, pending)
        self._pending.append(pending)
        return True

    async def _settle_oldest(self) -> None:
        future = self._pending[0].future
        try:
            await future
        finally:
            self._pending.popleft()
        self._on_change(self.job)

    async def _drain(self) -> None:
        while self._pending:
            await self._settle_oldest()

    async def _script(self, script: str, what: str) -> None:
        lines = [c for raw in script.splitlines() if (c := strip_gcode_line(raw))]
        if not lines or not self.printer.accepts_commands:
            return
        try:
            await self.printer.command("\n".join(lines))
        except (CommandFailed, PrinterUnavailable, ValueError) as exc:
            log.warning("job %s: %s script failed: %s", self.job.id, what, exc)

    def _maybe_m73(self) -> None:
        if self._file_has_m73:
            return
        percent = int(self.job.progress * 100)
        if percent != self._last_m73 and percent < 100:
            eta = self.job.eta()
            self._send_m73(percent, None if eta is None else round(eta / 60))

    def _send_m73(self, percent: int, minutes: int | None) -> None:
        self._last_m73 = percent
        line = f"M73 P{percent}" + (f" R{minutes}" if minutes is not None else "")
        with contextlib.suppress(PrinterUnavailable):
            self.printer.send_line(line, None)

    def _finish(self, state: JobState, reason: str | None) -> None:
        self._parked.set()  # a pause() waiting on a job that ended must not hang
        job = self.job
        job.state = state
        job.reason = reason
        job.ended_at = time.time()
        if job._paused_at is not None:
            job.paused_seconds += job.ended_at - job._paused_at
            job._paused_at = None
        self._on_change(job)
