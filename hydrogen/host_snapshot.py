"""The host snapshot's records: frozen, slotted, shared by the status frame and metrics.

All frozen (and slotted: thousands of them are made per hour) so a snapshot can be
shared between the WebSocket hub and the metrics collector without either being able
to change what the other sees.  No I/O here: :mod:`hydrogen.host` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CPU_MODES",
    "CpuTimes",
    "DiskCounters",
    "FanReading",
    "FilesystemUsage",
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


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """``uname`` fields: identify the machine in the status frame."""

    sysname: str = ""
    nodename: str = ""
    release: str = ""
    version: str = ""
    machine: str = ""
    domainname: str = ""
    """NIS domain (``/proc/sys/kernel/domainname``; ``(none)`` on most hosts), for
    ``uname_info`` only: the status frame's ``system`` object keeps its five keys."""


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
    """Usage of one mounted filesystem (``statvfs``).

    ``free_bytes`` is what an unprivileged user can still write (``f_bavail``,
    node_exporter's *avail*), so ``used + free`` may be less than ``total`` by the
    blocks reserved for root; ``percent`` is relative to ``used + free`` for the same
    reason (it is what ``df`` shows).  ``free_for_root_bytes`` is ``f_bfree``
    (node_exporter's *free*).  A mount whose ``statvfs`` failed has ``device_error``
    set and zeros elsewhere: it is exported as ``filesystem_device_error 1`` only and
    left out of the status frame.
    """

    mountpoint: str
    device: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float
    free_for_root_bytes: int | None = None
    files: int | None = None
    files_free: int | None = None
    readonly: bool = False
    device_error: bool = False


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
class CpuTimes:
    """Seconds one logical CPU spent in each mode since boot (``/proc/stat``).

    The modes are node_exporter's ``node_cpu_seconds_total`` modes; guest time is
    already inside ``user``/``nice`` there and is not repeated.
    """

    cpu: int
    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float


#: ``CpuTimes`` fields that are modes, in node_exporter's order.
CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")


@dataclass(frozen=True, slots=True)
class DiskCounters:
    """Cumulative I/O of one block device since boot (``/proc/diskstats``)."""

    device: str
    read_bytes: int
    written_bytes: int
    io_time_seconds: float


@dataclass(frozen=True, slots=True)
class PressureTotals:
    """Pressure stall information of one resource (``/proc/pressure/<resource>``):
    seconds some task waited (``some``) and all non-idle tasks stalled (``full``)."""

    resource: str
    waiting_seconds: float
    stalled_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class TimexStatus:
    """The kernel clock discipline (``adjtimex``), as node_exporter's timex collector."""

    sync_status: bool
    offset_seconds: float
    maxerror_seconds: float
    estimated_error_seconds: float


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
    cpu_times: tuple[CpuTimes, ...] = ()
    meminfo: tuple[tuple[str, int], ...] = ()
    """``/proc/meminfo`` fields that matter, ``(name, bytes)`` in the kernel's names."""
    disks: tuple[DiskCounters, ...] = ()
    pressure: tuple[PressureTotals, ...] = ()
    """Empty where the kernel has no PSI (``/proc/pressure`` absent)."""
    os_release: tuple[tuple[str, str], ...] = ()
    """``os-release`` fields as ``(label, value)``: node_exporter's ``node_os_info`` labels."""
    timex: TimexStatus | None = None
    rpi_throttled: int | None = None
    """The Raspberry Pi firmware's ``get_throttled`` bits; ``None`` on other hardware."""

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
                if not fs.device_error
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
