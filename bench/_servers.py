"""The three servers under test; ``bench/fanout.py`` runs each in its own process.

    python -m bench._servers gateway    --config TOML --api-key KEY --state-dir DIR [--event-rate R]
    python -m bench._servers aiohttp    [--event-rate R]
    python -m bench._servers websockets [--event-rate R]

Each one publishes the same frames at the same rates: an event frame (about
``--event-bytes`` bytes, carrying its publish time) ``--event-rate`` times a
second to the clients that subscribed to ``bench/events``, and a status frame
once a second to every client.

* ``gateway`` is the product itself. It runs ``hydrogen.cli.main(["serve",
  ...])`` - the very code path of ``python -m hydrogen serve`` (config, key,
  logging, signal handling, access logger, banner). In this process only,
  ``Gateway.start`` is wrapped to also start the event publisher, which calls
  ``gateway.hub.publish`` as a printer link would; status frames come from the
  gateway's own 1 Hz status loop. No production code exists for the benchmark.
* ``aiohttp`` is the floor for an aiohttp server: a set of sockets and
  ``for ws in clients: await ws.send_str(text)``, text encoded once.
* ``websockets`` is the ``websockets`` library's ``broadcast()``, which writes
  to every connection without awaiting.

The two baselines have no auth, no hub, no queues and no host sampling; the
ratios in the report are the price of those.

Control channel (see ``bench/_common.py``): the process prints
``BENCH {"port": P}`` when listening (the gateway prints its usual banner
instead), answers ``count T0 T1`` with the number of event and status frames
published with ``T0 <= t < T1`` and the garbage collector's pauses in that
window, and stops on end of file on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench._common import (
    EVENT_TOPIC,
    SUBPROTOCOL,
    EventFrames,
    emit,
    encode,
    raise_nofile_limit,
    serve_loopback,
    stdin_reader,
)

#: Seconds between status frames (the gateway's default ``status.interval``).
STATUS_INTERVAL = 1.0
#: Bound on closing the baselines' sockets at the end.
CLOSE_TIMEOUT = 5.0

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Timeline:
    """When frames of one kind were published, to count those in a window."""

    def __init__(self) -> None:
        #: Ascending (a 60 s run at 20 events/s is 1200 floats).
        self.times: list[float] = []

    def mark(self) -> float:
        t = time.time()
        self.times.append(t)
        return t

    def count(self, t0: float, t1: float) -> int:
        return bisect.bisect_left(self.times, t1) - bisect.bisect_left(self.times, t0)


class GcMonitor:
    """When the garbage collector ran and for how long.

    A collection stops the event loop: every frame due meanwhile waits, for
    every client at once. At 1000 clients a full (generation 2) collection
    walks every connection's objects and is long enough to show in p99, so
    the report counts them in the window next to the latencies.
    """

    def __init__(self) -> None:
        #: (end time, generation, seconds) per collection.
        self.collections: list[tuple[float, int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self.collections.append((time.time(), info["generation"], pause))

    def summary(self, t0: float, t1: float) -> dict[str, Any]:
        window = [(g, pause) for end, g, pause in self.collections if t0 <= end < t1]
        return {
            "collections": [sum(1 for g, _ in window if g == gen) for gen in range(3)],
            "pause_total_ms": 1000.0 * sum(pause for _, pause in window),
            "pause_max_ms": 1000.0 * max((pause for _, pause in window), default=0.0),
        }


class Publisher:
    """Publishes event frames at a fixed rate and remembers when it did.

    The schedule is absolute, so a late wake-up is caught up at once and the
    number of frames stays ``rate x time``; only a server more than a second
    behind (overloaded) skips ahead, and then publishes fewer frames than
    asked - which the report shows as the published rate, not hidden.
    """

    def __init__(self, rate: float, frames: EventFrames, send: Send) -> None:
        self._rate = rate
        self._frames = frames
        self._send = send
        self.timeline = Timeline()

    async def run(self) -> None:
        if self._rate <= 0:
            return
        interval = 1.0 / self._rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        seq = 0
        while True:
            next_at += interval
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                next_at = loop.time()
            await self._send(self._frames.frame(seq, self.timeline.mark()))
            seq += 1


async def serve_control(
    events: Timeline, status: Timeline, gc_monitor: GcMonitor, on_eof: Callable[[], None]
) -> None:
    """Answer the parent's commands until stdin closes, then call ``on_eof``.

    Only end of file stops the server: a cancelled task (the server already
    shutting down) must not ask for a second shutdown.
    """
    reader = await stdin_reader()
    while line := await reader.readline():
        words = line.decode().split()
        if len(words) == 3 and words[0] == "count":
            t0, t1 = float(words[1]), float(words[2])
            emit(
                {
                    "events": events.count(t0, t1),
                    "status": status.count(t0, t1),
                    "gc": gc_monitor.summary(t0, t1),
                }
            )
    on_eof()


# -- the gateway ------------------------------------------------------------------


def run_gateway(args: argparse.Namespace, gc_monitor: GcMonitor) -> int:
    """``hydrogen serve`` exactly as an operator runs it, plus the event publisher.

    Two methods of the class are wrapped, in this process only: ``start``
    (run on the event loop by the app's start-up, after the first status
    sample) also starts the event publisher and the control channel, and
    ``publish_status`` notes when each status frame goes out, so the report
    can tell a late status loop from a slow delivery. Wrapping the class, not
    an instance or a module attribute, works however ``serve`` imports and
    builds the gateway.
    """
    from hydrogen import cli
    from hydrogen.gateway import Gateway

    original_start = Gateway.start
    original_publish_status = Gateway.publish_status
    status = Timeline()
    tasks: set[asyncio.Task[None]] = set()

    def publish_status(gateway: Gateway) -> None:
        status.mark()
        original_publish_status(gateway)

    async def start(gateway: Gateway) -> None:
        await original_start(gateway)

        async def send(frame: dict[str, Any]) -> None:
            gateway.hub.publish(EVENT_TOPIC, frame)

        publisher = Publisher(args.event_rate, EventFrames(args.event_bytes), send)
        # SIGTERM is what systemd sends: the gateway's own graceful shutdown.
        on_eof = lambda: signal.raise_signal(signal.SIGTERM)  # noqa: E731
        tasks.add(asyncio.create_task(publisher.run(), name="bench-publisher"))
        control = serve_control(publisher.timeline, status, gc_monitor, on_eof)
        tasks.add(asyncio.create_task(control, name="bench-control"))

    Gateway.start = start  # type: ignore[method-assign]
    Gateway.publish_status = publish_status  # type: ignore[method-assign]
    return cli.main(
        [
            "serve",
            "--no-announce",
            "--config",
            args.config,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-printers",
            "--api-key",
            args.api_key,
            "--state-dir",
            args.state_dir,
            "--log-level",
            "warning",
            "--status-interval",
            str(STATUS_INTERVAL),
        ]
    )


# -- the baselines --------------------------------------------------------------------


class StatusFrames:
    """A status-like frame of about ``size`` bytes from a cheap psutil sample.

    The gateway's status frame is about 1.5 KB of host data; the baselines send
    one of the same size so the bytes on the wire match. They take only two
    cheap readings, not the gateway's full host sample (that work is part of
    what the gateway costs, and the ratios should show it).
    """

    def __init__(self, size: int) -> None:
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(None)
        self._pad = ""
        self._pad = "x" * max(0, size - len(encode(self.frame(0))) - 16)

    def frame(self, connections: int) -> dict[str, Any]:
        memory = self._psutil.virtual_memory()
        return {
            "type": "status",
            "topic": "status",
            "t": time.time(),
            "active_connections": connections,
            "host": {
                "cpu": {"percent": self._psutil.cpu_percent(None)},
                "memory": {"total_bytes": memory.total, "available_bytes": memory.available},
            },
            "pad": self._pad,
        }


async def status_loop(
    frames: StatusFrames, count: Callable[[], int], send: Send, timeline: Timeline
) -> None:
    """Once a second, on an absolute schedule that never bursts (as the gateway's)."""
    loop = asyncio.get_running_loop()
    next_at = loop.time() + STATUS_INTERVAL
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        next_at += STATUS_INTERVAL
        if next_at < loop.time():
            next_at = loop.time() + STATUS_INTERVAL
        timeline.mark()
        await send(frames.frame(count()))


def subscribe_reply(text: str) -> tuple[bool, str | None]:
    """(wants events, reply text) for a client frame: just enough protocol for the client."""
    try:
        request = json.loads(text)
    except ValueError:
        return False, None
    if not isinstance(request, dict) or request.get("type") != "subscribe":
        return False, None
    topics = request.get("topics") or []
    reply = {"type": "subscribed", "id": request.get("id"), "topics": topics}
    return EVENT_TOPIC in topics, encode(reply)


async def run_baseline(
    args: argparse.Namespace,
    gc_monitor: GcMonitor,
    start: Callable[[set[Any], set[Any]], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]],
    broadcast: Callable[[set[Any], str], Awaitable[None]],
) -> None:
    """Shared by both baselines: publishers, control channel, orderly stop."""
    everyone: set[Any] = set()
    subscribers: set[Any] = set()
    port, stop_server = await start(everyone, subscribers)

    async def send_event(frame: dict[str, Any]) -> None:
        await broadcast(subscribers, encode(frame))

    async def send_status(frame: dict[str, Any]) -> None:
        await broadcast(everyone, encode(frame))

    stopped = asyncio.Event()
    publisher = Publisher(args.event_rate, EventFrames(args.event_bytes), send_event)
    status = Timeline()
    status_frames = StatusFrames(args.status_bytes)
    tasks = [
        asyncio.create_task(publisher.run()),
        asyncio.create_task(status_loop(status_frames, everyone.__len__, send_status, status)),
        asyncio.create_task(serve_control(publisher.timeline, status, gc_monitor, stopped.set)),
    ]
    emit({"port": port})
    try:
        await stopped.wait()
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await stop_server()


