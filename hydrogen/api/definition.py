"""What a request is, independent of how it arrives. Pure: no I/O, no aiohttp."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, ProtocolError, RequestId, Role

Payload = dict[str, Any]
_MISSING = object()
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class Param:
    """One member of a request, validated the same way whichever transport carried it.

    ``kind`` is ``str``, ``int``, ``float``, ``bool`` or ``object`` (passed through).
    Text from a URL query arrives as strings; :meth:`validate` with ``from_text``
    reads numbers and booleans out of it, so ``?limit=5`` and ``{"limit": 5}`` are
    one request.
    """

    name: str
    kind: type = str
    required: bool = False
    max_length: int = 1024
    minimum: float | None = None
    maximum: float | None = None
    #: Out-of-range numbers are brought into range instead of refused (list limits).
    clamp: bool = False
    default: Any = None
    doc: str = ""

    def validate(self, value: Any, *, from_text: bool = False) -> Any:
        if value is _MISSING or value is None:
            if self.required:
                raise self._invalid(self._must())
            return self.default
        if from_text and isinstance(value, str):
            value = self._from_text(value)
        if self.kind is str:
            if not isinstance(value, str) or (self.required and not value):
                raise self._invalid(self._must())
            if len(value) > self.max_length:
                raise self._invalid(f"'{self.name}' is longer than {self.max_length} characters")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise self._invalid(f"'{self.name}' must be true or false")
            return value
        if self.kind in (int, float):
            return self._number(value)
        return value

    def _must(self) -> str:
        return {
            str: f"'{self.name}' must be a non-empty string",
            bool: f"'{self.name}' must be true or false",
        }.get(self.kind, f"'{self.name}' must be a number")

    def _from_text(self, text: str) -> Any:
        if self.kind in (int, float):
            try:
                return float(text) if self.kind is float else int(text)
            except ValueError:
                return text
        if self.kind is bool and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        return text

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._invalid(f"'{self.name}' must be a number")
        try:
            number = float(value)  # a huge JSON integer literal overflows here
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self._invalid(f"'{self.name}' must be a number")
        low, high = self.minimum, self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            if not self.clamp:
                raise self._invalid(f"'{self.name}' must be between {low} and {high}")
            number = max(number, low) if low is not None else number
            number = min(number, high) if high is not None else number
        return int(number) if self.kind is int else number

    def _invalid(self, message: str) -> ProtocolError:
        return ProtocolError(ErrorCode.INVALID_MESSAGE, message, {"member": self.name})


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """Where a definition is reachable over HTTP.

    Path parameters (``{printer}``) fill the request's members of the same name.
    Several definitions may share one method and path when each names an
    ``action``: the body's ``action`` member picks one (the job control route).
    """

    method: str
    path: str
    status: int = 200
    action: str | None = None


class Connection(Protocol):
    """A connection-bound transport's side of a request (a WebSocket session):
    what ``subscribe`` needs to answer first and then add the topics."""

    id: str

    @property
    def subscriber(self) -> Any: ...

    def send(self, frame: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One validated request on its way into a handler."""

    name: str
    params: Mapping[str, Any]
    identity: Identity
    #: The WebSocket session that sent it; None for every other transport.
    session: Connection | None = None
    request_id: RequestId | None = None
    #: Everything the request carried, declared or not (echoed by ``ping``; a
    #: handler reads its declared members from ``params``).
    members: Mapping[str, Any] = field(default_factory=dict)
    #: How it arrived ("websocket", "http", "octoprint", ...; "" when the caller did
    #: not say) and from which address, for the audit trail.
    transport: str = ""
    remote: str | None = None

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    def get(self, name: str, default: Any = None) -> Any:
        value = self.params.get(name)
        return default if value is None else value


Handler = Callable[[Call], Awaitable[Payload | None]]


@dataclass(frozen=True, slots=True)
class Definition:
    """A request, defined once for every transport that declares it."""

    name: str
    handler: Handler
    role: Role = Role.MONITOR
    params: tuple[Param, ...] = ()
    #: The reply frame's ``type`` over WebSocket (default: the request's name).
    reply: str | None = None
    #: The topic a WebSocket reply carries in its envelope, from the payload
    #: (replies that are a snapshot of a topic's latest frame).
    topic: Callable[[Payload], str] | None = None
    http: tuple[HttpRoute, ...] = ()
    websocket: bool = True
    #: Runs as a task of its own over WebSocket (waits on the printer).
    background: bool = False
    #: The member naming the printer it acts on, checked against the caller's scope.
    printer: str | None = None
    summary: str = ""
    _by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.params})

    @property
    def reply_type(self) -> str:
        return self.reply or self.name

    def validate(self, members: Mapping[str, Any], *, from_text: bool = False) -> dict[str, Any]:
        """The declared members, validated; undeclared ones are ignored (as ever)."""
        return {
            p.name: p.validate(members.get(p.name, _MISSING), from_text=from_text)
            for p in self.params
        }
