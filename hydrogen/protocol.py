"""The hydrogen-protocol wire format: parse, validate and encode frames.

Pure: no I/O, no asyncio, no aiohttp. Every frame in both directions is one
JSON object with a string ``type``; requests may carry a client-chosen ``id``
that the reply echoes. Keeping this layer pure means every rule of the
contract in ``docs/protocol.md`` is a unit test of text in, frame out.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SUBPROTOCOL = "hydrogen-protocol"
PROTOCOL_VERSION = 1

#: Ids are echoed back verbatim; bounding them stops a client from making the
#: server amplify a large payload into every reply.
MAX_ID_LENGTH = 128
MAX_TOPIC_LENGTH = 256
MAX_TOPICS_PER_REQUEST = 64
#: Arrays and objects nested deeper than this (the frame's own object is level 1) make
#: a frame invalid. Code after the parser (handlers, the reply encoder, logging)
#: recurses on nesting, and about a thousand levels hit the interpreter's recursion
#: limit there; no request needs more than a few.
MAX_NESTING_DEPTH = 32

_TOPIC_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ErrorCode(enum.StrEnum):
    """Machine-readable error codes; the strings are part of the contract."""

    AUTH_FAILED = "auth_failed"
    INVALID_MESSAGE = "invalid_message"
    SERVER_ERROR = "server_error"
    UNKNOWN_TYPE = "unknown_type"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TIMEOUT = "timeout"
    PRINTER_ERROR = "printer_error"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455 plus 4000-4999 private use)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    #: The client's outbound backlog passed the hard bound: it stopped reading.
    SLOW_CONSUMER = 4001
    #: The key that authenticated the connection was revoked or rotated.
    CREDENTIALS_REVOKED = 4003
    #: The token that authenticated the connection expired without an ``auth_refresh``.
    TOKEN_EXPIRED = 4004


class Role(enum.IntEnum):
    """Ordered so that ``granted >= required`` is the whole permission check."""

    MONITOR = 1
    #: monitor + printer commands and jobs
    CONTROL = 2
    #: control + key management, the audit trail and announcements
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(
                f"unknown role {value!r} (expected monitor, control or admin)"
            ) from None


class ProtocolError(Exception):
    """A request the server refuses; becomes exactly one ``error`` frame."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        request_id: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id


RequestId = str | int


