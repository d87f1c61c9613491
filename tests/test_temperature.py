"""Temperature-report parsing, from lines real Marlin / Prusa firmware prints."""

from __future__ import annotations

import random

import pytest

from hydrogen.printers.temperature import HeaterReading, is_heating_wait, parse_temperatures

H = HeaterReading


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0",
            {"tool0": H(210.0, 210.0, 127), "bed": H(60.0, 60.0, 0)},
            id="marlin-m105",
        ),
        pytest.param(
            "T:21.20 /0.00 B:21.30 /0.00 T0:21.20 /0.00 T1:22.00 /0.00 @:0 B@:0 @0:0 @1:0",
            {"tool0": H(21.2, 0.0, 0), "tool1": H(22.0, 0.0, 0), "bed": H(21.3, 0.0, 0)},
            id="marlin-dual-extruder",
        ),
        pytest.param("T:210.00/ 210.00", {"tool0": H(210.0, 210.0)}, id="space-after-slash"),
        pytest.param("T:210.0/210.0", {"tool0": H(210.0, 210.0)}, id="no-spaces"),
        pytest.param(
            "T:200.0 /200.0 C:35.0 /40.0 @:90 C@:64",
            {"tool0": H(200.0, 200.0, 90), "chamber": H(35.0, 40.0, 64)},
            id="chamber",
        ),
        pytest.param(
            "T:20.4 /0.0 B:20.6 /0.0 T0:20.4 /0.0 @:0 B@:0 P:22.9 A:26.0",
            {
                "tool0": H(20.4, 0.0, 0),
                "bed": H(20.6, 0.0, 0),
                "probe": H(22.9, None),
                "ambient": H(26.0, None),
            },
            id="prusa-mk3-probe-ambient",
        ),
        pytest.param("T:-15.00 /0.00", {"tool0": H(-15.0, 0.0)}, id="disconnected-thermistor"),
        pytest.param(
            "T:210.00 /210.00 (3445.00) B:60.00 /60.00 (500.00) @:127 B@:0",
            {"tool0": H(210.0, 210.0, 127), "bed": H(60.0, 60.0, 0)},
            id="show-temp-adc-values",
        ),
        pytest.param(
            "T:195.31 /200.00 B:60.00 /60.00 @:127 B@:0 W:?",
            {"tool0": H(195.31, 200.0, 127), "bed": H(60.0, 60.0, 0)},
            id="marlin2-m109-wait",
        ),
        pytest.param("T:195.3 E:0 W:5", {"tool0": H(195.3, None)}, id="old-m109-wait"),
        pytest.param("T:180.0 E:1 W:?", {"tool1": H(180.0, None)}, id="old-wait-second-extruder"),
        pytest.param(
            "T:45.00 /0.00 B:40.00 /0.00 L:12.00 /10.00 M:38.50 /0.00 R:45.20 /0.00",
            {
                "tool0": H(45.0, 0.0),
                "bed": H(40.0, 0.0),
                "cooler": H(12.0, 10.0),
                "board": H(38.5, 0.0),
                "redundant": H(45.2, 0.0),
            },
            id="marlin-cooler-board-redundant",
        ),
    ],
)
def test_report_forms(line: str, expected: dict[str, HeaterReading]) -> None:
    assert parse_temperatures(line) == expected


def test_explicit_t0_wins_over_plain_t() -> None:
    # Plain T is the active tool; the explicit T0 reading is the exact one.
    heaters = parse_temperatures("T:99.0 /1.0 T0:21.2 /0.0 T1:22.0 /0.0 @:7 @0:3 @1:4")
    assert heaters == {"tool0": H(21.2, 0.0, 3), "tool1": H(22.0, 0.0, 4)}


def test_plain_power_goes_to_plain_tool_when_no_explicit_power() -> None:
    heaters = parse_temperatures("T:21.0 /0.0 T0:21.0 /0.0 T1:30.0 /0.0 @:55 B@:9")
    assert heaters is not None
    assert heaters["tool0"].power == 55
    assert heaters["tool1"].power is None


@pytest.mark.parametrize(
    "line",
    [
        "TT::",
        "T:",
        "T:abc /210",
        "T:21.2.3",
        "T:nan /0",
        "X:0.00 Y:0.00 Z:0.00 A:1.00 B:2.00 C:0.00 E:0.00 Count X:0 Y:0 Z:0",
        "B:60.0 /60.0",
        "ok N12 P15 B3",
        "echo:busy: processing",
        "Cap:AUTOREPORT_TEMP:1",
        "",
    ],
)
def test_not_a_report(line: str) -> None:
    assert parse_temperatures(line) is None


def test_malformed_entry_is_skipped_not_guessed() -> None:
    assert parse_temperatures("T:210.0 /210.0 B:6x0 /60 C:30.0 /0.0") == {
        "tool0": H(210.0, 210.0),
        "chamber": H(30.0, 0.0),
    }


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1234)
    alphabet = "TBCPA@EW:/ .-0123456789()\ufffd\x00xyz"
    for _ in range(2000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        result = parse_temperatures(line)
        assert result is None or all(isinstance(v, HeaterReading) for v in result.values())
        is_heating_wait(line)


@pytest.mark.parametrize(
    ("line", "waiting"),
    [
        ("T:195.31 /200.00 B:60.00 /60.00 @:127 B@:0 W:?", True),
        ("T:195.31 /200.00 B:60.00 /60.00 @:127 B@:0 W:3", True),
        ("T:195.3 E:0 W:?", True),
        ("T:195.3 E:0", True),
        ("T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0", False),
    ],
)
def test_heating_wait_detection(line: str, waiting: bool) -> None:
    assert is_heating_wait(line) is waiting
