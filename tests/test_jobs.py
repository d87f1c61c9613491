"""Print jobs end to end: uploads, the simulated printer on a real pty, history."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import signal
import socket
import sqlite3

import aiohttp
import pytest

from hydrogen.config import JobsConfig
from hydrogen.printers.printer import PrinterState
from tests.conftest import CONTROL_KEY, MONITOR_KEY, connect, receive_json, receive_until, subscribe
from tests.process import start_gateway
from tests.test_printers import sim_printer, wait_state

CONTROL = {"Authorization": f"Key {CONTROL_KEY}"}
MONITOR = {"X-Api-Key": MONITOR_KEY}


def gcode_file(lines: int, *, header: str = "") -> tuple[bytes, list[str]]:
    """A file with comments and blank lines, and the commands a printer must receive."""
    commands = [f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 200} E{i * 0.01:.2f}" for i in range(lines)]
    body = [header, "; generated for a test", "G28 ; home", ""]
    for i, command in enumerate(commands):
        body.append(command + ("  ; a comment" if i % 5 == 0 else ""))
        if i % 9 == 0:
            body.append("")
    return ("\n".join(body) + "\n").encode(), ["G28", *commands]


def digest(commands: list[str]) -> str:
    return hashlib.sha256("\n".join(commands).encode()).hexdigest()


async def upload(client, name: str, data: bytes, headers=CONTROL, path="/api/files", **fields):
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return await client.post(path, data=form, headers=headers)


@pytest.fixture
async def job_gateway(gateway_client, seed):
    return await start_job_gateway(gateway_client, seed)


async def start_job_gateway(gateway_client, seed: int):
    """A gateway with the simulated printer ready and pause/resume scripts that show."""
    gateway, client = await gateway_client(
        printers=(sim_printer(),),
        jobs=JobsConfig(
            m73_progress=False,
            pause_script="G91\nG1 Z5\nG90",
            resume_script="G91\nG1 Z-5\nG90",
            max_upload_bytes=2 * 1024 * 1024,
        ),
    )
    printer = client.printers.printers["sim"]
    sim = client.printers.simulators["sim"]
    sim.reseed(seed)
    await wait_state(printer, PrinterState.READY)
    return gateway, client, printer, sim


async def run_job(ws, file: str, rid="start") -> dict:
    await ws.send_json({"type": "job_start", "printer": "sim", "file": file, "id": rid})
    reply = await receive_until(ws, lambda f: f.get("id") == rid)
    assert reply["type"] == "job", reply
    return reply


async def wait_job(ws, *states: str, timeout: float = 30) -> dict:
    return await receive_until(
        ws,
        lambda f: f["type"] == "job" and f.get("state") in states and "id" not in f,
        timeout=timeout,
        limit=100000,
    )


#: Simulated time at 20x for tests that print whole files to check what reached the
#: firmware, not how long it took: the G28 each file starts with is 3 simulated seconds.
FAST_SIM = 20.0


# -- files --------------------------------------------------------------------------------


async def test_upload_lists_metadata_and_counts_lines(job_gateway):
    _, client, _, _ = job_gateway
    data, commands = gcode_file(100, header="; estimated printing time (normal mode) = 1h 2m 3s")
    response = await upload(client, "part.gcode", data)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["file"]["metadata"]["gcode_lines"] == len(commands)
    assert body["file"]["metadata"]["estimated_seconds"] == 3723
    listing = await (await client.get("/api/files", headers=MONITOR)).json()
    assert [f["name"] for f in listing["files"]] == ["part.gcode"]
    content = await client.get("/api/files/part.gcode/content", headers=MONITOR)
    assert await content.read() == data


async def test_octoprint_upload_route_with_x_api_key(job_gateway):
    _, client, _, _ = job_gateway
    version = await client.get("/api/version", headers={"X-Api-Key": CONTROL_KEY})
    info = await version.json()
    assert "api" in info and info["text"].startswith("OctoPrint")
    # OctoPrint's refusal of a missing key (docs/octoprint.md)
    assert (await client.get("/api/version")).status == 403
    data, _ = gcode_file(10)
    response = await upload(
        client,
        "slicer.gcode",
        data,
        headers={"X-Api-Key": CONTROL_KEY},
        path="/api/files/local",
        select="true",
        print="false",
    )
    assert response.status == 201
    body = await response.json()
    assert body["done"] is True
    assert body["files"]["local"]["name"] == "slicer.gcode"
    assert response.headers["Location"].endswith("/api/files/local/slicer.gcode")
    monitor = await upload(client, "x.gcode", data, headers=MONITOR, path="/api/files/local")
    assert monitor.status == 403


async def test_octoprint_upload_with_print_true_starts_the_job(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = FAST_SIM
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    data, commands = gcode_file(50)
    sim.reset_digest()
    response = await upload(
        client,
        "go.gcode",
        data,
        headers={"X-Api-Key": CONTROL_KEY},
        path="/api/files/local",
        print="true",
    )
    assert response.status == 201
    assert (await response.json())["effectivePrint"] is True
    done = await wait_job(ws, "completed", "failed")
    assert done["state"] == "completed", done
    assert sim.accepted_digest == digest(commands)
    await ws.close()


@pytest.mark.parametrize(
    "name", ["../escape.gcode", "sub/dir.gcode", ".hidden.gcode", "model.stl", "a\x00b.gcode", ""]
)
async def test_bad_names_are_refused(job_gateway, tmp_path, name):
    _, client, _, _ = job_gateway
    # a hand-built body: the hostile name reaches the server byte for byte
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="'
        + name.encode()
        + b'"\r\n\r\nG28\n\r\n--B--\r\n'
    )
    response = await client.post(
        "/api/files",
        data=body,
        headers=CONTROL | {"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_message"
    assert not (tmp_path / "escape.gcode").exists()
    assert [p.name for p in (tmp_path / "files").iterdir() if not p.name.startswith(".")] == []


async def test_too_large_upload_is_refused_and_leaves_nothing(job_gateway, tmp_path):
    _, client, _, _ = job_gateway
    response = await upload(client, "big.gcode", b"G1 X1\n" * (3 * 1024 * 1024 // 6))
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "too_large"
    assert sorted(os.listdir(tmp_path / "files")) == [".meta"]


async def assert_no_files_left(client, tmp_path) -> None:
    """Within 3 s nothing is stored (no partial or half-received file), nor listed."""
    for _ in range(60):
        leftovers = [p for p in os.listdir(tmp_path / "files") if p != ".meta"]
        if not leftovers:
            break
        await asyncio.sleep(0.05)
    assert leftovers == []
    assert (await (await client.get("/api/files", headers=MONITOR)).json())["files"] == []


async def test_interrupted_upload_leaves_no_partial_file(job_gateway, tmp_path):
    _, client, _, _ = job_gateway
    boundary = "XyZ"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.gcode"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    request = (
        f"POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Key {CONTROL_KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request + head + b"G1 X1\n" * 5000)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()  # the slicer's connection drops mid-upload
    await assert_no_files_left(client, tmp_path)


async def test_an_upload_cut_off_after_the_file_part_keeps_nothing(job_gateway, tmp_path):
    """Cura sends form fields after the file: a drop there must not leave the file."""
    _, client, _, _ = job_gateway
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.gcode"'
        f"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode() + b"G1 X1\n" * 200_000
    body += f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="print"\r\n\r\nfa'.encode()
    request = (
        f"POST /api/files/local HTTP/1.1\r\nHost: x\r\nX-Api-Key: {CONTROL_KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body) + 500}\r\n\r\n"
    ).encode()
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request + body)  # the whole file part, then the connection drops
    await writer.drain()
    await asyncio.sleep(1.0)
    writer.close()
    await assert_no_files_left(client, tmp_path)


async def test_a_file_that_is_printing_or_queued_cannot_be_replaced_or_deleted(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = 1.0
    slow, _ = gcode_file(200)
    await upload(client, "slow.gcode", b"G4 P500\n" * 40 + slow)
    await upload(client, "next.gcode", slow)
    for file in ("slow.gcode", "next.gcode"):
        response = await client.post(
            "/api/printers/sim/job", json={"action": "start", "file": file}, headers=CONTROL
        )
        assert response.status in (200, 201), await response.text()
    for file, why in (("slow.gcode", "is printing on sim"), ("next.gcode", "is queued on sim")):
        response = await upload(client, file, b"G28\n")
        assert response.status == 409, await response.text()
        assert why in (await response.json())["error"]["message"]
        response = await client.delete(f"/api/files/{file}", headers=CONTROL)
        assert response.status == 409
    listed = {
        f["name"]: f
        for f in (await (await client.get("/api/files", headers=MONITOR)).json())["files"]
    }
    assert listed["next.gcode"]["size_bytes"] == len(slow)  # the queued job's file is intact
    await client.post("/api/printers/sim/job", json={"action": "cancel"}, headers=CONTROL)


# -- jobs -----------------------------------------------------------------------------------


async def test_job_runs_to_completion_with_every_line_exactly_once(job_gateway):
    _, client, printer, sim = job_gateway
    sim.time_scale = FAST_SIM
    data, commands = gcode_file(1500)
    assert (await upload(client, "full.gcode", data)).status == 201
    ws = await connect(client)
    await receive_json(ws)
    await ws.send_json(
        {"type": "subscribe", "id": 1, "topics": ["printer/sim/job", "notifications"]}
    )
    await receive_until(ws, lambda f: f.get("id") == 1)
    sim.reset_digest()
    started = await run_job(ws, "full.gcode")
    assert started["state"] == "printing" and started["total_lines"] == len(commands)
    progress = []
    while True:
        frame = await wait_job(ws, "printing", "completed", "failed")
        progress.append(frame["progress"])
        if frame["state"] != "printing":
            break
    assert frame["state"] == "completed", frame
    assert frame["lines_sent"] == len(commands) and frame["progress"] == 1.0
    assert frame["bytes_sent"] == len(data)
    assert progress == sorted(progress) and len(progress) >= 2  # the bar moved forward
    assert sim.accepted_digest == digest(commands)
    note = await receive_until(ws, lambda f: f.get("event") == "job_completed")
    assert note["details"]["file"] == "full.gcode"
    assert printer.state is PrinterState.READY
    await ws.close()


async def test_exactly_once_under_injected_corruption(job_gateway):
    _, client, printer, sim = job_gateway
    sim.time_scale = FAST_SIM
    data, commands = gcode_file(800)
    await upload(client, "noisy.gcode", data)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    sim.reset_digest()
    resends = printer.stats.resends
    sim.faults.corrupt_ratio = 0.05
    sim.faults.corrupt_run_limit = 3
    await run_job(ws, "noisy.gcode")
    done = await wait_job(ws, "completed", "failed", timeout=60)
    sim.faults.corrupt_ratio = 0.0
    assert done["state"] == "completed", done
    assert printer.stats.resends > resends  # corruption really happened
    assert sim.accepted_digest == digest(commands)
    await ws.close()


async def test_pause_resume_cancel_with_scripts(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = 1.0
    data, _ = gcode_file(20000)
    await upload(client, "long.gcode", data)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    await run_job(ws, "long.gcode")
    await asyncio.sleep(0.3)
    await ws.send_json({"type": "job_pause", "printer": "sim", "id": "p"})
    paused = await receive_until(ws, lambda f: f.get("id") == "p", timeout=20)
    assert paused["state"] == "paused", paused
    assert sim.recent_commands[-3:] == ["G91", "G1 Z5", "G90"]  # the pause script ran last
    at_pause = sim.accepted_lines
    await asyncio.sleep(0.5)
    assert sim.accepted_lines == at_pause  # nothing is fed while paused
    await ws.send_json({"type": "job_resume", "printer": "sim", "id": "r"})
    resumed = await receive_until(ws, lambda f: f.get("id") == "r", timeout=20)
    assert resumed["state"] == "printing"
    await asyncio.sleep(0.3)
    assert sim.accepted_lines > at_pause + 3
    await ws.send_json({"type": "job_cancel", "printer": "sim", "id": "c"})
    await receive_until(ws, lambda f: f.get("id") == "c")
    cancelled = await wait_job(ws, "cancelled", "failed")
    assert cancelled["state"] == "cancelled", cancelled
    assert sim.recent_commands[-4:] == ["M104 S0", "M140 S0", "M107", "M84"]
    assert cancelled["lines_sent"] < cancelled["total_lines"]
    await ws.close()


async def test_halt_mid_job_fails_it_with_the_reason(job_gateway):
    _, client, printer, sim = job_gateway
    sim.time_scale = 1.0
    data, _ = gcode_file(20000)
    await upload(client, "doomed.gcode", data)
    ws = await connect(client, MONITOR_KEY)
    await receive_json(ws)
    await ws.send_json(
        {"type": "subscribe", "id": 1, "topics": ["printer/sim/job", "notifications"]}
    )
    await receive_until(ws, lambda f: f.get("id") == 1)
    await client.jobs.start_job("sim", "doomed.gcode")
    await asyncio.sleep(0.3)
    sim.thermal_runaway()
    failed = await wait_job(ws, "failed", "completed")
    assert failed["state"] == "failed"
    assert "Thermal Runaway" in failed["reason"] or "halted" in failed["reason"]
    note = await receive_until(ws, lambda f: f.get("event") == "job_failed")
    assert note["level"] == "error"
    # it is never silently resumed: after a reconnect the printer is idle
    printer.reconnect()
    await wait_state(printer, PrinterState.READY, timeout=15)
    assert "sim" not in client.jobs.runners
    await ws.close()


async def test_queue_runs_jobs_one_after_another(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = FAST_SIM
    first, first_cmds = gcode_file(300)
    second, second_cmds = gcode_file(200)
    await upload(client, "one.gcode", first)
    await upload(client, "two.gcode", second)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "printer/sim/job")
    sim.reset_digest()
    await run_job(ws, "one.gcode", "a")
    queued = await run_job(ws, "two.gcode", "b")
    assert queued["state"] == "queued"
    async with asyncio.timeout(60):
        while True:
            frame = await wait_job(ws, "completed", "failed")
            if frame["file"] == "two.gcode":
                break
    assert frame["state"] == "completed"
    assert sim.accepted_digest == digest(first_cmds + second_cmds)
    await ws.close()


async def test_job_requests_need_control_and_existing_files(job_gateway):
    _, client, _, _ = job_gateway
    ws = await connect(client, MONITOR_KEY)
    await receive_json(ws)
    await ws.send_json({"type": "job_start", "printer": "sim", "file": "x.gcode", "id": 1})
    assert (await receive_until(ws, lambda f: f.get("id") == 1))["error"]["code"] == "forbidden"
    control = await connect(client)
    await receive_json(control)
    await control.send_json({"type": "job_start", "printer": "sim", "file": "nope.gcode", "id": 2})
    assert (await receive_until(control, lambda f: f.get("id") == 2))["error"][
        "code"
    ] == "not_found"
    await control.send_json({"type": "job_pause", "printer": "sim", "id": 3})
    assert (await receive_until(control, lambda f: f.get("id") == 3))["error"]["code"] == "conflict"
    response = await client.post("/api/printers/sim/job", json={"action": "fly"}, headers=CONTROL)
    assert response.status == 400
    await ws.close()
    await control.close()


async def test_http_job_control_and_history(job_gateway):
    _, client, _, sim = job_gateway
    sim.time_scale = FAST_SIM
    data, commands = gcode_file(100)
    await upload(client, "http.gcode", data)
    response = await client.post(
        "/api/printers/sim/job", json={"action": "start", "file": "http.gcode"}, headers=CONTROL
    )
    assert response.status == 201
    async with asyncio.timeout(30):
        while True:
            job = await (await client.get("/api/printers/sim/job", headers=MONITOR)).json()
            if job["state"] == "completed":
                break
            await asyncio.sleep(0.1)
    history = await (await client.get("/api/jobs/history", headers=MONITOR)).json()
    record = history["jobs"][0]
    assert record["file"] == "http.gcode" and record["outcome"] == "completed"
    assert record["lines_sent"] == len(commands)
    text = await (await client.get("/metrics", headers=MONITOR)).text()
    assert 'hydrogen_jobs_total{outcome="completed",printer="sim"} 1.0' in text


def running_jobs(path) -> int:
    """How many jobs the history file holds as running (read-only, while the gateway
    writes it)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return db.execute("select count(*) from jobs where outcome='running'").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_history_survives_restart_and_a_crash_is_recorded_as_failed(tmp_path):
    key = "restart-key-0123456789"
    args = ["--state-dir", str(tmp_path), "--api-key", key, "--host", "127.0.0.1"]
    headers = {"Authorization": f"Key {key}"}
    # the file that completes has no G28: the subprocess's simulator homes in 3 real seconds
    data = "".join(f"G1 X{i % 200} Y{(i * 7) % 200}\n" for i in range(200)).encode()
    big, _ = gcode_file(200000)
    gw = start_gateway(args)
    try:
        base = f"http://127.0.0.1:{gw.port}"
        async with aiohttp.ClientSession(headers=headers) as session:
            async with asyncio.timeout(20):
                while (await (await session.get(f"{base}/api/printers/sim")).json())[
                    "state"
                ] != "ready":
                    await asyncio.sleep(0.1)
            for name, body in (("done.gcode", data), ("crash.gcode", big)):
                form = aiohttp.FormData()
                form.add_field("file", body, filename=name)
                assert (await session.post(f"{base}/api/files", data=form)).status == 201
            await session.post(
                f"{base}/api/printers/sim/job", json={"action": "start", "file": "done.gcode"}
            )
            async with asyncio.timeout(30):
                while (await (await session.get(f"{base}/api/printers/sim/job")).json())[
                    "state"
                ] != "completed":
                    await asyncio.sleep(0.1)
            await session.post(
                f"{base}/api/printers/sim/job", json={"action": "start", "file": "crash.gcode"}
            )
            # the crash comes once the started job is on disk (recorded as running)
            async with asyncio.timeout(20):
                while not running_jobs(tmp_path / "jobs.sqlite3"):
                    await asyncio.sleep(0.05)
    finally:
        gw.proc.send_signal(signal.SIGKILL)  # a crash, not a clean stop
        gw.proc.wait(10)
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert db.execute("select count(*) from jobs where outcome='running'").fetchone()[0] == 1
    gw = start_gateway(args)
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            history = await (
                await session.get(f"http://127.0.0.1:{gw.port}/api/jobs/history")
            ).json()
            # the job panel shows how the last print ended, not "idle"
            last = await (
                await session.get(f"http://127.0.0.1:{gw.port}/api/printers/sim/job")
            ).json()
    finally:
        gw.stop()
    assert last["file"] == "crash.gcode" and last["state"] == "failed", last
    crashed = next(r for r in history["jobs"] if r["file"] == "crash.gcode")
    assert last["job_id"] == crashed["id"] and last["reason"] == crashed["reason"]
    assert last["total_lines"] == crashed["total_lines"] > 0 and last["total_bytes"] == len(big)
    outcomes = {r["file"]: r for r in history["jobs"]}
    assert outcomes["done.gcode"]["outcome"] == "completed"
    assert outcomes["crash.gcode"]["outcome"] == "failed"
    assert outcomes["crash.gcode"]["lines_sent"] > 0 or outcomes["crash.gcode"]["reason"]
    assert dataclasses.is_dataclass(JobsConfig)


