"""A second `hydrogen serve` must leave a running one alone.

Real processes end to end: gateway 1 prints on its simulated printer while gateway 2
is started (a) on the same state dir and another port, (b) on another state dir and
the same port (configured with gateway 1's serial device, as a copied config would
be). Gateway 2 must exit non-zero with one line before it opens a printer, the job
history or a file, and gateway 1's print must carry on and finish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.process import GatewayProcess, clean_env, start_gateway

KEY = "second-instance-key-0123456789"
HEADERS = {"Authorization": f"Key {KEY}"}
#: 48 dwells of 250 ms: long enough to still be printing after two short-lived
#: start attempts, short enough that waiting for the end costs a few seconds.
PRINT = ("G28\n" + "G4 P250\n" * 48).encode()
PRINT_LINES = 49


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, (url, response.status, await response.text())
        return await response.json()


async def _wait_for(session: aiohttp.ClientSession, url: str, key: str, *values: str) -> Any:
    async with asyncio.timeout(60):
        while (body := await _json(session, url))[key] not in values:
            await asyncio.sleep(0.1)
    return body


def _second(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `hydrogen serve` to completion; a second gateway that starts is killed."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "hydrogen", "serve", "--no-announce", "--api-key", KEY, *args],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=30,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the second gateway kept running: {exc.stdout!r}") from None


def _listing(directory: Path) -> dict[str, str | None]:
    """Names in the state dir, with where each symlink points (the pty)."""
    return {
        entry.name: os.readlink(entry) if entry.is_symlink() else None
        for entry in directory.iterdir()
    }


async def _running_row(session: aiohttp.ClientSession, base: str, job_id: str) -> dict[str, Any]:
    history = await _json(session, f"{base}/api/jobs/history")
    row = next(r for r in history["jobs"] if r["id"] == job_id)
    # lines_sent and duration move on as gateway 1 saves progress; the rest must not.
    return {k: v for k, v in row.items() if k not in ("lines_sent", "duration_seconds")}


async def test_a_second_gateway_touches_nothing_of_a_printing_one(tmp_path):
    state = tmp_path / "state"
    gw = start_gateway(["--state-dir", str(state), "--api-key", KEY, "--host", "127.0.0.1"])
    try:
        base = f"http://127.0.0.1:{gw.port}"
        async with aiohttp.ClientSession(headers=HEADERS) as session:
            await _wait_for(session, f"{base}/api/printers/sim", "state", "ready")
            form = aiohttp.FormData()
            form.add_field("file", PRINT, filename="long.gcode")
            assert (await session.post(f"{base}/api/files", data=form)).status == 201
            started = await session.post(
                f"{base}/api/printers/sim/job", json={"action": "start", "file": "long.gcode"}
            )
            assert started.status == 201
            job_id = (await started.json())["job_id"]
            await _wait_for(session, f"{base}/api/printers/sim/job", "state", "printing")
            row = await _running_row(session, base, job_id)
            assert row["outcome"] == "running"
            before = _listing(state)
            pty = state / "sim.pty"
            assert pty.exists() and before["sim.pty"] is not None

            # (a) the same state dir, another port
            same_dir = await asyncio.to_thread(_second, "--state-dir", str(state), "--port", "0")
            # (b) another state dir, the same port, gateway 1's printer device in its config
            other = tmp_path / "other"
            same_port = await asyncio.to_thread(
                _second,
                "--state-dir",
                str(other),
                "--port",
                str(gw.port),
                "--host",
                "127.0.0.1",
                "--printer",
                f"mk3={pty}",
            )

            assert same_dir.returncode != 0
            assert same_dir.stderr.splitlines() == [
                f"hydrogen: another Hydrogen (pid {gw.proc.pid}) uses {state}"
            ], same_dir.stderr
            assert same_dir.stdout == ""
            assert same_port.returncode != 0
            assert same_port.stderr.splitlines() == [
                f"hydrogen: port {gw.port} is in use (127.0.0.1)"
            ], same_port.stderr
            assert same_port.stdout == ""
            # Gateway 2 left only its own lock file: no key, no database, no files, no pty.
            assert sorted(p.name for p in other.iterdir()) == ["lock"]

            # Gateway 1: the same files, the same pty, the job still printing and its
            # history row still "running" ...
            assert _listing(state) == before
            assert pty.exists()
            job = await _json(session, f"{base}/api/printers/sim/job")
            assert job["job_id"] == job_id and job["state"] == "printing", job
            assert await _running_row(session, base, job_id) == row
            # ... and the print ends as if nothing had happened.
            done = await _wait_for(
                session, f"{base}/api/printers/sim/job", "state", "completed", "failed"
            )
            assert done["state"] == "completed", done
            history = await _json(session, f"{base}/api/jobs/history")
            final = next(r for r in history["jobs"] if r["id"] == job_id)
            assert final["outcome"] == "completed" and final["reason"] is None, final
            assert final["lines_sent"] == final["total_lines"] == PRINT_LINES, final
    finally:
        assert gw.stop() == 0
    errors = gw.stderr()
    assert "resend" not in errors.lower() and "timeout" not in errors.lower(), errors


def _kill(gw: GatewayProcess) -> None:
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(10)


def test_the_lock_dies_with_a_killed_gateway(tmp_path):
    args = ["--state-dir", str(tmp_path), "--no-printers", "--api-key", KEY]
    first = start_gateway(args)
    _kill(first)
    second = start_gateway(args)  # the crash left the lock file, not the lock
    try:
        assert "listening on" in second.banner
    finally:
        assert second.stop() == 0
