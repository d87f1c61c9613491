"""The state dir lock between real processes: one holder, named by pid, gone with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hydrogen.statelock import LOCK_NAME, StateDirBusy, StateLock

HOLD = """
import sys, pathlib
from hydrogen.statelock import StateLock
lock = StateLock.acquire(pathlib.Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()  # hold until the test closes stdin or kills us
"""


def _holder(state: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    state = tmp_path / "new" / "state"
    holder = _holder(state)  # creates the directory too
    try:
        with pytest.raises(StateDirBusy) as info:
            StateLock.acquire(state)
        assert info.value.pid == holder.pid
        assert str(info.value) == f"another Hydrogen (pid {holder.pid}) uses {state}"
    finally:
        holder.kill()
        holder.wait(10)


def test_sigkill_releases_the_lock(tmp_path):
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert (tmp_path / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock
    with StateLock.acquire(tmp_path) as lock:
        assert lock.held
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_release_lets_the_next_one_in_and_is_idempotent(tmp_path):
    first = StateLock.acquire(tmp_path)
    with pytest.raises(StateDirBusy) as info:
        StateLock.acquire(tmp_path)  # flock: a second open file is refused in-process too
    assert info.value.pid == os.getpid()
    first.release()
    first.release()
    assert not first.held
    with StateLock.acquire(tmp_path):
        pass


def test_a_holder_that_has_not_written_its_pid_yet_is_still_named(tmp_path):
    lock = StateLock.acquire(tmp_path)
    try:
        os.truncate(tmp_path / LOCK_NAME, 0)
        with pytest.raises(StateDirBusy, match=r"^another Hydrogen uses "):
            StateLock.acquire(tmp_path)
    finally:
        lock.release()


def test_a_symlink_planted_as_the_lock_file_is_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / LOCK_NAME).symlink_to(target)
    with pytest.raises(OSError):
        StateLock.acquire(state)
    assert target.read_text() == "keep me\n"
