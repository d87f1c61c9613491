"""Host sampler and its Prometheus collector, against real psutil on this machine.

Sensors are absent on the CI VM, so a synthetic snapshot covers the
temperature/fan paths, duplicate labels and hostile label characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections import namedtuple
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hydrogen.host import (
    FanReading,
    FilesystemUsage,
    HostSampler,
    HostSnapshot,
    MemoryUsage,
    NetworkCounters,
    ProcessUsage,
    SwapUsage,
    SystemInfo,
    TemperatureReading,
    clean_text,
)
from hydrogen.metrics.host import DEPRECATED, FAMILIES, HostCollector, unique_sensor_keys

PROMTOOL = "/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else shutil.which("promtool")

HOST_KEYS = {
    "cpu",
    "memory",
    "swap",
    "filesystems",
    "network",
    "temperatures",
    "fans",
    "uptime_seconds",
    "boot_time",
    "sampled_at",
}
NET_KEYS = {
    "bytes_sent",
    "bytes_recv",
    "packets_sent",
    "packets_recv",
    "errin",
    "errout",
    "dropin",
    "dropout",
}


class _Source:
    """Stands in for a sampler when the snapshot is synthetic."""

    def __init__(self, snapshot: HostSnapshot | None) -> None:
        self.latest = snapshot


def _exposition(snapshot_source: Any) -> str:
    registry = CollectorRegistry()
    registry.register(HostCollector(snapshot_source))
    return generate_latest(registry).decode("utf-8")


def _parse(text: str) -> dict[str, Any]:
    """Family name (as exposed, counters with ``_total``) -> parsed family."""
    out = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        assert name not in out
        out[name] = family
    return out


def _values(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    """Series label set -> value, asserting no label set repeats."""
    values: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        key = tuple(sorted(sample.labels.items()))
        assert key not in values, f"duplicate series {sample}"
        values[key] = sample.value
    return values


def _promtool(text: str) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool not installed (/usr/bin/promtool absent; apt install prometheus)")
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0 and output == "", output


# -- real sampling ----------------------------------------------------------


async def test_sample_has_sane_values() -> None:
    sampler = HostSampler()
    assert sampler.latest is None
    snap = await sampler.sample()
    assert sampler.latest is snap

    assert snap.cpu_count == os.cpu_count()
    assert len(snap.cpu_per_core) == os.cpu_count()
    assert snap.cpu_percent is not None and 0.0 <= snap.cpu_percent <= 100.0
    assert all(0.0 <= c <= 100.0 for c in snap.cpu_per_core)
    assert snap.load_average is not None and len(snap.load_average) == 3
    assert snap.memory is not None and snap.memory.total_bytes > 0
    assert 0 < snap.memory.available_bytes <= snap.memory.total_bytes
    assert snap.swap is not None and snap.swap.total_bytes >= 0
    mounts = {fs.mountpoint: fs for fs in snap.filesystems}
    assert "/" in mounts and mounts["/"].total_bytes > 0
    assert len({fs.device for fs in snap.filesystems}) == len(snap.filesystems)
    assert "lo" in {n.interface for n in snap.network}
    assert snap.process is not None
    assert snap.process.rss_bytes > 0 and snap.process.threads >= 1
    assert snap.boot_time is not None and snap.boot_time < snap.taken_at
    assert snap.uptime_seconds is not None and snap.uptime_seconds > 0
    assert abs(snap.taken_at - time.time()) < 60
    assert 0.0 < snap.sample_duration_seconds < 10.0
    assert snap.slow_sampled_at == snap.taken_at

    uname = os.uname()
    assert snap.system_dict() == {
        "sysname": uname.sysname,
        "nodename": uname.nodename,
        "release": uname.release,
        "version": uname.version,
        "machine": uname.machine,
    }


async def test_process_dict_has_exact_legacy_keys() -> None:
    snap = await HostSampler().sample()
    process = snap.process_dict(running=True, shutting_down=False)
    assert list(process) == [
        "running",
        "shutting_down",
        "totalThreads",
        "totalVirtualMemoryBytes",
        "totalResidentMemoryBytes",
    ]
    assert process["running"] is True and process["shutting_down"] is False
    assert process["totalThreads"] >= 1
    assert process["totalResidentMemoryBytes"] > 0
    assert process["totalVirtualMemoryBytes"] >= process["totalResidentMemoryBytes"]
    assert all(type(process[k]) is int for k in list(process)[2:])
    assert HostSnapshot(taken_at=0.0).process_dict(False, True) == {
        "running": False,
        "shutting_down": True,
        "totalThreads": 0,
        "totalVirtualMemoryBytes": 0,
        "totalResidentMemoryBytes": 0,
    }


async def test_host_dict_is_json_ready_and_stable() -> None:
    sampler = HostSampler()
    await sampler.sample()
    snap = await sampler.sample()
    host = snap.host_dict()
    decoded = json.loads(json.dumps(host, allow_nan=False, ensure_ascii=False))
    assert decoded == host
    assert set(host) == HOST_KEYS
    assert set(host["cpu"]) == {"percent", "per_core", "count", "load_average"}
    assert host["cpu"]["count"] == os.cpu_count()
    assert len(host["cpu"]["load_average"]) == 3
    assert set(host["memory"]) == {"total_bytes", "available_bytes", "used_bytes", "percent"}
    assert set(host["swap"]) == {"total_bytes", "used_bytes", "percent"}
    root = next(fs for fs in host["filesystems"] if fs["mountpoint"] == "/")
    assert set(root) == {
        "mountpoint",
        "device",
        "fstype",
        "total_bytes",
        "used_bytes",
        "free_bytes",
        "percent",
    }
    assert set(host["network"]["lo"]) == NET_KEYS
    assert isinstance(host["temperatures"], dict) and isinstance(host["fans"], dict)
    for key in ("boot_time", "sampled_at"):
        assert host[key].endswith("Z")
        assert datetime.fromisoformat(host[key]).utcoffset().total_seconds() == 0
    assert datetime.fromisoformat(host["sampled_at"]).timestamp() == pytest.approx(
        snap.taken_at, abs=0.001
    )
    # Pure function of the snapshot: same input, same output.
    assert snap.host_dict() == host


async def test_slow_parts_reused_within_interval() -> None:
    sampler = HostSampler(slow_interval=3600.0)
    first = await sampler.sample()
    second = await sampler.sample()
    assert sampler.slow_refreshes == 1
    assert second.filesystems is first.filesystems
    assert second.temperatures is first.temperatures and second.fans is first.fans
    assert second.slow_sampled_at == first.taken_at
    # The cheap parts are fresh on every sample.
    assert second.taken_at > first.taken_at
    assert second.network is not first.network


async def test_slow_parts_refreshed_after_interval() -> None:
    sampler = HostSampler(slow_interval=0.05)
    first = await sampler.sample()
    await asyncio.sleep(0.1)
    second = await sampler.sample()
    assert sampler.slow_refreshes == 2
    assert second.filesystems is not first.filesystems
    assert second.slow_sampled_at == second.taken_at
    assert "/" in {fs.mountpoint for fs in second.filesystems}


async def test_sample_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    psutil_threads: set[int] = set()
    real_memory = psutil.virtual_memory

    def memory() -> Any:
        psutil_threads.add(threading.get_ident())
        return real_memory()

    def slow_statvfs(path: str) -> Any:
        psutil_threads.add(threading.get_ident())
        time.sleep(0.3)  # a sluggish mount: must not freeze the loop
        return os.statvfs(path)

    monkeypatch.setattr(psutil, "virtual_memory", memory)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        snap = await HostSampler(statvfs=slow_statvfs).sample()
    finally:
        task.cancel()
    assert psutil_threads and loop_thread not in psutil_threads
    assert ticks >= 5, f"event loop starved while sampling ({ticks} ticks)"
    assert snap.memory is not None and snap.filesystems


async def test_concurrent_samples_are_serialised() -> None:
    sampler = HostSampler(slow_interval=3600.0)
    snaps = await asyncio.gather(*(sampler.sample() for _ in range(5)))
    assert sampler.slow_refreshes == 1
    assert all(s.filesystems is snaps[0].filesystems for s in snaps)
    assert sampler.latest in snaps


# -- CPU delta semantics ------------------------------------------------------

_Times = namedtuple("_Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def _times(busy: float, idle: float, iowait: float = 0.0, guest: float = 0.0) -> _Times:
    # On Linux guest time is already inside user *and* listed on its own, so
    # a naive sum() would count it twice.
    return _Times(busy, 0.0, 0.0, idle, iowait, 0.0, 0.0, 0.0, guest, 0.0)


async def test_cpu_percent_is_delta_since_previous_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter(
        [
            (_times(10, 30), [_times(5, 15), _times(5, 15)]),  # since boot: 25 %
            (_times(40, 40, guest=7), [_times(35, 15), _times(5, 25)]),  # +30 busy +10 idle
            (_times(40, 40, guest=7), [_times(35, 15), _times(5, 25)]),  # no time passed
            (_times(40, 50, iowait=10), [_times(35, 35), _times(5, 25)]),  # only waiting
        ]
    )
    current: dict[str, Any] = {}

    def cpu_times(percpu: bool = False) -> Any:
        if not percpu:
            current["total"], current["cores"] = next(readings)
            return current["total"]
        return current["cores"]

    monkeypatch.setattr(psutil, "cpu_times", cpu_times)
    sampler = HostSampler()

    first = await sampler.sample()
    assert first.cpu_percent == pytest.approx(25.0)
    assert first.cpu_per_core == pytest.approx((25.0, 25.0))
    second = await sampler.sample()
    assert second.cpu_percent == pytest.approx(75.0)
    assert second.cpu_per_core == pytest.approx((100.0, 0.0))
    third = await sampler.sample()
    assert third.cpu_percent == 0.0 and third.cpu_per_core == (0.0, 0.0)
    fourth = await sampler.sample()
    assert fourth.cpu_percent == 0.0
    assert fourth.cpu_per_core == pytest.approx((0.0, 0.0))


# -- degradation ----------------------------------------------------------------


async def test_failures_degrade_to_absent_fields_and_log_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("no /proc here")

    for name in (
        "cpu_times",
        "cpu_count",
        "getloadavg",
        "virtual_memory",
        "swap_memory",
        "net_io_counters",
        "boot_time",
        "disk_partitions",
        "sensors_temperatures",
        "sensors_fans",
    ):
        monkeypatch.setattr(psutil, name, broken)
    monkeypatch.setattr(psutil, "Process", broken)

    caplog.set_level(logging.DEBUG, logger="hydrogen.host")
    # An empty root: no /proc, no /sys (psutil, broken above, is the fallback).
    sampler = HostSampler(slow_interval=0.0, root=tmp_path, adjtimex=broken, vcgencmd=broken)
    snap = await sampler.sample()
    await sampler.sample()

    assert snap.cpu_percent is None and snap.cpu_per_core == () and snap.cpu_count is None
    assert snap.load_average is None and snap.memory is None and snap.swap is None
    assert snap.filesystems == () and snap.network == () and snap.process is None
    assert snap.temperatures == () and snap.fans == ()
    assert snap.boot_time is None and snap.uptime_seconds is None
    assert snap.cpu_times == () and snap.meminfo == () and snap.disks == ()
    assert snap.pressure == () and snap.timex is None and snap.rpi_throttled is None
    assert snap.system.sysname == os.uname().sysname

    host = snap.host_dict()
    assert set(host) == HOST_KEYS
    assert host["memory"]["total_bytes"] is None and host["cpu"]["per_core"] == []
    json.dumps(host, allow_nan=False)
    assert snap.process_dict(True, False)["totalThreads"] == 0

    messages = [r.getMessage() for r in caplog.records if r.name == "hydrogen.host"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "hydrogen.host")
    memory_logs = [m for m in messages if "memory unavailable" in m]
    assert len(memory_logs) == 1, messages  # two samples, logged once

    text = _exposition(sampler)
    families = _parse(text)
    assert "hydrogen_host_memory_total_bytes" not in families
    assert "hydrogen_host_memory_mem_total_bytes" not in families
    assert not any(name.startswith("hydrogen_host_rpi_") for name in families)
    assert "hydrogen_host_sample_timestamp_seconds" in families
    _promtool(text)


async def test_mounts_dedup_skip_images_and_report_a_failing_one(tmp_path: Path) -> None:
    """Read from a fake /proc: a bind mount is reported once, pseudo and image
    filesystems not at all, and a mount whose statvfs fails is a device error that
    stays out of the status frame."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/filesystems").write_text("nodev\tproc\nnodev\ttmpfs\n\text4\n\tvfat\n")
    (tmp_path / "proc/self/mounts").write_text(
        "/dev/vda / ext4 rw,relatime 0 0\n"
        "/dev/vda /srv/bind ext4 rw,relatime 0 0\n"  # bind mount: deduped
        "proc /proc proc rw 0 0\n"  # pseudo
        "tmpfs /run tmpfs rw 0 0\n"  # pseudo
        "/dev/loop3 /snap/core/1 squashfs ro 0 0\n"  # image: ignored
        "/dev/sdb1 /mnt/gone vfat rw 0 0\n"  # vanished
        "/dev/sdc1 /mnt/my\\040card vfat ro 0 0\n"  # a space, mounted read-only
    )
    real = os.statvfs("/")

    def statvfs(path: str) -> Any:
        if path.endswith("/mnt/gone"):
            raise PermissionError(path)
        return real

    sampler = HostSampler(root=tmp_path, statvfs=statvfs)
    snap = await sampler.sample()
    by_mount = {fs.mountpoint: fs for fs in snap.filesystems}
    assert sorted(by_mount) == ["/", "/mnt/gone", "/mnt/my card"]
    assert by_mount["/mnt/gone"].device_error and not by_mount["/"].device_error
    assert by_mount["/mnt/my card"].readonly and not by_mount["/"].readonly
    assert [fs["mountpoint"] for fs in snap.host_dict()["filesystems"]] == ["/", "/mnt/my card"]

    families = _parse(_exposition(sampler))
    error = _values(families["hydrogen_host_filesystem_device_error"])
    assert error == {
        (("device", "/dev/vda"), ("fstype", "ext4"), ("mountpoint", "/")): 0,
        (("device", "/dev/sdb1"), ("fstype", "vfat"), ("mountpoint", "/mnt/gone")): 1,
        (("device", "/dev/sdc1"), ("fstype", "vfat"), ("mountpoint", "/mnt/my card")): 0,
    }
    readonly = _values(families["hydrogen_host_filesystem_readonly"])
    assert [dict(k)["mountpoint"] for k, v in readonly.items() if v == 1] == ["/mnt/my card"]
    size = _values(families["hydrogen_host_filesystem_size_bytes"])
    assert {dict(k)["mountpoint"] for k in size} == {"/", "/mnt/my card"}  # not the failed one
    root = (("device", "/dev/vda"), ("fstype", "ext4"), ("mountpoint", "/"))
    assert size[root] == real.f_blocks * real.f_frsize
    assert _values(families["hydrogen_host_filesystem_avail_bytes"])[root] == (
        real.f_bavail * real.f_frsize
    )
    assert _values(families["hydrogen_host_filesystem_free_bytes"])[root] == (
        real.f_bfree * real.f_frsize
    )
    assert _values(families["hydrogen_host_filesystem_files_free"])[root] == real.f_ffree


