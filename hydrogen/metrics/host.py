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

The logical CPU count is ``hydrogen_host_cpus``, not ``..._cpu_count``:
promtool's linter reserves a ``_count`` suffix for histograms and summaries
and flags it on a gauge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hydrogen.host import HostSnapshot, NetworkCounters, clean_text
from hydrogen.metrics.families import FamilySpec, describe

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "HostCollector",
    "SnapshotSource",
    "host_metric_families",
    "unique_sensor_keys",
]

PREFIX = "hydrogen_host_"

_FS_LABELS = ("mountpoint", "device", "fstype")
_SENSOR_LABELS = ("chip", "sensor")


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> FamilySpec:
    return FamilySpec(PREFIX + name, "gauge", documentation, labels)


def _counter(name: str, documentation: str) -> FamilySpec:
    return FamilySpec(PREFIX + name, "counter", documentation, ("interface",))


CPU_USAGE = _gauge(
    "cpu_usage_ratio", "Share of time all CPUs were busy since the previous host sample (0..1)."
)
CPU_CORE_USAGE = _gauge(
    "cpu_core_usage_ratio",
    "Share of time each logical CPU was busy since the previous host sample (0..1).",
    ("core",),
)
CPUS = _gauge("cpus", "Number of logical CPUs.")
LOAD1 = _gauge("load1", "1-minute load average.")
LOAD5 = _gauge("load5", "5-minute load average.")
LOAD15 = _gauge("load15", "15-minute load average.")
MEMORY_TOTAL = _gauge("memory_total_bytes", "Total physical memory in bytes.")
MEMORY_AVAILABLE = _gauge(
    "memory_available_bytes",
    "Memory available to new processes without swapping, in bytes.",
)
SWAP_TOTAL = _gauge("swap_total_bytes", "Total swap space in bytes (0 without swap).")
SWAP_USED = _gauge("swap_used_bytes", "Used swap space in bytes.")
FS_SIZE = _gauge("filesystem_size_bytes", "Filesystem size in bytes.", _FS_LABELS)
FS_FREE = _gauge(
    "filesystem_free_bytes",
    "Filesystem space available to non-root users, in bytes.",
    _FS_LABELS,
)
FS_USED = _gauge("filesystem_used_bytes", "Filesystem space in use, in bytes.", _FS_LABELS)
NET_RX_BYTES = _counter("network_receive_bytes", "Bytes received per network interface.")
NET_TX_BYTES = _counter("network_transmit_bytes", "Bytes sent per network interface.")
NET_RX_PACKETS = _counter("network_receive_packets", "Packets received per network interface.")
NET_TX_PACKETS = _counter("network_transmit_packets", "Packets sent per network interface.")
NET_RX_ERRORS = _counter("network_receive_errors", "Receive errors per network interface.")
NET_TX_ERRORS = _counter("network_transmit_errors", "Transmit errors per network interface.")
NET_RX_DROPS = _counter("network_receive_drops", "Incoming packets dropped per network interface.")
NET_TX_DROPS = _counter("network_transmit_drops", "Outgoing packets dropped per network interface.")
TEMPERATURE = _gauge(
    "temperature_celsius", "Hardware temperature sensor reading in celsius.", _SENSOR_LABELS
)
FAN_SPEED = _gauge("fan_speed_rpm", "Fan speed in revolutions per minute.", _SENSOR_LABELS)
BOOT_TIME = _gauge("boot_time_seconds", "Host boot time, seconds since the Unix epoch.")
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
    CPU_USAGE,
    CPU_CORE_USAGE,
    CPUS,
    LOAD1,
    LOAD5,
    LOAD15,
    MEMORY_TOTAL,
    MEMORY_AVAILABLE,
    SWAP_TOTAL,
    SWAP_USED,
    FS_SIZE,
    FS_FREE,
    FS_USED,
    NET_RX_BYTES,
    NET_TX_BYTES,
    NET_RX_PACKETS,
    NET_TX_PACKETS,
    NET_RX_ERRORS,
    NET_TX_ERRORS,
    NET_RX_DROPS,
    NET_TX_DROPS,
    TEMPERATURE,
    FAN_SPEED,
    BOOT_TIME,
    UPTIME,
    SAMPLE_TIMESTAMP,
    SAMPLE_DURATION,
)

