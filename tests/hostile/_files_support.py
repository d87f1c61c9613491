"""Shared by the hostile file tests: seeds, raw HTTP over TCP, and the checks every
one of them ends with (nothing left behind, no traceback, the gateway serving on).

Each test runs several times (``repeat``), each run from its own random stream
derived from the ``seed`` fixture of tests/conftest.py: random per run,
``HYDROGEN_TEST_SEED=N`` replays it, and a failure prints it (every assertion
message repeats it too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONTROL_KEY
from tests.test_jobs import CONTROL, MONITOR, upload

repeats = pytest.mark.parametrize("repeat", [0, 1, 2], ids=["repeat=0", "repeat=1", "repeat=2"])


def seeded(seed: int, repeat: int) -> tuple[random.Random, str]:
    """The random stream of one repeat, and how to name it in a failure."""
    return random.Random(f"{seed}/{repeat}"), f"HYDROGEN_TEST_SEED={seed} repeat={repeat}"


def gcode(rng: random.Random, lines: int, *, tag: str = "") -> tuple[bytes, list[str]]:
    """A seeded G-code file (comments and blank lines included) and its commands."""
    commands = ["G28"]
    body = [f"; {tag} generated for a hostile test", "G28 ; home"]
    for _ in range(lines):
        command = (
            f"G1 X{rng.randint(0, 200)}.{rng.randint(0, 9)} Y{rng.randint(0, 200)} "
            f"E{rng.random():.3f}"
        )
        commands.append(command)
        body.append(command + ("  ; move" if rng.random() < 0.2 else ""))
        if rng.random() < 0.1:
            body.append("")
    return ("\n".join(body) + "\n").encode(), commands


def part(boundary: str, name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (
        f'; filename="{filename}"' if filename is not None else ""
    )
    return (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data


def request_head(path: str, boundary: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {CONTROL_KEY}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def raw_post(client: Any, path: str, boundary: str, body: bytes) -> tuple[int, bytes]:
    """Send a hand-built body byte for byte over a raw TCP socket; the status and
    the response body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request_head(path, boundary, len(body)) + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def temp_files(files_dir: Path) -> list[str]:
    return [p for p in os.listdir(files_dir) if p.startswith(".upload-")]


async def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """Poll (a bound on how long to wait, not an assertion on how long it took)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


async def send_and_drop(
    client: Any, path: str, boundary: str, body: bytes, declared: int, started: Any
) -> None:
    """Send ``body`` under a larger ``Content-Length`` over a raw socket, wait until
    the gateway is receiving it (``started()``), then vanish without a response and
    wait until the gateway has dropped what it received."""
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request_head(path, boundary, declared) + body)
    await writer.drain()
    try:
        await wait_until(started, "the gateway never started receiving the upload")
    finally:
        writer.transport.abort()


def assert_no_traceback(caplog: pytest.LogCaptureFixture, context: str) -> None:
    bad = [
        f"{r.name} {r.levelname}: {r.getMessage()[:200]}"
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.ERROR
    ]
    assert not bad, f"{context}: errors or tracebacks in the log: {bad}"


async def assert_serving(client: Any, context: str) -> None:
    """The gateway still answers, stores and serves a new upload."""
    assert (await client.get("/api/system/health")).status == 200, context
    data = b"G28\nG1 X1 Y1\n"
    response = await upload(client, "still-serving.gcode", data)
    assert response.status == 201, f"{context}: {await response.text()}"
    content = await client.get("/api/files/still-serving.gcode/content", headers=MONITOR)
    assert await content.read() == data, context
    response = await client.delete("/api/files/still-serving.gcode", headers=CONTROL)
    assert response.status == 204, context
