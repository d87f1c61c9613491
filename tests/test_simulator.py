"""The simulated Marlin printer, exercised through the real pty with pyserial-asyncio.

Every wait is bounded so a broken simulator fails fast instead of hanging.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import serial
import serial_asyncio

from hydrogen.simulator import (
    Faults,
    SimulatedPrinter,
    digest_of,
    gcode_checksum,
    numbered_line,
    run_simulator,
)

TIMEOUT = 3.0
WAIT_LINE = re.compile(r"^ T:\d+\.\d\d /\d+\.\d\d B:\d+\.\d\d /\d+\.\d\d @:\d+ B@:\d+ W:(\?|\d+)$")
REPORT = re.compile(r"^ T:\d+\.\d\d /\d+\.\d\d B:\d+\.\d\d /\d+\.\d\d @:\d+ B@:\d+$")


def exists(path: str) -> bool:
    """Whether the link (or anything) is at ``path``; a dangling link counts."""
    return os.path.lexists(path)


def banner_end(line: str) -> bool:
    """The last line of the simulator's start banner."""
    return line.startswith("echo:V86 stored settings retrieved")


class Client:
    """A minimal host: line I/O over pyserial-asyncio with bounded waits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: str) -> Client:
        reader, writer = await serial_asyncio.open_serial_connection(url=path, baudrate=115200)
        return cls(reader, writer)

    @classmethod
    async def connect(cls, path: str) -> Client:
        """Open and handshake; a boot banner racing the open is skipped."""
        client = await cls.open(path)
        assert (await client.command("M110 N0"))[-1] == "ok"
        return client

    def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\n")

    async def readline(self, wait: float = TIMEOUT) -> str:
        async with asyncio.timeout(wait):
            raw = await self.reader.readline()
        if not raw:
            raise EOFError("port closed")
        return raw.decode().rstrip("\n")

    async def until(self, predicate: Callable[[str], bool], wait: float = TIMEOUT) -> list[str]:
        """All lines up to and including the first that satisfies ``predicate``."""
        lines: list[str] = []
        async with asyncio.timeout(wait):
            while True:
                lines.append(await self.readline(wait))
                if predicate(lines[-1]):
                    return lines

    async def command(self, line: str, wait: float = TIMEOUT) -> list[str]:
        """Send and collect the answer up to its ``ok``."""
        self.send(line)
        return await self.until(lambda s: s.startswith("ok"), wait)

    async def quiet_for(self, seconds: float) -> list[str]:
        """Lines received during ``seconds`` (expecting none, usually)."""
        lines: list[str] = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    lines.append(await self.readline(seconds + 1))
        return lines

    async def close(self) -> None:
        self.writer.close()
        await asyncio.sleep(0)


@pytest.fixture
async def printer(tmp_path: Path) -> AsyncIterator[SimulatedPrinter]:
    sim = SimulatedPrinter(link=str(tmp_path / "ttySIM"), seed=7, time_scale=100.0)
    await sim.start()
    yield sim
    await sim.stop()
    assert sim.crash is None


@pytest.fixture
async def client(printer: SimulatedPrinter) -> AsyncIterator[Client]:
    c = await Client.connect(printer.path)
    yield c
    await c.close()


async def test_banner_on_reset(printer: SimulatedPrinter, client: Client) -> None:
    printer.reset()
    lines = await client.until(banner_end)
    assert lines[:2] == ["start", "echo:Marlin 2.1.2.1"]
    assert any(s.startswith("echo: Last Updated:") for s in lines)
    assert printer.last_line_number == 0


async def test_m115_capabilities(client: Client) -> None:
    lines = await client.command("M115")
    assert lines[0].startswith("FIRMWARE_NAME:Marlin 2.1.2.1 (Hydrogen simulator) ")
    assert "PROTOCOL_VERSION:1.0" in lines[0]
    assert "MACHINE_TYPE:Hydrogen Simulator EXTRUDER_COUNT:1 UUID:" in lines[0]
    caps = dict(s.split(":")[1:] for s in lines if s.startswith("Cap:"))
    assert caps["AUTOREPORT_TEMP"] == "1"
    assert caps["EMERGENCY_PARSER"] == "1"
    assert caps["SERIAL_XON_XOFF"] == "0"
    assert lines[-1] == "ok"


async def test_basic_replies(client: Client) -> None:
    (report,) = await client.command("M105")
    assert re.fullmatch(r"ok T:2\d\.\d\d /0\.00 B:2\d\.\d\d /0\.00 @:0 B@:0", report)
    await client.command("G1 X10 Y20.5 Z0.3 E1")
    assert await client.command("M114") == [
        "X:10.00 Y:20.50 Z:0.30 E:1.00 Count X:800 Y:1640 Z:120",
        "ok",
    ]
    assert await client.command("X123") == ['echo:Unknown command: "X123"', "ok"]
    lines = await client.command("M503")
    assert all(s.startswith("echo:") for s in lines[:-1]) and len(lines) > 5
    home = await client.command("G28")  # 3 simulated seconds: one busy keep-alive
    assert home == [
        "echo:busy: processing",
        "X:0.00 Y:0.00 Z:0.00 E:1.00 Count X:0 Y:0 Z:0",
        "ok",
    ]
    assert await client.command("G4 P10") == ["ok"]
    assert await client.command("; only a comment\nM400 ; wait") == ["ok"]


async def test_checksum_mismatch_requests_resend(printer: SimulatedPrinter, client: Client) -> None:
    good = numbered_line(1, "G1 X1")
    bad = good.rsplit("*", 1)[0] + f"*{(gcode_checksum('N1 G1 X1') + 1) % 256}"
    assert await client.command(bad) == [
        "Error:checksum mismatch, Last Line: 0",
        "Resend: 1",
        "ok",
    ]
    assert await client.command(good) == ["ok"]
    assert printer.last_line_number == 1
    assert await client.command("N2 G1 X2") == [
        "Error:No Checksum with line number, Last Line: 1",
        "Resend: 2",
        "ok",
    ]


async def test_line_number_sequence(printer: SimulatedPrinter, client: Client) -> None:
    assert await client.command(numbered_line(1, "G1 X1")) == ["ok"]
    assert await client.command(numbered_line(3, "G1 X3")) == [
        "Error:Line Number is not Last Line Number+1, Last Line: 1",
        "Resend: 2",
        "ok",
    ]
    # A duplicate of an accepted line is refused too, so it is never counted twice.
    before = printer.accepted_lines
    assert (await client.command(numbered_line(1, "G1 X1")))[0].startswith("Error:Line Number")
    assert printer.accepted_lines == before
    # M110 resets the numbering, numbered or not.
    assert await client.command(numbered_line(7, "M110 N41")) == ["ok"]
    assert printer.last_line_number == 41
    assert await client.command(numbered_line(42, "G1 X4")) == ["ok"]


async def test_burst_after_error_discards_buffered_lines(
    printer: SimulatedPrinter, client: Client
) -> None:
    """Like Marlin, lines already buffered behind a bad one are thrown away."""
    lines = [numbered_line(n, f"G1 X{n}") for n in range(1, 6)]
    lines[0] = lines[0].rsplit("*", 1)[0] + "*0"  # corrupt N1
    client.send("\n".join(lines))
    first = await client.until(lambda s: s == "ok")
    assert first == ["Error:checksum mismatch, Last Line: 0", "Resend: 1", "ok"]
    await client.quiet_for(0.1)  # any survivors were answered with more resends, or nothing
    assert printer.accepted_lines == 1  # only the M110 of the handshake


async def stream(client: Client, commands: list[str], first: int = 1) -> int:
    """Stop-and-wait sender that honours ``Resend:``; returns resends seen."""
    index, resends = 0, 0
    while index < len(commands):
        client.send(numbered_line(first + index, commands[index]))
        answer = await client.until(lambda s: s.startswith("ok"))
        asked = [int(s.split(":")[1]) for s in answer if s.startswith("Resend:")]
        if asked:
            resends += 1
            index = asked[-1] - first
        else:
            index += 1
    return resends


async def test_digest_exactly_once_under_corruption(
    printer: SimulatedPrinter, client: Client
) -> None:
    commands = [f"G1 X{i % 50}.{i % 7} Y{i % 31} E{i * 0.01:.2f}" for i in range(200)]
    printer.reset_digest()
    printer.faults.corrupt_ratio = 0.2
    resends = await stream(client, commands)
    printer.faults.corrupt_ratio = 0.0
    assert resends > 10  # the faults really fired
    assert printer.accepted_lines == len(commands)
    expected = hashlib.sha256(b"\n".join(c.encode() for c in commands)).hexdigest()
    assert printer.accepted_digest == expected == digest_of(commands)
    assert printer.recent_commands[-1] == commands[-1]


async def test_m109_blocks_with_wait_lines(printer: SimulatedPrinter, client: Client) -> None:
    lines = await client.command("M109 S60", wait=5)
    waits = [s for s in lines if WAIT_LINE.match(s)]
    assert len(waits) >= 5, lines
    assert waits[0].endswith("W:?") and "/60.00" in waits[0]
    assert lines[-1] == "ok"
    assert abs(printer.temperature("tool0") - 60) < 1.5
    assert await client.command("M190 S30", wait=5)
    assert abs(printer.temperature("bed") - 30) < 1.5


async def test_autoreport(client: Client) -> None:
    assert await client.command("M155 S1") == ["ok"]
    reports = [await client.readline() for _ in range(3)]
    assert all(REPORT.match(s) for s in reports), reports
    assert await client.command("M155 S0") == ["ok"]
    await client.quiet_for(0.1)


async def test_m112_during_m109(printer: SimulatedPrinter, client: Client) -> None:
    client.send("M109 S200")
    await client.until(lambda s: bool(WAIT_LINE.match(s)))
    client.send("M112")
    lines = await client.until(lambda s: s.startswith("Error:"))
    assert lines[-1] == "Error:Printer halted. kill() called!"
    assert "ok" not in lines
    assert printer.halted and printer.heaters["tool0"].target == 0
    client.send("M105")
    client.send("M999")
    assert await client.quiet_for(0.2) == []


async def test_thermal_runaway_then_reset(printer: SimulatedPrinter, client: Client) -> None:
    printer.thermal_runaway("tool0")
    assert await client.readline() == "Error:Thermal Runaway, system stopped! Heater_ID: 0"
    assert await client.readline() == "Error:Printer halted. kill() called!"
    client.send("M105")
    assert await client.quiet_for(0.2) == []
    printer.reset()
    assert (await client.until(banner_end))[0] == "start"
    (report,) = await client.command("M105")
    assert report.startswith("ok T:")


async def test_faults_drop_ok_and_silent(printer: SimulatedPrinter, client: Client) -> None:
    printer.faults.drop_next_ok = 1
    client.send("G1 X1")
    await client.quiet_for(0.1)
    assert printer.accepted_lines == 2 and printer.dropped_oks == 1
    printer.faults.silent = True
    client.send("G1 X2")
    assert await client.quiet_for(0.1) == []
    printer.faults.silent = False
    assert await client.command("G1 X3") == ["ok"]
    assert printer.recent_commands[-1] == "G1 X3" and "G1 X2" not in printer.recent_commands


async def test_hangup_and_replug(printer: SimulatedPrinter, client: Client) -> None:
    old = printer.slave_path
    await printer.hangup()
    with pytest.raises((serial.SerialException, EOFError, OSError)):
        await client.readline()
    assert not exists(printer.path)
    await printer.replug()
    assert os.readlink(printer.path) == printer.slave_path
    again = await Client.connect(printer.path)
    try:
        assert (await again.command("M105"))[0].startswith("ok T:")
    finally:
        await again.close()
    assert old is not None


async def test_banner_delay_loses_early_input(tmp_path: Path) -> None:
    sim = SimulatedPrinter(seed=1, banner_delay=0.2)
    path = await sim.start()
    try:
        c = await Client.open(path)
        c.send("M105")  # the bootloader eats this
        lines = await c.until(banner_end)
        assert lines[0] == "start" and not any(s.startswith("ok") for s in lines)
        assert (await c.command("M105"))[0].startswith("ok T:")
        await c.close()
    finally:
        await sim.stop()


async def test_two_extruders_report(tmp_path: Path) -> None:
    sim = SimulatedPrinter(seed=2, extruders=2, faults=Faults())
    path = await sim.start()
    try:
        c = await Client.connect(path)
        (report,) = await c.command("M105")
        assert re.fullmatch(
            r"ok T:\S+ /0\.00 B:\S+ /0\.00 T0:\S+ /0\.00 T1:\S+ /0\.00 @:0 B@:0 @0:0 @1:0",
            report,
        )
        assert await c.command("T2") == ["echo:T2 Invalid extruder", "ok"]
        await c.close()
    finally:
        await sim.stop()


async def test_run_simulator_until_stop(tmp_path: Path) -> None:
    link = str(tmp_path / "ttyRUN")
    stop = asyncio.Event()
    task = asyncio.create_task(run_simulator(link, seed=3, stop=stop))
    for _ in range(300):  # the printer has no readiness signal: poll for the link
        if exists(link):
            break
        await asyncio.sleep(0.01)
    c = await Client.connect(link)
    await c.close()
    stop.set()
    async with asyncio.timeout(TIMEOUT):
        await task
    assert not exists(link)


async def test_position_autoreport(client: Client) -> None:
    """M154 (AUTO_REPORT_POSITION): Marlin's projected position, without step counts."""
    await client.command("G1 X5 Y6 Z0.5 E1")
    assert await client.command("M154 S1") == ["ok"]
    reports = [await client.readline() for _ in range(2)]
    assert reports == ["X:5.00 Y:6.00 Z:0.50 E:1.00"] * 2, reports
    assert await client.command("M154 S0") == ["ok"]
    await client.quiet_for(0.1)


