"""Jobs for every printer: queues, request handlers, history, notifications.

A queue per printer: a job started while another runs waits its turn, and the
next one starts when the one before it completes or is cancelled (whoever
cancels knows the bed). After a *failure* (a halt, an emergency stop, a lost
link, a bad line) nobody may be watching and the bed may hold a failed print,
so the queue is held until someone starts a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from typing import Any

from hydrogen import protocol
from hydrogen.gateway import Gateway
from hydrogen.host_rpi import watch_undervoltage
from hydrogen.jobs.files import FileError, FileInUse, FileStore
from hydrogen.jobs.job import Job, JobError, JobRunner, JobState, check_file
from hydrogen.jobs.metadata import GcodeMetadata
from hydrogen.jobs.store import JobRecord, JobStore
from hydrogen.printers.manager import PrinterManager
from hydrogen.printers.printer import Printer, PrinterState
from hydrogen.printers.state import UNAVAILABLE

log = logging.getLogger(__name__)

#: Seconds between job frames while printing (state changes go out at once).
PUBLISH_INTERVAL = 0.25
#: Seconds between progress writes to the history database.
PROGRESS_SAVE_INTERVAL = 5.0
MAX_QUEUE = 50


class JobManager:
    def __init__(self, gateway: Gateway, printers: PrinterManager) -> None:
        self.gateway = gateway
        self.printers = printers
        cfg = gateway.config.jobs
        self.config = cfg
        self.files = FileStore(gateway.config.state_dir / "files", max_bytes=cfg.max_upload_bytes)
        self.store = JobStore(gateway.config.state_dir / "jobs.sqlite3")
        self.runners: dict[str, JobRunner] = {}
        self.queues: dict[str, deque[Job]] = {name: deque() for name in printers.printers}
        self.last_jobs: dict[str, Job] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self._published_at: dict[str, float] = {}
        self._published_state: dict[str, JobState] = {}
        self._saved_at: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        for printer in printers.printers.values():
            printer.listeners.append(self)
        gateway.add_service(self)
        gateway.add_status_contributor(self._summary)
        # Under-voltage on a Raspberry Pi host while a job runs: a notification.
        watch_undervoltage(gateway.sampler, gateway.notify, lambda: list(self.runners))

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self.files.prepare()
        crashed = await self.store.open()
        self.counts = Counter(await self.store.counts())
        for record in crashed:
            self.gateway.notify(
                "error",
                "job_failed",
                f"{record.printer}: {record.file} failed: {record.reason}",
                printer=record.printer,
                file=record.file,
                job_id=record.id,
            )
        for name in self.printers.printers:
            await self._restore_last_job(name)
            self._publish(name, force=True)

    async def _restore_last_job(self, printer: str) -> None:
        """After a restart the job panel shows the printer's last job as it ended (a print
        cut short by a crash included), not ``idle``: whoever walks up to the printer
        learns what happened without digging in the history."""
        records = await self.store.history(printer=printer, limit=1)
        if not records or records[0].outcome == "running":
            return
        record = records[0]
        path, size = self.files.directory, 0
        with contextlib.suppress(FileError, OSError):  # the file may be gone since
            path = self.files.path(record.file)
            size = path.lstat().st_size
        job = Job(
            printer=printer,
            file=record.file,
            path=path,
            metadata=GcodeMetadata(gcode_lines=record.total_lines, size_bytes=size),
            id=record.id,
            state=JobState(record.outcome),
            reason=record.reason,
            lines_sent=record.lines_sent,
            started_at=record.started_at,
            ended_at=record.ended_at,
            started_by=record.started_by,
            cancelled_by=record.cancelled_by,
        )
        if record.ended_at is not None and record.duration_seconds is not None:
            job.paused_seconds = max(
                0.0, record.ended_at - record.started_at - record.duration_seconds
            )
        self.last_jobs.setdefault(printer, job)

    async def stop(self) -> None:
        runners = list(self.runners.values())
        for runner in runners:
            if runner.task is not None:
                runner.task.cancel()
        for runner in runners:
            if runner.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await runner.task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.close()

    # -- operations shared by WebSocket and HTTP ------------------------------------------
    def file_in_use(self, name: str) -> FileInUse | None:
        """Why ``name`` must not be replaced or deleted now, and on which printer: a job
        prints it or waits for it (a queued job prints what is on disk when its turn
        comes), or None."""
        for printer, runner in self.runners.items():
            if runner.job.file == name and not runner.job.state.finished:
                return FileInUse(f"{name} is printing on {printer}", printer)
        for printer, queue in self.queues.items():
            if any(job.file == name for job in queue):
                return FileInUse(f"{name} is queued on {printer}", printer)
        return None

    async def start_job(self, printer_name: str, file: str, *, by: str | None = None) -> Job:
        """Start (or queue) ``file`` on the printer; ``by`` names who asked (the history)."""
        printer = self.printers.get(printer_name)
        # The file is held open while its lines are checked, then verified to be still
        # the one under its name (a delete or re-upload meanwhile: 404 or 409); with
        # no await from there to the registration below, file_in_use() then keeps
        # deletes and replacements away until the job ends.
        with await self.files.pin(file) as stored:
            path = self.files.path(stored.name)
            problem = await asyncio.to_thread(check_file, path)
            if problem:
                raise JobError(f"{stored.name} cannot be printed: {problem}")
            self.files.verify(stored)
        job = Job(
            printer=printer.name,
            file=stored.name,
            path=path,
            metadata=stored.metadata,
            started_by=by,
        )
        # From here to the launch nothing awaits: two requests cannot both see an idle printer.
        if printer.name in self.runners:
            queue = self.queues[printer.name]
            if len(queue) >= MAX_QUEUE:
                raise JobError(f"the queue of {printer.name} is full ({MAX_QUEUE} jobs)")
            queue.append(job)
            self._publish(printer.name, force=True)
            return job
        # A printer busy with a long command (a homing, a heat-up the operator sent)
        # takes the job's lines after it: the protocol keeps them in order.
        if not printer.accepts_commands:
            raise JobError(f"cannot start: {printer.unavailable_reason()}")
        self._launch(printer, job)
        return job

    def _launch(self, printer: Printer, job: Job) -> None:
        """Register and start a runner synchronously; the history write runs in its task."""
        runner = JobRunner(job, printer, on_change=self._changed, config=self.config)
        self.runners[printer.name] = runner
        self.last_jobs[printer.name] = job
        printer.telemetry.begin_job()  # the job's filament counts from here
        task = runner.start(prelude=self.store.start(self._record(job, started=time.time())))
        task.add_done_callback(lambda _t, r=runner: self._runner_done(r))
        log.info("job %s: %s started on %s", job.id, job.file, printer.name)

    def _runner_done(self, runner: JobRunner) -> None:
        """Synchronous hand-over: unregister, start the next queued job, then record."""
        job = runner.job
        if self.runners.get(job.printer) is runner:
            del self.runners[job.printer]
            self.printers.printers[job.printer].telemetry.end_job()
        queue = self.queues[job.printer]
        printer = self.printers.printers[job.printer]
        if (
            job.state in (JobState.COMPLETED, JobState.CANCELLED)
            and queue
            and printer.accepts_commands
            and not self.gateway.shutting_down
        ):
            self._launch(printer, queue.popleft())
        self._spawn(self._record_outcome(job))

    def runner(self, printer_name: str) -> JobRunner:
        printer = self.printers.get(printer_name)
        runner = self.runners.get(printer.name)
        if runner is None:
            raise JobError(f"no job is running on {printer.name}")
        return runner

    def cancel(self, printer_name: str, job_id: str | None = None, *, by: str | None = None) -> Job:
        """Cancel the running job, or remove a queued one; ``by`` names who asked."""
        printer = self.printers.get(printer_name)
        queue = self.queues[printer.name]
        if job_id is not None:
            for job in queue:
                if job.id == job_id:
                    queue.remove(job)
                    job.state = JobState.CANCELLED
                    job.reason = "removed from the queue"
                    job.cancelled_by = by
                    self._publish(printer.name, force=True)
                    return job
        runner = self.runner(printer.name)
        if job_id is not None and runner.job.id != job_id:
            raise JobError(f"no job {job_id!r} on {printer.name}")
        if runner.job.cancelled_by is None and not runner.job.state.finished:
            runner.job.cancelled_by = by  # the first to ask (a second cancel is a no-op)
        runner.cancel()
        return runner.job

    # -- events ------------------------------------------------------------------------------
    def _changed(self, job: Job) -> None:
        now = time.time()
        # State changes (resume included) go out at once; progress is throttled.
        state_changed = self._published_state.get(job.printer) is not job.state
        self._published_state[job.printer] = job.state
        self._publish(job.printer, force=state_changed or job.state is not JobState.PRINTING)
        if job.state is JobState.PRINTING and now - self._saved_at.get(job.id, 0) > (
            PROGRESS_SAVE_INTERVAL
        ):
            self._saved_at[job.id] = now
            self._spawn(self.store.progress(job.id, job.lines_sent))

    async def _record_outcome(self, job: Job) -> None:
        self._saved_at.pop(job.id, None)
        outcome = job.state.value if job.state.finished else JobState.FAILED.value
        self.counts[(job.printer, outcome)] += 1
        try:
            await self.store.finish(
                job.id,
                outcome=outcome,
                reason=job.reason,
                lines_sent=job.lines_sent,
                ended_at=job.ended_at or time.time(),
                cancelled_by=job.cancelled_by if outcome == "cancelled" else None,
            )
        except Exception:
            log.exception("job %s: could not record the outcome", job.id)
        level = {"completed": "info", "cancelled": "warning"}.get(outcome, "error")
        text = f"{job.printer}: {job.file} {outcome}"
        if job.reason and outcome == "failed":
            text += f": {job.reason}"
        log.log(logging.INFO if level == "info" else logging.WARNING, "job %s: %s", job.id, text)
        self.gateway.notify(
            level,
            f"job_{outcome}",
            text,
            printer=job.printer,
            file=job.file,
            job_id=job.id,
            reason=job.reason,
        )
        self._publish(job.printer, force=True)

    # -- what the printers tell us (PrinterListener) --------------------------------------
    def on_state(self, printer: Printer, state: PrinterState, reason: str | None) -> None:
        runner = self.runners.get(printer.name)
        if runner is not None and state in UNAVAILABLE:
            runner.fail(f"printer {state.value}" + (f": {reason}" if reason else ""))

    def on_reset(self, printer: Printer, reason: str) -> None:
        runner = self.runners.get(printer.name)
        if runner is not None:
            runner.fail(reason)

    def on_host_action(self, printer: Printer, action: str, argument: str) -> None:
        """``//action:pause|resume|cancel`` from the firmware (its own screen, a runout
        sensor with host handling) acts on the running job as a client request would."""
        runner = self.runners.get(printer.name)
        if runner is not None and action in ("pause", "resume", "cancel"):
            self._spawn(self._host_action(printer, runner, action))

    async def _host_action(self, printer: Printer, runner: JobRunner, action: str) -> None:
        try:
            if action == "pause":
                await runner.pause()
            elif action == "resume":
                await runner.resume()
            else:
                if runner.job.cancelled_by is None:
                    runner.job.cancelled_by = "printer"  # its own screen or a sensor
                runner.cancel()
        except JobError as exc:
            log.info("printer %s asked to %s the job: %s", printer.name, action, exc)
            return
        self.gateway.notify(
            "warning" if action != "resume" else "info",
            f"job_{action}_requested",
            f"{printer.name}: the printer asked to {action} the job ({runner.job.file})",
            printer=printer.name,
            job_id=runner.job.id,
            file=runner.job.file,
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("jobs: background task failed", exc_info=task.exception())

    # -- frames ------------------------------------------------------------------------------
    def topic(self, printer: str) -> str:
        return f"printer/{printer}/job"

    def queue(self, printer: str) -> list[str]:
        return [j.file for j in self.queues.get(printer, ())]

    def job_payload(self, printer: str) -> dict[str, Any]:
        """The printer's current (or last) job as plain data; ``idle`` when it has none."""
        job = self.last_jobs.get(printer)
        if job is None:
            return {
                "printer": printer,
                "state": "idle",
                "job_id": None,
                "file": None,
                "progress": 0.0,
                "queue": self.queue(printer),
            }
        return job.payload(self.queue(printer))

    def job_frame(self, printer: str) -> dict[str, Any]:
        return protocol.push(protocol.Push.JOB, self.topic(printer), self.job_payload(printer))

    def _publish(self, printer: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._published_at.get(printer, 0.0) < PUBLISH_INTERVAL:
            return
        self._published_at[printer] = now
        self.gateway.hub.publish(
            self.topic(printer), self.job_frame(printer), coalesce=True, retain=True
        )

    def _summary(self) -> tuple[str, Any]:
        return "jobs", {name: self.job_payload(name) for name in self.printers.printers}

    def _record(self, job: Job, started: float) -> JobRecord:
        return JobRecord(
            id=job.id,
            printer=job.printer,
            file=job.file,
            started_at=started,
            ended_at=None,
            outcome="running",
            reason=None,
            lines_sent=0,
            total_lines=job.total_lines,
            duration_seconds=None,
            started_by=job.started_by,
        )
