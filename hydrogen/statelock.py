"""One gateway per state dir: an exclusive ``flock`` on ``STATE_DIR/lock``.

Two gateways on one state dir would share the job history (the second one's crash
recovery marks the first one's running print failed) and the simulator's pty link.
The lock is taken before anything else in the state dir is opened, so a second
``hydrogen serve`` gives up having touched nothing.

``flock`` rather than a pid file: the kernel drops the lock when the holder dies,
even by SIGKILL or a power cut, so a stale file never keeps a restarted gateway
out. The holder's pid is written into the file only to name it in the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_NAME", "StateDirBusy", "StateLock"]

LOCK_NAME = "lock"


class StateDirBusy(Exception):
    """Another live process holds the state dir's lock."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f"another Hydrogen (pid {pid})" if pid else "another Hydrogen"
        super().__init__(f"{who} uses {state_dir}")


class StateLock:
    """The held lock; released by :meth:`release`, by leaving ``with``, or by dying."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Create the state dir if needed and lock it, without waiting.

        Raises :class:`StateDirBusy` when another process holds it, ``OSError`` when
        the directory or the lock file cannot be created.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        # No O_TRUNC: the file may be the holder's, whose pid we want to read back.
        # O_NOFOLLOW: a symlink planted as the lock file must not make us write elsewhere.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirBusy(state_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid is a courtesy; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(state_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the state dir up. The file stays: unlinking it would race a newcomer
        that has opened it but not yet locked it (it would lock a deleted file)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> StateLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The holder's pid, or None if it has not written it yet (or wrote rubbish)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None
