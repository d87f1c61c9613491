"""Unit tests for hydrogen.dispatch and the Gateway's core handlers, with no network."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from hydrogen import __version__
from hydrogen.api import Call, Definition, Param
from hydrogen.config import load_config
from hydrogen.dispatch import MAX_PENDING_PER_SESSION, Dispatcher, Session
from hydrogen.gateway import Gateway
from hydrogen.hub import Hub
from hydrogen.identity import Identity
from hydrogen.protocol import ErrorCode, ProtocolError, Role


def drain(session: Session) -> list[dict[str, Any]]:
    return [json.loads(text) for text in session.subscriber.take(10_000)]


def one(session: Session) -> dict[str, Any]:
    out = drain(session)
    assert len(out) == 1, out
    return out[0]


def make_session(hub: Hub, role: Role = Role.CONTROL, name: str = "s1") -> Session:
    return Session(id=name, identity=Identity(role), subscriber=hub.attach(name))


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def dispatcher() -> Dispatcher:
    d = Dispatcher()

    async def echo(call: Call) -> dict[str, Any]:
        return {"body": dict(call.members)}

    async def move(call: Call) -> dict[str, Any]:
        calls.append(call.name)
        return {}

    calls: list[str] = []
    d.api.define(Definition("echo", echo, reply="echoed"))
    d.api.define(Definition("move", move, role=Role.CONTROL, reply="moved"))
    d.calls = calls  # type: ignore[attr-defined]
    return d


def error_of(frame: dict[str, Any]) -> dict[str, Any]:
    assert frame["type"] == "error", frame
    assert set(frame["error"]) == {"code", "message", "details"}
    return frame["error"]


# -- Dispatcher -----------------------------------------------------------------------------


async def test_handler_reply_is_queued_with_the_id(dispatcher: Dispatcher, hub: Hub) -> None:
    session = make_session(hub)
    await dispatcher.handle_text(session, '{"type": "echo", "id": 5, "x": 1}')
    assert one(session) == {"type": "echoed", "body": {"type": "echo", "id": 5, "x": 1}, "id": 5}
    assert dispatcher.stats.total_requests == 1
    assert dispatcher.stats.requests_by_type == {"echo": 1}
    assert dispatcher.stats.errors_by_code == {}


async def test_handler_returning_none_sends_nothing(hub: Hub) -> None:
    d = Dispatcher()

    async def quiet(call: Call) -> None:
        return None

    d.api.define(Definition("quiet", quiet))
    session = make_session(hub)
    await d.handle_text(session, '{"type": "quiet"}')
    assert drain(session) == []


async def test_unknown_type_is_an_error_with_the_id(dispatcher: Dispatcher, hub: Hub) -> None:
    session = make_session(hub)
    await dispatcher.handle_text(session, '{"type": "nope", "id": "a1"}')
    frame = one(session)
    assert frame["id"] == "a1"
    error = error_of(frame)
    assert error["code"] == "unknown_type"
    assert error["details"]["type"] == "nope"
    assert error["details"]["known"] == ["echo", "move"]
    assert dispatcher.stats.requests_by_type == {"unknown": 1}
    assert dispatcher.stats.errors_by_code == {"unknown_type": 1}


async def test_monitor_is_forbidden_a_control_handler(dispatcher: Dispatcher, hub: Hub) -> None:
    session = make_session(hub, Role.MONITOR)
    await dispatcher.handle_text(session, '{"type": "move", "id": 9}')
    frame = one(session)
    assert frame["id"] == 9
    error = error_of(frame)
    assert error["code"] == "forbidden"
    assert error["details"] == {"required_role": "control", "role": "monitor"}
    assert dispatcher.calls == []  # type: ignore[attr-defined]
    assert dispatcher.stats.errors_by_code == {"forbidden": 1}
    assert dispatcher.stats.requests_by_type == {"move": 1}


async def test_control_may_call_control_and_monitor_handlers(
    dispatcher: Dispatcher, hub: Hub
) -> None:
    session = make_session(hub, Role.CONTROL)
    await dispatcher.handle_text(session, '{"type": "move"}')
    await dispatcher.handle_text(session, '{"type": "echo"}')
    assert [f["type"] for f in drain(session)] == ["moved", "echoed"]
    assert dispatcher.calls == ["move"]  # type: ignore[attr-defined]


async def test_protocol_error_from_a_handler_gets_the_request_id(hub: Hub) -> None:
    d = Dispatcher()

    async def picky(call: Call) -> None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such printer", {"printer": "x"})

    d.api.define(Definition("picky", picky))
    session = make_session(hub)
    await d.handle_text(session, '{"type": "picky", "id": "p"}')
    assert one(session) == {
        "type": "error",
        "error": {"code": "not_found", "message": "no such printer", "details": {"printer": "x"}},
        "id": "p",
    }
    assert d.stats.errors_by_code == {"not_found": 1}


async def test_protocol_error_keeps_an_explicit_request_id(hub: Hub) -> None:
    d = Dispatcher()

    async def explicit(call: Call) -> None:
        raise ProtocolError(ErrorCode.CONFLICT, "busy", request_id="other")

    d.api.define(Definition("explicit", explicit))
    session = make_session(hub)
    await d.handle_text(session, '{"type": "explicit", "id": "mine"}')
    assert one(session)["id"] == "other"


async def test_request_helper_errors_become_invalid_message(hub: Hub) -> None:
    d = Dispatcher()

    async def needs_name(call: Call) -> dict[str, Any]:
        return {"name": call["name"]}

    d.api.define(Definition("named", needs_name, params=(Param("name", str, required=True),)))
    session = make_session(hub)
    await d.handle_text(session, '{"type": "named", "id": 1}')
    frame = one(session)
    assert frame["id"] == 1
    assert error_of(frame)["code"] == "invalid_message"


async def test_generic_exception_is_a_logged_server_error(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    d = Dispatcher()

    async def broken(call: Call) -> None:
        raise RuntimeError("secret internals")

    d.api.define(Definition("broken", broken))
    session = make_session(hub)
    with caplog.at_level(logging.ERROR, logger="hydrogen.dispatch"):
        await d.handle_text(session, '{"type": "broken", "id": 3}')
    frame = one(session)
    assert frame["id"] == 3
    error = error_of(frame)
    assert error["code"] == "server_error"
    assert error["details"] == {"type": "broken", "incident": error["details"]["incident"]}
    assert re.fullmatch(r"[0-9a-f]{12}", error["details"]["incident"])
    assert "secret internals" not in json.dumps(frame)  # internals are logged, not sent
    records = [r for r in caplog.records if r.name == "hydrogen.dispatch"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert "broken" in records[0].getMessage()
    assert f"incident {error['details']['incident']}" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)
    assert d.stats.errors_by_code == {"server_error": 1}


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


async def _recurse(n: int) -> None:
    await _recurse(n + 1)


@pytest.mark.parametrize(
    ("name", "handler", "message"),
    [
        ("recursing", lambda c: _recurse(0), "the server failed to handle this request"),
        ("not_async", lambda c: None, "the server failed to handle this request"),
        ("a_set", lambda c: _returns({"v": {1}}), "the reply could not be encoded"),
        ("nan", lambda c: _returns({"v": float("nan")}), "the reply could not be encoded"),
        ("deep", lambda c: _returns({"v": _deep(5000)}), "the reply could not be encoded"),
    ],
)
async def test_any_failure_in_a_handler_or_its_reply_is_one_server_error_with_an_incident(
    hub: Hub, caplog: pytest.LogCaptureFixture, name: str, handler: Any, message: str
) -> None:
    d = Dispatcher()
    d.api.define(Definition(name, handler, reply="x"))
    session = make_session(hub)
    with caplog.at_level(logging.ERROR, logger="hydrogen.dispatch"):
        await d.handle_text(session, json.dumps({"type": name, "id": "r1"}))
    frame = one(session)
    assert frame["id"] == "r1"
    error = error_of(frame)
    assert error["code"] == "server_error"
    assert error["message"] == message
    incident = error["details"]["incident"]
    assert error["details"] == {"type": name, "incident": incident}
    [record] = [r for r in caplog.records if r.name == "hydrogen.dispatch"]
    assert f"incident {incident}" in record.getMessage()
    assert record.exc_info is not None
    # The same session goes on being served.
    d.api.define(Definition("fine", lambda c: _returns({}), reply="ok"))
    await d.handle_text(session, '{"type": "fine", "id": 2}')
    assert one(session) == {"type": "ok", "id": 2}


async def _returns(value: Any) -> Any:
    return value


async def test_a_bug_before_the_handler_is_a_server_error_without_an_id(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    d = Dispatcher()

    def broken_features(role: Role | None = None) -> list[str]:
        raise RuntimeError("bug in the unknown_type path")

    d.features = broken_features  # type: ignore[method-assign]
    session = make_session(hub)
    with caplog.at_level(logging.ERROR, logger="hydrogen.dispatch"):
        await d.handle_text(session, '{"type": "nope", "id": 1}')
    error = error_of(frame := one(session))
    assert "id" not in frame
    assert error["code"] == "server_error"
    assert set(error["details"]) == {"incident"}
    assert f"incident {error['details']['incident']}" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    "text", ["not json", b"\xff", "[1]", '{"id": 1}', '{"type": "echo", "id": true}']
)
async def test_invalid_frames_are_counted_as_invalid(
    dispatcher: Dispatcher, hub: Hub, text: str | bytes
) -> None:
    session = make_session(hub)
    await dispatcher.handle_text(session, text)
    assert error_of(one(session))["code"] == "invalid_message"
    assert dispatcher.stats.total_requests == 1
    assert dispatcher.stats.requests_by_type == {"invalid": 1}
    assert dispatcher.stats.errors_by_code == {"invalid_message": 1}


async def test_invalid_type_error_echoes_the_id(dispatcher: Dispatcher, hub: Hub) -> None:
    session = make_session(hub)
    await dispatcher.handle_text(session, '{"id": "x7", "type": 4}')
    frame = one(session)
    assert frame["id"] == "x7"
    assert error_of(frame)["code"] == "invalid_message"


async def test_counters_accumulate(dispatcher: Dispatcher, hub: Hub) -> None:
    control = make_session(hub, Role.CONTROL, "c")
    monitor = make_session(hub, Role.MONITOR, "m")
    for text in ('{"type": "echo"}', '{"type": "echo"}', "x", '{"type": "zz"}'):
        await dispatcher.handle_text(control, text)
    await dispatcher.handle_text(monitor, '{"type": "move"}')
    await dispatcher.handle_text(monitor, "{")
    stats = dispatcher.stats
    assert stats.total_requests == 6
    assert stats.requests_by_type == {"echo": 2, "invalid": 2, "unknown": 1, "move": 1}
    assert stats.errors_by_code == {"invalid_message": 2, "unknown_type": 1, "forbidden": 1}
    dispatcher.count_error(ErrorCode.TOO_LARGE)
    dispatcher.count_error("auth_failed")
    assert stats.errors_by_code["too_large"] == 1
    assert stats.errors_by_code["auth_failed"] == 1


async def test_background_handler_does_not_block_the_next_frame(hub: Hub) -> None:
    d = Dispatcher()
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(call: Call) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {}

    async def fast(call: Call) -> dict[str, Any]:
        return {}

    d.api.define(Definition("slow", slow, background=True, reply="slow_done"))
    d.api.define(Definition("fast", fast, reply="fast_done"))
    session = make_session(hub)
    async with asyncio.timeout(2):
        await d.handle_text(session, '{"type": "slow", "id": 1}')  # returns at once
        assert len(session.tasks) == 1
        await started.wait()
        await d.handle_text(session, '{"type": "fast", "id": 2}')
        assert drain(session) == [{"type": "fast_done", "id": 2}]
        release.set()
        await asyncio.gather(*session.tasks)
    assert drain(session) == [{"type": "slow_done", "id": 1}]
    await asyncio.sleep(0)  # done callbacks run
    assert session.tasks == set()


async def test_background_handler_errors_are_sent(hub: Hub) -> None:
    d = Dispatcher()

    async def failing(call: Call) -> None:
        raise ProtocolError(ErrorCode.TIMEOUT, "printer did not answer")

    d.api.define(Definition("failing", failing, background=True))
    session = make_session(hub)
    await d.handle_text(session, '{"type": "failing", "id": 4}')
    async with asyncio.timeout(2):
        await asyncio.gather(*session.tasks)
    frame = one(session)
    assert frame["id"] == 4
    assert error_of(frame)["code"] == "timeout"


async def test_pending_bound_gives_rate_limited_and_cancel_tasks(hub: Hub) -> None:
    d = Dispatcher()
    cancelled: list[int] = []

    async def hang(call: Call) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(call.request_id)  # type: ignore[arg-type]
            raise

    d.api.define(Definition("hang", hang, background=True))
    session = make_session(hub)
    for n in range(MAX_PENDING_PER_SESSION):
        await d.handle_text(session, json.dumps({"type": "hang", "id": n}))
    assert len(session.tasks) == MAX_PENDING_PER_SESSION
    await asyncio.sleep(0)  # let them all start
    await d.handle_text(session, '{"type": "hang", "id": "over"}')
    frame = one(session)
    assert frame["id"] == "over"
    error = error_of(frame)
    assert error["code"] == "rate_limited"
    assert error["details"]["pending"] == MAX_PENDING_PER_SESSION
    assert error["details"]["retry_after"] > 0
    assert len(session.tasks) == MAX_PENDING_PER_SESSION

    tasks = set(session.tasks)
    session.cancel_tasks()
    async with asyncio.timeout(2):
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert sorted(cancelled) == list(range(MAX_PENDING_PER_SESSION))
    assert session.tasks == set()
    assert drain(session) == []  # a cancelled request gets no reply


async def test_pending_bound_is_per_session(hub: Hub) -> None:
    d = Dispatcher()

    async def hang(call: Call) -> None:
        await asyncio.Event().wait()

    d.api.define(Definition("hang", hang, background=True))
    a, b = make_session(hub, name="a"), make_session(hub, name="b")
    for _ in range(MAX_PENDING_PER_SESSION):
        await d.handle_text(a, '{"type": "hang"}')
    await d.handle_text(b, '{"type": "hang"}')
    assert len(b.tasks) == 1
    assert drain(b) == []
    for session in (a, b):
        session.cancel_tasks()
        await asyncio.gather(*session.tasks, return_exceptions=True)


def test_duplicate_register_raises(dispatcher: Dispatcher) -> None:
    async def other(call: Call) -> None:
        return None

    with pytest.raises(ValueError, match="'echo' registered twice"):
        dispatcher.api.define(Definition("echo", other))


def test_features_filters_by_role(dispatcher: Dispatcher) -> None:
    assert dispatcher.features() == ["echo", "move"]
    assert dispatcher.features(Role.CONTROL) == ["echo", "move"]
    assert dispatcher.features(Role.MONITOR) == ["echo"]


def test_session_send_pushes_an_encoded_frame(hub: Hub) -> None:
    session = make_session(hub)
    session.send({"type": "x", "n": 1})
    assert session.subscriber.take() == ['{"type":"x","n":1}']


# -- Gateway core handlers ------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return Gateway(load_config(None, environ={}, overrides={"state_dir": str(tmp_path)}))


def gateway_session(gateway: Gateway, role: Role = Role.MONITOR) -> Session:
    return Session(id="g1", identity=Identity(role), subscriber=gateway.hub.attach("g1"))


async def test_gateway_registers_core_handlers_for_monitors(gateway: Gateway) -> None:
    assert {"ping", "status", "subscribe", "unsubscribe"} <= set(
        gateway.dispatcher.features(Role.MONITOR)
    )


async def test_ping_echoes_payload_timestamp_and_id(gateway: Gateway) -> None:
    session = gateway_session(gateway)
    text = json.dumps({"type": "ping", "id": "p1", "payload": {"a": [1]}, "timestamp": 12.5})
    await gateway.dispatcher.handle_text(session, text)
    frame = one(session)
    assert frame["type"] == "pong"
    assert frame["id"] == "p1"
    assert frame["payload"] == {"a": [1]}
    assert frame["timestamp"] == 12.5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["server_time"])


async def test_ping_echoing_a_lone_surrogate_is_sendable(gateway: Gateway) -> None:
    session = gateway_session(gateway)
    await gateway.dispatcher.handle_text(session, '{"type": "ping", "id": "\\ud83d"}')
    (text,) = session.subscriber.take()
    text.encode("utf-8")  # what the WebSocket writer does; must not raise
    assert json.loads(text)["id"] == "\ud83d"


async def test_ping_without_extras(gateway: Gateway) -> None:
    session = gateway_session(gateway)
    await gateway.dispatcher.handle_text(session, '{"type": "ping"}')
    frame = one(session)
    assert set(frame) == {"type", "server_time"}


async def test_subscribe_reply_comes_before_retained_frames(gateway: Gateway) -> None:
    gateway.hub.publish("printer/a/state", {"type": "printer_state", "p": "a"}, retain=True)
    gateway.hub.publish("printer/b/state", {"type": "printer_state", "p": "b"}, retain=True)
    session = gateway_session(gateway)
    await gateway.dispatcher.handle_text(
        session, '{"type": "subscribe", "id": 1, "topics": ["printer/a/state", "status"]}'
    )
    out = drain(session)
    assert out[0] == {
        "type": "subscribed",
        "id": 1,
        "topics": ["printer/a/state", "status"],
        "subscriptions": ["printer/a/state", "status"],
    }
    assert out[1:] == [{"type": "printer_state", "p": "a"}]

    await gateway.dispatcher.handle_text(
        session, '{"type": "subscribe", "id": 2, "topics": "printer/+/state"}'
    )
    out = drain(session)
    assert out[0] == {
        "type": "subscribed",
        "id": 2,
        "topics": ["printer/+/state"],
        "subscriptions": ["printer/+/state", "printer/a/state", "status"],
    }
    assert sorted(f["p"] for f in out[1:]) == ["a", "b"]


async def test_subscribe_then_publish_reaches_the_session(gateway: Gateway) -> None:
    session = gateway_session(gateway)
    await gateway.dispatcher.handle_text(session, '{"type": "subscribe", "topics": ["status"]}')
    drain(session)
    await gateway.sampler.sample()
    gateway.publish_status()
    frame = one(session)
    assert frame["type"] == "status"
    assert frame["topic"] == "status"


async def test_subscribe_with_bad_topics_is_invalid_and_subscribes_nothing(
    gateway: Gateway,
) -> None:
    session = gateway_session(gateway)
    await gateway.dispatcher.handle_text(
        session, '{"type": "subscribe", "id": 3, "topics": ["status", "a/#/b"]}'
    )
    frame = one(session)
    assert frame["id"] == 3
    assert error_of(frame)["code"] == "invalid_message"
    assert session.subscriber.patterns == set()


async def test_unsubscribe(gateway: Gateway) -> None:
    session = gateway_session(gateway)
    await gateway.dispatcher.handle_text(
        session, '{"type": "subscribe", "topics": ["status", "notifications"]}'
    )
    drain(session)
    await gateway.dispatcher.handle_text(
        session, '{"type": "unsubscribe", "id": "u", "topics": ["status", "never"]}'
    )
    assert one(session) == {
        "type": "unsubscribed",
        "id": "u",
        "topics": ["status", "never"],
        "subscriptions": ["notifications"],
    }
    assert session.subscriber.patterns == {"notifications"}
    gateway.publish_status()
    assert drain(session) == []


async def test_status_request_has_the_legacy_members(gateway: Gateway) -> None:
    await gateway.sampler.sample()
    gateway.connections.active = 2
    gateway.connections.total = 7
    session = gateway_session(gateway)
    await gateway.dispatcher.handle_text(session, '{"type": "status", "id": 11}')
    frame = one(session)
    assert frame["type"] == "status"
    assert frame["id"] == 11
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["server_start_time"])
    assert frame["server_version"] == __version__
    assert frame["active_connections"] == 2
    assert frame["total_connections"] == 7
    assert frame["total_requests"] == 1  # this request
    assert set(frame["system"]) >= {"sysname", "nodename", "release", "version", "machine"}
    assert all(isinstance(v, str) for v in frame["system"].values())
    status = frame["status"]
    assert status["running"] is True
    assert status["shutting_down"] is False
    for key in ("totalThreads", "totalVirtualMemoryBytes", "totalResidentMemoryBytes"):
        assert isinstance(status[key], int)
        assert status[key] >= 0
    assert status["totalThreads"] >= 1
    assert isinstance(frame["host"], dict)


async def test_status_frame_before_any_sample_still_has_the_members(gateway: Gateway) -> None:
    frame = gateway.status_frame()
    assert frame["system"] == {}
    assert frame["status"] == {"running": True, "shutting_down": False}
    assert "id" not in frame


async def test_status_contributors_add_members(gateway: Gateway) -> None:
    gateway.add_status_contributor(lambda: ("printers", {"count": 0}))
    assert gateway.status_frame()["printers"] == {"count": 0}


async def test_begin_shutdown_publishes_a_last_status(gateway: Gateway) -> None:
    session = gateway_session(gateway)
    gateway.hub.subscribe(session.subscriber, ["status"])
    gateway.begin_shutdown()
    gateway.begin_shutdown()  # idempotent
    frame = one(session)
    assert frame["status"]["running"] is False
    assert frame["status"]["shutting_down"] is True


async def test_welcome_frame_lists_features_for_the_role(gateway: Gateway) -> None:
    async def control_only(call: Call) -> None:
        return None

    gateway.api.define(Definition("control_only", control_only, role=Role.CONTROL))
    monitor = gateway_session(gateway, Role.MONITOR)
    welcome = gateway.welcome_frame(monitor)
    assert welcome["role"] == "monitor"
    assert "control_only" not in welcome["features"]
    assert "ping" in welcome["features"]
    control = Session(id="g2", identity=Identity(Role.CONTROL), subscriber=gateway.hub.attach("g2"))
    assert "control_only" in gateway.welcome_frame(control)["features"]
    assert welcome["limits"]["queue_limit"] == gateway.config.limits.queue_limit
