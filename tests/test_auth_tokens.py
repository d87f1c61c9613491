"""Signed tokens over real sockets with the real PyJWT: issued, narrowed, presented in
every accepted place, refused when forged, and ended by expiry, refresh or revocation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
import pytest

from hydrogen.protocol import SUBPROTOCOL, CloseCode
from hydrogen.server.keys import CREDENTIALS
from tests.conftest import (
    ADMIN_KEY,
    CONTROL_KEY,
    MONITOR_KEY,
    receive_json,
    receive_until,
    subscribe,
)


async def _token(client: Any, key: str = CONTROL_KEY, **members: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/auth/token", json=members, headers={"Authorization": f"Key {key}"}
    )
    body = await response.json()
    assert response.status == 200, body
    return body


def _secret(client: Any) -> bytes:
    state = client.server.app[CREDENTIALS].config.state_dir
    return bytes.fromhex((state / "token_secret").read_text().strip())


async def _info(client: Any, token: str) -> aiohttp.ClientResponse:
    return await client.get("/api/system/info", headers={"Authorization": f"Bearer {token}"})


async def _ws(client: Any, *, headers=None, path="/", protocols=(SUBPROTOCOL,)):
    return await client.ws_connect(path, protocols=list(protocols), headers=headers or {})


async def test_a_token_is_accepted_wherever_a_key_is(gateway_client) -> None:
    _, client = await gateway_client()
    issued = await _token(client)
    token = issued["token"]
    assert issued["name"] == "ctl" and issued["role"] == "control" and issued["printers"] is None
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 3600
    claims = jwt.decode(token, _secret(client), algorithms=["HS256"])
    assert {"sub", "role", "printers", "iat", "exp", "jti", "gen"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 3600
    assert (await _info(client, token)).status == 200
    for ws in (
        await _ws(client, headers={"Authorization": f"Bearer {token}"}),
        await _ws(client, path=f"/?token={token}"),
        await _ws(client, protocols=(SUBPROTOCOL, f"access_token.{token}")),
    ):
        welcome = await receive_json(ws)
        assert welcome["role"] == "control"
        # The server selects hydrogen-protocol and never echoes the token.
        assert ws.protocol == SUBPROTOCOL
        await ws.close()


# PyJWT warns that our 32-byte secret is short for HS512: that is the forger's token.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("forge", ["tampered", "none", "wrong_key", "hs512", "expired", "garbage"])
async def test_a_forged_or_expired_token_gets_401_before_the_upgrade(gateway_client, forge) -> None:
    gateway, client = await gateway_client()
    good = (await _token(client))["token"]
    claims = jwt.decode(good, _secret(client), algorithms=["HS256"])
    if forge == "tampered":
        header, body, signature = good.split(".")
        token = f"{header}.{body}.{signature[:-4]}AAAA"
    elif forge == "none":
        token = jwt.encode(claims | {"role": "admin"}, None, algorithm="none")
    elif forge == "wrong_key":
        token = jwt.encode(claims, b"x" * 32, algorithm="HS256")
    elif forge == "hs512":
        token = jwt.encode(claims, _secret(client), algorithm="HS512")
    elif forge == "expired":
        token = jwt.encode(claims | {"exp": int(time.time()) - 5}, _secret(client), "HS256")
    else:
        token = "eyJhbGciOi.not-a.jwt"
    response = await _info(client, token)
    body = await response.json()
    assert response.status == 401 and body["error"]["code"] == "auth_failed"
    expected = "the token has expired" if forge == "expired" else "invalid token"
    assert body["error"]["message"] == expected
    for where in ({"headers": {"Authorization": f"Bearer {token}"}}, {"path": f"/?token={token}"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await _ws(client, **where)
        assert refused.value.status == 401
    assert gateway.connections.total == 0
    reason = "expired_token" if forge == "expired" else "invalid_token"
    assert gateway.connections.auth_failures[reason] == 3


async def test_a_token_is_never_more_than_its_key_and_may_be_narrowed(gateway_client) -> None:
    _, client = await gateway_client()
    narrowed = await _token(client, role="monitor", ttl=120)
    assert narrowed["role"] == "monitor" and narrowed["expires_in"] == 120
    ws = await _ws(client, headers={"Authorization": f"Bearer {narrowed['token']}"})
    welcome = await receive_json(ws)
    assert welcome["role"] == "monitor" and "command" not in welcome["features"]
    await ws.send_json({"type": "emergency_stop", "id": 1})
    refused = await receive_until(ws, lambda f: f.get("id") == 1)
    assert refused["error"]["code"] == "forbidden"
    await ws.close()
    for key, members, code in (
        (CONTROL_KEY, {"role": "admin"}, 403),  # above the key
        (MONITOR_KEY, {"role": "control"}, 403),
        (CONTROL_KEY, {"printers": ["no-such-printer"]}, 404),
        (CONTROL_KEY, {"ttl": 10**6}, 400),  # past auth.token_ttl_seconds
        (CONTROL_KEY, {"role": "root"}, 400),
    ):
        response = await client.post("/api/auth/token", json=members, headers={"X-Api-Key": key})
        assert response.status == code, (members, await response.json())
    # A token cannot make tokens: a stolen one would otherwise live for ever.
    response = await client.post(
        "/api/auth/token", headers={"Authorization": f"Bearer {narrowed['token']}"}
    )
    assert response.status == 403


async def test_refresh_keeps_the_connection_and_its_subscriptions(gateway_client) -> None:
    gateway, client = await gateway_client()
    first = await _token(client, ttl=4)
    ws = await _ws(client, headers={"Authorization": f"Bearer {first['token']}"})
    await receive_json(ws)
    # Inside the warning period from the start (60 s before expiry by default).
    warning = await receive_until(ws, lambda f: f["type"] == "auth_status")
    await subscribe(ws, "notifications")
    assert warning == {
        "type": "auth_status",
        "status": "token_expiring",
        "expires_at": first["expires_at"],
        "refresh_required": True,
    }
    second = await _token(client)
    await ws.send_json({"type": "auth_refresh", "id": "r", "token": second["token"]})
    refreshed = await receive_until(ws, lambda f: f.get("id") == "r")
    assert refreshed["type"] == "auth_status" and refreshed["status"] == "refreshed"
    assert refreshed["expires_at"] == second["expires_at"]
    # Past the first token's expiry the connection lives on, subscriptions and all.
    deadline = jwt.decode(first["token"], options={"verify_signature": False})["exp"]
    while time.time() < deadline + 0.5:
        await ws.send_json({"type": "ping", "id": "p"})
        await receive_until(ws, lambda f: f.get("id") == "p")
        await asyncio.sleep(0.2)
    gateway.notify("info", "test", "still subscribed")
    frame = await receive_until(ws, lambda f: f["type"] == "notification")
    assert frame["message"] == "still subscribed" and not ws.closed
    await ws.close()


async def test_a_refresh_may_not_change_the_identity(gateway_client) -> None:
    _, client = await gateway_client()
    token = (await _token(client))["token"]
    ws = await _ws(client, headers={"Authorization": f"Bearer {token}"})
    await receive_json(ws)
    for other, code in (
        ((await _token(client, MONITOR_KEY))["token"], "forbidden"),  # another key
        ((await _token(client, role="monitor"))["token"], "forbidden"),  # another role
        ("eyJ.forged.token", "auth_failed"),
    ):
        await ws.send_json({"type": "auth_refresh", "id": "r", "token": other})
        reply = await receive_until(ws, lambda f: f.get("id") == "r")
        assert reply["error"]["code"] == code, reply
    await ws.close()
    # A connection opened with a key has no token to refresh.
    keyed = await _ws(client, headers={"Authorization": f"Key {CONTROL_KEY}"})
    await receive_json(keyed)
    await keyed.send_json({"type": "auth_refresh", "id": "r", "token": token})
    reply = await receive_until(keyed, lambda f: f.get("id") == "r")
    assert reply["error"]["code"] == "invalid_message"
    await keyed.close()


async def test_an_unrefreshed_token_ends_the_connection(gateway_client) -> None:
    _, client = await gateway_client()
    token = (await _token(client, ttl=1))["token"]
    ws = await _ws(client, path=f"/ws?token={token}")
    await receive_json(ws)
    expiring = await receive_until(ws, lambda f: f["type"] == "auth_status")
    assert expiring["status"] == "token_expiring"
    expired = await receive_until(ws, lambda f: f["type"] == "auth_status")
    assert expired["status"] == "expired"
    closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert closing.data == CloseCode.TOKEN_EXPIRED == 4004


async def test_a_oneshot_token_serves_one_get(gateway_client) -> None:
    _, client = await gateway_client()
    response = await client.post("/api/auth/oneshot", headers={"X-Api-Key": MONITOR_KEY})
    issued = await response.json()
    assert response.status == 200 and issued["use"] == "oneshot" and issued["expires_in"] == 60
    link = f"/api/system/info?token={issued['token']}"
    assert (await client.get(link)).status == 200
    again = await client.get(link)
    assert again.status == 401
    assert (await again.json())["error"]["message"] == "this one-shot token has already been used"
    # Not a bearer token, not for anything but a GET, not for a WebSocket.
    fresh = await (
        await client.post("/api/auth/oneshot", headers={"X-Api-Key": MONITOR_KEY})
    ).json()
    assert (await _info(client, fresh["token"])).status == 401
    assert (await client.post(f"/api/auth/token?token={fresh['token']}")).status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await _ws(client, path=f"/?token={fresh['token']}")
    # And an ordinary token is no one-shot link.
    ordinary = (await _token(client))["token"]
    assert (await client.get(f"/api/system/info?token={ordinary}")).status == 401


async def test_tokens_over_the_websocket_too(gateway_client) -> None:
    _, client = await gateway_client()
    ws = await _ws(client, headers={"Authorization": f"Key {ADMIN_KEY}"})
    await receive_json(ws)
    await ws.send_json({"type": "auth_token", "id": 1, "role": "monitor", "ttl": 60})
    reply = await receive_until(ws, lambda f: f.get("id") == 1)
    assert reply["type"] == "auth_token" and reply["role"] == "monitor", reply
    assert (await _info(client, reply["token"])).status == 200
    await ws.close()
