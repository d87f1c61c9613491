"""``SimulatedPrinter``: the simulated Marlin printer's state and its public API
(start, stop, hangup, replug, reset, faults, accounting for tests)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import uuid
from collections import deque

from hydrogen.simulator.faults import Faults
from hydrogen.simulator.gcode import GcodeHandlers
from hydrogen.simulator.model import _BED_MAX_TARGET, _HOTEND_MAX_TARGET, Heater, _State


class SimulatedPrinter(GcodeHandlers):
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
        #: M106/M107 by fan index (P), 0..255; M220 and M221 (by extruder) in percent
        self.fan_speeds: dict[int, int] = {}
        self.feedrate_percentage = 100
        self.flow_percentage = dict.fromkeys(range(extruders), 100)
        self.active_extruder = 0
        self.autoreport_interval = 0
        self.position_interval = 0
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
        self._position_task: asyncio.Task[None] | None = None
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
