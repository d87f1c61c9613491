"""Shared fixtures: a real gateway on a real loopback TCP port."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse
from aiohttp.test_utils import TestClient

from hydrogen.config import ApiKey, Config, LimitsConfig, StatusConfig, load_config
from hydrogen.gateway import Gateway
from hydrogen.jobs.manager import JobManager
from hydrogen.printers.manager import PrinterManager
from hydrogen.protocol import SUBPROTOCOL, Role
from hydrogen.server.app import create_app
from tests.browser import browser, chromium  # noqa: F401 - the browser tests' shared Chromium

CONTROL_KEY = "control-key-0123456789"
MONITOR_KEY = "monitor-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"


def make_config(tmp_path: Any, *, limits: dict[str, Any] | None = None, **changes: Any) -> Config:
    base = load_config(None, environ={}, overrides={"state_dir": str(tmp_path)})
    return dataclasses.replace(
        base,
        keys=changes.pop(
            "keys",
            (
                ApiKey(CONTROL_KEY, Role.CONTROL, "ctl"),
                ApiKey(MONITOR_KEY, Role.MONITOR, "mon"),
                ApiKey(ADMIN_KEY, Role.ADMIN, "adm"),
            ),
        ),
        status=StatusConfig(interval=0.1, slow_interval=1.0),
        limits=dataclasses.replace(LimitsConfig(), **(limits or {})),
        **changes,
    )


GatewayFactory = Callable[..., Awaitable[tuple[Gateway, TestClient]]]


@pytest.fixture
async def gateway_client(aiohttp_client: Any, tmp_path: Any) -> AsyncIterator[GatewayFactory]:
    """Start a gateway app on a real socket; returns (gateway, client)."""
    clients: list[tuple[Gateway, TestClient]] = []

    async def factory(**config_changes: Any) -> tuple[Gateway, TestClient]:
        gateway = Gateway(make_config(tmp_path, **config_changes))
        printers = PrinterManager(gateway)
        jobs = JobManager(gateway, printers)
        client = await aiohttp_client(create_app(gateway, printers, jobs))
        client.printers = printers  # type: ignore[attr-defined]
        client.jobs = jobs  # type: ignore[attr-defined]
        clients.append((gateway, client))
        return gateway, client

    yield factory
    await forget_closed_websockets(clients)


async def forget_closed_websockets(clients: list[tuple[Gateway, TestClient]]) -> None:
    """Before the server shuts down: close the WebSockets a test left open (as
    ``TestClient.close`` does next), wait for the server's handlers to end, and drop
    the closed sockets from the app's set of open ones.

    The shutdown waits ``SHUTDOWN_FLUSH_SECONDS`` (0.5 s, hydrogen/server/app.py) for
    a last status frame whenever that set is not empty; but the handler never removes
    a closed socket from it (a WeakSet, and aiohttp keeps closed sockets referenced),
    so every gateway test's teardown waited half a second for nothing: close_all has
    nothing to close then. A socket still open is left where it is, and waited for."""
    for gateway, client in clients:
        for ws in list(client._websockets):
            await ws.close()
        # bounded: a handler that does not end just leaves the shutdown its usual wait
        for _ in range(200):
            if not gateway.connections.active:
                break
            await asyncio.sleep(0.01)


async def connect(
    client: TestClient, key: str | None = CONTROL_KEY, path: str = "/", **kwargs: Any
) -> ClientWebSocketResponse:
    headers = {"Authorization": f"Key {key}"} if key else {}
    return await client.ws_connect(path, protocols=[SUBPROTOCOL], headers=headers, **kwargs)


async def receive_json(ws: ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    return await ws.receive_json(timeout=timeout)


async def receive_until(
    ws: ClientWebSocketResponse,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 5.0,
    limit: int = 500,
) -> dict[str, Any]:
    """Read frames until one matches (status frames keep arriving in between)."""
    for _ in range(limit):
        frame = await ws.receive_json(timeout=timeout)
        if predicate(frame):
            return frame
    raise AssertionError("no matching frame")


async def subscribe(ws: ClientWebSocketResponse, *topics: str, rid: Any = "sub") -> dict[str, Any]:
    """Subscribe and wait for the reply (later frames then belong to these topics)."""
    await ws.send_json({"type": "subscribe", "id": rid, "topics": list(topics)})
    return await receive_until(ws, lambda f: f.get("id") == rid)


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """One seed for every random source a test drives (simulator faults, generated
    input). Random per run, so runs explore; ``HYDROGEN_TEST_SEED=N`` replays one,
    and a failing test prints the line that does."""
    value = int(os.environ.get("HYDROGEN_TEST_SEED") or random.SystemRandom().randrange(1 << 31))
    request.node.user_properties.append(("seed", value))
    return value


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"replay with HYDROGEN_TEST_SEED={value}"))
    return report
