"""Prometheus collector for the host snapshot.

The collector only *reads* ``sampler.latest``: the status loop already
samples the host every second, and sampling again per scrape would make a
scrape cost a psutil round (blocking the event loop, since prometheus
collectors are synchronous) and let two scrapers disagree with the status
frames.  Before the first sample it yields nothing; families whose data the
platform lacks (no sensors on a VM, say) are left out rather than exported
as zeros, so absent is never confused with cold.

Naming follows the Prometheus guide: ``hydrogen_host_`` prefix, base units
(bytes, seconds, celsius), ``_ratio`` for 0..1 shares, ``_total`` on
counters.  ``CounterMetricFamily`` is given the name without ``_total``
(it strips the suffix anyway and appends it to the samples and, in the text
format, to HELP/TYPE), so ``describe`` and the exposition agree.

Where node_exporter measures the same thing, the suffix, unit, labels and
meaning are node_exporter's (``hydrogen_host_X`` is ``node_X``), so its
dashboards and alert rules port by a prefix substitution; docs/metrics.md
has the table.  Families whose name or labels changed keep their old series
one release, with ``DEPRECATED`` in HELP (:data:`DEPRECATED`).

The logical CPU count is ``hydrogen_host_cpus``, not ``..._cpu_count``:
promtool's linter reserves a ``_count`` suffix for histograms and summaries
and flags it on a gauge.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen.host import CPU_MODES, HostSnapshot, NetworkCounters, clean_text
from hydrogen.host_linux import MEMINFO_FIELDS
from hydrogen.host_rpi import FLAGS, is_set
from hydrogen.metrics.families import Family, FamilySpec, describe
from hydrogen.metrics.host_legacy import DEPRECATED, legacy_families
from hydrogen.metrics.state_dir import StateDirFilesystem

__all__ = [
    "DEPRECATED",
    "FAMILIES",
    "FamilySpec",
    "HostCollector",
    "SnapshotSource",
    "host_metric_families",
    "unique_sensor_keys",
]

PREFIX = "hydrogen_host_"

_FS_LABELS = ("device", "fstype", "mountpoint")
_SENSOR_LABELS = ("chip", "sensor")
#: ``interface`` is the label 0.1.0 used, kept one release beside node_exporter's ``device``.
_NET_LABELS = ("device", "interface")


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> FamilySpec:
    return FamilySpec(PREFIX + name, "gauge", documentation, labels)


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> FamilySpec:
    return FamilySpec(PREFIX + name, "counter", documentation, labels)


def _snake(name: str) -> str:
    """``MemAvailable`` -> ``mem_available``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _net(name: str, documentation: str) -> FamilySpec:
    return _counter(
        name,
        documentation + " The interface label is DEPRECATED (the same as device; removed in "
        "the next release).",
        _NET_LABELS,
    )


