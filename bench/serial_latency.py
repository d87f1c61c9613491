"""Section 1 of the serial benchmark: a firmware line to WebSocket subscribers.

The simulator writes marker lines (``echo:bench <seq> <time>``) to its pty; the
subscribers, in this process, note when each reaches them. Three servers take turns
on the same kind of pty: ``pty`` (one reader, no WebSocket: the floor), ``bare``
(``serial_children``'s fan-out baseline) and ``gateway``. The subscribers are aiohttp
clients or ``bench._client``'s cheap protocol client (``--client raw``). This module
runs the section and prints its table; ``bench/serial.py`` calls ``run_latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench._client import BenchClient, Collector, client_frame, upgrade_request
from bench._common import SUBPROTOCOL, encode
from bench.fanout import progress
from bench.serial_common import MARKER, SERIAL_TOPIC, fmt, pct, ratio
from bench.serial_rig import (
    REPLY_TIMEOUT,
    START_TIMEOUT,
    Rig,
    cpu_of,
    guarded,
    rig,
)

#: The issue's target: a serial line reaches 100 subscribers within this, at p99.
TARGET_P99_MS = 5.0
CONNECT_TIMEOUT = 30.0

_OP_TEXT = 0x1


async def run_latency(args: argparse.Namespace, workdir: Path, round_: int) -> dict[str, Any]:
    """The section: each server in turn, then the table; its part of the report."""
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
    return latency_report(results, args)


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
