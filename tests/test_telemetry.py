"""The printer telemetry tracker: acknowledged lines and firmware reports in, filament,
fans, factors and position out (hydrogen/printers/telemetry.py)."""

from __future__ import annotations

import pytest

from hydrogen.printers.telemetry import Telemetry, parse_position


def fed(*lines: str, known: bool = True) -> Telemetry:
    """A tracker that saw ``lines`` acknowledged; ``known``: starting with ``G92 E0``."""
    t = Telemetry()
    for line in ("G92 E0", *lines) if known else lines:
        t.acknowledged(line)
    return t


def test_absolute_extrusion_counts_the_e_axis_going_forward() -> None:
    t = fed("G1 X10 E1.5", "G1 X20 E4", "G0 X0", "G2 X1 Y1 I1 J0 E5", "G3 X0 Y0 I-1 J0 E6.25")
    assert t.extruded_mm == pytest.approx(6.25)


def test_relative_extrusion_with_m83() -> None:
    t = fed("M83", "G1 X1 E1", "G1 X2 E1", "G1 X3 E0.5")
    assert t.extruded_mm == pytest.approx(2.5)


def test_retraction_is_not_extruded_nor_is_the_prime_that_undoes_it() -> None:
    relative = fed("M83", "G1 E5", "G1 E-2 F2400", "G1 E2", "G1 X5 E1")
    assert relative.extruded_mm == pytest.approx(6.0)
    absolute = fed("M82", "G1 E5", "G1 E3", "G1 E5", "G1 E6")
    assert absolute.extruded_mm == pytest.approx(6.0)
    assert fed("G1 E-3").extruded_mm == 0.0


def test_g92_resets_the_e_position_without_counting() -> None:
    t = fed("G1 E10", "G92 E0", "G1 E2", "G92 E100", "G1 E101")
    assert t.extruded_mm == pytest.approx(13.0)
    assert fed("G1 E10", "G92 X0 Y0", "G1 E12").extruded_mm == pytest.approx(12.0)


def test_g91_makes_e_relative_unless_m82_after_it_and_g90_makes_it_absolute() -> None:
    assert fed("G91", "G1 E2", "G1 E2").extruded_mm == pytest.approx(4.0)
    assert fed("G91", "M82", "G1 E2", "G1 E2").extruded_mm == pytest.approx(2.0)
    assert fed("M83", "G90", "G1 E2", "G1 E2").extruded_mm == pytest.approx(2.0)
    assert fed("G90", "M83", "G1 E2", "G1 E2").extruded_mm == pytest.approx(4.0)


def test_firmware_retraction_is_ignored() -> None:
    t = fed("G1 E5", "G10", "G11", "G10 S1", "G11", "G1 E6")
    assert t.extruded_mm == pytest.approx(6.0)


def test_an_unknown_e_position_is_learned_by_the_first_absolute_move() -> None:
    t = fed("G1 E500", "G1 E501", known=False)
    assert t.extruded_mm == pytest.approx(1.0)
    # relative moves count even while the absolute position is unknown
    assert fed("M83", "G1 E2", known=False).extruded_mm == pytest.approx(2.0)


def test_a_firmware_reset_forgets_the_position_but_keeps_the_total() -> None:
    t = fed("G1 E10")
    t.firmware_reset()
    for line in ("G1 E1", "G1 E3"):  # the firmware's E may have been reset to 0: unknown
        t.acknowledged(line)
    assert t.extruded_mm == pytest.approx(12.0)


def test_the_job_figure_runs_from_begin_to_end() -> None:
    t = fed("G1 E3")
    assert t.job_extruded_mm is None
    t.begin_job()
    for line in ("G92 E0", "G1 E2", "G1 E1", "G1 E4"):
        t.acknowledged(line)
    assert t.job_extruded_mm == pytest.approx(4.0)
    assert t.extruded_mm == pytest.approx(7.0)
    t.end_job()
    assert t.job_extruded_mm is None
    assert t.as_dict()["job_filament_mm"] is None


def test_lines_other_than_moves_are_not_extrusion() -> None:
    t = fed("M117 E5 done", "M118 E1 hello", "G28", "M104 S200", "G4 S1", "T1")
    assert t.extruded_mm == 0.0


