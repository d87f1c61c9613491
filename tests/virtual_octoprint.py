"""OctoPrint's virtual printer served on a real pty: a second, independent firmware.

Our simulator and our Marlin protocol were written together and can share a
misunderstanding. OctoPrint's ``VirtualPrinter`` (``octoprint.plugins.virtual_printer``)
was not: this script runs one behind a pseudo-terminal so that the gateway opens the
slave path through its normal pyserial code, exactly as it opens hardware.

It runs under an interpreter that has the ``octoprint`` package. OctoPrint pins about
sixty packages (``psutil<7`` among them) that must not change the gateway's own
environment, so .ci/run installs it in a venv of its own, ``.venv/octoprint``; the tests
start this file with that venv's python as a subprocess (nothing here imports hydrogen)::

    python tests/virtual_octoprint.py --record events.jsonl \\
        [--settings '{"simulated_errors": ["12:resend"]}'] [--seed 7] \\
        [--chaos trigger_missing_lineno,dont_answer --chaos-every 40-80 --chaos-max 3]

Behaviour:

* It prints one JSON line ``{"pty": "/dev/pts/N", "octoprint": "<version>"}`` on stdout
  when the pty exists, then serves it until killed.
* The board resets on every open of the port (DTR, like an Arduino-based board): each
  time the host opens the slave a fresh ``VirtualPrinter`` boots with the given settings
  (its ``simulateReset`` prints OctoPrint's ``start`` banner; off, there is none), and a
  close of the port powers it down. The bridge sees opens and closes on the master side
  (POLLHUP while no one has the slave open).
* Every line the host writes is handed to ``VirtualPrinter.write`` whole, one line per
  call (a serial port may split them anywhere, but the printer's M112 check looks at one
  ``write`` at a time), and every line it answers is written back to the host.
* Error injection is the virtual printer's own: its ``simulated_errors``,
  ``resend_ratio``, ``forceChecksum``... settings (``--settings``, merged over the plugin's
  defaults) and its ``!!DEBUG:<command>`` triggers. ``--chaos`` feeds the latter at
  random points, ``--seed`` fixes those points, and a line on stdin, ``debug <command>``,
  sends one right away. Injected lines go in between two host lines, never into one.
* ``--record`` gets one JSON object a line, flushed at once, so a test can follow along:
  ``{"boot": k}`` / ``{"close": k}`` per power cycle, ``{"rx": line}`` for each line the
  host wrote, ``{"tx": line}`` for each line the firmware answered, ``{"exec": command,
  "n": N}`` for each command the firmware accepted and executed (after its line-number and
  checksum checks; ``n`` is its line number then), ``{"kill": k}`` when the M112
  emergency parser fires, ``{"inject": command}`` and ``{"crash": text}`` if one of its
  threads dies.
"""

from __future__ import annotations

import argparse
import copy
import errno
import json
import os
import queue
import random
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import tty
from typing import Any


class Recorder:
    """Thread-safe JSON-lines log, flushed per record."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
        self._lock = threading.Lock()

    def __call__(self, **record: Any) -> None:
        line = json.dumps(record)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


class Settings:
    """The slice of OctoPrint's settings API that ``VirtualPrinter`` reads."""

    def __init__(self, values: dict[str, Any], folder: str) -> None:
        self._values = values
        self._folder = folder

    def get(self, path: list[str], merged: bool = False) -> Any:
        value: Any = self._values
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    def get_int(self, path: list[str]) -> int | None:
        value = self.get(path)
        return None if value is None else int(value)

    def get_float(self, path: list[str]) -> float | None:
        value = self.get(path)
        return None if value is None else float(value)

    def get_boolean(self, path: list[str]) -> bool:
        value = self.get(path)
        if isinstance(value, str):
            return value.lower() in ("true", "yes", "y", "1", "on")
        return bool(value)

    def global_get_basefolder(self, name: str) -> str:
        path = os.path.join(self._folder, name)
        os.makedirs(path, exist_ok=True)
        return path


class NoPlugins:
    """Stands in for OctoPrint's plugin manager: no plugin adds custom actions."""

    def get_hooks(self, name: str) -> dict[str, Any]:
        return {}


class NoProfiles:
    def get_current_or_default(self) -> dict[str, Any]:
        return {}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class Chaos:
    """The virtual printer's own ``!!DEBUG:`` triggers at seeded random points."""

    def __init__(self, triggers: list[str], every: tuple[int, int], limit: int, seed: int):
        self.triggers = triggers
        self.every = every
        self.left = limit if triggers else 0
        self.random = random.Random(seed)
        self.countdown = self._draw()

    def _draw(self) -> int:
        return self.random.randint(*self.every)

    def after_host_line(self) -> str | None:
        if self.left <= 0:
            return None
        self.countdown -= 1
        if self.countdown > 0:
            return None
        self.left -= 1
        self.countdown = self._draw()
        return self.random.choice(self.triggers)