async def test_thread_handoff_failure_still_returns_a_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(asyncio, "to_thread", refuse)
    sampler = HostSampler()
    snap = await sampler.sample()
    assert sampler.latest is snap
    assert snap.memory is None and snap.system.sysname
    json.dumps(snap.host_dict())


# -- Prometheus -------------------------------------------------------------------


def test_collector_is_empty_before_first_sample() -> None:
    assert _exposition(HostSampler()) == ""


def test_collector_describe_guards_against_name_clashes() -> None:
    registry = CollectorRegistry()
    registry.register(HostCollector(HostSampler()))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(HostCollector(HostSampler()))


async def test_collector_exports_the_snapshot() -> None:
    sampler = HostSampler()
    snap = await sampler.sample()
    text = _exposition(sampler)
    families = _parse(text)

    expected = {
        "hydrogen_host_cpu_seconds_total",
        "hydrogen_host_cpus",
        "hydrogen_host_load1",
        "hydrogen_host_load5",
        "hydrogen_host_load15",
        "hydrogen_host_memory_mem_total_bytes",
        "hydrogen_host_memory_mem_free_bytes",
        "hydrogen_host_memory_mem_available_bytes",
        "hydrogen_host_memory_buffers_bytes",
        "hydrogen_host_memory_cached_bytes",
        "hydrogen_host_memory_swap_total_bytes",
        "hydrogen_host_memory_swap_free_bytes",
        "hydrogen_host_filesystem_size_bytes",
        "hydrogen_host_filesystem_free_bytes",
        "hydrogen_host_filesystem_avail_bytes",
        "hydrogen_host_filesystem_files",
        "hydrogen_host_filesystem_files_free",
        "hydrogen_host_filesystem_readonly",
        "hydrogen_host_filesystem_device_error",
        "hydrogen_host_network_receive_bytes_total",
        "hydrogen_host_network_transmit_bytes_total",
        "hydrogen_host_network_receive_packets_total",
        "hydrogen_host_network_transmit_packets_total",
        "hydrogen_host_network_receive_errs_total",
        "hydrogen_host_network_transmit_errs_total",
        "hydrogen_host_network_receive_drop_total",
        "hydrogen_host_network_transmit_drop_total",
        "hydrogen_host_os_info",
        "hydrogen_host_uname_info",
        "hydrogen_host_boot_time_seconds",
        "hydrogen_host_timex_sync_status",
        "hydrogen_host_timex_offset_seconds",
        "hydrogen_host_timex_maxerror_seconds",
        "hydrogen_host_timex_estimated_error_seconds",
        "hydrogen_host_uptime_seconds",
        "hydrogen_host_sample_timestamp_seconds",
        "hydrogen_host_sample_duration_seconds",
        # DEPRECATED, one more release
        "hydrogen_host_cpu_usage_ratio",
        "hydrogen_host_cpu_core_usage_ratio",
        "hydrogen_host_memory_total_bytes",
        "hydrogen_host_memory_available_bytes",
        "hydrogen_host_swap_total_bytes",
        "hydrogen_host_swap_used_bytes",
        "hydrogen_host_filesystem_used_bytes",
        "hydrogen_host_network_receive_errors_total",
        "hydrogen_host_network_transmit_errors_total",
        "hydrogen_host_network_receive_drops_total",
        "hydrogen_host_network_transmit_drops_total",
    }
    # Disks, PSI and sensors depend on the machine; a Pi's flags are absent here.
    if Path("/proc/pressure/cpu").exists():
        expected.add("hydrogen_host_pressure_cpu_waiting_seconds_total")
    if snap.disks:
        expected |= {f"hydrogen_host_disk_{n}_total" for n in ("read_bytes", "written_bytes")}
        expected.add("hydrogen_host_disk_io_time_seconds_total")
    optional = {
        spec.name + ("_total" if spec.kind == "counter" else "")
        for spec in FAMILIES
        if "pressure" in spec.name or "temperature" in spec.name or "fan" in spec.name
    }
    assert expected <= set(families) <= expected | optional
    for family in families.values():
        assert family.documentation
        deprecated = "DEPRECATED:" in family.documentation
        assert deprecated == (family.name in {s.name for s in DEPRECATED}), family.name
    cpu = _values(families["hydrogen_host_cpu_seconds_total"])
    assert {dict(k)["mode"] for k in cpu} == {
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"
    }  # fmt: skip
    assert len(cpu) == 8 * os.cpu_count()
    assert "# TYPE hydrogen_host_network_receive_bytes_total counter" in text

    def scalar(name: str) -> float:
        (value,) = _values(families[name]).values()
        return value

    assert snap.cpu_percent is not None and snap.memory is not None and snap.swap is not None
    assert snap.load_average is not None
    assert scalar("hydrogen_host_cpu_usage_ratio") == pytest.approx(snap.cpu_percent / 100)
    assert scalar("hydrogen_host_cpus") == os.cpu_count()
    assert scalar("hydrogen_host_load1") == snap.load_average[0]
    assert scalar("hydrogen_host_load15") == snap.load_average[2]
    assert scalar("hydrogen_host_memory_total_bytes") == snap.memory.total_bytes
    assert scalar("hydrogen_host_memory_available_bytes") == snap.memory.available_bytes
    assert scalar("hydrogen_host_swap_total_bytes") == snap.swap.total_bytes
    assert scalar("hydrogen_host_swap_used_bytes") == snap.swap.used_bytes
    assert scalar("hydrogen_host_boot_time_seconds") == snap.boot_time
    assert scalar("hydrogen_host_uptime_seconds") == pytest.approx(snap.uptime_seconds)
    assert scalar("hydrogen_host_sample_timestamp_seconds") == pytest.approx(snap.taken_at)

    cores = _values(families["hydrogen_host_cpu_core_usage_ratio"])
    assert cores == {
        (("core", str(i)),): pytest.approx(p / 100) for i, p in enumerate(snap.cpu_per_core)
    }

    root = next(fs for fs in snap.filesystems if fs.mountpoint == "/")
    root_key = (("device", root.device), ("fstype", root.fstype), ("mountpoint", "/"))
    assert _values(families["hydrogen_host_filesystem_size_bytes"])[root_key] == root.total_bytes
    assert _values(families["hydrogen_host_filesystem_avail_bytes"])[root_key] == root.free_bytes
    assert (
        _values(families["hydrogen_host_filesystem_free_bytes"])[root_key]
        == root.free_for_root_bytes
    )
    assert _values(families["hydrogen_host_filesystem_used_bytes"])[root_key] == root.used_bytes

    lo = next(n for n in snap.network if n.interface == "lo")
    received = _values(families["hydrogen_host_network_receive_bytes_total"])
    sent = _values(families["hydrogen_host_network_transmit_packets_total"])
    assert received[(("device", "lo"), ("interface", "lo"))] == lo.bytes_recv
    assert sent[(("device", "lo"), ("interface", "lo"))] == lo.packets_sent
    assert len(received) == len(snap.network)

    _promtool(text)


