"""Secrets never reach a log: malformed and well-formed requests over raw TCP to a real
`hydrogen serve`, then every line it wrote and every file in its state dir is searched.

aiohttp's own "Error handling request" line quotes the raw bytes its parser choked on:
an over-long ``Authorization`` header shows up as ``b'Key <the key>aaaa...'`` and an
obsolete folded header as its continuation line alone, with no header name nearby.
"""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

import pytest

from hydrogen.protocol import SUBPROTOCOL
from tests.hostile._gateway import logged_gateway, raw_exchange

KEY = "ctl-" + secrets.token_hex(12)  # the gateway's real key
WRONG = "wrong-" + secrets.token_hex(12)  # a key a client presented: still somebody's secret
QUERY = "query-" + secrets.token_hex(12)  # values of apikey= / token= / api_key=
COOKIE = "cookie-" + secrets.token_hex(12)  # another application's cookie on the same host
LONG = b"a" * 9000  # past aiohttp's 8190-byte line limit


def _upgrade(target: str, *headers: str) -> bytes:
    return _request(
        "GET",
        target,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}",
        *headers,
        close=False,
    )


def _request(method: str, target: str, *headers: str, body: bytes = b"", close=True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if close:
        lines.append("Connection: close")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def well_formed(port: int, session_token: str) -> list[bytes]:
    origin = "Origin: http://127.0.0.1"
    basic = base64.b64encode(f"user:{WRONG}".encode()).decode()
    return [
        _request("GET", "/api/printers", f"Authorization: Key {KEY}"),
        _request("GET", "/api/printers", f"authorization: key {KEY}"),
        _request("GET", "/api/printers", f"X-Api-Key: {KEY}"),
        _request("GET", "/api/printers", f"x-api-key: {WRONG}"),
        _request("GET", "/api/printers", f"Authorization: Key {WRONG}"),
        _request("GET", "/api/printers", f"Authorization: Bearer {WRONG}"),
        _request("GET", "/api/printers", f"Authorization: Basic {basic}"),
        _request("GET", "/api/printers", f"Proxy-Authorization: Basic {basic}"),
        _request("GET", f"/api/printers?apikey={QUERY}&token={QUERY}&api_key={QUERY}"),
        _request("GET", f"/api/printers?x=1;key={WRONG}"),
        _upgrade(f"/?key={KEY}"),
        _upgrade(f"/ws?%6Bey={KEY}"),  # the name percent-encoded: still accepted
        _upgrade(f"/?key={WRONG}"),
        _upgrade("/", f"Authorization: Key {KEY}"),
        _upgrade("/", f"Cookie: hydrogen_session={session_token}; other={COOKIE}"),
        _request("GET", "/", f"Cookie: hydrogen_session={session_token}; other={COOKIE}"),
        _request("GET", "/", f"Cookie: other={COOKIE}"),
        _request(
            "POST",
            "/login",
            origin,
            "Content-Type: application/x-www-form-urlencoded",
            body=f"key={WRONG}".encode(),
        ),
    ]


def malformed(session_token: str) -> list[bytes]:
    k, w, t = KEY.encode(), WRONG.encode(), session_token.encode()
    return [
        # over-long header lines: the error quotes the value without the header's name
        b"GET / HTTP/1.1\r\nAuthorization: Key " + k + LONG + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Api-Key: " + w + LONG + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nCookie: hydrogen_session=" + t + LONG + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nCookie: other=" + COOKIE.encode() + LONG + b"\r\n\r\n",
        # over-long request line
        b"GET /?key=" + k + LONG + b" HTTP/1.1\r\n\r\n",
        b"GET /?token=" + QUERY.encode() + LONG + b" HTTP/1.1\r\n\r\n",
        # obsolete line folding: the continuation carries the secret alone
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Key\r\n " + k + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Api-Key: " + w + b"\r\n\tfolded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Api-Key:\r\n " + w + b"\r\n\r\n",
        # bad request lines
        b"GE T /?key=" + k + b" HTTP/1.1\r\n\r\n",
        b"GET /?apikey=" + QUERY.encode() + b" HTTP/9.9\r\n\r\n",
        b"GET /?key=" + k + b"\x00 HTTP/1.1\r\n\r\n",
        b"GET /?%6Bey=" + k + b" HTTP/1.1 extra\r\n\r\n",
        b"\x16\x03\x01 /?key=" + k + b"\r\n\r\n",
        # bad header lines and bodies next to a secret
        b"GET / HTTP/1.1\r\nAuthorization Key " + k + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nAuthorization: Key " + k + b"\x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nCookie: hydrogen_session=" + t + b"\x7f\r\n\r\n",
        b"GET / HTTP/1.1\r\nAuthorization: Key " + k + b"\r\nContent-Length: x\r\n\r\n",
        b"POST /login HTTP/1.1\r\nX-Api-Key: "
        + w
        + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nkey="
        + k
        + b"\r\n",
        b"GET / HTTP/1.1\r\nAuthorization: Key "
        + k
        + b"\r\nX-Api-Key: "
        + w
        + b"\r\n: empty\r\n\r\n",
    ]


def sign_in(port: int) -> str:
    response = raw_exchange(
        port,
        _request(
            "POST",
            "/login",
            "Origin: http://127.0.0.1",
            "Content-Type: application/x-www-form-urlencoded",
            body=f"key={KEY}".encode(),
        ),
    )
    match = re.search(rb"Set-Cookie: hydrogen_session=([^;\s]+)", response)
    assert match, response[:300]
    return match.group(1).decode()


@pytest.mark.parametrize("parser", ["c", "python"])
def test_no_secret_reaches_a_log_line_or_the_state_dir(tmp_path: Path, parser: str) -> None:
    state = tmp_path / "state"
    env = {"AIOHTTP_NO_EXTENSIONS": "1"} if parser == "python" else {}
    args = ["--api-key", KEY, "--state-dir", str(state), "--log-level", "debug"]
    with logged_gateway(args, env) as gateway:
        token = sign_in(gateway.port)
        answers = [raw_exchange(gateway.port, r) for r in well_formed(gateway.port, token)]
        answers += [raw_exchange(gateway.port, r) for r in malformed(token)]
        status, output = gateway.stop()
    assert status == 0

    # The corpus did what it is meant to: upgrades, refusals and parser errors all happened.
    statuses = [a.split(b" ", 2)[1] for a in answers if a.startswith(b"HTTP/")]
    assert statuses.count(b"101") >= 3, statuses
    assert b"401" in statuses and b"400" in statuses
    assert output.count("Error handling request") >= 10, output[-3000:]
    assert "***" in output

    secrets_sent = {"key": KEY, "wrong key": WRONG, "query": QUERY, "cookie": COOKIE}
    secrets_sent["session cookie"] = token
    for name, secret in secrets_sent.items():
        # A prefix too: a truncated secret (aiohttp cuts quoted lines at 100 bytes) is a leak.
        for probe in (secret, secret[:12]):
            leaks = [line for line in output.splitlines() if probe in line]
            assert not leaks, f"{name} in the log: {leaks[0][:2000]}"
            for path in state.rglob("*"):
                if path.is_file():
                    assert probe.encode() not in path.read_bytes(), f"{name} in {path}"
    assert list(state.rglob("*.sqlite*")) or list(state.rglob("*.db*")), list(state.rglob("*"))
