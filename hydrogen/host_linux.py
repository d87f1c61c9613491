"""Linux procfs/sysfs readers for the host snapshot, each under a ``root`` directory.

Every reader takes the filesystem root it reads below (``/`` in production, a fake
tree in the tests) and parses what node_exporter parses for the same measurement, with
its units and semantics: seconds (not USER_HZ ticks or milliseconds), bytes (not kB or
sectors).  A file that is absent yields an empty result, so a kernel without PSI or a
machine without hwmon chips has no series rather than zeros.  Readers may raise on a
malformed file; :class:`hydrogen.host.HostSampler` degrades that to "absent" and logs
it once.  No state, no psutil.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from hydrogen.host_snapshot import (
    CpuTimes,
    DiskCounters,
    FanReading,
    FilesystemUsage,
    PressureTotals,
    TemperatureReading,
    TimexStatus,
    clean_text,
)

__all__ = [
    "MEMINFO_FIELDS",
    "Mount",
    "adjtimex",
    "filesystem_usage",
    "read_cpu_times",
    "read_diskstats",
    "read_domainname",
    "read_hwmon",
    "read_meminfo",
    "read_mounts",
    "read_os_release",
    "read_pressure",
    "read_thermal_zones",
]

#: The ``/proc/meminfo`` fields exported (``memory_<Name>_bytes``): enough for "how
#: much is free", page cache and swap, without node_exporter's fifty-odd gauges.
MEMINFO_FIELDS = (
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapTotal",
    "SwapFree",
)

#: node_exporter's default ``--collector.diskstats.device-exclude`` (partitions of
#: whole disks already counted, RAM and loop devices), plus SD card partitions
#: (``mmcblk0p2``): on a Pi they would double the disk series for nothing.
_DISK_EXCLUDE = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$")

#: Read-only image filesystems (snap packages, ISO images): always 100 % full and
#: never worth alerting on, they would only drown the real disks in noise.
IGNORED_FSTYPES = frozenset({"squashfs", "erofs", "iso9660", "udf"})

#: ``/proc/diskstats`` and ``/proc/stat`` units.
_SECTOR_BYTES = 512
_OS_RELEASE_LABELS = (
    "id",
    "id_like",
    "name",
    "pretty_name",
    "version",
    "version_codename",
    "version_id",
)


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def _read(root: Path, relative: str) -> str | None:
    """The text of ``root/relative``, or ``None`` when it does not exist."""
    try:
        return (root / relative).read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None


def read_cpu_times(root: Path) -> tuple[CpuTimes, ...]:
    """Per-CPU mode seconds from ``/proc/stat`` (the ``cpuN`` lines)."""
    text = _read(root, "proc/stat")
    if text is None:
        return ()
    tick = float(_clock_ticks())
    result = []
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        values = [int(f) / tick for f in fields[:8]] + [0.0] * (8 - len(fields[:8]))
        user, nice, system, idle, iowait, irq, softirq, steal = values
        result.append(
            CpuTimes(int(name[3:]), user, nice, system, idle, iowait, irq, softirq, steal)
        )
    return tuple(result)


def read_meminfo(root: Path) -> tuple[tuple[str, int], ...]:
    """The :data:`MEMINFO_FIELDS` present, in bytes (the file says kB = KiB)."""
    text = _read(root, "proc/meminfo")
    if text is None:
        return ()
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in MEMINFO_FIELDS:
            parts = rest.split()
            found[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return tuple((name, found[name]) for name in MEMINFO_FIELDS if name in found)


def read_diskstats(root: Path) -> tuple[DiskCounters, ...]:
    """Whole block devices from ``/proc/diskstats`` (sectors are always 512 bytes)."""
    text = _read(root, "proc/diskstats")
    if text is None:
        return ()
    result = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14 or _DISK_EXCLUDE.match(fields[2]):
            continue
        result.append(
            DiskCounters(
                device=clean_text(fields[2]),
                read_bytes=int(fields[5]) * _SECTOR_BYTES,
                written_bytes=int(fields[9]) * _SECTOR_BYTES,
                io_time_seconds=int(fields[12]) / 1000.0,
            )
        )
    return tuple(result)


def read_pressure(root: Path) -> tuple[PressureTotals, ...]:
    """``some``/``full`` stall totals (microseconds in the file) of cpu, memory and io.

    ``full`` of cpu is left out as node_exporter does (the kernel reports zeros or
    nothing for it at the system level)."""
    result = []
    for resource in ("cpu", "memory", "io"):
        text = _read(root, f"proc/pressure/{resource}")
        if text is None:
            continue
        totals: dict[str, float] = {}
        for line in text.splitlines():
            kind, *pairs = line.split()
            for pair in pairs:
                key, _, value = pair.partition("=")
                if key == "total":
                    totals[kind] = int(value) / 1e6
        if "some" in totals:
            full = None if resource == "cpu" else totals.get("full")
            result.append(PressureTotals(resource, totals["some"], full))
    return tuple(result)


def read_os_release(root: Path) -> tuple[tuple[str, str], ...]:
    """``/etc/os-release`` (else ``/usr/lib/os-release``) as node_os_info's labels."""
    text = _read(root, "etc/os-release")
    if text is None:
        text = _read(root, "usr/lib/os-release")
    if text is None:
        return ()
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key.lower()] = clean_text(value)
    return tuple((label, values.get(label, "")) for label in _OS_RELEASE_LABELS)


