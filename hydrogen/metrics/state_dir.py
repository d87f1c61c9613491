"""Which of the host's filesystems holds the gateway's state directory (uploads, the
job history, keys): the one alert that matters most on a small SD card is that *this*
filesystem is filling up, whatever else is mounted.

A filesystem is told by its device number (``st_dev``), so a state dir reached through
a bind mount or a symlink is matched with the mount point the host metrics report for
that filesystem. Each path is looked at once and remembered: a scrape does no I/O after
the first (mounts do not move under a running gateway; a new mount point is looked at
when it first appears).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["StateDirFilesystem"]


class StateDirFilesystem:
    def __init__(self, state_dir: Path, *, stat: Callable[[str], os.stat_result] = os.stat) -> None:
        self._state_dir = state_dir
        self._stat = stat
        self._device: int | None = None
        self._devices: dict[str, int | None] = {}

    def mountpoint(self, mountpoints: Iterable[str]) -> str | None:
        """The first of ``mountpoints`` on the state dir's filesystem, or None (the
        state dir is missing, or on a filesystem the host metrics leave out, a tmpfs)."""
        if self._device is None:
            self._device = self._device_of(str(self._state_dir))
            if self._device is None:
                return None  # not created yet: looked at again next time
        for mountpoint in mountpoints:
            if mountpoint not in self._devices:
                self._devices[mountpoint] = self._device_of(mountpoint)
            if self._devices[mountpoint] == self._device:
                return mountpoint
        return None

    def _device_of(self, path: str) -> int | None:
        try:
            return int(self._stat(path).st_dev)
        except OSError:
            return None
