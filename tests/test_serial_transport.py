"""The serial transport under the printer link, over a real pseudo-terminal.

``open_serial`` writes a line to the port at once instead of on the next turn of
the event loop (what makes job streaming keep up with the firmware); these tests
pin that down, and that nothing is lost or reordered when the port is full.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Iterator

import pytest

from hydrogen.config import PrinterConfig
from hydrogen.printers.printer import open_serial


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
    _reader, writer = await open_serial(PrinterConfig(name="p", device=path))
    try:
        writer.write(b"N1 M105*39\n")
        # No await in between: the stock pyserial-asyncio transport would still hold it.
        assert _read_available(master) == b"N1 M105*39\n"
        assert writer.transport.get_write_buffer_size() == 0
    finally:
        writer.close()


async def test_a_full_port_keeps_every_byte_in_order(pty_pair):
    master, path = pty_pair
    _reader, writer = await open_serial(PrinterConfig(name="p", device=path))
    lines = [f"N{n} G1 X{n % 200} Y{n % 150} E{n * 0.01:.2f}\n".encode() for n in range(4000)]
    expected = b"".join(lines)
    try:
        for line in lines:  # far more than a pty holds: most of it must be buffered
            writer.write(line)
        assert writer.transport.get_write_buffer_size() > 0
        received = bytearray()
        async with asyncio.timeout(20):
            while len(received) < len(expected):
                received += _read_available(master)
                await asyncio.sleep(0.001)
        assert bytes(received) == expected
        await writer.drain()
        assert writer.transport.get_write_buffer_size() == 0
    finally:
        writer.close()


async def test_reads_still_arrive(pty_pair):
    master, path = pty_pair
    reader, writer = await open_serial(PrinterConfig(name="p", device=path))
    try:
        os.write(master, b"ok T:20.0 /0.0\n")
        async with asyncio.timeout(5):
            assert await reader.readline() == b"ok T:20.0 /0.0\n"
    finally:
        writer.close()


async def test_a_missing_device_raises_a_serial_error():
    import serial

    with pytest.raises(serial.SerialException):
        await open_serial(PrinterConfig(name="p", device="/dev/does-not-exist-hydrogen"))
