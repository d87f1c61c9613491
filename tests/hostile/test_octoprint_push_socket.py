"""The OctoPrint push socket under hostile clients: garbage and binary frames, wrong
sessions, throttles, handshakes dropped halfway, a printer that does not exist, a
revoked key, clients that never read. Random input comes from the ``seed`` fixture."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import socket
from typing import Any

import aiohttp

from hydrogen.octoprint import push
from hydrogen.server.keys import GATEWAY
from tests.conftest import ADMIN_KEY
from tests.hostile._octoprint_support import (
    CONTROL,
    adapter_of,
    check_log,
    login,
    octo,
)

__all__ = ["octo"]  # the fixture, re-used


async def test_the_push_socket_shrugs_off_garbage_and_closes_on_what_it_must(octo, caplog, seed):
    caplog.set_level(logging.DEBUG)
    client = octo
    session = await login(client)
    rng = random.Random(seed)
    ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    assert "connected" in await ws.receive_json(timeout=5)
    garbage: list[Any] = [
        b"\x00\xff" * 100,
        "{nope",
        "[1, 2]",
        '"auth"',
        "null",
        json.dumps({"auth": 5}),
        json.dumps({"auth": None}),
        json.dumps({"auth": ["ctl", "x"]}),
        *(json.dumps({"throttle": v}) for v in (0, -5, 10**40, "7", None, True, 1.5, [], {})),
        '{"throttle": NaN}',
        '{"throttle": 1e999}',
        '{"a":' * 500 + "1" + "}" * 500,
        bytes(rng.randrange(256) for _ in range(2000)),
    ]
    rng.shuffle(garbage)
    for message in garbage:
        await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
    await ws.send_str(json.dumps({"auth": session}))
    history = await ws.receive_json(timeout=5)
    assert "history" in history
    await ws.send_str(json.dumps({"throttle": 10**40}))
    await ws.send_str(json.dumps({"auth": "ctl:a-second-auth-is-ignored"}))
    await ws.send_str("x" * (push.MAX_MESSAGE_BYTES + 1))  # too big: closed
    closing = await ws.receive(timeout=5)
    while closing.type is aiohttp.WSMsgType.TEXT:
        closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    await ws.close()

    for auth in ("ctl:wrong", session.replace("ctl", "mon"), ":", "x" * 3000, session + "x"):
        ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
        await ws.receive_json(timeout=5)
        await ws.send_str(json.dumps({"auth": auth}))
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4003, (auth, closing)
        await ws.close()

    # a valid session at a printer that does not exist, or one that is offline
    for printer in ("nope", "ghost", "%00"):
        ws = await client.ws_connect(f"/octoprint/{printer}/sockjs/websocket")
        await ws.receive_json(timeout=5)
        await ws.send_str(json.dumps({"auth": session}))
        answer = await ws.receive(timeout=5)
        assert answer.type in (
            aiohttp.WSMsgType.TEXT,
            aiohttp.WSMsgType.CLOSE,
        ), (printer, answer)
        await ws.close()
    # the socket's URL without an upgrade
    response = await client.get("/octoprint/mk3/sockjs/websocket")
    assert response.status == 400 and isinstance((await response.json())["error"], str)
    await asyncio.sleep(0.1)
    check_log(caplog, f"push garbage (HYDROGEN_TEST_SEED={seed})", session.split(":")[1])
    assert not adapter_of(client).sockets


def upgrade_request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def test_sockets_dropped_mid_handshake_leave_nothing_behind(octo, caplog, seed):
    caplog.set_level(logging.INFO)
    client = octo
    rng = random.Random(seed)
    adapter = adapter_of(client)
    hub = client.app_[GATEWAY].hub
    subscribers = len(hub.subscribers)
    session = await login(client)
    request = upgrade_request("/octoprint/mk3/sockjs/websocket")
    auth = json.dumps({"auth": session}).encode()
    # a masked client text frame of ``auth``
    frame = bytes([0x81, 0x80 | len(auth)]) + b"\0\0\0\0" + auth if len(auth) < 126 else None
    assert frame is not None

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        cut = rng.choice(("head", "upgraded", "auth", "half frame"))
        if cut == "head":
            writer.write(request[: rng.randrange(1, len(request))])
        else:
            writer.write(request)
            if cut in ("auth", "half frame"):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(frame if cut == "auth" else frame[: len(frame) // 2])
        await writer.drain()
        await asyncio.sleep(rng.random() * 0.05)
        writer.transport.abort()

    await asyncio.gather(*(one(i) for i in range(60)))
    async with asyncio.timeout(10):
        while adapter.sockets or len(hub.subscribers) > subscribers:
            await asyncio.sleep(0.05)
    check_log(caplog, f"dropped handshakes (HYDROGEN_TEST_SEED={seed})", session.split(":")[1])
    assert (await client.get("/api/version", headers=CONTROL)).status == 200


async def test_a_session_at_a_printer_that_does_not_exist_is_closed_not_answered(octo, caplog):
    """A passive login's session sees every printer its key does, also at
    ``/octoprint/nope/sockjs/websocket``: the upgraded socket is closed (4003), not
    sent an HTTP answer in the middle of its frames."""
    caplog.set_level(logging.INFO)
    client = octo
    session = await login(client)
    for printer in ("nope", "%00", "MK3"):
        ws = await client.ws_connect(f"/octoprint/{printer}/sockjs/websocket")
        assert "connected" in await ws.receive_json(timeout=5)
        await ws.send_str(json.dumps({"auth": session}))
        closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4003, (printer, closing)
        await ws.close()
    assert not adapter_of(client).sockets
    check_log(caplog, "a session at no printer", session.split(":")[1])


async def test_the_socket_url_without_an_upgrade_is_octoprints_400(octo, caplog):
    caplog.set_level(logging.INFO)
    for headers in ({}, CONTROL):
        response = await octo.get("/octoprint/mk3/sockjs/websocket", headers=headers)
        assert response.status == 400
        assert isinstance((await response.json())["error"], str)
    check_log(caplog, "no upgrade")


async def test_a_revoked_keys_session_opens_no_push_socket_and_ends_the_open_ones(octo, caplog):
    """A passive login's session is the key's: once the key is revoked, the session
    authenticates no new push socket (4003), and the sockets it opened end, as
    Hydrogen's own WebSocket logins of that key do."""
    caplog.set_level(logging.INFO)
    client = octo
    admin = {"X-Api-Key": ADMIN_KEY}
    added = await client.post("/api/keys", json={"name": "phone", "role": "monitor"}, headers=admin)
    assert added.status == 201, await added.text()
    secret = (await added.json())["secret"]
    session = await login(client, secret)
    ws = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    assert "connected" in await ws.receive_json(timeout=5)
    await ws.send_str(json.dumps({"auth": session}))
    assert "history" in await ws.receive_json(timeout=5)

    assert (await client.delete("/api/keys/phone", headers=admin)).status == 200
    async with asyncio.timeout(5):
        while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            pass
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4003, message
    await ws.close()

    fresh = await client.ws_connect("/octoprint/mk3/sockjs/websocket")
    await fresh.receive_json(timeout=5)
    await fresh.send_str(json.dumps({"auth": session}))
    closing = await fresh.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4003, closing
    await fresh.close()
    check_log(caplog, "a revoked key's session", secret, session.split(":")[1])


