"""Host sampling: one immutable snapshot of the machine Hydrogen runs on.

Two consumers want host data: the WebSocket status frames (once a second)
and Prometheus scrapes (whenever a scraper calls).  Running psutil for each
of them would double the cost and, worse, make the two disagree, so a single
:class:`HostSampler` takes a :class:`HostSnapshot` and both read
``sampler.latest``.  A scrape therefore never touches psutil.

psutil reads ``/proc`` and ``/sys`` with blocking syscalls; disk usage on a
stale network mount can block for a long time.  :meth:`HostSampler.sample`
runs all of it in a worker thread so the event loop (and the printer serial
link it drives) never stalls on host statistics.

Sampling never raises: a host metric is never worth taking the gateway
down.  Each psutil call that fails degrades to an absent (``None``) or
empty field and is logged once at debug level, because on some platforms a
call fails on *every* sample and the log would otherwise fill up.
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
from datetime import UTC, datetime
from typing import Any, TypeVar

import psutil

__all__ = [
    "FanReading",
    "FilesystemUsage",
    "HostSampler",
    "HostSnapshot",
    "MemoryUsage",
    "NetworkCounters",
    "ProcessUsage",
    "SwapUsage",
    "SystemInfo",
    "TemperatureReading",
    "clean_text",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Read-only image filesystems that `disk_partitions(all=False)` still reports
# (snap packages, ISO images): always 100 % full and never worth alerting on,
# they would only drown the real disks in noise.
_IGNORED_FSTYPES = frozenset({"squashfs", "erofs", "iso9660", "udf"})


def clean_text(value: str) -> str:
    """Return `value` as a string that is guaranteed to encode as UTF-8.

    OS-provided names (mount points, interface and sensor labels) are decoded
    by Python with ``surrogateescape``, so an undecodable byte becomes a lone
    surrogate that makes ``str.encode("utf-8")`` raise - inside a Prometheus
    scrape or a JSON frame, far from the cause.  Such bytes are replaced by
    U+FFFD here, once, at the edge.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _iso_utc(epoch: float) -> str:
    """ISO 8601 UTC with a ``Z`` suffix: what browsers' ``Date`` parse natively."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


# --------------------------------------------------------------------------
# Snapshot records.  All frozen (and slotted: thousands of them are made per
# hour) so a snapshot can be shared between the WebSocket hub and the metrics
# collector without either being able to change what the other sees.
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """``uname`` fields: identify the machine in the status frame."""

    sysname: str = ""
    nodename: str = ""
    release: str = ""
    version: str = ""
    machine: str = ""


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    """Virtual memory in bytes; ``percent`` is psutil's (100 * (total - available) / total)."""

    total_bytes: int
    available_bytes: int
    used_bytes: int
    percent: float


@dataclass(frozen=True, slots=True)
class SwapUsage:
    """Swap in bytes; ``total_bytes`` is 0 on hosts without swap."""

    total_bytes: int
    used_bytes: int
    percent: float


@dataclass(frozen=True, slots=True)
class FilesystemUsage:
    """Usage of one mounted filesystem.

    ``free_bytes`` is what an unprivileged user can still write (psutil's
    ``free``), so ``used + free`` may be less than ``total`` by the blocks
    reserved for root; ``percent`` is relative to ``used + free`` for the
    same reason (it is what ``df`` shows).
    """

    mountpoint: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float


@dataclass(frozen=True, slots=True)
class NetworkCounters:
    """Cumulative counters of one network interface since boot (psutil names)."""

    interface: str
    bytes_sent: int
    bytes_recv: int
    packets_sent: int
    packets_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int


@dataclass(frozen=True, slots=True)
class TemperatureReading:
    """One temperature sensor; ``high``/``critical`` are ``None`` where the chip has none."""

    chip: str
    label: str
    current_celsius: float
    high_celsius: float | None = None
    critical_celsius: float | None = None


