"""Host metrics read from procfs/sysfs, against fake trees under tmp_path.

Each test writes the files a kernel (or a Raspberry Pi's firmware) would show, samples
them with a real :class:`HostSampler` rooted there, and checks the scrape an operator
would see: node_exporter's names, units and labels under ``hydrogen_host_``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hydrogen.host import HostSampler, TimexStatus
from hydrogen.host_linux import adjtimex, timex_from
from hydrogen.host_rpi import THROTTLED_NODE, parse_vcgencmd, watch_undervoltage
from hydrogen.metrics.host import HostCollector

STAT = """\
cpu  300 20 100 5000 40 0 10 5 0 0
cpu0 100 10 50 2500 20 0 5 2 0 0
cpu1 200 10 50 2500 20 0 5 3 0 0
intr 12345
btime 1700000000
"""
MEMINFO = """\
MemTotal:        3884096 kB
MemFree:          123456 kB
MemAvailable:    2000000 kB
Buffers:           10240 kB
Cached:           512000 kB
SwapCached:            0 kB
SwapTotal:        102396 kB
SwapFree:         102396 kB
HugePages_Total:       0
"""
DISKSTATS = """\
 179       0 mmcblk0 9000 100 400000 5000 3000 200 100000 8000 0 12345 13000 0 0 0 0
 179       1 mmcblk0p1 100 0 2000 50 0 0 0 0 0 60 50 0 0 0 0
   8       0 sda 10 0 80 1 2 0 16 1 0 3 2 0 0 0 0
   8       1 sda1 10 0 80 1 2 0 16 1 0 3 2 0 0 0 0
   7       0 loop0 5 0 10 0 0 0 0 0 0 0 0 0 0 0 0
"""
PSI = {
    "cpu": "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "memory": "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
    "io": "some avg10=0.00 avg60=0.00 avg300=0.00 total=7000000\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=3000000\n",
}
OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def pi_tree(root: Path, *, psi: bool = True, hwmon: bool = True) -> Path:
    """A Raspberry Pi 4 as its kernel shows itself (the parts the sampler reads)."""
    write(root, "proc/stat", STAT)
    write(root, "proc/meminfo", MEMINFO)
    write(root, "proc/diskstats", DISKSTATS)
    write(root, "proc/filesystems", "nodev\tproc\n\text4\n\tvfat\n")
    write(root, "proc/self/mounts", "/dev/mmcblk0p2 / ext4 rw 0 0\n")
    write(root, "proc/sys/kernel/domainname", "(none)\n")
    write(root, "etc/os-release", OS_RELEASE)
    if psi:
        for resource, text in PSI.items():
            write(root, f"proc/pressure/{resource}", text)
    (root / "sys/class/hwmon").mkdir(parents=True)
    if hwmon:
        write(root, "sys/class/hwmon/hwmon0/name", "cpu_thermal\n")
        write(root, "sys/class/hwmon/hwmon0/temp1_input", "51121\n")
        write(root, "sys/class/hwmon/hwmon0/temp1_crit", "110000\n")
        write(root, "sys/class/hwmon/hwmon1/name", "rpi_volt\n")  # no temperature
        write(root, "sys/class/hwmon/hwmon2/name", "pwmfan\n")
        write(root, "sys/class/hwmon/hwmon2/fan1_input", "3100\n")
        write(root, "sys/class/hwmon/hwmon2/fan1_label", "case\n")
    write(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(root, "sys/class/thermal/thermal_zone0/temp", "50000\n")
    return root


def statvfs(_path: str) -> Any:
    return os.statvfs_result((4096, 4096, 1000, 600, 500, 64, 32, 32, 0, 255))


def no_timex() -> TimexStatus | None:
    return None


def no_vcgencmd() -> int | None:
    return None


def sampler(root: Path, **kwargs: Any) -> HostSampler:
    options: dict[str, Any] = {
        "root": root,
        "statvfs": statvfs,
        "adjtimex": no_timex,
        "vcgencmd": no_vcgencmd,
    }
    return HostSampler(**(options | kwargs))


def scrape(source: HostSampler) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Series name -> {sorted labels: value} from a real text-format scrape."""
    registry = CollectorRegistry()
    registry.register(HostCollector(source))
    text = generate_latest(registry).decode()
    series: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return series


