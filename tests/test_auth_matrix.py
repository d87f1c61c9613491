"""Each identity by each request, over the WebSocket and over HTTP: allowed or forbidden.

Walks every definition the gateway has (a request added later is walked too) for a
monitor, a control and an admin key, a control key scoped to one printer, and a
control key's token narrowed to monitor. The role check comes before the members
are validated, so a request sent without its members shows the decision without
doing anything: ``forbidden`` when the identity may not, any other answer when it
may. A scoped identity naming a printer outside its scope gets the same
``not_found`` as for a printer that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from hydrogen.config import ApiKey
from hydrogen.protocol import SUBPROTOCOL, Role
from tests.conftest import ADMIN_KEY, CONTROL_KEY, MONITOR_KEY, connect, receive_json
from tests.test_printers import sim_printer
from tests.test_request_definitions import VALID, _http, _path_members, _ws

SCOPED_KEY = "scoped-control-key-0123"


@dataclass(frozen=True)
class Who:
    label: str
    role: Role
    credential: str
    token: bool = False


def _allowed(who: Who, name: str, role: Role) -> bool:
    if who.token and name in ("auth_token", "auth_oneshot"):
        return False  # a token cannot make tokens
    return who.role >= role


@pytest.fixture
async def farm(gateway_client: Any) -> Any:
    keys = (
        ApiKey(CONTROL_KEY, Role.CONTROL, "ctl"),
        ApiKey(MONITOR_KEY, Role.MONITOR, "mon"),
        ApiKey(ADMIN_KEY, Role.ADMIN, "adm"),
        ApiKey(SCOPED_KEY, Role.CONTROL, "contractor", frozenset({"a"})),
    )
    gateway, client = await gateway_client(printers=(sim_printer("a"), sim_printer("b")), keys=keys)
    response = await client.post(
        "/api/auth/token", json={"role": "monitor"}, headers={"X-Api-Key": CONTROL_KEY}
    )
    token = (await response.json())["token"]
    people = [
        Who("monitor", Role.MONITOR, MONITOR_KEY),
        Who("control", Role.CONTROL, CONTROL_KEY),
        Who("admin", Role.ADMIN, ADMIN_KEY),
        Who("scoped control", Role.CONTROL, SCOPED_KEY),
        Who("narrowed token", Role.MONITOR, token, token=True),
    ]
    return gateway, client, people


def _headers(who: Who) -> dict[str, str]:
    return {"Authorization": f"Bearer {who.credential}" if who.token else f"Key {who.credential}"}


async def _http_as(client: Any, who: Who, route: Any, members: dict[str, Any]) -> tuple[int, Any]:
    if who.token:
        # _http sends X-Api-Key; a token goes as a bearer header instead.
        path = route.path
        for name in _path_members(route):
            path = path.replace("{" + name + "}", str(members[name]))
        rest = {k: v for k, v in members.items() if k not in _path_members(route)}
        if route.action is not None:
            rest["action"] = route.action
        kwargs: dict[str, Any] = (
            {"params": {k: str(v) for k, v in rest.items()}}
            if route.method in ("GET", "DELETE")
            else {"json": rest}
        )
        response = await client.request(route.method, path, headers=_headers(who), **kwargs)
        return response.status, (await response.json() if response.status != 204 else None)
    return await _http(client, who.credential, route, members)


async def test_each_identity_each_request_over_both_transports(farm: Any) -> None:
    gateway, client, people = farm
    checked = 0
    for who in people:
        ws = await client.ws_connect("/", protocols=[SUBPROTOCOL], headers=_headers(who))
        welcome = await receive_json(ws)
        assert welcome["role"] == who.role.label
        for definition in gateway.api:
            allowed = _allowed(who, definition.name, definition.role)
            if definition.websocket:
                frame = await _ws(ws, definition.name, {})
                refused = frame.get("type") == "error" and frame["error"]["code"] == "forbidden"
                assert refused != allowed, (who.label, definition.name, "websocket", frame)
                checked += 1
            for route in definition.http:
                members = {name: VALID.get(name, "x") for name in _path_members(route)}
                members |= {"printer": "a"} if "printer" in members else {}
                status, body = await _http_as(client, who, route, members)
                refused = status == 403 and body["error"]["code"] == "forbidden"
                assert refused != allowed, (who.label, definition.name, route.path, status, body)
                checked += 1
        await ws.close()
    assert checked >= 5 * 30


async def test_a_scoped_identity_meets_other_printers_as_not_found(farm: Any) -> None:
    gateway, client, people = farm
    scoped = next(w for w in people if w.label == "scoped control")
    ws = await connect(client, SCOPED_KEY)
    await receive_json(ws)
    checked = 0
    for definition in gateway.api:
        if definition.printer is None or definition.role > scoped.role:
            continue
        members = {p.name: VALID[p.name] for p in definition.params if p.name in VALID}
        members[definition.printer] = "b"
        frame = await _ws(ws, definition.name, members)
        assert frame["error"]["code"] == "not_found", (definition.name, frame)
        assert frame["error"]["message"] == "no printer named 'b'"
        for route in definition.http:
            status, body = await _http(client, SCOPED_KEY, route, members)
            assert status == 404 and body["error"] == frame["error"], (definition.name, body)
            checked += 1
    assert checked >= 6
    await ws.close()
