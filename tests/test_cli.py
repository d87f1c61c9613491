"""The `hydrogen` command as a user runs it: config errors, keys, shutdown, logs."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys

import aiohttp
import pytest

from hydrogen.protocol import SUBPROTOCOL
from tests.process import hydrogen, start_gateway

KEY = "cli-test-key-0123456789"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\nport = 'abc'\n", "server.port:"),
        ("[server]\nport = 70000\n", "server.port:"),
        ("[server]\nprot = 5001\n", "server.prot: unknown key"),
        ("colour = 'blue'\n", "colour: unknown key"),
        ("[log]\nlevel = 'loud'\n", "log.level:"),
        ("[[keys]]\nkey = 'short'\n", "keys[0].key:"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_invalid_config_is_one_line_and_exit_2(tmp_path, toml, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    for args in (["check-config", str(path)], ["serve", "--config", str(path)]):
        result = hydrogen(*args)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], result.stderr
        assert "Traceback" not in result.stderr
        assert "short" not in result.stderr  # a key value is never echoed


def test_unreadable_config_file(tmp_path):
    result = hydrogen("serve", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "file not found" in result.stderr


def test_shipped_example_config_is_valid():
    example = os.path.join(os.path.dirname(__file__), "..", "config", "hydrogen.toml")
    result = hydrogen("check-config", example, env={"HYDROGEN_MONITOR_KEY": "monitor-key-123456"})
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


async def _status_via(port: int, key: str, query: bool = False) -> dict:
    url = f"http://127.0.0.1:{port}/" + (f"?key={key}" if query else "")
    headers = {} if query else {"Authorization": f"Key {key}"}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=[SUBPROTOCOL], headers=headers) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            return await ws.receive_json(timeout=5)


async def test_serve_with_no_config_generates_a_key_that_survives_restart(tmp_path):
    state = tmp_path / "state"
    gw = start_gateway(["--state-dir", str(state), "--no-printers"])
    try:
        key_file = state / "api_key"
        assert str(key_file) in gw.banner
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key not in gw.banner  # not a terminal: the key itself is not printed
        assert f"API key:   generated, kept in {key_file}" in gw.banner, gw.banner
        assert (await _status_via(gw.port, key))["type"] == "status"
    finally:
        assert gw.stop() == 0
    assert key not in gw.stderr()
    gw2 = start_gateway(["--state-dir", str(state), "--no-printers"])
    try:
        assert key_file.read_text().strip() == key
        # A restart keeps the key the operator has: it must not claim a new one.
        assert f"API key:   reused from {key_file}" in gw2.banner, gw2.banner
        assert "generated" not in gw2.banner
        assert (await _status_via(gw2.port, key))["type"] == "status"
    finally:
        gw2.stop()


async def test_key_in_url_never_reaches_the_log(tmp_path):
    gw = start_gateway(
        [
            "--state-dir",
            str(tmp_path),
            "--no-printers",
            "--log-level",
            "debug",
            "--log-format",
            "text",
        ],
        env={"HYDROGEN_API_KEY": KEY},
    )
    try:
        await _status_via(gw.port, KEY, query=True)
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{gw.port}/metrics?key={KEY}&x=1")
            await session.get(f"http://127.0.0.1:{gw.port}/metrics", headers={"X-Api-Key": KEY})
    finally:
        gw.stop()
    log = gw.stderr()
    assert "GET /?key=***" in log  # the request was logged, redacted
    assert KEY not in log and KEY not in gw.banner


async def test_sigterm_sends_final_status_closes_1001_and_exits_0(tmp_path):
    gw = start_gateway(
        [
            "--state-dir",
            str(tmp_path),
            "--no-printers",
            "--api-key",
            KEY,
            "--status-interval",
            "0.2",
        ]
    )
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"http://127.0.0.1:{gw.port}/",
            protocols=[SUBPROTOCOL],
            headers={"Authorization": f"Key {KEY}"},
        ) as ws:
            await ws.receive_json(timeout=5)
            gw.proc.terminate()
            last = None
            while True:
                msg = await ws.receive(timeout=5)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                frame = msg.json()
                if frame["type"] == "status":
                    last = frame
            assert last is not None and last["status"]["shutting_down"] is True
            assert ws.close_code == 1001
    assert await asyncio.to_thread(gw.proc.wait, 10) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this host")
async def test_ipv4_and_ipv6_listeners_when_configured(tmp_path):
    config = tmp_path / "h.toml"
    config.write_text('[server]\nhost = "127.0.0.1"\nipv6 = true\nipv6_host = "::1"\n')
    port = _free_port()
    gw = start_gateway(
        [
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path),
            "--api-key",
            KEY,
            "--port",
            str(port),
        ]
    )
    try:
        assert gw.port == port
        async with aiohttp.ClientSession() as session:
            for host in ("127.0.0.1", "[::1]"):
                response = await session.get(f"http://{host}:{port}/api/system/health")
                assert response.status == 200, host
    finally:
        gw.stop()


async def test_simulator_command_serves_a_marlin_printer_on_a_link(tmp_path):
    import serial_asyncio

    link = tmp_path / "printer.tty"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hydrogen",
        "simulator",
        "--link",
        str(link),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(10):
            while not link.exists():
                await asyncio.sleep(0.05)
            reader, writer = await serial_asyncio.open_serial_connection(url=str(link))
            writer.write(b"M115\n")
            lines = []
            while not lines or lines[-1] != "ok":
                lines.append((await reader.readline()).decode().strip())
        assert any(line.startswith("FIRMWARE_NAME:Marlin") for line in lines)
        writer.close()
    finally:
        proc.terminate()
        await proc.wait()


async def test_simulator_command_exits_0_on_sigterm_and_removes_its_link(tmp_path):
    link = tmp_path / "printer.tty"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hydrogen", "simulator", "--link", str(link), "--seed", "7"
    )
    try:
        async with asyncio.timeout(10):
            while not link.exists():
                await asyncio.sleep(0.05)
    finally:
        proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 10) == 0  # not 143, death by SIGTERM
    assert not os.path.lexists(link)


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["serv"], "did you mean 'serve'?"),
        (["sever", "--port", "1"], "did you mean 'serve'?"),
        (["check", "x.toml"], "did you mean 'check-config'?"),
        (["checkconfig", "x.toml"], "did you mean 'check-config'?"),
        (["simulater", "--link", "x"], "did you mean 'simulator'?"),
        (["frobnicate"], None),
    ],
)
def test_an_unknown_command_suggests_the_closest_one(argv, suggestion):
    result = hydrogen(*argv)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"hydrogen: error: unknown command {argv[0]!r}"), result.stderr
    if suggestion:
        assert suggestion in error
    else:
        assert "did you mean" not in error
    assert error.endswith("commands: serve, check-config, keys, simulator")


def test_a_known_command_and_top_level_options_still_parse():
    assert hydrogen("--version").returncode == 0
    result = hydrogen("check-config", "/nonexistent.toml")
    assert result.returncode == 2 and "file not found" in result.stderr


def test_an_unusable_state_dir_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = hydrogen("serve", "--state-dir", str(blocker / "state"), "--no-printers")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"hydrogen: cannot use {blocker / 'state'}: Not a directory"
    ], result.stderr
