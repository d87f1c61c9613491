"""Fan-out benchmark: the gateway against a bare aiohttp loop and ``websockets.broadcast``.

Usage (from the repository root)::

    python bench/fanout.py                                # 10, 100, 1000 clients + idle
    python bench/fanout.py --clients 100 --duration 5     # one quick scenario (+ idle)
    python bench/fanout.py --repeat 3 --json fanout.json  # medians of 3 rounds (~18 min)
    python bench/fanout.py --clients 1000 --duration 60 --no-idle   # a longer window

For each number of clients N, each of three servers is started in its own
process and serves the same scenario: every client gets a ~1.5 KB status
frame once a second and ``--event-rate`` event frames (~256 bytes) a second.

* ``gateway``: the real product, ``hydrogen serve`` (see ``bench/_servers.py``
  for how events get in without production code for it);
* ``aiohttp``: a bare aiohttp server, ``for ws in clients: await ws.send_str(text)``;
* ``websockets``: the ``websockets`` library's ``broadcast()``.

The clients (``bench/_client.py``) run in separate processes, so their CPU is
not charged to the server. The server's CPU and RSS are read with psutil from
this process. Each event frame carries its publish time (``time.time()`` in the
server); a client's receive time minus that is the latency (same host, same
clock). Only the measurement window counts: ``--warmup`` seconds after every
client is connected and subscribed, it lasts ``--duration`` seconds, and
frames published in it may arrive up to ``--drain`` seconds after its end.

Why ratios: the reference machine is a shared 2-core VM whose absolute
figures move from run to run. The three servers run back to back, under the
same noise, with the same client code, so "the gateway costs 1.6x the CPU of a
bare loop" is stable where "the gateway uses 31 % CPU" is not.

With ``--repeat R`` each scenario runs R rounds, the servers taking turns in
a rotated order, and the report shows each run and the medians; the ratios
and the verdicts use the medians.

An ``idle`` scenario follows: 10 clients, status frames only, to measure
what an idle gateway costs (at least 20 s, so a fraction of a percent is
measurable). The report ends with each target of the issue marked PASS or
MISS. ``--json PATH`` writes every raw figure; ``--logs DIR`` keeps the
children's stderr.

Every wait is bounded and every child process is stopped (then killed) in a
``finally``; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("gateway", "aiohttp", "websockets")
#: Same as ``bench._common.CONTROL_PREFIX`` (this script imports nothing from
#: ``bench`` so that it runs as ``python bench/fanout.py`` without a path hack).
CONTROL_PREFIX = "BENCH "
EVENT_TOPIC = "bench/events"
#: The latency histogram's resolution, as in ``bench._client``.
BINS_PER_MS = 20
#: The gateway announces its port in its start-up banner.
_BANNER_PORT = re.compile(r"listening on http://[^:]+:(\d+)/")

# The targets.
TARGET_CLIENTS = 1000
TARGET_EVENT_RATE = 20.0
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 120.0
TARGET_IDLE_CPU_PCT = 2.0
#: "Holds the rate": at most this share of expected event frames missing...
HOLD_MAX_LOSS_PCT = 0.1
#: ...and at least this share of the 1 Hz status frames arrived.
HOLD_MIN_STATUS_SHARE = 0.9
#: A client process above this much of a core may be the bottleneck.
CLIENT_CPU_WARN_PCT = 80.0

#: Longest control line accepted from a child (bytes).
CONTROL_LINE_LIMIT = 64 * 1024 * 1024

# Timeouts (seconds).
SERVER_START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0


class BenchError(Exception):
    """A run that could not be measured (a child failed to start, connect or answer)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    event_rate: float
    duration: float

    @property
    def idle(self) -> bool:
        return self.event_rate <= 0


@dataclass
class RunResult:
    """One server in one scenario. Latencies are over event frames only."""

    server: str
    scenario: str
    clients: int
    event_rate: float
    duration: float
    #: 1-based round with ``--repeat``; 0 marks a median over the rounds.
    run: int = 1
    repeats: int = 1
    connected: int = 0
    error: str | None = None
    events_published: int = 0
    #: Status frames the server published in the window (1 a second if it kept time).
    status_published: int = 0
    events_expected: int = 0
    events_received: int = 0
    status_received: int = 0
    dropped_notices: int = 0
    lost_connections: int = 0
    per_client_events_min: int = 0
    deliveries_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    loss_pct: float | None = None
    status_hz_per_client: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float | None = None
    cpu_pct: float = 0.0
    cpu_us_per_delivery: float | None = None
    client_cpu_pct: list[float] = field(default_factory=list)
    #: The server's garbage collections in the window, per generation (0, 1, 2).
    gc_collections: list[int] = field(default_factory=list)
    #: Time the server's event loop stood still in the collector (all, and the longest).
    gc_pause_total_ms: float = 0.0
    gc_pause_max_ms: float = 0.0

    @property
    def published_share(self) -> float:
        """Event frames published in the window over those asked for (1.0: rate held)."""
        asked = self.event_rate * self.duration
        return self.events_published / asked if asked else 1.0