async def test_node_exporter_families_from_procfs(tmp_path: Path) -> None:
    host = sampler(pi_tree(tmp_path))
    await host.sample()
    s = scrape(host)
    tick = os.sysconf("SC_CLK_TCK")

    cpu = s["hydrogen_host_cpu_seconds_total"]
    assert len(cpu) == 2 * 8  # two CPUs, eight modes; the "cpu" total line is not a CPU
    assert cpu[(("cpu", "1"), ("mode", "user"))] == 200 / tick
    assert cpu[(("cpu", "0"), ("mode", "iowait"))] == 20 / tick
    assert cpu[(("cpu", "1"), ("mode", "steal"))] == 3 / tick

    assert s["hydrogen_host_memory_mem_available_bytes"] == {(): 2000000 * 1024}
    assert s["hydrogen_host_memory_swap_free_bytes"] == {(): 102396 * 1024}
    assert "hydrogen_host_memory_swap_cached_bytes" not in s  # only the fields that matter

    # Whole disks only (node_exporter's default exclusion and SD card partitions), in
    # bytes and seconds.
    assert s["hydrogen_host_disk_read_bytes_total"] == {
        (("device", "mmcblk0"),): 400000 * 512,
        (("device", "sda"),): 80 * 512,
    }
    assert s["hydrogen_host_disk_written_bytes_total"][(("device", "mmcblk0"),)] == 100000 * 512
    assert s["hydrogen_host_disk_io_time_seconds_total"][(("device", "mmcblk0"),)] == 12.345

    assert s["hydrogen_host_pressure_cpu_waiting_seconds_total"] == {(): 2.5}
    assert s["hydrogen_host_pressure_memory_waiting_seconds_total"] == {(): 1.5}
    assert s["hydrogen_host_pressure_memory_stalled_seconds_total"] == {(): 0.5}
    assert s["hydrogen_host_pressure_io_waiting_seconds_total"] == {(): 7.0}
    assert s["hydrogen_host_pressure_io_stalled_seconds_total"] == {(): 3.0}
    assert "hydrogen_host_pressure_cpu_stalled_seconds_total" not in s

    ((os_labels, one),) = s["hydrogen_host_os_info"].items()
    assert one == 1 and dict(os_labels) == {
        "id": "debian",
        "id_like": "",
        "name": "Debian GNU/Linux",
        "pretty_name": "Debian GNU/Linux 12 (bookworm)",
        "version": "12 (bookworm)",
        "version_codename": "bookworm",
        "version_id": "12",
    }
    ((uname, _),) = s["hydrogen_host_uname_info"].items()
    assert dict(uname)["domainname"] == "(none)"
    assert dict(uname)["release"] == os.uname().release

    fs = (("device", "/dev/mmcblk0p2"), ("fstype", "ext4"), ("mountpoint", "/"))
    assert s["hydrogen_host_filesystem_size_bytes"] == {fs: 1000 * 4096}
    assert s["hydrogen_host_filesystem_free_bytes"] == {fs: 600 * 4096}
    assert s["hydrogen_host_filesystem_avail_bytes"] == {fs: 500 * 4096}
    assert s["hydrogen_host_filesystem_files"] == {fs: 64}
    assert s["hydrogen_host_filesystem_files_free"] == {fs: 32}
    assert s["hydrogen_host_filesystem_readonly"] == {fs: 0}

    # hwmon: chip from its name file, sensor from the label, else the channel name.
    assert s["hydrogen_host_temperature_celsius"] == {
        (("chip", "cpu_thermal"), ("sensor", "temp1")): 51.121
    }
    assert s["hydrogen_host_fan_speed_rpm"] == {(("chip", "pwmfan"), ("sensor", "case")): 3100}
    # Not a Pi's firmware node here: no throttling series at all.
    assert not [name for name in s if name.startswith("hydrogen_host_rpi_")]
    assert "hydrogen_host_timex_sync_status" not in s  # adjtimex unavailable: absent


async def test_without_psi_or_hwmon(tmp_path: Path) -> None:
    """An older kernel: no /proc/pressure (no series), and no hwmon temperature, so the
    thermal zones are used."""
    host = sampler(pi_tree(tmp_path, psi=False, hwmon=False))
    await host.sample()
    s = scrape(host)
    assert not [name for name in s if "pressure" in name]
    assert s["hydrogen_host_temperature_celsius"] == {
        (("chip", "cpu-thermal"), ("sensor", "thermal_zone0")): 50.0
    }
    assert "hydrogen_host_fan_speed_rpm" not in s