class Bridge:
    def __init__(self, args: argparse.Namespace) -> None:
        from octoprint.plugins.virtual_printer import VirtualPrinterPlugin, virtual

        self.virtual = virtual
        self.record = Recorder(args.record)
        self.folder = tempfile.mkdtemp(prefix="octoprint-virtual-")
        defaults = VirtualPrinterPlugin().get_settings_defaults()
        self.settings = merge(defaults, json.loads(args.settings))
        # The plugin manager is only asked for custom-action hooks; there are none here.
        virtual.plugin_manager = NoPlugins
        # Every command the printer accepts passes this regex exactly once, after the
        # line-number and checksum checks and before it is executed: record it there.
        bridge = self

        class RecordingRegex:
            def __init__(self, regex: Any) -> None:
                self.regex = regex

            def match(self, data: str) -> Any:
                printer = bridge.printer
                bridge.record(exec=data.strip(), n=None if printer is None else printer.lastN)
                return self.regex.match(data)

        virtual.VirtualPrinter.command_regex = RecordingRegex(virtual.VirtualPrinter.command_regex)
        self.printer: Any = None
        self.boots = 0
        self.chaos = Chaos(
            [t for t in args.chaos.split(",") if t],
            tuple(int(x) for x in args.chaos_every.split("-")),  # type: ignore[arg-type]
            args.chaos_max,
            args.seed,
        )
        self.control: queue.Queue[str] = queue.Queue()
        master, slave = os.openpty()
        tty.setraw(slave)  # the line discipline keeps this after the slave is closed
        self.path = os.ttyname(slave)
        os.close(slave)  # so that the master sees POLLHUP while the host has it closed
        self.master = master

    # -- the printer's side ---------------------------------------------------------------
    def boot(self) -> None:
        self.boots += 1
        self.record(boot=self.boots)
        self.printer = self.virtual.VirtualPrinter(
            Settings(self.settings, self.folder),
            NoProfiles(),
            data_folder=self.folder,
            read_timeout=0.05,
            write_timeout=10.0,
        )
        threading.Thread(
            target=self._answer, args=(self.printer,), name="to-host", daemon=True
        ).start()

    def power_down(self) -> None:
        printer, self.printer = self.printer, None
        if printer is None:
            return
        for name in ("_temperature_reporter", "_sdstatus_reporter", "_pos_reporter"):
            timer = getattr(printer, name, None)
            if timer is not None:
                timer.cancel()
        printer.close()
        self.record(close=self.boots)

    def _answer(self, printer: Any) -> None:
        """The printer's replies to the host, until it is powered down."""
        while printer is self.printer:
            try:
                line = printer.readline()
            except Exception as exc:  # a dropped connection (its drop_connection trigger)
                self.record(crash=f"readline: {exc!r}")
                return
            if not line or printer is not self.printer:
                continue
            text = line.decode("ascii", "replace").rstrip("\r\n")
            self.record(tx=text)
            data = line if line.endswith(b"\n") else line + b"\n"
            try:
                while data:
                    data = data[os.write(self.master, data) :]
            except OSError:
                return  # the host closed the port; power_down follows

    def feed(self, line: bytes) -> None:
        """One line to the printer, through its own write() (which may take part of it)."""
        printer = self.printer
        if printer is None:
            return
        killed = printer._killed
        while line:
            written = printer.write(line)
            if not written:
                break  # closed
            line = line[written:]
        if printer._killed and not killed:
            self.record(kill=self.boots)

    # -- the host's side ------------------------------------------------------------------
    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        pending = b""
        while True:
            events = dict(poller.poll(20))
            hung_up = bool(events.get(self.master, 0) & select.POLLHUP)
            if hung_up:
                if self.printer is not None:
                    self.power_down()
                    pending = b""
                time.sleep(0.01)
                continue
            if self.printer is None:
                self.boot()
            self._control()
            if not events.get(self.master, 0) & select.POLLIN:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                continue  # closed between poll and read: POLLHUP next round
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self.record(rx=raw.decode("ascii", "replace").rstrip("\r"))
                self.feed(raw + b"\n")
                if raw.startswith(b"N"):
                    trigger = self.chaos.after_host_line()
                    if trigger is not None:
                        self.inject(trigger)

    def inject(self, command: str) -> None:
        self.record(inject=command)
        self.feed(f"!!DEBUG:{command}\n".encode("ascii"))

    def _control(self) -> None:
        while True:
            try:
                text = self.control.get_nowait()
            except queue.Empty:
                return
            verb, _, argument = text.partition(" ")
            if verb == "debug" and argument:
                self.inject(argument)

    def read_stdin(self) -> None:
        for text in sys.stdin:
            self.control.put(text.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", required=True, help="JSON-lines log of what happened")
    parser.add_argument("--settings", default="{}", help="JSON merged over the plugin defaults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chaos", default="", help="comma-separated !!DEBUG: triggers")
    parser.add_argument("--chaos-every", default="30-60", help="host lines between triggers")
    parser.add_argument("--chaos-max", type=int, default=0, help="at most this many triggers")
    args = parser.parse_args(argv)

    def crashed(hook: threading.ExceptHookArgs) -> None:
        text = "".join(
            traceback.format_exception(hook.exc_type, hook.exc_value, hook.exc_traceback)
        )
        bridge.record(crash=text)
        sys.stderr.write(text)

    bridge = Bridge(args)
    threading.excepthook = crashed

    def terminate(signum: int, frame: Any) -> None:
        shutil.rmtree(bridge.folder, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    from octoprint import __version__

    print(json.dumps({"pty": bridge.path, "octoprint": __version__}), flush=True)
    threading.Thread(target=bridge.read_stdin, name="control", daemon=True).start()
    try:
        bridge.serve()
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.flush()
        os._exit(0)  # the printer's own threads are not daemons
    return 0


if __name__ == "__main__":
    sys.exit(main())