# -- child processes -------------------------------------------------------------


def child_env() -> dict[str, str]:
    """This environment minus what would change the gateway's behaviour (as in the tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDROGEN_", "NOTIFY_"))}
    env.pop("JOURNAL_STREAM", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Child:
    """A benchmark process: commands on its stdin, ``BENCH`` lines from its stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.ps = psutil.Process(proc.pid)

    @classmethod
    async def start(cls, name: str, module: str, args: list[str], workdir: Path) -> Child:
        log = workdir / f"{name}.log"
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env=child_env(),
                # A client's result line carries its latency histogram: a
                # long, noisy tail makes it far longer than the default 64 KiB.
                limit=CONTROL_LINE_LIMIT,
            )
        return cls(name, proc, log)

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                raw = await self.proc.stdout.readline()
        except TimeoutError:
            raise BenchError(
                f"{self.name}: no answer within {timeout:.0f} s{self.tail()}"
            ) from None
        if not raw:
            await self._reap()
            raise BenchError(
                f"{self.name}: exited (status {self.proc.returncode}){self.tail()}"
            ) from None
        return raw.decode(errors="replace")

    async def message(self, timeout: float) -> dict[str, Any]:
        """The next control line; anything else the child prints is skipped."""
        deadline = time.monotonic() + timeout
        while True:
            text = await self.line(max(0.1, deadline - time.monotonic()))
            if text.startswith(CONTROL_PREFIX):
                return json.loads(text[len(CONTROL_PREFIX) :])

    async def port(self, timeout: float) -> int:
        """The listening port: from a control line or the gateway's banner."""
        deadline = time.monotonic() + timeout
        while True:
            text = await self.line(max(0.1, deadline - time.monotonic()))
            if text.startswith(CONTROL_PREFIX):
                return int(json.loads(text[len(CONTROL_PREFIX) :])["port"])
            match = _BANNER_PORT.search(text)
            if match:
                return int(match.group(1))

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()

    def cpu_seconds(self) -> float:
        """CPU time of all the process's threads, in nanosecond resolution where possible.

        psutil's ``cpu_times`` counts in 10 ms clock ticks: fine under load,
        too coarse for an idle server using a fraction of a percent. The
        scheduler's per-thread run time (``/proc/PID/task/*/schedstat``) is
        exact; it misses only threads that end between two readings, which
        the servers' long-lived threads do not.
        """
        total = 0
        try:
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{task}/schedstat") as handle:
                    total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            times = self.ps.cpu_times()
            return times.user + times.system
        return total / 1e9

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def peak_rss_mb(self) -> float | None:
        """VmHWM (Linux): the high-water mark, which a single RSS reading can miss."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else None

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n    " + "\n    ".join(text)) if text else ""

    async def stop(self) -> None:
        """End of file first (orderly stop), then SIGTERM, then SIGKILL; bounded."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        for signal_it in (None, self.proc.terminate, self.proc.kill):
            if self.proc.returncode is not None:
                break
            if signal_it is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal_it()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT / 2):
                    await self.proc.wait()
        await self._reap()

    async def _reap(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.proc.wait()


# -- one run ----------------------------------------------------------------------


def gateway_config(path: Path, clients: int) -> None:
    """The limits 1000 clients from one address need (the defaults protect a small host)."""
    limit = max(2048, 2 * clients)
    path.write_text(
        "# Written by bench/fanout.py\n"
        "[limits]\n"
        f"max_connections = {limit}\n"
        f"max_connections_per_ip = {limit}\n"
        f"max_pending_connections = {limit}\n"
        f"max_pending_per_ip = {limit}\n"
        "[status]\n"
        "interval = 1.0\n"
    )


def split(total: int, parts: int) -> list[int]:
    """``total`` clients over ``parts`` processes, as evenly as possible."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def client_processes(args: argparse.Namespace, clients: int) -> int:
    if args.client_procs > 0:
        return args.client_procs
    # One process keeps up with ~10k frames/s with room to spare (see the docs).
    return 1 if clients * (args.event_rate + 1) <= 10_000 else 2


async def run_one(
    kind: str, scenario: Scenario, args: argparse.Namespace, workdir: Path
) -> RunResult:
    result = RunResult(
        kind, scenario.name, scenario.clients, scenario.event_rate, scenario.duration
    )
    key = "bench-" + secrets.token_hex(12)
    server_args = [
        kind,
        "--event-rate",
        str(scenario.event_rate),
        "--event-bytes",
        str(args.event_bytes),
        "--status-bytes",
        str(args.status_bytes),
    ]
    if kind == "gateway":
        config = workdir / f"gateway-{scenario.name}.toml"
        gateway_config(config, scenario.clients)
        state = workdir / f"state-{scenario.name}"
        state.mkdir(exist_ok=True)
        server_args += ["--config", str(config), "--api-key", key, "--state-dir", str(state)]
    children: list[Child] = []
    try:
        server = await Child.start(
            f"{kind}-{scenario.name}", "bench._servers", server_args, workdir
        )
        children.append(server)
        port = await server.port(SERVER_START_TIMEOUT)
        clients: list[Child] = []
        for index, count in enumerate(
            split(scenario.clients, client_processes(args, scenario.clients))
        ):
            client_args = ["--port", str(port), "--clients", str(count), "--key", key]
            if not scenario.idle:
                client_args += ["--subscribe", EVENT_TOPIC]
            client = await Child.start(
                f"clients{index}-{kind}-{scenario.name}", "bench._client", client_args, workdir
            )
            children.append(client)
            clients.append(client)
        connect_timeout = 30.0 + scenario.clients / 20
        for client in clients:
            hello = await client.message(connect_timeout)
            result.connected += int(hello["connected"])
            if hello["failed"]:
                raise BenchError(
                    f"{client.name}: {hello['failed']} connections failed: {hello['errors']}"
                )

        t0 = time.time() + args.warmup
        t1 = t0 + scenario.duration
        t_end = t1 + args.drain
        for client in clients:
            await client.send(f"window {t0!r} {t1!r} {t_end!r}")
        await asyncio.sleep(max(0.0, t0 - time.time()))
        wall0 = time.monotonic()
        cpu0 = server.cpu_seconds()
        client_cpu0 = [c.cpu_seconds() for c in clients]
        await asyncio.sleep(max(0.0, t1 - time.time()))
        wall = time.monotonic() - wall0
        result.cpu_pct = 100.0 * (server.cpu_seconds() - cpu0) / wall
        result.client_cpu_pct = [
            round(100.0 * (c.cpu_seconds() - before) / wall, 1)
            for c, before in zip(clients, client_cpu0, strict=True)
        ]
        result.rss_mb = server.rss_mb()
        result.peak_rss_mb = server.peak_rss_mb()

        reports = [await c.message(args.drain + REPLY_TIMEOUT + 5) for c in clients]
        await server.send(f"count {t0!r} {t1!r}")
        published = await server.message(REPLY_TIMEOUT)
        result.events_published = int(published["events"])
        result.status_published = int(published["status"])
        result.gc_collections = list(published["gc"]["collections"])
        result.gc_pause_total_ms = float(published["gc"]["pause_total_ms"])
        result.gc_pause_max_ms = float(published["gc"]["pause_max_ms"])
        summarise(result, reports)
    except BenchError as exc:
        result.error = str(exc)
    except (psutil.Error, OSError, ValueError, KeyError) as exc:
        # A child vanished mid-run (psutil), or sent something unexpected.
        tails = "".join(child.tail() for child in children)
        result.error = f"{type(exc).__name__}: {exc}{tails}"
    finally:
        # Clients first: the server then sees ordinary disconnects, not a dead peer.
        for child in reversed(children):
            await child.stop()
    return result


def summarise(result: RunResult, reports: list[dict[str, Any]]) -> None:
    """Merge the client processes' counts and histograms into the result."""
    bins: dict[int, int] = {}
    for report in reports:
        for key, count in report["bins"].items():
            bins[int(key)] = bins.get(int(key), 0) + count
        result.events_received += report["events"]
        result.status_received += report["status"]
        result.dropped_notices += report["dropped"]
        result.lost_connections += report["lost_in_window"]
    result.per_client_events_min = min(r["per_client_min"] for r in reports)
    result.events_expected = result.events_published * result.connected
    result.deliveries_per_s = (result.events_received + result.status_received) / result.duration
    result.status_hz_per_client = (
        result.status_received / max(1, result.connected) / result.duration
    )
    if result.events_expected:
        missing = max(0, result.events_expected - result.events_received)
        result.loss_pct = 100.0 * missing / result.events_expected
    if bins:
        result.p50_ms = percentile(bins, 0.50)
        result.p99_ms = percentile(bins, 0.99)
        result.max_ms = max(r["max_ms"] for r in reports)
    deliveries = result.deliveries_per_s * result.duration
    if deliveries:
        result.cpu_us_per_delivery = result.cpu_pct / 100.0 * result.duration / deliveries * 1e6


def percentile(bins: dict[int, int], q: float) -> float:
    """The upper edge of the bin holding the q-quantile (so "p99 <= value")."""
    total = sum(bins.values())
    rank = math.ceil(q * total)
    seen = 0
    for key in sorted(bins):
        seen += bins[key]
        if seen >= rank:
            return (key + 1) / BINS_PER_MS
    return (max(bins) + 1) / BINS_PER_MS


# -- report -------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for name in ("aiohttp", "websockets", "psutil"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    with contextlib.suppress(OSError):
        init = (ROOT / "hydrogen" / "__init__.py").read_text()
        match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", init)
        if match:
            versions["hydrogen"] = match.group(1)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[RunResult], *, numbered: bool = False) -> str:
    header = (
        f"{'server':<14}{'deliv/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'loss %':>8}"
        f"{'RSS MB':>8}{'CPU %':>7}{'us/deliv':>9}{'status Hz':>10}{'full GC':>8}{'GC max':>7}"
        "  client CPU %"
    )
    lines = [header]
    for r in results:
        name = f"{r.server} #{r.run}" if numbered else r.server
        if r.error:
            lines.append(f"{name:<14}ERROR: {r.error}")
            continue
        lines.append(
            f"{name:<14}{r.deliveries_per_s:>9.0f}{_num(r.p50_ms, 2):>8}{_num(r.p99_ms, 2):>8}"
            f"{_num(r.max_ms):>8}{_num(r.loss_pct, 2):>8}{r.rss_mb:>8.1f}{r.cpu_pct:>7.2f}"
            f"{_num(r.cpu_us_per_delivery):>9}{r.status_hz_per_client:>10.2f}"
            f"{(r.gc_collections or [0, 0, 0])[-1]:>8}{r.gc_pause_max_ms:>7.0f}  "
            + " + ".join(f"{c:.0f}" for c in r.client_cpu_pct)
        )
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratios(results: list[RunResult]) -> dict[str, dict[str, float | None]]:
    """The gateway's figures over each baseline's, for one scenario."""
    by_server = {r.server: r for r in results if not r.error}
    gateway = by_server.get("gateway")
    out: dict[str, dict[str, float | None]] = {}
    if gateway is None:
        return out
    for name in ("aiohttp", "websockets"):
        base = by_server.get(name)
        if base is None:
            continue
        out[name] = {
            "throughput": _ratio(gateway.deliveries_per_s, base.deliveries_per_s),
            "p50": _ratio(gateway.p50_ms, base.p50_ms),
            "p99": _ratio(gateway.p99_ms, base.p99_ms),
            "rss": _ratio(gateway.rss_mb, base.rss_mb),
            "cpu": _ratio(gateway.cpu_pct, base.cpu_pct),
        }
    return out


