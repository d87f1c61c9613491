"""Unit tests for hydrogen.protocol: the envelope rules, member helpers and encoding."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from hydrogen import protocol
from hydrogen.protocol import (
    MAX_ID_LENGTH,
    MAX_TOPIC_LENGTH,
    MAX_TOPICS_PER_REQUEST,
    ErrorCode,
    ProtocolError,
    Request,
    Role,
    encode,
    error_frame,
    error_from_exception,
    parse,
    reply,
    topic_pattern_problem,
    utc_iso,
)


def parse_error(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(text)
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    return info.value


def request(**body: Any) -> Request:
    body.setdefault("type", "test")
    return Request(type=body["type"], id=body.get("id"), body=body)


# -- parse(): the envelope ------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", "not json", "{'type': 'ping'}", '{"type": "ping",}'])
def test_parse_rejects_text_that_is_not_json(text: str) -> None:
    exc = parse_error(text)
    assert exc.message == "frame is not valid JSON"
    assert "reason" in exc.details
    assert exc.request_id is None


def test_parse_rejects_invalid_utf8_bytes_as_invalid_json() -> None:
    exc = parse_error(b'{"type": "\xff\xfe"}')
    assert exc.message == "frame is not valid JSON"


def test_parse_accepts_utf8_bytes() -> None:
    req = parse('{"type": "ping", "id": "é"}'.encode())
    assert req.type == "ping"
    assert req.id == "é"


@pytest.mark.parametrize(
    ("text", "received"),
    [("[]", "list"), ('[{"type": "ping"}]', "list"), ("42", "int"), ("1.5", "float"),
     ('"ping"', "str"), ("null", "NoneType"), ("true", "bool")],
)  # fmt: skip
def test_parse_rejects_json_that_is_not_an_object(text: str, received: str) -> None:
    exc = parse_error(text)
    assert exc.message == "frame must be a JSON object"
    assert exc.details == {"received": received}


@pytest.mark.parametrize(
    "text",
    ["{}", '{"type": ""}', '{"type": null}', '{"type": 1}', '{"type": ["ping"]}',
     '{"type": {"a": 1}}', '{"type": true}'],
)  # fmt: skip
def test_parse_requires_a_non_empty_string_type(text: str) -> None:
    exc = parse_error(text)
    assert exc.details == {"member": "type"}
    assert exc.request_id is None


@pytest.mark.parametrize("request_id", ["abc", 7, 0, -3, "", 2**53 - 1])
def test_parse_echoes_the_id_in_the_error_when_type_is_bad(request_id: Any) -> None:
    exc = parse_error(json.dumps({"id": request_id, "type": 5}))
    assert exc.details == {"member": "type"}
    assert exc.request_id == request_id
    assert error_from_exception(exc)["id"] == request_id


@pytest.mark.parametrize("request_id", ["abc", "", "x" * MAX_ID_LENGTH, 0, 42, -42, 2**53 - 1])
def test_parse_accepts_string_and_integer_ids(request_id: Any) -> None:
    req = parse(json.dumps({"type": "ping", "id": request_id}))
    assert req.id == request_id
    assert type(req.id) is type(request_id)


def test_parse_without_id_gives_none() -> None:
    req = parse('{"type": "ping"}')
    assert req.id is None
    assert req.type == "ping"


def test_parse_treats_null_id_as_absent() -> None:
    assert parse('{"type": "ping", "id": null}').id is None


@pytest.mark.parametrize(
    "request_id",
    [True, False, 1.5, 1.0, [], [1], {"a": 1}, "x" * (MAX_ID_LENGTH + 1), 2**53 + 1, -(2**53) - 1,
     10**30],
)  # fmt: skip
def test_parse_rejects_bad_ids(request_id: Any) -> None:
    exc = parse_error(json.dumps({"type": "ping", "id": request_id}))
    assert exc.details == {"member": "id"}
    # A bad id is never echoed (it could be huge or not JSON-safe).
    assert exc.request_id is None
    assert "id" not in error_from_exception(exc)


def test_parse_rejects_bad_id_before_looking_at_type() -> None:
    exc = parse_error('{"id": true}')
    assert exc.details == {"member": "id"}


def test_parse_keeps_the_body_and_truncates_a_long_type() -> None:
    req = parse(json.dumps({"type": "t" * 500, "x": [1, 2]}))
    assert req.type == "t" * 64
    assert req.body["x"] == [1, 2]
    assert req.get("x") == [1, 2]
    assert req.get("missing", "d") == "d"


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_parse_deep_nesting_is_invalid_message_not_a_crash(opener: str) -> None:
    text = opener * 200_000
    exc = parse_error(text)
    assert exc.message == "frame is not valid JSON"
    assert len(exc.details["reason"]) <= 200


def _nested(depth: int, opener: str = "[", leaf: str = "", closer: str = "]") -> str:
    """A ping whose payload nests so that the whole frame is ``depth`` levels deep."""
    inner = depth - 1
    return '{"type":"ping","id":1,"payload":' + opener * inner + leaf + closer * inner + "}"


@pytest.mark.parametrize(("opener", "leaf", "closer"), [("[", "", "]"), ('{"a":', "0", "}")])
def test_parse_accepts_nesting_up_to_the_limit(opener: str, leaf: str, closer: str) -> None:
    req = parse(_nested(protocol.MAX_NESTING_DEPTH, opener, leaf, closer))
    assert req.type == "ping"
    assert req.id == 1


@pytest.mark.parametrize("depth", [protocol.MAX_NESTING_DEPTH + 1, 100, 970, 5000])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_parse_refuses_nesting_past_the_limit(depth: int, as_bytes: bool) -> None:
    text = _nested(depth)
    exc = parse_error(text.encode() if as_bytes else text)
    assert exc.code is ErrorCode.INVALID_MESSAGE
    assert exc.details == {"reason": f"nested deeper than {protocol.MAX_NESTING_DEPTH} levels"}
    assert exc.request_id is None  # nothing is read from a refused frame


def test_parse_nesting_counts_depth_not_brackets() -> None:
    # Many brackets side by side, and brackets inside strings, are not nesting.
    wide = {"type": "ping", "payload": [[] for _ in range(1000)], "s": "[[[[" * 100}
    assert parse(json.dumps(wide)).body["payload"] == [[]] * 1000


def test_parse_huge_integer_literal_is_invalid_message() -> None:
    # Python refuses to parse int literals past 4300 digits: still a clean error.
    exc = parse_error('{"type": "ping", "n": ' + "9" * 5000 + "}")
    assert exc.message == "frame is not valid JSON"


# -- Request.topics() -------------------------------------------------------------------


def test_topics_accepts_a_single_string() -> None:
    assert request(topics="status").topics() == ["status"]


def test_topics_accepts_a_list_and_keeps_order() -> None:
    topics = ["status", "printer/+/state", "printer/#", "#", "+", "a.b-c_d/E9"]
    assert request(topics=topics).topics() == topics


def test_topics_deduplicates_keeping_first_occurrence() -> None:
    assert request(topics=["b", "a", "b", "a", "c"]).topics() == ["b", "a", "c"]


@pytest.mark.parametrize("value", [None, [], "", 5, {"status": 1}, True])
def test_topics_must_be_a_non_empty_list(value: Any) -> None:
    req = request(id="r1") if value is None else request(id="r1", topics=value)
    with pytest.raises(ProtocolError) as info:
        req.topics()
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert info.value.request_id == "r1"
    assert info.value.details.get("member") == "topics"


def test_topics_limits_the_count() -> None:
    ok = [f"t{i}" for i in range(MAX_TOPICS_PER_REQUEST)]
    assert request(topics=ok).topics() == ok
    with pytest.raises(ProtocolError) as info:
        request(id=9, topics=[*ok, "one-more"]).topics()
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert info.value.request_id == 9
    assert str(MAX_TOPICS_PER_REQUEST) in info.value.message


@pytest.mark.parametrize(
    "topic",
    ["", "a//b", "/a", "a/", "a b", "a/b#", "a#", "a+", "+a/b", "printer/#/state", "#/a",
     "ä", "a\nb", "a/*", 5, None, ["a"], "x" * (MAX_TOPIC_LENGTH + 1)],
)  # fmt: skip
def test_topics_rejects_invalid_patterns(topic: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        request(topics=["ok", topic]).topics()
    exc = info.value
    assert exc.code is ErrorCode.INVALID_MESSAGE
    assert exc.details["member"] == "topics"
    assert len(exc.details["topic"]) <= MAX_TOPIC_LENGTH
    assert topic_pattern_problem(topic) is not None


def test_topic_pattern_problem_explains_hash_position() -> None:
    problem = topic_pattern_problem("a/#/b")
    assert problem is not None
    assert "'#' must be the last segment" in problem


@pytest.mark.parametrize("topic", ["#", "+", "a/#", "+/+/#", "x" * MAX_TOPIC_LENGTH, "A-Z.0_9"])
def test_topic_pattern_problem_accepts_valid_patterns(topic: str) -> None:
    assert topic_pattern_problem(topic) is None


# -- require_str / optional_number -----------------------------------------------------


def test_require_str_returns_the_value() -> None:
    assert request(name="abc").require_str("name") == "abc"


@pytest.mark.parametrize("value", [None, "", 5, True, ["a"], {"a": "b"}])
def test_require_str_rejects_missing_empty_and_non_strings(value: Any) -> None:
    req = request(id=3) if value is None else request(id=3, name=value)
    with pytest.raises(ProtocolError) as info:
        req.require_str("name")
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert info.value.details == {"member": "name"}
    assert info.value.request_id == 3
    assert "'name'" in info.value.message


def test_require_str_enforces_max_length() -> None:
    assert request(name="abcd").require_str("name", max_length=4) == "abcd"
    with pytest.raises(ProtocolError) as info:
        request(name="abcde").require_str("name", max_length=4)
    assert "longer than 4" in info.value.message


def test_optional_number_absent_is_none() -> None:
    assert request().optional_number("n") is None
    assert request(n=None).optional_number("n") is None


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (5, 5.0), (-2.5, -2.5), (1e300, 1e300)])
def test_optional_number_returns_a_float(value: Any, expected: float) -> None:
    result = request(n=value).optional_number("n")
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    "value", [True, False, "5", [1], {"a": 1}, float("nan"), float("inf"), float("-inf")]
)
def test_optional_number_rejects_non_numbers(value: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        request(id="q", n=value).optional_number("n")
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert info.value.details == {"member": "n"}
    assert info.value.request_id == "q"


def test_nan_and_inf_from_the_wire_are_invalid_frames() -> None:
    # Not JSON, and an echo of them (ping payload) could not be encoded back.
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        with pytest.raises(ProtocolError) as info:
            parse('{"type": "t", "id": 1, "n": ' + literal + "}")
        assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_optional_number_rejects_an_integer_too_large_for_a_float() -> None:
    # A 400-digit integer literal is valid JSON; it must be an invalid_message,
    # not an OverflowError that the dispatcher turns into a server_error.
    req = parse('{"type": "t", "n": 1' + "0" * 400 + "}")
    with pytest.raises(ProtocolError) as info:
        req.optional_number("n")
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_optional_number_range_is_inclusive() -> None:
    assert request(n=0).optional_number("n", minimum=0, maximum=10) == 0.0
    assert request(n=10).optional_number("n", minimum=0, maximum=10) == 10.0
    for bad in (-0.001, 10.001):
        with pytest.raises(ProtocolError) as info:
            request(n=bad).optional_number("n", minimum=0, maximum=10)
        assert "between 0 and 10" in info.value.message


def test_optional_number_one_sided_ranges() -> None:
    assert request(n=-1e9).optional_number("n", maximum=5) == -1e9
    assert request(n=1e9).optional_number("n", minimum=5) == 1e9
    with pytest.raises(ProtocolError):
        request(n=6).optional_number("n", maximum=5)
    with pytest.raises(ProtocolError):
        request(n=4).optional_number("n", minimum=5)


# -- encode / frames -------------------------------------------------------------------


def test_encode_is_compact_and_keeps_unicode() -> None:
    text = encode({"type": "x", "a": [1, 2], "b": {"c": "é"}})
    assert text == '{"type":"x","a":[1,2],"b":{"c":"é"}}'
    assert json.loads(text) == {"type": "x", "a": [1, 2], "b": {"c": "é"}}


def test_encode_escapes_a_lone_surrogate_so_the_text_is_valid_utf8() -> None:
    # JSON lets a client send "\\ud800"; echoing it must not give a str that
    # cannot be UTF-8 encoded (the WebSocket writer would die on send_str).
    req = parse('{"type": "ping", "id": "a\\ud800", "payload": "\\udfff é"}')
    assert req.id == "a\ud800"
    text = encode(reply(req, "pong", payload=req.get("payload")))
    text.encode("utf-8")  # must not raise
    assert json.loads(text) == {"type": "pong", "payload": "\udfff é", "id": "a\ud800"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_encode_rejects_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        encode({"type": "x", "v": value})


def test_error_frame_shape_without_id() -> None:
    frame = error_frame(ErrorCode.NOT_FOUND, "nope")
    assert frame == {
        "type": "error",
        "error": {"code": "not_found", "message": "nope", "details": {}},
    }
    assert type(frame["error"]["code"]) is str
    assert encode(frame) == (
        '{"type":"error","error":{"code":"not_found","message":"nope","details":{}}}'
    )


def test_error_frame_shape_with_id_and_details() -> None:
    details = {"member": "x"}
    frame = error_frame(ErrorCode.FORBIDDEN, "no", details, request_id=0)
    assert frame == {
        "type": "error",
        "error": {"code": "forbidden", "message": "no", "details": {"member": "x"}},
        "id": 0,
    }
    assert frame["error"]["details"] is not details  # copied, not aliased


def test_error_from_exception_round_trips() -> None:
    exc = ProtocolError(ErrorCode.CONFLICT, "busy", {"a": 1}, request_id="r")
    assert str(exc) == "busy"
    assert error_from_exception(exc) == {
        "type": "error",
        "error": {"code": "conflict", "message": "busy", "details": {"a": 1}},
        "id": "r",
    }


def test_error_codes_are_the_contract_strings() -> None:
    assert {c.value for c in ErrorCode} >= {
        "auth_failed", "invalid_message", "server_error", "unknown_type", "forbidden",
        "too_large", "rate_limited", "not_found", "conflict", "unavailable",
        "too_many_connections", "timeout", "printer_error",
    }  # fmt: skip


def test_reply_echoes_the_id() -> None:
    assert reply(request(id="abc"), "pong", x=1) == {"type": "pong", "x": 1, "id": "abc"}
    assert reply(request(id=0), "pong") == {"type": "pong", "id": 0}


def test_reply_without_id_has_no_id_member() -> None:
    assert reply(request(), "pong", x=1) == {"type": "pong", "x": 1}


_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_700_000_000.0, "2023-11-14T22:13:20.000Z"),
        (1_700_000_000.123456, "2023-11-14T22:13:20.123Z"),
        (1_700_000_000.9999, "2023-11-14T22:13:20.999Z"),
    ],
)
def test_utc_iso_format(timestamp: float, expected: str) -> None:
    text = utc_iso(timestamp)
    assert text == expected
    assert _ISO.match(text)


def test_utc_iso_round_trips_to_the_millisecond() -> None:
    text = utc_iso(1_234_567_890.5)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    assert parsed == datetime.fromtimestamp(1_234_567_890.5, tz=UTC)


# -- Role -------------------------------------------------------------------------------


def test_role_ordering_is_the_permission_check() -> None:
    assert Role.CONTROL > Role.MONITOR
    assert Role.CONTROL >= Role.CONTROL
    assert not Role.MONITOR >= Role.CONTROL
    assert sorted([Role.CONTROL, Role.MONITOR]) == [Role.MONITOR, Role.CONTROL]


@pytest.mark.parametrize(
    ("text", "role"),
    [("monitor", Role.MONITOR), ("control", Role.CONTROL), ("CONTROL", Role.CONTROL),
     ("Monitor", Role.MONITOR)],
)  # fmt: skip
def test_role_parse(text: str, role: Role) -> None:
    assert Role.parse(text) is role
    assert role.label == role.name.lower()


@pytest.mark.parametrize("text", ["", "root", "monitor ", "1", "label", "parse"])
def test_role_parse_rejects_unknown(text: str) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        Role.parse(text)


def test_close_codes_and_subprotocol() -> None:
    assert protocol.SUBPROTOCOL == "hydrogen-protocol"
    assert protocol.CloseCode.SLOW_CONSUMER == 4001
    assert protocol.CloseCode.MESSAGE_TOO_BIG == 1009
