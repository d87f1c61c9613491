"""The G-code the simulated firmware understands, one ``_cmd_<code>`` handler each:
motion and position (M114, M154 auto-reports), temperatures (M104/M109/M140/M190 with
Marlin's wait loop, M105, M155 auto-reports), fans, feed-rate and flow factors
(M220/M221), messages, M110/M112, M115 capabilities, M503."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from hydrogen.simulator.firmware import Firmware
from hydrogen.simulator.model import (
    _HOMING_TIME,
    _RESIDENCY_TIME,
    _STEPS_PER_MM,
    _TEMP_HYSTERESIS,
    _TEMP_WINDOW,
    FIRMWARE_VERSION,
    Heater,
    _Halted,
    _NoOk,
    _State,
    _Unknown,
)


class GcodeHandlers(Firmware):
    """What each supported command does; ``Firmware._execute`` finds them by name."""

    uuid: str
    autoreport_supported: bool
    busy_while_heating: bool
    last_message: str
    progress: int

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

    async def _cmd_M154(self, params: dict[str, float | None], rest: str) -> None:
        """Position auto-report (AUTO_REPORT_POSITION): Marlin's projected position,
        without the step counts."""
        if not self.autoreport_supported:
            raise _Unknown
        restarted = self._auto_report(
            params,
            self._position_task,
            lambda: self._position_report().split(" Count ", 1)[0],
            "marlin-simulator-position",
        )
        if restarted is not None:
            self.position_interval, self._position_task = restarted

    def _auto_report(
        self,
        params: dict[str, float | None],
        task: asyncio.Task[None] | None,
        report: Callable[[], str],
        name: str,
    ) -> tuple[int, asyncio.Task[None] | None] | None:
        """An auto-report's ``S<seconds>`` (M154, M155): the interval, 0 to 60 (0: off),
        and the task that now emits ``report()`` at it, the old one cancelled; None
        without ``S``, which changes nothing."""
        seconds = params.get("S")
        if seconds is None:
            return None
        interval = max(0, min(60, int(seconds)))
        if task is not None:
            task.cancel()
        if not interval:
            return interval, None
        assert self._loop is not None
        return interval, self._loop.create_task(self._every(interval, report), name=name)

    async def _every(self, interval: int, report: Callable[[], str]) -> None:
        while True:
            await self._sleep(interval)
            if self._state is _State.RUNNING:
                self._emit(report())

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
        restarted = self._auto_report(
            params, self._autoreport_task, self._heater_states, "marlin-simulator-autoreport"
        )
        if restarted is not None:
            self.autoreport_interval, self._autoreport_task = restarted

    # Misc -------------------------------------------------------------------

    async def _cmd_M106(self, params: dict[str, float | None], rest: str) -> None:
        speed = params.get("S")
        fan = round(params.get("P") or 0)
        self.fan_speeds[fan] = 255 if speed is None else max(0, min(255, round(speed)))

    async def _cmd_M107(self, params: dict[str, float | None], rest: str) -> None:
        self.fan_speeds[round(params.get("P") or 0)] = 0

    async def _cmd_M220(self, params: dict[str, float | None], rest: str) -> None:
        """Feed-rate percentage; without S Marlin reports it as ``FR:100%``."""
        if params.get("S") is None:
            self._emit(f"FR:{self.feedrate_percentage}%")
        else:
            self.feedrate_percentage = max(10, min(999, round(params["S"] or 0)))

    async def _cmd_M221(self, params: dict[str, float | None], rest: str) -> None:
        """Flow percentage of the active (or T) extruder; without S reported as
        ``echo:E0 Flow: 100%``."""
        tool = self.active_extruder if params.get("T") is None else round(params["T"] or 0)
        if tool not in self.flow_percentage:
            self._emit(f"echo:Invalid extruder {tool}")
        elif params.get("S") is None:
            self._emit(f"echo:E{tool} Flow: {self.flow_percentage[tool]}%")
        else:
            self.flow_percentage[tool] = max(1, min(999, round(params["S"] or 0)))

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
            "AUTOREPORT_POS": int(self.autoreport_supported),
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