def ratio_lines(scenario_ratios: dict[str, dict[str, float | None]]) -> str:
    lines = []
    for name, values in scenario_ratios.items():
        parts = [f"{k} " + ("-" if v is None else f"{v:.2f}x") for k, v in values.items()]
        lines.append(f"gateway / {name:<10}: " + ", ".join(parts))
    return "\n".join(lines)


def _last_line(error: str | None) -> str | None:
    return error.strip().splitlines()[-1] if error else None


def holds(r: RunResult) -> tuple[bool, str]:
    """Whether a run delivered everything asked for, with the evidence."""
    ok = (
        r.error is None
        and r.loss_pct is not None
        and r.loss_pct <= HOLD_MAX_LOSS_PCT
        and r.published_share >= 0.98
        and r.status_hz_per_client >= HOLD_MIN_STATUS_SHARE
        and r.p99_ms is not None
        and r.p99_ms < TARGET_P99_MS
    )
    why = (
        f"p99 {_num(r.p99_ms, 2)} ms, loss {_num(r.loss_pct, 3)} %, "
        f"published {100 * r.published_share:.1f} % of {r.event_rate:g}/s, "
        f"status {r.status_hz_per_client:.2f} Hz per client "
        f"({r.status_published} published in {r.duration:g} s)"
    )
    return ok, (_last_line(r.error) or why)


