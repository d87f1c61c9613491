"""Every request definition, walked over every transport it declares.

A request is defined once (hydrogen/api); the WebSocket dispatcher and the HTTP
routes are built from the definitions. This table-driven test takes each
definition in turn and checks, over a real socket, that it is reachable wherever it
says it is, that both transports apply the same role rule and the same validation
(same error code, message and details) and, for the requests that change nothing,
that both answer the same payload. A definition added later is walked too: the
only table here is how to fill in a member of a given name.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from hydrogen.api import Definition, HttpRoute, Param
from hydrogen.protocol import Role
from hydrogen.server.http_api import STATUS_FOR
from tests.conftest import (
    ADMIN_KEY,
    CONTROL_KEY,
    MONITOR_KEY,
    connect,
    receive_json,
    receive_until,
)
from tests.test_printers import sim_printer

FILE = "walk.gcode"
#: A valid value for each member name the definitions use (the only table to keep).
VALID: dict[str, Any] = {
    "printer": "sim",
    "file": FILE,
    "gcode": "M105",
    "since": 0,
    "limit": 5,
    "job_id": "000000000000",
    "topics": ["status"],
    "payload": "x",
    "timestamp": 1,
    "name": "walk-key",
    "role": "monitor",
    "printers": ["sim"],
    "ttl": 60,
    "token": "not-a-token",
    "appkey": "000000000000",
}
#: Requests whose payload is a snapshot of moving figures (or a fresh token each
#: time): compared by shape only.
MOVING = {"status", "printers", "printer", "temperature_history", "auth_token", "auth_oneshot"}


def _wrong(param: Param) -> Any:
    """A value of the wrong JSON type for ``param``."""
    return ["not", "a", param.kind.__name__] if param.kind is not object else None


def _path(route: HttpRoute, members: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(members[m.group(1)]), route.path)


def _path_members(route: HttpRoute) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", route.path))


async def _http(
    client: Any, key: str, route: HttpRoute, members: dict[str, Any]
) -> tuple[int, Any]:
    path = _path(route, members)
    rest = {k: v for k, v in members.items() if k not in _path_members(route)}
    headers = {"X-Api-Key": key}
    if route.action is not None:
        rest["action"] = route.action
    if route.method in ("GET", "DELETE"):
        query = {k: str(v) for k, v in rest.items()}
        response = await client.request(route.method, path, params=query, headers=headers)
    else:
        response = await client.request(route.method, path, json=rest, headers=headers)
    body = await response.json() if response.status != 204 else None
    return response.status, body


async def _ws(ws: aiohttp.ClientWebSocketResponse, name: str, members: dict[str, Any]) -> Any:
    rid = f"walk-{name}"
    await ws.send_json({"type": name, "id": rid, **members})
    return await receive_until(ws, lambda f: f.get("id") == rid and f["type"] != "subscribed")


def _payload(frame: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in frame.items() if k not in ("type", "id", "topic")}


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


def _members(definition: Definition) -> dict[str, Any]:
    return {p.name: VALID[p.name] for p in definition.params if p.name in VALID}


@pytest.fixture
async def walk(gateway_client: Any) -> Any:
    gateway, client = await gateway_client(printers=(sim_printer(),))
    form = aiohttp.FormData()
    form.add_field("file", b"G28\nG1 X1\n", filename=FILE)
    response = await client.post("/api/files", data=form, headers={"X-Api-Key": CONTROL_KEY})
    assert response.status == 201, await response.text()
    return gateway, client


async def test_every_definition_is_reachable_where_it_says(walk: Any) -> None:
    gateway, client = walk
    definitions = list(gateway.api)
    assert {d.name for d in definitions} >= {"command", "job_start", "files", "status"}
    ws = await connect(client, CONTROL_KEY)
    welcome = await receive_json(ws)
    assert set(welcome["features"]) == {
        d.name for d in definitions if d.websocket and d.role <= Role.CONTROL
    }
    monitor = await connect(client, MONITOR_KEY)
    features = set((await receive_json(monitor))["features"])
    assert features == {d.name for d in definitions if d.websocket and d.role <= Role.MONITOR}
    for definition in definitions:
        for route in definition.http:
            # A monitor reaches every route: it is answered by the dispatch (a payload
            # or the role refusal), never by aiohttp's 404 or 405 for a missing route.
            status, body = await _http(client, MONITOR_KEY, route, _members(definition))
            if definition.role > Role.MONITOR:
                assert status == 403, (definition.name, route, body)
                assert body["error"]["code"] == "forbidden"
            else:
                assert status == route.status, (definition.name, route, body)
    await ws.close()
    await monitor.close()


async def test_the_role_rule_is_the_same_over_both_transports(walk: Any) -> None:
    gateway, client = walk
    monitor = await connect(client, MONITOR_KEY)
    await receive_json(monitor)
    checked = 0
    for definition in gateway.api:
        if definition.role <= Role.MONITOR:
            continue
        members = _members(definition)
        frame = await _ws(monitor, definition.name, members) if definition.websocket else None
        for route in definition.http:
            status, body = await _http(client, MONITOR_KEY, route, members)
            assert status == STATUS_FOR[body["error"]["code"]] == 403
            if frame is not None:
                assert frame["type"] == "error"
                assert frame["error"] == body["error"], definition.name
            checked += 1
    assert checked >= 8
    await monitor.close()


async def test_validation_errors_are_the_same_over_both_transports(walk: Any) -> None:
    gateway, client = walk
    ws = await connect(client, ADMIN_KEY)
    await receive_json(ws)
    checked = 0
    for definition in gateway.api:
        for param in definition.params:
            for route in definition.http:
                if param.kind is object or param.name in _path_members(route):
                    continue  # anything goes, or always text (the URL's path)
                if param.kind is str and route.method != "POST":
                    continue  # a query string cannot carry text of the wrong type
                members = _members(definition) | {param.name: _wrong(param)}
                status, body = await _http(client, ADMIN_KEY, route, members)
                frame = await _ws(ws, definition.name, members)
                assert status == 400, (definition.name, param.name, body)
                assert body["error"]["code"] == "invalid_message"
                assert frame["error"] == body["error"], (definition.name, param.name)
                checked += 1
    assert checked >= 5
    await ws.close()


async def test_read_only_requests_answer_the_same_payload_over_both_transports(
    walk: Any,
) -> None:
    gateway, client = walk
    ws = await connect(client, MONITOR_KEY)
    await receive_json(ws)
    checked = 0
    for definition in gateway.api:
        if definition.role > Role.MONITOR or not definition.websocket:
            continue
        for route in definition.http:
            members = _members(definition)
            frame = await _ws(ws, definition.name, members)
            assert frame["type"] == definition.reply_type, frame
            status, body = await _http(client, MONITOR_KEY, route, members)
            assert status == route.status
            if definition.name in MOVING:
                assert _shape(body) == _shape(_payload(frame)), definition.name
            else:
                assert body == _payload(frame), definition.name
            checked += 1
    assert checked >= 8
    await ws.close()


async def test_an_unknown_printer_is_the_same_not_found_everywhere(walk: Any) -> None:
    gateway, client = walk
    ws = await connect(client, ADMIN_KEY)
    await receive_json(ws)
    checked = 0
    for definition in gateway.api:
        if definition.printer is None:
            continue
        members = _members(definition) | {definition.printer: "nope"}
        frame = await _ws(ws, definition.name, members)
        assert frame["error"]["code"] == "not_found", frame
        for route in definition.http:
            if "{printer}" not in route.path:
                continue
            status, body = await _http(client, ADMIN_KEY, route, members)
            assert status == 404
            assert body["error"] == frame["error"], definition.name
            checked += 1
    assert checked >= 8
    await ws.close()