def test_collector_reads_latest_without_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = HostSnapshot(taken_at=1_700_000_000.0, memory=MemoryUsage(100, 50, 40, 50.0))
    source = _Source(snap)

    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a scrape must not call psutil")

    monkeypatch.setattr(psutil, "virtual_memory", forbidden)
    registry = CollectorRegistry()
    registry.register(HostCollector(source))
    first = generate_latest(registry)
    assert generate_latest(registry) == first
    source.latest = HostSnapshot(taken_at=1_700_000_001.0, memory=MemoryUsage(100, 60, 30, 40.0))
    assert b"hydrogen_host_memory_available_bytes 60.0" in generate_latest(registry)


ODD = 'we"ird\\name\nwith {braces}=, ünïcödé \U0001f525'


def _synthetic() -> HostSnapshot:
    temperatures = (
        TemperatureReading("coretemp", "Package id 0", 45.0, 80.0, 100.0),
        TemperatureReading("coretemp", "Core 0", 41.5, 80.0, 100.0),
        TemperatureReading("coretemp", "Core 0", 42.5, 80.0, 100.0),  # same label twice
        TemperatureReading("nvme", "Composite", 38.85, 84.85, None),  # two drives, one chip
        TemperatureReading("nvme", "Composite", 36.85, None, None),
        TemperatureReading("cpu_thermal", "", 51.1),  # Raspberry Pi: no label
        TemperatureReading("cpu_thermal", "", 52.2),
        TemperatureReading(ODD, ODD, 1.0),
        TemperatureReading("bad\udcffbytes", "x", 2.0),  # undecodable sysfs name
    )
    fans = (
        FanReading("thinkpad", "", 2100),
        FanReading("thinkpad", "", 0),
        FanReading("nct6775", "fan1", 950),
        FanReading(ODD, ODD, 1234),
    )
    filesystems = (
        FilesystemUsage("/", "/dev/root", "ext4", 1000, 400, 500, 44.4, 600, 64, 32),
        FilesystemUsage("/", "/dev/root", "ext4", 1000, 400, 500, 44.4, 600, 64, 32),  # twice
        FilesystemUsage("/media/" + ODD, "/dev/sda1", "vfat", 10, 1, 9, 10.0, 9, 0, 0),
    )
    network = (
        NetworkCounters("lo", 1, 2, 3, 4, 5, 6, 7, 8),
        NetworkCounters("lo", 9, 9, 9, 9, 9, 9, 9, 9),  # duplicate: first wins
        NetworkCounters('wl"an\\0\n', 10, 20, 30, 40, 0, 0, 0, 0),
    )
    return HostSnapshot(
        taken_at=1_700_000_000.5,
        sample_duration_seconds=0.004,
        system=SystemInfo("Linux", "printer-pi", "6.6.0", "#1 SMP", "aarch64"),
        cpu_percent=12.5,
        cpu_per_core=(10.0, 15.0, 12.5, 12.5),
        cpu_count=4,
        load_average=(0.5, 0.25, 0.125),
        memory=MemoryUsage(8_000, 6_000, 1_500, 25.0),
        swap=SwapUsage(0, 0, 0.0),
        filesystems=filesystems,
        network=network,
        temperatures=temperatures,
        fans=fans,
        boot_time=1_699_990_000.0,
        uptime_seconds=10_000.5,
        process=ProcessUsage(3, 200_000, 50_000, 1.5, 0.5, 0.25),
        slow_sampled_at=1_699_999_995.0,
    )


