"""Tests for hydrogen.sdnotify against real AF_UNIX datagram sockets owned by the test.

Real sockets rather than mocks, because what matters is the exact bytes systemd would
receive and that the abstract ``@name`` form reaches the right address.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydrogen.sdnotify import Notifier, watchdog_loop


class Receiver:
    """A bound datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def pending(self) -> list[bytes]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        out: list[bytes] = []
        while True:
            try:
                out.append(self.sock.recv(4096))
            except BlockingIOError:
                return out


@pytest.fixture
def path_receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield Receiver(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"hydrogen-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield Receiver(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    return request.getfixturevalue(f"{request.param}_receiver")


def make(receiver: Receiver, **env: str) -> Notifier:
    return Notifier.from_environment({"NOTIFY_SOCKET": receiver.env_value, **env})


def test_ready_with_status_sends_exact_bytes(receiver: Receiver) -> None:
    with make(receiver) as notifier:
        assert notifier.enabled
        assert notifier.ready("serving 2 printers") is True
        assert receiver.recv() == b"READY=1\nSTATUS=serving 2 printers"


def test_each_helper_sends_its_assignment(receiver: Receiver) -> None:
    with make(receiver) as notifier:
        notifier.ready()
        notifier.status("probing /dev/ttyUSB0")
        notifier.watchdog()
        notifier.stopping()
        notifier.notify(EXTEND_TIMEOUT_USEC=5_000_000)
        got = [receiver.recv() for _ in range(5)]
    assert got == [
        b"READY=1",
        b"STATUS=probing /dev/ttyUSB0",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"EXTEND_TIMEOUT_USEC=5000000",
    ]


def test_status_newlines_cannot_forge_assignments(path_receiver: Receiver) -> None:
    with make(path_receiver) as notifier:
        notifier.status("printer says:\nREADY=1\r\nWATCHDOG=1\n")
    assert path_receiver.recv() == b"STATUS=printer says: READY=1 WATCHDOG=1"


def test_status_is_utf8(path_receiver: Receiver) -> None:
    with make(path_receiver) as notifier:
        notifier.status("Düse 215 °C")
    assert path_receiver.recv() == "STATUS=Düse 215 °C".encode()


def test_invalid_field_name_is_a_programming_error(path_receiver: Receiver) -> None:
    with make(path_receiver) as notifier, pytest.raises(ValueError):
        notifier.notify(**{"READY=1\nX": 1})


def test_disabled_when_notify_socket_unset() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None
    notifier.close()


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234", "@"])
def test_unusable_notify_socket_disables(value: str) -> None:
    assert not Notifier.from_environment({"NOTIFY_SOCKET": value}).enabled


def test_missing_socket_path_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    with caplog.at_level(logging.DEBUG, logger="hydrogen.sdnotify"):
        assert notifier.ready("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1, "a failing socket is logged once, not on every ping"
    assert failures[0].levelno == logging.DEBUG
    notifier.close()


def test_socket_vanishing_midway_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(path)})
    assert notifier.ready() is True
    sock.close()
    path.unlink()
    assert notifier.watchdog() is False
    notifier.close()


def test_close_is_idempotent_and_silences(path_receiver: Receiver) -> None:
    notifier = make(path_receiver)
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert path_receiver.pending() == []


def test_socket_is_close_on_exec(path_receiver: Receiver) -> None:
    with make(path_receiver) as notifier:
        notifier.watchdog()
        assert notifier._sock is not None
        assert not os.get_inheritable(notifier._sock.fileno())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(
    path_receiver: Receiver, env: dict[str, str], expected: float | None
) -> None:
    with make(path_receiver, **env) as notifier:
        assert notifier.watchdog_interval() == expected


def test_watchdog_interval_none_without_socket() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval() is None


async def test_watchdog_loop_pings_repeatedly(path_receiver: Receiver) -> None:
    with make(path_receiver) as notifier:
        task = asyncio.create_task(watchdog_loop(notifier, 0.01))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    got = path_receiver.pending()
    assert len(got) >= 3
    assert set(got) == {b"WATCHDOG=1"}


async def test_watchdog_loop_withholds_pings_while_unhealthy(path_receiver: Receiver) -> None:
    state = {"healthy": False, "checks": 0}

    def health() -> bool:
        state["checks"] += 1
        return bool(state["healthy"])

    with make(path_receiver) as notifier:
        task = asyncio.create_task(watchdog_loop(notifier, 0.01, health))
        await asyncio.sleep(0.1)
        assert state["checks"] >= 3
        assert path_receiver.pending() == []
        state["healthy"] = True
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(path_receiver.pending()) >= 3


async def test_watchdog_loop_treats_raising_health_as_unhealthy(path_receiver: Receiver) -> None:
    def health() -> bool:
        raise RuntimeError("printer table locked")

    with make(path_receiver) as notifier:
        task = asyncio.create_task(watchdog_loop(notifier, 0.01, health))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert path_receiver.pending() == []


async def test_watchdog_loop_stops_when_the_event_loop_stalls(path_receiver: Receiver) -> None:
    """The point of pinging from the loop: a blocked loop sends nothing."""
    import time

    with make(path_receiver) as notifier:
        task = asyncio.create_task(watchdog_loop(notifier, 0.01))
        await asyncio.sleep(0.05)
        path_receiver.pending()
        time.sleep(0.2)  # noqa: ASYNC251 - deliberately blocks the event loop
        assert path_receiver.pending() == []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_returns_when_disabled() -> None:
    await asyncio.wait_for(watchdog_loop(Notifier.from_environment({}), 0.01), timeout=1)


async def test_watchdog_loop_rejects_nonpositive_interval(path_receiver: Receiver) -> None:
    with make(path_receiver) as notifier, pytest.raises(ValueError):
        await watchdog_loop(notifier, 0)
