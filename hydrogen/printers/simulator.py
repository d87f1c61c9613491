"""A simulated Marlin 2.1 printer behind a real pseudo-terminal.

The gateway talks to printers through pyserial-asyncio on a tty path. So that the
default demo (no hardware) and the integration tests exercise exactly that path,
this module opens a pty pair, keeps the slave end in raw mode and plays Marlin
on the master end: start banner, line numbers and checksums with Marlin's error
and resend texts, M105/M155 temperature reports, blocking M109/M190 with wait
lines, busy keep-alives, the emergency parser (M112/M108 act even while a
command blocks), kill() after thermal runaway, and a device that can vanish and
come back (hangup/replug).

Deliberate, documented differences from a real board:

* After a line error Marlin throws away whatever sits in its 128-byte RX buffer,
  byte by byte, so the tail of a half-discarded line can run as a command of its
  own. The simulator discards whole lines only (those ending within the first
  ``rx_buffer_size`` pending bytes) so that "every line exactly once" stays a
  property a correct host can actually achieve.
* All firmware timers (wait lines, keep-alives, M155 intervals, dwell, homing,
  heating) run on simulated time, ``time_scale`` times faster than the wall
  clock; ``banner_delay`` is wall-clock time because it models what the host sees.
* Opening the port does not reset the board (like most 32-bit USB boards);
  ``reset()`` models a reset explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import hashlib
import logging
import math
import os
import random
import re
import tty
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FIRMWARE_VERSION",
    "Faults",
    "Heater",
    "SimulatedPrinter",
    "digest_of",
    "gcode_checksum",
    "numbered_line",
    "run_simulator",
]

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "2.1.2.1"

# Marlin's own texts (language.h / M115.cpp), reproduced as the host sees them.
_ERR_CHECKSUM = "checksum mismatch"
_ERR_NO_CHECKSUM = "No Checksum with line number"
_ERR_LINE_NO = "Line Number is not Last Line Number+1"
_MSG_KILLED = "Error:Printer halted. kill() called!"
_MSG_BUSY = "echo:busy: processing"

_EOL = re.compile(rb"[\r\n]")
# Marlin's emergency parser: optional N<number>, then M108/M112/M410; whatever follows
# up to the end of line is ignored (so "N7 M112*24" and "M112" both trigger).
_EMERGENCY = re.compile(rb"^ *(?:N[-0-9 ]*)?M *(108|112|410)")
_WORD = re.compile(r"([A-Za-z])\s*([-+]?\d+)")
_PARAM = re.compile(r"([A-Za-z])\s*([-+]?(?:\d+\.?\d*|\.\d+))?")
_INT_PREFIX = re.compile(r"\s*([-+]?\d+)")

# Accepted with nothing observable to simulate.
_NOOP_CODES = frozenset(
    {"G20", "G21", "M17", "M18", "M84", "M108", "M220", "M221", "M400", "M410", "M999"}
)
_STEPS_PER_MM = {"X": 80.0, "Y": 80.0, "Z": 400.0, "E": 93.0}
# Marlin defaults: HEATER_0_MAXTEMP 275 - HOTEND_OVERSHOOT 15, BED_MAXTEMP 150 - BED_OVERSHOOT 10.
_HOTEND_MAX_TARGET = 260.0
_BED_MAX_TARGET = 140.0
# TEMP_RESIDENCY_TIME / TEMP_WINDOW / TEMP_HYSTERESIS (same values for the bed).
_RESIDENCY_TIME = 10.0
_TEMP_WINDOW = 1.0
_TEMP_HYSTERESIS = 3.0
_KEEPALIVE_INTERVAL = 2.0  # DEFAULT_KEEPALIVE_INTERVAL
_HOMING_TIME = 3.0  # simulated seconds G28 takes
_PHYSICS_STEP = 0.25  # simulated seconds per heater integration step
_MAX_PENDING_RX = 1 << 20  # stop reading the pty beyond this much unprocessed input
_MAX_PENDING_TX = 1 << 18  # drop output beyond this much unread by the host (like a UART would)


def gcode_checksum(text: str | bytes) -> int:
    """Marlin's line checksum: XOR of every byte before the ``*``."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    value = 0
    for byte in data:
        value ^= byte
    return value


def numbered_line(number: int, command: str) -> str:
    """Frame ``command`` as ``N<number> <command>*<checksum>`` (no newline)."""
    body = f"N{number} {command}"
    return f"{body}*{gcode_checksum(body)}"


