"""The audit trail in SQLite, kept off the event loop.

Built like the job history (:mod:`hydrogen.jobs.store`): one worker thread owns the
connection and runs every statement in call order
(:class:`hydrogen.sqlite_worker.SqliteWorker`); WAL with ``synchronous=NORMAL``,
so a committed record survives the gateway being killed. Its own file
(``audit.sqlite3`` in the state dir, mode 0600), so the audit trail's retention
and schema never touch the job history.

Appending never waits: :meth:`AuditStore.append` numbers the record on the event
loop (the live ``audit`` topic shows the same id the query returns) and queues it.
The queue goes to the worker as one transaction at most every
:data:`FLUSH_SECONDS`, before every read (a query sees every record appended before
it) and at close: one thread hand-over and one commit per record made each audited
printer command cost about twice what it did without the trail (bench/serial.py).
A gateway killed outright loses at most the last :data:`FLUSH_SECONDS` of records.
Retention is by count (``audit.max_rows``): each batch deletes what fell out of the
window, a range delete on the primary key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from hydrogen import sqlite_wal
from hydrogen.audit.record import AuditRecord
from hydrogen.sqlite_worker import SqliteWorker

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: The longest a record waits on the event loop before it is written.
FLUSH_SECONDS = 0.05

_SCHEMA = """
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    time      REAL NOT NULL,
    identity  TEXT NOT NULL,
    role      TEXT NOT NULL,
    transport TEXT NOT NULL,
    action    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    remote    TEXT,
    printer   TEXT,
    target    TEXT
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_identity ON audit (identity, id);
CREATE INDEX audit_by_printer ON audit (printer, id);
"""
#: (the id column is the record's seq)
_COLUMNS = "time, identity, role, transport, action, outcome, remote, printer, target, id"


def _record(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(*row)


def _row(r: AuditRecord) -> tuple[Any, ...]:
    """The values of :data:`_COLUMNS`, in order. By hand: ``dataclasses.astuple`` deep-copies
    (16 µs a record, in the worker thread with the GIL held, so a batch of a busy 50 ms
    held up the event loop for a millisecond or two)."""
    return (r.time, r.identity, r.role, r.transport, r.action, r.outcome, r.remote, r.printer,
            r.target, r.seq)  # fmt: skip


class AuditStore(SqliteWorker):
    """Create, ``await open()``, :meth:`append` and :meth:`query`, ``await close()``."""

    def __init__(self, path: Path, *, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be positive, not {max_rows!r}")
        super().__init__(path, what="the audit store", thread_name="hydrogen-audit-db")
        self.max_rows = max_rows
        self._next_id = 1
        #: Inserts handed to the worker and not yet done (close waits for them).
        self._writes: set[concurrent.futures.Future[None]] = set()
        #: Numbered records not yet handed to the worker, and the timer that will.
        self._queued: list[AuditRecord] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self.write_errors = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        self._next_id = await self._open_worker(self._open_sync) + 1

    def _open_sync(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        conn = sqlite_wal.connect(self.path)
        self._conn = conn
        if fresh:
            os.chmod(self.path, 0o600)  # who did what is for the administrator only
        with sqlite_wal.transaction(conn, "IMMEDIATE"):
            version = sqlite_wal.schema_version(conn, self.path, "audit", SCHEMA_VERSION)
            if version == 0:
                sqlite_wal.create(conn, _SCHEMA, SCHEMA_VERSION)
            last = conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]
            self._prune(last)  # a lowered audit.max_rows applies at once
        return int(last)

    async def close(self) -> None:
        """Write what is queued, wait for it, then close. Safe to call twice."""
        if self.is_open:
            self.flush()  # the worker runs in order: the close waits for the batch
        await super().close()

    # -- writes ------------------------------------------------------------------------------
    def append(self, record: AuditRecord) -> AuditRecord:
        """Number ``record`` and queue its insert; never waits. Returns the numbered record."""
        if not self.is_open:
            raise RuntimeError("the audit store is not open")
        r = record  # numbered by the constructor: dataclasses.replace costs twice as much
        numbered = AuditRecord(r.time, r.identity, r.role, r.transport, r.action, r.outcome,
                               r.remote, r.printer, r.target, self._next_id)  # fmt: skip
        self._next_id += 1
        self._queued.append(numbered)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        return numbered

    def flush(self) -> None:
        """Hand every queued record to the worker, as one transaction."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._queued or self._executor is None:
            return
        batch, self._queued = self._queued, []
        future = self._executor.submit(self._append_sync, batch)
        self._writes.add(future)
        future.add_done_callback(self._write_done)

    def _write_done(self, future: concurrent.futures.Future[None]) -> None:
        self._writes.discard(future)
        if future.cancelled() or future.exception() is None:
            return
        self.write_errors += 1
        if self.write_errors == 1 or self.write_errors % 1000 == 0:
            log.error("audit: could not store a record", exc_info=future.exception())

    def _append_sync(self, batch: list[AuditRecord]) -> None:
        with sqlite_wal.transaction(self._db()) as db:
            db.executemany(
                f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * 10)})",
                [_row(record) for record in batch],
            )
            self._prune(batch[-1].seq or 0)

    def _prune(self, last_id: int) -> None:
        self._db().execute("DELETE FROM audit WHERE id <= ?", (last_id - self.max_rows,))

    # -- reads -------------------------------------------------------------------------------
    async def query(
        self,
        *,
        since: float | None = None,
        identity: str | None = None,
        printer: str | None = None,
        before: int | None = None,
        scope: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records newest first. ``scope``: only records about these printers (or none)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("time >= ?")
            params.append(float(since))
        if identity is not None:
            where.append("identity = ?")
            params.append(identity)
        if printer is not None:
            where.append("printer = ?")
            params.append(printer)
        if before is not None:
            where.append("id < ?")
            params.append(int(before))
        if scope is not None:
            names = sorted(scope)
            marks = ", ".join("?" * len(names))
            where.append(f"(printer IS NULL OR printer IN ({marks}))")
            params.extend(names)
        sql = f"SELECT {_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        self.flush()  # the worker runs in order: the select sees every record before it
        return await self._run(self._select, sql, params)

    def _select(self, sql: str, params: list[Any]) -> list[AuditRecord]:
        return [_record(row) for row in self._db().execute(sql, params)]

    async def count(self) -> int:
        self.flush()
        return await self._run(self._count_sync)

    def _count_sync(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM audit").fetchone()[0])