def read_domainname(root: Path) -> str:
    text = _read(root, "proc/sys/kernel/domainname")
    return clean_text(text.strip()) if text is not None else ""


class Mount(NamedTuple):
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]


def _unescape(field: str) -> str:
    """``/proc/self/mounts`` writes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(root: Path) -> list[Mount] | None:
    """Real filesystems, each device once (``None`` when ``/proc/self/mounts`` is absent).

    Pseudo filesystems (``nodev`` in ``/proc/filesystems``: proc, tmpfs, cgroup,
    overlay...) and image filesystems are dropped, as ``psutil.disk_partitions()``
    did before.  A device mounted several times (bind mounts, btrfs subvolumes) has
    the same usage everywhere, so it is reported once, at its shortest mount point -
    normally the "real" one.  (node_exporter reports every mount point, tmpfs
    included; on a printer host those are noise and multiply the series.)
    """
    text = _read(root, "proc/self/mounts")
    if text is None:
        return None
    nodev = {
        line.split()[-1]
        for line in (_read(root, "proc/filesystems") or "").splitlines()
        if line.startswith("nodev")
    }
    by_device: dict[str, Mount] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype = (clean_text(_unescape(f)) for f in fields[:3])
        if fstype in nodev or fstype in IGNORED_FSTYPES:
            continue
        mount = Mount(device, mountpoint, fstype, tuple(fields[3].split(",")))
        kept = by_device.get(device or mountpoint)
        if kept is None or (len(mountpoint), mountpoint) < (len(kept.mountpoint), kept.mountpoint):
            by_device[device or mountpoint] = mount
    return sorted(by_device.values(), key=lambda m: m.mountpoint)


def filesystem_usage(mount: Mount, statvfs: Callable[[str], Any], root: Path) -> FilesystemUsage:
    """``statvfs`` of one mount, node_exporter's way; a failure is a device error."""
    path = mount.mountpoint if root == Path("/") else str(root / mount.mountpoint.lstrip("/"))
    readonly = "ro" in mount.options
    try:
        st = statvfs(path)
    except OSError:
        return FilesystemUsage(
            mount.mountpoint,
            mount.device,
            mount.fstype,
            0,
            0,
            0,
            0.0,
            readonly=readonly,
            device_error=True,
        )
    total = st.f_blocks * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    # psutil's (and df's) percent: used over what a user could have.
    percent = round(100.0 * used / (used + avail), 1) if used + avail else 0.0
    return FilesystemUsage(
        mountpoint=mount.mountpoint,
        device=mount.device,
        fstype=mount.fstype,
        total_bytes=total,
        used_bytes=used,
        free_bytes=avail,
        percent=percent,
        free_for_root_bytes=st.f_bfree * st.f_frsize,
        files=st.f_files,
        files_free=st.f_ffree,
        readonly=readonly or bool(st.f_flag & os.ST_RDONLY),
    )


def _hwmon_dirs(root: Path) -> Iterator[Path]:
    base = root / "sys/class/hwmon"
    if base.is_dir():
        yield from sorted(base.iterdir(), key=lambda p: (len(p.name), p.name))