# (family, NetworkCounters attribute) for the eight per-interface counters.
_NETWORK_COUNTERS: tuple[tuple[FamilySpec, str], ...] = (
    (NET_RX_BYTES, "bytes_recv"),
    (NET_TX_BYTES, "bytes_sent"),
    (NET_RX_PACKETS, "packets_recv"),
    (NET_TX_PACKETS, "packets_sent"),
    (NET_RX_ERRORS, "errin"),
    (NET_TX_ERRORS, "errout"),
    (NET_RX_DROPS, "dropin"),
    (NET_TX_DROPS, "dropout"),
)


class SnapshotSource(Protocol):
    """What the collector needs from a sampler: :class:`hydrogen.host.HostSampler` fits."""

    @property
    def latest(self) -> HostSnapshot | None: ...


class HostCollector(Collector):
    """Custom collector exporting ``sampler.latest``; register it once per registry."""

    def __init__(self, sampler: SnapshotSource) -> None:
        self._sampler = sampler

    def describe(self) -> Iterable[Metric]:
        """Empty families for every name, so a registry can detect name clashes at
        ``register`` time (without it, prometheus_client skips the check)."""
        return describe(FAMILIES)

    def collect(self) -> Iterable[Metric]:
        """Families from the latest snapshot; nothing before the first sample."""
        snapshot = self._sampler.latest
        if snapshot is None:
            return []
        return host_metric_families(snapshot)


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

    single(CPU_USAGE, None if snapshot.cpu_percent is None else snapshot.cpu_percent / 100.0)
    if snapshot.cpu_per_core:
        cores = CPU_CORE_USAGE.family()
        for index, percent in enumerate(snapshot.cpu_per_core):
            cores.add_metric([str(index)], percent / 100.0)
        families.append(cores)
    single(CPUS, snapshot.cpu_count)
    if snapshot.load_average is not None:
        for spec, value in zip((LOAD1, LOAD5, LOAD15), snapshot.load_average, strict=True):
            single(spec, value)
    if snapshot.memory is not None:
        single(MEMORY_TOTAL, snapshot.memory.total_bytes)
        single(MEMORY_AVAILABLE, snapshot.memory.available_bytes)
    if snapshot.swap is not None:
        single(SWAP_TOTAL, snapshot.swap.total_bytes)
        single(SWAP_USED, snapshot.swap.used_bytes)

    if snapshot.filesystems:
        size, free, used = FS_SIZE.family(), FS_FREE.family(), FS_USED.family()
        seen: set[tuple[str, ...]] = set()
        for fs in snapshot.filesystems:
            labels = (clean_text(fs.mountpoint), clean_text(fs.device), clean_text(fs.fstype))
            if labels in seen:  # the same filesystem twice: same numbers, keep one
                continue
            seen.add(labels)
            size.add_metric(labels, fs.total_bytes)
            free.add_metric(labels, fs.free_bytes)
            used.add_metric(labels, fs.used_bytes)
        families.extend((size, free, used))

    if snapshot.network:
        families.extend(_network_families(snapshot.network))

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

    single(BOOT_TIME, snapshot.boot_time)
    single(UPTIME, snapshot.uptime_seconds)
    single(SAMPLE_TIMESTAMP, snapshot.taken_at)
    single(SAMPLE_DURATION, snapshot.sample_duration_seconds)
    return families


def _network_families(network: Sequence[NetworkCounters]) -> Iterator[Metric]:
    """The eight per-interface counters; a repeated interface name keeps its first entry."""
    unique: dict[str, NetworkCounters] = {}
    for counters in network:
        unique.setdefault(clean_text(counters.interface), counters)
    for spec, attribute in _NETWORK_COUNTERS:
        family = spec.family()
        for interface, counters in unique.items():
            family.add_metric([interface], getattr(counters, attribute))
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
