"""Job history in SQLite: schema, history queries, crash recovery, and staying off the loop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hydrogen.jobs.store import CRASH_REASON, SCHEMA_VERSION, JobRecord, JobStore

ROOT = Path(__file__).resolve().parent.parent


def job(job_id: str, printer: str = "mk3", started_at: float = 1000.0, **kw: object) -> JobRecord:
    return JobRecord(
        id=job_id,
        printer=printer,
        file=f"{job_id}.gcode",
        started_at=started_at,
        total_lines=500,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    s = JobStore(tmp_path / "jobs.sqlite3")
    assert await s.open() == []
    yield s
    await s.close()


# ---------------------------------------------------------------------------------------
# Schema


async def test_schema_is_created_with_a_version(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deeper" / "jobs.sqlite3"
    s = JobStore(path)
    assert await s.open() == []
    await s.close()

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert columns[:10] == [
            "id",
            "printer",
            "file",
            "started_at",
            "ended_at",
            "outcome",
            "reason",
            "lines_sent",
            "total_lines",
            "duration_seconds",
        ]
        with pytest.raises(sqlite3.IntegrityError):  # the CHECK guards raw writes too
            conn.execute(
                "INSERT INTO jobs (id, printer, file, started_at, outcome, updated_at)"
                " VALUES ('x', 'p', 'f', 1, 'exploded', 1)"
            )
    finally:
        conn.close()

    again = JobStore(path)  # reopening an existing database keeps it
    assert await again.open() == []
    assert await again.history() == []
    await again.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    s = JobStore(path)
    with pytest.raises(RuntimeError, match="newer"):
        await s.open()
    with pytest.raises(RuntimeError):
        await s.history()
    await s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


async def test_lifecycle_misuse(tmp_path: Path) -> None:
    s = JobStore(tmp_path / "jobs.sqlite3")
    with pytest.raises(RuntimeError):
        await s.history()
    await s.open()
    with pytest.raises(RuntimeError):
        await s.open()
    await s.close()
    await s.close()  # twice is fine
    with pytest.raises(RuntimeError):
        await s.start(job("late"))


# ---------------------------------------------------------------------------------------
# Writing and reading


async def test_start_finish_and_history(store: JobStore) -> None:
    await store.start(job("a", "mk3", 100.0))
    await store.start(job("b", "ender", 200.0))
    await store.start(job("c", "mk3", 300.0))

    running = await store.history()
    assert [r.id for r in running] == ["c", "b", "a"]  # newest first
    assert all(r.outcome == "running" and r.ended_at is None for r in running)

    done = await store.finish("a", outcome="completed", reason=None, lines_sent=500, ended_at=160.5)
    assert done == JobRecord(
        id="a",
        printer="mk3",
        file="a.gcode",
        started_at=100.0,
        ended_at=160.5,
        outcome="completed",
        reason=None,
        lines_sent=500,
        total_lines=500,
        duration_seconds=60.5,
    )
    cancelled = await store.finish(
        "b", outcome="cancelled", reason="cancelled by ctl", lines_sent=7, ended_at=250.0
    )
    assert (cancelled.outcome, cancelled.reason, cancelled.lines_sent) == (
        "cancelled",
        "cancelled by ctl",
        7,
    )
    assert await store.get("a") == done
    assert await store.get("nope") is None

    history = await store.history()
    assert [(r.id, r.outcome) for r in history] == [
        ("c", "running"),
        ("b", "cancelled"),
        ("a", "completed"),
    ]
    assert [r.id for r in await store.history(printer="mk3")] == ["c", "a"]
    assert await store.history(printer="prusa-xl") == []
    assert [r.id for r in await store.history(limit=1)] == ["c"]


async def test_paging_with_before(store: JobStore) -> None:
    for i in range(7):
        await store.start(job(f"j{i}", "mk3" if i % 2 else "ender", started_at=1000.0 + i))
    pages = []
    before = None
    while page := await store.history(limit=3, before=before):
        pages.append([r.id for r in page])
        before = page[-1].started_at
    assert pages == [["j6", "j5", "j4"], ["j3", "j2", "j1"], ["j0"]]
    mk3 = await store.history(printer="mk3", limit=2, before=1005.0)
    assert [r.id for r in mk3] == ["j3", "j1"]


async def test_same_start_time_keeps_insertion_order(store: JobStore) -> None:
    for name in ("first", "second", "third"):
        await store.start(job(name, started_at=5.0))
    assert [r.id for r in await store.history()] == ["third", "second", "first"]


async def test_finish_defaults_and_first_finish_wins(store: JobStore) -> None:
    now = time.time()
    await store.start(job("a", started_at=now - 10))
    first = await store.finish("a", outcome="failed", reason="printer halted", lines_sent=3)
    assert first.ended_at is not None and first.ended_at >= now
    assert first.duration_seconds is not None and first.duration_seconds >= 10
    # A cancel racing the failure changes nothing: the job is counted once.
    second = await store.finish("a", outcome="cancelled", lines_sent=99, ended_at=now + 100)
    assert second == first
    assert await store.counts() == {("mk3", "failed"): 1}


async def test_clock_going_backwards_gives_zero_duration(store: JobStore) -> None:
    await store.start(job("a", started_at=500.0))
    record = await store.finish("a", outcome="completed", lines_sent=500, ended_at=400.0)
    assert record.duration_seconds == 0.0


async def test_progress(store: JobStore) -> None:
    await store.start(job("a"))
    await store.progress("a", 10)
    await store.progress("a", 250)
    assert (await store.history())[0].lines_sent == 250
    await store.finish("a", outcome="completed", lines_sent=500, ended_at=2000.0)
    await store.progress("a", 260)  # a late periodic write must not undo the finish
    record = (await store.history())[0]
    assert (record.outcome, record.lines_sent) == ("completed", 500)
    await store.progress("unknown", 1)  # ignored, no error


async def test_counts(store: JobStore) -> None:
    assert await store.counts() == {}
    outcomes = ["completed", "completed", "failed", "cancelled", None]
    for i, outcome in enumerate(outcomes):
        await store.start(job(f"m{i}", "mk3", 10.0 + i))
        if outcome:
            await store.finish(f"m{i}", outcome=outcome, lines_sent=1, ended_at=100.0)
    await store.start(job("e0", "ender", 50.0))
    await store.finish("e0", outcome="completed", lines_sent=1, ended_at=60.0)
    assert await store.counts() == {
        ("mk3", "completed"): 2,
        ("mk3", "failed"): 1,
        ("mk3", "cancelled"): 1,
        ("mk3", "running"): 1,
        ("ender", "completed"): 1,
    }


async def test_concurrent_calls_all_land(store: JobStore) -> None:
    await asyncio.gather(*(store.start(job(f"j{i}", started_at=float(i))) for i in range(50)))
    await asyncio.gather(
        *(store.finish(f"j{i}", outcome="completed", lines_sent=i) for i in range(0, 50, 2))
    )
    counts = await store.counts()
    assert counts == {("mk3", "completed"): 25, ("mk3", "running"): 25}
    assert len(await store.history(limit=1000)) == 50


async def test_as_dict(store: JobStore) -> None:
    await store.start(job("a", started_at=1.5))
    record = await store.finish("a", outcome="completed", lines_sent=500, ended_at=3.0)
    assert record.as_dict() == {
        "id": "a",
        "printer": "mk3",
        "file": "a.gcode",
        "started_at": 1.5,
        "ended_at": 3.0,
        "outcome": "completed",
        "reason": None,
        "lines_sent": 500,
        "total_lines": 500,
        "duration_seconds": 1.5,
        "started_by": None,
        "cancelled_by": None,
    }


async def test_who_started_and_who_cancelled_are_kept(store: JobStore) -> None:
    await store.start(dataclasses.replace(job("a"), started_by="alice"))
    await store.finish("a", outcome="cancelled", lines_sent=3, cancelled_by="bob")
    (record,) = await store.history()
    assert (record.started_by, record.cancelled_by) == ("alice", "bob")


async def test_a_version_1_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    """A history written before 'who started / who cancelled' opens with its jobs intact."""
    path = tmp_path / "jobs.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE jobs (id TEXT PRIMARY KEY, printer TEXT NOT NULL, file TEXT NOT NULL,
            started_at REAL NOT NULL, ended_at REAL, outcome TEXT NOT NULL, reason TEXT,
            lines_sent INTEGER NOT NULL DEFAULT 0, total_lines INTEGER NOT NULL DEFAULT 0,
            duration_seconds REAL, updated_at REAL NOT NULL);
        INSERT INTO jobs VALUES ('old', 'mk3', 'a.gcode', 1, 2, 'completed', NULL, 5, 5, 1, 2);
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    s = JobStore(path)
    await s.open()
    (old,) = await s.history()
    assert (old.id, old.outcome, old.started_by, old.cancelled_by) == (
        "old",
        "completed",
        None,
        None,
    )
    await s.start(dataclasses.replace(job("new", started_at=3.0), started_by="carol"))
    assert (await s.get("new")).started_by == "carol"
    await s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()


# ---------------------------------------------------------------------------------------
# Validation


async def test_unknown_outcomes_are_rejected(store: JobStore) -> None:
    with pytest.raises(ValueError):
        job("x", outcome="exploded")
    await store.start(job("a"))
    for outcome in ("exploded", "running", "", "COMPLETED"):
        with pytest.raises(ValueError):
            await store.finish("a", outcome=outcome, lines_sent=0)
    assert (await store.history())[0].outcome == "running"


async def test_bad_arguments(store: JobStore) -> None:
    with pytest.raises(ValueError):
        await store.start(job("done", outcome="completed"))
    with pytest.raises(ValueError):
        await store.start(job("neg", lines_sent=-1))
    await store.start(job("a"))
    with pytest.raises(ValueError, match="already"):
        await store.start(job("a"))
    with pytest.raises(ValueError):
        await store.finish("a", outcome="completed", lines_sent=-5)
    with pytest.raises(ValueError):
        await store.progress("a", -1)
    with pytest.raises(KeyError):
        await store.finish("nope", outcome="completed", lines_sent=0)
    for limit in (0, -1, True, 2.5):
        with pytest.raises(ValueError):
            await store.history(limit=limit)  # type: ignore[arg-type]
    assert [r.id for r in await store.history()] == ["a"]


# ---------------------------------------------------------------------------------------
# Crash recovery


async def test_closed_while_running_is_failed_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    s = JobStore(path)
    await s.open()
    started = time.time() - 30
    await s.start(job("interrupted", started_at=started))
    await s.start(job("ok", "ender", started_at=started))
    await s.finish("ok", outcome="completed", lines_sent=500, ended_at=started + 20)
    await s.progress("interrupted", 42)
    await s.close()

    s = JobStore(path)
    marked = await s.open()
    assert len(marked) == 1
    failed = marked[0]
    assert (failed.id, failed.outcome, failed.reason) == ("interrupted", "failed", CRASH_REASON)
    assert failed.lines_sent == 42
    # It "ended" at its last sign of life (the progress write), not at the restart.
    assert failed.ended_at is not None and started + 29 <= failed.ended_at <= time.time()
    assert failed.duration_seconds == pytest.approx(failed.ended_at - started)
    assert await s.get("interrupted") == failed
    assert (await s.get("ok")).outcome == "completed"  # type: ignore[union-attr]
    assert await s.counts() == {("mk3", "failed"): 1, ("ender", "completed"): 1}
    await s.close()

    s = JobStore(path)
    assert await s.open() == []  # already marked: reported once
    await s.close()


async def test_never_closed_is_failed_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = JobStore(path)
    await first.open()
    await first.start(job("orphan", started_at=10.0))
    # No close: as if the process had vanished. A new store must still recover it.
    second = JobStore(path)
    marked = await second.open()
    assert [(r.id, r.outcome, r.reason) for r in marked] == [("orphan", "failed", CRASH_REASON)]
    assert marked[0].lines_sent == 0
    assert await second.counts() == {("mk3", "failed"): 1}
    await second.close()
    await first.close()


_CRASHER = """
import asyncio, sys, time
from pathlib import Path
from hydrogen.jobs.store import JobRecord, JobStore