# -- node_exporter's families (node_X is hydrogen_host_X) -------------------------------
CPU_SECONDS = _counter(
    "cpu_seconds", "Seconds the CPUs spent in each mode (/proc/stat).", ("cpu", "mode")
)
CPUS = _gauge("cpus", "Number of logical CPUs.")
LOAD1 = _gauge("load1", "1-minute load average.")
LOAD5 = _gauge("load5", "5-minute load average.")
LOAD15 = _gauge("load15", "15-minute load average.")
#: node_exporter's ``node_memory_MemTotal_bytes`` is ``memory_mem_total_bytes`` here:
#: the kernel's CamelCase field names fail promtool's snake_case lint, and a scrape
#: that promtool flags is one that some pipelines reject.
MEMINFO = {
    name: _gauge(
        f"memory_{_snake(name)}_bytes",
        f"Memory information field {name} in bytes (/proc/meminfo; node_memory_{name}_bytes).",
    )
    for name in MEMINFO_FIELDS
}
FS_SIZE = _gauge("filesystem_size_bytes", "Filesystem size in bytes.", _FS_LABELS)
FS_FREE = _gauge(
    "filesystem_free_bytes",
    "Filesystem free space in bytes, root's reserve included (f_bfree; in 0.1.0 this "
    "family held what is now filesystem_avail_bytes).",
    _FS_LABELS,
)
FS_AVAIL = _gauge(
    "filesystem_avail_bytes",
    "Filesystem space available to non-root users in bytes (f_bavail).",
    _FS_LABELS,
)
FS_FILES = _gauge("filesystem_files", "Filesystem total file nodes (inodes).", _FS_LABELS)
FS_FILES_FREE = _gauge("filesystem_files_free", "Filesystem free file nodes.", _FS_LABELS)
FS_READONLY = _gauge("filesystem_readonly", "1 if the filesystem is mounted read-only.", _FS_LABELS)
FS_DEVICE_ERROR = _gauge(
    "filesystem_device_error",
    "1 if statvfs of the mount point failed (its size families are then absent).",
    _FS_LABELS,
)
#: One series: which filesystem above holds the state dir (join on instance, mountpoint).
STATE_DIR_FS = FamilySpec(
    "hydrogen_host_state_dir_filesystem",
    "info",
    "The filesystem (mountpoint as in hydrogen_host_filesystem_avail_bytes) holding the "
    "gateway's state directory: uploads, job history, keys.",
    ("mountpoint",),
)
DISK_READ = _counter("disk_read_bytes", "Bytes read from the disk.", ("device",))
DISK_WRITTEN = _counter("disk_written_bytes", "Bytes written to the disk.", ("device",))
DISK_IO_TIME = _counter(
    "disk_io_time_seconds", "Seconds the disk spent doing I/O (busy time).", ("device",)
)
NET_RX_BYTES = _net("network_receive_bytes", "Bytes received per network device.")
NET_TX_BYTES = _net("network_transmit_bytes", "Bytes sent per network device.")
NET_RX_PACKETS = _net("network_receive_packets", "Packets received per network device.")
NET_TX_PACKETS = _net("network_transmit_packets", "Packets sent per network device.")
NET_RX_ERRS = _net("network_receive_errs", "Receive errors per network device.")
NET_TX_ERRS = _net("network_transmit_errs", "Transmit errors per network device.")
NET_RX_DROP = _net("network_receive_drop", "Incoming packets dropped per network device.")
NET_TX_DROP = _net("network_transmit_drop", "Outgoing packets dropped per network device.")
PRESSURE = {
    ("cpu", "waiting"): _counter(
        "pressure_cpu_waiting_seconds", "Seconds some task waited for a CPU (PSI some)."
    ),
    ("memory", "waiting"): _counter(
        "pressure_memory_waiting_seconds", "Seconds some task waited for memory (PSI some)."
    ),
    ("memory", "stalled"): _counter(
        "pressure_memory_stalled_seconds",
        "Seconds all non-idle tasks stalled on memory (PSI full).",
    ),
    ("io", "waiting"): _counter(
        "pressure_io_waiting_seconds", "Seconds some task waited for I/O (PSI some)."
    ),
    ("io", "stalled"): _counter(
        "pressure_io_stalled_seconds", "Seconds all non-idle tasks stalled on I/O (PSI full)."
    ),
}
OS = FamilySpec(PREFIX + "os", "info", "Operating system (os-release).")
UNAME = FamilySpec(PREFIX + "uname", "info", "Kernel and machine (uname).")
BOOT_TIME = _gauge("boot_time_seconds", "Host boot time, seconds since the Unix epoch.")
TIMEX_SYNC = _gauge(
    "timex_sync_status", "1 if the kernel clock is synchronised to a reliable server (NTP)."
)
TIMEX_OFFSET = _gauge("timex_offset_seconds", "Time offset between the local clock and the server.")
TIMEX_MAXERROR = _gauge("timex_maxerror_seconds", "Maximum error bound of the clock in seconds.")
TIMEX_ESTERROR = _gauge("timex_estimated_error_seconds", "Estimated error of the clock in seconds.")
TEMPERATURE = _gauge(
    "temperature_celsius",
    "Hardware temperature in celsius (hwmon; /sys/class/thermal zones where hwmon has none).",
    _SENSOR_LABELS,
)
FAN_SPEED = _gauge("fan_speed_rpm", "Fan speed in revolutions per minute (hwmon).", _SENSOR_LABELS)

