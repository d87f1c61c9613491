"""Checks of systemd/hydrogen.service: systemd's own verdicts plus the operator's invariants.

``systemd-analyze verify`` and ``security --offline=yes`` work without systemd running as
PID 1 (containers, CI), so they run for real. ``verify`` insists that ExecStart's binary
exists, and /opt/hydrogen/venv does not on a build machine; the test therefore verifies a
copy whose ExecStart program is this interpreter (``python -m hydrogen``, arguments kept).
``--root=`` is no alternative: it makes verify look for every other unit (sysinit.target...)
under that root too. The User= account need not exist: verify does not resolve it.
verify exits 0 even for unknown keys or unparsable values (it only warns), so the tests
assert on what it prints, not just on its exit status.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "hydrogen.service"
MAX_EXPOSURE = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed"
)


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; repeated keys are kept."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    """[Service] assignments: key -> list of values, in file order."""
    out: dict[str, list[str]] = {}
    for section, key, value in parse_unit(UNIT.read_text(encoding="utf-8")):
        if section == "Service":
            out.setdefault(key, []).append(value)
    return out


def last(service: dict[str, list[str]], key: str) -> str | None:
    values = service.get(key)
    return values[-1] if values else None


def is_true(value: str | None) -> bool:
    return value is not None and value.lower() in {"1", "yes", "true", "on"}


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def verifiable_copy(directory: Path, extra: str = "") -> Path:
    """The unit with ExecStart's program replaced by this interpreter, plus ``extra`` lines."""
    text = UNIT.read_text(encoding="utf-8")
    text, count = re.subn(
        r"^ExecStart=\S+",
        lambda _: f"ExecStart={sys.executable} -m hydrogen",
        text,
        flags=re.MULTILINE,
    )
    assert count == 1
    if extra:
        text = text.replace("[Service]\n", f"[Service]\n{extra}\n", 1)
    copy = directory / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy


def unit_complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """verify's messages about our unit (not about system units it pulls in)."""
    return [line for line in result.stderr.splitlines() if "hydrogen" in line]


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    result = analyze("verify", "--man=no", str(verifiable_copy(tmp_path)))
    assert unit_complaints(result) == [], result.stderr
    assert result.returncode == 0, result.stderr


@needs_analyze
def test_verify_check_is_not_vacuous(tmp_path: Path) -> None:
    """A broken line must show up in the output the test above asserts is empty."""
    result = analyze(
        "verify", "--man=no", str(verifiable_copy(tmp_path, "Bogus=1\nProtectSystem=bananas"))
    )
    complaints = "\n".join(unit_complaints(result))
    assert "Bogus" in complaints
    assert "bananas" in complaints


@needs_analyze
def test_security_exposure_within_target() -> None:
    result = analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for hydrogen\.service: (\d+(?:\.\d+)?)", output)
    assert match, output
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, output


# --- invariants an operator relies on -------------------------------------------------


def test_notify_with_watchdog(service: dict[str, list[str]]) -> None:
    assert last(service, "Type") == "notify"
    assert last(service, "NotifyAccess") == "main"
    watchdog = last(service, "WatchdogSec")
    assert watchdog is not None
    match = re.fullmatch(r"(\d+)\s*(s|sec)?", watchdog)
    assert match, f"WatchdogSec={watchdog} should be plain seconds"
    assert int(match.group(1)) > 0


def test_restart_policy(service: dict[str, list[str]]) -> None:
    assert last(service, "Restart") == "on-failure"
    assert last(service, "RestartSec")
    assert last(service, "TimeoutStopSec")


def test_exec_start_logs_for_the_journal(service: dict[str, list[str]]) -> None:
    exec_start = last(service, "ExecStart")
    assert exec_start is not None
    assert exec_start.split()[:2] == ["/opt/hydrogen/venv/bin/hydrogen", "serve"]
    assert "--log-format journal" in exec_start
    assert "--config /etc/hydrogen/hydrogen.toml" in exec_start


def test_dedicated_user_with_serial_access(service: dict[str, list[str]]) -> None:
    assert last(service, "User") == "hydrogen"
    assert last(service, "Group") == "hydrogen"
    groups = " ".join(service.get("SupplementaryGroups", [])).split()
    assert "dialout" in groups
    assert last(service, "StateDirectory") == "hydrogen"
    assert last(service, "ConfigurationDirectory") == "hydrogen"


def test_serial_devices_allowed_others_closed(service: dict[str, list[str]]) -> None:
    assert last(service, "DevicePolicy") == "closed"
    allowed = {" ".join(value.split()) for value in service.get("DeviceAllow", [])}
    assert "char-ttyUSB rw" in allowed
    assert "char-ttyACM rw" in allowed
    # PrivateDevices= would hide /dev/ttyUSB*/ttyACM* entirely.
    assert not is_true(last(service, "PrivateDevices"))


def test_proc_stays_readable_for_metrics(service: dict[str, list[str]]) -> None:
    assert last(service, "ProcSubset") in (None, "all")
    assert last(service, "ProtectProc") in (None, "default", "invisible", "noaccess", "ptraceable")


def test_hardening_present(service: dict[str, list[str]]) -> None:
    assert last(service, "ProtectSystem") == "strict"
    assert last(service, "CapabilityBoundingSet") == ""
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "MemoryDenyWriteExecute",
        "LockPersonality",
    ):
        assert is_true(last(service, key)), key
    assert last(service, "UMask") == "0077"


SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


def test_no_secret_in_environment(service: dict[str, list[str]]) -> None:
    for value in service.get("Environment", []):
        for assignment in value.split():
            name = assignment.strip("\"'").partition("=")[0]
            assert not SECRET_NAME.search(name), f"secret-looking Environment= entry: {name}"


def test_api_key_comes_from_a_credential(service: dict[str, list[str]]) -> None:
    assert "api_key:/etc/hydrogen/api_key" in service.get("LoadCredential", [])
    # The fallback that keeps a missing key file from failing the start.
    assert any(v.startswith("api_key:") for v in service.get("SetCredential", []))


def test_parse_unit_handles_repeats_and_continuations() -> None:
    entries = parse_unit("[Service]\n# c\nA=1\nA=2\nB=x \\\n  y\n; c\n")
    assert entries == [("Service", "A", "1"), ("Service", "A", "2"), ("Service", "B", "x y")]


def test_open_files_limit_keeps_the_configured_connection_caps(
    service: dict[str, list[str]],
) -> None:
    """The gateway cannot raise RLIMIT_NOFILE under the unit (setrlimit is in the denied
    @resources), so LimitNOFILE= must be set, soft = hard, high enough that the caps
    derived from it are the configured ones (docs/protocol.md §8.5)."""
    from hydrogen.config import LimitsConfig
    from hydrogen.server.gate import file_budget

    value = last(service, "LimitNOFILE")
    assert value is not None and value.isdigit(), value  # one number: soft and hard
    limits = LimitsConfig()
    budget = file_budget(limits, printers=8, open_files=int(value))
    assert budget.websockets == limits.max_connections
    assert budget.pending == limits.max_pending_connections
    assert "@resources" in " ".join(service["SystemCallFilter"])