async def test_timex_exported_as_node_exporter_reads_it(tmp_path: Path) -> None:
    # STA_PLL | STA_NANO, synchronised: the offset is in nanoseconds.
    synced = timex_from(status=0x2001, offset=-1_500_000, maxerror=12_000, esterror=300)
    host = sampler(pi_tree(tmp_path), adjtimex=lambda: synced)
    await host.sample()
    s = scrape(host)
    assert s["hydrogen_host_timex_sync_status"] == {(): 1}
    assert s["hydrogen_host_timex_offset_seconds"] == {(): -0.0015}
    assert s["hydrogen_host_timex_maxerror_seconds"] == {(): 0.012}
    assert s["hydrogen_host_timex_estimated_error_seconds"] == {(): 0.0003}
    # STA_UNSYNC, offset in microseconds.
    unsynced = timex_from(status=0x0040, offset=250, maxerror=16_000_000, esterror=0)
    assert unsynced == TimexStatus(False, 0.00025, 16.0, 0.0)


def test_adjtimex_reads_this_kernel() -> None:
    status = adjtimex()
    if status is None:
        pytest.skip("no adjtimex in this libc")
    assert status.maxerror_seconds >= 0 and status.estimated_error_seconds >= 0
    assert abs(status.offset_seconds) < 3600


async def test_raspberry_pi_throttling_flags(tmp_path: Path) -> None:
    root = pi_tree(tmp_path)
    # Under-voltage now and since boot, throttled since boot (0x50001).
    write(root, THROTTLED_NODE, "50001\n")
    host = sampler(root)
    await host.sample()
    s = scrape(host)
    flags = {name: v[()] for name, v in s.items() if name.startswith("hydrogen_host_rpi_")}
    assert flags == {
        "hydrogen_host_rpi_undervoltage": 1,
        "hydrogen_host_rpi_frequency_capped": 0,
        "hydrogen_host_rpi_throttled": 0,
        "hydrogen_host_rpi_soft_temperature_limit": 0,
        "hydrogen_host_rpi_undervoltage_occurred": 1,
        "hydrogen_host_rpi_frequency_capped_occurred": 0,
        "hydrogen_host_rpi_throttled_occurred": 1,
        "hydrogen_host_rpi_soft_temperature_limit_occurred": 0,
    }


async def test_vcgencmd_when_the_firmware_node_is_absent(tmp_path: Path) -> None:
    assert parse_vcgencmd("throttled=0x80008\n") == 0x80008
    assert parse_vcgencmd("VCHI initialization failed") is None
    host = sampler(pi_tree(tmp_path), vcgencmd=lambda: 0x80008)
    await host.sample()
    s = scrape(host)
    assert s["hydrogen_host_rpi_soft_temperature_limit"] == {(): 1}
    assert s["hydrogen_host_rpi_soft_temperature_limit_occurred"] == {(): 1}
    assert s["hydrogen_host_rpi_undervoltage"] == {(): 0}


async def test_undervoltage_during_a_print_notifies_once(tmp_path: Path) -> None:
    root = pi_tree(tmp_path)
    node = root / THROTTLED_NODE
    write(root, THROTTLED_NODE, "0\n")
    notes: list[tuple[Any, ...]] = []
    printing: list[str] = []
    host = sampler(root, slow_interval=3600.0)
    watch_undervoltage(host, lambda *a, **k: notes.append((*a, k)), lambda: printing)

    await host.sample()
    node.write_text("50005\n")  # under-voltage, but nothing printing: no notification
    await host.sample()
    assert notes == []

    node.write_text("0\n")  # a reboot would clear it; here the "now" bit drops
    await host.sample()
    printing.append("mk3")
    node.write_text("50005\n")  # appears again during a print
    await host.sample()
    await host.sample()  # still there: not a new appearance
    assert len(notes) == 1
    level, event, message, details = notes[0]
    assert (level, event) == ("error", "host_undervoltage")
    assert "Under-voltage" in message
    assert details == {"printers": ["mk3"], "throttled": "0x50005"}

    # After a reboot (flags clear), a dip shorter than the sampling interval: only the
    # sticky "since boot" bit shows it, and that is enough.
    node.write_text("0\n")
    await host.sample()
    notes.clear()
    node.write_text("10000\n")
    await host.sample()
    assert [n[1] for n in notes] == ["host_undervoltage"]