# -- Raspberry Pi firmware flags (get_throttled): present on a Pi only -----------------
_RPI_TEXT = {
    "undervoltage": "under-voltage",
    "frequency_capped": "ARM frequency capping",
    "throttled": "throttling",
    "soft_temperature_limit": "the soft temperature limit",
}
RPI_NOW = {
    flag.name: _gauge(
        f"rpi_{flag.name}", f"1 while the Pi firmware reports {_RPI_TEXT[flag.name]}."
    )
    for flag in FLAGS
}
RPI_OCCURRED = {
    flag.name: _gauge(
        f"rpi_{flag.name}_occurred",
        f"1 if the Pi firmware reported {_RPI_TEXT[flag.name]} since boot.",
    )
    for flag in FLAGS
}

# -- Hydrogen's own ------------------------------------------------------------------
UPTIME = _gauge("uptime_seconds", "Host uptime in seconds at the time of the host sample.")
SAMPLE_TIMESTAMP = _gauge(
    "sample_timestamp_seconds",
    "When the exported host sample was taken, seconds since the Unix epoch.",
)
SAMPLE_DURATION = _gauge(
    "sample_duration_seconds", "Time taken to collect the exported host sample, in seconds."
)

#: Every family this collector can export, in exposition order.
FAMILIES: tuple[FamilySpec, ...] = (
    CPU_SECONDS,
    CPUS,
    LOAD1,
    LOAD5,
    LOAD15,
    *MEMINFO.values(),
    FS_SIZE,
    FS_FREE,
    FS_AVAIL,
    FS_FILES,
    FS_FILES_FREE,
    FS_READONLY,
    FS_DEVICE_ERROR,
    STATE_DIR_FS,
    DISK_READ,
    DISK_WRITTEN,
    DISK_IO_TIME,
    NET_RX_BYTES,
    NET_TX_BYTES,
    NET_RX_PACKETS,
    NET_TX_PACKETS,
    NET_RX_ERRS,
    NET_TX_ERRS,
    NET_RX_DROP,
    NET_TX_DROP,
    *PRESSURE.values(),
    OS,
    UNAME,
    BOOT_TIME,
    TIMEX_SYNC,
    TIMEX_OFFSET,
    TIMEX_MAXERROR,
    TIMEX_ESTERROR,
    TEMPERATURE,
    FAN_SPEED,
    *RPI_NOW.values(),
    *RPI_OCCURRED.values(),
    UPTIME,
    SAMPLE_TIMESTAMP,
    SAMPLE_DURATION,
    *DEPRECATED,
)

# (family, NetworkCounters attribute) for the per-device counters.
_NETWORK_COUNTERS: tuple[tuple[FamilySpec, str], ...] = (
    (NET_RX_BYTES, "bytes_recv"),
    (NET_TX_BYTES, "bytes_sent"),
    (NET_RX_PACKETS, "packets_recv"),
    (NET_TX_PACKETS, "packets_sent"),
    (NET_RX_ERRS, "errin"),
    (NET_TX_ERRS, "errout"),
    (NET_RX_DROP, "dropin"),
    (NET_TX_DROP, "dropout"),
)


class SnapshotSource(Protocol):
    """What the collector needs from a sampler: :class:`hydrogen.host.HostSampler` fits."""

    @property
    def latest(self) -> HostSnapshot | None: ...


class HostCollector(Collector):
    """Custom collector exporting ``sampler.latest``; register it once per registry."""

    def __init__(self, sampler: SnapshotSource, state_dir: Path | None = None) -> None:
        self._sampler = sampler
        self._state_dir = None if state_dir is None else StateDirFilesystem(state_dir)

    def describe(self) -> Iterable[Metric]:
        """Empty families for every name, so a registry can detect name clashes at
        ``register`` time (without it, prometheus_client skips the check)."""
        return describe(FAMILIES)

    def collect(self) -> Iterable[Metric]:
        """Families from the latest snapshot; nothing before the first sample."""
        snapshot = self._sampler.latest
        if snapshot is None:
            return []
        families = host_metric_families(snapshot)
        if self._state_dir is not None:
            mountpoint = self._state_dir.mountpoint(fs.mountpoint for fs in snapshot.filesystems)
            if mountpoint is not None:
                info = STATE_DIR_FS.family()
                info.add_metric([clean_text(mountpoint)], {})
                families.append(info)
        return families


