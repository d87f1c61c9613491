"""Every config file shipped in config/ validates as shipped, with no environment set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.process import hydrogen

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "config").glob("*.toml"))


def test_there_is_a_shipped_config() -> None:
    assert [p.name for p in SHIPPED] == ["hydrogen.toml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_check_config_accepts_the_shipped_file(path: Path, tmp_path: Path) -> None:
    # clean_env drops every HYDROGEN_* variable: nothing may be needed from outside.
    result = hydrogen("check-config", str(path), env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: OK ("), result.stdout


def test_the_shipped_monitor_key_entry_is_ready_to_append() -> None:
    """The commented [[keys]] entry is the one the install guide appends."""
    text = (ROOT / "config" / "hydrogen.toml").read_text(encoding="utf-8")
    commented = "\n".join(
        line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line
    )
    guide = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    appended = guide.split("printf '", 1)[1].split("'", 1)[0].encode().decode("unicode_escape")
    for line in appended.strip().splitlines()[1:]:
        assert line in commented, line