async def main() -> None:
    store = JobStore(Path(sys.argv[1]))
    await store.open()
    now = time.time()
    await store.start(JobRecord(id="done", printer="mk3", file="a.gcode",
                                started_at=now - 60, total_lines=100))
    await store.start(JobRecord(id="mid", printer="mk3", file="b.gcode",
                                started_at=now - 5, total_lines=1000))
    await store.finish("done", outcome="completed", reason=None, lines_sent=100, ended_at=now)
    await store.progress("mid", 321)
    print("ready", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line == b"ready\n"
    finally:
        if proc.returncode is None:
            proc.kill()  # SIGKILL: no close(), no atexit, no checkpoint
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    s = JobStore(path)
    marked = await s.open()
    try:
        assert [(r.id, r.outcome, r.reason, r.lines_sent) for r in marked] == [
            ("mid", "failed", CRASH_REASON, 321)
        ]
        done = await s.get("done")
        assert done is not None
        assert (done.outcome, done.lines_sent, done.duration_seconds) == ("completed", 100, 60.0)
        assert await s.counts() == {("mk3", "completed"): 1, ("mk3", "failed"): 1}
    finally:
        await s.close()


# ---------------------------------------------------------------------------------------
# Off the event loop


async def test_all_sql_runs_in_one_worker_thread(store: JobStore) -> None:
    threads: set[tuple[int, str]] = set()

    def trace(_sql: str) -> None:
        current = threading.current_thread()
        threads.add((current.ident or 0, current.name))

    # The seam: install a statement tracer on the connection, from its own thread.
    await store._run(lambda: store._db().set_trace_callback(trace))
    await store.start(job("a"))
    await store.progress("a", 1)
    await store.finish("a", outcome="completed", lines_sent=2)
    await store.history()
    await store.counts()

    assert len(threads) == 1
    ident, name = threads.pop()
    assert ident != threading.get_ident()
    assert name.startswith("hydrogen-jobs-db")


async def test_loop_keeps_running_while_a_write_waits(store: JobStore) -> None:
    await store.start(job("a"))
    # Another process (a backup, the sqlite3 shell) holds the write lock for a while.
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        finish = asyncio.create_task(store.finish("a", outcome="completed", lines_sent=500))
        ticks = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            ticks += 1
        assert not finish.done()  # the write is still waiting for the lock ...
        assert ticks >= 20  # ... and the loop ran all along
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    record = await asyncio.wait_for(finish, timeout=10)
    assert record.outcome == "completed"
