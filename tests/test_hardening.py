"""Regression tests for hostile input and races found in review: each one was a
confirmed way to hang a client, crash a task, leak a secret or mix two jobs."""

from __future__ import annotations

import asyncio
import os

import pytest

from hydrogen.printers.printer import PrinterState
from hydrogen.printers.temperature import parse_temperatures
from tests.conftest import CONTROL_KEY, MONITOR_KEY, connect, receive_json, receive_until, subscribe
from tests.process import hydrogen
from tests.test_jobs import CONTROL, MONITOR, digest, gcode_file, job_gateway, upload, wait_job

__all__ = ["job_gateway"]  # the fixture, re-used


async def test_two_jobs_never_stream_to_one_printer(job_gateway):
    """A start request during the previous job's hand-over is queued, not run beside it."""
    _, client, _, sim = job_gateway
    store = client.jobs.store
    original = store.finish

    async def slow_finish(*args, **kwargs):
        await asyncio.sleep(0.5)  # widen the window the race needed
        return await original(*args, **kwargs)

    store.finish = slow_finish
    files = {}
    for name, lines in (("a.gcode", 60), ("b.gcode", 300), ("c.gcode", 40)):
        data, commands = gcode_file(lines)
        files[name] = commands
        await upload(client, name, data)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    sim.reset_digest()
    await client.jobs.start_job("sim", "a.gcode")
    await client.jobs.start_job("sim", "b.gcode")
    await receive_until(
        ws,
        lambda f: f.get("file") == "a.gcode" and f.get("state") == "completed",
        timeout=30,
        limit=100000,
    )
    third = await client.jobs.start_job("sim", "c.gcode")
    assert third.state.value == "queued"
    async with asyncio.timeout(60):
        while True:
            frame = await wait_job(ws, "completed", "failed")
            if frame["file"] == "c.gcode":
                break
    assert frame["state"] == "completed"
    assert sim.accepted_digest == digest(files["a.gcode"] + files["b.gcode"] + files["c.gcode"])
    await ws.close()