def test_an_unsendable_line_is_named_by_its_line_number_in_the_file(tmp_path):
    from hydrogen.jobs.job import check_file

    path = tmp_path / "bad.gcode"
    long_move = "G1 X10 " + "Y1 " * 100
    path.write_text(f"; sliced by hand\n\nG28\n  ; a comment\n{long_move}\nG1 X20\n")
    problem = check_file(path)
    assert problem is not None and problem.startswith("line 5 ('G1 X10 Y1"), problem
    path.write_text("G28\nG1 X1\n")
    assert check_file(path) is None


async def test_temperatures_keep_coming_during_a_job_on_firmware_without_autoreport(job_gateway):
    _, client, printer, sim = job_gateway
    sim.autoreport_supported = False
    printer.reconnect()  # handshake again: M115 now says AUTOREPORT_TEMP:0
    await wait_state(printer, PrinterState.CONNECTING, PrinterState.DISCONNECTED)
    await wait_state(printer, PrinterState.READY, timeout=15)
    assert not printer.firmware.capabilities.get("AUTOREPORT_TEMP")
    sim.time_scale = 1.0
    await upload(client, "dwell.gcode", b"G4 P20\n" * 300)  # about 6 s of printing
    await client.jobs.start_job("sim", "dwell.gcode")
    async with asyncio.timeout(3):
        while printer.temperatures_at is None:
            await asyncio.sleep(0.05)
    first = printer.temperatures_at
    await asyncio.sleep(2.5)
    assert client.jobs.last_jobs["sim"].state.value == "printing"
    assert printer.temperatures_at - first >= 1.5  # polled with M105 while the job streams
    client.jobs.cancel("sim")


