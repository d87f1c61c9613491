"""Serial-link benchmark: the gateway's printer path against bare loops over the same pty.

Usage (from the repository root)::

    python bench/serial.py                          # all three measurements, ~2 minutes
    python bench/serial.py --repeat 3 --json s.json # medians of 3 rounds (~5 minutes)
    python bench/serial.py --only latency           # one or more of: latency,commands,jobs
    python bench/serial.py --only jobs --lines 100000 --windows 1
    python bench/serial.py --markers 1000 --subscribers 100 --client raw
    python bench/serial.py --quick                  # small counts: a smoke test (~40 s)
    python bench/serial.py --only jobs --profile /tmp/prof   # gateway under cProfile

Three measurements, each against a baseline run in the same invocation, under
the same noise, and reported as a ratio (the reference machine is a shared
2-core VM: absolute figures move from run to run, ratios much less):

1. **latency**: a firmware line to 100 WebSocket subscribers of
   ``printer/sim/serial``. The simulator process writes ``echo:bench <seq> <t>``
   to its pty master, ``t`` being ``time.time()`` just before the write; a
   subscriber's receive time minus ``t`` is the latency (one host, one clock).
   Baseline: ``serial_asyncio`` readline -> ``for ws in clients: await
   ws.send_str(frame)`` in a bare aiohttp server, same frame shape. A third row,
   ``pty``, is one reader on the pty and no WebSocket: the floor. Subscribers
   unsubscribe from ``status`` unless ``--with-status`` (like for like).
2. **commands**: ``{"type": "command", "gcode": "G91"}`` round trips over the
   WebSocket, 1, 8 and 32 in flight. Ceiling: a bare pyserial-asyncio loop
   writing ``N<n> G91*<cs>`` and reading until ``ok``, one at a time.
3. **jobs**: a generated file of ``--lines`` G1 lines uploaded and printed as a
   job; lines/s = lines / (job ``ended_at`` - ``started_at``). Ceiling: the
   same numbered, checksummed ``ok`` ping-pong over the same kind of pty with
   one line in flight (pyserial-asyncio; a blocking-fd loop is shown too).
   Every run checks the simulator's digest of accepted commands against the
   file's: each line exactly once, in order.

Processes: the simulated Marlin (``SimulatedPrinter`` on a real pty, instant
``ok``) runs in its own process and the server under test in another (the
gateway is ``python -m hydrogen serve`` with the pty's path as its printer
device, exactly as with hardware); WebSocket clients and the orchestration run
in this process. Nothing in ``hydrogen/`` is changed or patched for the
benchmark; the only private hook used is ``SimulatedPrinter._emit`` (in the
simulator process) to write the marker lines.

With ``--repeat N`` every section runs N times (baseline and gateway back to
back each time) and the targets are judged on the medians. The report starts
with the commit measured (``+dirty`` if ``hydrogen/`` has local changes).

Every wait is bounded, every child is stopped (then killed) in a ``finally``,
and only 127.0.0.1 is used. The exit status is 1 if a run failed or a line was
not accepted exactly once; a missed target is reported (MISS), not an error.
``--json PATH`` writes every figure; ``--logs DIR`` keeps the children's stderr.
``--profile DIR`` runs the gateway under cProfile and prints where its time goes
(profiled figures are slower: do not compare them with unprofiled ones).

This file is named like pyserial's top-level module; run as ``python
bench/serial.py`` its directory would shadow pyserial, so it takes that
directory off ``sys.path`` before anything imports ``serial``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import pstats
import random
import secrets
import select
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import reduce
from operator import xor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._client import BenchClient, Collector, client_frame, upgrade_request
from bench._common import emit, encode, raise_nofile_limit, serve_loopback, stdin_reader
from bench.fanout import BenchError, Child, machine_facts

if TYPE_CHECKING:
    from hydrogen.simulator import SimulatedPrinter

ROOT = Path(__file__).resolve().parent.parent
SUBPROTOCOL = "hydrogen-protocol"
PRINTER = "sim"
SERIAL_TOPIC = f"printer/{PRINTER}/serial"
JOB_TOPIC = f"printer/{PRINTER}/job"
MARKER = "echo:bench "
BAUD = 115200
#: Commands per WebSocket connection in the commands test (the dispatcher allows 32
#: background requests pending per connection).
IN_FLIGHT_PER_CONNECTION = 16
#: The command every path sends in the commands test: the simulator acknowledges it
#: at once and it is not one of the "long" commands that make the printer busy.
PING_COMMAND = "G91"

# The targets.
TARGET_P99_MS = 5.0
TARGET_JOB_SHARE = 0.80

# Timeouts (seconds).
START_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
REPLY_TIMEOUT = 15.0
HANDSHAKE_TIMEOUT = 10.0
LINE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 30.0

_OP_TEXT = 0x1


def _unshadow_pyserial() -> None:
    """Drop this file's directory from ``sys.path`` (see the module docstring)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    loaded = sys.modules.get("serial")
    if loaded is not None and getattr(loaded, "__file__", "") == os.path.abspath(__file__):
        del sys.modules["serial"]


# -- small helpers -----------------------------------------------------------------


def framed(number: int, command: str) -> bytes:
    """``N<n> <command>*<cs>\\n``: Marlin's numbered, checksummed line."""
    body = f"N{number} {command}"
    return f"{body}*{reduce(xor, body.encode('ascii'), 0)}\n".encode("ascii")


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def job_commands(lines: int) -> list[str]:
    """The job file's commands: a short header, then ``lines - 3`` extrusion moves.

    Already in the form the gateway sends (``validate_gcode`` leaves them as they
    are), so the simulator's digest can be compared with the file's.
    """
    header = ["G90", "M82", "G92 E0"]
    moves = [
        f"G1 X{(i * 37) % 200}.{i % 10} Y{(i * 7) % 200}.{(i * 3) % 10} E{i * 0.0213:.4f}"
        + (" F1800" if i % 50 == 0 else "")
        for i in range(max(0, lines - len(header)))
    ]
    return (header + moves)[:lines]


def gcode_file(commands: list[str]) -> bytes:
    """The uploaded file: a comment, a blank line, then one command per line."""
    return ("; generated by bench/serial.py\n\n" + "\n".join(commands) + "\n").encode()


