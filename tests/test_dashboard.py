"""The dashboard over HTTP: pages, sign-in/out, the session cookie, origins, caching."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hydrogen.config import ApiKey, ServerConfig
from hydrogen.gateway import Gateway
from hydrogen.keystore import KeyStore
from hydrogen.protocol import SUBPROTOCOL, Role
from hydrogen.server import dashboard
from hydrogen.server.app import create_app
from hydrogen.server.session import COOKIE_NAME, DEFAULT_MAX_AGE, SessionManager
from tests.conftest import CONTROL_KEY, MONITOR_KEY, connect, make_config, receive_json

FOREIGN = "http://evil.example"


def own_origin(client: Any) -> str:
    return f"http://{client.host}:{client.port}"


def set_cookie(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """The ``hydrogen_session`` Set-Cookie of a response, attributes included."""
    for header in response.headers.getall("Set-Cookie", []):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if COOKIE_NAME in jar:
            morsel = jar[COOKIE_NAME]
            return {"value": morsel.value, "raw": header, **{k: morsel[k] for k in morsel}}
    return None


async def sign_in(
    client: Any, key: str = CONTROL_KEY, *, origin: str | None = "own", **headers: str
) -> tuple[aiohttp.ClientResponse, str | None]:
    if origin == "own":
        origin = own_origin(client)
    if origin is not None:
        headers["Origin"] = origin
    response = await client.post(
        "/login", data={"key": key}, headers=headers, allow_redirects=False
    )
    await response.read()
    client.session.cookie_jar.clear()  # every test says which cookie it sends
    cookie = set_cookie(response)
    return response, (cookie["value"] if cookie else None)


def cookie_header(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={token}"}


async def cookie_ws(client: Any, token: str, origin: str | None = "own", **kwargs: Any):
    headers = cookie_header(token)
    if origin == "own":
        origin = own_origin(client)
    if origin is not None:
        headers["Origin"] = origin
    return await client.ws_connect("/", protocols=[SUBPROTOCOL], headers=headers, **kwargs)


# -- pages ------------------------------------------------------------------------------


async def test_root_sends_a_browser_without_session_to_sign_in(gateway_client):
    _, client = await gateway_client()
    response = await client.get("/", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login"
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    assert '<form method="post" action="/login"' in html
    assert 'name="key"' in html and 'type="password"' in html
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_root_renders_the_dashboard_with_a_session(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    response = await client.get("/", headers=cookie_header(token))
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    html = await response.text()
    assert 'data-role="control"' in html
    assert 'id="printer-list"' in html
    assert re.search(r'src="/static/dashboard\.js\?v=[0-9a-f]{12}"', html)
    assert re.search(r'src="/static/vendor/uplot/uPlot\.iife\.min\.js\?v=[0-9a-f]{12}"', html)
    assert "<script>" not in html  # no inline script: the CSP forbids it


async def test_root_still_upgrades_websockets(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    welcome = await receive_json(ws)
    assert welcome["type"] == "welcome" and welcome["role"] == "control"
    await ws.close()


async def test_login_page_redirects_when_signed_in(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    response = await client.get("/login", headers=cookie_header(token), allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"


# -- sign-in ------------------------------------------------------------------------------


async def test_sign_in_sets_the_session_cookie(gateway_client):
    _, client = await gateway_client()
    response, token = await sign_in(client)
    assert response.status == 303
    assert response.headers["Location"] == "/"
    cookie = set_cookie(response)
    assert cookie is not None and token
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["max-age"] == str(DEFAULT_MAX_AGE)
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP here
    assert CONTROL_KEY not in cookie["raw"]


async def test_sign_in_over_tls_sets_a_secure_cookie(gateway_client):
    _, client = await gateway_client()
    # A TLS-terminating proxy: the browser's origin is https with the same host.
    response, token = await sign_in(
        client, origin=f"https://{client.host}:{client.port}", **{"X-Forwarded-Proto": "https"}
    )
    assert response.status == 303 and token
    assert set_cookie(response)["secure"] is True


async def test_wrong_key_is_refused_without_a_cookie(gateway_client):
    _, client = await gateway_client()
    response = await client.post(
        "/login",
        data={"key": "not-the-key-123"},
        headers={"Origin": own_origin(client)},
        allow_redirects=False,
    )
    assert response.status == 401
    assert response.content_type == "text/html"
    assert set_cookie(response) is None
    html = await response.text()
    assert "not valid" in html and 'role="alert"' in html


async def test_empty_key_is_refused(gateway_client):
    _, client = await gateway_client()
    response, token = await sign_in(client, key="")
    assert response.status == 401 and token is None


async def test_sign_in_from_a_foreign_origin_is_refused(gateway_client):
    _, client = await gateway_client()
    response, token = await sign_in(client, origin=FOREIGN)
    assert response.status == 403 and token is None
    # Neither Origin nor Referer: refused too.
    response, token = await sign_in(client, origin=None)
    assert response.status == 403 and token is None
    # A foreign Referer without Origin: refused; our own Referer: accepted.
    response, token = await sign_in(client, origin=None, Referer=f"{FOREIGN}/page")
    assert response.status == 403 and token is None
    response, token = await sign_in(client, origin=None, Referer=f"{own_origin(client)}/login")
    assert response.status == 303 and token


async def test_sign_in_from_an_allowed_origin(gateway_client):
    _, client = await gateway_client(
        server=ServerConfig(allowed_origins=("https://printers.example",))
    )
    response, token = await sign_in(client, origin="https://printers.example")
    assert response.status == 303 and token


async def test_repeated_wrong_keys_are_slowed_down(gateway_client):
    _, client = await gateway_client()
    for _ in range(dashboard.SIGNIN_FAILURES):
        response, _ = await sign_in(client, key="wrong-key-0000")
        assert response.status == 401
    response, token = await sign_in(client)
    assert response.status == 429 and token is None
    assert response.headers["Retry-After"]


async def test_sign_out_clears_the_cookie(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    headers = {**cookie_header(token), "Origin": own_origin(client)}
    response = await client.post("/logout", headers=headers, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"
    cookie = set_cookie(response)
    assert cookie is not None and cookie["value"] == ""
    assert cookie["max-age"] == "0"
    # A foreign page cannot sign you out either.
    foreign = await client.post(
        "/logout", headers={**cookie_header(token), "Origin": FOREIGN}, allow_redirects=False
    )
    assert foreign.status == 403 and set_cookie(foreign) is None


# -- the cookie as a credential ------------------------------------------------------------


async def test_cookie_works_for_the_http_api(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    response = await client.get("/api/system/info", headers=cookie_header(token))
    assert response.status == 200
    assert "host" in await response.json()
    without = await client.get("/api/system/info")
    assert without.status == 401


async def test_cookie_state_changes_need_our_origin(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    url = "/api/printers/none/command"
    foreign = await client.post(
        url, json={"gcode": "M105"}, headers={**cookie_header(token), "Origin": FOREIGN}
    )
    assert foreign.status == 403
    assert (await foreign.json())["error"]["code"] == "forbidden"
    missing = await client.post(url, json={"gcode": "M105"}, headers=cookie_header(token))
    assert missing.status == 403
    own = await client.post(
        url, json={"gcode": "M105"}, headers={**cookie_header(token), "Origin": own_origin(client)}
    )
    assert own.status == 404  # past authentication: there is no such printer
    # A key in a header is not a browser credential: no Origin needed.
    keyed = await client.post(
        url, json={"gcode": "M105"}, headers={"Authorization": f"Key {CONTROL_KEY}"}
    )
    assert keyed.status == 404


async def test_monitor_cookie_cannot_change_anything(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client, key=MONITOR_KEY)
    response = await client.post(
        "/api/printers/none/command",
        json={"gcode": "M105"},
        headers={**cookie_header(token), "Origin": own_origin(client)},
    )
    assert response.status == 403
    assert (await response.json())["error"]["details"]["required_role"] == "control"
    ws = await cookie_ws(client, token)
    assert (await receive_json(ws))["role"] == "monitor"
    await ws.close()


async def test_cookie_websocket_from_our_own_page(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    ws = await cookie_ws(client, token)
    welcome = await receive_json(ws)
    assert welcome["type"] == "welcome" and welcome["role"] == "control"
    await ws.close()


@pytest.mark.parametrize("origin", [FOREIGN, None, "null", "other-scheme", "other-port"])
async def test_cookie_websocket_from_elsewhere_is_refused(gateway_client, origin):
    gateway, client = await gateway_client()
    _, token = await sign_in(client)
    if origin == "other-scheme":
        origin = f"https://{client.host}:{client.port}"
    elif origin == "other-port":
        origin = f"http://{client.host}:{client.port + 1}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await cookie_ws(client, token, origin=origin)
    assert caught.value.status == 403
    headers = {**cookie_header(token), "Upgrade": "websocket", "Connection": "Upgrade"}
    headers.update({"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    headers["Sec-WebSocket-Protocol"] = SUBPROTOCOL
    if origin:
        headers["Origin"] = origin
    response = await client.get("/", headers=headers)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"
    assert gateway.connections.refused_by_reason["forbidden_origin"] == 2


async def test_cookie_websocket_from_an_allowed_origin(gateway_client):
    _, client = await gateway_client(
        server=ServerConfig(allowed_origins=("https://printers.example",))
    )
    _, token = await sign_in(client)
    ws = await cookie_ws(client, token, origin="https://printers.example")
    assert (await receive_json(ws))["type"] == "welcome"
    await ws.close()


async def test_key_websocket_ignores_the_origin(gateway_client):
    _, client = await gateway_client()
    ws = await client.ws_connect(
        "/",
        protocols=[SUBPROTOCOL],
        headers={"Authorization": f"Key {CONTROL_KEY}", "Origin": FOREIGN},
    )
    assert (await receive_json(ws))["type"] == "welcome"
    await ws.close()
    ws = await client.ws_connect(f"/?key={CONTROL_KEY}", protocols=[SUBPROTOCOL], origin=FOREIGN)
    assert (await receive_json(ws))["type"] == "welcome"
    await ws.close()


async def test_a_presented_key_wins_over_the_cookie(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    response = await client.get(
        "/api/system/info", headers={**cookie_header(token), "Authorization": "Key wrong-key-1"}
    )
    assert response.status == 401


def _tamper(token: str) -> list[str]:
    version, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    forged_payload = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    return [
        f"{version}.{payload}.{flipped}",
        f"{version}.{forged_payload}.{signature}",
        f"v2.{payload}.{signature}",
        f"{payload}.{signature}",
        "garbage",
        token + "x" * 2000,
    ]


async def test_tampered_cookie_is_refused(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    for bad in _tamper(token):
        response = await client.get("/api/system/info", headers=cookie_header(bad))
        assert response.status == 401, bad
        body = await response.json()
        assert body["error"]["code"] == "auth_failed"
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await cookie_ws(client, bad)
        assert caught.value.status == 401
    page = await client.get("/", headers=cookie_header(_tamper(token)[0]), allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login"


async def test_expired_cookie_is_refused(gateway_client, tmp_path):
    gateway, client = await gateway_client()
    manager = SessionManager(gateway.config.state_dir)
    old = manager.issue(CONTROL_KEY, Role.CONTROL, now=time.time() - DEFAULT_MAX_AGE - 5)
    fresh = manager.issue(CONTROL_KEY, Role.CONTROL)
    assert (await client.get("/api/system/info", headers=cookie_header(fresh))).status == 200
    response = await client.get("/api/system/info", headers=cookie_header(old))
    assert response.status == 401
    assert "sign in again" in (await response.json())["error"]["message"]
    login = await client.get("/login", headers=cookie_header(old))
    assert "session has ended" in await login.text()


async def test_cookie_survives_a_restart_on_the_same_state_dir(gateway_client):
    gateway, client = await gateway_client()
    _, token = await sign_in(client)
    secret = Path(gateway.config.state_dir) / "session_secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    await client.close()
    # A new gateway process on the same state dir: same secret, same sessions.
    _, restarted = await gateway_client()
    assert (await restarted.get("/api/system/info", headers=cookie_header(token))).status == 200
    ws = await cookie_ws(restarted, token)
    assert (await receive_json(ws))["role"] == "control"
    await ws.close()


async def test_removing_a_key_ends_its_sessions(gateway_client, aiohttp_client, tmp_path):
    _, client = await gateway_client()
    _, control = await sign_in(client)
    _, monitor = await sign_in(client, key=MONITOR_KEY)
    # Restarted with the control key removed from the configuration.
    config = dataclasses.replace(
        make_config(tmp_path), keys=(ApiKey(MONITOR_KEY, Role.MONITOR, "mon"),)
    )
    restarted = await aiohttp_client(create_app(Gateway(config)))
    assert (await restarted.get("/api/system/info", headers=cookie_header(control))).status == 401
    assert (await restarted.get("/api/system/info", headers=cookie_header(monitor))).status == 200


def test_session_role_follows_the_key(tmp_path):
    manager = SessionManager(tmp_path)
    token = manager.issue("some-key-123", Role.CONTROL)
    assert manager.verify(token, [ApiKey("some-key-123", Role.CONTROL)]) is Role.CONTROL
    # The key was downgraded to monitor: so is the session.
    assert manager.verify(token, [ApiKey("some-key-123", Role.MONITOR)]) is Role.MONITOR
    assert manager.verify(token, [ApiKey("other-key-123", Role.CONTROL)]) is None
    # A new secret (the file deleted) ends every session.
    (tmp_path / "session_secret").unlink()
    assert SessionManager(tmp_path).verify(token, [ApiKey("some-key-123")]) is None


def test_session_secret_is_shared_and_private(tmp_path):
    first = SessionManager(tmp_path / "state")
    second = SessionManager(tmp_path / "state")
    token = first.issue("some-key-123", Role.MONITOR)
    assert second.verify(token, [ApiKey("some-key-123", Role.MONITOR)]) is Role.MONITOR
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / "session_secret").st_mode)
    assert mode == 0o600
    assert "some-key-123" not in token


# -- static files ----------------------------------------------------------------------------


async def test_static_files_have_cache_headers(gateway_client):
    _, client = await gateway_client()
    _, token = await sign_in(client)
    html = await (await client.get("/", headers=cookie_header(token))).text()
    urls = re.findall(r'(?:src|href)="(/static/[^"]+\?v=[0-9a-f]+)"', html)
    assert any("dashboard.js" in u for u in urls) and any("dashboard.css" in u for u in urls)
    for url in urls:
        response = await client.get(url)
        assert response.status == 200, url
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    js = await client.get("/static/dashboard.js")
    assert js.status == 200 and js.headers["Cache-Control"] == "no-cache"
    assert "javascript" in js.content_type
    stale = await client.get("/static/dashboard.js?v=000000000000")
    assert stale.headers["Cache-Control"] == "no-cache"
    assert (await client.get("/static/vendor/uplot/LICENSE")).status == 200
    assert (await client.get("/static/nope.js")).status == 404
    assert (await client.get("/static/../hydrogen/__init__.py")).status in (403, 404)
    assert (await client.get("/static/%2e%2e/templates/base.html")).status in (403, 404)


def test_web_dir_lookup_prefers_the_environment(tmp_path, monkeypatch):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "dashboard.html").write_text("x")
    monkeypatch.setenv(dashboard.WEB_DIR_ENV, str(tmp_path))
    assert dashboard.find_web_dir() == tmp_path.resolve()
    monkeypatch.setenv(dashboard.WEB_DIR_ENV, str(tmp_path / "missing"))
    checkout = Path(__file__).resolve().parents[1] / "web"
    assert dashboard.find_web_dir() == checkout.resolve()
    candidates = dashboard.candidate_web_dirs()
    assert any(str(c).endswith(os.path.join("share", "hydrogen", "web")) for c in candidates)


async def test_without_web_files_the_gateway_still_works(aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard, "find_web_dir", lambda: None)
    client = await aiohttp_client(create_app(Gateway(make_config(tmp_path))))
    page = await client.get("/login")
    assert page.status == 200 and page.content_type == "text/html"
    assert dashboard.WEB_DIR_ENV in await page.text()
    response, token = await sign_in(client)
    assert response.status == 303 and token
    assert (await client.get("/api/system/info", headers=cookie_header(token))).status == 200
    assert (await client.get("/static/dashboard.js")).status == 404


async def test_a_key_made_at_run_time_signs_in_with_its_name(gateway_client, tmp_path):
    """`hydrogen keys add` while the gateway runs: the new key signs in to the page,
    the session carries its name, and a JWT is not a key to sign in with."""
    _, client = await gateway_client()
    _, secret = KeyStore(tmp_path).add("night-shift", Role.CONTROL)
    response, token = await sign_in(client, secret)
    assert response.status == 303 and token
    ws = await cookie_ws(client, token)
    welcome = await receive_json(ws)
    assert (welcome["name"], welcome["role"]) == ("night-shift", "control")
    await ws.close()
    jwt = await client.post("/api/auth/token", headers={"X-Api-Key": secret})
    bearer = (await jwt.json())["token"]
    response, token = await sign_in(client, bearer)
    assert response.status == 401 and token is None
