"""Named keys: the store in the state dir, key management over HTTP, WebSocket and the
command line (while a gateway runs), revocation ending live connections, the
brute-force limit, and no secret in any log."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from typing import Any

import aiohttp
import pytest

from hydrogen.config import ApiKey, AuthConfig
from hydrogen.keyring import Keyring
from hydrogen.keystore import KeyStore, KeyStoreError
from hydrogen.protocol import SUBPROTOCOL, CloseCode, Role
from tests.conftest import ADMIN_KEY, CONTROL_KEY, MONITOR_KEY, receive_json, receive_until
from tests.process import hydrogen, start_gateway


def _admin(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Key {key}"}


async def _add(client: Any, name: str, role: str = "control", **members: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/keys", json={"name": name, "role": role, **members}, headers=_admin()
    )
    body = await response.json()
    assert response.status == 201, body
    return body


async def _ws(client: Any, headers: dict[str, str]) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/", protocols=[SUBPROTOCOL], headers=headers)
    await receive_json(ws)
    return ws


async def _closed_with(ws: aiohttp.ClientWebSocketResponse, code: int) -> dict[str, Any]:
    """The frame sent before the close, and the close itself (5 s deadline)."""
    frame = await receive_until(ws, lambda f: f["type"] == "auth_status")
    message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == code, message
    return frame


# -- the store ---------------------------------------------------------------------------


def test_the_store_keeps_only_a_slow_hash_and_is_private(tmp_path) -> None:
    store = KeyStore(tmp_path)
    _, secret = store.add("ops", Role.CONTROL, ["mk3"])
    text = (tmp_path / "keys.json").read_text()
    assert secret not in text and secret.split("_")[-1] not in text
    assert json.loads(text)["keys"][0]["hash"].startswith("scrypt$16384$8$1$")
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    ring = Keyring((), store, b"p" * 32)
    record = ring.lookup(secret)
    assert record is not None and record.name == "ops" and record.printers == {"mk3"}
    assert ring.lookup(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    with pytest.raises(KeyStoreError) as taken:
        store.add("ops", Role.MONITOR)
    assert taken.value.kind == "exists"
    with pytest.raises(KeyStoreError):
        store.add("bad name", Role.MONITOR)
    # Rotation: the old secret is dead at once, cache or not.
    _, new = store.rotate("ops")
    ring.refresh(force=True)
    assert ring.lookup(secret) is None and ring.lookup(new) is not None
    store.revoke("ops")
    ring.refresh(force=True)
    assert ring.lookup(new) is None


def test_concurrent_edits_lose_nothing(tmp_path) -> None:
    """Two editors (the gateway and the CLI) each read-modify-write under the lock."""
    errors: list[BaseException] = []

    def add_many(prefix: str) -> None:
        try:
            store = KeyStore(tmp_path)  # its own file descriptors, like another process
            for index in range(4):
                store.add(f"{prefix}{index}", Role.MONITOR)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add_many, args=(p,)) for p in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(k.name for k in KeyStore(tmp_path).load()) == sorted(
        f"{p}{i}" for p in "abc" for i in range(4)
    )


def test_a_cached_lookup_skips_the_slow_hash(tmp_path) -> None:
    store = KeyStore(tmp_path)
    _, secret = store.add("ops", Role.CONTROL)
    ring = Keyring([ApiKey("config-key-123456", Role.MONITOR, "cfg")], store, b"p" * 32)
    started = time.perf_counter()
    assert ring.lookup(secret) is not None
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(1000):
        assert ring.lookup(secret) is not None
    cached = (time.perf_counter() - started) / 1000
    print(f"\nstored key lookup: first {first * 1e3:.1f} ms (scrypt), cached {cached * 1e6:.1f} us")
    assert ring.lookup("config-key-123456").name == "cfg"


# -- management over HTTP and WebSocket --------------------------------------------------


async def test_an_admin_manages_keys_and_the_secret_is_shown_once(gateway_client) -> None:
    _, client = await gateway_client()
    added = await _add(client, "slicer", "control")
    secret = added["secret"]
    assert added["key"] == {
        "name": "slicer",
        "role": "control",
        "printers": None,
        "source": "store",
        "created_at": added["key"]["created_at"],
        "rotated_at": None,
    }
    listing = await (await client.get("/api/keys", headers=_admin())).json()
    assert [k["name"] for k in listing["keys"]] == ["ctl", "mon", "adm", "slicer"]
    assert secret not in json.dumps(listing)
    # The new key works at once, with its name and role.
    ws = await _ws(client, {"X-Api-Key": secret})
    await ws.send_json({"type": "status", "id": 1})
    assert (await receive_until(ws, lambda f: f.get("id") == 1))["type"] == "status"
    # Taken names, config names and unknown printers are refused.
    for members, status in (
        ({"name": "slicer", "role": "monitor"}, 409),
        ({"name": "ctl", "role": "monitor"}, 409),
        ({"name": "x", "role": "monitor", "printers": ["nope"]}, 404),
        ({"name": "x", "role": "root"}, 400),
    ):
        response = await client.post("/api/keys", json=members, headers=_admin())
        assert response.status == status, (members, await response.json())
    # A control key may not manage keys, over either transport.
    assert (await client.get("/api/keys", headers=_admin(CONTROL_KEY))).status == 403
    await ws.send_json({"type": "keys", "id": 2})
    assert (await receive_until(ws, lambda f: f.get("id") == 2))["error"]["code"] == "forbidden"
    # Configuration keys are changed in the configuration.
    assert (await client.delete("/api/keys/mon", headers=_admin())).status == 409
    await ws.close()


async def test_revoking_a_key_ends_its_connections_tokens_and_sessions(gateway_client) -> None:
    _, client = await gateway_client()
    secret = (await _add(client, "contractor", "control"))["secret"]
    token = (
        await (
            await client.post("/api/auth/token", headers={"Authorization": f"Key {secret}"})
        ).json()
    )["token"]
    by_key = await _ws(client, {"X-Api-Key": secret})
    by_token = await _ws(client, {"Authorization": f"Bearer {token}"})
    bystander = await _ws(client, {"X-Api-Key": CONTROL_KEY})
    started = time.monotonic()
    response = await client.delete("/api/keys/contractor", headers=_admin())
    assert response.status == 200
    assert await response.json() == {"revoked": "contractor", "closed_connections": 2}
    for ws in (by_key, by_token):
        assert (await _closed_with(ws, CloseCode.CREDENTIALS_REVOKED))["status"] == "revoked"
    print(f"\nrevoked over HTTP: both connections closed after {time.monotonic() - started:.3f} s")
    await bystander.send_json({"type": "ping", "id": "p"})
    assert (await receive_until(bystander, lambda f: f.get("id") == "p"))["type"] == "pong"
    for headers in ({"X-Api-Key": secret}, {"Authorization": f"Bearer {token}"}):
        refused = await client.get("/api/system/info", headers=headers)
        assert refused.status == 401
    await bystander.close()


async def test_rotating_a_key_replaces_its_secret_over_the_websocket(gateway_client) -> None:
    _, client = await gateway_client()
    old = (await _add(client, "octo", "monitor"))["secret"]
    victim = await _ws(client, {"X-Api-Key": old})
    admin = await _ws(client, _admin())
    await admin.send_json({"type": "key_rotate", "id": "r", "name": "octo"})
    rotated = await receive_until(admin, lambda f: f.get("id") == "r")
    assert rotated["type"] == "key_rotate" and rotated["closed_connections"] == 1
    await _closed_with(victim, CloseCode.CREDENTIALS_REVOKED)
    assert (await client.get("/api/system/info", headers={"X-Api-Key": old})).status == 401
    fresh = await client.get("/api/system/info", headers={"X-Api-Key": rotated["secret"]})
    assert fresh.status == 200
    await admin.close()


async def test_a_scoped_admin_manages_only_keys_within_its_scope(gateway_client) -> None:
    from tests.test_printers import sim_printer

    scoped = ApiKey("scoped-admin-key-123", Role.ADMIN, "farm-a", frozenset({"a"}))
    _, client = await gateway_client(
        printers=(sim_printer("a"), sim_printer("b")),
        keys=(ApiKey(ADMIN_KEY, Role.ADMIN, "adm"), scoped),
    )
    headers = _admin(scoped.key)
    response = await client.post(
        "/api/keys", json={"name": "helper", "role": "control"}, headers=headers
    )
    made = await response.json()
    assert response.status == 201 and made["key"]["printers"] == ["a"]  # its own scope
    response = await client.post(
        "/api/keys", json={"name": "x", "role": "control", "printers": ["b"]}, headers=headers
    )
    assert response.status == 404  # printer b does not exist for it
    listing = await (await client.get("/api/keys", headers=headers)).json()
    assert [k["name"] for k in listing["keys"]] == ["farm-a", "helper"]
    await _add(client, "everything", "admin")
    assert (await client.delete("/api/keys/everything", headers=headers)).status == 404
    assert (await client.delete("/api/keys/helper", headers=headers)).status == 200


# -- brute force ---------------------------------------------------------------------------


async def test_wrong_keys_are_rate_limited_per_address_and_logged_once(
    gateway_client, caplog
) -> None:
    gateway, client = await gateway_client(auth=AuthConfig(max_failures=5))
    caplog.set_level("INFO", logger="hydrogen.server.auth")
    for attempt in range(5):
        response = await client.get("/api/system/info", headers={"X-Api-Key": f"guess-{attempt}xx"})
        assert response.status == 401
    blocked = await client.get("/api/system/info", headers={"X-Api-Key": "guess-6xxxxxx"})
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) > 0
    assert (await blocked.json())["error"]["code"] == "rate_limited"
    # While blocked, even a right key is refused (else guessing would go on), and the
    # WebSocket handshake too.
    assert (await client.get("/api/system/info", headers={"X-Api-Key": CONTROL_KEY})).status == 429
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/", protocols=[SUBPROTOCOL], headers={"X-Api-Key": "guess-7x"})
    assert refused.value.status == 429
    lines = [r.getMessage() for r in caplog.records if r.name == "hydrogen.server.auth"]
    assert len(lines) == 2, lines  # the burst's first failure, and the block
    assert "failed authentications from 127.0.0.1" in lines[1]
    assert gateway.connections.auth_failures["invalid_key"] == 5
    assert gateway.connections.auth_failures["rate_limited"] == 3
    scrape = await client.get("/metrics", headers={"X-Api-Key": MONITOR_KEY})
    assert scrape.status == 429  # the same address, still blocked


async def test_metrics_count_connections_by_role_and_failures_by_reason(gateway_client) -> None:
    _, client = await gateway_client()
    monitor = await _ws(client, {"X-Api-Key": MONITOR_KEY})
    admin = await _ws(client, _admin())
    await client.get("/api/system/info", headers={"X-Api-Key": "wrong-key-123"})
    text = await (await client.get("/metrics", headers={"X-Api-Key": MONITOR_KEY})).text()
    assert 'hydrogen_connections_active_by_role{role="monitor"} 1.0' in text
    assert 'hydrogen_connections_active_by_role{role="admin"} 1.0' in text
    assert 'hydrogen_connections_active_by_role{role="control"} 0.0' in text
    assert 'hydrogen_auth_failures_total{reason="invalid_key"} 1.0' in text
    await monitor.close()
    await admin.close()


# -- the command line, against a running gateway ------------------------------------------


async def test_the_keys_command_works_while_the_gateway_runs(tmp_path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "hydrogen.toml"
    config.write_text(
        f'state_dir = "{state}"\n[[keys]]\nname = "boss"\nrole = "admin"\nkey = "{ADMIN_KEY}"\n'
    )
    gw = start_gateway(
        ["--config", str(config), "--no-printers", "--log-level", "debug", "--log-format", "text"]
    )
    used: list[str] = [ADMIN_KEY]
    try:
        added = hydrogen("keys", "--config", str(config), "add", "night-shift", "--role", "control")
        assert added.returncode == 0, added.stderr
        secret = added.stdout.strip()
        used.append(secret)
        assert secret.startswith("hgk_") and "shown only this once" in added.stderr
        base = f"http://127.0.0.1:{gw.port}"
        async with aiohttp.ClientSession() as session:
            # The running gateway accepts the key the CLI made, in every way a key travels.
            ws = await session.ws_connect(f"{base}/?key={secret}", protocols=[SUBPROTOCOL])
            welcome = await ws.receive_json(timeout=5)
            assert welcome["role"] == "control"
            token_reply = await session.post(
                f"{base}/api/auth/token", headers={"Authorization": f"Key {secret}"}
            )
            token = (await token_reply.json())["token"]
            used.append(token)
            by_token = await session.ws_connect(f"{base}/?token={token}", protocols=[SUBPROTOCOL])
            await by_token.receive_json(timeout=5)
            by_protocol = await session.ws_connect(
                f"{base}/", protocols=[SUBPROTOCOL, f"access_token.{token}"]
            )
            await by_protocol.receive_json(timeout=5)
            oneshot = await (
                await session.post(f"{base}/api/auth/oneshot", headers={"X-Api-Key": secret})
            ).json()
            used.append(oneshot["token"])
            assert (await session.get(f"{base}/api/system/info?token={oneshot['token']}")).ok
            listing = hydrogen("keys", "--config", str(config), "list")
            assert "night-shift" in listing.stdout and "boss" in listing.stdout
            assert secret not in listing.stdout
            started = time.monotonic()
            revoked = hydrogen("keys", "--config", str(config), "revoke", "night-shift")
            assert revoked.returncode == 0, revoked.stderr
            for live in (ws, by_token, by_protocol):
                frames = await _frames_until_close(live)
                assert frames[-1].data == CloseCode.CREDENTIALS_REVOKED, frames
                told = [json.loads(f.data) for f in frames if f.type is aiohttp.WSMsgType.TEXT]
                assert {"type": "auth_status", "status": "revoked"} in told
            print(f"\nrevoked by the CLI: closed after {time.monotonic() - started:.2f} s")
            refused = await session.get(f"{base}/api/system/info", headers={"X-Api-Key": secret})
            assert refused.status == 401
            assert hydrogen("keys", "--config", str(config), "revoke", "boss").returncode == 1
            # The command line's changes are in the gateway's audit trail, as the API's are.
            trail = await session.get(f"{base}/api/audit", headers={"X-Api-Key": ADMIN_KEY})
            records = (await trail.json())["records"]
            by_cli = [(r["action"], r["target"]) for r in records if r["transport"] == "cli"]
            assert by_cli == [("key_revoke", "night-shift"), ("key_add", "night-shift")]
            assert all(r["identity"].startswith("cli:") for r in records if r["transport"] == "cli")
    finally:
        gw.stop()
    log = gw.stderr()
    assert "GET /?key=***" in log and "token=***" in log
    assert "'night-shift'" in log  # the name is logged, never the secret
    for secret in used:
        assert secret not in log and secret not in gw.banner


async def _frames_until_close(ws: aiohttp.ClientWebSocketResponse) -> list[Any]:
    frames = []
    async with asyncio.timeout(5):
        while True:
            message = await ws.receive()
            frames.append(message)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return frames


async def test_a_session_cookie_acts_as_its_key_and_dies_with_it(gateway_client) -> None:
    from hydrogen.server.session import COOKIE_NAME, SESSIONS

    _, client = await gateway_client()
    secret = (await _add(client, "night-shift", "control"))["secret"]
    # What the dashboard's sign-in does with a key (POST /login).
    cookie = client.server.app[SESSIONS].issue(secret, Role.CONTROL)
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}", "Origin": str(client.make_url("/"))[:-1]}
    assert secret not in cookie
    ws = await _ws(client, headers)
    await ws.send_json({"type": "status", "id": 1})
    assert (await receive_until(ws, lambda f: f.get("id") == 1))["type"] == "status"
    assert (await client.get("/api/system/info", headers=headers)).status == 200
    await client.post("/api/keys/night-shift/rotate", headers=_admin())
    await _closed_with(ws, CloseCode.CREDENTIALS_REVOKED)
    refused = await client.get("/api/system/info", headers=headers)
    assert refused.status == 401


async def test_identify_credential_is_the_one_lookup_for_other_transports(gateway_client) -> None:
    from hydrogen.server.auth import identify_credential

    _, client = await gateway_client()
    app = client.server.app
    secret = (await _add(client, "octo-slicer", "control", printers=[]))["secret"]
    token = (
        await (
            await client.post(
                "/api/auth/token", json={"role": "monitor"}, headers={"X-Api-Key": CONTROL_KEY}
            )
        ).json()
    )["token"]
    by_key = identify_credential(app, secret)
    assert by_key is not None and (by_key.name, by_key.role) == ("octo-slicer", Role.CONTROL)
    assert by_key.printers == frozenset()
    by_token = identify_credential(app, token)
    assert by_token is not None and (by_token.name, by_token.role) == ("ctl", Role.MONITOR)
    assert identify_credential(app, MONITOR_KEY).name == "mon"
    for wrong in ("", "wrong-key-123", token[:-3] + "abc", secret[:-2] + "xy"):
        assert identify_credential(app, wrong) is None
