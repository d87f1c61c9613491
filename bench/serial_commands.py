"""Section 2 of the serial benchmark: commands through the link, one round trip each.

``{"type": "command", "gcode": "G91"}`` requests over the gateway's WebSocket, 1, 8
and 32 in flight, against the ceiling: ``serial_children``'s ping-pong loop sending
the same command straight to the pty, one at a time. This module runs the section and
prints its table; ``bench/serial.py`` calls ``run_commands``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.fanout import progress
from bench.serial_common import PING_COMMAND, PRINTER, fmt, pct, ratio
from bench.serial_rig import (
    REPLY_TIMEOUT,
    WsClient,
    cpu_of,
    guarded,
    rig,
    run_pingpong,
)

#: Commands per WebSocket connection in the commands test (the dispatcher allows 32
#: background requests pending per connection).
IN_FLIGHT_PER_CONNECTION = 16


async def run_commands(args: argparse.Namespace, workdir: Path, round_: int) -> dict[str, Any]:
    """The section: the ceiling, then the gateway at each concurrency; its part of the report."""
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
    return commands_report(command_results, args)


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