def _number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _sorted_inputs(directory: Path, kind: str) -> list[tuple[str, Path]]:
    """``(tempN, path of tempN_input)`` in numeric order."""
    found = []
    for path in directory.glob(f"{kind}*_input"):
        sensor = path.name[: -len("_input")]
        if sensor[len(kind) :].isdigit():
            found.append((int(sensor[len(kind) :]), sensor, path))
    return [(sensor, path) for _, sensor, path in sorted(found)]


def _label(directory: Path, sensor: str) -> str:
    try:
        label = (directory / f"{sensor}_label").read_text(errors="surrogateescape").strip()
    except OSError:
        label = ""
    return clean_text(label) or sensor


def read_hwmon(root: Path) -> tuple[tuple[TemperatureReading, ...], tuple[FanReading, ...]]:
    """Temperatures and fans of every hwmon chip (``chip`` = its ``name`` file, ``sensor``
    = the channel's label, else its channel name such as ``temp1``)."""
    temperatures: list[TemperatureReading] = []
    fans: list[FanReading] = []
    for chip_dir in _hwmon_dirs(root):
        try:
            chip = clean_text((chip_dir / "name").read_text(errors="surrogateescape").strip())
        except OSError:
            chip = chip_dir.name
        for sensor, path in _sorted_inputs(chip_dir, "temp"):
            value = _number(path)
            if value is None:
                continue
            high = _number(chip_dir / f"{sensor}_max")
            crit = _number(chip_dir / f"{sensor}_crit")
            temperatures.append(
                TemperatureReading(
                    chip=chip,
                    label=_label(chip_dir, sensor),
                    current_celsius=value / 1000.0,
                    high_celsius=None if high is None else high / 1000.0,
                    critical_celsius=None if crit is None else crit / 1000.0,
                )
            )
        for sensor, path in _sorted_inputs(chip_dir, "fan"):
            value = _number(path)
            if value is not None:
                fans.append(FanReading(chip=chip, label=_label(chip_dir, sensor), rpm=int(value)))
    return tuple(temperatures), tuple(fans)


def read_thermal_zones(root: Path) -> tuple[TemperatureReading, ...]:
    """``/sys/class/thermal/thermal_zoneN``: ``chip`` = the zone's type (``cpu-thermal``),
    ``sensor`` = ``thermal_zoneN``.  Used when hwmon has no temperature."""
    base = root / "sys/class/thermal"
    if not base.is_dir():
        return ()
    zones = [p for p in base.iterdir() if re.fullmatch(r"thermal_zone\d+", p.name)]
    result = []
    for zone in sorted(zones, key=lambda p: int(p.name[len("thermal_zone") :])):
        value = _number(zone / "temp")
        if value is None:
            continue
        try:
            kind = clean_text((zone / "type").read_text(errors="surrogateescape").strip())
        except OSError:
            kind = "thermal"
        result.append(TemperatureReading(chip=kind, label=zone.name, current_celsius=value / 1000))
    return tuple(result)


# -- adjtimex --------------------------------------------------------------------------

_STA_UNSYNC = 0x0040
_STA_NANO = 0x2000


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> (longs are the platform's, as in glibc)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def timex_from(status: int, offset: int, maxerror: int, esterror: int) -> TimexStatus:
    """node_exporter's reading of the fields: synchronised unless ``STA_UNSYNC``; the
    offset in ns with ``STA_NANO``, else in us; the error bounds in us."""
    divisor = 1e9 if status & _STA_NANO else 1e6
    return TimexStatus(
        sync_status=not status & _STA_UNSYNC,
        offset_seconds=offset / divisor,
        maxerror_seconds=maxerror / 1e6,
        estimated_error_seconds=esterror / 1e6,
    )


def adjtimex() -> TimexStatus | None:
    """Read the kernel clock state (``modes = 0``: read only, no privilege needed);
    ``None`` where libc has no ``adjtimex`` (not Linux)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        call = libc.adjtimex
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.POINTER(_Timex)]
    call.restype = ctypes.c_int
    tx = _Timex()
    if call(ctypes.byref(tx)) < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    return timex_from(tx.status, tx.offset, tx.maxerror, tx.esterror)
