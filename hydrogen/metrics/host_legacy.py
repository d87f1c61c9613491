"""The host families renamed after 0.1.0, exported one more release with DEPRECATED in HELP.

Each says what replaces it.  They are built from the same snapshot as their
replacements, so the two never disagree while dashboards move over.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import Metric

from hydrogen.host import HostSnapshot, NetworkCounters, clean_text
from hydrogen.metrics.families import FamilySpec

__all__ = ["DEPRECATED", "legacy_families"]

PREFIX = "hydrogen_host_"
_FS_LABELS = ("device", "fstype", "mountpoint")
_GONE = " DEPRECATED: removed in the next release; use {}."


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> FamilySpec:
    return FamilySpec(PREFIX + name, "gauge", documentation, labels)


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> FamilySpec:
    return FamilySpec(PREFIX + name, "counter", documentation, labels)


def _deprecated(spec: FamilySpec, replacement: str) -> FamilySpec:
    return FamilySpec(
        spec.name, spec.kind, spec.documentation + _GONE.format(replacement), spec.labels
    )


CPU_USAGE = _deprecated(
    _gauge(
        "cpu_usage_ratio",
        "Share of time all CPUs were busy since the previous host sample (0..1).",
    ),
    "1 - avg(rate(hydrogen_host_cpu_seconds_total{mode=~'idle|iowait'}[1m]))",
)
CPU_CORE_USAGE = _deprecated(
    _gauge(
        "cpu_core_usage_ratio",
        "Share of time each logical CPU was busy since the previous host sample (0..1).",
        ("core",),
    ),
    "hydrogen_host_cpu_seconds_total{cpu}",
)
MEMORY_TOTAL = _deprecated(
    _gauge("memory_total_bytes", "Total physical memory in bytes."),
    "hydrogen_host_memory_mem_total_bytes",
)
MEMORY_AVAILABLE = _deprecated(
    _gauge("memory_available_bytes", "Memory available without swapping, in bytes."),
    "hydrogen_host_memory_mem_available_bytes",
)
SWAP_TOTAL = _deprecated(
    _gauge("swap_total_bytes", "Total swap space in bytes (0 without swap)."),
    "hydrogen_host_memory_swap_total_bytes",
)
SWAP_USED = _deprecated(
    _gauge("swap_used_bytes", "Used swap space in bytes."),
    "hydrogen_host_memory_swap_total_bytes - hydrogen_host_memory_swap_free_bytes",
)
FS_USED = _deprecated(
    _gauge("filesystem_used_bytes", "Filesystem space in use, in bytes.", _FS_LABELS),
    "hydrogen_host_filesystem_size_bytes - hydrogen_host_filesystem_free_bytes",
)
NET_RX_ERRORS = _deprecated(
    _counter("network_receive_errors", "Receive errors per interface.", ("interface",)),
    "hydrogen_host_network_receive_errs_total",
)
NET_TX_ERRORS = _deprecated(
    _counter("network_transmit_errors", "Transmit errors per interface.", ("interface",)),
    "hydrogen_host_network_transmit_errs_total",
)
NET_RX_DROPS = _deprecated(
    _counter("network_receive_drops", "Incoming packets dropped per interface.", ("interface",)),
    "hydrogen_host_network_receive_drop_total",
)
NET_TX_DROPS = _deprecated(
    _counter("network_transmit_drops", "Outgoing packets dropped per interface.", ("interface",)),
    "hydrogen_host_network_transmit_drop_total",
)

#: The families kept one release under their old names.
DEPRECATED: tuple[FamilySpec, ...] = (
    CPU_USAGE,
    CPU_CORE_USAGE,
    MEMORY_TOTAL,
    MEMORY_AVAILABLE,
    SWAP_TOTAL,
    SWAP_USED,
    FS_USED,
    NET_RX_ERRORS,
    NET_TX_ERRORS,
    NET_RX_DROPS,
    NET_TX_DROPS,
)


#: (family, NetworkCounters attribute) of the renamed network counters.
_NETWORK: tuple[tuple[FamilySpec, str], ...] = (
    (NET_RX_ERRORS, "errin"),
    (NET_TX_ERRORS, "errout"),
    (NET_RX_DROPS, "dropin"),
    (NET_TX_DROPS, "dropout"),
)


def legacy_families(
    snapshot: HostSnapshot, filesystems: Mapping[tuple[str, ...], Any]
) -> Iterator[Metric]:
    """The DEPRECATED families that have data in ``snapshot``."""

    def single(spec: FamilySpec, value: float) -> Metric:
        family = spec.family()
        family.add_metric([], value)
        return family

    if snapshot.cpu_percent is not None:
        yield single(CPU_USAGE, snapshot.cpu_percent / 100.0)
    if snapshot.cpu_per_core:
        cores = CPU_CORE_USAGE.family()
        for index, percent in enumerate(snapshot.cpu_per_core):
            cores.add_metric([str(index)], percent / 100.0)
        yield cores
    if snapshot.memory is not None:
        yield single(MEMORY_TOTAL, snapshot.memory.total_bytes)
        yield single(MEMORY_AVAILABLE, snapshot.memory.available_bytes)
    if snapshot.swap is not None:
        yield single(SWAP_TOTAL, snapshot.swap.total_bytes)
        yield single(SWAP_USED, snapshot.swap.used_bytes)
    used = FS_USED.family()
    for labels, fs in filesystems.items():
        if not fs.device_error:
            used.add_metric(labels, fs.used_bytes)
    if used.samples:
        yield used
    if snapshot.network:
        unique: dict[str, NetworkCounters] = {}
        for counters in snapshot.network:
            unique.setdefault(clean_text(counters.interface), counters)
        for spec, attribute in _NETWORK:
            family = spec.family()
            for interface, counters in unique.items():
                family.add_metric([interface], getattr(counters, attribute))
            yield family
