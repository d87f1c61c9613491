"""Job history in SQLite, kept off the event loop.

Why it is built this way:

* ``sqlite3`` calls block (disk I/O, fsync at checkpoints, waiting on a lock
  held by a backup tool), and the event loop also drives the printers' serial
  links. So every statement runs in one dedicated worker thread
  (:class:`hydrogen.sqlite_worker.SqliteWorker`). One thread, because a sqlite3
  connection belongs to the thread that made it; it also serialises the writes
  in call order.
* Every write commits at once, in WAL mode with ``synchronous=NORMAL``: a
  committed record survives the gateway being killed (``kill -9``, OOM
  killer) at any point. Only a power loss or kernel crash can roll back the
  last few commits, which is the documented price of ``NORMAL`` and buys
  commits without an fsync each.
* A job that was ``running`` when the gateway stopped can never be resumed
  (the printer may have lost its state), so :meth:`JobStore.open` marks such
  records ``failed`` and returns them so they can be reported. The periodic
  :meth:`JobStore.progress` write is what lets such a record tell how far the
  job got and roughly when it stopped.
* The schema carries a version (``PRAGMA user_version``); a database written by
  a newer gateway is refused instead of being misread, an older one is migrated
  in the same transaction that opens it (1 -> 2: who started and who cancelled).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydrogen import sqlite_wal
from hydrogen.sqlite_worker import SqliteWorker

__all__ = [
    "CRASH_REASON",
    "FINAL_OUTCOMES",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "JobRecord",
    "JobStore",
]

OUTCOMES = frozenset({"running", "completed", "failed", "cancelled"})
FINAL_OUTCOMES = OUTCOMES - {"running"}
CRASH_REASON = "gateway stopped while the job was running"
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    printer          TEXT NOT NULL,
    file             TEXT NOT NULL,
    started_at       REAL NOT NULL,
    ended_at         REAL,
    outcome          TEXT NOT NULL
                     CHECK (outcome IN ('running', 'completed', 'failed', 'cancelled')),
    reason           TEXT,
    lines_sent       INTEGER NOT NULL DEFAULT 0,
    total_lines      INTEGER NOT NULL DEFAULT 0,
    duration_seconds REAL,
    -- last sign of life (start or progress): the end time of a job cut short by a crash
    updated_at       REAL NOT NULL,
    started_by       TEXT,
    cancelled_by     TEXT
);
CREATE INDEX jobs_by_start ON jobs (started_at);
CREATE INDEX jobs_by_printer ON jobs (printer, started_at);
"""

#: Each upgrade from version N - 1 to N, applied in order to an older database.
_MIGRATIONS = {
    2: (
        "ALTER TABLE jobs ADD COLUMN started_by TEXT",
        "ALTER TABLE jobs ADD COLUMN cancelled_by TEXT",
    ),
}

_COLUMNS = (
    "id, printer, file, started_at, ended_at, outcome, reason, lines_sent, total_lines,"
    " duration_seconds, started_by, cancelled_by"
)


@dataclass(frozen=True)
class JobRecord:
    """One job in the history: what ran where, how it ended and how far it got."""

    id: str
    printer: str
    file: str
    started_at: float
    ended_at: float | None = None
    #: "running" | "completed" | "failed" | "cancelled"
    outcome: str = "running"
    reason: str | None = None
    lines_sent: int = 0
    total_lines: int = 0
    duration_seconds: float | None = None
    #: identity names (never a key); None when not known or not cancelled
    started_by: str | None = None
    cancelled_by: str | None = None

    def __post_init__(self) -> None:
        _check_outcome(self.outcome, OUTCOMES)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_outcome(outcome: object, allowed: frozenset[str]) -> None:
    if outcome not in allowed:
        raise ValueError(f"outcome must be one of {sorted(allowed)}, not {outcome!r}")


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return value