@pytest.mark.parametrize("file_has_m73", [False, True])
async def test_m73_progress_does_not_fight_the_files_own(gateway_client, file_has_m73):
    _, client = await gateway_client(printers=(sim_printer(),), jobs=JobsConfig(m73_progress=True))
    printer = client.printers.printers["sim"]
    sim = client.printers.simulators["sim"]
    await wait_state(printer, PrinterState.READY)
    body = []
    for i in range(200):
        if file_has_m73 and i % 50 == 0:
            body.append(f"M73 P{i // 2} R{(200 - i) // 10}")  # what PrusaSlicer writes
        body.append(f"G1 X{i % 100} Y{i % 50}")
    await upload(client, "m73.gcode", ("\n".join(body) + "\n").encode())
    sim.reset_digest()
    await client.jobs.start_job("sim", "m73.gcode")
    async with asyncio.timeout(30):
        while client.jobs.last_jobs["sim"].state.value != "completed":
            await asyncio.sleep(0.05)
    m73 = [c for c in sim.recent_commands if c.startswith("M73")]
    if file_has_m73:
        own = [c for c in body if c.startswith("M73")]
        # the file's own lines, in order, and at most the gateway's first "M73 P0"
        assert [c for c in m73 if c in own] == own
        assert len(m73) - len(own) <= 1 and all(c.startswith("M73 P0") for c in m73 if c not in own)
    else:
        assert m73[-1] == "M73 P100 R0" and len(m73) >= 10


