"""sqlite_wal.transaction: the one BEGIN ... COMMIT / ROLLBACK both stores use."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydrogen import sqlite_wal


def test_a_transaction_commits_its_block_or_rolls_it_back(tmp_path: Path) -> None:
    conn = sqlite_wal.connect(tmp_path / "t.sqlite3")
    conn.execute("CREATE TABLE t (x INTEGER)")
    with sqlite_wal.transaction(conn, "IMMEDIATE") as db:
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError), sqlite_wal.transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("the block fails")
    assert not conn.in_transaction
    assert [row[0] for row in conn.execute("SELECT x FROM t")] == [1]
    conn.close()
