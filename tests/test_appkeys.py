"""Apps asking for a key (OctoPrint's application keys), decided by a person.

Through the public interfaces: the app's anonymous HTTP workflow, the people's
``appkey_requests`` / ``appkey_decide`` requests and ``printer/<name>/appkey``
frames over WebSocket. Who may see and decide a request, what the key made is,
and what hostile or concurrent input does (tests/test_octoprint_clients.py runs
Home Assistant's own library through it; tests/test_browser_appkeys.py the
dashboard's buttons).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from hydrogen.config import ApiKey, OctoPrintConfig
from hydrogen.octoprint import appkeys
from hydrogen.octoprint.appkeys import MAX_PENDING_PER_REMOTE, AppKeys, UnknownPrinter
from hydrogen.printers.printer import PrinterState
from hydrogen.protocol import Role
from tests.conftest import CONTROL_KEY, connect, receive_until, subscribe
from tests.test_octoprint_api import GHOST
from tests.test_printers import sim_printer, wait_state

ADMIN_KEY = "admin-key-appkeys-0123"
MONITOR_KEY = "monitor-key-appkeys-0123"
GHOST_ONLY_KEY = "ghost-only-key-appkeys-0123"


def documented_frame() -> dict[str, Any]:
    """The ``appkey_request`` example of docs/protocol.md §10.3.1."""
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    (line,) = re.findall(r'^\{"type":"appkey_request".*$', text, re.M)
    return json.loads(line)


async def gateway(gateway_client) -> Any:
    """tests/test_octoprint_api.py's gateway (``mk3`` simulated, ``ghost`` offline),
    with these keys; ``mk3`` ready. Not waiting for its first temperature report, as
    that module does (up to a second): no app key request depends on temperatures."""
    _, client = await gateway_client(
        printers=(sim_printer("mk3"), GHOST),
        octoprint=OctoPrintConfig(default_printer="mk3"),
        keys=(
            ApiKey(CONTROL_KEY, Role.CONTROL, "operator"),
            ApiKey(ADMIN_KEY, Role.ADMIN, "boss"),
            ApiKey(MONITOR_KEY, Role.MONITOR, "viewer"),
            ApiKey(GHOST_ONLY_KEY, Role.CONTROL, "ghostly", frozenset({"ghost"})),
        ),
    )
    await wait_state(client.printers.printers["mk3"], PrinterState.READY)
    return client


async def ask(client, app: Any = "Home Assistant", printer: str = "mk3", **extra: Any) -> Any:
    return await client.post(
        f"/octoprint/{printer}/plugin/appkeys/request", json={"app": app, **extra}
    )


async def test_people_who_may_control_the_printer_see_the_request_as_it_arrives(gateway_client):
    client = await gateway(gateway_client)
    watchers = {}
    for name, key in (
        ("operator", CONTROL_KEY),
        ("viewer", MONITOR_KEY),
        ("ghostly", GHOST_ONLY_KEY),
    ):
        ws = await connect(client, key)
        await subscribe(ws, "printer/+/appkey")
        watchers[name] = ws
    asked = await ask(client, user="ha")
    assert asked.status == 201
    frame = await receive_until(watchers["operator"], lambda f: f["type"] == "appkey_request")
    assert frame["topic"] == "printer/mk3/appkey" and frame["state"] == "waiting"
    assert frame["text"] == "Home Assistant on 127.0.0.1 asks for access to mk3"
    assert frame["user"] == "ha" and "token" not in frame
    assert (await asked.json())["app_token"] not in str(frame)
    documented = documented_frame()
    assert {k: type(v) for k, v in frame.items()} == {k: type(v) for k, v in documented.items()}
    # the same request is what appkey_requests lists
    await watchers["operator"].send_json({"type": "appkey_requests", "id": 1})
    listed = await receive_until(watchers["operator"], lambda f: f.get("id") == 1)
    assert [r["appkey"] for r in listed["requests"]] == [frame["appkey"]]
    # a read-only user and a user of another printer get nothing, and cannot list it
    for name in ("viewer", "ghostly"):
        ws = watchers[name]
        await ws.send_json({"type": "appkey_requests", "id": 2})
        reply = await receive_until(ws, lambda f: f.get("id") == 2)
        assert reply["type"] == "error" if name == "viewer" else reply["requests"] == []
        await ws.send_json({"type": "ping", "id": 3})  # anything pushed before comes first
        later = await receive_until(ws, lambda f: f.get("id") == 3 or f["type"] == "appkey_request")
        assert later["type"] == "pong", later
    for ws in watchers.values():
        await ws.close()


async def test_approval_over_the_websocket_gives_the_app_its_key_once(gateway_client):
    client = await gateway(gateway_client)
    operator, other = await connect(client), await connect(client, ADMIN_KEY)
    for ws in (operator, other):
        await subscribe(ws, "printer/mk3/appkey")
    token = (await (await ask(client, app="Cura")).json())["app_token"]
    waiting = await receive_until(operator, lambda f: f["type"] == "appkey_request")
    await operator.send_json(
        {"type": "appkey_decide", "id": 7, "appkey": waiting["appkey"], "approve": True}
    )
    reply = await receive_until(operator, lambda f: f.get("id") == 7)
    assert reply["decision"] == "approved" and reply["key"].startswith("Cura.mk3.")
    told = await receive_until(other, lambda f: f.get("state") == "approved")
    assert told["by"] == "operator" and told["key"] == reply["key"]
    fetched = await client.get(f"/octoprint/mk3/plugin/appkeys/request/{token}")
    assert fetched.status == 200
    key = (await fetched.json())["api_key"]
    assert (await client.get(f"/octoprint/mk3/plugin/appkeys/request/{token}")).status == 404
    # the key is control of mk3 alone
    headers = {"X-Api-Key": key}
    assert (await client.get("/octoprint/mk3/api/job", headers=headers)).status == 200
    assert (await client.get("/octoprint/ghost/api/job", headers=headers)).status == 404
    await operator.close()
    await other.close()


async def test_a_token_cannot_approve_and_a_second_approval_finds_nothing(gateway_client):
    client = await gateway(gateway_client)
    await ask(client)
    handle = (await (await client.get("/api/appkeys", headers={"X-Api-Key": CONTROL_KEY})).json())[
        "requests"
    ][0]["appkey"]
    issued = await client.post("/api/auth/token", json={}, headers={"X-Api-Key": CONTROL_KEY})
    bearer = {"Authorization": f"Bearer {(await issued.json())['token']}"}
    by_token = await client.post(f"/api/appkeys/{handle}", json={"approve": True}, headers=bearer)
    assert by_token.status == 403
    assert "token" in (await by_token.json())["error"]["message"]
    headers = {"X-Api-Key": CONTROL_KEY}
    both = await asyncio.gather(
        client.post(f"/api/appkeys/{handle}", json={"approve": True}, headers=headers),
        client.post(f"/api/appkeys/{handle}", json={"approve": True}, headers=headers),
    )
    assert sorted(r.status for r in both) == [200, 404]
    keys = (await (await client.get("/api/keys", headers={"X-Api-Key": ADMIN_KEY})).json())["keys"]
    assert len([k for k in keys if k["name"].startswith("Home-Assistant.mk3.")]) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"app": ""}, 400),
        ({"app": "   "}, 400),
        ({"app": 7}, 400),
        ({"app": ["x"]}, 400),
        ({"app": "x" * 65}, 400),
        ({"app": "ok", "user": 3}, 400),
        ({"app": "ok", "user": "u" * 65}, 400),
    ],
)
async def test_malformed_requests_are_refused_as_octoprint_refuses(gateway_client, body, status):
    client = await gateway(gateway_client)
    response = await client.post("/plugin/appkeys/request", json=body)
    assert response.status == status
    assert "error" in await response.json()
    assert (await client.get("/api/appkeys", headers={"X-Api-Key": CONTROL_KEY})).status == 200
    assert (await (await client.get("/api/appkeys", headers={"X-Api-Key": CONTROL_KEY})).json())[
        "requests"
    ] == []


async def test_a_body_that_is_not_json_or_too_big_and_names_with_control_characters(
    gateway_client,
):
    client = await gateway(gateway_client)
    for data, status in ((b"{nope", 400), (b"[1]", 400), (b"{" + b" " * 70_000 + b"}", 413)):
        response = await client.post(
            "/plugin/appkeys/request", data=data, headers={"Content-Type": "application/json"}
        )
        assert response.status == status
    assert (await ask(client, app="Evil\x1b[2J\napp\u202e")).status == 201
    (request,) = (
        await (await client.get("/api/appkeys", headers={"X-Api-Key": CONTROL_KEY})).json()
    )["requests"]
    assert request["app"] == "Evil [2J app" and request["text"].isprintable()
    # its key name is one the store accepts
    decided = await client.post(
        f"/api/appkeys/{request['appkey']}",
        json={"approve": True},
        headers={"X-Api-Key": CONTROL_KEY},
    )
    assert decided.status == 200
    assert (await decided.json())["key"].startswith("Evil-2J-app.mk3.")


async def test_a_flood_from_one_address_pushes_out_only_its_own_requests(gateway_client):
    client = await gateway(gateway_client)
    watcher = await connect(client)
    await subscribe(watcher, "printer/+/appkey")
    tokens = [(await (await ask(client, app=f"flood{i}")).json())["app_token"] for i in range(20)]
    listed = (await (await client.get("/api/appkeys", headers={"X-Api-Key": CONTROL_KEY})).json())[
        "requests"
    ]
    assert [r["app"] for r in listed] == [
        f"flood{i}" for i in range(20 - MAX_PENDING_PER_REMOTE, 20)
    ]
    assert (await client.get(f"/plugin/appkeys/request/{tokens[0]}")).status == 404
    assert (await client.get(f"/plugin/appkeys/request/{tokens[-1]}")).status == 202
    expired = await receive_until(watcher, lambda f: f.get("state") == "expired")
    assert expired["app"] == "flood0"
    await watcher.close()


def test_requests_from_other_addresses_survive_a_flood_and_all_expire(monkeypatch):
    keys = AppKeys(credentials=None, printers=["mk3"])
    now = [1000.0]
    monkeypatch.setattr(appkeys.time, "time", lambda: now[0])
    honest = keys.ask("Home Assistant", None, "mk3", "192.0.2.20")
    for i in range(100):
        keys.ask(f"flood{i}", None, "mk3", "192.0.2.66")
    assert keys.poll(honest.token, "mk3") is honest
    assert sum(e.remote == "192.0.2.66" for e in keys.pending.values()) == MAX_PENDING_PER_REMOTE
    with pytest.raises(UnknownPrinter):
        keys.ask("x", None, "nowhere", "192.0.2.20")
    now[0] += appkeys.PENDING_SECONDS + 1
    assert keys.poll(honest.token, "mk3") is None
    assert keys.pending == {}