async def test_pause_then_cancel_runs_the_cancel_script(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = 1.0
    data, _ = gcode_file(20000)
    await upload(client, "p.gcode", data)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    await client.jobs.start_job("sim", "p.gcode")
    await asyncio.sleep(0.2)
    await ws.send_json({"type": "job_pause", "printer": "sim", "id": "p"})
    await ws.send_json({"type": "job_cancel", "printer": "sim", "id": "c"})
    done = await wait_job(ws, "cancelled", "failed", timeout=20)
    assert done["state"] == "cancelled", done
    assert sim.recent_commands[-4:] == ["M104 S0", "M140 S0", "M107", "M84"]
    await ws.close()


async def test_client_leaving_during_pause_does_not_fail_the_job(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = 1.0
    data, _ = gcode_file(20000)
    await upload(client, "q.gcode", data)
    await client.jobs.start_job("sim", "q.gcode")
    await asyncio.sleep(0.2)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    await ws.send_json({"type": "job_pause", "printer": "sim", "id": "p"})
    await receive_until(ws, lambda f: f["type"] == "job" and f.get("state") == "paused")
    await ws.close()  # gone while the pause waits for the lines in flight
    await asyncio.sleep(1.0)
    runner = client.jobs.runners["sim"]
    assert runner.job.state.value == "paused"
    runner.cancel()


async def test_failed_job_turns_the_heaters_off_when_the_printer_still_listens(job_gateway):
    _, client, printer, _sim = job_gateway
    data, _ = gcode_file(50)
    # a line the firmware cannot take (too long, not a display message) fails the request
    bad = data + b"G1 X1 Y1 Z1 E1 F1 " + b"X1 " * 30 + b"\n"
    await upload(client, "bad.gcode", bad)
    response = await client.post(
        "/api/printers/sim/job", json={"action": "start", "file": "bad.gcode"}, headers=CONTROL
    )
    assert response.status == 409
    bad_line = data.count(b"\n") + 1  # as an editor numbers it
    assert f"line {bad_line} " in (await response.json())["error"]["message"]
    # a long M117 message is shortened instead, and the job completes
    fine = data + b"M117 " + b"A very long message for the display " * 4 + b"\n"
    await upload(client, "msg.gcode", fine)
    job = await client.jobs.start_job("sim", "msg.gcode")
    async with asyncio.timeout(20):
        while not job.state.finished:
            await asyncio.sleep(0.05)
    assert job.state.value == "completed", job.reason
    assert printer.state is PrinterState.READY


def test_line_noise_is_never_a_temperature():
    assert parse_temperatures("T:" + "9" * 400 + " /0.0 B:20.0 /0.0") is None or all(
        reading.actual < 1e6 for reading in parse_temperatures("T:" + "9" * 400).values()
    )
    report = parse_temperatures("T:21.0 /0.0 @:" + "9" * 400)
    assert report is not None and report["tool0"].power is None


async def test_printer_survives_noise_and_keeps_reading(job_gateway):
    _gateway, client, _printer, sim = job_gateway
    sim._emit("T:" + "9" * 400 + " /0.00 B:21.0 /0.00 @:" + "9" * 400)
    sim._emit("ok T:inf /nan B:-inf /0")
    await asyncio.sleep(0.3)
    ws = await connect(client)
    await receive_json(ws)
    status = await receive_until(ws, lambda f: f["type"] == "status")
    assert status["printers"][0]["state"] == "ready"
    await ws.send_json({"type": "command", "printer": "sim", "gcode": "M114", "id": "m"})
    reply = await receive_until(ws, lambda f: f.get("id") == "m", timeout=10)
    assert reply["type"] == "command_result"
    history = await client.get("/api/printers/sim/temperature/history", headers=MONITOR)
    assert history.status == 200
    await history.json()  # valid JSON: no Infinity
    await ws.close()


async def test_nan_in_a_frame_is_an_invalid_message_not_a_dead_connection(gateway_client):
    _, client = await gateway_client()
    ws = await connect(client)
    await receive_json(ws)
    # NaN is not JSON, so the frame (and its id) cannot be read: one error, no crash
    await ws.send_str('{"type": "ping", "id": 7, "payload": NaN}')
    error = await receive_until(ws, lambda f: f["type"] == "error")
    assert error["error"]["code"] == "invalid_message"
    await ws.send_json({"type": "ping", "id": 8})
    assert (await receive_until(ws, lambda f: f.get("id") == 8))["type"] == "pong"
    await ws.close()


async def test_subscriptions_per_connection_are_capped(gateway_client):
    _, client = await gateway_client(limits={"messages_per_second": 1000.0, "message_burst": 1000})
    ws = await connect(client, MONITOR_KEY)
    await receive_json(ws)
    for i in range(5):
        topics = [f"t{i}/{j}" for j in range(64)]
        await ws.send_json({"type": "subscribe", "id": i, "topics": topics})
    replies = [await receive_until(ws, lambda f, i=i: f.get("id") == i) for i in range(5)]
    assert [r["type"] for r in replies[:3]] == ["subscribed"] * 3
    assert replies[4]["error"]["code"] == "too_large"
    await ws.close()


async def test_symlink_in_the_files_dir_exposes_nothing(job_gateway, tmp_path):
    _, client, _, _ = job_gateway
    os.symlink(tmp_path / "api_key", tmp_path / "files" / "x.gcode")
    os.symlink("/etc/passwd", tmp_path / "files" / "y.gcode")
    listing = await (await client.get("/api/files", headers=MONITOR)).json()
    assert listing["files"] == []
    for name in ("x.gcode", "y.gcode"):
        response = await client.get(f"/api/files/{name}/content", headers=MONITOR)
        assert response.status == 404
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json({"type": "job_start", "printer": "sim", "file": "y.gcode", "id": 1})
    assert (await receive_until(ws, lambda f: f.get("id") == 1))["error"]["code"] == "not_found"
    await ws.close()


async def test_names_too_long_in_bytes_are_a_clear_400(job_gateway):
    _, client, _, _ = job_gateway
    name = "é" * 150 + ".gcode"
    assert (await client.get(f"/api/files/{name}", headers=MONITOR)).status == 400
    assert (await upload(client, name, b"G28\n")).status == 400


async def test_undecodable_key_header_is_a_401_not_a_500(gateway_client):
    _, client = await gateway_client()
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Api-Key: \xff\xfe\xc3(abcdefgh\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 401 " in head, head


def test_corrupt_job_database_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "jobs.sqlite3").write_bytes(b"this is not a database" * 100)
    result = hydrogen(
        "serve",
        "--no-announce",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path),
        "--api-key",
        CONTROL_KEY,
        timeout=30,
    )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "jobs.sqlite3" in result.stderr or "not a database" in result.stderr


@pytest.mark.parametrize("lines", ["G1 X1\r" * 70, "G1 X1\r\n" * 70])
async def test_command_line_limit_counts_every_line_ending(job_gateway, lines):
    _, client, _, _ = job_gateway
    response = await client.post(
        "/api/printers/sim/command",
        json={"gcode": lines},
        headers={"Authorization": f"Key {CONTROL_KEY}"},
    )
    assert response.status == 400


async def test_multipart_without_closing_boundary_leaves_no_file(job_gateway, tmp_path):
    _, client, _, _ = job_gateway
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="half.gcode"\r\n\r\n'
        b'G28\nG1 X1\n\r\n--B\r\nContent-Disposition: form-data; name="print"\r\n'
    )  # the second part's headers never end, and there is no closing boundary
    response = await client.post(
        "/api/files",
        data=body,
        headers=CONTROL | {"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert response.status == 400
    assert [p for p in os.listdir(tmp_path / "files") if p != ".meta"] == []


async def test_resume_is_published_at_once(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = 1.0
    data, _ = gcode_file(20000)
    await upload(client, "r.gcode", data)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    await client.jobs.start_job("sim", "r.gcode")
    await asyncio.sleep(0.2)
    await client.jobs.runner("sim").pause()
    await receive_until(ws, lambda f: f["type"] == "job" and f.get("state") == "paused")
    await client.jobs.runner("sim").resume()
    frame = await receive_until(
        ws, lambda f: f["type"] == "job" and f.get("state") != "paused", timeout=2
    )
    assert frame["state"] == "printing"
    client.jobs.runner("sim").cancel()
    await ws.close()


async def test_history_for_an_unknown_printer_is_404(job_gateway):
    _, client, _, _ = job_gateway
    response = await client.get("/api/jobs/history?printer=nope", headers=MONITOR)
    assert response.status == 404
