"""Soak: a long print through a faulty link while clients, uploads and a fuzzer churn.

By hand, not in CI (the default is an hour)::

    python bench/soak.py --minutes 60

What runs, all on loopback:

* ``hydrogen serve`` as a subprocess (its own state dir, ``--log-level info``), whose
  one printer is a simulated Marlin served by *this* process on a pty, with seeded
  line noise: a fraction of oks lost on the way and of lines corrupted (``--drop-ok``,
  ``--corrupt``);
* a print job of numbered moves (``G1 ... E<n>``), started again whenever it ends, so
  the firmware's record tells whether any line was lost or run twice;
* ``--clients`` WebSocket clients that connect, subscribe, read a few frames and
  disconnect, over and over;
* an uploader that uploads and deletes a small file every few seconds;
* a fuzzing client sending malformed and odd frames, each of which must get exactly
  one reply.

At the end it prints (and ``--json`` writes) the lines the firmware ran, lost and
duplicated (both must be 0), runs completed, recoveries and resends from
``/metrics``, client connections made, fuzz frames and replies, the gateway's RSS at
start and end, and its log volume.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

# bench/serial.py would shadow pyserial for a script run from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from hydrogen.simulator import Faults, SimulatedPrinter  # noqa: E402

KEY = "soak-key-0123456789abcdef"
HEADERS = {"Authorization": f"Key {KEY}"}
MOVE = re.compile(r"G1 X\d+ Y\d+ E(\d+)$")


def note(text: str) -> None:
    """Progress on stderr (an hour is long to watch in silence)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class CountingPrinter(SimulatedPrinter):
    """The simulator, checking every numbered move it runs: each run of the file must
    be E0, E1, E2, ... with no gap and no repeat."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.moves = self.lost = self.duplicated = self.runs = 0
        self._last: int | None = None

    def _accept(self, command: str) -> None:
        super()._accept(command)
        move = MOVE.match(command)
        if move is None:
            return
        n = int(move[1])
        self.moves += 1
        if n == 0:
            self.runs += 1
        elif self._last is None or n <= self._last:
            self.duplicated += 1
        elif n > self._last + 1:
            self.lost += n - self._last - 1
        self._last = n


def soak_file(lines: int) -> bytes:
    body = ["G28", "G92 E0"]
    for i in range(lines):
        body.append(f"G1 X{i % 200} Y{(i // 200) % 200} E{i}")
        if i % 10 == 9:
            body.append("G4 P20")
    return ("\n".join(body) + "\n").encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def metric(session: aiohttp.ClientSession, base: str, name: str) -> float:
    async with session.get(f"{base}/metrics", headers=HEADERS) as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


async def keep_printing(session: aiohttp.ClientSession, base: str, stop: asyncio.Event) -> None:
    url = f"{base}/api/printers/soak/job"
    while not stop.is_set():
        async with session.get(url, headers=HEADERS) as response:
            job = await response.json()
        if job.get("state") not in ("printing", "paused", "queued"):
            async with session.post(
                url, json={"action": "start", "file": "soak.gcode"}, headers=HEADERS
            ) as response:
                await response.read()
        await asyncio.sleep(1.0)


async def churn(
    base_ws: str, stop: asyncio.Event, counts: dict[str, int], rng: random.Random, source: str
):
    """One client, from its own loopback address (the gateway caps waiting connections
    per address), connecting and disconnecting until stopped."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(
                    base_ws, protocols=["hydrogen-protocol"], headers=HEADERS
                ) as ws:
                    counts["connections"] += 1
                    await ws.send_json(
                        {"type": "subscribe", "id": 1, "topics": ["printer/+/#", "notifications"]}
                    )
                    for _ in range(rng.randint(1, 20)):
                        await ws.receive(timeout=10)
            except (aiohttp.ClientError, TimeoutError):
                counts["connect_errors"] += 1
            await asyncio.sleep(rng.uniform(0, 0.5))


