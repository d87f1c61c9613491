"""G-code metadata scanning: slicer formats, line counting, robustness, bounded memory."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from hydrogen.jobs.metadata import (
    MAX_LINE_BYTES,
    GcodeMetadata,
    parse_duration,
    scan_gcode,
    strip_gcode_line,
)

DATA = Path(__file__).parent / "data" / "gcode"


def reference_counts(path: Path) -> tuple[int, int]:
    """(total lines, sendable lines) the way the job runner reads a file: binary lines."""
    total = sendable = 0
    with open(path, "rb") as handle:
        for raw in handle:
            total += 1
            sendable += strip_gcode_line(raw.decode("utf-8", "replace")) is not None
    return total, sendable


def assert_counts_match_reference(path: Path, **kwargs: Any) -> GcodeMetadata:
    meta = scan_gcode(path, **kwargs)
    assert (meta.total_lines, meta.gcode_lines) == reference_counts(path)
    assert meta.size_bytes == path.stat().st_size
    return meta


# ---------------------------------------------------------------------------------------
# Slicer fixtures

EXPECTED: dict[str, dict[str, Any]] = {
    "prusaslicer.gcode": {
        "slicer": "PrusaSlicer 2.7.1",
        "estimated_seconds": 3723.0,  # normal mode, not the silent-mode estimate
        "filament_mm": 1234.56,
        "filament_g": 3.69,
        "filament_type": "PLA",
        "layer_count": 3,  # PrusaSlicer writes no total: counted ;LAYER_CHANGE lines
        "layer_height_mm": 0.15,  # layer_height, not first_layer_height
        "objects": ["Shape-Box id:0 copy 0", "Shape-Cylinder id:1 copy 0"],
        "gcode_lines": 56,
        "total_lines": 142,
        "size_bytes": 3955,
    },
    "orcaslicer.gcode": {
        "slicer": "OrcaSlicer 2.0.0",
        "estimated_seconds": 93784.0,  # 1d 2h 3m 4s
        "filament_mm": 1701.0,  # two extruders used: 1500.25 + 200.75
        "filament_g": 5.08,
        "filament_type": "PLA,PETG",  # four slots configured, the two used ones
        "layer_count": 4,
        "layer_height_mm": 0.2,
        # The firmware's labels win over the comments; the Latin-1 byte is replaced.
        "objects": ["Gear_stl_id_0_copy_0", "Caf\ufffd sign.stl id:1 copy 0"],
        "gcode_lines": 28,
        "total_lines": 88,
        "size_bytes": 2463,
    },
    "cura.gcode": {
        "slicer": "Cura_SteamEngine 5.6.0",
        "estimated_seconds": 3723.0,
        "filament_mm": 1234.56,  # 1.23456 m
        "filament_g": None,
        "filament_type": None,
        "layer_count": 3,
        "layer_height_mm": 0.2,
        "objects": ["calibration_cube.stl", "keychain.stl"],  # NONMESH excluded
        "gcode_lines": 42,
        "total_lines": 77,
        "size_bytes": 1826,
    },
    "plain.gcode": {
        "slicer": None,
        "estimated_seconds": None,
        "filament_mm": None,
        "filament_g": None,
        "filament_type": None,
        "layer_count": None,
        "layer_height_mm": None,
        "objects": [],
        "gcode_lines": 17,  # includes the N10/N11 lines, not "N12 *44" or "N13 ; ..."
        "total_lines": 24,  # the last line has no newline and still counts
        "size_bytes": 521,
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_slicer_fixture(name: str) -> None:
    path = DATA / name
    meta = assert_counts_match_reference(path)
    assert meta.as_dict() == EXPECTED[name]


def test_orca_fixture_really_has_crlf_and_latin1() -> None:
    data = (DATA / "orcaslicer.gcode").read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n") > 0
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("chunk", [4096, 4097, 1 << 16])
def test_chunk_size_does_not_change_the_result(name: str, chunk: int, tmp_path: Path) -> None:
    # Pad the fixture so its header and footer fall on different chunks.
    path = tmp_path / name
    body = (DATA / name).read_bytes()
    filler = b"G1 X1 Y2 E0.01\n" * 3000
    head, _, tail = body.partition(b"\n")
    path.write_bytes(head + b"\n" + filler + tail)
    whole = scan_gcode(path, chunk=1 << 24)
    parted = assert_counts_match_reference(path, chunk=chunk)
    assert parted == whole
    assert whole.gcode_lines == EXPECTED[name]["gcode_lines"] + 3000


def test_metadata_line_split_across_chunks(tmp_path: Path) -> None:
    line = b"; estimated printing time (normal mode) = 2h 30m\n"
    for offset in range(4096 - len(line), 4097):
        path = tmp_path / "split.gcode"
        path.write_bytes(b"G1 X0\n" + b";" * (offset - 7) + b"\n" + line + b"G1 X1\n")
        assert scan_gcode(path, chunk=4096).estimated_seconds == 9000.0, offset


# ---------------------------------------------------------------------------------------
# Other formats, written inline


def scan_text(tmp_path: Path, text: str) -> GcodeMetadata:
    path = tmp_path / "x.gcode"
    path.write_bytes(text.encode())
    return assert_counts_match_reference(path)


def test_bambu_style_header(tmp_path: Path) -> None:
    meta = scan_text(
        tmp_path,
        "; HEADER_BLOCK_START\n"
        "; BambuStudio 01.07.06.92\n"
        "; model printing time: 7m 34s; total estimated time: 15m 1s\n"
        "; total layer number: 2\n"
        "; total filament length [mm] : 216.76\n"
        "; total filament weight [g] : 0.65\n"
        "; HEADER_BLOCK_END\n"
        "G28\n",
    )
    assert meta.slicer == "BambuStudio 01.07.06.92"
    assert meta.estimated_seconds == 901.0  # the total, not the model-only time
    assert meta.layer_count == 2
    assert meta.filament_mm == 216.76
    assert meta.filament_g == 0.65


def test_cura_griffin_header(tmp_path: Path) -> None:
    meta = scan_text(
        tmp_path,
        ";START_OF_HEADER\n;FLAVOR:Griffin\n;GENERATOR.NAME:Cura_SteamEngine\n"
        ";GENERATOR.VERSION:4.5.0\n;PRINT.TIME:480\n;END_OF_HEADER\nT0\n",
    )
    assert meta.slicer == "Cura_SteamEngine 4.5.0"
    assert meta.estimated_seconds == 480.0


def test_cura_with_spaces_and_two_extruders(tmp_path: Path) -> None:
    meta = scan_text(
        tmp_path,
        "; FLAVOR:Marlin\n; TIME:15\n; Filament used: 1.5m, 0.25m\n; Layer height: 0.4\n"
        "; Generated with Cura_SteamEngine 5.4.0\nG28\n",
    )
    assert meta.estimated_seconds == 15.0
    assert meta.filament_mm == 1750.0
    assert meta.layer_height_mm == 0.4
    assert meta.slicer == "Cura_SteamEngine 5.4.0"


def test_prusaslicer_zero_grams_means_unknown(tmp_path: Path) -> None:
    meta = scan_text(
        tmp_path,
        "G1 X1\n; filament used [mm] = 2116.64\n; filament used [g] = 0.00\n"
        "; total filament used [g] = 0.00\n; estimated printing time (silent mode) = 25m 44s\n",
    )
    assert meta.filament_mm == 2116.64
    assert meta.filament_g is None
    assert meta.estimated_seconds == 1544.0  # silent mode when it is the only one


def test_superslicer_and_quoted_exclude_names(tmp_path: Path) -> None:
    meta = scan_text(
        tmp_path,
        "; generated by SuperSlicer 2.5.59.2 on 2024-02-01 at 10:00:00 UTC\n"
        "EXCLUDE_OBJECT_DEFINE NAME='my part' CENTER=1,1 POLYGON=[[0,0],[2,0],[2,2]]\n"
        "  EXCLUDE_OBJECT_DEFINE NAME=other CENTER=5,5\n"
        "EXCLUDE_OBJECT_DEFINE NAME=other CENTER=5,5\n"
        "EXCLUDE_OBJECT_DEFINE CENTER=5,5\n"
        "; printing object ignored-because-defines-win id:0 copy 0\n",
    )
    assert meta.slicer == "SuperSlicer 2.5.59.2"
    assert meta.objects == ("my part", "other")


def test_unrelated_comments_are_not_metadata(tmp_path: Path) -> None:
    meta = scan_text(
        tmp_path,
        ";TIME_ELAPSED:100\n; start printing object, unique label id: 15\n"
        "; first_layer_height = 0.3\n; layer_height_extra = 0.1\n; printing object\n"
        "; estimated first layer printing time (normal mode) = 2m\n;MESH:NONMESH\n"
        "; generated by\nG1 X1 ; filament_type = PLA\n",
    )
    assert meta == GcodeMetadata(gcode_lines=1, total_lines=9, size_bytes=meta.size_bytes)


def test_garbage_values_become_none(tmp_path: Path) -> None:
    meta = scan_text(
        tmp_path,
        "; estimated printing time (normal mode) = soon\n;TIME:-5\n"
        "; filament used [mm] = nan\n; filament used [g] = lots\n; layer_height = -0.2\n"
        "; total layers count = 1e3\n;LAYER_COUNT:99999999999999999999999999\n"
        "; filament_type = ;;\n",
    )
    assert meta.estimated_seconds is None
    assert meta.filament_mm is None and meta.filament_g is None
    assert meta.layer_height_mm is None and meta.layer_count is None
    assert meta.filament_type is None


def test_hostile_object_counts_are_bounded(tmp_path: Path) -> None:
    lines = "".join(f";MESH:{i}-{'x' * 300}\n" for i in range(1500))
    meta = scan_text(tmp_path, lines)
    assert len(meta.objects) == 1000
    assert all(len(name) == 256 for name in meta.objects)


# ---------------------------------------------------------------------------------------
# Robustness


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gcode"
    path.write_bytes(b"")
    assert scan_gcode(path) == GcodeMetadata()


@pytest.mark.parametrize(
    "data",
    [
        b"\n",
        b"\r\n\r\n",
        b"G28",
        b"\x00\x00\n\x00",
        b"\xff\xfe\xfd\n;\xff\n",
        b"N1\nN2 *3\n*4\nN\nN5*\n**5\n",
        b";" * 10 + b"\r",
    ],
)
def test_odd_small_files(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "odd.gcode"
    path.write_bytes(data)
    assert_counts_match_reference(path)


def test_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(1234)
    path = tmp_path / "noise.gcode"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(300_000)))
    assert_counts_match_reference(path, chunk=4096)


@pytest.mark.parametrize(
    "tokens",
    [
        # With N and * the scanner uses its exact pattern ...
        [" ", "\t", "\r", "\x0b", "\x0c", "N", "12", "3", "*", ";", "G1", "X", "\xa0"],
        # ... without them its fast one: both must match strip_gcode_line().
        [" ", "\t", "\r", "\x0b", "\x0c", "\x1c", "12", ";", "G1", "X", "\xa0", "\u2028"],
    ],
    ids=["numbered", "plain"],
)
def test_random_lines_agree_with_strip_gcode_line(tmp_path: Path, tokens: list[str]) -> None:
    """The byte-level counter and strip_gcode_line() must never disagree."""
    rng = random.Random(99)
    lines = []
    for _ in range(20_000):
        lines.append("".join(rng.choice(tokens) for _ in range(rng.randrange(6))))
    path = tmp_path / "mix.gcode"
    path.write_bytes("\n".join(lines).encode())
    assert_counts_match_reference(path, chunk=4096)


GIANT_LINES = {
    "comment": (b";" + b"c" * (3 * MAX_LINE_BYTES), 60.0),
    "command": (b"G1 X1 " + b"9" * (3 * MAX_LINE_BYTES), 60.0),
    "whitespace": (b" " * (3 * MAX_LINE_BYTES), 60.0),
    "whitespace-then-command": (b" " * (2 * MAX_LINE_BYTES) + b"G1 X1", 60.0),
    # Still read as metadata: the leading whitespace is skipped first.
    "whitespace-then-metadata": (
        b"\t" * (MAX_LINE_BYTES + 10) + b"; estimated printing time = 1h",
        3600.0,
    ),
}


@pytest.mark.parametrize("kind", sorted(GIANT_LINES))
@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_giant_lines(tmp_path: Path, kind: str, chunk: int) -> None:
    line, estimate = GIANT_LINES[kind]
    path = tmp_path / "long.gcode"
    path.write_bytes(b"G28\n" + line + b"\nG1 X2\n;TIME:60\n" + line)
    meta = assert_counts_match_reference(path, chunk=chunk)
    assert meta.estimated_seconds == estimate


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_gcode(tmp_path / "nope.gcode")


def test_big_file_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    layer = b";LAYER_CHANGE\n;Z:0.2\n; printing object Part id:0 copy 0\n;TYPE:Perimeter\n"
    layer += b"".join(b"G1 X%d.123 Y%d.456 E0.03456\n" % (i, i) for i in range(400))
    path = tmp_path / "big.gcode"
    layers = 0
    with open(path, "wb") as handle:
        handle.write(b"; generated by PrusaSlicer 2.7.1\n")
        while handle.tell() < 50 * 2**20:
            handle.write(layer)
            layers += 1
        handle.write(b"; estimated printing time (normal mode) = 10h 0m 0s\n")
    size = path.stat().st_size

    tracemalloc.start()
    try:
        meta = scan_gcode(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * 2**20, f"peak {peak} bytes while scanning a {size}-byte file"
    assert meta.size_bytes == size
    assert meta.total_lines == 2 + layers * 404
    assert meta.gcode_lines == layers * 400
    assert meta.layer_count == layers
    assert meta.estimated_seconds == 36000.0
    assert meta.objects == ("Part id:0 copy 0",)


# ---------------------------------------------------------------------------------------
# as_dict / from_dict


def test_as_dict_is_json_and_round_trips() -> None:
    meta = scan_gcode(DATA / "orcaslicer.gcode")
    data = json.loads(json.dumps(meta.as_dict()))
    assert GcodeMetadata.from_dict(data) == meta


@pytest.mark.parametrize(
    "change",
    [
        {"gcode_lines": None},
        {"gcode_lines": -1},
        {"total_lines": True},
        {"slicer": 3},
        {"objects": "abc"},
        {"objects": [1]},
        {"layer_count": 1.5},
        {"estimated_seconds": "1h"},
    ],
)
def test_from_dict_rejects_bad_cache(change: dict[str, Any]) -> None:
    data = {**scan_gcode(DATA / "cura.gcode").as_dict(), **change}
    with pytest.raises((TypeError, ValueError)):
        GcodeMetadata.from_dict(data)


def test_from_dict_rejects_missing_key() -> None:
    data = scan_gcode(DATA / "cura.gcode").as_dict()
    del data["layer_count"]
    with pytest.raises(KeyError):
        GcodeMetadata.from_dict(data)


# ---------------------------------------------------------------------------------------
# parse_duration / strip_gcode_line


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1d 2h 3m 4s", 93784.0),
        ("2h 3m", 7380.0),
        ("45s", 45.0),
        ("1:02:03", 3723.0),
        ("02:03", 123.0),
        ("1h 00m 00s", 3600.0),
        ("1h30m", 5400.0),
        ("12d 6h 22m 24s", 1059744.0),
        ("  9h 1m  ", 32460.0),
        ("1.5h", 5400.0),
        ("3723", 3723.0),
        ("3723.5", 3723.5),
        ("1 hours 2 minutes", 3720.0),
        ("2 days, 1 hour", 176400.0),
        ("5M 3S", 303.0),
        ("0s", 0.0),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("1h 2x", None),
        ("1h garbage", None),
        ("h", None),
        ("-5s", None),
        ("-5", None),
        ("1h 1h", None),
        ("1:60:00", None),
        ("1:00:60", None),
        ("1::2", None),
        ("nan", None),
        ("inf", None),
        ("1e400", None),
        ("9" * 400, None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("raw", "command"),
    [
        ("G28", "G28"),
        ("G28\n", "G28"),
        ("G1 X10 Y20 ; move\r\n", "G1 X10 Y20"),
        ("  \tM104 S200  ", "M104 S200"),
        ("", None),
        ("\n", None),
        ("   \r\n", None),
        ("; just a comment", None),
        ("   ;indented comment", None),
        (";", None),
        ("N123 G1 X5*57", "G1 X5"),
        ("N123 G1 X5 *57 ; c", "G1 X5"),
        ("N7G28", "G28"),
        ("N12 *44", None),
        ("N12", None),
        ("N13 ; only a comment", None),
        ("*12", None),
        ("G1 X1*", "G1 X1*"),
        ("G1 X1*1234", "G1 X1*1234"),
        ("N", "N"),
        ("NOZZLE_WIPE", "NOZZLE_WIPE"),
        ("N1 N2 G1", "N2 G1"),
        ("M117 Hello; world", "M117 Hello"),
        ("\xa0G1\xa0", "\xa0G1\xa0"),  # only ASCII whitespace is whitespace here
        ("G1 X\ufffd", "G1 X\ufffd"),
    ],
)
def test_strip_gcode_line(raw: str, command: str | None) -> None:
    assert strip_gcode_line(raw) == command