def targets(results: list[RunResult]) -> list[dict[str, Any]]:
    """The issue's three targets, judged on the gateway's runs (absent ones are skipped)."""
    verdicts: list[dict[str, Any]] = []
    gw = [r for r in results if r.server == "gateway"]
    big = next(
        (
            r
            for r in gw
            if r.clients == TARGET_CLIENTS
            and r.event_rate >= TARGET_EVENT_RATE
            and r.scenario != "idle"
        ),
        None,
    )
    if big is not None:
        ok, why = holds(big)
        verdicts.append(
            {
                "target": f"{TARGET_CLIENTS} clients hold 1 Hz status + {TARGET_EVENT_RATE:g} "
                f"events/s with p99 < {TARGET_P99_MS:g} ms",
                "pass": ok,
                "evidence": why,
            }
        )
        rss = max(big.rss_mb, big.peak_rss_mb or 0.0)
        verdicts.append(
            {
                "target": f"gateway RSS < {TARGET_RSS_MB:g} MB at {TARGET_CLIENTS} clients",
                "pass": big.error is None and rss < TARGET_RSS_MB,
                "evidence": _last_line(big.error)
                or f"RSS {big.rss_mb:.1f} MB at the end, peak {_num(big.peak_rss_mb)} MB",
            }
        )
    idle = next((r for r in gw if r.scenario == "idle"), None)
    if idle is not None:
        verdicts.append(
            {
                "target": f"idle gateway (10 clients, 1 Hz status) < {TARGET_IDLE_CPU_PCT:g} % "
                "of one core",
                "pass": idle.error is None and idle.cpu_pct < TARGET_IDLE_CPU_PCT,
                "evidence": _last_line(idle.error)
                or f"{idle.cpu_pct:.2f} % over {idle.duration:g} s, "
                f"status {idle.status_hz_per_client:.2f} Hz per client",
            }
        )
    return verdicts


