"""A second, independent firmware: OctoPrint's virtual printer on a real pty.

Our simulator and our protocol code were written together and can share a
misunderstanding; OctoPrint's ``VirtualPrinter`` was written by other people for another
host. tests/virtual_octoprint.py serves it on a pty (in OctoPrint's own venv, as a
subprocess) and records every line that crosses the port and every command the virtual
printer accepts and executes. Here a real gateway, printer link and job manager drive it,
and the record says whether every line of a file reached the firmware exactly once, in
order, also under the virtual printer's own injected errors.

The error injections are the virtual printer's own, and not all of them can be survived
with every line exactly once by any host: some ask again for a line the firmware has
already executed (``trigger_resend_lineno``/``_checksum``, ``trigger_missing_checksum``);
those are tested for "the firmware's own stream, replayed as it asked, is the file".

Random choices are seeded: HYDROGEN_TEST_SEED fixes the seed, a failure prints it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hydrogen.config import JobsConfig, PrinterConfig
from hydrogen.printers.printer import PrinterState
from tests.conftest import connect, receive_json, receive_until, subscribe
from tests.test_jobs import upload, wait_job
from tests.test_printers import wait_state

BRIDGE = Path(__file__).with_name("virtual_octoprint.py")
OCTOPRINT_VENV = Path(__file__).resolve().parent.parent / ".venv" / "octoprint"
INSTALL_HINT = (
    "python3 -m venv .venv/octoprint && .venv/octoprint/bin/python -m pip install "
    "'octoprint>=1.11,<1.12' (what .ci/run does), or point HYDROGEN_OCTOPRINT_PYTHON "
    "at an interpreter that has it"
)
# Commands the gateway sends on its own (handshake, autoreport, stall probes).
GATEWAY_OWN = frozenset({"M105", "M110", "M115", "M155"})
CANCEL_SCRIPT = ["M104 S0", "M140 S0", "M107", "M84"]
PRINTER = "op"


def _seed() -> int:
    return int(os.environ.get("HYDROGEN_TEST_SEED") or random.SystemRandom().randrange(1 << 31))


def _interpreter_with_octoprint() -> tuple[str | None, str]:
    """The first of $HYDROGEN_OCTOPRINT_PYTHON, .venv/octoprint and this interpreter
    that can import OctoPrint's virtual printer, or None and why not."""
    tried = []
    candidates = [
        os.environ.get("HYDROGEN_OCTOPRINT_PYTHON"),
        str(OCTOPRINT_VENV / "bin" / "python"),
        sys.executable,
    ]
    for python in candidates:
        if not python or not os.path.exists(python):
            continue
        result = subprocess.run(
            [python, "-c", "import octoprint.plugins.virtual_printer.virtual"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode == 0:
            return python, ""
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        tried.append(f"{python}: {last}")
    return None, "; ".join(tried) or "no interpreter found"


@pytest.fixture(scope="session")
def octoprint_python() -> str:
    python, why = _interpreter_with_octoprint()
    if python is None:
        pytest.skip(
            f"OctoPrint's virtual printer cannot be imported ({why}); install it: {INSTALL_HINT}"
        )
    return python


def _open_log(path: Path) -> Any:
    return open(path, "wb")  # closed by the fixture


def command_word(command: str) -> str:
    return command.split(" ", 1)[0].upper()


class VirtualOctoPrint:
    """A running tests/virtual_octoprint.py and what it recorded."""

    def __init__(self, process: asyncio.subprocess.Process, record: Path, seed: int):
        self.process = process
        self.record_path = record
        self.seed = seed
        self.path = ""
        self.version = ""
        self.spawned_at = 0.0
        self.ready_after: float | None = None

    def records(self) -> list[dict[str, Any]]:
        with open(self.record_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def mark(self) -> int:
        return len(self.records())

    def executed(self, since: int = 0) -> list[tuple[int | None, str]]:
        """(line number, command) of every command the firmware executed, the gateway's
        own (handshake, autoreport, probes) left out."""
        return [
            (r["n"], r["exec"])
            for r in self.records()[since:]
            if "exec" in r and command_word(r["exec"]) not in GATEWAY_OWN
        ]

    def commands(self, since: int = 0) -> list[str]:
        return [command for _, command in self.executed(since)]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while not predicate(records := self.records()):
                await asyncio.sleep(0.02)
        return records

    def debug(self, command: str) -> None:
        """One of the virtual printer's ``!!DEBUG:`` triggers, between two host lines."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"debug {command}\n".encode())

    def transcript(self, last: int = 60) -> str:
        return "\n".join(json.dumps(r) for r in self.records()[-last:])

    def why(self, what: str = "") -> str:
        """Context for an assertion message: the seed and the end of the record."""
        return f"{what}\nseed={self.seed} (HYDROGEN_TEST_SEED)\n{self.transcript()}"


Start = Callable[..., Awaitable[VirtualOctoPrint]]


@pytest.fixture
async def virtual_printer(octoprint_python: str, tmp_path: Path):
    """Start OctoPrint's virtual printer on a pty; stopped after the test."""
    started: list[VirtualOctoPrint] = []
    opened: list[Any] = []

    async def start(
        settings: dict[str, Any] | None = None,
        *,
        chaos: tuple[str, ...] = (),
        chaos_every: str = "30-60",
        chaos_max: int = 0,
        seed: int | None = None,
    ) -> VirtualOctoPrint:
        seed = _seed() if seed is None else seed
        print(f"virtual printer seed {seed} (set HYDROGEN_TEST_SEED={seed} to repeat)")
        record = tmp_path / f"virtual-{len(started)}.jsonl"
        record.touch()
        stderr = _open_log(tmp_path / f"virtual-{len(started)}.stderr")
        opened.append(stderr)
        loop = asyncio.get_running_loop()
        spawned_at = loop.time()
        process = await asyncio.create_subprocess_exec(
            octoprint_python,
            str(BRIDGE),
            "--record",
            str(record),
            "--settings",
            json.dumps(settings or {}),
            "--seed",
            str(seed),
            "--chaos",
            ",".join(chaos),
            "--chaos-every",
            chaos_every,
            "--chaos-max",
            str(chaos_max),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        vp = VirtualOctoPrint(process, record, seed)
        vp.spawned_at = spawned_at
        started.append(vp)
        assert process.stdout is not None
        async with asyncio.timeout(60):
            hello = json.loads(await process.stdout.readline())
        vp.path, vp.version = hello["pty"], hello["octoprint"]
        return vp

    yield start
    for vp in started:
        if vp.process.returncode is None:
            vp.process.terminate()
            await vp.process.wait()
    for file in opened:
        file.close()


@pytest.fixture
async def op_gateway(virtual_printer: Start, gateway_client):
    """A gateway whose one printer is OctoPrint's virtual printer; returns when ready."""

    async def start(
        settings: dict[str, Any] | None = None,
        *,
        printer: dict[str, Any] | None = None,
        **bridge: Any,
    ):
        vp = await virtual_printer(settings, **bridge)
        config = PrinterConfig(
            name=PRINTER,
            device=vp.path,
            temperature_interval=1.0,
            **(printer or {}),
        )
        _, client = await gateway_client(
            printers=(config,),
            jobs=JobsConfig(m73_progress=False, max_upload_bytes=4 * 1024 * 1024),
        )
        link = client.printers.printers[PRINTER]
        await wait_state(link, PrinterState.READY, timeout=30)
        vp.ready_after = asyncio.get_running_loop().time() - vp.spawned_at
        print(f"OctoPrint {vp.version} virtual printer: spawn -> ready {vp.ready_after:.2f}s")
        return client, link, vp

    return start


def job_file(lines: int) -> tuple[bytes, list[str]]:
    """A print file and the commands the firmware must execute for it, in order.
    Absolute moves at a huge feed rate: the virtual printer sleeps for each move's
    duration, and relative mode (its default) would make them long."""
    commands = ["G90", "G92 X0 Y0 Z0 E0", "G1 F600000"]
    commands += [f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 200} E{i * 0.01:.2f}" for i in range(lines)]
    body = ["; a test print for OctoPrint's virtual printer", ""]
    for i, command in enumerate(commands):
        body.append(command + ("  ; with a comment" if i % 5 == 0 else ""))
        if i % 9 == 0:
            body.append("")
    return ("\n".join(body) + "\n").encode(), commands


async def print_file(client, name: str, data: bytes, *, rid: str = "start") -> Any:
    """Upload and start ``name``; returns a websocket subscribed to the job topic."""
    assert (await upload(client, name, data)).status == 201
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, f"printer/{PRINTER}/job")
    await ws.send_json({"type": "job_start", "printer": PRINTER, "file": name, "id": rid})
    reply = await receive_until(ws, lambda f: f.get("id") == rid)
    assert reply["type"] == "job" and reply["state"] == "printing", reply
    return ws


def firmware_stream(executed: list[tuple[int | None, str]]) -> list[str]:
    """What the firmware ran, replayed the way it asked: a line it executes again under
    a number it had already run (because it requested that resend itself) takes the
    place of that earlier run and of everything after it."""
    kept: list[tuple[int | None, str]] = []
    for number, command in executed:
        while number is not None and kept and kept[-1][0] is not None and kept[-1][0] >= number:
            kept.pop()
        kept.append((number, command))
    return [command for _, command in kept]


# -- handshake --------------------------------------------------------------------------


@pytest.mark.parametrize("banner", [True, False], ids=["start-banner", "no-banner"])
async def test_handshake_reaches_ready(op_gateway, banner):
    """With its ``start`` banner (a board that resets on open) and without (the setting
    ``simulateReset`` off: a board that says nothing until asked), with the default
    banner_timeout. The spawn -> ready time is printed (``-s``)."""
    _, printer, vp = await op_gateway({"simulateReset": banner})
    assert printer.firmware is not None
    assert printer.firmware.name == "Virtual Marlin 1.0"
    assert printer.firmware.capabilities.get("AUTOREPORT_TEMP") is True
    assert printer.firmware.capabilities.get("EMERGENCY_PARSER") is True
    records = vp.records()
    received = [r["rx"] for r in records if "rx" in r]
    assert received[:2] == ["N0 M110 N0*125", "N1 M115*39"], vp.why()
    # its M155 auto-reports reach the temperature state
    async with asyncio.timeout(10):
        while "tool0" not in printer.temperatures:
            await asyncio.sleep(0.05)
    assert printer.temperatures["tool0"].actual == pytest.approx(21.3)
    assert [r for r in records if "crash" in r] == []


# -- jobs ---------------------------------------------------------------------------------


async def test_job_every_line_exactly_once_in_order(op_gateway):
    client, printer, vp = await op_gateway({"simulated_errors": []})
    data, commands = job_file(600)
    mark = vp.mark()
    ws = await print_file(client, "whole.gcode", data)
    done = await wait_job(ws, "completed", "failed", timeout=60)
    assert done["state"] == "completed", done
    assert done["lines_sent"] == len(commands)
    executed = vp.executed(mark)
    assert [c for _, c in executed] == commands, vp.why("not every line exactly once in order")
    numbers = [n for n, _ in executed]
    assert numbers == sorted(set(numbers)), vp.why("line numbers repeat or go back")
    assert printer.stats.resends == 0
    await ws.close()


async def test_exactly_once_under_its_injected_errors(op_gateway):
    """Its own resend machinery: ``simulated_errors`` on chosen line numbers (a resend
    request, a checksum mismatch, an error with no resend at all) and, at seeded random
    points, ``dont_answer`` (the next line vanishes: no ok) and ``trigger_missing_lineno``
    (the next line is refused with an error and no resend). None of these makes the
    firmware forget a line it ran, so every line must still run exactly once, in order."""
    seed = _seed()
    picks = random.Random(seed)
    numbers = sorted(picks.sample(range(20, 380), 3))
    kinds = ["resend", "checksum_mismatch", "missing_lineno"]
    picks.shuffle(kinds)
    client, printer, vp = await op_gateway(
        {"simulated_errors": [f"{n}:{k}" for n, k in zip(numbers, kinds, strict=True)]},
        chaos=("dont_answer", "trigger_missing_lineno"),
        chaos_every="80-140",
        chaos_max=3,
        seed=seed,
    )
    data, commands = job_file(400)
    mark = vp.mark()
    ws = await print_file(client, "noisy.gcode", data)
    done = await wait_job(ws, "completed", "failed", timeout=90)
    assert done["state"] == "completed", vp.why(str(done))
    records = vp.records()[mark:]
    injected = [r["inject"] for r in records if "inject" in r]
    refusals = [r["tx"] for r in records if "tx" in r and r["tx"].startswith("Error:")]
    assert len(injected) == 3 and len(refusals) >= 3, vp.why("the errors did not happen")
    assert vp.commands(mark) == commands, vp.why(f"injected {injected}, errors at {numbers}")
    assert printer.stats.resends >= 2
    assert printer.state is PrinterState.READY
    await ws.close()


async def test_resend_requests_for_lines_it_already_ran(op_gateway):
    """``trigger_resend_lineno``, ``trigger_resend_checksum`` and
    ``trigger_missing_checksum`` make the virtual printer ask again for the line *before*
    the one it just received, which it has already executed: the gateway must serve it
    from its history and go on, so that the firmware's stream, replayed as it asked for
    it, is exactly the file."""
    triggers = ("trigger_resend_lineno", "trigger_resend_checksum", "trigger_missing_checksum")
    client, _, vp = await op_gateway(
        {"simulated_errors": []}, chaos=triggers, chaos_every="20-50", chaos_max=6
    )
    data, commands = job_file(300)
    mark = vp.mark()
    ws = await print_file(client, "rewind.gcode", data)
    done = await wait_job(ws, "completed", "failed", timeout=60)
    assert done["state"] == "completed", vp.why(str(done))
    records = vp.records()[mark:]
    rewinds = sum(1 for r in records if r.get("tx", "").startswith("Resend:"))
    assert rewinds >= 6, vp.why("the triggers did not fire")
    executed = vp.executed(mark)
    assert firmware_stream(executed) == commands, vp.why("the replayed stream is not the file")
    assert len(executed) - len(commands) <= 6, vp.why("more lines ran twice than it asked for")
    await ws.close()


async def test_cancel_then_print_again(op_gateway):
    client, printer, vp = await op_gateway({"simulated_errors": []})
    long_data, long_commands = job_file(20000)
    mark = vp.mark()
    ws = await print_file(client, "long.gcode", long_data)
    await vp.wait_for(lambda rs: sum(1 for r in rs[mark:] if "exec" in r) > 200)
    await ws.send_json({"type": "job_cancel", "printer": PRINTER, "id": "cancel"})
    await receive_until(ws, lambda f: f.get("id") == "cancel")
    cancelled = await wait_job(ws, "cancelled", "failed")
    assert cancelled["state"] == "cancelled", cancelled
    ran = vp.commands(mark)
    printed, script = ran[: -len(CANCEL_SCRIPT)], ran[-len(CANCEL_SCRIPT) :]
    assert script == CANCEL_SCRIPT, vp.why("the cancel script did not run last")
    assert 200 <= len(printed) < len(long_commands)
    assert printed == long_commands[: len(printed)], vp.why("the cancelled part is not a prefix")
    await wait_state(printer, PrinterState.READY)

    data, commands = job_file(150)
    mark = vp.mark()
    await ws.close()
    ws = await print_file(client, "again.gcode", data, rid="again")
    done = await wait_job(ws, "completed", "failed", timeout=60)
    assert done["state"] == "completed", done
    assert vp.commands(mark) == commands, vp.why("the second job was not exactly once")
    await ws.close()


async def test_emergency_stop_then_reconnect(op_gateway):
    client, printer, vp = await op_gateway({"simulated_errors": []})
    data, _ = job_file(20000)
    mark = vp.mark()
    ws = await print_file(client, "stop.gcode", data)
    await subscribe(ws, "notifications", rid="notes")
    await vp.wait_for(lambda rs: sum(1 for r in rs[mark:] if "exec" in r) > 50)
    await ws.send_json({"type": "emergency_stop", "printer": PRINTER, "id": "stop"})
    reply = await receive_until(ws, lambda f: f.get("id") == "stop")
    assert reply["type"] == "emergency_stop_sent", reply
    assert printer.state is PrinterState.ERROR
    failed = await wait_job(ws, "failed", "cancelled", "completed")
    assert failed["state"] == "failed", failed
    records = await vp.wait_for(lambda rs: any("kill" in r for r in rs[mark:]), timeout=10)
    kill_at = next(i for i, r in enumerate(records) if "kill" in r)
    last_received = [r for r in records[:kill_at] if "rx" in r][-1]
    assert last_received == {"rx": "M112"}, vp.why("the M112 did not reach it")
    # (a line it had already received may still run: so would Marlin's, from its buffer)
    await asyncio.sleep(0.5)
    after = [r for r in vp.records()[kill_at:] if "rx" in r or "boot" in r]
    assert after == [], vp.why("the gateway wrote on after the M112")

    # reopening the port resets the board, as DTR does, and the printer comes back
    await ws.send_json({"type": "printer_reconnect", "printer": PRINTER, "id": "rc"})
    await receive_until(ws, lambda f: f.get("id") == "rc")
    await wait_state(printer, PrinterState.READY, timeout=30)
    assert any(r.get("boot") == 2 for r in vp.records()), vp.why("no second boot")
    await ws.send_json({"type": "command", "printer": PRINTER, "gcode": "M115", "id": "again"})
    again = await receive_until(ws, lambda f: f.get("id") == "again", timeout=20)
    assert again["type"] == "command_result", again
    assert again["response"][0].startswith("FIRMWARE_NAME:Virtual Marlin 1.0"), again
    await ws.close()