def test_synthetic_sensors_duplicates_and_odd_labels() -> None:
    text = _exposition(_Source(_synthetic()))
    families = _parse(text)

    temperatures = _values(families["hydrogen_host_temperature_celsius"])
    assert len(temperatures) == len(_synthetic().temperatures)  # nothing merged or lost
    assert temperatures == {
        (("chip", "coretemp"), ("sensor", "Package id 0")): 45.0,
        (("chip", "coretemp"), ("sensor", "Core 0_0")): 41.5,
        (("chip", "coretemp"), ("sensor", "Core 0_1")): 42.5,
        (("chip", "nvme"), ("sensor", "Composite_0")): 38.85,
        (("chip", "nvme"), ("sensor", "Composite_1")): 36.85,
        (("chip", "cpu_thermal"), ("sensor", "sensor0")): 51.1,
        (("chip", "cpu_thermal"), ("sensor", "sensor1")): 52.2,
        (("chip", ODD), ("sensor", ODD)): 1.0,
        (("chip", "bad\ufffdbytes"), ("sensor", "x")): 2.0,
    }
    assert _values(families["hydrogen_host_fan_speed_rpm"]) == {
        (("chip", "thinkpad"), ("sensor", "sensor0")): 2100,
        (("chip", "thinkpad"), ("sensor", "sensor1")): 0,
        (("chip", "nct6775"), ("sensor", "fan1")): 950,
        (("chip", ODD), ("sensor", ODD)): 1234,
    }
    assert _values(families["hydrogen_host_filesystem_avail_bytes"]) == {
        (("device", "/dev/root"), ("fstype", "ext4"), ("mountpoint", "/")): 500,
        (("device", "/dev/sda1"), ("fstype", "vfat"), ("mountpoint", "/media/" + ODD)): 9,
    }
    assert _values(families["hydrogen_host_filesystem_free_bytes"]) == {
        (("device", "/dev/root"), ("fstype", "ext4"), ("mountpoint", "/")): 600,
        (("device", "/dev/sda1"), ("fstype", "vfat"), ("mountpoint", "/media/" + ODD)): 9,
    }
    assert _values(families["hydrogen_host_network_transmit_drop_total"]) == {
        (("device", "lo"), ("interface", "lo")): 8,
        (("device", 'wl"an\\0\n'), ("interface", 'wl"an\\0\n')): 0,
    }
    assert _values(families["hydrogen_host_network_transmit_drops_total"]) == {
        (("interface", "lo"),): 8,
        (("interface", 'wl"an\\0\n'),): 0,
    }
    assert _values(families["hydrogen_host_cpus"]) == {(): 4}
    assert _values(families["hydrogen_host_cpu_usage_ratio"]) == {(): 0.125}
    assert _values(families["hydrogen_host_sample_duration_seconds"]) == {(): 0.004}
    assert _values(families["hydrogen_host_cpu_core_usage_ratio"])[(("core", "3"),)] == 0.125
    _promtool(text)


