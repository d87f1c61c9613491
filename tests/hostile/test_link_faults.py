"""The serial link survives what real cables do: lost oks, lost answers to the probe,
corrupted lines and a firmware that hangs for a while, during a print. Every file
line reaches the firmware exactly once and in order; a recovery is a warning and a
counter, not a failed print. A firmware that stays silent past ``link_timeout`` still
ends the link, with the reason.

Faults come from the simulator's seeded fault stream (the ``seed`` fixture:
``HYDROGEN_TEST_SEED=N`` replays a run).
"""

from __future__ import annotations

import asyncio

import pytest

from hydrogen.config import JobsConfig
from hydrogen.printers.printer import PrinterState
from tests.conftest import CONTROL_KEY, connect, receive_json, receive_until, subscribe
from tests.test_jobs import gcode_file, upload, wait_job
from tests.test_printers import sim_printer, wait_state

#: Lost oks noticed after half a second, so the tests do not wait for the default 5 s.
QUICK = {"ok_timeout": 0.5, "link_timeout": 6.0}


@pytest.fixture
async def faulty(gateway_client, seed):
    async def start(**printer_changes):
        _, client = await gateway_client(
            printers=(sim_printer(**(QUICK | printer_changes)),),
            jobs=JobsConfig(m73_progress=False),
        )
        printer = client.printers.printers["sim"]
        sim = client.printers.simulators["sim"]
        sim.reseed(seed)
        sim.time_scale = 20.0
        await wait_state(printer, PrinterState.READY)
        ws = await connect(client)
        await receive_json(ws)
        await subscribe(ws, "printer/sim/job", "notifications")
        return client, printer, sim, ws

    return start


async def print_through(client, sim, ws, lines: int, name: str = "part.gcode"):
    """Print a file to its end; return the last job frame, the file's commands and the
    notifications that arrived meanwhile."""
    data, commands = gcode_file(lines)
    assert (await upload(client, name, data)).status == 201
    sim.reset_digest()
    await ws.send_json({"type": "job_start", "printer": "sim", "file": name, "id": "go"})
    notes = []
    async with asyncio.timeout(120):
        while True:
            frame = await receive_json(ws, timeout=120)
            if frame.get("type") == "notification":
                notes.append(frame)
            elif frame.get("type") == "job" and frame["state"] in ("completed", "failed"):
                return frame, commands, notes


def file_lines_run(sim) -> list[str]:
    """What the firmware ran of the file: the probes (M105) and polls are the link's."""
    return [c for c in sim.recent_commands if c.startswith("G")]


async def metric(client, name: str) -> float:
    text = await (
        await client.get("/metrics", headers={"Authorization": f"Key {CONTROL_KEY}"})
    ).text()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


async def test_random_lost_oks_do_not_end_a_print(faulty):
    client, printer, sim, ws = await faulty()
    sim.faults.drop_ok_ratio = 0.03  # probe answers get lost too, now and then
    done, commands, notes = await print_through(client, sim, ws, 400)
    sim.faults.drop_ok_ratio = 0.0
    assert done["state"] == "completed", done
    assert file_lines_run(sim) == commands  # every line once, in order
    assert sim.dropped_oks > 0 and printer.stats.recoveries > 0
    assert await metric(client, "hydrogen_printer_link_recoveries_total") == (
        printer.stats.recoveries
    )
    recovered = [n for n in notes if n["event"] == "printer_link_recovered"]
    assert recovered and all(n["level"] == "warning" for n in recovered)
    assert "nothing was lost" in recovered[0]["message"]
    assert not [n for n in notes if n["level"] in ("error", "critical")], notes
    await ws.close()


async def test_three_lost_oks_in_a_row_and_corrupted_lines(faulty):
    """Lost oks among resends: a Resend after a recovery is honoured."""
    client, printer, sim, ws = await faulty()
    sim.faults.corrupt_ratio = 0.05
    sim.faults.corrupt_run_limit = 3
    data, commands = gcode_file(300)
    await upload(client, "part.gcode", data)
    sim.reset_digest()
    await ws.send_json({"type": "job_start", "printer": "sim", "file": "part.gcode", "id": 1})
    await receive_until(ws, lambda f: f.get("id") == 1)
    for _ in range(3):  # three bursts, 60 lines apart
        target = sim.accepted_lines + 60
        async with asyncio.timeout(30):
            while sim.accepted_lines < target:
                await asyncio.sleep(0.01)
        sim.faults.drop_next_ok = 3
    done = await wait_job(ws, "completed", "failed", timeout=120)
    sim.faults.corrupt_ratio = 0.0
    assert done["state"] == "completed", done
    assert file_lines_run(sim) == commands
    assert printer.stats.recoveries >= 1 and printer.stats.resends > 0
    await ws.close()


async def test_a_firmware_hanging_for_a_while_is_waited_for(faulty):
    client, printer, sim, ws = await faulty()
    data, commands = gcode_file(200)
    await upload(client, "part.gcode", data)
    sim.reset_digest()
    await ws.send_json({"type": "job_start", "printer": "sim", "file": "part.gcode", "id": 1})
    await receive_until(ws, lambda f: f.get("id") == 1)
    async with asyncio.timeout(30):
        while sim.accepted_lines < 50:
            await asyncio.sleep(0.01)
    sim.silence(3.0)  # half the link_timeout: probes go unanswered, then it speaks
    done = await wait_job(ws, "completed", "failed", timeout=120)
    assert done["state"] == "completed", done
    # what it swallowed while hung was re-sent on its Resend; nothing twice
    assert file_lines_run(sim) == commands
    assert printer.stats.reconnects == 0
    await ws.close()


async def test_a_firmware_silent_past_link_timeout_ends_the_link(faulty):
    client, printer, sim, ws = await faulty(link_timeout=2.0)
    data, _ = gcode_file(2000)
    await upload(client, "part.gcode", data)
    await ws.send_json({"type": "job_start", "printer": "sim", "file": "part.gcode", "id": 1})
    await receive_until(ws, lambda f: f.get("id") == 1)
    async with asyncio.timeout(30):
        while sim.accepted_lines < 50:
            await asyncio.sleep(0.01)
    sim.faults.silent = True
    failed = await wait_job(ws, "failed", "completed", timeout=60)
    assert failed["state"] == "failed"
    assert "silent" in failed["reason"] and "probes" in failed["reason"], failed["reason"]
    sim.faults.silent = False
    await wait_state(printer, PrinterState.READY, timeout=30)  # the link comes back
    await ws.close()
