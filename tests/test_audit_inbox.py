"""The command line's inbox into the audit trail (hydrogen/audit/inbox.py)."""

from __future__ import annotations

from pathlib import Path

from hydrogen.audit import inbox
from hydrogen.audit.record import AuditRecord


def _record(action: str, at: float) -> AuditRecord:
    return AuditRecord(at, "cli:root", "admin", "cli", action, target="night-shift")


def test_posted_records_are_taken_once_in_order_with_their_time(tmp_path: Path) -> None:
    inbox.post(tmp_path, _record("key_add", 100.0))
    inbox.post(tmp_path, _record("key_revoke", 200.0))
    assert (tmp_path / inbox.INBOX_FILE).stat().st_mode & 0o777 == 0o600
    taken = inbox.take(tmp_path)
    assert [(r.action, r.time, r.target) for r in taken] == [
        ("key_add", 100.0, "night-shift"),
        ("key_revoke", 200.0, "night-shift"),
    ]
    assert inbox.take(tmp_path) == []


def test_a_damaged_or_hostile_inbox_loses_only_its_bad_lines(tmp_path: Path) -> None:
    inbox.post(tmp_path, _record("key_add", 1.0))
    with open(tmp_path / inbox.INBOX_FILE, "a", encoding="utf-8") as handle:
        handle.write('not json\n{"action": "x"}\n{"time": "soon", "action": "y"}\n[1]\n')
        handle.write('{"time": 2, "action": "key_rotate", "target": "' + "x" * 5000 + '"}\n')
    inbox.post(tmp_path, _record("key_revoke", 3.0))
    taken = inbox.take(tmp_path)
    assert [r.action for r in taken] == ["key_add", "key_rotate", "key_revoke"]
    assert len(taken[1].target or "") <= 200  # clipped as every record is


def test_no_inbox_is_no_records(tmp_path: Path) -> None:
    assert inbox.take(tmp_path) == []
    assert not (tmp_path / inbox.INBOX_FILE).exists()