# -- child: the simulated printer ---------------------------------------------------


async def child_sim(args: argparse.Namespace) -> None:
    """A ``SimulatedPrinter`` at ``--link``; commands on stdin, answers on stdout.

    ``markers COUNT MIN_MS MAX_MS`` writes COUNT marker lines, each
    ``echo:bench <seq> <time.time()>``, at random intervals (so they never fall
    into step with a periodic task); ``reset`` clears the accepted-command digest;
    ``digest`` reports it. End of file stops the printer.
    """
    from hydrogen.simulator import SimulatedPrinter

    sim = SimulatedPrinter(link=args.link, seed=1)
    await sim.start()
    emit({"ready": True, "pty": sim.slave_path})
    try:
        reader = await stdin_reader()
        while line := await reader.readline():
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "markers" and len(words) == 4:
                count, low, high = int(words[1]), float(words[2]), float(words[3])
                sent = await _write_markers(sim, count, low / 1000.0, high / 1000.0)
                emit({"markers": sent})
            elif words[0] == "reset":
                sim.reset_digest()
                emit({"reset": True})
            elif words[0] == "digest":
                emit(
                    {
                        "digest": sim.accepted_digest,
                        "accepted_lines": sim.accepted_lines,
                        "lines_received": sim.lines_received,
                        "resend_requests": sim.resend_requests,
                        "crash": None if sim.crash is None else repr(sim.crash),
                    }
                )
    finally:
        await sim.stop()


async def _write_markers(sim: SimulatedPrinter, count: int, low: float, high: float) -> int:
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    next_at = loop.time()
    for seq in range(count):
        next_at += rng.uniform(low, high)
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        # The clock is read immediately before the bytes go into the pty master.
        sim._emit(f"{MARKER}{seq} {time.time():.6f}")
    return count


# -- child: the bare fan-out baseline ------------------------------------------------


async def child_fanout(args: argparse.Namespace) -> None:
    """Baseline for the latency test: pty readline -> ``for ws in clients: send_str``.

    Frames have the gateway's shape (``hydrogen.printers.printer._publish_serial``),
    encoded once per line. Just enough protocol for the clients: a request with an
    ``id`` gets a reply of the matching type; ``subscribe`` adds the client.
    """
    import serial_asyncio
    from aiohttp import WSMsgType, web

    from hydrogen.protocol import utc_iso

    clients: set[web.WebSocketResponse] = set()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), compress=False)
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                body = json.loads(msg.data)
                kind = body.get("type")
                if kind == "subscribe":
                    clients.add(ws)
                await ws.send_str(encode({"type": f"{kind}d", "id": body.get("id")}))
        finally:
            clients.discard(ws)
        return ws

    runner, port = await serve_loopback(handler)
    reader, writer = await serial_asyncio.open_serial_connection(url=args.link, baudrate=BAUD)

    async def pump() -> None:
        while line := await reader.readline():
            text = line.decode("ascii", "replace").strip()
            if not text:
                continue
            frame = encode(
                {
                    "type": "serial",
                    "topic": SERIAL_TOPIC,
                    "printer": PRINTER,
                    "direction": "recv",
                    "line": text,
                    "time": utc_iso(time.time()),
                }
            )
            for ws in tuple(clients):
                try:
                    await ws.send_str(frame)
                except (ConnectionError, RuntimeError):
                    clients.discard(ws)

    task = asyncio.create_task(pump())
    emit({"port": port})
    try:
        control = await stdin_reader()
        while await control.readline():
            pass
    finally:
        task.cancel()
        writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*(ws.close() for ws in tuple(clients)))
                await runner.cleanup()


# -- child: the pty alone -------------------------------------------------------------


async def child_probe(args: argparse.Namespace) -> None:
    """The floor of the latency test: pty -> pyserial-asyncio readline, no WebSocket.

    ``clear`` forgets what was measured; ``report`` answers ``{"latencies": [ms, ...]}``.
    """
    import serial_asyncio

    reader, writer = await serial_asyncio.open_serial_connection(url=args.link, baudrate=BAUD)
    latencies: list[float] = []

    async def pump() -> None:
        while line := await reader.readline():
            now = time.time()
            text = line.decode("ascii", "replace").strip()
            if text.startswith(MARKER):
                latencies.append((now - float(text.split()[2])) * 1000.0)

    task = asyncio.create_task(pump())
    emit({"ready": True})
    try:
        control = await stdin_reader()
        while line := await control.readline():
            if line.strip() == b"clear":
                latencies.clear()
                emit({"cleared": True})
            elif line.strip() == b"report":
                emit({"latencies": latencies})
    finally:
        task.cancel()
        writer.close()


# -- child: the bare ping-pong ceiling -----------------------------------------------


def _load_commands(args: argparse.Namespace) -> list[str]:
    if args.file:
        return [c for c in Path(args.file).read_text().splitlines() if c]
    return [args.command] * args.count


async def child_pingpong(args: argparse.Namespace) -> None:
    """The ceiling: numbered, checksummed lines, ``--window`` in flight, until each ``ok``.

    Handshake (``N0 M110 N0``), then ``BENCH {"ready": true}``; streams on ``go``
    and reports ``{"lines", "elapsed", "rtt_ms": [p50, p99, max]}``. The simulator
    has no faults, so any error or resend request fails the run (nothing to retry).
    """
    commands = _load_commands(args)
    if args.io == "sync":
        await asyncio.to_thread(_pingpong_blocking, args, commands)
        return
    import serial_asyncio

    reader, writer = await serial_asyncio.open_serial_connection(url=args.link, baudrate=BAUD)
    try:
        writer.write(framed(0, "M110 N0"))
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            while not (await reader.readline()).startswith(b"ok"):
                pass
        emit({"ready": True})
        control = await stdin_reader()
        if (await control.readline()).strip() != b"go":
            return
        pending: deque[float] = deque()
        rtts: list[float] = []
        clock = time.perf_counter
        total, sent, window = len(commands), 0, args.window
        started = clock()
        while sent < total or pending:
            while sent < total and len(pending) < window:
                writer.write(framed(sent + 1, commands[sent]))
                pending.append(clock())
                sent += 1
            line = await reader.readline()  # no timer per line: the parent bounds the run
            if line.startswith(b"ok"):
                rtts.append(clock() - pending.popleft())
            elif line.startswith((b"Error", b"Resend", b"rs", b"!!")) or not line:
                raise BenchError(f"firmware: {line!r} after {len(rtts)} lines")
        emit(_pingpong_result(len(rtts), clock() - started, rtts))
    finally:
        writer.close()


