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

The code is split along those lines: ``serial_latency``, ``serial_commands`` and
``serial_jobs`` run one section each and print its table; ``serial_children`` holds
the child processes (the simulated printer and the bare loops, each run as ``python -m
bench.serial_children ROLE``); ``serial_rig`` starts and stops them and the gateway for
every run; ``serial_common`` holds what they all share. This file is the command line:
the rounds, the targets over them and the JSON report.

This file is named like pyserial's top-level module; run as ``python
bench/serial.py`` its directory would shadow pyserial, so it takes that
directory off ``sys.path`` before anything imports ``serial``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import raise_nofile_limit
from bench.fanout import machine_facts, progress
from bench.serial_commands import run_commands
from bench.serial_jobs import TARGET_JOB_SHARE, run_jobs
from bench.serial_latency import TARGET_P99_MS, run_latency

ROOT = Path(__file__).resolve().parent.parent


def _unshadow_pyserial() -> None:
    """Drop this file's directory from ``sys.path`` (see the module docstring)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    loaded = sys.modules.get("serial")
    if loaded is not None and getattr(loaded, "__file__", "") == os.path.abspath(__file__):
        del sys.modules["serial"]


async def run_round(args: argparse.Namespace, workdir: Path, round_: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if "latency" in args.only:
        report["latency"] = await run_latency(args, workdir, round_)
    if "commands" in args.only:
        report["commands"] = await run_commands(args, workdir, round_)
    if "jobs" in args.only:
        report["jobs"] = await run_jobs(args, workdir, round_)
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


def main(argv: list[str] | None = None) -> int:
    _unshadow_pyserial()
    argv = sys.argv[1:] if argv is None else argv
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