# -- main ------------------------------------------------------------------------------


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    out = [Scenario(f"n{n}", n, args.event_rate, args.duration) for n in args.clients]
    if args.idle:
        out.append(Scenario("idle", 10, 0.0, args.idle_duration or max(args.duration, 20.0)))
    return out


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_run(runs: list[RunResult]) -> RunResult:
    """Each figure's median over the runs that worked (counts: the lower median).

    With ``--repeat`` the servers take turns, so a burst of noise from a
    neighbour on the host lands in one run of one server, and the median
    discards it instead of turning it into a ratio.
    """
    ok = [r for r in runs if r.error is None]
    if len(runs) == 1 or not ok:
        return runs[0]
    merged = dataclasses.replace(ok[0], run=0, repeats=len(ok))
    for item in dataclasses.fields(RunResult):
        values = [getattr(r, item.name) for r in ok]
        if item.name in ("run", "repeats") or not all(
            isinstance(v, int | float) or v is None for v in values
        ):
            continue
        present = [v for v in values if v is not None]
        if not present:
            continue
        pick = statistics.median_low if isinstance(present[0], int) else statistics.median
        setattr(merged, item.name, pick(present))
    for name in ("client_cpu_pct", "gc_collections"):
        lists = [getattr(r, name) for r in ok]
        if len({len(values) for values in lists}) == 1:
            setattr(
                merged, name, [statistics.median_low(column) for column in zip(*lists, strict=True)]
            )
    return merged