@dataclass(frozen=True, slots=True)
class Request:
    """A validated client frame: its type, optional id, and the raw members."""

    type: str
    id: RequestId | None
    body: Mapping[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        return self.body.get(name, default)

    def require_str(self, name: str, *, max_length: int = 1024) -> str:
        value = self.body.get(name)
        if not isinstance(value, str) or not value:
            raise self.invalid(f"'{name}' must be a non-empty string", member=name)
        if len(value) > max_length:
            raise self.invalid(f"'{name}' is longer than {max_length} characters", member=name)
        return value

    def optional_number(
        self, name: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(f"'{name}' must be a number", member=name)
        try:
            number = float(value)  # a huge JSON integer literal overflows here
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.invalid(f"'{name}' must be a number", member=name)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.invalid(f"'{name}' must be between {minimum} and {maximum}", member=name)
        return number

    def topics(self) -> list[str]:
        """The ``topics`` member: a non-empty list of valid topic patterns."""
        try:
            return topic_list(self.body.get("topics"))
        except ProtocolError as exc:
            exc.request_id = self.id
            raise

    def invalid(self, message: str, **details: Any) -> ProtocolError:
        return ProtocolError(ErrorCode.INVALID_MESSAGE, message, details, request_id=self.id)


def topic_list(value: Any) -> list[str]:
    """A ``topics`` member (one pattern or a non-empty list of them), validated, duplicates gone."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _invalid("'topics' must be a non-empty list of strings", member="topics")
    if len(value) > MAX_TOPICS_PER_REQUEST:
        raise _invalid(f"at most {MAX_TOPICS_PER_REQUEST} topics per request")
    for topic in value:
        problem = topic_pattern_problem(topic)
        if problem:
            raise _invalid(problem, member="topics", topic=str(topic)[:MAX_TOPIC_LENGTH])
    return list(dict.fromkeys(value))


def _invalid(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, message, details)


def topic_pattern_problem(topic: Any) -> str | None:
    """Why ``topic`` is not a valid subscription pattern, or None.

    Topics are ``/``-separated segments. ``+`` matches exactly one segment and
    ``#`` (last segment only) matches any remainder, as in MQTT, which many
    client authors already know.
    """
    if not isinstance(topic, str) or not topic:
        return "a topic must be a non-empty string"
    if len(topic) > MAX_TOPIC_LENGTH:
        return f"a topic must be at most {MAX_TOPIC_LENGTH} characters"
    segments = topic.split("/")
    for index, segment in enumerate(segments):
        if segment == "#":
            if index != len(segments) - 1:
                return f"'#' must be the last segment of a topic: {topic!r}"
        elif segment == "+":
            continue
        elif not _TOPIC_SEGMENT.match(segment):
            return f"invalid topic segment {segment!r} in {topic!r}"
    return None


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; echoing them would make the reply unencodable.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests arrays and objects more than ``limit`` levels deep.

    Iterative, and it stops at the first container past the limit, so a hostile
    frame costs no more than walking its first ``limit + 1`` levels.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _too_deep() -> ProtocolError:
    return ProtocolError(
        ErrorCode.INVALID_MESSAGE,
        "frame is not valid JSON",
        {"reason": f"nested deeper than {MAX_NESTING_DEPTH} levels"},
    )


def parse(text: str | bytes) -> Request:
    """Validate one client frame's envelope; per-type members are checked by handlers.

    Nesting is bounded here, before any handler sees the frame. The json module's
    scanner guards its own recursion (RecursionError past about a thousand levels),
    so the parsed value is walked afterwards; ``object_hook`` cannot help, as it runs
    bottom-up after the recursion has happened. A frame with fewer brackets than the
    limit cannot nest past it, which spares ordinary frames the walk.
    """
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "frame is not valid JSON", {"reason": str(exc)[:200]}
        ) from None
    if isinstance(data, dict | list):
        if isinstance(text, bytes):
            opened = text.count(b"[") + text.count(b"{")
        else:
            opened = text.count("[") + text.count("{")
        if opened > MAX_NESTING_DEPTH and _nesting_exceeds(data, MAX_NESTING_DEPTH):
            raise _too_deep()
    if not isinstance(data, dict):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "frame must be a JSON object",
            {"received": type(data).__name__},
        )
    request_id = data.get("id")
    if request_id is not None:
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "'id' must be a string or an integer", {"member": "id"}
            )
        if isinstance(request_id, str) and len(request_id) > MAX_ID_LENGTH:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"'id' must be at most {MAX_ID_LENGTH} characters",
                {"member": "id"},
            )
        if isinstance(request_id, int) and abs(request_id) > 2**53 - 1:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "'id' must fit in a JSON-safe integer", {"member": "id"}
            )
    frame_type = data.get("type")
    if not isinstance(frame_type, str) or not frame_type:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "frame must have a string member 'type'",
            {"member": "type"},
            request_id=request_id,
        )
    return Request(type=frame_type[:64], id=request_id, body=data)


def encode(frame: Mapping[str, Any]) -> str:
    """Serialise a frame once; fan-out shares the resulting string."""
    text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from a client's "\ud800" escape
            text = json.dumps(frame, separators=(",", ":"), allow_nan=False)
    return text


def error_frame(
    code: ErrorCode,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    request_id: RequestId | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "error",
        "error": {"code": str(code), "message": message, "details": dict(details or {})},
    }
    if request_id is not None:
        frame["id"] = request_id
    return frame


def error_from_exception(exc: ProtocolError) -> dict[str, Any]:
    return error_frame(exc.code, exc.message, exc.details, request_id=exc.request_id)


def reply(request: Request, frame_type: str, **members: Any) -> dict[str, Any]:
    """A reply frame, echoing the request's id when it had one."""
    frame: dict[str, Any] = {"type": frame_type, **members}
    if request.id is not None:
        frame["id"] = request.id
    return frame


def utc_iso(timestamp: float) -> str:
    """ISO 8601 UTC with millisecond precision and a ``Z`` suffix."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- push frames ---------------------------------------------------------------------------
# Every frame the server sends without being asked is built here, so the wire format
# lives in one module: producers hand over plain payloads, and the envelope (``type``
# and ``topic``) is added in one place.


class Push(enum.StrEnum):
    """The ``type`` of every frame published on a topic; the strings are the contract."""

    STATUS = "status"
    PRINTER_STATE = "printer_state"
    TEMPERATURE = "temperature"
    TEMPERATURE_HISTORY = "temperature_history"
    JOB = "job"
    SERIAL = "serial"
    ACTION = "action"
    PRINTER_ERROR = "printer_error"
    NOTIFICATION = "notification"
    AUDIT = "audit"
    APPKEY_REQUEST = "appkey_request"


def push(frame_type: Push, topic: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A frame published on ``topic``: the envelope first, then the payload's members."""
    return {"type": str(frame_type), "topic": topic, **payload}


def dropped_frame(count: int, total: int) -> dict[str, Any]:
    """Told to a slow client in place of the frames its full queue lost."""
    return {"type": "dropped", "count": count, "total": total}


def welcome_frame(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "welcome", **payload}
