"""The hydrogen-protocol WebSocket endpoint over real loopback sockets."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import websockets

from hydrogen.api import Definition
from hydrogen.protocol import SUBPROTOCOL, Role
from hydrogen.server import wsframing
from hydrogen.server.keys import SOCKETS
from hydrogen.server.ws import hard_frame_limit
from tests.conftest import CONTROL_KEY, MONITOR_KEY, connect, receive_json, receive_until


async def _raw_upgrade(client, path="/", headers=None):
    base = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    return await client.get(path, headers=base | (headers or {}))


# -- handshake -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/ws"])
async def test_good_key_upgrades_and_selects_subprotocol(gateway_client, path):
    _, client = await gateway_client()
    ws = await connect(client, path=path)
    assert ws.protocol == SUBPROTOCOL
    welcome = await receive_json(ws)
    assert welcome["type"] == "welcome"
    assert welcome["role"] == "control"
    assert welcome["subscriptions"] == ["status"]
    assert welcome["protocol_version"] == 1
    assert {"ping", "status", "subscribe", "unsubscribe"} <= set(welcome["features"])
    await ws.close()


async def test_key_in_query_string_is_accepted(gateway_client):
    _, client = await gateway_client()
    ws = await client.ws_connect(f"/?key={MONITOR_KEY}", protocols=[SUBPROTOCOL])
    assert (await receive_json(ws))["role"] == "monitor"
    await ws.close()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "an API key is required"),
        ({"Authorization": "Key wrong-key-123456"}, "invalid API key"),
        # Bearer carries a token (POST /api/auth/token), not a key.
        ({"Authorization": f"Bearer {CONTROL_KEY}"}, "invalid token"),
    ],
)
async def test_missing_or_wrong_key_is_refused_with_401(gateway_client, headers, message):
    gateway, client = await gateway_client()
    response = await _raw_upgrade(client, headers={"Sec-WebSocket-Protocol": SUBPROTOCOL} | headers)
    assert response.status == 401
    body = await response.json()
    assert body["error"]["code"] == "auth_failed"
    assert body["error"]["message"] == message
    assert "Upgrade" not in response.headers
    assert gateway.connections.total == 0


@pytest.mark.parametrize("offered", [None, "chat, superchat"])
async def test_handshake_without_the_subprotocol_is_refused_with_400(gateway_client, offered):
    _, client = await gateway_client()
    headers = {"Authorization": f"Key {CONTROL_KEY}"}
    if offered:
        headers["Sec-WebSocket-Protocol"] = offered
    response = await _raw_upgrade(client, headers=headers)
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "invalid_message"
    assert "hydrogen-protocol" in body["error"]["message"]


async def test_third_party_websockets_client_interoperates(gateway_client):
    """The `websockets` library (not aiohttp) as the client, as a third party would write it."""
    _, client = await gateway_client()
    url = f"ws://{client.host}:{client.port}/"
    async with websockets.connect(
        url, subprotocols=[SUBPROTOCOL], additional_headers={"Authorization": f"Key {CONTROL_KEY}"}
    ) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        assert json.loads(await ws.recv())["type"] == "welcome"
        status = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert status["type"] == "status"


# -- frames --------------------------------------------------------------------------


async def test_status_frames_arrive_without_asking_with_legacy_members(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)  # welcome
    status = await receive_until(ws, lambda f: f["type"] == "status")
    assert isinstance(status["server_start_time"], str) and status["server_start_time"].endswith(
        "Z"
    )
    assert status["active_connections"] == 1
    assert status["total_connections"] >= 1
    assert isinstance(status["total_requests"], int)
    assert set(status["system"]) == {"sysname", "nodename", "release", "version", "machine"}
    assert set(status["status"]) == {
        "running",
        "shutting_down",
        "totalThreads",
        "totalVirtualMemoryBytes",
        "totalResidentMemoryBytes",
    }
    assert status["status"]["running"] is True and status["status"]["shutting_down"] is False
    assert status["status"]["totalResidentMemoryBytes"] > 0
    host = status["host"]
    assert {
        "cpu",
        "memory",
        "swap",
        "filesystems",
        "network",
        "temperatures",
        "uptime_seconds",
    } <= set(host)
    assert any(fs["mountpoint"] == "/" for fs in host["filesystems"])
    # a second frame comes by itself: periodic, not one-shot
    again = await receive_until(ws, lambda f: f["type"] == "status")
    assert again["host"]["sampled_at"] >= status["host"]["sampled_at"]
    await ws.close()


async def test_status_on_request_echoes_id_and_counts_requests(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "status", "id": "s1"})
    first = await receive_until(ws, lambda f: f.get("id") == "s1")
    await ws.send_json({"type": "status", "id": 2})
    second = await receive_until(ws, lambda f: f.get("id") == 2)
    assert first["type"] == second["type"] == "status"
    assert second["total_requests"] == first["total_requests"] + 1
    await ws.close()


async def test_ping_pong_echoes_payload(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "ping", "id": 9, "payload": {"n": 1}, "timestamp": 123.5})
    pong = await receive_until(ws, lambda f: f["type"] == "pong")
    assert pong["id"] == 9 and pong["payload"] == {"n": 1} and pong["timestamp"] == 123.5
    await ws.close()


async def test_wildcard_subscriptions_route_published_frames(gateway_client):
    gateway, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json(
        {"type": "subscribe", "id": 1, "topics": ["printer/+/temperature", "printer/a/#"]}
    )
    sub = await receive_until(ws, lambda f: f.get("id") == 1)
    assert sub["type"] == "subscribed"
    assert sub["subscriptions"] == ["printer/+/temperature", "printer/a/#", "status"]
    await ws.send_json({"type": "unsubscribe", "id": 2, "topics": ["status"]})
    unsub = await receive_until(ws, lambda f: f.get("id") == 2)
    assert unsub["subscriptions"] == ["printer/+/temperature", "printer/a/#"]

    for topic in ["printer/b/temperature", "printer/b/state", "printer/a/job", "other"]:
        gateway.hub.publish(topic, {"type": "event", "topic": topic})
    got = [(await receive_json(ws))["topic"] for _ in range(2)]
    assert got == ["printer/b/temperature", "printer/a/job"]
    # nothing else (no printer/b/state, no other, no more status) is pending
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive_json(timeout=0.4)
    await ws.close()


async def test_an_idle_client_gets_fast_path_frames_of_every_length_intact(
    gateway_client, monkeypatch
):
    """Event frames to an idle client skip its writer (hand-built frames, wsframing);
    a real client reads every length class and multi-byte UTF-8 back unchanged."""
    framed: list[str] = []
    text_frame = wsframing.text_frame

    def counting_text_frame(text: str) -> bytes:
        framed.append(text)
        return text_frame(text)

    monkeypatch.setattr(wsframing, "text_frame", counting_text_frame)
    gateway, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "subscribe", "id": 1, "topics": ["bulk"]})
    await receive_until(ws, lambda f: f.get("id") == 1)
    await ws.send_json({"type": "unsubscribe", "id": 2, "topics": ["status"]})
    await receive_until(ws, lambda f: f.get("id") == 2)

    sent: list[str] = []
    for size in [0, 60, 125, 126, 1000, 65535, 65536, 70000]:
        pad = ("é€😀a" * size)[:size]
        text = json.dumps({"type": "bulk", "pad": pad}, ensure_ascii=False)
        assert gateway.hub.publish_text("bulk", text) == 1
        assert await ws.receive_str(timeout=5) == text
        sent.append(text)
    assert framed == sent  # every one went the fast path, none through the queue
    await ws.close()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("not json", "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('{"id": 5}', "invalid_message"),
        ('{"type": "launch_rocket", "id": 5}', "unknown_type"),
        ('{"type": "subscribe", "id": 5, "topics": ["a/#/b"]}', "invalid_message"),
        ('{"type": "subscribe", "id": 5, "topics": []}', "invalid_message"),
    ],
)
async def test_bad_frames_get_an_error_and_keep_the_connection_and_subscriptions(
    gateway_client, payload, code
):
    gateway, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "subscribe", "id": "s", "topics": ["t/x"]})
    await receive_until(ws, lambda f: f.get("id") == "s")
    await ws.send_str(payload)
    error = await receive_until(ws, lambda f: f["type"] == "error")
    assert error["error"]["code"] == code
    assert set(error["error"]) == {"code", "message", "details"}
    if '"id": 5' in payload:
        assert error["id"] == 5
    gateway.hub.publish("t/x", {"type": "event", "topic": "t/x"})
    assert (await receive_until(ws, lambda f: f["type"] == "event"))["topic"] == "t/x"
    assert not ws.closed
    await ws.close()


async def test_binary_frame_is_an_error_not_a_close(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_bytes(b"\x00\x01")
    error = await receive_until(ws, lambda f: f["type"] == "error")
    assert error["error"]["code"] == "invalid_message"
    await ws.send_json({"type": "ping", "id": 1})
    assert (await receive_until(ws, lambda f: f["type"] == "pong"))["id"] == 1
    await ws.close()


async def test_monitor_role_is_forbidden_from_control_requests(gateway_client):
    gateway, client = await gateway_client()
    calls = []

    async def handler(call):
        calls.append(call)
        return {}

    gateway.api.define(Definition("test_control", handler, role=Role.CONTROL, reply="done"))
    monitor = await connect(client, MONITOR_KEY)
    await receive_json(monitor)
    await monitor.send_json({"type": "test_control", "id": "m"})
    error = await receive_until(monitor, lambda f: f.get("id") == "m")
    assert error["error"]["code"] == "forbidden"
    assert error["error"]["details"]["required_role"] == "control"
    assert calls == []
    await monitor.send_json({"type": "ping", "id": "still-open"})
    assert (await receive_until(monitor, lambda f: f.get("id") == "still-open"))["type"] == "pong"

    control = await connect(client, CONTROL_KEY)
    await receive_json(control)
    await control.send_json({"type": "test_control", "id": "c"})
    assert (await receive_until(control, lambda f: f.get("id") == "c"))["type"] == "done"
    assert len(calls) == 1
    await monitor.close()
    await control.close()


async def test_every_request_with_an_id_gets_exactly_one_reply(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "unsubscribe", "topics": ["status"]})
    await receive_until(ws, lambda f: f["type"] == "unsubscribed")
    requests = [
        {"type": "ping", "id": 1},
        {"type": "nope", "id": 2},
        {"type": "subscribe", "id": 3, "topics": ["x"]},
        {"type": "subscribe", "id": 4},
        {"type": "status", "id": 5},
    ]
    for request in requests:
        await ws.send_json(request)
    replies = [await receive_json(ws) for _ in requests]
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5]
    assert [r["type"] for r in replies] == ["pong", "error", "subscribed", "error", "status"]
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive_json(timeout=0.3)
    await ws.close()


async def test_deep_nesting_is_invalid_message_and_the_connection_stays_open(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    for depth in (33, 970, 5000):
        await ws.send_str('{"type":"ping","id":1,"payload":' + "[" * depth + "]" * depth + "}")
        error = await receive_until(ws, lambda f: f["type"] == "error")
        assert error["error"]["code"] == "invalid_message"
        assert error["error"]["details"] == {"reason": "nested deeper than 32 levels"}
    await ws.send_json({"type": "ping", "id": "after"})
    assert (await receive_until(ws, lambda f: f.get("id") == "after"))["type"] == "pong"
    assert not ws.closed
    await ws.close()


async def test_a_failing_handler_is_a_server_error_and_the_connection_stays_open(
    gateway_client, caplog
):
    gateway, client = await gateway_client()

    async def broken(call):
        raise RuntimeError("internals")

    async def unencodable(call):
        return {"value": {1, 2}}

    gateway.api.define(Definition("test_broken", broken))
    gateway.api.define(Definition("test_unencodable", unencodable, reply="x"))
    ws = await connect(client)
    await receive_json(ws)
    for kind in ("test_broken", "test_unencodable"):
        await ws.send_json({"type": kind, "id": kind})
        error = await receive_until(ws, lambda f, kind=kind: f.get("id") == kind)
        assert error["error"]["code"] == "server_error"
        incident = error["error"]["details"]["incident"]
        assert any(f"incident {incident}" in r.getMessage() for r in caplog.records)
    await ws.send_json({"type": "ping", "id": "after"})
    assert (await receive_until(ws, lambda f: f.get("id") == "after"))["type"] == "pong"
    assert not ws.closed
    await ws.close()


# -- limits --------------------------------------------------------------------------


async def test_oversized_frame_gets_too_large_then_close_1009(gateway_client):
    gateway, client = await gateway_client(limits={"max_frame_bytes": 1024})
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_str(json.dumps({"type": "ping", "payload": "x" * 2000}))
    error = await receive_until(ws, lambda f: f["type"] == "error")
    assert error["error"]["code"] == "too_large"
    assert error["error"]["details"]["max_frame_bytes"] == 1024
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1009
    assert gateway.dispatcher.stats.errors_by_code["too_large"] == 1


def _frame_of(size: int, char: str) -> str:
    """A JSON string frame of exactly ``size`` UTF-8 bytes, mostly ``char``."""
    width = len(char.encode())
    count = (size - 2) // width
    text = '"' + char * count + "x" * (size - 2 - count * width) + '"'
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize("char", ["a", "\u20ac", "\U0001f600"], ids=["ascii", "3-byte", "4-byte"])
@pytest.mark.parametrize("where", ["soft+1", "soft+3", "hard-1", "hard"])
async def test_every_frame_over_the_soft_limit_gets_too_large_before_1009(
    gateway_client, char, where
):
    soft = 1024
    hard = hard_frame_limit(soft)
    size = {"soft+1": soft + 1, "soft+3": soft + 3, "hard-1": hard - 1, "hard": hard}[where]
    _, client = await gateway_client(limits={"max_frame_bytes": soft})
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_str(_frame_of(size, char))
    error = await receive_until(ws, lambda f: f["type"] == "error")
    assert error["error"]["code"] == "too_large"
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1009


async def test_a_frame_over_the_hard_limit_is_closed_1009_without_an_error(gateway_client):
    _, client = await gateway_client(limits={"max_frame_bytes": 1024})
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_str(_frame_of(hard_frame_limit(1024) + 1, "a"))
    while (msg := await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT:
        assert json.loads(msg.data)["type"] == "status"
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1009


async def test_rate_limit_answers_rate_limited_with_retry_after(gateway_client):
    _, client = await gateway_client(limits={"messages_per_second": 2.0, "message_burst": 3})
    ws = await connect(client)
    await receive_json(ws)  # welcome
    await receive_json(ws)  # the first status
    await ws.send_json({"type": "unsubscribe", "id": 0, "topics": ["status"]})
    for i in range(1, 6):
        await ws.send_json({"type": "ping", "id": i})
    frames = [await receive_json(ws) for _ in range(6)]
    types = [f["type"] for f in frames]
    assert types.count("pong") == 2  # burst of 3, the first spent on unsubscribe
    limited = [f for f in frames if f["type"] == "error"]
    assert len(limited) == 3
    assert all(f["error"]["code"] == "rate_limited" for f in limited)
    assert all(0 < f["error"]["details"]["retry_after"] <= 0.5 for f in limited)
    assert sorted(f["id"] for f in frames) == [0, 1, 2, 3, 4, 5]  # refusals carry the id too
    await asyncio.sleep(0.6)
    await ws.send_json({"type": "ping", "id": "later"})
    assert (await receive_json(ws))["type"] == "pong"
    await ws.close()


async def test_connection_limits_refuse_before_upgrade(gateway_client):
    gateway, client = await gateway_client(
        limits={"max_connections_per_ip": 2, "max_connections": 3}
    )
    first = await connect(client)
    second = await connect(client)
    response = await _raw_upgrade(
        client,
        headers={"Sec-WebSocket-Protocol": SUBPROTOCOL, "Authorization": f"Key {CONTROL_KEY}"},
    )
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "too_many_connections"
    assert "Retry-After" in response.headers
    await first.close()
    await asyncio.sleep(0.1)
    third = await connect(client)  # a slot was released
    assert gateway.connections.refused_by_reason["max_connections_per_ip"] == 1
    await second.close()
    await third.close()


async def test_total_connection_limit_answers_503(gateway_client):
    _, client = await gateway_client(limits={"max_connections": 1})
    first = await connect(client)
    response = await _raw_upgrade(
        client,
        headers={"Sec-WebSocket-Protocol": SUBPROTOCOL, "Authorization": f"Key {CONTROL_KEY}"},
    )
    assert response.status == 503
    await first.close()


async def test_heartbeat_closes_a_peer_that_does_not_answer_pings(gateway_client):
    gateway, client = await gateway_client(limits={"heartbeat_seconds": 0.2})
    ws = await connect(client, autoping=False)
    await receive_json(ws)
    for _ in range(20):
        msg = await ws.receive(timeout=5)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    else:
        pytest.fail("the server never closed the silent peer")
    await asyncio.sleep(0.05)
    assert gateway.connections.active == 0


async def test_a_client_that_stops_reading_is_cut_off_without_delaying_others(gateway_client):
    gateway, client = await gateway_client(limits={"queue_limit": 16, "drop_limit": 64})
    url = f"ws://{client.host}:{client.port}/"
    headers = {"Authorization": f"Key {CONTROL_KEY}"}
    # `websockets` stops reading the socket once max_queue messages wait unread:
    # a real client that stops reading, with real TCP backpressure.
    slow = await websockets.connect(
        url, subprotocols=[SUBPROTOCOL], additional_headers=headers, max_queue=2
    )
    fast = await connect(client)
    await receive_json(fast)
    await slow.send(json.dumps({"type": "subscribe", "id": 1, "topics": ["bulk"]}))
    await fast.send_json({"type": "subscribe", "id": 1, "topics": ["bulk"]})
    await receive_until(fast, lambda f: f.get("id") == 1)
    await fast.send_json({"type": "unsubscribe", "id": 2, "topics": ["status"]})
    await receive_until(fast, lambda f: f.get("id") == 2)

    count = 600
    payload = "x" * 32768
    received: list[int] = []

    async def read_fast() -> None:
        while len(received) < count:
            frame = await fast.receive_json(timeout=10)
            assert frame["type"] == "bulk", frame["type"]  # never a 'dropped' notice
            received.append(frame["n"])

    reader = asyncio.create_task(read_fast())
    for n in range(count):
        gateway.hub.publish("bulk", {"type": "bulk", "n": n, "pad": payload})
        await asyncio.sleep(0.001 if n % 10 else 0.01)
    await asyncio.wait_for(reader, 30)
    assert received == list(range(count))  # the fast client lost nothing, in order

    for _ in range(100):
        if gateway.hub.stats.disconnected_slow:
            break
        await asyncio.sleep(0.05)
    assert gateway.hub.stats.disconnected_slow == 1
    assert gateway.hub.stats.dropped >= 64
    # When the slow client reads again it finds the documented close code.
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(20):
            while True:
                await slow.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    for _ in range(50):
        if gateway.connections.active == 1:
            break
        await asyncio.sleep(0.05)
    assert gateway.connections.active == 1
    await fast.close()


async def test_slow_status_subscriber_gets_latest_status_not_a_backlog(gateway_client):
    gateway, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    await asyncio.sleep(0.05)
    # publish many status frames while the client is not reading
    for _ in range(50):
        gateway.publish_status()
    await ws.send_json({"type": "ping", "id": "mark"})
    frames = []
    while True:
        frame = await receive_json(ws)
        if frame.get("id") == "mark":
            break
        frames.append(frame)
    assert 1 <= sum(f["type"] == "status" for f in frames) <= 3
    await ws.close()


async def test_a_closed_connection_leaves_nothing_for_shutdown_to_wait_on(gateway_client):
    """Shutdown waits its flush (SHUTDOWN_FLUSH_SECONDS) only for sockets still open; a
    connection that ended must leave the app's set, or every stop of a gateway that
    ever had a client waited half a second for nobody."""
    gateway, client = await gateway_client()
    sockets = client.server.app[SOCKETS]
    ws = await connect(client)
    await receive_json(ws)  # welcome: the handler has registered it
    assert len(sockets) == 1
    await ws.close()
    async with asyncio.timeout(5):
        while gateway.connections.active:
            await asyncio.sleep(0.01)
    assert list(sockets) == []
