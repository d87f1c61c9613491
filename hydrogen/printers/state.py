"""What a printer is in, the named sets of those states the rest of the code asks
about, what can go wrong with a command, and the link's counters.

Apart from :mod:`hydrogen.printers.printer` so that the job layer, the metrics and
the tests can ask "can it print now?" with one name instead of a tuple of states.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Final


class PrinterState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    READY = "ready"
    BUSY = "busy"
    ERROR = "error"


#: The link is up and the firmware takes lines: commands and jobs may be sent.
OPERATIONAL: Final = frozenset({PrinterState.READY, PrinterState.BUSY})
#: Nothing can be sent (no link, a handshake under way, or a halted firmware): a
#: running job fails.
UNAVAILABLE: Final = frozenset(PrinterState) - OPERATIONAL
#: A session got past its handshake (a halted firmware is still on the link), so a
#: ``start`` seen now is a reset mid-session.
HANDSHAKEN: Final = OPERATIONAL | {PrinterState.ERROR}


class PrinterUnavailable(Exception):
    """The printer cannot take commands now (state says why)."""


class CommandFailed(Exception):
    """A command was sent but the link or firmware failed before its ``ok``."""


@dataclass
class LinkStats:
    lines_sent: int = 0
    lines_received: int = 0
    resends: int = 0
    reconnects: int = 0
    #: stalls the firmware answered again after (lost oks, lost probe answers)
    recoveries: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    connected_since: float | None = None