def host_metric_families(snapshot: HostSnapshot) -> list[Metric]:
    """Build the exported families for one snapshot (pure, no I/O).

    Only families with at least one sample are returned.  Label values are
    passed through :func:`clean_text` (prometheus_client escapes quotes,
    backslashes and newlines, but cannot encode lone surrogates), and label
    sets are made unique, because a duplicate series makes Prometheus reject
    the whole scrape.
    """
    families: list[Metric] = []

    def single(spec: FamilySpec, value: float | None) -> None:
        if value is not None:
            family = spec.family()
            family.add_metric([], value)
            families.append(family)

    if snapshot.cpu_times:
        cpu = CPU_SECONDS.family()
        for times in snapshot.cpu_times:
            for mode in CPU_MODES:
                cpu.add_metric([str(times.cpu), mode], getattr(times, mode))
        families.append(cpu)
    single(CPUS, snapshot.cpu_count)
    if snapshot.load_average is not None:
        for spec, value in zip((LOAD1, LOAD5, LOAD15), snapshot.load_average, strict=True):
            single(spec, value)
    for name, value in snapshot.meminfo:
        single(MEMINFO[name], value)

    families.extend(_filesystem_families(snapshot))

    if snapshot.disks:
        read, written, busy = DISK_READ.family(), DISK_WRITTEN.family(), DISK_IO_TIME.family()
        for disk in {d.device: d for d in reversed(snapshot.disks)}.values():
            read.add_metric([disk.device], disk.read_bytes)
            written.add_metric([disk.device], disk.written_bytes)
            busy.add_metric([disk.device], disk.io_time_seconds)
        families.extend((read, written, busy))

    if snapshot.network:
        families.extend(_network_families(snapshot.network))

    for pressure in snapshot.pressure:
        single(PRESSURE[(pressure.resource, "waiting")], pressure.waiting_seconds)
        stalled = PRESSURE.get((pressure.resource, "stalled"))
        if stalled is not None:
            single(stalled, pressure.stalled_seconds)

    if snapshot.os_release:
        os_info = OS.family()
        os_info.add_metric([], dict(snapshot.os_release))
        families.append(os_info)
    s = snapshot.system
    if s.sysname:
        uname = UNAME.family()
        uname.add_metric(
            [],
            {
                "domainname": s.domainname or "(none)",
                "machine": s.machine,
                "nodename": s.nodename,
                "release": s.release,
                "sysname": s.sysname,
                "version": s.version,
            },
        )
        families.append(uname)
    single(BOOT_TIME, snapshot.boot_time)
    if snapshot.timex is not None:
        t = snapshot.timex
        single(TIMEX_SYNC, 1.0 if t.sync_status else 0.0)
        single(TIMEX_OFFSET, t.offset_seconds)
        single(TIMEX_MAXERROR, t.maxerror_seconds)
        single(TIMEX_ESTERROR, t.estimated_error_seconds)

    if snapshot.temperatures:
        temperature = TEMPERATURE.family()
        keys = unique_sensor_keys([(t.chip, t.label) for t in snapshot.temperatures])
        for key, reading in zip(keys, snapshot.temperatures, strict=True):
            temperature.add_metric(key, reading.current_celsius)
        families.append(temperature)
    if snapshot.fans:
        fan = FAN_SPEED.family()
        keys = unique_sensor_keys([(f.chip, f.label) for f in snapshot.fans])
        for key, reading in zip(keys, snapshot.fans, strict=True):
            fan.add_metric(key, reading.rpm)
        families.append(fan)

    bits = snapshot.rpi_throttled
    if bits is not None:
        for flag in FLAGS:
            single(RPI_NOW[flag.name], 1.0 if is_set(bits, flag.now_bit) else 0.0)
        for flag in FLAGS:
            single(RPI_OCCURRED[flag.name], 1.0 if is_set(bits, flag.occurred_bit) else 0.0)

    single(UPTIME, snapshot.uptime_seconds)
    single(SAMPLE_TIMESTAMP, snapshot.taken_at)
    single(SAMPLE_DURATION, snapshot.sample_duration_seconds)

    # DEPRECATED families, from the same snapshot.
    families.extend(legacy_families(snapshot, _unique_filesystems(snapshot)))
    return families


