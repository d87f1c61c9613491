"""Host sampling: one immutable snapshot of the machine Hydrogen runs on.

Two consumers want host data: the WebSocket status frames (once a second)
and Prometheus scrapes (whenever a scraper calls).  Sampling for each of
them would double the cost and, worse, make the two disagree, so a single
:class:`HostSampler` takes a :class:`HostSnapshot` and both read
``sampler.latest``.  A scrape therefore never touches psutil or ``/proc``.

psutil and the procfs/sysfs readers (:mod:`hydrogen.host_linux`,
:mod:`hydrogen.host_rpi`) use blocking syscalls; ``statvfs`` on a stale
network mount can block for a long time.  :meth:`HostSampler.sample` runs all
of it in a worker thread so the event loop (and the printer serial link it
drives) never stalls on host statistics.  Everything Linux-specific is read
below the sampler's ``root`` (``/``; a fake tree in the tests).

Sampling never raises: a host metric is never worth taking the gateway
down.  Each call that fails degrades to an absent (``None``) or empty field
and is logged once at debug level, because on some platforms a call fails on
*every* sample and the log would otherwise fill up.

The snapshot's records live in :mod:`hydrogen.host_snapshot` and are
re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from hydrogen import host_linux, host_rpi
from hydrogen.host_snapshot import (
    CPU_MODES,
    CpuTimes,
    DiskCounters,
    FanReading,
    FilesystemUsage,
    HostSnapshot,
    MemoryUsage,
    NetworkCounters,
    PressureTotals,
    ProcessUsage,
    SwapUsage,
    SystemInfo,
    TemperatureReading,
    TimexStatus,
    clean_text,
)

__all__ = [
    "CPU_MODES",
    "CpuTimes",
    "DiskCounters",
    "FanReading",
    "FilesystemUsage",
    "HostSampler",
    "HostSnapshot",
    "MemoryUsage",
    "NetworkCounters",
    "PressureTotals",
    "ProcessUsage",
    "SwapUsage",
    "SystemInfo",
    "TemperatureReading",
    "TimexStatus",
    "clean_text",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Called on the event loop with every new snapshot (see :meth:`HostSampler.add_listener`).
SnapshotListener = Callable[[HostSnapshot], None]


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SlowParts:
    """The expensive part of a sample, reused until ``slow_interval`` elapses."""

    filesystems: tuple[FilesystemUsage, ...]
    temperatures: tuple[TemperatureReading, ...]
    fans: tuple[FanReading, ...]
    sampled_at: float
    monotonic: float
    os_release: tuple[tuple[str, str], ...] = ()
    domainname: str = ""
    vcgencmd_throttled: int | None = None


def _cpu_busy_total(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds from a psutil ``scputimes``, as psutil computes them.

    Mirrors psutil's private ``_cpu_busy_time``/``_cpu_tot_time`` so the
    percentages equal ``psutil.cpu_percent(interval=None)``: guest time is
    already inside user/nice on Linux and iowait is idle time.
    """
    total = sum(times)
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return busy, total


