"""The simulated firmware's main loop: boot and banner, simulated time and heat,
reading lines with Marlin's line-number and checksum checks (and its error and
resend texts), kill(), busy keep-alives and dispatch to the G-code handlers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from hydrogen.simulator.faults import corrupts
from hydrogen.simulator.model import (
    _EOL,
    _ERR_CHECKSUM,
    _ERR_LINE_NO,
    _ERR_NO_CHECKSUM,
    _KEEPALIVE_INTERVAL,
    _MSG_BUSY,
    _MSG_KILLED,
    _NOOP_CODES,
    _PARAM,
    _PHYSICS_STEP,
    _WORD,
    FIRMWARE_VERSION,
    Heater,
    _Halted,
    _NoOk,
    _State,
    _strtol,
    _Unknown,
    gcode_checksum,
)
from hydrogen.simulator.pty import PtyPort, log


class Firmware(PtyPort):
    """Marlin's command loop over the pty; the G-code handlers are ``_cmd_<code>``
    methods of a subclass (see ``GcodeHandlers``)."""

    heaters: dict[str, Heater]
    _time_scale: float
    extruders: int
    banner: bool
    banner_delay: float
    rx_buffer_size: int
    accepted_lines: int
    lines_received: int
    resend_requests: int
    crash: BaseException | None
    position: dict[str, float]
    relative_xyz: bool
    relative_e: bool
    fan_speeds: dict[int, int]
    feedrate_percentage: int
    flow_percentage: dict[int, int]
    active_extruder: int
    autoreport_interval: int
    position_interval: int
    _noise_rng: random.Random
    _corrupt_run: tuple[int, int]
    _digest: Any  # a hashlib sha256
    _recent: deque[str]
    _t0: float
    _physics_time: float
    _last_n: int
    _firmware_task: asyncio.Task[None] | None
    _autoreport_task: asyncio.Task[None] | None

    # ------------------------------------------------------------------ time and heat

    @property
    def time_scale(self) -> float:
        """How many times faster than the wall clock simulated time runs."""
        return self._time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        """A new speed from now on: simulated time goes on from where it is (a plain
        factor on the elapsed time made it jump: back to 1x after a while at 20x, the
        heaters froze until the wall clock caught up)."""
        if value <= 0:
            raise ValueError("time_scale must be positive")
        loop = getattr(self, "_loop", None)
        if loop is not None:
            now = self._sim_now()
            self._t0 = loop.time() - now / value
        self._time_scale = value

    def _sim_now(self) -> float:
        assert self._loop is not None
        return (self._loop.time() - self._t0) * self._time_scale

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
        self.fan_speeds = {}
        self.feedrate_percentage = 100
        self.flow_percentage = dict.fromkeys(range(self.extruders), 100)
        self.active_extruder = 0
        self.autoreport_interval = self.position_interval = 0
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
        corrupted, self._corrupt_run = corrupts(
            self.faults, self._fault_rng, self._corrupt_run, number
        )
        return corrupted

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
