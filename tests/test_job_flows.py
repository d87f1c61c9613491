"""What an operator does with jobs, end to end over the public interfaces: start,
cancel, start again; queue, cancel, does the next run; cancel or pause in a heat-up.

The simulated printer runs on a real pty; requests go over a real WebSocket.
"""

from __future__ import annotations

import asyncio

import pytest

from hydrogen.printers.printer import PrinterState
from tests.conftest import connect, receive_json, receive_until, subscribe
from tests.test_jobs import start_job_gateway, upload, wait_job
from tests.test_printers import wait_state


@pytest.fixture
async def job_gateway(gateway_client, seed):
    return await start_job_gateway(gateway_client, seed)


def homing_then_dwells(lines: int = 300) -> bytes:
    """The issue's reproduction: G28, then G1 moves with short dwells between them."""
    body = ["G28"]
    for i in range(lines):
        body.append(f"G1 X{i % 200} Y{(i * 3) % 200}" if i % 2 else "G4 P20")
    return ("\n".join(body) + "\n").encode()


async def request(ws, rid: str, **frame) -> dict:
    await ws.send_json({**frame, "id": rid})
    return await receive_until(ws, lambda f: f.get("id") == rid, timeout=30)


async def test_start_cancel_start_again(job_gateway):
    """Cancel half a second in leaves the printer ready, and the next start prints."""
    _, client, printer, sim = job_gateway
    sim.time_scale = 1.0
    assert (await upload(client, "dwell.gcode", homing_then_dwells())).status == 201
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    first = await request(ws, "a", type="job_start", printer="sim", file="dwell.gcode")
    assert first["state"] == "printing", first
    await asyncio.sleep(0.5)
    reply = await request(ws, "c", type="job_cancel", printer="sim")
    assert reply["type"] == "job", reply
    assert (await wait_job(ws, "cancelled", "failed"))["state"] == "cancelled"
    # within a bounded time the printer is ready again (it stayed busy for ever)
    await wait_state(printer, PrinterState.READY, timeout=10)
    sim.time_scale = 50.0
    again = await request(ws, "b", type="job_start", printer="sim", file="dwell.gcode")
    assert again["type"] == "job" and again["state"] == "printing", again
    assert (await wait_job(ws, "completed", "failed", timeout=60))["state"] == "completed"
    await wait_state(printer, PrinterState.READY, timeout=10)
    await ws.close()


async def test_queue_cancel_and_the_next_job_runs(job_gateway):
    _, client, printer, sim = job_gateway
    sim.time_scale = 1.0
    await upload(client, "dwell.gcode", homing_then_dwells())
    await upload(client, "next.gcode", b"G1 X1\nG1 X2\nG1 X3\n")
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    await request(ws, "a", type="job_start", printer="sim", file="dwell.gcode")
    queued = await request(ws, "b", type="job_start", printer="sim", file="next.gcode")
    assert queued["state"] == "queued", queued
    await asyncio.sleep(0.5)
    await request(ws, "c", type="job_cancel", printer="sim")
    async with asyncio.timeout(30):
        while True:
            frame = await wait_job(ws, "completed", "failed")
            if frame["file"] == "next.gcode":
                break
    assert frame["state"] == "completed", frame
    assert sim.recent_commands[-3:] == ["G1 X1", "G1 X2", "G1 X3"]
    await wait_state(printer, PrinterState.READY, timeout=10)
    await ws.close()


class StateRecorder:
    """A `PrinterListener` that records the states and ignores the rest."""

    def __init__(self) -> None:
        self.seen: list[tuple[PrinterState, str | None]] = []

    def on_state(self, printer: object, state: PrinterState, reason: str | None) -> None:
        self.seen.append((state, reason))

    def on_reset(self, printer: object, reason: str) -> None:
        pass

    def on_host_action(self, printer: object, action: str, argument: str) -> None:
        pass


