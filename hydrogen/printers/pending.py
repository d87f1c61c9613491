"""`PendingLine`: the one handle for a line handed to a printer's protocol, whoever
sent it (a command, a job, the temperature poll).

The protocol carries it as the line's tag and hands it back exactly once: on the
line's ``ok`` (`acknowledged`) or when the line is dropped (`failed`), or the sender
takes it back before it was written (`withdrawn`). Its future resolves with the
``ok``'s response lines, or fails with `CommandFailed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hydrogen.printers.state import CommandFailed


class PendingLine:
    __slots__ = ("future", "line", "on_done")

    def __init__(self, line: str, on_done: Callable[[], None] | None = None) -> None:
        """``on_done`` runs at once when the line is settled, however (the poll uses it
        to send the next M105 only when the last one is answered)."""
        self.line = line
        self.future: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()
        # A failure nobody awaits (a command whose caller left) is not an error to log.
        self.future.add_done_callback(_consume_exception)
        self.on_done = on_done

    def acknowledged(self, response: tuple[str, ...]) -> None:
        """Its ``ok`` arrived, with these response lines."""
        if not self.future.done():
            self.future.set_result(response)
        self._settled()

    def failed(self, reason: str) -> None:
        """It was dropped (halt, reset, lost link, emergency stop): no ``ok`` will come."""
        if not self.future.done():
            self.future.set_exception(CommandFailed(reason))
        self._settled()

    def withdrawn(self) -> None:
        """Taken back before it was written (a cancelled or paused job's read-ahead)."""
        if not self.future.done():
            self.future.set_result(())
        self._settled()

    def _settled(self) -> None:
        if self.on_done is not None:
            self.on_done()

    def __repr__(self) -> str:
        return f"PendingLine({self.line!r}, done={self.future.done()})"


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
