"""One audited action as plain data. Pure: no I/O.

Only names are ever kept: the identity's name (never its key or token), the
printer, the file or key name acted on. A record is built from chosen members
of a request, never from all of them, so a secret a request might carry can
not slip in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Longest text kept in any member (a G-code line, a file name): records stay small.
MAX_TEXT = 200

#: The outcome of an action that was carried out; any other outcome is an error code.
OK = "ok"


def clip(value: Any) -> str | None:
    """A member as bounded text, or None when absent."""
    if value is None or value == "":
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who (``identity``, ``role``), how (``transport``, ``remote``), what (``action``
    on ``printer`` / ``target``) and how it ended (``outcome``: ``ok`` or an error code)."""

    time: float
    identity: str
    role: str
    transport: str
    action: str
    outcome: str = OK
    remote: str | None = None
    printer: str | None = None
    #: what the action named besides the printer: a file, a job id, a key's name, a G-code line
    target: str | None = None
    #: the store's sequence number (None until stored); increases with every record.
    #: (Not ``id``: on the wire that member is a request's id.)
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