async def uploads(session, base: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    while not stop.is_set():
        form = aiohttp.FormData()
        form.add_field("file", b"G1 X1\nG1 X2\n", filename="churn.gcode")
        async with session.post(f"{base}/api/files", data=form, headers=HEADERS) as response:
            counts[f"upload_{response.status}"] = counts.get(f"upload_{response.status}", 0) + 1
        async with session.delete(f"{base}/api/files/churn.gcode", headers=HEADERS) as response:
            await response.read()
        await asyncio.sleep(3.0)


FUZZ = [
    "{",
    "[]",
    '{"type": 7}',
    '{"type":"subscribe","topics":"nope","id":1}',
    '{"type":"command","printer":"soak","gcode":"M110 N5","id":1}',
    '{"type":"job_start","printer":"nope","file":"x","id":1}',
    '{"type":"ping","id":1,"x":' + "[" * 40 + "]" * 40 + "}",
    '{"type":"ping","id":1e999}',
    '{"type":"ping","id":"\\ud800"}',
]


async def fuzzer(base_ws: str, stop: asyncio.Event, counts: dict[str, int], rng: random.Random):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            base_ws, protocols=["hydrogen-protocol"], headers=HEADERS
        ) as ws:
            await ws.receive(timeout=10)  # welcome
            while not stop.is_set():
                await ws.send_str(rng.choice(FUZZ))
                counts["fuzz_sent"] += 1
                while True:  # the reply: the one frame that is neither status nor a topic's
                    frame = json.loads((await ws.receive(timeout=10)).data)
                    if frame.get("type") != "status" and "topic" not in frame:
                        counts["fuzz_replies"] += 1
                        break
                await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="hydrogen-soak-"))
    sim = CountingPrinter(
        link=str(workdir / "soak.pty"),
        seed=args.seed,
        faults=Faults(drop_ok_ratio=args.drop_ok, corrupt_ratio=args.corrupt, corrupt_run_limit=3),
    )
    await sim.start()
    note(f"simulator on {sim.slave_path}; work dir {workdir}")
    port = free_port()
    log_path = workdir / "gateway.log"
    with log_path.open("wb") as log:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hydrogen", "serve", "--no-announce", "--port", str(port),
            "--host", "127.0.0.1", "--state-dir", str(workdir / "state"), "--api-key", KEY,
            "--log-level", "info", "--log-format", "text", "--printer",
            f"soak={workdir / 'soak.pty'}",
            stdout=log, stderr=log,
        )  # fmt: skip
    base, base_ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/"
    counts = {"connections": 0, "connect_errors": 0, "fuzz_sent": 0, "fuzz_replies": 0}
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{base}/api/system/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            note(f"gateway pid {gateway.pid} on {base}")
            form = aiohttp.FormData()
            form.add_field("file", soak_file(args.lines), filename="soak.gcode")
            async with session.post(f"{base}/api/files", data=form, headers=HEADERS) as r:
                assert r.status == 201, await r.text()
            process = psutil.Process(gateway.pid)
            rss_start = process.memory_info().rss
            tasks = [
                asyncio.create_task(keep_printing(session, base, stop)),
                asyncio.create_task(uploads(session, base, stop, counts)),
                asyncio.create_task(fuzzer(base_ws, stop, counts, rng)),
                *(
                    asyncio.create_task(
                        churn(
                            base_ws,
                            stop,
                            counts,
                            random.Random(rng.random()),
                            f"127.0.0.{2 + i % 50}",
                        )
                    )
                    for i in range(args.clients)
                ),
            ]
            started = time.monotonic()
            last_moves, last_progress, longest_stall = 0, started, 0.0
            while time.monotonic() - started < args.minutes * 60:
                await asyncio.sleep(5)
                now = time.monotonic()
                if sim.moves != last_moves:
                    last_moves, last_progress = sim.moves, now
                longest_stall = max(longest_stall, now - last_progress)
                note(
                    f"moves {sim.moves} (lost {sim.lost}, twice {sim.duplicated}), runs "
                    f"{sim.runs}, oks dropped {sim.dropped_oks}, connections "
                    f"{counts['connections']}, fuzz {counts['fuzz_replies']}"
                )
                crashed = [t for t in tasks if t.done() and t.exception()]
                if crashed:
                    raise RuntimeError("a soak task failed") from crashed[0].exception()
            stop.set()
            note("stopping the load")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            rss_end = process.memory_info().rss
            recoveries = await metric(session, base, "hydrogen_printer_link_recoveries_total")
            resends = await metric(session, base, "hydrogen_printer_resends_total")
    finally:
        stop.set()
        if gateway.returncode is None:
            gateway.terminate()
            await gateway.wait()
        await sim.stop()
    log_text = log_path.read_text(errors="replace")
    return {
        "minutes": args.minutes,
        "seed": args.seed,
        "moves_run": sim.moves,
        "moves_lost": sim.lost,
        "moves_duplicated": sim.duplicated,
        "runs_started": sim.runs,
        "longest_stall_seconds": round(longest_stall),
        "oks_dropped_by_the_link": sim.dropped_oks,
        "link_recoveries": recoveries,
        "resends": resends,
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "log_bytes": len(log_text.encode()),
        "log_lines": log_text.count("\n"),
        "log_tracebacks": log_text.count("Traceback"),
        **counts,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--lines", type=int, default=20000, help="moves in the print file")
    parser.add_argument("--drop-ok", type=float, default=0.005, help="fraction of oks lost")
    parser.add_argument("--corrupt", type=float, default=0.005, help="fraction corrupted")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "1")))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


if __name__ == "__main__":
    # a SIGTERM (a timeout, a CI kill) still stops the gateway it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s] %(name)s: %(message)s")
    arguments = parse_args()
    figures = asyncio.run(main(arguments))
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2))
    sys.exit(0 if figures["moves_lost"] == figures["moves_duplicated"] == 0 else 1)