async def run_aiohttp(args: argparse.Namespace, gc_monitor: GcMonitor) -> None:
    from aiohttp import WSMsgType, web

    async def start(
        everyone: set[Any], subscribers: set[Any]
    ) -> tuple[int, Callable[[], Awaitable[None]]]:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=20.0, compress=False)
            await ws.prepare(request)
            everyone.add(ws)
            try:
                async for msg in ws:
                    if msg.type is WSMsgType.TEXT:
                        wants_events, reply = subscribe_reply(msg.data)
                        if reply is not None:
                            await ws.send_str(reply)
                        if wants_events:
                            subscribers.add(ws)
            finally:
                everyone.discard(ws)
                subscribers.discard(ws)
            return ws

        runner, port = await serve_loopback(handler)

        async def stop() -> None:
            await asyncio.gather(*(ws.close() for ws in tuple(everyone)), return_exceptions=True)
            await runner.cleanup()

        return port, stop

    async def broadcast(sockets: set[Any], text: str) -> None:
        # The bare loop: one await per client. A copy, since sockets come and go meanwhile.
        for ws in tuple(sockets):
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                sockets.discard(ws)

    await run_baseline(args, gc_monitor, start, broadcast)


async def run_websockets(args: argparse.Namespace, gc_monitor: GcMonitor) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.asyncio.server import broadcast as ws_broadcast
    from websockets.exceptions import ConnectionClosed
    from websockets.typing import Subprotocol

    async def start(
        everyone: set[Any], subscribers: set[Any]
    ) -> tuple[int, Callable[[], Awaitable[None]]]:
        async def handler(connection: ServerConnection) -> None:
            everyone.add(connection)
            try:
                async for message in connection:
                    if isinstance(message, str):
                        wants_events, reply = subscribe_reply(message)
                        if reply is not None:
                            await connection.send(reply)
                        if wants_events:
                            subscribers.add(connection)
            except ConnectionClosed:
                pass
            finally:
                everyone.discard(connection)
                subscribers.discard(connection)

        server = await serve(
            handler,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            compression=None,
            ping_interval=20.0,
        )
        port = server.sockets[0].getsockname()[1]

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return port, stop

    async def broadcast(connections: set[Any], text: str) -> None:
        ws_broadcast(connections, text)

    await run_baseline(args, gc_monitor, start, broadcast)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._servers")
    parser.add_argument("kind", choices=["gateway", "aiohttp", "websockets"])
    parser.add_argument("--event-rate", type=float, default=20.0)
    parser.add_argument("--event-bytes", type=int, default=256)
    parser.add_argument("--status-bytes", type=int, default=1536)
    parser.add_argument("--config", help="gateway: TOML config")
    parser.add_argument("--api-key", help="gateway: the key clients present")
    parser.add_argument("--state-dir", help="gateway: a scratch state directory")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    gc_monitor = GcMonitor()
    if args.kind == "gateway":
        if not (args.config and args.api_key and args.state_dir):
            parser.error("gateway needs --config, --api-key and --state-dir")
        return run_gateway(args, gc_monitor)
    runner = run_aiohttp if args.kind == "aiohttp" else run_websockets
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner(args, gc_monitor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
