"""Which of the host's filesystems holds the state dir: one info series the
StateDiskNearlyFull alert joins on (hydrogen/metrics/state_dir.py)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from hydrogen.host_snapshot import FilesystemUsage, HostSnapshot
from hydrogen.metrics.host import HostCollector
from hydrogen.metrics.state_dir import StateDirFilesystem

#: path -> device number, as os.stat would say; /srv/hydrogen is a bind mount of /data.
DEVICES = {"/": 1, "/data": 2, "/srv/hydrogen": 2, "/boot/firmware": 3, "/var/lib/h": 1}


def fake_stat(looked_at: list[str]):
    def stat(path: str) -> os.stat_result:
        looked_at.append(path)
        if path not in DEVICES:
            raise FileNotFoundError(path)
        return SimpleNamespace(st_dev=DEVICES[path])  # type: ignore[return-value]

    return stat


def test_the_filesystem_is_told_by_its_device_not_by_the_path() -> None:
    looked_at: list[str] = []
    fs = StateDirFilesystem(Path("/srv/hydrogen"), stat=fake_stat(looked_at))
    assert fs.mountpoint(["/", "/boot/firmware", "/data"]) == "/data"
    assert (
        StateDirFilesystem(Path("/var/lib/h"), stat=fake_stat([])).mountpoint(["/", "/data"]) == "/"
    )
    # Every path was looked at once: later scrapes do no I/O.
    looked_at.clear()
    assert fs.mountpoint(["/", "/boot/firmware", "/data"]) == "/data"
    assert looked_at == []


def test_a_state_dir_on_an_unreported_filesystem_or_missing_has_no_series() -> None:
    looked_at: list[str] = []
    missing = StateDirFilesystem(Path("/nowhere"), stat=fake_stat(looked_at))
    assert missing.mountpoint(["/", "/data"]) is None
    assert missing.mountpoint(["/", "/data"]) is None
    assert looked_at == ["/nowhere", "/nowhere"]  # looked for again until it exists
    on_tmpfs = StateDirFilesystem(Path("/boot/firmware"), stat=fake_stat([]))
    assert on_tmpfs.mountpoint(["/", "/data"]) is None


def test_the_host_collector_exports_one_series_for_the_real_state_dir(tmp_path: Path) -> None:
    """The real stat: tmp_path is on the filesystem mounted at its mount point."""
    mount = tmp_path
    while not os.path.ismount(mount):
        mount = mount.parent
    usage = FilesystemUsage(str(mount), "/dev/x", "ext4", 1000, 400, 500, 44.4, 600, 64, 32)
    source = SimpleNamespace(latest=HostSnapshot(taken_at=1.0, filesystems=(usage,)))
    registry = CollectorRegistry()
    registry.register(HostCollector(source, tmp_path))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    series = [line for line in text.splitlines() if line.startswith("hydrogen_host_state_dir")]
    assert series == [f'hydrogen_host_state_dir_filesystem_info{{mountpoint="{mount}"}} 1.0']
    without = CollectorRegistry()
    without.register(HostCollector(source))  # type: ignore[arg-type]
    assert "state_dir" not in generate_latest(without).decode()