@pytest.mark.parametrize(
    ("lines", "fans"),
    [
        (["M106 S255"], {0: 1.0}),
        (["M106 S127.5"], {0: 0.5}),
        (["M106"], {0: 1.0}),
        (["M106 P1 S51", "M106 S0"], {0: 0.0, 1: 0.2}),
        (["M106 S255", "M107"], {0: 0.0}),
        (["M106 P2 S300", "M107 P1"], {1: 0.0, 2: 1.0}),
        (["M106 P8 S255", "M106 P200"], {}),  # no such fan: bounded series
    ],
)
def test_fan_speed_ratio_by_index(lines: list[str], fans: dict[int, float]) -> None:
    assert fed(*lines).fans == pytest.approx(fans)


def test_feedrate_factor_as_acknowledged_and_reported() -> None:
    t = Telemetry()
    assert t.feedrate_factor is None
    t.acknowledged("M220 S150")
    assert t.feedrate_factor == 1.5
    t.acknowledged("M220 B")
    t.acknowledged("M220 S50")
    t.acknowledged("M220 R")
    assert t.feedrate_factor == 1.5
    t.received("FR:90%")
    assert t.feedrate_factor == 0.9
    t.received("echo:FR:100%")
    assert t.feedrate_factor == 1.0


def test_flow_factor_of_the_active_tool() -> None:
    t = Telemetry()
    assert t.flow_factor is None
    t.acknowledged("M221 S95")
    assert t.flow_factor == 0.95
    t.acknowledged("M221 T1 S110")
    assert t.flow_factor == 0.95
    t.acknowledged("T1")
    assert t.flow_factor == 1.1
    t.received("echo:E1 Flow: 102%")
    assert t.flow_factor == 1.02
    t.received("echo:E0 Flow: 100%")
    assert t.flows == {0: 1.0, 1: 1.02}


@pytest.mark.parametrize(
    ("line", "position"),
    [
        (
            "X:10.00 Y:20.50 Z:0.30 E:1.00 Count X:800 Y:1640 Z:120",
            {"x": 10.0, "y": 20.5, "z": 0.3, "e": 1.0},
        ),
        ("X:-1.5 Y:0.00 Z:5.00 E:0.00", {"x": -1.5, "y": 0.0, "z": 5.0, "e": 0.0}),
        ("ok X:0.0 Y:0.0 Z:0.0 E:0.0 Count: A:0 B:0 C:0", {"x": 0, "y": 0, "z": 0, "e": 0}),
        ("ok C: X:1.0 Y:2.0 Z:3.0", {"x": 1.0, "y": 2.0, "z": 3.0}),
        ("T:20.0 /0.0 B:20.0 /0.0 @:0 B@:0", None),
        ("echo:  M206 X0.00 Y0.00 Z0.00", None),
        ("ok", None),
    ],
)
def test_position_reports(line: str, position: dict[str, float] | None) -> None:
    assert parse_position(line) == position
    t = Telemetry()
    t.received(line)
    assert t.position == position


def test_nothing_is_known_before_the_firmware_says_it_and_a_reset_forgets_it() -> None:
    t = Telemetry()
    assert t.as_dict() == {
        "filament_mm": 0.0,
        "job_filament_mm": None,
        "fans": {},
        "feedrate_factor": None,
        "flow_factor": None,
        "position": None,
    }
    for line in ("M106 S255", "M220 S120", "M221 S90", "G92 E0", "G1 E2.5"):
        t.acknowledged(line)
    t.received("X:1.00 Y:2.00 Z:3.00 E:2.50")
    assert t.as_dict() == {
        "filament_mm": 2.5,
        "job_filament_mm": None,
        "fans": {"0": 1.0},
        "feedrate_factor": 1.2,
        "flow_factor": 0.9,
        "position": {"x": 1.0, "y": 2.0, "z": 3.0, "e": 2.5},
    }
    t.firmware_reset()
    assert t.as_dict()["position"] is None and t.as_dict()["fans"] == {}
    assert t.as_dict()["filament_mm"] == 2.5
