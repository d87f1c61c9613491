"""The serial transport under the printer link, over a real pseudo-terminal.

``open_serial`` writes a line to the port at once instead of on the next turn of
the event loop (what makes job streaming keep up with the firmware); these tests
pin that down, and that nothing is lost or reordered when the port is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import Iterator

import pytest
import serial

from hydrogen.config import PrinterConfig
from hydrogen.printers.printer import open_serial


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def open_port(path: str) -> tuple[asyncio.WriteTransport, Recorder]:
    recorder = Recorder()
    return await open_serial(PrinterConfig(name="p", device=path), recorder), recorder


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        os.close(master)
        os.close(slave)


def _read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_write_reaches_the_port_before_the_loop_turns(pty_pair):
    master, path = pty_pair
    transport, _ = await open_port(path)
    try:
        transport.write(b"N1 M105*39\n")
        # No await in between: the stock pyserial-asyncio transport would still hold it.
        assert _read_available(master) == b"N1 M105*39\n"
        assert transport.get_write_buffer_size() == 0
    finally:
        transport.close()


async def test_a_full_port_keeps_every_byte_in_order(pty_pair):
    master, path = pty_pair
    transport, _ = await open_port(path)
    lines = [f"N{n} G1 X{n % 200} Y{n % 150} E{n * 0.01:.2f}\n".encode() for n in range(4000)]
    expected = b"".join(lines)
    try:
        for line in lines:  # far more than a pty holds: most of it must be buffered
            transport.write(line)
        assert transport.get_write_buffer_size() > 0
        received = bytearray()
        async with asyncio.timeout(20):
            while len(received) < len(expected):
                received += _read_available(master)
                await asyncio.sleep(0.001)
        assert bytes(received) == expected
        assert transport.get_write_buffer_size() == 0
    finally:
        transport.close()


async def test_reads_arrive_and_a_hangup_is_reported():
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    try:
        transport, recorder = await open_port(os.ttyname(slave))
        os.write(master, b"ok T:20.0 /0.0\n")
        async with asyncio.timeout(5):
            while bytes(recorder.data) != b"ok T:20.0 /0.0\n":
                await asyncio.sleep(0.005)
    finally:
        os.close(master)  # the far end goes away, as when a USB cable is pulled
        os.close(slave)
    async with asyncio.timeout(5):
        await recorder.lost  # the transport says the link is gone
    assert transport.is_closing()


async def test_a_wake_up_with_nothing_to_read_is_not_an_unplug(pty_pair):
    """pyserial sets VMIN=0, so a read of a tty with nothing in it returns no bytes
    instead of EAGAIN: after a spurious wake-up, or when another program opened the
    port too and read first. That is not a hang-up (a soak run lost its printer every
    few seconds to it); only a tty that is really gone ends the link."""
    master, path = pty_pair
    transport, recorder = await open_port(path)
    try:
        for _ in range(5):
            transport._read_ready()  # what the loop calls on a spurious wake-up
        os.write(master, b"ok\n")
        async with asyncio.timeout(5):
            while bytes(recorder.data) != b"ok\n":
                await asyncio.sleep(0.005)
        assert not recorder.lost.done() and not transport.is_closing()
    finally:
        transport.close()


async def test_a_port_in_use_cannot_be_opened_twice(pty_pair):
    """Two readers of one port each get part of what the firmware says (a gateway
    left running once took every other line from a new one): the port is locked."""
    _, path = pty_pair
    transport, _ = await open_port(path)
    try:
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            await open_port(path)
    finally:
        transport.close()
    await asyncio.sleep(0)
    second, _ = await open_port(path)  # free again once the first is closed
    second.close()


async def test_a_missing_device_raises_a_serial_error():
    with pytest.raises(serial.SerialException):
        await open_port("/dev/does-not-exist-hydrogen")


async def test_a_network_serial_url_keeps_pyserials_own_reading():
    """``socket://host:port`` (ser2net and the like) goes through pyserial's URL
    handler, not the direct descriptor read; both directions still work."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    accepted = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(
        lambda r, w: accepted.set_result((r, w)), host="127.0.0.1", port=0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        transport, recorder = await open_port(f"socket://127.0.0.1:{port}")
        async with asyncio.timeout(5):
            far_reader, far_writer = await accepted
            transport.write(b"N1 M115*39\n")
            assert await far_reader.readline() == b"N1 M115*39\n"
            far_writer.write(b"ok\n")
            await far_writer.drain()
            while bytes(recorder.data) != b"ok\n":
                await asyncio.sleep(0.005)
        transport.close()
        far_writer.close()
    finally:
        server.close()
        await server.wait_closed()


def _fill_kernel_queue(fd: int) -> None:
    """Write until the pty's queue stays full, as a printer that stopped reading leaves it."""
    fails = 0
    while fails < 20:  # the pty moves data along in the background: fill until it stays full
        try:
            os.write(fd, b"x" * 64)
            fails = 0
        except BlockingIOError:
            fails += 1
            time.sleep(0.005)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(fd, b"x")


async def test_a_write_into_a_full_port_never_blocks_the_loop(pty_pair):
    master, path = pty_pair
    transport, _ = await open_port(path)
    try:
        _fill_kernel_queue(transport.get_extra_info("serial").fileno())
        assert transport.get_write_buffer_size() == 0
        started = time.monotonic()
        transport.write(b"N1 M105*39\n")  # must be buffered, not retried in a busy loop
        assert time.monotonic() - started < 0.5
        assert transport.get_write_buffer_size() == len(b"N1 M105*39\n")
        received = bytearray()
        async with asyncio.timeout(10):  # the device reads again: the line follows
            while not received.endswith(b"N1 M105*39\n"):
                received += _read_available(master)
                await asyncio.sleep(0.005)
    finally:
        transport.abort()


async def test_an_unplug_with_lines_still_buffered_is_reported_without_a_traceback():
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    transport, recorder = await open_port(os.ttyname(slave))
    for n in range(4000):  # the device stopped reading: the rest waits in the transport
        transport.write(f"N{n} G1 X{n % 200} Y{n % 150}\n".encode())
    assert transport.get_write_buffer_size() > 0
    os.close(master)  # the USB cable is pulled
    os.close(slave)
    async with asyncio.timeout(5):
        error = await recorder.lost
    assert isinstance(error, serial.SerialException)  # the device error, not a clean close
    assert reported == []  # nothing for the loop's exception handler to log