class Stuck:
    """A push socket whose client never reads: every send waits forever."""

    def __init__(self, ask: Any) -> None:
        self.ask = ask
        self.sends = 0
        self.dropped = False

    async def send(self, message: Any) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    def drop(self) -> None:
        self.dropped = True


async def test_a_push_client_that_never_reads_holds_up_no_one(octo, caplog):
    """An upload tells every push socket of the printer; one whose client stopped
    reading (its sends wait on a full socket) must not hold up the upload's answer."""
    caplog.set_level(logging.INFO)
    client = octo
    adapter = adapter_of(client)
    ask = type("A", (), {"printer": "mk3"})()
    stuck = Stuck(ask)
    adapter.sockets.add(stuck)
    form = aiohttp.FormData()
    form.add_field("file", b"G28\n", filename="told.gcode")
    async with asyncio.timeout(5):
        response = await client.post("/octoprint/mk3/api/files/local", data=form, headers=CONTROL)
    assert response.status == 201
    assert stuck.sends == 1 and stuck.dropped and stuck not in adapter.sockets
    check_log(caplog, "a stuck push client")


async def test_a_real_push_client_that_never_reads_is_bounded(octo, caplog, monkeypatch):
    """A raw WebSocket that authenticates and then never reads, sent 64 KiB messages
    every 10 ms: what the gateway keeps for it stays bounded (the sender waits on the
    socket once aiohttp's writer has 64 KiB unsent), everyone else is served
    meanwhile, an upload's event to it does not hold up the upload, and once it goes
    away nothing of it is left. (A client that stays is ended by the heartbeat.)"""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(push, "CURRENT_INTERVAL", 0.01)
    snapshot, count = push.PushSocket.snapshot, itertools.count()

    async def padded(self: Any, *, history: bool) -> dict[str, Any]:
        return {**await snapshot(self, history=history), "pad": f"{next(count)}" + "x" * 65536}

    monkeypatch.setattr(push.PushSocket, "snapshot", padded)
    client = octo
    session = await login(client)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(upgrade_request("/octoprint/mk3/sockjs/websocket"))
    await reader.readuntil(b"\r\n\r\n")
    auth = json.dumps({"auth": session}).encode()
    writer.write(bytes([0x81, 0x80 | len(auth)]) + b"\0\0\0\0" + auth)
    await writer.drain()
    writer.transport.pause_reading()
    adapter = adapter_of(client)
    async with asyncio.timeout(5):
        while not adapter.sockets:
            await asyncio.sleep(0.01)
    (pushed,) = adapter.sockets
    transport = pushed.transport
    assert transport is not None
    largest = 0
    for _ in range(30):
        await asyncio.sleep(0.05)
        largest = max(largest, transport.get_write_buffer_size())
        assert (await client.get("/api/version", headers=CONTROL)).status == 200
    assert 0 < largest < 512 * 1024, largest  # blocked on the socket, and bounded
    form = aiohttp.FormData()
    form.add_field("file", b"G28\n", filename="told.gcode")
    async with asyncio.timeout(5):
        response = await client.post("/octoprint/mk3/api/files/local", data=form, headers=CONTROL)
    assert response.status == 201
    assert transport.get_write_buffer_size() < 512 * 1024
    writer.transport.abort()
    async with asyncio.timeout(10):
        while adapter.sockets:
            await asyncio.sleep(0.05)
    check_log(caplog, "a client that never reads", session.split(":")[1])


# -- races --------------------------------------------------------------------------------