def test_synthetic_host_dict() -> None:
    snap = _synthetic()
    host = snap.host_dict()
    json.dumps(host, allow_nan=False)
    assert host["cpu"] == {
        "percent": 12.5,
        "per_core": [10.0, 15.0, 12.5, 12.5],
        "count": 4,
        "load_average": [0.5, 0.25, 0.125],
    }
    assert host["temperatures"]["nvme"] == [
        {
            "label": "Composite",
            "current_celsius": 38.85,
            "high_celsius": 84.85,
            "critical_celsius": None,
        },
        {
            "label": "Composite",
            "current_celsius": 36.85,
            "high_celsius": None,
            "critical_celsius": None,
        },
    ]
    assert list(host["temperatures"]) == ["coretemp", "nvme", "cpu_thermal", ODD, "bad\udcffbytes"]
    assert host["fans"]["thinkpad"] == [{"label": "", "rpm": 2100}, {"label": "", "rpm": 0}]
    assert host["boot_time"] == "2023-11-14T19:26:40.000Z"
    assert host["sampled_at"] == "2023-11-14T22:13:20.500Z"
    assert host["uptime_seconds"] == 10_000.5
    assert snap.process_dict(running=True, shutting_down=False)["totalThreads"] == 3
    assert snap.system_dict()["machine"] == "aarch64"