async def test_the_state_is_not_busy_for_the_whole_job(job_gateway):
    """``busy`` names what the firmware runs now; between long commands it is ready."""
    _, client, printer, sim = job_gateway
    sim.time_scale = 1.0
    await upload(client, "dwell.gcode", homing_then_dwells(40))
    recorder = StateRecorder()
    seen = recorder.seen
    printer.listeners.append(recorder)
    job = await client.jobs.start_job("sim", "dwell.gcode")
    async with asyncio.timeout(30):
        while not job.state.finished:
            await asyncio.sleep(0.05)
    await wait_state(printer, PrinterState.READY, timeout=10)
    reasons = {reason for state, reason in seen if state is PrinterState.BUSY}
    assert reasons <= {"running G28", "running G4", "firmware busy"}, reasons
    assert "running G4" in reasons  # not "running G28" for the whole job
    assert (PrinterState.READY, None) in seen[seen.index((PrinterState.BUSY, "running G28")) :]


async def test_cancel_during_a_heat_up_breaks_it_with_m108(job_gateway):
    """A cancel does not sit out a heat-up of minutes: M108 breaks the wait, then the
    cancel script runs, while the hotend is still far from its target."""
    _, client, printer, sim = job_gateway
    sim.time_scale = 1.0  # real time: 200 °C takes minutes
    await upload(client, "hot.gcode", b"M109 S200\nG1 X1\nG1 X2\nG1 X3\nG1 X4\n")
    job = await client.jobs.start_job("sim", "hot.gcode")
    async with asyncio.timeout(10):
        while "M109 S200" not in sim.recent_commands:
            await asyncio.sleep(0.02)
    assert printer.state is PrinterState.BUSY and printer.state_reason == "running M109"
    client.jobs.cancel("sim")
    async with asyncio.timeout(20):
        while not job.state.finished:
            await asyncio.sleep(0.05)
    assert job.state.value == "cancelled", job.reason
    assert sim.temperature("tool0") < 100  # it did not wait for 200 °C
    after = sim.recent_commands[sim.recent_commands.index("M109 S200") + 1 :]
    assert after == ["M108", "M104 S0", "M140 S0", "M107", "M84"], after
    await wait_state(printer, PrinterState.READY, timeout=10)


async def test_pause_during_a_heat_up_breaks_it_and_resume_heats_again(job_gateway):
    """Pause breaks the heat-up too, and resume finishes it before the file goes on:
    nothing is printed cold, and every file line reaches the firmware once, in order."""
    _, client, printer, sim = job_gateway
    sim.time_scale = 1.0
    moves = [f"G1 X{i} Y{i}" for i in range(1, 30)]
    await upload(client, "hot.gcode", ("M109 S60\n" + "\n".join(moves) + "\n").encode())
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    await request(ws, "s", type="job_start", printer="sim", file="hot.gcode")
    async with asyncio.timeout(10):
        while "M109 S60" not in sim.recent_commands:
            await asyncio.sleep(0.02)
    paused = await request(ws, "p", type="job_pause", printer="sim")
    assert paused["state"] == "paused", paused
    assert sim.temperature("tool0") < 50  # broken, not waited out
    # the pause script ran right after the broken wait; no move went out cold
    assert sim.recent_commands[-5:] == ["M109 S60", "M108", "G91", "G1 Z5", "G90"]
    sim.time_scale = 20.0
    resumed = await request(ws, "r", type="job_resume", printer="sim")
    assert resumed["state"] == "printing", resumed
    assert sim.temperature("tool0") > 55  # the heat-up was finished before resuming
    done = await wait_job(ws, "completed", "failed", timeout=60)
    assert done["state"] == "completed", done
    start = len(sim.recent_commands) - 1 - sim.recent_commands[::-1].index("M109 S60")
    assert sim.recent_commands[start:] == [
        "M109 S60",
        "G91",
        "G1 Z-5",
        "G90",
        *moves,
    ]
    await wait_state(printer, PrinterState.READY, timeout=10)
    await ws.close()
