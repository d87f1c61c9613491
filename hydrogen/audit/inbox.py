"""Actions taken outside the gateway (``hydrogen keys ...``) on their way into the trail.

The command line edits the key store while the gateway may be running, in another
process; the audit database is the gateway's (its worker numbers the records), so
the command posts its record here instead: one JSON line in ``audit-inbox.jsonl``
in the state dir, under a lock. The gateway takes the inbox into the trail when it
starts and before every read of the trail, keeping each record's own time. Only
names are written, as in the trail itself; a line that does not parse is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hydrogen.audit.record import OK, AuditRecord, clip

INBOX_FILE = "audit-inbox.jsonl"
#: An inbox larger than this is not read (only the gateway's user can write it).
MAX_INBOX_BYTES = 1024 * 1024


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[IO[str]]:
    path = Path(state_dir) / INBOX_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle


def post(state_dir: Path, record: AuditRecord) -> None:
    """Append ``record`` for the gateway to take in (blocking file I/O, for the CLI)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    with _locked(state_dir) as handle:
        handle.write(json.dumps(record.as_dict(), separators=(",", ":")) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def take(state_dir: Path) -> list[AuditRecord]:
    """Every record posted since the last take, oldest first; the inbox is emptied."""
    if not (Path(state_dir) / INBOX_FILE).exists():
        return []
    with _locked(state_dir) as handle:
        handle.seek(0)
        text = handle.read(MAX_INBOX_BYTES + 1)
        handle.truncate(0)
    if len(text) > MAX_INBOX_BYTES:
        return []
    return [record for line in text.splitlines() if (record := _parse(line)) is not None]


def _parse(line: str) -> AuditRecord | None:
    try:
        data: Any = json.loads(line)
        return AuditRecord(
            time=float(data["time"]),
            identity=str(clip(data.get("identity")) or ""),
            role=str(clip(data.get("role")) or ""),
            transport=str(clip(data.get("transport")) or "cli"),
            action=str(clip(data["action"])),
            outcome=str(clip(data.get("outcome")) or OK),
            remote=clip(data.get("remote")),
            printer=clip(data.get("printer")),
            target=clip(data.get("target")),
        )
    except (ValueError, KeyError, TypeError):
        return None
