"""The worker thread a SQLite store (the job history, the audit trail) runs its statements in.

Why: ``sqlite3`` calls block (disk I/O, fsync at checkpoints, waiting on a lock held
by a backup tool), and the event loop also drives the printers' serial links. So each
store has one dedicated worker thread that owns its connection (a connection belongs
to the thread that made it) and runs every statement in the order it was handed over;
callers on the event loop hand work over with :meth:`SqliteWorker._run` (or submit to
``_executor`` themselves to not wait). This is the part that is the same for every
store: start the thread, open in it (and clean up when opening fails), close once.
How the file is opened is :mod:`hydrogen.sqlite_wal`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


class SqliteWorker:
    """A store's path, its one worker thread and the connection that thread owns.

    A subclass's ``open`` calls :meth:`_open_worker` with its own opening function (run in
    the worker, it sets ``self._conn``); ``close`` is shared. ``what`` names the store
    in errors ("the job store is not open"), ``thread_name`` its worker thread.
    """

    def __init__(self, path: Path, *, what: str, thread_name: str) -> None:
        self.path = Path(path)
        self._what = what
        self._thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._executor is not None and not self._closed

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in the store's worker thread and wait for it."""
        if not self.is_open:
            raise RuntimeError(f"{self._what} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _db(self) -> sqlite3.Connection:
        """The connection (in the worker thread only)."""
        if self._conn is None:
            raise RuntimeError(f"{self._what} is not open")
        return self._conn

    async def _open_worker(self, open_sync: Callable[[], _T]) -> _T:
        """Start the worker and run ``open_sync`` in it. Once only: if it fails, the
        connection it may have made is closed, the worker stopped and the store closed."""
        if self._executor is not None or self._closed:
            raise RuntimeError(f"{self._what} can be opened once")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        try:
            return await self._run(open_sync)
        except BaseException:
            self._executor.submit(self._close_sync)
            self._executor.shutdown(wait=False)
            self._closed = True
            raise

    async def close(self) -> None:
        """Close the database and stop the worker thread. Safe to call twice."""
        if self._closed or self._executor is None:
            self._closed = True
            return
        try:
            await self._run(self._close_sync)
        finally:
            self._closed = True
            # The worker is idle now: this does not wait for anything.
            self._executor.shutdown(wait=False)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
