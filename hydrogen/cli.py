"""The ``hydrogen`` command: ``serve``, ``check-config``, ``keys`` and ``simulator``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
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
from hydrogen.statelock import StateDirBusy, StateLock

log = logging.getLogger("hydrogen")

#: The subcommands, in the order ``--help`` lists them.
COMMANDS = ("serve", "check-config", "keys", "simulator")


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
    serve.add_argument(
        "--no-announce",
        action="store_true",
        help="no zeroconf announcement on the network (octoprint.announce = false)",
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", metavar="PATH")
    check.set_defaults(func=cmd_check_config)

    from hydrogen.keys_cli import add_parser as add_keys_parser

    add_keys_parser(sub)

    sim = sub.add_parser("simulator", help="run the simulated Marlin printer on a pty")
    sim.add_argument(
        "--link", required=True, metavar="PATH", help="symlink to create pointing at the pty"
    )
    sim.add_argument("--seed", type=int, default=None)
    faults = sim.add_argument_group("faults (line noise, from the seeded fault stream)")
    faults.add_argument(
        "--corrupt-ratio", type=float, default=0.0, metavar="R", help="lines arriving corrupted"
    )
    faults.add_argument(
        "--drop-ok-ratio", type=float, default=0.0, metavar="R", help="oks lost on the way"
    )
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
        "octoprint.announce": False if getattr(args, "no_announce", False) else None,
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
    """Claim the state dir and the port, and only then open anything.

    A second ``hydrogen serve`` (same state dir, or same port) must fail before it
    opens a printer, the job history or a file: opening them would mark the running
    gateway's print failed, replace its simulator's pty, or reset a real printer.
    """
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"hydrogen: config error: {exc}", file=sys.stderr)
        return 2
    # Before any file or socket is opened: the connection caps are derived from it.
    from hydrogen.server.gate import raise_open_files_limit

    files = raise_open_files_limit()
    try:
        lock = StateLock.acquire(config.state_dir)
    except StateDirBusy as exc:
        print(f"hydrogen: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hydrogen: cannot use {config.state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    with lock:
        try:
            sockets = listen(config)
        except ListenError as exc:
            print(f"hydrogen: {exc}", file=sys.stderr)
            return 1
        try:
            return _serve_bound(config, sockets, files)
        finally:
            for sock in sockets:
                sock.close()


def _serve_bound(
    config: Config,
    sockets: list[socket.socket],
    files: tuple[int, int, str | None] | None = None,
) -> int:
    try:
        config, generated = ensure_generated_key(config)
    except ConfigError as exc:
        print(f"hydrogen: config error: {exc}", file=sys.stderr)
        return 2
    from hydrogen.logsetup import configure_logging

    configure_logging(config.log.level, config.log.format)
    if files is not None:
        before, after, problem = files
        if problem is not None:
            log.warning("cannot raise the open files limit from %d: %s", before, problem)
        elif after != before:
            log.info("open files limit raised from %d to %d", before, after)
    # A watchdog kill (SIGABRT) then leaves the stuck loop's stack in the journal.
    faulthandler.enable()
    try:
        return asyncio.run(serve(config, generated, sockets=sockets))
    except KeyboardInterrupt:
        return 0


class ListenError(Exception):
    """The listening sockets cannot be had; the message is the one line to print."""


def _hosts(config: Config) -> list[str]:
    return [config.server.host] + ([config.server.ipv6_host] if config.server.ipv6 else [])


def listen(config: Config) -> list[socket.socket]:
    """Bind and listen on every configured address, as ``loop.create_server`` would.

    Done before the app starts, so a port in use is known before any printer is
    opened. Connections that arrive meanwhile wait in the backlog.
    """
    port = config.server.port
    sockets: list[socket.socket] = []
    try:
        for host in _hosts(config):
            try:
                infos = socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
            except socket.gaierror as exc:
                raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # Like asyncio: an IPv6 socket serves IPv6 only; IPv4 has its own.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise ListenError(f"port {port} is in use ({host})") from None
                    raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
                sock.listen(128)
                sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve(
    config: Config,
    generated: GeneratedKey | None = None,
    *,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; graceful shutdown; returns the exit status.

    ``sockets`` are the listening sockets from :func:`listen` (bound here if None).
    """
    from aiohttp import web

    from hydrogen.gateway import Gateway
    from hydrogen.jobs.manager import JobManager
    from hydrogen.printers.manager import PrinterManager
    from hydrogen.sdnotify import Notifier, watchdog_loop
    from hydrogen.server.accesslog import RedactingAccessLogger
    from hydrogen.server.app import create_app
    from hydrogen.server.gate import GATE, Acceptor

    if sockets is None:
        try:
            sockets = listen(config)
        except ListenError as exc:
            print(f"hydrogen: {exc}", file=sys.stderr)
            return 1
    # Handlers first: a SIGTERM during start-up must still shut down cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    notifier = Notifier.from_environment()
    gateway = Gateway(config)
    printers = PrinterManager(gateway)
    app = create_app(gateway, printers, JobManager(gateway, printers))
    # aiohttp's keep-alive timer starts at connection_made and after every response and
    # is not extended by received bytes: the deadline for a request's complete headers.
    handler_args: dict[str, Any] = {
        "access_log_class": RedactingAccessLogger,
        "keepalive_timeout": config.limits.header_timeout,
    }
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, **handler_args)
    try:
        await runner.setup()  # starts printers and opens the job history
    except (sqlite3.Error, RuntimeError, OSError) as exc:
        print(f"hydrogen: cannot start: {exc}", file=sys.stderr)
        await runner.cleanup()
        for sock in sockets:
            sock.close()
        return 2
    assert runner.server is not None
    gate = app[GATE]
    acceptor = Acceptor(gate, runner.server, handler_args)
    acceptor.start(sockets)
    budget = gate.budget
    log.info(
        "connection limits: %d connections (open files limit %d, %d kept for printers, "
        "database, uploads and logs), %d WebSockets, %d waiting for a request (%d per "
        "address), %.0f s to send a request's headers",
        budget.connections,
        budget.open_files,
        budget.reserve,
        budget.websockets,
        budget.pending,
        budget.pending_per_ip,
        config.limits.header_timeout,
    )
    hosts = _hosts(config)
    ports = sorted({sock.getsockname()[1] for sock in sockets})
    port = ports[0] if ports else config.server.port
    _announce(config, hosts, port, generated)
    announcer = _discovery(config, sockets, port)

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
    if announcer is not None:
        await announcer.stop()  # goodbyes first: apps stop offering a gateway that is leaving
    if watchdog is not None:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    acceptor.stop()
    await runner.cleanup()
    notifier.close()
    log.info("stopped")
    return 0


def _discovery(config: Config, sockets: list[socket.socket], port: int) -> Any:
    """Start the zeroconf announcement in the background (hydrogen/discovery.py)."""
    from hydrogen.discovery import announce
    from hydrogen.octoprint.answers import API_VERSION, OCTOPRINT_VERSION

    return announce(
        enabled=config.octoprint.announce,
        printers=[p.name for p in config.printers],
        # One SRV port per service: only the sockets on it (with port 0, the IPv4 and
        # IPv6 sockets each got a port of their own).
        bound=[sock.getsockname()[0] for sock in sockets if sock.getsockname()[1] == port],
        port=port,
        state_dir=str(config.state_dir),
        octoprint_version=OCTOPRINT_VERSION,
        api_version=API_VERSION,
    )


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
    from hydrogen.simulator import Faults, run_simulator

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        faults = Faults(corrupt_ratio=args.corrupt_ratio, drop_ok_ratio=args.drop_ok_ratio)
        await run_simulator(args.link, seed=args.seed, stop=stop, faults=faults)

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