def _pingpong_blocking(args: argparse.Namespace, commands: list[str]) -> None:
    """The same loop without asyncio: pyserial opens the tty, then select + os.read/write."""
    import serial

    port = serial.Serial(args.link, BAUD, timeout=0)
    fd = port.fileno()
    buffer = bytearray()

    def readline() -> bytes:
        while True:
            end = buffer.find(b"\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                return line
            ready, _, _ = select.select([fd], [], [], LINE_TIMEOUT)
            if not ready:
                raise BenchError(f"no line from the firmware within {LINE_TIMEOUT:g} s")
            buffer.extend(os.read(fd, 4096))

    try:
        os.write(fd, framed(0, "M110 N0"))
        while not readline().startswith(b"ok"):
            pass
        emit({"ready": True})
        if sys.stdin.readline().strip() != "go":
            return
        pending: deque[float] = deque()
        rtts: list[float] = []
        clock = time.perf_counter
        total, sent, window = len(commands), 0, args.window
        started = clock()
        while sent < total or pending:
            while sent < total and len(pending) < window:
                os.write(fd, framed(sent + 1, commands[sent]))
                pending.append(clock())
                sent += 1
            line = readline()
            if line.startswith(b"ok"):
                rtts.append(clock() - pending.popleft())
            elif line.startswith((b"Error", b"Resend", b"rs", b"!!")):
                raise BenchError(f"firmware: {line!r} after {len(rtts)} lines")
        emit(_pingpong_result(len(rtts), clock() - started, rtts))
    finally:
        port.close()


def _pingpong_result(lines: int, elapsed: float, rtts: list[float]) -> dict[str, Any]:
    ms = [r * 1000.0 for r in rtts]
    return {"lines": lines, "elapsed": elapsed, "rtt_ms": [pct(ms, 0.5), pct(ms, 0.99), max(ms)]}


# -- the parent's plumbing -----------------------------------------------------------


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
        self.sim = await self._start(
            f"{self.name}-sim", "bench.serial", ["child", "sim", "--link", str(self.link)]
        )
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
        return await self._start(f"{self.name}-{name}", "bench.serial", ["child", *argv])

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


# -- 1. latency ----------------------------------------------------------------------


class Recorder:
    """Marker deliveries: (seq, latency ms) for every subscriber."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []

    def add(self, frame: dict[str, Any], now: float) -> None:
        line = frame.get("line")
        if frame.get("type") != "serial" or not isinstance(line, str):
            return
        if not line.startswith(MARKER):
            return
        _, seq, t = line.split()
        self.samples.append((int(seq), (now - float(t)) * 1000.0))


class RawSubscriber(BenchClient):
    """``bench._client``'s cheap protocol client, recording marker frames."""

    def __init__(self, recorder: Recorder, request: bytes, subscribe: bytes) -> None:
        super().__init__(Collector(), request, subscribe)
        self._recorder = recorder

    def _on_text(self, payload: bytearray, now: float, collector: Collector) -> None:
        if b"echo:bench " in payload:
            self._recorder.add(json.loads(payload), now)
        elif not self.ready.done() and json.loads(payload).get("type") == "subscribed":
            self.ready.set_result(None)

    def send_text(self, text: str) -> None:
        self._write(client_frame(_OP_TEXT, text.encode()))


async def connect_raw(
    port: int, key: str, count: int, recorder: Recorder, with_status: bool
) -> list[RawSubscriber]:
    loop = asyncio.get_running_loop()
    subscribe = encode({"type": "subscribe", "id": 1, "topics": [SERIAL_TOPIC]}).encode()
    gate = asyncio.Semaphore(20)

    async def one() -> RawSubscriber:
        async with gate:
            _, client = await loop.create_connection(
                lambda: RawSubscriber(recorder, upgrade_request(port, key), subscribe),
                "127.0.0.1",
                port,
            )
            await client.ready
            if not with_status:
                client.send_text(encode({"type": "unsubscribe", "id": 2, "topics": ["status"]}))
            return client

    async with asyncio.timeout(CONNECT_TIMEOUT):
        return list(await asyncio.gather(*(one() for _ in range(count))))


async def connect_aiohttp(
    session: aiohttp.ClientSession,
    port: int,
    key: str,
    count: int,
    recorder: Recorder,
    with_status: bool,
) -> list[asyncio.Task[None]]:
    """aiohttp clients, one task each; the receive time is read right after ``receive()``."""
    gate = asyncio.Semaphore(20)
    headers = {"Authorization": f"Key {key}"}

    async def one() -> aiohttp.ClientWebSocketResponse:
        async with gate:
            ws = await session.ws_connect(
                f"http://127.0.0.1:{port}/", protocols=[SUBPROTOCOL], headers=headers
            )
            await ws.send_str(encode({"type": "subscribe", "id": 1, "topics": [SERIAL_TOPIC]}))
            want = {1}
            if not with_status:
                await ws.send_str(encode({"type": "unsubscribe", "id": 2, "topics": ["status"]}))
                want.add(2)
            while want:
                frame = json.loads(await ws.receive_str())
                want.discard(frame.get("id"))
            return ws

    async def receive(ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            now = time.time()
            if msg.type is aiohttp.WSMsgType.TEXT:
                if MARKER in msg.data:
                    recorder.add(json.loads(msg.data), now)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return

    async with asyncio.timeout(CONNECT_TIMEOUT):
        sockets = await asyncio.gather(*(one() for _ in range(count)))
    return [asyncio.create_task(receive(ws)) for ws in sockets]


@dataclass
class LatencyResult:
    server: str
    subscribers: int
    markers: int
    expected: int = 0
    received: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    #: Per marker, when the last subscriber had it.
    last_p50_ms: float | None = None
    last_p99_ms: float | None = None
    server_cpu_pct: float = 0.0
    server_us_per_delivery: float | None = None
    client_cpu_pct: float = 0.0
    error: str | None = None


async def run_latency_one(
    server: str, args: argparse.Namespace, workdir: Path, round_: int
) -> LatencyResult:
    result = LatencyResult(server, args.subscribers, args.markers)
    async with rig(workdir, args, f"latency-{server}-{round_}") as r:
        await r.start_sim()
        if server == "pty":
            return await _latency_pty(r, args, result)
        if server == "gateway":
            port = await r.start_gateway()
            server_child = r.gateway
        else:
            server_child = await r.start_child("fanout", ["fanout", "--link", str(r.link)])
            port = await server_child.port(START_TIMEOUT)
        recorder = Recorder()
        tasks: list[asyncio.Task[None]] = []
        raw: list[RawSubscriber] = []
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            if args.client == "raw":
                raw = await connect_raw(port, r.key, args.subscribers, recorder, args.with_status)
            else:
                tasks = await connect_aiohttp(
                    session, port, r.key, args.subscribers, recorder, args.with_status
                )
            warmup = args.warmup_markers
            await r.sim_call(f"markers {warmup} {args.gap_ms / 2} {args.gap_ms * 1.5}")
            await asyncio.sleep(0.5)
            recorder.samples.clear()
            count = args.markers
            budget = count * args.gap_ms * 1.5 / 1000.0 + REPLY_TIMEOUT
            cpu0, client0, wall0 = cpu_of([server_child]), time.process_time(), time.monotonic()
            await r.sim_call(f"markers {count} {args.gap_ms / 2} {args.gap_ms * 1.5}", budget)
            await asyncio.sleep(1.0)  # frames still in flight
            wall = time.monotonic() - wall0
            cpu = cpu_of([server_child])[0] - cpu0[0]
            result.client_cpu_pct = 100.0 * (time.process_time() - client0) / wall
        finally:
            for task in tasks:
                task.cancel()
            for client in raw:
                if client.transport is not None:
                    client.transport.abort()
            await session.close()
    samples = recorder.samples
    result.expected = count * args.subscribers
    result.received = len(samples)
    latencies = [ms for _, ms in samples]
    result.p50_ms, result.p99_ms = pct(latencies, 0.5), pct(latencies, 0.99)
    result.max_ms = max(latencies, default=None)
    last: dict[int, float] = {}
    for seq, ms in samples:
        last[seq] = max(ms, last.get(seq, 0.0))
    result.last_p50_ms = pct(list(last.values()), 0.5)
    result.last_p99_ms = pct(list(last.values()), 0.99)
    result.server_cpu_pct = 100.0 * cpu / wall
    if samples:
        result.server_us_per_delivery = cpu / len(samples) * 1e6
    return result


async def _latency_pty(r: Rig, args: argparse.Namespace, result: LatencyResult) -> LatencyResult:
    """One reader on the pty: what the link itself costs, before any fan-out."""
    probe = await r.start_child("probe", ["probe", "--link", str(r.link)])
    await probe.message(START_TIMEOUT)
    await r.sim_call(f"markers {args.warmup_markers} {args.gap_ms / 2} {args.gap_ms * 1.5}")
    await asyncio.sleep(0.5)
    await probe.send("clear")
    await probe.message(REPLY_TIMEOUT)
    budget = args.markers * args.gap_ms * 1.5 / 1000.0 + REPLY_TIMEOUT
    cpu0, wall0 = cpu_of([probe]), time.monotonic()
    await r.sim_call(f"markers {args.markers} {args.gap_ms / 2} {args.gap_ms * 1.5}", budget)
    await asyncio.sleep(0.5)
    wall = time.monotonic() - wall0
    cpu = cpu_of([probe])[0] - cpu0[0]
    await probe.send("report")
    latencies: list[float] = (await probe.message(REPLY_TIMEOUT))["latencies"]
    result.subscribers = 1
    result.expected, result.received = args.markers, len(latencies)
    result.p50_ms, result.p99_ms = pct(latencies, 0.5), pct(latencies, 0.99)
    result.max_ms = max(latencies, default=None)
    result.last_p50_ms, result.last_p99_ms = result.p50_ms, result.p99_ms
    result.server_cpu_pct = 100.0 * cpu / wall
    if latencies:
        result.server_us_per_delivery = cpu / len(latencies) * 1e6
    return result


def latency_report(results: list[LatencyResult], args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"\n== 1. serial line -> {args.subscribers} WebSocket subscribers ({args.client} "
        f"clients, {args.markers} markers ~{args.gap_ms:g} ms apart"
        + (", status frames on" if args.with_status else "")
        + ")"
    )
    print(
        f"{'server':<10}{'received':>10}{'missing':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'last p50':>9}{'last p99':>9}{'srv CPU%':>9}{'us/deliv':>9}{'cli CPU%':>9}"
    )
    for x in results:
        if x.error:
            print(f"{x.server:<10}ERROR: {x.error}")
            continue
        print(
            f"{x.server:<10}{x.received:>10}{x.expected - x.received:>9}{fmt(x.p50_ms):>8}"
            f"{fmt(x.p99_ms):>8}{fmt(x.max_ms):>8}{fmt(x.last_p50_ms):>9}"
            f"{fmt(x.last_p99_ms):>9}{x.server_cpu_pct:>9.1f}"
            f"{fmt(x.server_us_per_delivery, 1):>9}{x.client_cpu_pct:>9.1f}"
        )
    by = {x.server: x for x in results if not x.error}
    gw, base = by.get("gateway"), by.get("bare")
    ratios: dict[str, float | None] = {}
    if gw and base:
        ratios = {
            "p50": ratio(gw.p50_ms, base.p50_ms),
            "p99": ratio(gw.p99_ms, base.p99_ms),
            "max": ratio(gw.max_ms, base.max_ms),
            "last_p99": ratio(gw.last_p99_ms, base.last_p99_ms),
            "cpu_per_delivery": ratio(gw.server_us_per_delivery, base.server_us_per_delivery),
        }
        print("gateway / bare: " + ", ".join(f"{k} {fmt(v, 2, 'x')}" for k, v in ratios.items()))
    print(
        "(pty: one pyserial-asyncio reader, no WebSocket; last: per marker, the slowest "
        "subscriber; srv CPU: the server process; cli CPU: the subscribers, this process)"
    )
    verdict = None
    if gw is not None:
        complete = gw.received == gw.expected
        ok = complete and gw.p99_ms is not None and gw.p99_ms < TARGET_P99_MS
        verdict = {
            "target": f"serial line -> {args.subscribers} subscribers p99 < {TARGET_P99_MS:g} ms",
            "pass": ok,
            "evidence": f"p99 {fmt(gw.p99_ms)} ms, {gw.expected - gw.received} missing",
        }
    figures: dict[str, float | None] = {}
    for x in results:
        if not x.error:
            figures[f"{x.server}_p50_ms"] = x.p50_ms
            figures[f"{x.server}_p99_ms"] = x.p99_ms
            figures[f"{x.server}_us_per_delivery"] = x.server_us_per_delivery
    return {
        "results": [dataclasses.asdict(x) for x in results],
        "figures": figures,
        "ratios": ratios,
        "verdict": verdict,
    }


# -- 2. commands -----------------------------------------------------------------------


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


@dataclass
class CommandResult:
    path: str
    in_flight: int
    commands: int
    per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    server_cpu_pct: float | None = None
    sim_cpu_pct: float | None = None
    client_cpu_pct: float | None = None
    error: str | None = None


async def run_commands_gateway(
    args: argparse.Namespace, workdir: Path, round_: int
) -> list[CommandResult]:
    results: list[CommandResult] = []
    async with rig(workdir, args, f"commands-gateway-{round_}") as r:
        await r.start_sim()
        port = await r.start_gateway()
        connections = math.ceil(max(args.concurrency) / IN_FLIGHT_PER_CONNECTION)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            clients = [await WsClient.connect(session, port, r.key) for _ in range(connections)]
            body = {"type": "command", "printer": PRINTER, "gcode": PING_COMMAND}
            try:
                for client in clients:  # warm-up: every connection, every code path
                    for _ in range(20):
                        await client.request(body)
                for in_flight in args.concurrency:
                    result = CommandResult("gateway", in_flight, args.commands)
                    rtts: list[float] = []
                    counter = itertools.count()

                    async def worker(
                        client: WsClient,
                        rtts: list[float] = rtts,
                        counter: Iterator[int] = counter,
                    ) -> None:
                        while next(counter) < args.commands:
                            t = time.perf_counter()
                            await client.request(body)
                            rtts.append(time.perf_counter() - t)

                    cpu0, wall0 = cpu_of([r.gateway, r.sim]), time.perf_counter()
                    client0 = time.process_time()
                    used = clients[: math.ceil(in_flight / IN_FLIGHT_PER_CONNECTION)]
                    budget = REPLY_TIMEOUT + args.commands / 50
                    async with asyncio.timeout(budget):
                        await asyncio.gather(
                            *(worker(used[i % len(used)]) for i in range(in_flight))
                        )
                    wall = time.perf_counter() - wall0
                    cpu = [b - a for a, b in zip(cpu0, cpu_of([r.gateway, r.sim]), strict=True)]
                    ms = [x * 1000.0 for x in rtts]
                    result.per_s = len(rtts) / wall
                    result.p50_ms, result.p99_ms = pct(ms, 0.5), pct(ms, 0.99)
                    result.server_cpu_pct = 100.0 * cpu[0] / wall
                    result.sim_cpu_pct = 100.0 * cpu[1] / wall
                    result.client_cpu_pct = 100.0 * (time.process_time() - client0) / wall
                    results.append(result)
            finally:
                for client in clients:
                    await client.close()
    return results


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


async def run_commands_ceiling(
    args: argparse.Namespace, workdir: Path, round_: int
) -> CommandResult:
    source = ["--command", PING_COMMAND, "--count", str(args.commands)]
    raw = await run_pingpong(
        args, workdir, f"commands-ceiling-{round_}", source, 1, "asyncio", None
    )
    result = CommandResult("ceiling", 1, raw["lines"])
    result.per_s = raw["lines"] / raw["elapsed"]
    result.p50_ms, result.p99_ms = raw["rtt_ms"][0], raw["rtt_ms"][1]
    result.server_cpu_pct = raw["client_cpu_pct"]
    result.sim_cpu_pct = raw["sim_cpu_pct"]
    return result


def commands_report(results: list[CommandResult], args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"\n== 2. commands through the link ({PING_COMMAND!r}, instant ok; {args.commands} per row)"
    )
    print(
        f"{'path':<34}{'in flight':>10}{'cmd/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'host CPU%':>10}{'sim CPU%':>9}{'cli CPU%':>9}{'/ ceiling':>10}"
    )
    ceiling = next((x for x in results if x.path == "ceiling" and not x.error), None)
    ratios: dict[str, float | None] = {}
    for x in results:
        label = (
            "ceiling: bare pyserial-asyncio"
            if x.path == "ceiling"
            else "gateway: WebSocket command"
        )
        if x.error:
            print(f"{label:<34}ERROR: {x.error}")
            continue
        share = ratio(x.per_s, ceiling.per_s) if ceiling else None
        if x.path == "gateway":
            ratios[f"in_flight_{x.in_flight}"] = share
        print(
            f"{label:<34}{x.in_flight:>10}{x.per_s:>9.0f}{fmt(x.p50_ms):>8}{fmt(x.p99_ms):>8}"
            f"{fmt(x.server_cpu_pct, 1):>10}{fmt(x.sim_cpu_pct, 1):>9}"
            f"{fmt(x.client_cpu_pct, 1):>9}{fmt(share, 2, 'x'):>10}"
        )
    print(
        "(host CPU: the gateway process, or the ceiling's own process; cli: the WebSocket "
        "client, this process)"
    )
    figures: dict[str, float | None] = {}
    for x in results:
        if not x.error:
            figures[f"{x.path}_{x.in_flight}_cmd_per_s"] = x.per_s
            figures[f"{x.path}_{x.in_flight}_p50_ms"] = x.p50_ms
    return {
        "results": [dataclasses.asdict(x) for x in results],
        "figures": figures,
        "ratios": ratios,
    }


# -- 3. jobs ----------------------------------------------------------------------------


@dataclass
class JobResult:
    path: str
    window: int
    lines: int = 0
    elapsed: float = 0.0
    per_s: float = 0.0
    client_elapsed: float | None = None
    state: str | None = None
    digest_ok: bool | None = None
    accepted_lines: int | None = None
    host_cpu_pct: float | None = None
    sim_cpu_pct: float | None = None
    host_us_per_line: float | None = None
    error: str | None = None


async def run_job_gateway(
    args: argparse.Namespace,
    workdir: Path,
    round_: int,
    window: int,
    data: bytes,
    commands: list[str],
    digest: str,
) -> JobResult:
    result = JobResult("gateway", window)
    async with rig(workdir, args, f"jobs-gateway-w{window}-{round_}") as r:
        await r.start_sim()
        port = await r.start_gateway(window)
        headers = {"Authorization": f"Key {r.key}"}
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("file", data, filename="bench.gcode", content_type="text/x-gcode")
            url = f"http://127.0.0.1:{port}/api/files"
            async with asyncio.timeout(START_TIMEOUT + len(data) / 1e6):
                async with session.post(url, data=form, headers=headers) as response:
                    body = await response.json()
                    if response.status != 201:
                        raise BenchError(f"upload failed: {response.status} {body}")
            name = body["file"]["name"]
            lines = body["file"]["metadata"]["gcode_lines"]
            if lines != len(commands):
                raise BenchError(f"the gateway counted {lines} lines, the file has {len(commands)}")
            client = await WsClient.connect(session, port, r.key, watch=("job",))
            try:
                await client.request({"type": "subscribe", "topics": [JOB_TOPIC]})
                await r.sim_call("reset")
                cpu0 = cpu_of([r.gateway, r.sim])
                t0 = time.perf_counter()
                reply = await client.request(
                    {"type": "job_start", "printer": PRINTER, "file": name}
                )
                job_id = reply["job_id"]
                budget = START_TIMEOUT + len(commands) / 100
                async with asyncio.timeout(budget):
                    while True:
                        frame = await client.frames.get()
                        if frame.get("job_id") == job_id and frame.get("state") in (
                            "completed",
                            "failed",
                            "cancelled",
                        ):
                            break
                result.client_elapsed = time.perf_counter() - t0
                cpu = [b - a for a, b in zip(cpu0, cpu_of([r.gateway, r.sim]), strict=True)]
            finally:
                await client.close()
            sim = await r.sim_call("digest")
    result.state = frame["state"]
    if result.state != "completed":
        result.error = f"job {result.state}: {frame.get('reason')}"
    result.lines = int(frame["lines_sent"])
    result.elapsed = float(frame["ended_at"]) - float(frame["started_at"])
    result.per_s = result.lines / result.elapsed if result.elapsed > 0 else 0.0
    result.accepted_lines = sim["accepted_lines"]
    result.digest_ok = sim["digest"] == digest
    result.host_cpu_pct = 100.0 * cpu[0] / result.client_elapsed
    result.sim_cpu_pct = 100.0 * cpu[1] / result.client_elapsed
    result.host_us_per_line = cpu[0] / max(1, result.lines) * 1e6
    return result


async def run_job_ceiling(
    args: argparse.Namespace,
    workdir: Path,
    round_: int,
    window: int,
    io: str,
    commands_file: Path,
    digest: str,
) -> JobResult:
    raw = await run_pingpong(
        args,
        workdir,
        f"jobs-ceiling-{io}-w{window}-{round_}",
        ["--file", str(commands_file)],
        window,
        io,
        digest,
    )
    result = JobResult(f"ceiling-{io}", window, lines=raw["lines"], elapsed=raw["elapsed"])
    result.per_s = raw["lines"] / raw["elapsed"]
    result.digest_ok = raw["digest_ok"]
    result.accepted_lines = raw["sim"]["accepted_lines"]
    result.host_cpu_pct = raw["client_cpu_pct"]
    result.sim_cpu_pct = raw["sim_cpu_pct"]
    result.host_us_per_line = result.host_cpu_pct / 100.0 * raw["elapsed"] / raw["lines"] * 1e6
    return result


def jobs_report(results: list[JobResult], args: argparse.Namespace, digest: str) -> dict[str, Any]:
    print(f"\n== 3. job streaming ({args.lines} lines, instant ok)")
    print(
        f"{'path':<28}{'window':>7}{'lines/s':>9}{'elapsed s':>10}{'host CPU%':>10}"
        f"{'us/line':>8}{'sim CPU%':>9}{'/ ceiling':>10}  exactly once"
    )
    ceilings = {x.window: x for x in results if x.path == "ceiling-asyncio" and not x.error}
    labels = {
        "gateway": "gateway job",
        "ceiling-asyncio": "ceiling: pyserial-asyncio",
        "ceiling-sync": "ceiling: blocking fd loop",
    }
    ratios: dict[str, float | None] = {}
    for x in results:
        label = labels.get(x.path, x.path)
        if x.error and not x.lines:
            print(f"{label:<28}{x.window:>7}  ERROR: {x.error}")
            continue
        base = ceilings.get(x.window)
        share = ratio(x.per_s, base.per_s) if base else None
        if x.path == "gateway":
            ratios[f"window_{x.window}"] = share
            one = ceilings.get(1)
            if x.window != 1 and one is not None:
                ratios[f"window_{x.window}_vs_ceiling_window_1"] = ratio(x.per_s, one.per_s)
        if x.path == "ceiling-sync" and 1 in ceilings:
            ratios["blocking_vs_asyncio_ceiling"] = ratio(x.per_s, ceilings[1].per_s)
        if x.path == "ceiling-sync" and x.window == 1 and not x.error:
            gw1 = next((g for g in results if g.path == "gateway" and g.window == 1), None)
            if gw1 is not None and not gw1.error:
                # the strictest ceiling: the loop that waits in read() instead of epoll
                ratios["window_1_vs_blocking"] = ratio(gw1.per_s, x.per_s)
        once = "yes" if x.digest_ok else "NO"
        print(
            f"{label:<28}{x.window:>7}{x.per_s:>9.0f}{x.elapsed:>10.2f}"
            f"{fmt(x.host_cpu_pct, 1):>10}{fmt(x.host_us_per_line, 0):>8}"
            f"{fmt(x.sim_cpu_pct, 1):>9}{fmt(share, 2, 'x'):>10}  {once} "
            f"({x.accepted_lines} accepted)" + (f"  ERROR: {x.error}" if x.error else "")
        )
    print(f"file digest (sha256 of the commands): {digest}")
    print("(host CPU: the gateway process, or the ceiling's own process)")
    gw = next((x for x in results if x.path == "gateway" and x.window == 1), None)
    blocking = next((x for x in results if x.path == "ceiling-sync" and not x.error), None)
    verdicts = []
    if gw is not None:
        # judged on the faster of the two bare loops (the blocking one, when it ran)
        ceiling_per_s = max(
            [c.per_s for c in (ceilings.get(1), blocking) if c is not None], default=None
        )
        share = ratio(gw.per_s, ceiling_per_s)
        verdicts.append(
            {
                "target": f"job streaming >= {TARGET_JOB_SHARE:.0%} of the bare ping-pong "
                "ceiling (window 1)",
                "pass": share is not None and share >= TARGET_JOB_SHARE and not gw.error,
                "evidence": f"{gw.per_s:.0f} vs {fmt(ceiling_per_s, 0)} lines/s = "
                f"{fmt(share, 2, 'x')}",
            }
        )
    every = [x for x in results if x.lines]
    verdicts.append(
        {
            "target": "every run: the simulator accepted each line exactly once, in order",
            "pass": bool(every) and all(x.digest_ok for x in every),
            "evidence": ", ".join(f"{x.path} w{x.window}: {x.digest_ok}" for x in every),
        }
    )
    figures = {f"{x.path}_w{x.window}_lines_per_s": x.per_s for x in results if x.lines}
    return {
        "results": [dataclasses.asdict(x) for x in results],
        "figures": figures,
        "ratios": ratios,
        "digest": digest,
        "verdicts": verdicts,
    }


# -- main --------------------------------------------------------------------------------


async def guarded(name: str, budget: float, run: Callable[[], Awaitable[Any]]) -> Any:
    """``run()`` within ``budget`` seconds; a failure becomes a message, not a crash."""
    try:
        async with asyncio.timeout(budget):
            return await run()
    except (BenchError, TimeoutError, OSError, aiohttp.ClientError, KeyError) as exc:
        text = str(exc).strip() or type(exc).__name__
        progress(f"  {name}: ERROR {text}")
        return text


async def run_round(args: argparse.Namespace, workdir: Path, round_: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if "latency" in args.only:
        results: list[LatencyResult] = []
        budget = 90.0 + (args.markers + args.warmup_markers) * args.gap_ms * 1.5 / 1000
        for server in ("pty", "bare", "gateway"):
            progress(f"  latency: {server} ...")
            got = await guarded(
                f"latency {server}",
                budget,
                lambda s=server: run_latency_one(s, args, workdir, round_),
            )
            if isinstance(got, str):
                got = LatencyResult(server, args.subscribers, args.markers, error=got)
            results.append(got)
        report["latency"] = latency_report(results, args)
    if "commands" in args.only:
        progress("  commands: ceiling ...")
        budget = 90.0 + args.commands / 20 * len(args.concurrency)
        command_results: list[CommandResult] = []
        got = await guarded(
            "commands ceiling", budget, lambda: run_commands_ceiling(args, workdir, round_)
        )
        command_results.append(
            got if isinstance(got, CommandResult) else CommandResult("ceiling", 1, 0, error=got)
        )
        progress("  commands: gateway ...")
        got = await guarded(
            "commands gateway", budget, lambda: run_commands_gateway(args, workdir, round_)
        )
        if isinstance(got, str):
            command_results.append(CommandResult("gateway", 0, 0, error=got))
        else:
            command_results += got
        report["commands"] = commands_report(command_results, args)
    if "jobs" in args.only:
        commands = job_commands(args.lines)
        from hydrogen.simulator import digest_of

        digest = digest_of(commands)
        data = gcode_file(commands)
        commands_file = workdir / "commands.txt"
        commands_file.write_text("\n".join(commands) + "\n")
        budget = 120.0 + args.lines / 100
        job_results: list[JobResult] = []
        plan: list[tuple[str, int]] = []
        for window in args.windows:
            plan.append(("ceiling-asyncio", window))
            if window == 1 and args.blocking_ceiling:
                plan.append(("ceiling-sync", 1))
            plan.append(("gateway", window))
        for path, window in plan:
            progress(f"  jobs: {path} window {window} ...")
            run: Callable[[], Awaitable[JobResult]]
            if path == "gateway":
                run = lambda w=window: run_job_gateway(  # noqa: E731
                    args, workdir, round_, w, data, commands, digest
                )
            else:
                io = path.removeprefix("ceiling-")
                run = lambda w=window, io=io: run_job_ceiling(  # noqa: E731
                    args, workdir, round_, w, io, commands_file, digest
                )
            got = await guarded(f"jobs {path} w{window}", budget, run)
            job_results.append(
                got if isinstance(got, JobResult) else JobResult(path, window, error=got)
            )
        report["jobs"] = jobs_report(job_results, args, digest)
    return report


def verdicts_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if report.get("latency", {}).get("verdict"):
        out.append(report["latency"]["verdict"])
    out += report.get("jobs", {}).get("verdicts", [])
    return out


def summary_of_rounds(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With ``--repeat``: every figure and ratio per round and its median; the
    targets judged on the medians (a burst of a neighbour's load lands in one round)."""
    medians: dict[str, float] = {}
    for kind, unit in (("figures", ""), ("ratios", "x")):
        values: dict[str, list[float]] = {}
        for report in rounds:
            for section in SECTIONS:
                for name, value in report.get(section, {}).get(kind, {}).items():
                    if value is not None:
                        values.setdefault(f"{section}.{name}", []).append(value)
        title = "figures" if kind == "figures" else "ratios (gateway / baseline)"
        print(f"\n== {title}: median of {len(rounds)} rounds  (each round)")
        for name, each in values.items():
            medians[f"{kind}.{name}"] = statistics.median(each)
            shown = ", ".join(f"{v:.2f}" for v in each)
            print(f"{name:<44} {statistics.median(each):>10.2f}{unit}  ({shown})")
    verdicts: list[dict[str, Any]] = []
    p99 = medians.get("figures.latency.gateway_p99_ms")
    if p99 is not None:
        verdicts.append(
            {
                "target": f"serial line -> subscribers p99 < {TARGET_P99_MS:g} ms (median)",
                "pass": p99 < TARGET_P99_MS,
                "evidence": f"median p99 {p99:.2f} ms",
            }
        )
    share = medians.get("ratios.jobs.window_1_vs_blocking", medians.get("ratios.jobs.window_1"))
    if share is not None:
        verdicts.append(
            {
                "target": f"job streaming >= {TARGET_JOB_SHARE:.0%} of the fastest bare loop, "
                "window 1 (median)",
                "pass": share >= TARGET_JOB_SHARE,
                "evidence": f"median {share:.2f}x",
            }
        )
    once = [v for r in rounds for v in r.get("jobs", {}).get("verdicts", [])[-1:]]
    if once:
        verdicts.append(
            {
                "target": "every run of every round: each line accepted exactly once, in order",
                "pass": all(v["pass"] for v in once),
                "evidence": f"{sum(v['pass'] for v in once)}/{len(once)} rounds",
            }
        )
    return verdicts


def git_state() -> str:
    """The commit measured, ``+dirty`` if ``hydrogen/`` has uncommitted changes."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "hydrogen"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    facts = machine_facts()
    facts["commit"] = git_state()
    for name in ("serial", "serial_asyncio"):
        with contextlib.suppress(Exception):
            module = __import__(name)
            facts["versions"][name] = getattr(module, "__version__", "?")
    progress(
        f"serial bench: commit {facts['commit']}, "
        f"{facts['nproc']} x {facts['cpu_model']}, Python {facts['python']}, "
        f"load {facts['load_average_at_start']}, "
        + ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    )
    report: dict[str, Any] = {"machine": facts, "args": vars(args), "rounds": []}
    with contextlib.ExitStack() as stack:
        if args.logs:
            workdir = Path(args.logs)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serial-")))
        for round_ in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"\n#### round {round_}/{args.repeat}")
            report["rounds"].append(await run_round(args, workdir, round_))
    if args.repeat > 1:
        verdicts = summary_of_rounds(report["rounds"])
    else:
        verdicts = verdicts_of(report["rounds"][0])
    report["verdicts"] = verdicts
    if verdicts:
        print("\n== targets" + (" (medians over the rounds)" if args.repeat > 1 else ""))
        for v in verdicts:
            print(f"{'PASS' if v['pass'] else 'MISS'}  {v['target']}  ({v['evidence']})")
    return report


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("a comma-separated list")
        return values

    return parse


SECTIONS = ("latency", "commands", "jobs")


def _sections(text: str) -> list[str]:
    values = _list(str)(text)
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SECTIONS)}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/serial.py",
        description="Serial link and job streaming: the gateway vs bare loops on the same pty.",
    )
    parser.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        metavar="S,S,...",
        help="latency, commands, jobs (default: all three)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; ratios per round + median")
    group = parser.add_argument_group("latency")
    group.add_argument("--subscribers", type=int, default=100)
    group.add_argument("--markers", type=int, default=600, help="marker lines measured")
    group.add_argument("--warmup-markers", type=int, default=30)
    group.add_argument("--gap-ms", type=float, default=20.0, help="mean gap between markers")
    group.add_argument(
        "--client",
        choices=["aiohttp", "raw"],
        default="aiohttp",
        help="subscriber implementation: aiohttp, or bench._client's bare protocol",
    )
    group.add_argument(
        "--with-status",
        action="store_true",
        help="keep the gateway's 1 Hz status frames to every subscriber (off: like-for-like)",
    )
    group = parser.add_argument_group("commands")
    group.add_argument("--commands", type=int, default=2000, help="commands per row")
    group.add_argument("--concurrency", type=_list(int), default=[1, 8, 32], metavar="N,N,...")
    group = parser.add_argument_group("jobs")
    group.add_argument("--lines", type=int, default=50_000, help="G-code lines in the job")
    group.add_argument("--windows", type=_list(int), default=[1, 4], metavar="W,W,...")
    group.add_argument(
        "--blocking-ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the blocking (no asyncio) ceiling at window 1",
    )
    parser.add_argument("--profile", metavar="DIR", help="run the gateway under cProfile")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--logs", metavar="DIR", help="keep children's stderr and configs here")
    parser.add_argument("--json", metavar="PATH", help="write every figure here")
    args = parser.parse_args(argv)
    if args.quick:
        args.markers, args.warmup_markers = min(args.markers, 100), min(args.warmup_markers, 10)
        args.commands, args.lines = min(args.commands, 300), min(args.lines, 3000)
    if min(args.subscribers, args.markers, args.commands, args.lines, args.repeat) < 1:
        parser.error("counts must be at least 1")
    if min(args.concurrency) < 1 or not all(1 <= w <= 32 for w in args.windows):
        parser.error("--concurrency must be >= 1 and --windows 1..32")
    return args


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serial child")
    parser.add_argument("role", choices=["sim", "fanout", "probe", "pingpong"])
    parser.add_argument("--link", required=True)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--io", choices=["asyncio", "sync"], default="asyncio")
    parser.add_argument("--file", help="pingpong: commands, one a line")
    parser.add_argument("--command", default=PING_COMMAND)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    role = {
        "sim": child_sim,
        "fanout": child_fanout,
        "probe": child_probe,
        "pingpong": child_pingpong,
    }[args.role]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(role(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    _unshadow_pyserial()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    args = parse_args(argv)
    raise_nofile_limit()
    report = asyncio.run(run_all(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nraw results: {args.json}")
    # A missed performance target is a finding, not a failure: the status says whether
    # every run worked and every line reached the firmware exactly once.
    errors = [
        r.get("error")
        for rnd in report["rounds"]
        for section in rnd.values()
        for r in section.get("results", [])
        if r.get("error")
    ]
    once = [v["pass"] for v in report["verdicts"] if "exactly once" in v["target"]]
    return 1 if errors or not all(once) else 0


if __name__ == "__main__":
    sys.exit(main())