def _cpu_percent(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Busy share of the CPU time elapsed between two readings, 0..100.

    Same rules as psutil: a non-positive interval (counters did not move, or
    went backwards after a suspend) yields 0.0, and the result is clamped
    because per-CPU counters are not updated atomically.
    """
    busy = after[0] - before[0]
    total = after[1] - before[1]
    if total <= 0.0:
        return 0.0
    return min(max(100.0 * busy / total, 0.0), 100.0)


class HostSampler:
    """Takes :class:`HostSnapshot`s; keeps the latest for readers.

    CPU percentages are deltas between consecutive samples with psutil's
    ``interval=None`` semantics, but computed here from ``cpu_times`` rather
    than by ``psutil.cpu_percent``: that function keeps its "previous" reading
    in module-global state, so any other caller in the process would silently
    shorten our window.  The very first sample measures against boot (the
    counters' zero), i.e. it reports the average since boot instead of
    psutil's meaningless first 0.0.

    Filesystems and sensors change slowly but are the expensive calls (a
    ``statvfs`` per mount, a ``/sys/class/hwmon`` walk), so they are only
    refreshed when older than ``slow_interval`` seconds and the previous
    tuples are reused - by identity - in between.

    ``root``, ``statvfs``, ``adjtimex`` and ``vcgencmd`` are where the Linux
    readings come from; tests give a fake tree and fakes.
    """

    def __init__(
        self,
        *,
        slow_interval: float = 10.0,
        root: Path | str = "/",
        statvfs: Callable[[str], Any] = os.statvfs,
        adjtimex: Callable[[], TimexStatus | None] = host_linux.adjtimex,
        vcgencmd: Callable[[], int | None] = host_rpi.run_vcgencmd,
    ) -> None:
        self._slow_interval = slow_interval
        self._root = Path(root)
        self._statvfs = statvfs
        self._adjtimex = adjtimex
        self._vcgencmd = vcgencmd
        self._listeners: list[SnapshotListener] = []
        self._latest: HostSnapshot | None = None
        self._slow: _SlowParts | None = None
        self._slow_refreshes = 0
        self._cpu_prev: tuple[float, float] = (0.0, 0.0)
        self._per_core_prev: list[tuple[float, float]] = []
        self._proc: psutil.Process | None = None
        self._proc_prev: tuple[float, float] | None = None  # (cpu seconds, monotonic)
        self._failed: set[str] = set()
        # Serialises worker threads: two overlapping sample() calls would
        # otherwise race on the CPU baselines and the slow-part cache.
        self._lock = threading.Lock()

    @property
    def latest(self) -> HostSnapshot | None:
        """The most recent snapshot, or ``None`` before the first :meth:`sample`."""
        return self._latest

    def add_listener(self, listener: SnapshotListener) -> None:
        """Call ``listener(snapshot)`` on the event loop after every sample (a watcher
        such as the under-voltage notification); one that raises is logged and kept."""
        self._listeners.append(listener)

    @property
    def slow_interval(self) -> float:
        """Seconds for which filesystems and sensors are reused."""
        return self._slow_interval

    @property
    def slow_refreshes(self) -> int:
        """How many times the slow parts were re-read (for tests and diagnostics)."""
        return self._slow_refreshes

    async def sample(self) -> HostSnapshot:
        """Take a snapshot in a worker thread, store it as :attr:`latest`, return it.

        Never raises (cancellation excepted): if even the thread hand-off
        fails, e.g. while the default executor shuts down, a snapshot with
        only the clock and ``uname`` is returned instead.
        """
        try:
            snapshot = await asyncio.to_thread(self._sample_blocking)
        except Exception:
            self._note_failure("sample", "thread")
            snapshot = HostSnapshot(taken_at=time.time(), system=self._uname())
        self._latest = snapshot
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:
                _log.exception("host snapshot listener %r failed", listener)
        return snapshot

    # -- worker-thread side -------------------------------------------------

    def _note_failure(self, part: str, what: str) -> None:
        """Log a failing part once: it usually fails on every sample."""
        if part not in self._failed:
            self._failed.add(part)
            _log.debug("host sampling: %s unavailable (%s)", part, what, exc_info=True)

    def _try(self, part: str, call: Callable[[], _T]) -> _T | None:
        """Run one psutil call, degrading any failure to ``None``."""
        try:
            return call()
        except Exception:
            self._note_failure(part, getattr(call, "__name__", repr(call)))
            return None

    def _sample_blocking(self) -> HostSnapshot:
        with self._lock:
            taken_at = time.time()
            start = time.perf_counter()
            now = time.monotonic()

            cpu_percent, per_core = self._cpu()
            count = self._try("cpu_count", psutil.cpu_count)
            if count is None and per_core:
                count = len(per_core)
            load = self._try("load_average", psutil.getloadavg)
            memory = self._try("memory", self._memory)
            swap = self._try("swap", self._swap)
            network = self._try("network", self._network) or ()
            boot = self._try("boot_time", psutil.boot_time)
            process = self._try("process", self._process)
            root = self._root
            cpu_times = self._try("proc/stat", lambda: host_linux.read_cpu_times(root)) or ()
            meminfo = self._try("proc/meminfo", lambda: host_linux.read_meminfo(root)) or ()
            disks = self._try("proc/diskstats", lambda: host_linux.read_diskstats(root)) or ()
            pressure = self._try("proc/pressure", lambda: host_linux.read_pressure(root)) or ()
            timex = self._try("adjtimex", self._adjtimex)
            throttled = self._try("get_throttled", lambda: host_rpi.read_throttled(root))
            slow = self._slow
            if slow is None or now - slow.monotonic >= self._slow_interval:
                slow = self._read_slow(taken_at, now, vcgencmd=throttled is None)
            duration = time.perf_counter() - start

        return HostSnapshot(
            taken_at=taken_at,
            sample_duration_seconds=duration,
            system=self._uname(slow.domainname),
            cpu_percent=cpu_percent,
            cpu_per_core=per_core,
            cpu_count=count,
            load_average=None if load is None else (load[0], load[1], load[2]),
            memory=memory,
            swap=swap,
            filesystems=slow.filesystems,
            network=network,
            temperatures=slow.temperatures,
            fans=slow.fans,
            boot_time=boot,
            uptime_seconds=None if boot is None else max(taken_at - boot, 0.0),
            process=process,
            slow_sampled_at=slow.sampled_at,
            cpu_times=cpu_times,
            meminfo=meminfo,
            disks=disks,
            pressure=pressure,
            os_release=slow.os_release,
            timex=timex,
            rpi_throttled=throttled if throttled is not None else slow.vcgencmd_throttled,
        )

    @staticmethod
    def _uname(domainname: str = "") -> SystemInfo:
        if hasattr(os, "uname"):
            u = os.uname()
            fields = (u.sysname, u.nodename, u.release, u.version, u.machine)
        else:  # Windows
            p = platform.uname()
            fields = (p.system, p.node, p.release, p.version, p.machine)
        sysname, nodename, release, version, machine = (clean_text(f) for f in fields)
        return SystemInfo(
            sysname=sysname,
            nodename=nodename,
            release=release,
            version=version,
            machine=machine,
            domainname=domainname,
        )

    def _cpu(self) -> tuple[float | None, tuple[float, ...]]:
        total = self._try("cpu_times", psutil.cpu_times)
        cpu_percent: float | None = None
        if total is not None:
            reading = _cpu_busy_total(total)
            cpu_percent = _cpu_percent(self._cpu_prev, reading)
            self._cpu_prev = reading
        cores = self._try("cpu_times_per_core", lambda: psutil.cpu_times(percpu=True))
        if not cores:
            return cpu_percent, ()
        readings = [_cpu_busy_total(c) for c in cores]
        prev = self._per_core_prev
        if len(prev) != len(readings):  # first sample, or CPU hot-plug
            prev = [(0.0, 0.0)] * len(readings)
        self._per_core_prev = readings
        return cpu_percent, tuple(_cpu_percent(b, a) for b, a in zip(prev, readings, strict=True))

    @staticmethod
    def _memory() -> MemoryUsage:
        vm = psutil.virtual_memory()
        return MemoryUsage(
            total_bytes=vm.total,
            available_bytes=vm.available,
            used_bytes=vm.used,
            percent=vm.percent,
        )

    @staticmethod
    def _swap() -> SwapUsage:
        sw = psutil.swap_memory()
        return SwapUsage(total_bytes=sw.total, used_bytes=sw.used, percent=sw.percent)

    @staticmethod
    def _network() -> tuple[NetworkCounters, ...]:
        counters = psutil.net_io_counters(pernic=True)
        return tuple(
            NetworkCounters(
                interface=clean_text(name),
                bytes_sent=c.bytes_sent,
                bytes_recv=c.bytes_recv,
                packets_sent=c.packets_sent,
                packets_recv=c.packets_recv,
                errin=c.errin,
                errout=c.errout,
                dropin=c.dropin,
                dropout=c.dropout,
            )
            for name, c in sorted(counters.items())
        )

    def _process(self) -> ProcessUsage:
        if self._proc is None:
            self._proc = psutil.Process()
        proc = self._proc
        now = time.monotonic()
        with proc.oneshot():
            threads = proc.num_threads()
            mem = proc.memory_info()
            times = proc.cpu_times()
            used = times.user + times.system
            if self._proc_prev is None:
                # First sample: average since the process started, for the
                # same reason the host CPU starts from boot.
                wall = max(time.time() - proc.create_time(), 0.0)
                before = 0.0
            else:
                before, last = self._proc_prev
                wall = now - last
        self._proc_prev = (used, now)
        percent = max(100.0 * (used - before) / wall, 0.0) if wall > 0.0 else 0.0
        return ProcessUsage(
            threads=threads,
            vms_bytes=mem.vms,
            rss_bytes=mem.rss,
            cpu_percent=percent,
            cpu_user_seconds=times.user,
            cpu_system_seconds=times.system,
        )

    def _read_slow(self, taken_at: float, now: float, *, vcgencmd: bool) -> _SlowParts:
        self._slow_refreshes += 1
        root = self._root
        sensors = self._try("hwmon", lambda: host_linux.read_hwmon(root)) or ((), ())
        temperatures, fans = sensors
        if not (root / "sys/class").is_dir():  # not Linux: psutil knows the platform
            temperatures = self._try("sensors_temperatures", self._temperatures) or ()
            fans = self._try("sensors_fans", self._fans) or ()
        elif not temperatures:
            temperatures = self._try("thermal", lambda: host_linux.read_thermal_zones(root)) or ()
        slow = _SlowParts(
            filesystems=self._try("filesystems", self._filesystems) or (),
            temperatures=temperatures,
            fans=fans,
            sampled_at=taken_at,
            monotonic=now,
            os_release=self._try("os-release", lambda: host_linux.read_os_release(root)) or (),
            domainname=self._try("domainname", lambda: host_linux.read_domainname(root)) or "",
            vcgencmd_throttled=self._try("vcgencmd", self._vcgencmd) if vcgencmd else None,
        )
        self._slow = slow
        return slow

    def _filesystems(self) -> tuple[FilesystemUsage, ...]:
        """``statvfs`` of each real filesystem once (see :func:`host_linux.read_mounts`);
        psutil lists them where there is no ``/proc/self/mounts``."""
        mounts = host_linux.read_mounts(self._root)
        if mounts is None:
            mounts = [
                host_linux.Mount(
                    clean_text(p.device),
                    clean_text(p.mountpoint),
                    clean_text(p.fstype),
                    tuple(p.opts.split(",")),
                )
                for p in psutil.disk_partitions(all=False)
                if p.fstype not in host_linux.IGNORED_FSTYPES
            ]
        return tuple(host_linux.filesystem_usage(m, self._statvfs, self._root) for m in mounts)

    @staticmethod
    def _temperatures() -> tuple[TemperatureReading, ...]:
        read = getattr(psutil, "sensors_temperatures", None)  # absent on some platforms
        if read is None:
            return ()
        return tuple(
            TemperatureReading(
                chip=clean_text(chip),
                label=clean_text(t.label),
                current_celsius=float(t.current),
                high_celsius=None if t.high is None else float(t.high),
                critical_celsius=None if t.critical is None else float(t.critical),
            )
            for chip, entries in sorted(read().items())
            for t in entries
            if t.current is not None
        )

    @staticmethod
    def _fans() -> tuple[FanReading, ...]:
        read = getattr(psutil, "sensors_fans", None)
        if read is None:
            return ()
        return tuple(
            FanReading(chip=clean_text(chip), label=clean_text(f.label), rpm=int(f.current))
            for chip, entries in sorted(read().items())
            for f in entries
            if f.current is not None
        )
