"""The simulator's end of the wire: a pty pair (the slave kept raw and open), the
symlinked link path swapped atomically, non-blocking reads with Marlin's emergency
parser run on them at once, and writes bounded like a UART's buffer."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import tty
from collections import deque

from hydrogen.simulator.faults import Faults, drops_ok
from hydrogen.simulator.model import (
    _EMERGENCY,
    _EOL,
    _MAX_PENDING_RX,
    _MAX_PENDING_TX,
    _State,
)

log = logging.getLogger("hydrogen.simulator")


class PtyPort:
    """The pty plumbing of ``SimulatedPrinter`` (which sets every attribute below)."""

    link: str | None
    faults: Faults
    transcript: deque[tuple[str, str]]
    dropped_oks: int
    dropped_output_bytes: int
    _fault_rng: random.Random
    _state: _State
    _loop: asyncio.AbstractEventLoop | None
    _master: int | None
    _slave: int | None
    _slave_path: str | None
    _reading: bool
    _writing: bool
    _rx: bytearray
    _rx_event: asyncio.Event
    _ep_line: bytearray
    _tx: bytearray
    _wait_for_heatup: bool
    _firmware_task: asyncio.Task[None] | None
    _autoreport_task: asyncio.Task[None] | None
    _position_task: asyncio.Task[None] | None

    def _kill(self) -> None:
        raise NotImplementedError  # the firmware's kill(), see Firmware

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        try:
            # Raw: no echo, no CR/NL translation, byte-for-byte like a USB CDC port.
            tty.setraw(slave)
            os.set_blocking(master, False)
            slave_path = os.ttyname(slave)
            if self.link is not None:
                tmp = f"{self.link}.{os.getpid()}.{id(self)}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                os.symlink(slave_path, tmp)
                os.replace(tmp, self.link)  # atomic: a client never sees a missing link
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # We keep the slave open so the master never reads EIO while the client
        # closes and reopens the port.
        self._master, self._slave, self._slave_path = master, slave, slave_path
        self._rx.clear()
        self._tx.clear()
        self._ep_line.clear()
        assert self._loop is not None
        self._loop.add_reader(master, self._on_readable)
        self._reading = True

    def _close_pty(self) -> None:
        loop, master = self._loop, self._master
        if master is None or loop is None:
            return
        if self._reading:
            loop.remove_reader(master)
            self._reading = False
        if self._writing:
            loop.remove_writer(master)
            self._writing = False
        if self.link is not None and self._slave_path is not None:
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self._slave_path:
                    os.unlink(self.link)  # the device node vanishes
        os.close(master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = self._slave_path = None
        self._rx.clear()
        self._tx.clear()

    async def _shutdown(self) -> None:
        tasks = self._cancel_tasks()
        self._state = _State.OFF
        self._close_pty()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _cancel_tasks(self) -> list[asyncio.Task[None]]:
        running = (self._firmware_task, self._autoreport_task, self._position_task)
        tasks = [t for t in running if t is not None]
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        self._firmware_task = self._autoreport_task = self._position_task = None
        return [t for t in tasks if t is not current]

    def _on_readable(self) -> None:
        """Read whatever the host sent; run the emergency parser on it at once."""
        if self._master is None:
            return
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open; cannot happen while we hold it
                return
            raise
        if not data or self.faults.silent or self._state is not _State.RUNNING:
            return  # a hung firmware, the bootloader or a killed board: input is lost
        self._emergency_parse(data)
        if self._state is not _State.RUNNING:
            return
        self._rx += data
        self._rx_event.set()
        if len(self._rx) > _MAX_PENDING_RX and self._reading:
            assert self._loop is not None
            self._loop.remove_reader(self._master)
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._master is not None and self._loop is not None:
            self._loop.add_reader(self._master, self._on_readable)
            self._reading = True

    def _emergency_parse(self, data: bytes) -> None:
        """EMERGENCY_PARSER: M108/M112/M410 act when their line ends, before the queue."""
        start = 0
        for m in _EOL.finditer(data):
            self._ep_line += data[start : m.start()]
            start = m.end()
            line = bytes(self._ep_line)
            self._ep_line.clear()
            hit = _EMERGENCY.match(line)
            if hit is None:
                continue
            code = hit.group(1)
            if code == b"112":
                self.transcript.append(("<", line.decode("utf-8", "replace")))
                self._kill()
                return
            if code == b"108":
                self._wait_for_heatup = False
        self._ep_line += data[start:]
        if len(self._ep_line) > 256:  # runaway line without EOL: keep the parser bounded
            del self._ep_line[:-16]

    def _emit(self, line: str) -> None:
        """Write one ``\\n``-terminated response line, honouring the faults."""
        if self._master is None or self.faults.silent:
            return
        if line.startswith("ok") and drops_ok(self.faults, self._fault_rng):
            self.dropped_oks += 1
            return
        data = (line + "\n").encode("utf-8", "surrogateescape")
        if len(self._tx) + len(data) > _MAX_PENDING_TX:
            self.dropped_output_bytes += len(data)
            return
        self.transcript.append((">", line))
        self._tx += data
        self._flush_tx()

    def _flush_tx(self) -> None:
        while self._tx and self._master is not None:
            try:
                written = os.write(self._master, self._tx)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("simulator write failed: %s", exc)
                self._tx.clear()
                break
            del self._tx[:written]
        loop, master = self._loop, self._master
        if loop is None or master is None:
            return
        if self._tx and not self._writing:
            loop.add_writer(master, self._flush_tx)
            self._writing = True
        elif not self._tx and self._writing:
            loop.remove_writer(master)
            self._writing = False