async def test_the_printer_can_pause_and_cancel_the_job_from_its_own_screen(job_gateway):
    """Marlin sends //action:pause and //action:cancel (M118 A1 action:... here) when
    the user pauses or stops on the printer itself; the host must act on them."""
    _, client, _, sim = job_gateway
    sim.time_scale = 1.0
    body = b"G4 P10\n" * 20 + b"M118 A1 action:pause\n" + b"G4 P10\n" * 200
    body += b"M118 A1 action:cancel\n" + b"G1 X1\n" * 2000
    await upload(client, "screen.gcode", body)
    ws = await connect(client)
    await receive_json(ws)
    await subscribe(ws, "notifications")
    await client.jobs.start_job("sim", "screen.gcode")
    note = await receive_until(ws, lambda f: f.get("event") == "job_pause_requested", timeout=20)
    assert note["details"]["file"] == "screen.gcode"
    async with asyncio.timeout(10):
        while client.jobs.last_jobs["sim"].state.value != "paused":
            await asyncio.sleep(0.05)
    await client.jobs.runner("sim").resume()
    await receive_until(ws, lambda f: f.get("event") == "job_cancel_requested", timeout=20)
    done = await receive_until(ws, lambda f: f.get("event") in ("job_cancelled", "job_completed"))
    assert done["event"] == "job_cancelled"
    assert client.jobs.last_jobs["sim"].lines_sent < 2000  # the rest of the file never went
    await ws.close()


async def test_cancel_sends_no_more_lines_of_the_file(job_gateway):
    """Lines read ahead behind a long command (a dwell here; a heat-up in real life)
    are taken back on cancel: after the command in flight, only the cancel script."""
    _, client, _, sim = job_gateway
    sim.time_scale = 1.0
    body = b"G28\nG4 S2\n" + b"".join(f"G1 X{i} Y{i}\n".encode() for i in range(1, 50))
    await upload(client, "dwell.gcode", body)
    await client.jobs.start_job("sim", "dwell.gcode")
    async with asyncio.timeout(10):
        while "G4 S2" not in sim.recent_commands:
            await asyncio.sleep(0.02)
    client.jobs.cancel("sim")
    async with asyncio.timeout(15):
        while client.jobs.last_jobs["sim"].state.value != "cancelled":
            await asyncio.sleep(0.05)
    after = sim.recent_commands[sim.recent_commands.index("G4 S2") + 1 :]
    assert after == ["M104 S0", "M140 S0", "M107", "M84"], after
    assert client.jobs.last_jobs["sim"].lines_sent == 2  # G28 and G4, nothing read ahead
