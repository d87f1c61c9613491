"""Fault injection: the switches tests flip (read on every line) and the seeded draws
that decide, from them, which line arrives corrupted and which ``ok`` is lost."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Faults:
    """Fault injection, read on every received line, so tests may change it live."""

    corrupt_ratio: float = 0.0
    """Fraction of numbered lines treated as corrupted in transit (checksum mismatch)."""
    corrupt_run_limit: int | None = None
    """Never corrupt one line number more than this many times in a row (None: no
    limit). Random noise can reject a line past the host's resend limit, which rightly
    ends the link; a test of recovery sets this to stay below it."""
    drop_next_ok: int = 0
    """Swallow the next k lines that start with ``ok`` (the commands still run)."""
    drop_ok_ratio: float = 0.0
    """Fraction of ``ok`` lines lost on the way to the host, drawn from the seeded fault
    stream (the commands still run): line noise, as a flaky cable does it."""
    silent: bool = False
    """A hung firmware: input is read and discarded, nothing is written. See also
    `SimulatedPrinter.silence` for a hang that ends by itself."""


def corrupts(
    faults: Faults, rng: random.Random, run: tuple[int, int], number: int
) -> tuple[bool, tuple[int, int]]:
    """Whether line ``number`` arrives corrupted, and the new ``(line number, times
    corrupted in a row)`` run."""
    if faults.corrupt_ratio <= 0 or rng.random() >= faults.corrupt_ratio:
        return False, (number, 0)
    count = run[1] + 1 if run[0] == number else 1
    if faults.corrupt_run_limit is not None and count > faults.corrupt_run_limit:
        return False, (number, 0)
    return True, (number, count)


def drops_ok(faults: Faults, rng: random.Random) -> bool:
    """Whether the ``ok`` about to be written is lost (one of ``drop_next_ok`` is used up)."""
    if faults.drop_next_ok > 0 or (
        faults.drop_ok_ratio > 0 and rng.random() < faults.drop_ok_ratio
    ):
        faults.drop_next_ok = max(0, faults.drop_next_ok - 1)
        return True
    return False