def digest_of(commands: Iterable[str]) -> str:
    """The digest ``SimulatedPrinter.accepted_digest`` would show after accepting
    exactly ``commands`` in this order (each already stripped of N/checksum/comment)."""
    h = hashlib.sha256()
    for i, command in enumerate(commands):
        if i:
            h.update(b"\n")
        h.update(command.strip().encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _strtol(text: str) -> int:
    """C ``strtol`` as Marlin uses it: leading integer, 0 when there is none."""
    m = _INT_PREFIX.match(text)
    return int(m.group(1)) if m else 0


@dataclass
class Faults:
    """Fault injection, read on every received line, so tests may change it live."""

    corrupt_ratio: float = 0.0
    """Fraction of numbered lines treated as corrupted in transit (checksum mismatch)."""
    corrupt_run_limit: int | None = None
    """Never corrupt one line number more than this many times in a row (None: no
    limit). Random noise can reject a line past the host's resend limit, which rightly
    ends the link; a test of recovery sets this to stay below it."""
    drop_next_ok: int = 0
    """Swallow the next k lines that start with ``ok`` (the commands still run)."""
    drop_ok_ratio: float = 0.0
    """Fraction of ``ok`` lines lost on the way to the host, drawn from the seeded fault
    stream (the commands still run): line noise, as a flaky cable does it."""
    silent: bool = False
    """A hung firmware: input is read and discarded, nothing is written. See also
    `SimulatedPrinter.silence` for a hang that ends by itself."""


@dataclass
class Heater:
    """One heater with a first-order thermal model and a P+feed-forward controller.

    Readable by tests; ``actual`` is the true temperature (reports add sensor noise).
    The model advances lazily, whenever the firmware looks at it; use
    ``SimulatedPrinter.temperature()`` for an up-to-date value.
    """

    name: str
    ambient: float
    max_rise: float
    """Degrees above ambient at full power (steady state)."""
    tau: float
    """Thermal time constant in simulated seconds."""
    max_target: float
    actual: float
    target: float = 0.0
    power: float = 0.0
    """0..127, the scale Marlin reports as ``@:``."""

    def step(self, dt: float) -> None:
        """Advance ``dt`` simulated seconds."""
        if self.target > 0:
            feed_forward = (self.target - self.ambient) / self.max_rise * 127.0
            self.power = min(127.0, max(0.0, feed_forward + 12.7 * (self.target - self.actual)))
        else:
            self.power = 0.0
        equilibrium = self.ambient + self.max_rise * self.power / 127.0
        self.actual += (equilibrium - self.actual) * (1.0 - math.exp(-dt / self.tau))

    def set_target(self, value: float) -> None:
        """Clamp like Marlin does (silently, to MAXTEMP minus overshoot)."""
        self.target = min(max(0.0, value), self.max_target)


class _State(enum.Enum):
    OFF = "off"  # no pty (before start, after hangup/stop)
    BOOTING = "booting"  # pty open, bootloader: input is lost
    RUNNING = "running"
    HALTED = "halted"  # kill() called: deaf and mute until reset


class _Halted(Exception):
    """Unwinds the firmware task after an in-queue kill."""


class _NoOk(Exception):
    """A handler already sent its own ``ok`` line (M105)."""


class _Unknown(Exception):
    """A handler found the command unsupported in this configuration."""


class SimulatedPrinter:
    """A Marlin 2.1-like printer served on a pseudo-terminal.

    Use ``path = await printer.start()`` and open ``path`` with pyserial. The public
    attributes listed in ``__init__`` are meant to be read (and ``faults`` changed)
    by tests.
    """

    def __init__(
        self,
        *,
        link: str | None = None,
        seed: int | None = None,
        faults: Faults | None = None,
        ambient: float = 21.0,
        heat_rate: float = 3.5,
        time_scale: float = 1.0,
        extruders: int = 1,
        banner_delay: float = 0.0,
        banner: bool = True,
        autoreport_supported: bool = True,
        busy_while_heating: bool = False,
        rx_buffer_size: int = 128,
        history: int = 1000,
    ) -> None:
        """
        ``heat_rate``: hotend heating rate at full power from ambient, in °C per
        simulated second (the bed heats five times slower).
        ``busy_while_heating``: Marlin's BUSY_WHILE_HEATING; off by default as in
        Marlin, so M109/M190 send only their temperature wait lines.
        ``rx_buffer_size``: bytes of pending input discarded after a line error (0: none).
        ``history``: how many recent accepted commands / transcript lines to keep.
        """
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if extruders < 1:
            raise ValueError("extruders must be at least 1")
        self.link = link
        self.faults = faults if faults is not None else Faults()
        self.ambient = ambient
        self.time_scale = time_scale
        self.extruders = extruders
        self.banner_delay = banner_delay
        #: False: a board that does not reset when the port opens (it was running
        #: already) and says nothing until asked, like OctoPrint's virtual printer
        self.banner = banner
        self.autoreport_supported = autoreport_supported
        self.busy_while_heating = busy_while_heating
        self.rx_buffer_size = rx_buffer_size

        # Separate streams, so how often temperatures are sampled (timing dependent)
        # never shifts which lines a seeded run corrupts.
        self._fault_rng = random.Random(None if seed is None else f"{seed}/faults")
        self._noise_rng = random.Random(None if seed is None else f"{seed}/noise")
        self._corrupt_run = (-1, 0)  # (line number, times corrupted in a row)
        self.uuid = str(uuid.UUID(int=random.Random(seed).getrandbits(128), version=4))

        self.heaters: dict[str, Heater] = {}
        for i in range(extruders):
            self.heaters[f"tool{i}"] = Heater(
                name=f"tool{i}",
                ambient=ambient,
                max_rise=300.0,
                tau=300.0 / heat_rate,
                max_target=_HOTEND_MAX_TARGET,
                actual=ambient,
            )
        self.heaters["bed"] = Heater(
            name="bed",
            ambient=ambient,
            max_rise=110.0,
            tau=110.0 / (heat_rate / 5.0),
            max_target=_BED_MAX_TARGET,
            actual=ambient,
        )

        # Accepted-command accounting (what print-job tests compare against the file).
        self.accepted_lines = 0
        self._digest = hashlib.sha256()
        self._recent: deque[str] = deque(maxlen=history)
        # Everything that crossed the wire, ("<", line) received / (">", line) sent.
        self.transcript: deque[tuple[str, str]] = deque(maxlen=history)
        self.lines_received = 0
        self.resend_requests = 0
        self.dropped_oks = 0
        self.dropped_output_bytes = 0
        self.crash: BaseException | None = None
        """An unexpected exception that ended the firmware task (None while healthy)."""

        # Machine state (reset by a firmware reset).
        self.position: dict[str, float] = dict.fromkeys("XYZE", 0.0)
        self.relative_xyz = False
        self.relative_e = False
        self.fan_speed = 0
        self.active_extruder = 0
        self.autoreport_interval = 0
        self.last_message = ""
        self.progress = 0
        self._last_n = 0
        self._wait_for_heatup = False

        self._state = _State.OFF
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._physics_time = 0.0
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._reading = False
        self._writing = False
        self._rx = bytearray()
        self._rx_event = asyncio.Event()
        self._ep_line = bytearray()
        self._tx = bytearray()
        self._firmware_task: asyncio.Task[None] | None = None
        self._autoreport_task: asyncio.Task[None] | None = None
        self._stopped = False

    # ------------------------------------------------------------------ public API

    @property
    def path(self) -> str:
        """The path a client should open: the link if one was asked for."""
        if self.link is not None:
            return self.link
        if self._slave_path is None:
            raise RuntimeError("simulator not started")
        return self._slave_path

    @property
    def slave_path(self) -> str | None:
        """The current /dev/pts/N (None while unplugged)."""
        return self._slave_path

    @property
    def state(self) -> str:
        """``off``, ``booting``, ``running`` or ``halted``."""
        return self._state.value

    @property
    def halted(self) -> bool:
        return self._state is _State.HALTED

    @property
    def last_line_number(self) -> int:
        """Marlin's ``last_N``: the next numbered line must carry this plus one."""
        return self._last_n

    @property
    def accepted_digest(self) -> str:
        """sha256 hex of every accepted command joined with ``\\n`` (see ``digest_of``)."""
        return self._digest.hexdigest()

    @property
    def recent_commands(self) -> list[str]:
        """The last accepted commands, oldest first (bounded by ``history``)."""
        return list(self._recent)

    def reset_digest(self) -> None:
        """Start a fresh accounting, e.g. after the connection handshake."""
        self.accepted_lines = 0
        self._digest = hashlib.sha256()
        self._recent.clear()

    def temperature(self, name: str = "tool0") -> float:
        """True (noise-free) temperature of a heater, brought up to date."""
        self._advance_physics()
        return self.heaters[name].actual

    def silence(self, seconds: float) -> None:
        """Hang for ``seconds`` of wall-clock time (input discarded, nothing written),
        then carry on where it was, as a firmware stuck in a long blocking call does."""
        assert self._loop is not None, "start() first"
        self.faults.silent = True

        def speak() -> None:
            self.faults.silent = False

        self._loop.call_later(seconds, speak)

    def reseed(self, seed: int) -> None:
        """Seed the fault and noise streams anew (tests seed a simulator the gateway
        built, so a failing run can be replayed)."""
        self._fault_rng.seed(f"{seed}/faults")
        self._noise_rng.seed(f"{seed}/noise")

    async def start(self) -> str:
        """Open the pty (and link), boot the firmware, return the path to open."""
        if self._loop is not None:
            raise RuntimeError("simulator already started")
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._physics_time = 0.0
        self._open_pty()
        self._boot()
        return self.path

    async def stop(self) -> None:
        """Stop for good: cancel everything, close the pty, remove the link."""
        self._stopped = True
        await self._shutdown()

    async def hangup(self) -> None:
        """The USB cable is pulled: the device node vanishes and the client's reads fail."""
        await self._shutdown()

    async def replug(self) -> None:
        """Plug back in: a new pty, the link repointed, a freshly booted firmware."""
        if self._stopped:
            raise RuntimeError("simulator stopped")
        if self._loop is None:
            raise RuntimeError("simulator not started")
        if self._master is not None:
            await self._shutdown()
        self._open_pty()
        self._boot()

    def reset(self) -> None:
        """A firmware reset mid-session: state lost, line number 0, banner again.
        Whatever the host sent before the reset and the firmware had not read yet is
        lost with the rest, as a rebooting board's UART loses it (an M112 sent just
        before must not halt the freshly booted firmware)."""
        if self._master is None:
            raise RuntimeError("no device to reset (not started or unplugged)")
        self._cancel_tasks()
        with contextlib.suppress(OSError):
            while os.read(self._master, 65536):
                pass
        self._boot()

    def thermal_runaway(self, heater: str = "tool0") -> None:
        """Trip Marlin's thermal protection on ``heater`` (``tool<i>`` or ``bed``)."""
        if heater not in self.heaters:
            raise ValueError(f"unknown heater {heater!r}")
        if self._state is not _State.RUNNING:
            return
        heater_id = "bed" if heater == "bed" else heater.removeprefix("tool")
        self._emit(f"Error:Thermal Runaway, system stopped! Heater_ID: {heater_id}")
        self._kill()

    # ------------------------------------------------------------------ pty plumbing

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        try:
            # Raw: no echo, no CR/NL translation, byte-for-byte like a USB CDC port.
            tty.setraw(slave)
            os.set_blocking(master, False)
            slave_path = os.ttyname(slave)
            if self.link is not None:
                tmp = f"{self.link}.{os.getpid()}.{id(self)}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                os.symlink(slave_path, tmp)
                os.replace(tmp, self.link)  # atomic: a client never sees a missing link
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # We keep the slave open so the master never reads EIO while the client
        # closes and reopens the port.
        self._master, self._slave, self._slave_path = master, slave, slave_path
        self._rx.clear()
        self._tx.clear()
        self._ep_line.clear()
        assert self._loop is not None
        self._loop.add_reader(master, self._on_readable)
        self._reading = True

    def _close_pty(self) -> None:
        loop, master = self._loop, self._master
        if master is None or loop is None:
            return
        if self._reading:
            loop.remove_reader(master)
            self._reading = False
        if self._writing:
            loop.remove_writer(master)
            self._writing = False
        if self.link is not None and self._slave_path is not None:
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self._slave_path:
                    os.unlink(self.link)  # the device node vanishes
        os.close(master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = self._slave_path = None
        self._rx.clear()
        self._tx.clear()

    async def _shutdown(self) -> None:
        tasks = self._cancel_tasks()
        self._state = _State.OFF
        self._close_pty()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _cancel_tasks(self) -> list[asyncio.Task[None]]:
        tasks = [t for t in (self._firmware_task, self._autoreport_task) if t is not None]
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        self._firmware_task = self._autoreport_task = None
        return [t for t in tasks if t is not current]

    def _on_readable(self) -> None:
        """Read whatever the host sent; run the emergency parser on it at once."""
        if self._master is None:
            return
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open; cannot happen while we hold it
                return
            raise
        if not data or self.faults.silent or self._state is not _State.RUNNING:
            return  # a hung firmware, the bootloader or a killed board: input is lost
        self._emergency_parse(data)
        if self._state is not _State.RUNNING:
            return
        self._rx += data
        self._rx_event.set()
        if len(self._rx) > _MAX_PENDING_RX and self._reading:
            assert self._loop is not None
            self._loop.remove_reader(self._master)
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._master is not None and self._loop is not None:
            self._loop.add_reader(self._master, self._on_readable)
            self._reading = True

    def _emergency_parse(self, data: bytes) -> None:
        """EMERGENCY_PARSER: M108/M112/M410 act when their line ends, before the queue."""
        start = 0
        for m in _EOL.finditer(data):
            self._ep_line += data[start : m.start()]
            start = m.end()
            line = bytes(self._ep_line)
            self._ep_line.clear()
            hit = _EMERGENCY.match(line)
            if hit is None:
                continue
            code = hit.group(1)
            if code == b"112":
                self.transcript.append(("<", line.decode("utf-8", "replace")))
                self._kill()
                return
            if code == b"108":
                self._wait_for_heatup = False
        self._ep_line += data[start:]
        if len(self._ep_line) > 256:  # runaway line without EOL: keep the parser bounded
            del self._ep_line[:-16]

    def _emit(self, line: str) -> None:
        """Write one ``\\n``-terminated response line, honouring the faults."""
        if self._master is None or self.faults.silent:
            return
        if line.startswith("ok") and (
            self.faults.drop_next_ok > 0
            or (
                self.faults.drop_ok_ratio > 0
                and self._fault_rng.random() < self.faults.drop_ok_ratio
            )
        ):
            self.faults.drop_next_ok = max(0, self.faults.drop_next_ok - 1)
            self.dropped_oks += 1
            return
        data = (line + "\n").encode("utf-8", "surrogateescape")
        if len(self._tx) + len(data) > _MAX_PENDING_TX:
            self.dropped_output_bytes += len(data)
            return
        self.transcript.append((">", line))
        self._tx += data
        self._flush_tx()

    def _flush_tx(self) -> None:
        while self._tx and self._master is not None:
            try:
                written = os.write(self._master, self._tx)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("simulator write failed: %s", exc)
                self._tx.clear()
                break
            del self._tx[:written]
        loop, master = self._loop, self._master
        if loop is None or master is None:
            return
        if self._tx and not self._writing:
            loop.add_writer(master, self._flush_tx)
            self._writing = True
        elif not self._tx and self._writing:
            loop.remove_writer(master)
            self._writing = False

    # ------------------------------------------------------------------ time and heat

    def _sim_now(self) -> float:
        assert self._loop is not None
        return (self._loop.time() - self._t0) * self.time_scale

    async def _sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.time_scale)

    def _advance_physics(self) -> None:
        if self._loop is None:
            return
        now = self._sim_now()
        while self._physics_time < now:
            dt = min(_PHYSICS_STEP, now - self._physics_time)
            for heater in self.heaters.values():
                heater.step(dt)
            self._physics_time += dt

    def _measure(self, heater: Heater) -> float:
        return heater.actual + self._noise_rng.gauss(0.0, 0.05)

    def _heater_states(self, tool: int | None = None) -> str:
        """Marlin's print_heater_states(): `` T:21.30 /0.00 B:21.10 /0.00 @:0 B@:0``."""
        self._advance_physics()
        tool = self.active_extruder if tool is None else tool
        hot = self.heaters[f"tool{tool}"]
        bed = self.heaters["bed"]
        parts = [f"T:{self._measure(hot):.2f} /{hot.target:.2f}"]
        parts.append(f"B:{self._measure(bed):.2f} /{bed.target:.2f}")
        tools = [self.heaters[f"tool{i}"] for i in range(self.extruders)]
        if self.extruders > 1:
            parts += [f"T{i}:{self._measure(h):.2f} /{h.target:.2f}" for i, h in enumerate(tools)]
        parts += [f"@:{round(hot.power)}", f"B@:{round(bed.power)}"]
        if self.extruders > 1:
            parts += [f"@{i}:{round(h.power)}" for i, h in enumerate(tools)]
        return " " + " ".join(parts)

    # ------------------------------------------------------------------ firmware

    def _boot(self) -> None:
        """Power-on / reset: volatile state lost, bootloader, then the banner."""
        self._state = _State.BOOTING
        self._advance_physics()
        for heater in self.heaters.values():
            heater.set_target(0.0)
        self.position = dict.fromkeys("XYZE", 0.0)
        self.relative_xyz = self.relative_e = False
        self.fan_speed = 0
        self.active_extruder = 0
        self.autoreport_interval = 0
        self._last_n = 0
        self._wait_for_heatup = False
        self._rx.clear()
        self._ep_line.clear()
        assert self._loop is not None
        self._firmware_task = self._loop.create_task(self._firmware(), name="marlin-simulator")
        self._firmware_task.add_done_callback(self._firmware_done)

    def _firmware_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.crash = task.exception()
            log.error("simulated firmware crashed", exc_info=self.crash)

    async def _firmware(self) -> None:
        if self.banner_delay > 0:
            await asyncio.sleep(self.banner_delay)
        self._rx.clear()
        self._state = _State.RUNNING
        if self.banner:
            self._emit_banner()
        processed = 0
        while True:
            line = await self._next_line()
            try:
                await self._process_line(line)
            except _Halted:
                return
            processed += 1
            if processed % 32 == 0:
                await asyncio.sleep(0)  # a host blasting lines must not starve the loop

    async def _next_line(self) -> bytes:
        while True:
            m = _EOL.search(self._rx)
            if m is not None:
                line = bytes(self._rx[: m.start()])
                del self._rx[: m.end()]
                return line
            self._rx_event.clear()
            self._resume_reading()
            await self._rx_event.wait()

    def _emit_banner(self) -> None:
        for line in (
            "start",
            f"echo:Marlin {FIRMWARE_VERSION}",
            "echo: Last Updated: 2023-07-09 | Author: (Hydrogen simulator)",
            "echo:Compiled: Jul 10 2023",
            "echo: Free Memory: 4726  PlannerBufferBytes: 1408",
            "echo:V86 stored settings retrieved (649 bytes; crc 46262)",
        ):
            self._emit(line)

    def _kill(self) -> None:
        """Marlin's kill(): heaters off, the error line, then deaf and mute."""
        self._advance_physics()
        for heater in self.heaters.values():
            heater.set_target(0.0)
        self._emit(_MSG_KILLED)
        self._state = _State.HALTED
        self._rx.clear()
        self._cancel_tasks()

    def _line_error(self, message: str) -> None:
        """gcode_line_error() + flush_and_request_resend()."""
        self._emit(f"Error:{message}, Last Line: {self._last_n}")
        if self.rx_buffer_size > 0:
            # Drop the whole lines that would sit in Marlin's RX buffer.
            cut = 0
            for m in _EOL.finditer(self._rx, 0, self.rx_buffer_size):
                cut = m.end()
            del self._rx[:cut]
            self._ep_line.clear()
        self.resend_requests += 1
        self._emit(f"Resend: {self._last_n + 1}")
        self._emit("ok")

    async def _process_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "surrogateescape")
        line = text.split(";", 1)[0].strip()  # Marlin drops comments while reading
        if not line:
            return  # empty and comment-only lines get no answer at all
        self.lines_received += 1
        self.transcript.append(("<", text))
        if line[0] in "Nn":
            star = line.rfind("*")
            m110 = line.upper().find("M110")
            n_text = line[1:]
            if m110 >= 0:
                n2 = line.upper().find("N", m110 + 4)
                if n2 >= 0:
                    n_text = line[n2 + 1 :]
            number = _strtol(n_text)
            corrupted = self._corrupt(number)
            if number != self._last_n + 1 and m110 < 0:
                self._line_error(_ERR_LINE_NO)
                return
            if star < 0:
                self._line_error(_ERR_NO_CHECKSUM)
                return
            given = _strtol(line[star + 1 :])
            if corrupted or given != gcode_checksum(line[:star]):
                self._line_error(_ERR_CHECKSUM)
                return
            self._last_n = number
            command = re.sub(r"^[Nn]-?\d*", "", line[:star]).strip()
        else:
            star = line.find("*")
            command = (line[:star] if star >= 0 else line).strip()
        if not command:
            self._emit("ok")
            return
        self._accept(command)
        await self._execute(command)

    def _corrupt(self, number: int) -> bool:
        """Whether line ``number`` arrives corrupted (the fault switches decide)."""
        faults = self.faults
        if faults.corrupt_ratio <= 0 or self._fault_rng.random() >= faults.corrupt_ratio:
            self._corrupt_run = (number, 0)
            return False
        run = self._corrupt_run[1] + 1 if self._corrupt_run[0] == number else 1
        if faults.corrupt_run_limit is not None and run > faults.corrupt_run_limit:
            self._corrupt_run = (number, 0)
            return False
        self._corrupt_run = (number, run)
        return True

    def _accept(self, command: str) -> None:
        data = command.encode("utf-8", "surrogateescape")
        if self.accepted_lines:
            self._digest.update(b"\n")
        self._digest.update(data)
        self.accepted_lines += 1
        self._recent.append(command)

    @contextlib.asynccontextmanager
    async def _busy(self) -> AsyncIterator[None]:
        """HOST_KEEPALIVE_FEATURE: ``echo:busy: processing`` every 2 s while blocked."""

        async def keepalive() -> None:
            while True:
                await self._sleep(_KEEPALIVE_INTERVAL)
                if self._state is _State.RUNNING:
                    self._emit(_MSG_BUSY)

        assert self._loop is not None
        task = self._loop.create_task(keepalive())
        try:
            yield
        finally:
            task.cancel()

    async def _execute(self, command: str) -> None:
        word = _WORD.match(command)
        if word is None:
            self._unknown(command)
            return
        letter, number = word.group(1).upper(), int(word.group(2))
        rest = command[word.end() :]
        params: dict[str, float | None] = {}
        for m in _PARAM.finditer(rest):
            params.setdefault(m.group(1).upper(), float(m.group(2)) if m.group(2) else None)
        code = f"{letter}{number}"
        handler = getattr(self, f"_cmd_{code}", None)
        try:
            if letter == "T":
                self._tool_change(number)
            elif handler is not None:
                await handler(params, rest)
            elif code not in _NOOP_CODES:
                raise _Unknown
        except _Unknown:
            self._unknown(command)
            return
        except _NoOk:
            return
        if self._state is _State.RUNNING:
            self._emit("ok")

    def _unknown(self, command: str) -> None:
        self._emit(f'echo:Unknown command: "{command}"')
        self._emit("ok")

    def _tool_change(self, tool: int) -> None:
        if 0 <= tool < self.extruders:
            self.active_extruder = tool
        else:
            self._emit(f"echo:T{tool} Invalid extruder")

    def _target_tool(self, code: str, params: dict[str, float | None]) -> Heater | None:
        tool = params.get("T")
        index = self.active_extruder if tool is None else int(tool)
        if not 0 <= index < self.extruders:
            self._emit(f"echo:{code} Invalid extruder {index}")
            return None
        return self.heaters[f"tool{index}"]

    # Motion ---------------------------------------------------------------

    def _move(self, params: dict[str, float | None]) -> None:
        for axis in "XYZE":
            value = params.get(axis)
            if value is None:
                continue
            relative = self.relative_e if axis == "E" else self.relative_xyz
            self.position[axis] = self.position[axis] + value if relative else value

    async def _cmd_G0(self, params: dict[str, float | None], rest: str) -> None:
        self._move(params)

    _cmd_G1 = _cmd_G0
    _cmd_G2 = _cmd_G0
    _cmd_G3 = _cmd_G0

    async def _cmd_G4(self, params: dict[str, float | None], rest: str) -> None:
        seconds = (params.get("P") or 0.0) / 1000.0 + (params.get("S") or 0.0)
        async with self._busy():
            await self._sleep(seconds)

    async def _cmd_G28(self, params: dict[str, float | None], rest: str) -> None:
        async with self._busy():
            await self._sleep(_HOMING_TIME)
        axes = [a for a in "XYZ" if a in params] or ["X", "Y", "Z"]
        for axis in axes:
            self.position[axis] = 0.0
        self._emit(self._position_report())

    async def _cmd_G90(self, params: dict[str, float | None], rest: str) -> None:
        self.relative_xyz = self.relative_e = False

    async def _cmd_G91(self, params: dict[str, float | None], rest: str) -> None:
        self.relative_xyz = self.relative_e = True

    async def _cmd_G92(self, params: dict[str, float | None], rest: str) -> None:
        for axis in "XYZE":
            if axis in params:
                self.position[axis] = params[axis] or 0.0

    async def _cmd_M82(self, params: dict[str, float | None], rest: str) -> None:
        self.relative_e = False

    async def _cmd_M83(self, params: dict[str, float | None], rest: str) -> None:
        self.relative_e = True

    def _position_report(self) -> str:
        p = self.position
        counts = " ".join(f"{a}:{round(p[a] * _STEPS_PER_MM[a])}" for a in "XYZ")
        return f"X:{p['X']:.2f} Y:{p['Y']:.2f} Z:{p['Z']:.2f} E:{p['E']:.2f} Count {counts}"

    async def _cmd_M114(self, params: dict[str, float | None], rest: str) -> None:
        self._emit(self._position_report())

    # Temperatures ------------------------------------------------------------

    async def _cmd_M104(self, params: dict[str, float | None], rest: str) -> None:
        heater = self._target_tool("M104", params)
        if heater is not None and params.get("S") is not None:
            self._advance_physics()
            heater.set_target(params["S"] or 0.0)

    async def _cmd_M140(self, params: dict[str, float | None], rest: str) -> None:
        if params.get("S") is not None:
            self._advance_physics()
            self.heaters["bed"].set_target(params["S"] or 0.0)

    async def _cmd_M105(self, params: dict[str, float | None], rest: str) -> None:
        # The report rides on the ok: "ok T:..." — emitted here, so skip the plain ok.
        heater = self._target_tool("M105", params)
        tool = self.active_extruder if heater is None else int(heater.name[4:])
        self._emit("ok" + self._heater_states(tool))
        raise _NoOk

    async def _cmd_M109(self, params: dict[str, float | None], rest: str) -> None:
        heater = self._target_tool("M109", params)
        if heater is not None:
            await self._wait_heater(heater, params, int(heater.name[4:]))

    async def _cmd_M190(self, params: dict[str, float | None], rest: str) -> None:
        await self._wait_heater(self.heaters["bed"], params, self.active_extruder)

    async def _wait_heater(
        self, heater: Heater, params: dict[str, float | None], report_tool: int
    ) -> None:
        """Marlin's wait_for_hotend()/wait_for_bed(): ` W:` lines every second until
        the temperature has stayed within the window for the residency time."""
        no_wait_for_cooling = params.get("S") is not None
        if no_wait_for_cooling or params.get("R") is not None:
            self._advance_physics()
            heater.set_target((params.get("S") if no_wait_for_cooling else params.get("R")) or 0)
        self._advance_physics()
        if no_wait_for_cooling and heater.actual > heater.target:
            return  # M109 S waits only when heating
        self._wait_for_heatup = True
        residency_start: float | None = None
        next_report = 0.0
        poll = max(0.1, 0.01 * self.time_scale)  # simulated seconds between checks
        busy = self._busy() if self.busy_while_heating else contextlib.nullcontext()
        async with busy:
            while self._wait_for_heatup:
                now = self._sim_now()
                self._advance_physics()
                temperature = self._measure(heater)
                if now >= next_report:
                    next_report = now + 1.0
                    if residency_start is None:
                        remaining = "?"
                    else:
                        remaining = str(max(0, int(_RESIDENCY_TIME - (now - residency_start))))
                    self._emit(f"{self._heater_states(report_tool)} W:{remaining}")
                difference = abs(heater.target - temperature)
                if residency_start is None:
                    if difference < _TEMP_WINDOW:
                        residency_start = now
                elif difference > _TEMP_HYSTERESIS:
                    residency_start = now
                if residency_start is not None and now - residency_start >= _RESIDENCY_TIME:
                    break
                if heater.target == 0 and no_wait_for_cooling:
                    break
                await self._sleep(poll)
        self._wait_for_heatup = False

    async def _cmd_M155(self, params: dict[str, float | None], rest: str) -> None:
        if not self.autoreport_supported:
            raise _Unknown
        seconds = params.get("S")
        if seconds is None:
            return
        self.autoreport_interval = max(0, min(60, int(seconds)))
        if self._autoreport_task is not None:
            self._autoreport_task.cancel()
            self._autoreport_task = None
        if self.autoreport_interval:
            assert self._loop is not None
            self._autoreport_task = self._loop.create_task(
                self._autoreport(self.autoreport_interval), name="marlin-simulator-autoreport"
            )

    async def _autoreport(self, interval: int) -> None:
        while True:
            await self._sleep(interval)
            if self._state is _State.RUNNING:
                self._emit(self._heater_states())

    # Misc -------------------------------------------------------------------

    async def _cmd_M106(self, params: dict[str, float | None], rest: str) -> None:
        speed = params.get("S")
        self.fan_speed = 255 if speed is None else max(0, min(255, round(speed)))

    async def _cmd_M107(self, params: dict[str, float | None], rest: str) -> None:
        self.fan_speed = 0

    async def _cmd_M73(self, params: dict[str, float | None], rest: str) -> None:
        if params.get("P") is not None:
            self.progress = round(params["P"] or 0)

    async def _cmd_M117(self, params: dict[str, float | None], rest: str) -> None:
        self.last_message = rest.strip()

    async def _cmd_M118(self, params: dict[str, float | None], rest: str) -> None:
        text = rest.strip()
        prefix = ""
        while len(text) >= 2 and text[0] in "AEPae" and text[1] in "0123456789":
            if text[:2].upper() == "E1":
                prefix = "echo:"
            elif text[:2].upper() == "A1":
                prefix = "//"
            text = text[2:].lstrip()
        self._emit(prefix + text)

    async def _cmd_M110(self, params: dict[str, float | None], rest: str) -> None:
        if params.get("N") is not None:
            self._last_n = int(params["N"] or 0)

    async def _cmd_M112(self, params: dict[str, float | None], rest: str) -> None:
        self._kill()
        raise _Halted

    async def _cmd_M115(self, params: dict[str, float | None], rest: str) -> None:
        self._emit(
            f"FIRMWARE_NAME:Marlin {FIRMWARE_VERSION} (Hydrogen simulator) "
            "SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin PROTOCOL_VERSION:1.0 "
            f"MACHINE_TYPE:Hydrogen Simulator EXTRUDER_COUNT:{self.extruders} UUID:{self.uuid}"
        )
        caps = {
            "SERIAL_XON_XOFF": 0,
            "BINARY_FILE_TRANSFER": 0,
            "EEPROM": 1,
            "VOLUMETRIC": 1,
            "AUTOREPORT_POS": 0,
            "AUTOREPORT_TEMP": int(self.autoreport_supported),
            "PROGRESS": 0,
            "PRINT_JOB": 1,
            "AUTOLEVEL": 0,
            "RUNOUT": 0,
            "Z_PROBE": 0,
            "LEVELING_DATA": 0,
            "BUILD_PERCENT": 1,
            "SOFTWARE_POWER": 0,
            "TOGGLE_LIGHTS": 0,
            "CASE_LIGHT_BRIGHTNESS": 0,
            "EMERGENCY_PARSER": 1,
            "HOST_ACTION_COMMANDS": 0,
            "PROMPT_SUPPORT": 0,
            "SDCARD": 0,
            "AUTOREPORT_SD_STATUS": 0,
            "LONG_FILENAME": 0,
            "EXTENDED_M20": 0,
            "THERMAL_PROTECTION": 1,
            "MOTION_MODES": 0,
            "ARCS": 1,
            "BABYSTEPPING": 0,
            "CHAMBER_TEMPERATURE": 0,
            "COOLER_TEMPERATURE": 0,
            "MEATPACK": 0,
            "CONFIG_EXPORT": 0,
        }
        for name, value in caps.items():
            self._emit(f"Cap:{name}:{value}")

    async def _cmd_M503(self, params: dict[str, float | None], rest: str) -> None:
        steps = " ".join(f"{a}{v:.2f}" for a, v in _STEPS_PER_MM.items())
        for line in (
            "; Linear Units:",
            "  G21 ; (mm)",
            "; Temperature Units:",
            "  M149 C ; Units in Celsius",
            "; Steps per unit:",
            f"  M92 {steps}",
            "; Max feedrates (units/s):",
            "  M203 X500.00 Y500.00 Z5.00 E25.00",
            "; Max Acceleration (units/s2):",
            "  M201 X500.00 Y500.00 Z100.00 E5000.00",
            "; Acceleration (units/s2) (P<print-accel> R<retract-accel> T<travel-accel>):",
            "  M204 P500.00 R500.00 T500.00",
            "; Home offset:",
            "  M206 X0.00 Y0.00 Z0.00",
            "; Hotend PID:",
            "  M301 P21.73 I1.54 D76.55",
            "; Bed PID:",
            "  M304 P462.10 I85.47 D624.59",
        ):
            self._emit("echo:" + line)


async def run_simulator(
    link: str,
    *,
    seed: int | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Serve a simulated printer at ``link`` until cancelled or ``stop`` is set.

    ``options`` go to ``SimulatedPrinter`` (time_scale, banner_delay, ...); this is
    what ``hydrogen simulator --link PATH`` runs.
    """
    printer = SimulatedPrinter(link=link, seed=seed, **options)
    await printer.start()
    log.info("simulated printer on %s -> %s", link, printer.slave_path)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await printer.stop()
