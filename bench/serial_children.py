"""The child processes of the serial benchmark: the simulated printer and the bare loops.

    python -m bench.serial_children sim      --link PATH
    python -m bench.serial_children fanout   --link PATH
    python -m bench.serial_children probe    --link PATH
    python -m bench.serial_children pingpong --link PATH [--window W] [--io asyncio|sync]
                                             [--file COMMANDS | --command G --count N]

``bench/serial.py`` (through ``serial_rig.Rig``) starts each in its own process, so
what it measures is not charged to the orchestration, and drives it over the control
channel of ``bench/_common.py``: commands on stdin, ``BENCH <json>`` lines on stdout,
end of file to stop. ``sim`` is the simulated Marlin on a real pty; the others are
the baselines the gateway is compared with: ``fanout`` (pty readline -> a bare
aiohttp fan-out), ``probe`` (one reader on the pty, no WebSocket) and ``pingpong``
(numbered, checksummed lines until each ``ok``, with pyserial-asyncio or a blocking
fd loop). They live apart from the parent's code because they are what runs on the
far side of the process boundary, and nothing else does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import select
import sys
import time
from collections import deque
from functools import reduce
from operator import xor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._common import (
    SUBPROTOCOL,
    emit,
    encode,
    raise_nofile_limit,
    serve_loopback,
    stdin_reader,
)
from bench.fanout import BenchError
from bench.serial_common import MARKER, PING_COMMAND, PRINTER, SERIAL_TOPIC, pct

if TYPE_CHECKING:
    from hydrogen.simulator import SimulatedPrinter

BAUD = 115200

# Timeouts (seconds).
HANDSHAKE_TIMEOUT = 10.0
LINE_TIMEOUT = 10.0


def framed(number: int, command: str) -> bytes:
    """``N<n> <command>*<cs>\\n``: Marlin's numbered, checksummed line."""
    body = f"N{number} {command}"
    return f"{body}*{reduce(xor, body.encode('ascii'), 0)}\n".encode("ascii")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serial_children")
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


if __name__ == "__main__":
    sys.exit(main())