async def run_scenario(
    scenario: Scenario, args: argparse.Namespace, workdir: Path
) -> dict[str, list[RunResult]]:
    """Every server ``--repeat`` times, taking turns (a rotated order each round)."""
    runs: dict[str, list[RunResult]] = {kind: [] for kind in args.servers}
    for round_ in range(args.repeat):
        shift = round_ % len(args.servers)
        for kind in args.servers[shift:] + args.servers[:shift]:
            label = f" (round {round_ + 1}/{args.repeat})" if args.repeat > 1 else ""
            progress(f"  {scenario.name}: {kind}{label} ...")
            budget = args.warmup + scenario.duration + args.drain + 120 + scenario.clients / 10
            try:
                async with asyncio.timeout(budget):
                    run = await run_one(kind, scenario, args, workdir)
            except TimeoutError:
                run = RunResult(
                    kind, scenario.name, scenario.clients, scenario.event_rate, scenario.duration
                )
                run.error = f"run did not finish within {budget:.0f} s"
            run.run = round_ + 1
            runs[kind].append(run)
    return runs


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    facts = machine_facts()
    progress(
        f"fanout: {facts['nproc']} x {facts['cpu_model']}, Python {facts['python']}, "
        + ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    )
    summaries: list[RunResult] = []
    report: dict[str, Any] = {"machine": facts, "args": vars(args), "scenarios": []}
    with contextlib.ExitStack() as stack:
        if args.logs:
            workdir = Path(args.logs)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fanout-")))
        for scenario in scenarios(args):
            runs = await run_scenario(scenario, args, workdir)
            summary = [median_run(runs[kind]) for kind in args.servers]
            summaries += summary
            title = (
                f"{scenario.name}: {scenario.clients} clients, "
                + ("status only" if scenario.idle else f"{scenario.event_rate:g} events/s")
                + f" + 1 Hz status, {scenario.duration:g} s window"
            )
            print(f"\n== {title}")
            if args.repeat > 1:
                every = [r for round_ in zip(*runs.values(), strict=True) for r in round_]
                print(table(every, numbered=True))
                print(f"-- median of {args.repeat} runs")
            print(table(summary))
            scenario_ratios = ratios(summary)
            if scenario_ratios:
                print(ratio_lines(scenario_ratios))
            for r in summary:
                if r.error is None and r.status_hz_per_client < HOLD_MIN_STATUS_SHARE:
                    print(
                        f"note: {r.server} published {r.status_published} status frames in the "
                        f"{r.duration:g} s window; clients got {r.status_hz_per_client:.2f} Hz"
                    )
                if r.client_cpu_pct and max(r.client_cpu_pct) > CLIENT_CPU_WARN_PCT:
                    print(
                        f"note: a client process of the {r.server} run used "
                        f"{max(r.client_cpu_pct):.0f} % of a core; clients may limit this run"
                    )
            report["scenarios"].append(
                {
                    "scenario": dataclasses.asdict(scenario),
                    "runs": [dataclasses.asdict(r) for kind in args.servers for r in runs[kind]],
                    "median": [dataclasses.asdict(r) for r in summary],
                    "ratios": scenario_ratios,
                }
            )
    verdicts = targets(summaries)
    report["targets"] = verdicts
    if verdicts:
        print("\n== targets (gateway" + (", medians)" if args.repeat > 1 else ")"))
        for v in verdicts:
            print(f"{'PASS' if v['pass'] else 'MISS'}  {v['target']}  ({v['evidence']})")
    return report


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _server_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(values) - set(SERVERS))
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SERVERS)}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/fanout.py",
        description="Fan-out benchmark: hydrogen gateway vs bare aiohttp vs websockets.broadcast.",
    )
    parser.add_argument("--clients", type=_int_list, default=[10, 100, 1000], metavar="N,N,...")
    parser.add_argument("--event-rate", type=float, default=20.0, help="events/s to every client")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--drain", type=float, default=2.0, help="grace for frames in flight")
    parser.add_argument("--event-bytes", type=int, default=256)
    parser.add_argument("--status-bytes", type=int, default=1536, help="baselines' status size")
    parser.add_argument("--servers", type=_server_list, default=list(SERVERS), metavar="S,S,...")
    parser.add_argument(
        "--client-procs", type=int, default=0, help="client processes per run (0: automatic)"
    )
    parser.add_argument(
        "--idle", action=argparse.BooleanOptionalAction, default=True, help="run the idle scenario"
    )
    parser.add_argument(
        "--idle-duration",
        type=float,
        default=0.0,
        help="seconds measured idle (default: --duration, at least 20)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds per scenario; the report shows medians"
    )
    parser.add_argument(
        "--logs",
        metavar="DIR",
        help="keep the children's stderr and configs here (else a temp dir)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the raw results here")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.drain < 0 or args.event_rate < 0:
        parser.error("durations and rates must not be negative (and --duration > 0)")
    if args.repeat < 1 or args.idle_duration < 0:
        parser.error("--repeat must be at least 1 and --idle-duration not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run_all(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nraw results: {args.json}")
    failed = any(r.get("error") for s in report["scenarios"] for r in s["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