def test_unique_sensor_keys_never_collide() -> None:
    pairs = [("c", "a"), ("c", "a"), ("c", "a_0"), ("c", ""), ("c", "sensor3"), ("d", "a")]
    keys = unique_sensor_keys(pairs)
    assert len(set(keys)) == len(keys) == len(pairs)
    assert keys == [
        ("c", "a_1"),  # a_0 is a real label, so the duplicates skip it
        ("c", "a_2"),
        ("c", "a_0"),
        ("c", "sensor3_0"),  # the unlabeled 4th sensor meets a real "sensor3"
        ("c", "sensor3_1"),
        ("d", "a"),
    ]


def test_clean_text() -> None:
    assert clean_text("plain ünïcödé") == "plain ünïcödé"
    assert clean_text("bad\udcffbyte") == "bad\ufffdbyte"
    assert clean_text("lone\ud800") == "lone?"
    assert clean_text(ODD) == ODD


def test_family_table_follows_naming_rules() -> None:
    names = [spec.name for spec in FAMILIES]
    assert len(set(names)) == len(names)
    for spec in FAMILIES:
        assert spec.name.startswith("hydrogen_host_") and spec.documentation
        assert not spec.name.endswith("_total")  # CounterMetricFamily adds it
        assert not spec.name.endswith("_count")  # reserved for histograms/summaries
