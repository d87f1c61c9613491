"""Running under systemd: the sd_notify conversation of a real `hydrogen serve`."""

from __future__ import annotations

import socket
import time

from tests.process import start_gateway


def test_ready_watchdog_stopping_arrive_in_order(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    gw = start_gateway(
        ["--state-dir", str(tmp_path), "--no-printers", "--api-key", "svc-key-0123456789"],
        # WATCHDOG_USEC=400 ms: the gateway must ping every 200 ms.
        env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"},
    )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while sum(m.startswith("WATCHDOG=1") for m in messages) < 3:
            assert time.monotonic() < deadline, messages
            messages.append(sock.recv(4096).decode())
        gw.proc.terminate()
        while not any(m.startswith("STOPPING=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        assert gw.proc.wait(10) == 0
    finally:
        gw.stop()
        sock.close()
    kinds = [m.split("=", 1)[0] for m in messages]
    assert kinds[0] == "READY", messages
    assert "STATUS=listening on port" in messages[0]
    assert kinds.index("WATCHDOG") > 0
    assert kinds[-1] == "STOPPING"


def test_abstract_notify_socket(tmp_path):
    name = f"hydrogen-test-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    gw = start_gateway(
        ["--state-dir", str(tmp_path), "--no-printers", "--api-key", "svc-key-0123456789"],
        env={"NOTIFY_SOCKET": "@" + name},
    )
    try:
        assert sock.recv(4096).startswith(b"READY=1")
    finally:
        gw.stop()
        sock.close()


def test_journal_format_has_priorities_and_no_timestamps(tmp_path):
    gw = start_gateway(
        [
            "--state-dir",
            str(tmp_path),
            "--no-printers",
            "--api-key",
            "svc-key-0123456789",
            "--log-format",
            "journal",
        ],
    )
    assert gw.stop() == 0
    lines = [line for line in gw.stderr().splitlines() if line]
    assert lines, "no log output"
    assert all(line.startswith(("<3>", "<4>", "<6>", "<7>")) for line in lines), lines
    assert any(line.startswith("<6>hydrogen") for line in lines)
    assert not any(line[3:7].isdigit() for line in lines)  # no timestamp of our own
