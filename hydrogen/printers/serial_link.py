"""The serial port under a printer: pyserial-asyncio's transport made to write at
once, the locked open, and the protocol that hands each read to the printer.

Apart from :mod:`hydrogen.printers.printer` because it is about file descriptors and
ttys (what an unplug, a second reader or a full port look like), not about printers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
from collections.abc import Callable

import serial
import serial_asyncio

from hydrogen.config import PrinterConfig

log = logging.getLogger(__name__)


class EagerSerialTransport(serial_asyncio.SerialTransport):
    """pyserial-asyncio's transport, writing at once when nothing is waiting to go.

    The stock ``write()`` only registers a writer callback, so every line waits for
    the next turn of the event loop (a ``select()``) before it leaves. Under ``ok``
    flow control with one line in flight that wait sits on the critical path of
    every line: ``bench/serial.py`` measured job streaming at 0.66-0.70x of a bare
    pyserial loop because of it. Here a write into an empty buffer goes straight to
    the port (opened non-blocking by the transport); only what the port does not
    take now is left to the stock buffered path, so ordering and back-pressure are
    unchanged.

    Only a plain local port (``/dev/tty...``) takes the fast paths, on its
    descriptor: ``os.write`` (pyserial's own ``write()`` retries ``EAGAIN`` in a busy
    loop, which would freeze the event loop while a stalled port is full) and
    ``os.read`` (pyserial's ``read()`` would ``select()`` again what the event loop
    just reported readable). Other pyserial URL handlers (``rfc2217://``,
    ``socket://``) keep the stock paths, which they need. A read or write error
    aborts the transport at once: the device is gone, nothing is worth flushing,
    and the error (not a clean close) reaches the protocol.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, port: serial.Serial
    ) -> None:
        super().__init__(loop, protocol, port)
        self._fd: int | None = port.fileno() if type(port) is serial.Serial else None
        self._empty_reads = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None or self._closing or self.get_write_buffer_size():
            super().write(data)
            return
        try:
            written = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            # An unplugged printer is normal life: no traceback, the link reports why.
            self._abort(serial.SerialException(f"write failed: {exc}"))
            return
        if written < len(data):
            super().write(bytes(data[written:]))

    def _fatal_error(self, exc: BaseException, message: str = "") -> None:
        """The stock buffered write path reports a vanished device to the loop's
        exception handler (a logged traceback); for a printer that is normal life."""
        if isinstance(exc, serial.SerialException | OSError):
            self._abort(exc)
        else:
            super()._fatal_error(exc, message)

    def _read_ready(self) -> None:
        if self._fd is None:
            super()._read_ready()
            return
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._abort(serial.SerialException(f"read failed: {exc}"))
            return
        if data:
            self._empty_reads = 0
            self._protocol.data_received(data)
            return
        # pyserial sets VMIN=0, so "nothing to read now" is also a read of 0 bytes:
        # after a spurious wake-up, or when another program has the port open and
        # read first. Only a tty that is really gone (hung up: tcgetattr fails) is an
        # unplug; a run of empty reads that never ends is treated as one too.
        self._empty_reads += 1
        if self._empty_reads > _MAX_EMPTY_READS or _tty_gone(self._fd):
            self._abort(serial.SerialException("device disconnected (read returned no data)"))
        elif self._empty_reads == _EMPTY_READS_WARNING:
            log.warning(
                "%s: reads come back empty: is another program reading this port too?",
                self._serial.port,
            )


#: Empty reads in a row after which a port that still answers tcgetattr counts as gone.
_MAX_EMPTY_READS = 1000
#: ... and after which the log says that something else may be reading the port.
_EMPTY_READS_WARNING = 3


def _tty_gone(fd: int) -> bool:
    """A hung-up tty (USB unplugged, pty master closed) fails every ioctl with EIO."""
    try:
        termios.tcgetattr(fd)
    except (termios.error, OSError):
        return True
    return False


async def open_serial(config: PrinterConfig, protocol: asyncio.Protocol) -> asyncio.WriteTransport:
    """Open the port with the eager transport above, feeding ``protocol``.

    A local port is locked (pyserial's ``exclusive``: flock), so a second Hydrogen or
    any other program that locks its ports cannot open it too; two readers of one
    port each get part of what the firmware says, and neither can print."""
    local = "://" not in config.device
    port = serial.serial_for_url(config.device, baudrate=config.baud, exclusive=local or None)
    try:
        return EagerSerialTransport(asyncio.get_running_loop(), protocol, port)
    except BaseException:
        port.close()
        raise


class LinkProtocol(asyncio.Protocol):
    """Hands the port's bytes to the printer as the transport reads them.

    A callback rather than a StreamReader and a reading task: the bytes that carry
    an ``ok`` are processed, and the next line written, in the same turn of the
    event loop that read them, instead of one turn later when the task wakes.
    """

    def __init__(
        self, on_data: Callable[[bytes], None], on_lost: Callable[[Exception | None], None]
    ) -> None:
        self._on_data = on_data
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)
