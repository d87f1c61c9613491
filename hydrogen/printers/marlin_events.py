"""What `hydrogen.printers.marlin.MarlinProtocol` tells its I/O layer: one frozen
dataclass per event, and `Event`, their union (the printer handles it exhaustively).

They live apart from the protocol so that reading what can happen does not mean
reading how it is worked out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from hydrogen.printers.temperature import HeaterReading

ErrorKind = Literal["thermal", "halted", "unknown_command", "checksum", "line_number", "generic"]


@dataclass(frozen=True, slots=True)
class LineSent:
    """A line written to the port (the serial terminal shows both directions).
    `number` is None only for the emergency M112; `resend` marks retransmissions."""

    text: str
    number: int | None
    raw: bytes
    resend: bool = False


@dataclass(frozen=True, slots=True)
class LineReceived:
    """Every non-empty line from the firmware, before any interpretation."""

    text: str


@dataclass(frozen=True, slots=True)
class CommandAcknowledged:
    """The ok for a line queued with `send`. `response` holds what the firmware
    printed while it was the oldest line in flight (M115, M503, M114 output; M105's
    temperatures), minus protocol chatter (busy, resend, line errors, host actions,
    temperature auto-reports), capped at `MAX_RESPONSE_LINES`."""

    tag: object
    line: str
    response: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TemperatureReport:
    """Heater readings keyed as documented in `hydrogen.printers.temperature`."""

    heaters: Mapping[str, HeaterReading]
    raw: str


@dataclass(frozen=True, slots=True)
class FirmwareReset:
    """The firmware printed ``start``: it rebooted and forgot everything. Queued and
    in-flight lines were dropped (`lost_tags`: their non-None tags, to fail), a
    failed or halted state is cleared and the handshake (``N0 M110 N0``, M115) has
    been queued again, so do not start another one. `mid_session` is True if the
    previous handshake had completed; False is the normal reset that opening the
    port causes on most boards."""

    lost_tags: tuple[object, ...]
    mid_session: bool


@dataclass(frozen=True, slots=True)
class FirmwareInfo:
    """Parsed M115 reply. Emitted when the handshake's M115 is acknowledged (with an
    empty name if the firmware printed nothing usable) and for a user M115."""

    name: str
    fields: Mapping[str, str]
    capabilities: Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class Busy:
    """Keep-alive: the firmware is working on (or waiting inside) a command."""

    reason: str


@dataclass(frozen=True, slots=True)
class FirmwareError:
    """One firmware-reported problem, possibly joined from several lines ("\\n").
    A fatal one (thermal, halted) puts the protocol in the halted state: nothing more
    is written, and since the firmware acknowledges nothing more the caller should
    ``cancel_pending(include_in_flight=True)``."""

    message: str
    kind: ErrorKind
    fatal: bool


@dataclass(frozen=True, slots=True)
class ActionCommand:
    """``//action:<action> <argument>`` host action (pause, resume, cancel, ...)."""

    action: str
    argument: str


@dataclass(frozen=True, slots=True)
class Resending:
    """A genuine resend request is being honoured (stale repeats are not reported)."""

    from_line: int
    attempt: int


@dataclass(frozen=True, slots=True)
class LinkStalled:
    """The oldest line's ok is overdue; a probe is about to be sent."""

    reason: str
    line_number: int | None


@dataclass(frozen=True, slots=True)
class LinkRecovered:
    """The firmware answered again after a stall. `oks_lost`: lines whose ``ok`` never
    came and that the answer proved executed; `probes`: probes sent; `seconds`: from
    noticing the stall to the answer."""

    oks_lost: int
    probes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ProbeSent:
    """The stall probe went out, past the window."""

    line: str
    number: int


@dataclass(frozen=True, slots=True)
class LinkFailed:
    """The protocol gave up (probe unanswered, resend loop, unrecoverable resend).
    Queued and in-flight lines were dropped (`lost_tags`); nothing but an emergency
    stop is written until `begin_handshake` or a firmware ``start``."""

    reason: str
    lost_tags: tuple[object, ...]


Event = (
    LineSent
    | LineReceived
    | CommandAcknowledged
    | TemperatureReport
    | FirmwareReset
    | FirmwareInfo
    | Busy
    | FirmwareError
    | ActionCommand
    | Resending
    | LinkStalled
    | LinkRecovered
    | ProbeSent
    | LinkFailed
)
