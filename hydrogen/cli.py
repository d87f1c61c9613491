"""The ``hydrogen`` command: ``serve``, ``check-config`` and ``simulator``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import faulthandler
import gc
import logging
import signal
import socket
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from hydrogen import __version__
from hydrogen.config import (
    Config,
    ConfigError,
    GeneratedKey,
    PrinterConfig,
    did_you_mean,
    ensure_generated_key,
    load_config,
    parse_printer_flag,
)

log = logging.getLogger("hydrogen")

#: The subcommands, in the order ``--help`` lists them.
COMMANDS = ("serve", "check-config", "simulator")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hydrogen", description="Hydrogen: a host-side gateway for 3D printers."
    )
    parser.add_argument("--version", action="version", version=f"hydrogen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", metavar="PATH", help="TOML config file")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default 5001; 0 picks a free one)")
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="add a key with the control role (also HYDROGEN_API_KEY)",
    )
    serve.add_argument("--state-dir", metavar="DIR", help="where the gateway keeps its data")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["auto", "text", "journal"])
    serve.add_argument(
        "--status-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between status frames (default 1)",
    )
    serve.add_argument(
        "--printer",
        action="append",
        default=[],
        metavar="NAME=DEVICE[@BAUD]",
        help="a printer; DEVICE may be 'simulator' (repeatable)",
    )
    serve.add_argument(
        "--no-printers", action="store_true", help="start without the default simulated printer"
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", metavar="PATH")
    check.set_defaults(func=cmd_check_config)

    sim = sub.add_parser("simulator", help="run the simulated Marlin printer on a pty")
    sim.add_argument(
        "--link", required=True, metavar="PATH", help="symlink to create pointing at the pty"
    )
    sim.add_argument("--seed", type=int, default=None)
    sim.set_defaults(func=cmd_simulator)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "server.host": args.host,
        "server.port": args.port,
        "log.level": args.log_level,
        "log.format": args.log_format,
        "status.interval": args.status_interval,
        "state_dir": args.state_dir,
        "api_keys": args.api_key,
    }
    if args.printer:
        overrides["printers"] = [parse_printer_flag(p) for p in args.printer]
    return overrides


def build_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config, overrides=_overrides(args))
    if args.no_printers:
        return dataclasses.replace(config, printers=())
    if not config.printers and args.config is None:
        # A newcomer with no hardware still sees the whole product working.
        default = PrinterConfig(name="sim", device="simulator")
        return dataclasses.replace(config, printers=(default,))
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config, generated = ensure_generated_key(build_config(args))
    except ConfigError as exc:
        print(f"hydrogen: config error: {exc}", file=sys.stderr)
        return 2
    from hydrogen.logsetup import configure_logging

    configure_logging(config.log.level, config.log.format)
    # A watchdog kill (SIGABRT) then leaves the stuck loop's stack in the journal.
    faulthandler.enable()
    try:
        return asyncio.run(serve(config, generated))
    except KeyboardInterrupt:
        return 0


async def serve(config: Config, generated: GeneratedKey | None = None) -> int:
    """Run until SIGTERM/SIGINT; graceful shutdown; returns the exit status."""
    from aiohttp import web

    from hydrogen.gateway import Gateway
    from hydrogen.jobs.manager import JobManager
    from hydrogen.printers.manager import PrinterManager
    from hydrogen.sdnotify import Notifier, watchdog_loop
    from hydrogen.server.accesslog import RedactingAccessLogger
    from hydrogen.server.app import create_app

    # Handlers first: a SIGTERM during start-up must still shut down cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    notifier = Notifier.from_environment()
    gateway = Gateway(config)
    printers = PrinterManager(gateway)
    app = create_app(gateway, printers, JobManager(gateway, printers))
    runner = web.AppRunner(
        app, access_log_class=RedactingAccessLogger, handle_signals=False, shutdown_timeout=5.0
    )
    try:
        await runner.setup()  # starts printers and opens the job history
    except (sqlite3.Error, RuntimeError, OSError) as exc:
        print(f"hydrogen: cannot start: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 2
    hosts = [config.server.host] + ([config.server.ipv6_host] if config.server.ipv6 else [])
    try:
        for host in hosts:
            site = web.TCPSite(
                runner, host, config.server.port, reuse_address=True, reuse_port=False
            )
            await site.start()
    except OSError as exc:
        print(
            f"hydrogen: cannot listen on {host}:{config.server.port}: {exc.strerror}",
            file=sys.stderr,
        )
        await runner.cleanup()
        return 1
    ports = sorted({s.getsockname()[1] for srv in runner.sites for s in _sockets(srv)})
    port = ports[0] if ports else config.server.port
    _announce(config, hosts, port, generated)

    # Everything created at start-up lives as long as the process: move it out of the
    # collector's reach, and collect the young generation less often. Fan-out creates
    # many short-lived objects per publish; without this, full collections walking the
    # whole heap paused the loop for 80-170 ms at 1000 clients (docs/performance.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    notifier.ready(status=f"listening on port {port}; {len(config.printers)} printer(s)")
    watchdog = None
    interval = notifier.watchdog_interval()
    if interval:
        watchdog = asyncio.create_task(watchdog_loop(notifier, interval))
    await stop.wait()
    log.info("shutting down")
    notifier.stopping()
    if watchdog is not None:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    await runner.cleanup()
    notifier.close()
    log.info("stopped")
    return 0


def _sockets(site: Any) -> list[socket.socket]:
    server = getattr(site, "_server", None)
    return list(getattr(server, "sockets", None) or [])


def _announce(config: Config, hosts: list[str], port: int, generated: GeneratedKey | None) -> None:
    """Tell a newcomer where to connect and which key to use, without logging the key.

    "generated" only for a key made on this start: after a restart the operator's
    key still works, and hearing "generated" would send them to fetch a new one.
    """
    shown = "localhost" if hosts[0] in ("0.0.0.0", "::") else hosts[0]
    lines = [
        f"Hydrogen {__version__} listening on http://{shown}:{port}/ (bound to {', '.join(hosts)})",
        f"  WebSocket: ws://{shown}:{port}/ with subprotocol 'hydrogen-protocol'",
        f"  Metrics:   http://{shown}:{port}/metrics",
    ]
    if generated is not None:
        origin = "generated, kept in" if generated.created else "reused from"
        if sys.stdout.isatty():
            lines.append(f"  API key:   {generated.api_key.key}   ({origin} {generated.path})")
        else:
            lines.append(f"  API key:   {origin} {generated.path}")
    else:
        lines.append(f"  API keys:  {len(config.keys)} configured")
    print("\n".join(lines), flush=True)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(f"hydrogen: config error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.path}: OK ({len(config.keys)} key(s), {len(config.printers)} printer(s), "
        f"port {config.server.port})"
    )
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    """Serve the simulated printer until SIGTERM or Ctrl-C, then exit 0.

    Stopping is how a simulator always ends (systemd, a test harness, a shell), so
    it is a clean exit that removes the link, not a death by signal (143).
    """
    from hydrogen.printers.simulator import run_simulator

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_simulator(args.link, seed=args.seed, stop=stop)

    print(f"simulated printer on {args.link}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _unknown_command(argv: Sequence[str]) -> str | None:
    """The error for a mistyped command, with the closest one, or None if it is fine.

    argparse (before 3.14) lists every choice but never says which one was meant.
    The top level has no options that take a value, so the first word that is not
    an option is the command.
    """
    word = next((token for token in argv if not token.startswith("-")), None)
    if word is None or word in COMMANDS:
        return None
    guess = did_you_mean(word, COMMANDS)
    return f"unknown command {word!r}{guess}; commands: {', '.join(COMMANDS)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    problem = _unknown_command(argv)
    if problem is not None:
        parser.error(problem)  # usage and one line on stderr, exit 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))