def _record(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(*row)


class JobStore(SqliteWorker):
    """The job history database. Create, ``await open()``, use, ``await close()``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, what="the job store", thread_name="hydrogen-jobs-db")

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> list[JobRecord]:
        """Open (creating if needed) the database; fail jobs a crash left running.

        Returns the records it marked failed, so the caller can report them.
        """
        return await self._open_worker(self._open_sync)

    def _open_sync(self) -> list[JobRecord]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite_wal.connect(self.path)
        self._conn = conn
        with sqlite_wal.transaction(conn, "IMMEDIATE"):
            version = sqlite_wal.schema_version(conn, self.path, "job history", SCHEMA_VERSION)
            if version == 0:
                sqlite_wal.create(conn, _SCHEMA, SCHEMA_VERSION)
            for upgrade in range(version + 1, SCHEMA_VERSION + 1) if version else ():
                for statement in _MIGRATIONS[upgrade]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {upgrade}")
            crashed = [
                _record(row)
                for row in conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE outcome = 'running' ORDER BY started_at"
                )
            ]
            conn.execute(
                "UPDATE jobs SET outcome = 'failed', reason = ?, ended_at = updated_at,"
                " duration_seconds = max(0.0, updated_at - started_at)"
                " WHERE outcome = 'running'",
                (CRASH_REASON,),
            )
            marked = [self._get(record.id) for record in crashed]
        return [record for record in marked if record is not None]

    # -- writes ----------------------------------------------------------------------------
    async def start(self, record: JobRecord) -> None:
        """Record a job that has just started (its outcome must be "running")."""
        if record.outcome != "running":
            raise ValueError(f"a started job's outcome is 'running', not {record.outcome!r}")
        _check_count("lines_sent", record.lines_sent)
        _check_count("total_lines", record.total_lines)
        await self._run(self._start_sync, record)

    def _start_sync(self, record: JobRecord) -> None:
        try:
            self._db().execute(
                "INSERT INTO jobs (id, printer, file, started_at, outcome, lines_sent,"
                " total_lines, updated_at, started_by) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (
                    record.id,
                    record.printer,
                    record.file,
                    record.started_at,
                    record.lines_sent,
                    record.total_lines,
                    max(record.started_at, time.time()),
                    record.started_by,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"job {record.id!r} is already recorded") from exc

    async def finish(
        self,
        job_id: str,
        *,
        outcome: str,
        reason: str | None = None,
        lines_sent: int,
        ended_at: float | None = None,
        cancelled_by: str | None = None,
    ) -> JobRecord:
        """Record how a job ended and return the stored record.

        The first finish wins: finishing a job that is already finished (a
        cancel racing a completion) changes nothing and returns the record as
        it stands, so a job is never counted twice. ``KeyError`` for an
        unknown job; ``ended_at`` defaults to now.
        """
        _check_outcome(outcome, FINAL_OUTCOMES)
        _check_count("lines_sent", lines_sent)
        ended = time.time() if ended_at is None else float(ended_at)
        return await self._run(
            self._finish_sync, job_id, outcome, reason, lines_sent, ended, cancelled_by
        )

    def _finish_sync(
        self,
        job_id: str,
        outcome: str,
        reason: str | None,
        lines_sent: int,
        ended_at: float,
        cancelled_by: str | None,
    ) -> JobRecord:
        with sqlite_wal.transaction(self._db(), "IMMEDIATE") as conn:
            conn.execute(
                "UPDATE jobs SET outcome = ?, reason = ?, lines_sent = ?, ended_at = ?,"
                " duration_seconds = max(0.0, ? - started_at), updated_at = ?, cancelled_by = ?"
                " WHERE id = ? AND outcome = 'running'",
                (outcome, reason, lines_sent, ended_at, ended_at, ended_at, cancelled_by, job_id),
            )
            record = self._get(job_id)
        if record is None:
            raise KeyError(job_id)
        return record

    async def progress(self, job_id: str, lines_sent: int) -> None:
        """Save how far a running job got (cheap; meant to be called every few seconds).

        Ignored for a job that is unknown or already finished: a late periodic
        write must not undo a finish.
        """
        _check_count("lines_sent", lines_sent)
        await self._run(self._progress_sync, job_id, lines_sent, time.time())

    def _progress_sync(self, job_id: str, lines_sent: int, now: float) -> None:
        self._db().execute(
            "UPDATE jobs SET lines_sent = ?, updated_at = max(updated_at, ?)"
            " WHERE id = ? AND outcome = 'running'",
            (lines_sent, now, job_id),
        )

    # -- reads -----------------------------------------------------------------------------
    def _get(self, job_id: str) -> JobRecord | None:
        row = self._db().execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    async def get(self, job_id: str) -> JobRecord | None:
        """One record by id, or None."""
        return await self._run(self._get, job_id)

    async def history(
        self, *, printer: str | None = None, limit: int = 100, before: float | None = None
    ) -> list[JobRecord]:
        """Records newest first (by start time), optionally for one printer.

        Page with ``before``: pass the ``started_at`` of the last record of a
        page to get the next, older page.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        return await self._run(self._history_sync, printer, limit, before)

    def _history_sync(
        self, printer: str | None, limit: int, before: float | None
    ) -> list[JobRecord]:
        where, params = [], []
        if printer is not None:
            where.append("printer = ?")
            params.append(printer)
        if before is not None:
            where.append("started_at < ?")
            params.append(float(before))
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, rowid DESC LIMIT ?"
        params.append(limit)
        return [_record(row) for row in self._db().execute(sql, params)]

    async def counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (printer, outcome), running ones included: feeds hydrogen_jobs_total."""
        return await self._run(self._counts_sync)

    def _counts_sync(self) -> dict[tuple[str, str], int]:
        rows = self._db().execute(
            "SELECT printer, outcome, count(*) FROM jobs GROUP BY printer, outcome"
        )
        return {(printer, outcome): count for printer, outcome, count in rows}