async def test_fans_feedrate_and_flow(printer: SimulatedPrinter, client: Client) -> None:
    for line in ("M106 S128", "M106 P1", "M107 P2", "M220 S150", "M221 S95", "M221 T0 S90"):
        assert await client.command(line) == ["ok"]
    assert printer.fan_speeds == {0: 128, 1: 255, 2: 0}
    assert await client.command("M220") == ["FR:150%", "ok"]  # no S: Marlin reports
    assert await client.command("M221") == ["echo:E0 Flow: 90%", "ok"]
    assert await client.command("M221 T3 S90") == ["echo:Invalid extruder 3", "ok"]
    assert (printer.feedrate_percentage, printer.flow_percentage) == (150, {0: 90})


async def test_a_new_speed_goes_on_from_the_simulated_time_reached(
    printer: SimulatedPrinter,
) -> None:
    """Tests run the printer fast and then at real time again: simulated time must go on
    from where it was, not jump back (the heaters froze until the wall clock caught up)."""
    await asyncio.sleep(0.05)  # at 100x: about 5 simulated seconds
    reached = printer._sim_now()
    printer.time_scale = 1.0
    after = printer._sim_now()
    assert reached <= after < reached + 1.0, (reached, after)
    printer.time_scale = 50.0
    assert after <= printer._sim_now() < after + 1.0
    with pytest.raises(ValueError):
        printer.time_scale = 0
