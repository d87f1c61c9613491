"""The parent's side of a serial-benchmark run: its processes and how it talks to them.

Every measurement (``serial_latency``, ``serial_commands``, ``serial_jobs``) starts a
fresh set of processes on a fresh pty: the simulated printer, then the gateway
(``hydrogen serve`` with the pty as its printer device) or a bare loop from
``serial_children``. ``Rig`` starts them, stops them all at the end (then prints the
gateway's profile, with ``--profile``) and reads their CPU time. Also here, because
more than one section uses them: ``WsClient``, a control connection to the gateway;
``run_pingpong``, one run of the bare ping-pong ceiling; and ``guarded``, which bounds
a measurement and turns its failure into a row's error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import pstats
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import SUBPROTOCOL, encode
from bench.fanout import BenchError, Child, progress
from bench.serial_common import PRINTER

#: The module the simulator and the bare loops run as (``python -m``).
CHILDREN = "bench.serial_children"

# Timeouts (seconds).
START_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
REPLY_TIMEOUT = 15.0


class Rig:
    """Child processes of one run: started on demand, all stopped in ``close``."""

    def __init__(self, workdir: Path, args: argparse.Namespace, name: str) -> None:
        self.workdir = workdir
        self.args = args
        self.name = name
        self.key = "bench-" + secrets.token_hex(12)
        self.link = workdir / f"{name}.pty"
        self.children: list[Child] = []
        self.sim: Child | None = None
        self.gateway: Child | None = None
        self.profile: Path | None = None

    async def start_sim(self) -> Child:
        self.sim = await self.start_child("sim", ["sim", "--link", str(self.link)])
        await self.sim.message(START_TIMEOUT)
        return self.sim

    async def sim_call(self, command: str, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        assert self.sim is not None
        await self.sim.send(command)
        return await self.sim.message(timeout)

    async def start_gateway(self, window: int = 1) -> int:
        """``hydrogen serve`` with the pty as its printer; returns the port once ready."""
        state = self.workdir / f"{self.name}-state"
        state.mkdir(exist_ok=True)
        config = self.workdir / f"{self.name}.toml"
        config.write_text(gateway_toml(self.link, window))
        serve = ["hydrogen", "serve", "--no-announce", "--config", str(config)]
        serve += ["--host", "127.0.0.1", "--port", "0", "--api-key", self.key]
        serve += ["--state-dir", str(state), "--log-level", "warning"]
        module, argv = serve[0], serve[1:]
        if self.args.profile:
            directory = Path(self.args.profile)
            directory.mkdir(parents=True, exist_ok=True)
            self.profile = directory / f"{self.name}.prof"
            module, argv = "cProfile", ["-o", str(self.profile), "-m", *serve]
        self.gateway = await self._start(f"{self.name}-gateway", module, argv)
        port = await self.gateway.port(START_TIMEOUT)
        await wait_ready(port, self.key)
        await asyncio.sleep(0.5)  # the M155 set-up line's ok, the first status frame
        return port

    async def start_child(self, name: str, argv: list[str]) -> Child:
        """A process of ``serial_children``: ``argv`` is its role and options."""
        return await self._start(f"{self.name}-{name}", CHILDREN, argv)

    async def _start(self, name: str, module: str, argv: list[str]) -> Child:
        child = await Child.start(name, module, argv, self.workdir)
        self.children.append(child)
        return child

    async def close(self) -> None:
        # Servers first (the gateway gets SIGTERM: its own graceful stop), the printer last.
        for child in reversed(self.children):
            if child is self.gateway and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
            await child.stop()
        self.children.clear()
        if self.profile is not None and self.profile.exists():
            print_profile(self.profile, self.args.profile_top)


def gateway_toml(link: Path, window: int) -> str:
    """Limits that let 100 clients from one address send thousands of requests a second.

    M73 progress lines are off so that what the firmware accepts is exactly the file
    (the digest check); they would add one line per percent.
    """
    return (
        "# Written by bench/serial.py\n"
        "[limits]\n"
        "max_connections = 4096\n"
        "max_connections_per_ip = 4096\n"
        "max_pending_connections = 4096\n"
        "max_pending_per_ip = 4096\n"
        "messages_per_second = 1000000.0\n"
        "message_burst = 1000000\n"
        "[status]\n"
        "interval = 1.0\n"
        "[jobs]\n"
        "m73_progress = false\n"
        "[[printers]]\n"
        f'name = "{PRINTER}"\n'
        f'device = "{link}"\n'
        f"window = {window}\n"
        "banner_timeout = 0.5\n"
        "handshake_timeout = 10.0\n"
    )


async def wait_ready(port: int, key: str) -> None:
    url = f"http://127.0.0.1:{port}/api/printers/{PRINTER}"
    headers = {"Authorization": f"Key {key}"}
    last: Any = None
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while True:
                    async with session.get(url, headers=headers) as response:
                        last = await response.json()
                    if last.get("state") == "ready":
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise BenchError(f"printer not ready within {READY_TIMEOUT:g} s: {last}") from None


def print_profile(path: Path, top: int) -> None:
    stats = pstats.Stats(str(path), stream=sys.stdout)
    print(f"\n-- cProfile of {path.stem} (top {top} by own time; cumulative below)")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


@contextlib.asynccontextmanager
async def rig(workdir: Path, args: argparse.Namespace, name: str) -> Any:
    r = Rig(workdir, args, name)
    try:
        yield r
    finally:
        await r.close()


def cpu_of(children: list[Child | None]) -> list[float]:
    return [c.cpu_seconds() if c is not None else 0.0 for c in children]


class WsClient:
    """One control connection: requests matched to replies by id; chosen frames queued."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, watch: tuple[str, ...] = ()) -> None:
        self.ws = ws
        self.watch = watch
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, port: int, key: str, watch: tuple[str, ...] = ()
    ) -> WsClient:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/",
            protocols=[SUBPROTOCOL],
            headers={"Authorization": f"Key {key}"},
        )
        return cls(ws, watch)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                waiter = self._waiting.pop(frame.get("id"), None)  # type: ignore[arg-type]
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(frame)
                elif frame.get("type") in self.watch:
                    self.frames.put_nowait(frame)
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("connection closed"))

    async def request(self, body: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        rid = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = waiter
        await self.ws.send_str(encode(body | {"id": rid}))
        async with asyncio.timeout(timeout):
            reply = await waiter
        if reply.get("type") == "error":
            raise BenchError(f"{body.get('type')}: {reply.get('message')} ({reply})")
        return reply

    async def close(self) -> None:
        self._task.cancel()
        await self.ws.close()


async def run_pingpong(
    args: argparse.Namespace,
    workdir: Path,
    name: str,
    source: list[str],
    window: int,
    io: str,
    expected_digest: str | None,
) -> dict[str, Any]:
    """A ping-pong child over a fresh simulator; the result, CPU use and digest check."""
    async with rig(workdir, args, name) as r:
        await r.start_sim()
        child = await r.start_child(
            "pingpong",
            ["pingpong", "--link", str(r.link), "--window", str(window), "--io", io, *source],
        )
        await child.message(START_TIMEOUT)
        await r.sim_call("reset")
        cpu0 = cpu_of([child, r.sim])
        await child.send("go")
        result = await child.message(START_TIMEOUT + args.lines / 200)
        cpu = [b - a for a, b in zip(cpu0, cpu_of([child, r.sim]), strict=True)]
        sim = await r.sim_call("digest")
    result["client_cpu_pct"] = 100.0 * cpu[0] / result["elapsed"]
    result["sim_cpu_pct"] = 100.0 * cpu[1] / result["elapsed"]
    result["sim"] = sim
    result["digest_ok"] = None if expected_digest is None else sim["digest"] == expected_digest
    return result


# -- bounded runs --------------------------------------------------------------------


async def guarded(name: str, budget: float, run: Callable[[], Awaitable[Any]]) -> Any:
    """``run()`` within ``budget`` seconds; a failure becomes a message, not a crash."""
    try:
        async with asyncio.timeout(budget):
            return await run()
    except (BenchError, TimeoutError, OSError, aiohttp.ClientError, KeyError) as exc:
        text = str(exc).strip() or type(exc).__name__
        progress(f"  {name}: ERROR {text}")
        return text
