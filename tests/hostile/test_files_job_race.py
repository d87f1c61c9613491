"""``job_start`` racing a ``DELETE`` or a re-upload of the same file.

A start pins its file when it is accepted: either the start wins, and the file
stays exactly as it was checked until the job ends (the delete or replace gets
409), or the delete or replace wins and the start gets a clear 404 or 409. Never
both: no job that fails on a vanished file, none that prints a file swapped in
after its check. The contender is sent at a seeded moment inside the start's
line check (a large file makes that check take a while).
"""

from __future__ import annotations

import asyncio

from hydrogen.jobs.job import check_file
from hydrogen.printers.printer import PrinterState
from tests.conftest import connect, receive_json, receive_until, subscribe
from tests.hostile._files_support import (
    assert_no_traceback,
    assert_serving,
    gcode,
    repeats,
    seeded,
    temp_files,
    wait_until,
)
from tests.test_jobs import CONTROL, MONITOR, digest, job_gateway, upload
from tests.test_printers import wait_state

__all__ = ["job_gateway"]  # the fixture, re-used

ROUNDS = 6


async def _start(client, ws, via: str, name: str, rid: str) -> tuple[bool, int | str, dict]:
    """(accepted, HTTP status or WS error code, body)."""
    if via == "ws":
        await ws.send_json({"type": "job_start", "printer": "sim", "file": name, "id": rid})
        frame = await receive_until(ws, lambda f: f.get("id") == rid, timeout=30)
        if frame["type"] == "job":
            return True, "job", frame
        return False, frame["error"]["code"], frame["error"]
    response = await client.post(
        "/api/printers/sim/job", json={"action": "start", "file": name}, headers=CONTROL
    )
    body = await response.json()
    return response.status == 201, response.status, body


async def _ended(ws, job_id: str) -> dict:
    """This job's end as published (a previous round's job publishes its end again
    once its history record is written: not that one)."""
    return await receive_until(
        ws,
        lambda f: (
            f["type"] == "job"
            and "id" not in f
            and f.get("job_id") == job_id
            and f.get("state") in ("completed", "cancelled", "failed")
        ),
        timeout=30,
        limit=100000,
    )


def _on_disk(files_dir, name: str) -> bytes | None:
    try:
        return (files_dir / name).read_bytes()
    except FileNotFoundError:
        return None


@repeats
async def test_job_start_and_a_delete_or_replace_never_both_win(
    job_gateway, caplog, tmp_path, seed, repeat
):
    rng, where = seeded(seed, repeat)
    _, client, printer, sim = job_gateway
    # The race is in the gateway's start, not the printer: simulated time at 20x, so
    # the G28 each file starts with (3 simulated seconds) does not pace every round.
    sim.time_scale = 20.0
    files_dir = tmp_path / "files"
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    for round_ in range(ROUNDS):
        name = f"race-{round_}.gcode"
        big, _ = gcode(rng, 30000, tag=f"big {round_}")  # a line check of tens of ms
        small, small_commands = gcode(rng, rng.randint(5, 30), tag=f"small {round_}")
        contender = rng.choice(("delete", "replace"))
        via = rng.choice(("ws", "http"))
        share = rng.uniform(0.15, 0.6)
        assert (await upload(client, name, big)).status == 201, where
        # Aim inside the start's line check: time one check of this file (a calibration
        # of when to send the contender, not an assertion) and send it at a seeded
        # share of that.
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.to_thread(check_file, files_dir / name)
        delay = share * (loop.time() - began)
        context = f"{where} round={round_} {via} start vs {contender} after {delay:.3f}s"
        await wait_state(printer, PrinterState.READY)
        sim.reset_digest()

        async def contend(delay=delay, contender=contender, name=name, small=small):
            await asyncio.sleep(delay)
            if contender == "delete":
                response = await client.delete(f"/api/files/{name}", headers=CONTROL)
            else:
                response = await upload(client, name, small)
            body = await response.json() if response.status != 204 else None
            return response.status, body

        (accepted, code, reply), (status, body) = await asyncio.gather(
            _start(client, ws, via, name, f"start-{round_}"), contend()
        )
        context += f": start {accepted} {code}, {contender} {status}"

        if not accepted:
            # the delete or replace won: a clear answer, and it took effect
            if contender == "delete":
                assert status == 204, context
                assert code in (404, "not_found"), f"{context}: {reply}"
                assert _on_disk(files_dir, name) is None, context
            else:
                assert status == 201, context
                assert code in (409, "conflict"), f"{context}: {reply}"
                assert "replaced" in str(reply), f"{context}: {reply}"
                assert _on_disk(files_dir, name) == small, context
            continue

        job_id = reply["job_id"]
        frame = reply if via == "ws" else None
        if status in (200, 201, 204):
            # Both succeeded: only fine if the replace came first, whole, and the job
            # pinned and checked the new file (a delete can never come first and
            # leave a job to start).
            assert contender == "replace", f"{context}: the file was deleted under the job"
            expected, commands = small, small_commands
        else:
            assert status == 409, context
            assert body["error"]["code"] == "conflict", context
            expected, commands = big, None
        assert _on_disk(files_dir, name) == expected, f"{context}: not the file the job pinned"
        if frame is None:
            frame = await (await client.get("/api/printers/sim/job", headers=MONITOR)).json()
        assert frame["job_id"] == job_id
        assert frame["total_bytes"] == len(expected), f"{context}: the job describes another file"

        if commands is None:
            # the big file: it stays, unchanged and undeletable, while the job runs
            again = await client.delete(f"/api/files/{name}", headers=CONTROL)
            assert again.status == 409, context
            await client.post("/api/printers/sim/job", json={"action": "cancel"}, headers=CONTROL)
            done = await _ended(ws, job_id)
            assert done["state"] == "cancelled", f"{context}: {done}"
        else:
            done = await _ended(ws, job_id)
            assert done["state"] == "completed", f"{context}: {done}"
            assert sim.accepted_digest == digest(commands), f"{context}: printed another file"
        assert _on_disk(files_dir, name) == expected, f"{context}: changed while printing"
        await wait_until(lambda: "sim" not in client.jobs.runners, f"{context}: job still held")

    await ws.close()
    await wait_until(lambda: not temp_files(files_dir), f"{where}: temporary files left")
    assert_no_traceback(caplog, where)
    await assert_serving(client, where)
