"""What the gateway's SQLite files (the job history, the audit trail) open the same way.

Each store runs its statements in one worker thread; this is the part of opening that
is not about its own tables: WAL with ``synchronous=NORMAL`` (a committed row survives
the gateway being killed, and readers never block the writer), a busy timeout, no
implicit transactions (:func:`transaction` is the explicit one), and a schema version
that a newer gateway may have raised.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000


def connect(path: Path) -> sqlite3.Connection:
    """A WAL connection; ``isolation_level=None``: each statement or explicit
    ``BEGIN ... COMMIT`` is the unit that reaches the disk."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise RuntimeError(f"{path}: could not switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def schema_version(conn: sqlite3.Connection, path: Path, what: str, supported: int) -> int:
    """The file's schema version; refuses one newer than this gateway understands."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > supported:
        raise RuntimeError(
            f"{path}: {what} schema {version} is newer than this gateway"
            f" understands ({supported}); refusing to touch it"
        )
    return version


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "") -> Iterator[sqlite3.Connection]:
    """``BEGIN [mode]`` ... ``COMMIT``, or ``ROLLBACK`` when the block (or the commit)
    raises. ``mode="IMMEDIATE"`` takes the write lock at once: a read in the block
    then sees what the write will change, with no other writer in between."""
    conn.execute(f"BEGIN {mode}".rstrip())
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def create(conn: sqlite3.Connection, schema: str, version: int) -> None:
    """Create the tables of a fresh file, statement by statement (``executescript``
    would commit in the middle of the caller's transaction)."""
    for statement in schema.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