def _unique_filesystems(snapshot: HostSnapshot) -> dict[tuple[str, ...], Any]:
    """Filesystems by label values; the same filesystem twice keeps its first entry."""
    unique: dict[tuple[str, ...], Any] = {}
    for fs in snapshot.filesystems:
        labels = (clean_text(fs.device), clean_text(fs.fstype), clean_text(fs.mountpoint))
        unique.setdefault(labels, fs)
    return unique


def _filesystem_families(snapshot: HostSnapshot) -> Iterator[Family]:
    size, free, avail = FS_SIZE.family(), FS_FREE.family(), FS_AVAIL.family()
    files, files_free = FS_FILES.family(), FS_FILES_FREE.family()
    readonly, error = FS_READONLY.family(), FS_DEVICE_ERROR.family()
    for labels, fs in _unique_filesystems(snapshot).items():
        readonly.add_metric(labels, 1.0 if fs.readonly else 0.0)
        error.add_metric(labels, 1.0 if fs.device_error else 0.0)
        if fs.device_error:
            continue
        size.add_metric(labels, fs.total_bytes)
        avail.add_metric(labels, fs.free_bytes)
        if fs.free_for_root_bytes is not None:
            free.add_metric(labels, fs.free_for_root_bytes)
        if fs.files is not None and fs.files_free is not None:
            files.add_metric(labels, fs.files)
            files_free.add_metric(labels, fs.files_free)
    for family in (size, free, avail, files, files_free, readonly, error):
        if family.samples:
            yield family


def _network_families(network: Sequence[NetworkCounters]) -> Iterator[Metric]:
    """The per-device counters; a repeated device name keeps its first entry."""
    unique: dict[str, NetworkCounters] = {}
    for counters in network:
        unique.setdefault(clean_text(counters.interface), counters)
    for spec, attribute in _NETWORK_COUNTERS:
        family = spec.family()
        for device, counters in unique.items():
            labels = [device] * len(spec.labels)  # device (and the deprecated interface)
            family.add_metric(labels, getattr(counters, attribute))
        yield family


def unique_sensor_keys(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(chip, sensor)`` label values, one per reading, guaranteed distinct.

    psutil groups sensors by driver name, so two NVMe drives both show up
    under chip ``nvme`` with label ``Composite``, and many sensors have an
    empty label.  An empty label becomes ``sensorN`` (N = position within
    the chip); labels that occur more than once within a chip all get an
    ``_N`` occurrence suffix (``Composite_0``, ``Composite_1``), skipping any
    suffix that would collide with a real label.  The result depends only on
    the input order, which psutil keeps stable, so series do not hop between
    scrapes.
    """
    position: Counter[str] = Counter()
    bases: list[tuple[str, str]] = []
    for raw_chip, raw_label in pairs:
        chip = clean_text(raw_chip)
        label = clean_text(raw_label) or f"sensor{position[chip]}"
        position[chip] += 1
        bases.append((chip, label))

    totals = Counter(bases)
    taken = {key for key, count in totals.items() if count == 1}
    next_index: Counter[tuple[str, str]] = Counter()
    keys: list[tuple[str, str]] = []
    for chip, label in bases:
        if totals[(chip, label)] == 1:
            keys.append((chip, label))
            continue
        index = next_index[(chip, label)]
        while (chip, f"{label}_{index}") in taken:
            index += 1
        next_index[(chip, label)] = index + 1
        key = (chip, f"{label}_{index}")
        taken.add(key)
        keys.append(key)
    return keys