@dataclass(frozen=True, slots=True)
class FanReading:
    """One fan tachometer."""

    chip: str
    label: str
    rpm: int


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """Resources of the Hydrogen process itself.

    ``cpu_percent`` follows top's convention: 100 means one full core, so it
    can exceed 100 on a multi-core host.
    """

    threads: int
    vms_bytes: int
    rss_bytes: int
    cpu_percent: float
    cpu_user_seconds: float
    cpu_system_seconds: float


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """Everything known about the host at one instant.

    Fields are the raw, typed values (the metrics collector reads these);
    the ``*_dict`` methods shape them for the JSON status frame.  An absent
    value (``None`` or empty) means psutil could not provide it on this
    platform or this time - never a made-up zero.

    Every field but ``taken_at`` has a default so tests and tools can build
    synthetic snapshots with just the parts they care about.
    """

    taken_at: float
    """Wall clock (epoch seconds) when sampling started."""
    sample_duration_seconds: float = 0.0
    """How long the psutil calls took, slow parts included when refreshed."""
    system: SystemInfo = SystemInfo()
    cpu_percent: float | None = None
    """All CPUs, 0..100, averaged over the time since the previous sample."""
    cpu_per_core: tuple[float, ...] = ()
    """Per logical CPU, 0..100, same window as ``cpu_percent``."""
    cpu_count: int | None = None
    load_average: tuple[float, float, float] | None = None
    memory: MemoryUsage | None = None
    swap: SwapUsage | None = None
    filesystems: tuple[FilesystemUsage, ...] = ()
    network: tuple[NetworkCounters, ...] = ()
    temperatures: tuple[TemperatureReading, ...] = ()
    fans: tuple[FanReading, ...] = ()
    boot_time: float | None = None
    """Epoch seconds."""
    uptime_seconds: float | None = None
    process: ProcessUsage | None = None
    slow_sampled_at: float | None = None
    """When filesystems/sensors were last refreshed (they are reused in between)."""

    def system_dict(self) -> dict[str, str]:
        """``uname`` as the status frame's ``system`` object."""
        s = self.system
        return {
            "sysname": s.sysname,
            "nodename": s.nodename,
            "release": s.release,
            "version": s.version,
            "machine": s.machine,
        }

    def process_dict(self, running: bool, shutting_down: bool) -> dict[str, Any]:
        """The status frame's ``process`` object.

        The camelCase keys are the legacy Hydrogen wire format that existing
        clients parse; do not "fix" them.  Unknown values are 0 rather than
        ``null`` because those clients treat them as plain numbers.
        """
        p = self.process
        return {
            "running": running,
            "shutting_down": shutting_down,
            "totalThreads": p.threads if p else 0,
            "totalVirtualMemoryBytes": p.vms_bytes if p else 0,
            "totalResidentMemoryBytes": p.rss_bytes if p else 0,
        }

    def host_dict(self) -> dict[str, Any]:
        """JSON-ready host object for the status frame.

        Built fresh on each call from plain fields (no psutil, no I/O), so it
        costs microseconds.  The shape is stable: every key is always present
        whatever the platform; an unknown scalar is ``null`` and an unknown
        collection is empty, so clients never need to probe for keys.
        Percentages are 0..100 (what people read), rounded to 0.1 like
        psutil's own; everything else is in base units.
        """
        mem = self.memory
        swap = self.swap
        temperatures: dict[str, list[dict[str, Any]]] = {}
        for t in self.temperatures:
            temperatures.setdefault(t.chip, []).append(
                {
                    "label": t.label,
                    "current_celsius": t.current_celsius,
                    "high_celsius": t.high_celsius,
                    "critical_celsius": t.critical_celsius,
                }
            )
        fans: dict[str, list[dict[str, Any]]] = {}
        for f in self.fans:
            fans.setdefault(f.chip, []).append({"label": f.label, "rpm": f.rpm})
        return {
            "cpu": {
                "percent": None if self.cpu_percent is None else round(self.cpu_percent, 1),
                "per_core": [round(c, 1) for c in self.cpu_per_core],
                "count": self.cpu_count,
                "load_average": None if self.load_average is None else list(self.load_average),
            },
            "memory": {
                "total_bytes": mem.total_bytes if mem else None,
                "available_bytes": mem.available_bytes if mem else None,
                "used_bytes": mem.used_bytes if mem else None,
                "percent": mem.percent if mem else None,
            },
            "swap": {
                "total_bytes": swap.total_bytes if swap else None,
                "used_bytes": swap.used_bytes if swap else None,
                "percent": swap.percent if swap else None,
            },
            "filesystems": [
                {
                    "mountpoint": fs.mountpoint,
                    "device": fs.device,
                    "fstype": fs.fstype,
                    "total_bytes": fs.total_bytes,
                    "used_bytes": fs.used_bytes,
                    "free_bytes": fs.free_bytes,
                    "percent": fs.percent,
                }
                for fs in self.filesystems
            ],
            "network": {
                n.interface: {
                    "bytes_sent": n.bytes_sent,
                    "bytes_recv": n.bytes_recv,
                    "packets_sent": n.packets_sent,
                    "packets_recv": n.packets_recv,
                    "errin": n.errin,
                    "errout": n.errout,
                    "dropin": n.dropin,
                    "dropout": n.dropout,
                }
                for n in self.network
            },
            "temperatures": temperatures,
            "fans": fans,
            "uptime_seconds": self.uptime_seconds,
            "boot_time": None if self.boot_time is None else _iso_utc(self.boot_time),
            "sampled_at": _iso_utc(self.taken_at),
        }


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
    """

    def __init__(self, *, slow_interval: float = 10.0) -> None:
        self._slow_interval = slow_interval
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
            slow = self._slow
            if slow is None or now - slow.monotonic >= self._slow_interval:
                slow = self._read_slow(taken_at, now)
            duration = time.perf_counter() - start

        return HostSnapshot(
            taken_at=taken_at,
            sample_duration_seconds=duration,
            system=self._uname(),
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
        )

    @staticmethod
    def _uname() -> SystemInfo:
        if hasattr(os, "uname"):
            u = os.uname()
            fields = (u.sysname, u.nodename, u.release, u.version, u.machine)
        else:  # Windows
            p = platform.uname()
            fields = (p.system, p.node, p.release, p.version, p.machine)
        sysname, nodename, release, version, machine = (clean_text(f) for f in fields)
        return SystemInfo(
            sysname=sysname, nodename=nodename, release=release, version=version, machine=machine
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

    def _read_slow(self, taken_at: float, now: float) -> _SlowParts:
        self._slow_refreshes += 1
        slow = _SlowParts(
            filesystems=self._try("disk_partitions", self._filesystems) or (),
            temperatures=self._try("sensors_temperatures", self._temperatures) or (),
            fans=self._try("sensors_fans", self._fans) or (),
            sampled_at=taken_at,
            monotonic=now,
        )
        self._slow = slow
        return slow

    def _filesystems(self) -> tuple[FilesystemUsage, ...]:
        """Usage of each real filesystem once.

        ``all=False`` already drops pseudo filesystems (proc, tmpfs, cgroup,
        overlay...).  A device mounted several times (bind mounts, btrfs
        subvolumes) has the same usage everywhere, so it is reported once, at
        its shortest mount point - normally the "real" one.
        """
        by_device: dict[str, Any] = {}
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _IGNORED_FSTYPES:
                continue
            key = part.device or part.mountpoint
            kept = by_device.get(key)
            if kept is None or (len(part.mountpoint), part.mountpoint) < (
                len(kept.mountpoint),
                kept.mountpoint,
            ):
                by_device[key] = part
        result: list[FilesystemUsage] = []
        for part in sorted(by_device.values(), key=lambda p: p.mountpoint):
            usage = self._try(
                f"disk_usage {part.mountpoint}",
                lambda mp=part.mountpoint: psutil.disk_usage(mp),
            )
            if usage is None:  # unreadable or vanished mount: skip just that one
                continue
            result.append(
                FilesystemUsage(
                    mountpoint=clean_text(part.mountpoint),
                    device=clean_text(part.device),
                    fstype=clean_text(part.fstype),
                    total_bytes=usage.total,
                    used_bytes=usage.used,
                    free_bytes=usage.free,
                    percent=usage.percent,
                )
            )
        return tuple(result)

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
