"""What a G-code file says about itself, and which of its lines get sent.

Why it is built this way:

* Uploads can be hundreds of megabytes, so :func:`scan_gcode` streams the file
  in fixed-size binary chunks and never holds more than a chunk (plus one
  bounded partial line) in memory. The per-line work runs inside ``re`` over a
  whole chunk at a time instead of a Python loop per line, which keeps a
  50 MB file well under a second.
* Slicers write their metadata in different places: Cura at the *start*,
  PrusaSlicer/SuperSlicer at the *end* (statistics, then the whole config
  block), OrcaSlicer/BambuStudio in both. So the whole file is scanned, not
  just a head and a tail: object labels are spread through the body too, and
  sequential ("one object at a time") prints only reach later objects late.
* ``gcode_lines`` is the number of lines the job runner will actually send. It
  must agree exactly with :func:`strip_gcode_line` applied to every line the
  runner reads (it reads the file in binary and splits on ``\\n`` only), or a
  finished job would show 99 % or 101 %. The byte-level pattern that counts
  skipped lines (:data:`_SKIPPED_LINE`) is written as the mirror image of
  :func:`strip_gcode_line`, and the tests check the two against each other.
* Nothing a file contains may raise: a missing or unparsable field is
  ``None``. Only failing to read the file at all (``OSError``) propagates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydrogen.jobs.durations import parse_duration

__all__ = [
    "GcodeMetadata",
    "parse_duration",
    "scan_gcode",
    "strip_gcode_line",
]

#: Whitespace as G-code sees it. Deliberately ASCII only and *not* ``str.strip()``'s
#: set (which includes NBSP, U+2028, ``\x1c``..): the byte scanner must agree with it.
_WHITESPACE = " \t\r\n\f\v"
#: Bytes of a line kept for classification and metadata; the rest of a longer line
#: may be skipped, so one absurd newline-less "line" cannot use unbounded memory. Such
#: a line is then judged by its first 64 KiB after any leading whitespace, which agrees
#: with judging the whole line unless those 64 KiB are all one line number or checksum.
MAX_LINE_BYTES = 64 * 1024
#: Distinct object names kept per source (a hostile file could invent millions).
MAX_OBJECTS = 1000
MAX_OBJECT_NAME = 256
#: Longest metadata value considered (thumbnails and config lines can be long).
_MAX_VALUE = 4096

# ---------------------------------------------------------------------------------------
# One line


_LINE_NUMBER = re.compile(r"N[0-9]+[ \t\r\f\v]*")
_CHECKSUM = re.compile(r"\*[0-9]{1,3}$")


def strip_gcode_line(raw: str) -> str | None:
    """The command of one file line as the gateway will send it, or None to skip it.

    Removes a ``;`` comment and surrounding whitespace. A leading line number
    (``N123``) and a trailing checksum (``*71``) that some exporters leave in
    are dropped as well: the gateway numbers and checksums lines itself, and a
    stale number would make the firmware ask for resends forever.
    """
    text = raw.partition(";")[0].strip(_WHITESPACE)
    if not text:
        return None
    if text[0] == "N":
        number = _LINE_NUMBER.match(text)
        if number is not None:
            text = text[number.end() :]
    if "*" in text:
        text = _CHECKSUM.sub("", text).rstrip(_WHITESPACE)
    return text or None


# The b"\n" before a line for which strip_gcode_line() returns None: blank, comment
# only, or nothing but a line number and/or checksum. Mirrors the steps above:
# whitespace, optional N<digits>, optional *<1-3 digits>, optional comment. The line
# itself is only looked at (lookahead), so each match is the cached 1-byte b"\n" and
# counting a million of them allocates next to nothing.
#
# The exact pattern's optional groups cost the regex engine an allocation per line,
# so blocks in which no line starts with N or * (all slicer output) are counted with
# the simpler pattern it reduces to there: the first non-blank byte is ; or the end.
_NUMBERED_LINE = re.compile(rb"\n[ \t\r\f\v]*[N*]")
_BLANK_OR_COMMENT = re.compile(rb"\n(?=[ \t\r\f\v]*[;\n])")
_SKIPPED_LINE = re.compile(
    rb"\n(?=[ \t\r\f\v]*(?:N[0-9]+[ \t\r\f\v]*)?(?:\*[0-9]{1,3}[ \t\r\f\v]*)?(?:;[^\n]*)?\n)"
)


# ---------------------------------------------------------------------------------------
# The metadata


@dataclass(frozen=True)
class GcodeMetadata:
    """What a G-code file declares about itself plus what scanning it measured.

    Slicer fields are ``None`` when the file does not say (hand-written files,
    unknown slicers); the three counts are always measured.
    """

    slicer: str | None = None
    estimated_seconds: float | None = None
    filament_mm: float | None = None
    filament_g: float | None = None
    filament_type: str | None = None
    layer_count: int | None = None
    layer_height_mm: float | None = None
    objects: tuple[str, ...] = ()
    #: Lines that will be sent (see :func:`strip_gcode_line`).
    gcode_lines: int = 0
    #: Lines in the file (a last line without a newline counts).
    total_lines: int = 0
    size_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objects"] = list(self.objects)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GcodeMetadata:
        """Rebuild from :meth:`as_dict` output (a metadata cache on disk).

        Strict on purpose: a missing key or a wrong type raises ``KeyError``,
        ``TypeError`` or ``ValueError`` so the caller rescans the file rather
        than trusting a cache written by another version.
        """

        def optional(key: str, kind: type | tuple[type, ...]) -> Any:
            value = data[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise TypeError(f"{key}: expected {kind}, got {type(value).__name__}")
            return value

        def count(key: str) -> int:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key}: expected a count, got {value!r}")
            return value

        objects = data["objects"]
        if not isinstance(objects, list | tuple) or not all(isinstance(o, str) for o in objects):
            raise TypeError("objects: expected a list of names")
        number = (int, float)
        estimated = optional("estimated_seconds", number)
        filament_mm = optional("filament_mm", number)
        filament_g = optional("filament_g", number)
        layer_height = optional("layer_height_mm", number)
        return cls(
            slicer=optional("slicer", str),
            estimated_seconds=None if estimated is None else float(estimated),
            filament_mm=None if filament_mm is None else float(filament_mm),
            filament_g=None if filament_g is None else float(filament_g),
            filament_type=optional("filament_type", str),
            layer_count=optional("layer_count", int),
            layer_height_mm=None if layer_height is None else float(layer_height),
            objects=tuple(objects),
            gcode_lines=count("gcode_lines"),
            total_lines=count("total_lines"),
            size_bytes=count("size_bytes"),
        )


# ---------------------------------------------------------------------------------------
# Scanning

# Metadata comments. Every pattern starts with the b"\n" that ends the previous line
# (each block is scanned with one prepended), so a match always starts a line.
_META = re.compile(
    rb"\n[ \t]*;[ \t]*(?P<key>"
    rb"generated by|Generated with|GENERATOR\.NAME:|GENERATOR\.VERSION:|BambuStudio"
    rb"|estimated printing time|model printing time|PRINT\.TIME:|TIME:"
    rb"|total filament used \[g\]|filament used \[g\]|total filament weight \[g\]"
    rb"|filament used \[mm\]|filament used \[m\]|total filament length \[mm\]|Filament used:"
    rb"|filament_type|layer_height|Layer height:"
    rb"|total layers count|total layer number|LAYER_COUNT:"
    rb"|printing object|MESH:"
    rb")(?P<value>[^\n]*)"
)
_EXCLUDE_DEFINE = re.compile(rb"\n[ \t]*EXCLUDE_OBJECT_DEFINE[ \t]+(?P<args>[^\n]*)")
_EXCLUDE_NAME = re.compile(r"""(?:^|\s)NAME=(?:"([^"]*)"|'([^']*)'|([^\s;]+))""", re.IGNORECASE)
_LAYER_CHANGE = re.compile(rb"\n;LAYER_CHANGE\r?(?=\n)")
_SEPARATED = re.compile(r"^\s*[=:]\s*(.*)$", re.DOTALL)
_TIME_MODE = re.compile(r"^\s*(?:\((?P<mode>[^)]*)\))?\s*[=:]\s*(?P<value>.*)$", re.DOTALL)
_TOTAL_ESTIMATED = re.compile(r";\s*total estimated time\s*:\s*([^;]*)")
_SLICER_TOKENS = re.compile(r"([A-Za-z][\w.\-]*)(?:\s+v?([0-9][\w.\-]*))?")

# Ranks for the estimate: several may be present, the lowest rank wins.
_TIME_RANKS = {"normal": 0, "total": 1, "plain": 2, "cura": 3, "model": 4, "other": 5}


class _Collector:
    """Accumulates the metadata found in successive blocks of complete lines."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}  # first value seen for each key
        self.times: dict[int, float] = {}
        self.generator_name: str | None = None
        self.generator_version: str | None = None
        self.layer_changes = 0
        self.comment_objects: dict[str, None] = {}
        self.defined_objects: dict[str, None] = {}
        self.meshes: dict[str, None] = {}
        self.total_lines = 0
        self.skipped_lines = 0

    # -- per block -------------------------------------------------------------------------
    def block(self, block: bytes) -> None:
        """``block`` is b"\\n" + complete lines, each ending in b"\\n"."""
        self.total_lines += block.count(b"\n") - 1
        skipped = _SKIPPED_LINE if _NUMBERED_LINE.search(block) else _BLANK_OR_COMMENT
        self.skipped_lines += len(skipped.findall(block))
        if b";" in block:
            for match in _META.finditer(block):
                self._meta(match.group("key"), match.group("value")[:_MAX_VALUE])
            if b";LAYER_CHANGE" in block:
                self.layer_changes += len(_LAYER_CHANGE.findall(block))
        if b"EXCLUDE_OBJECT_DEFINE" in block:
            for match in _EXCLUDE_DEFINE.finditer(block):
                self._exclude_define(match.group("args")[:_MAX_VALUE])

    def _meta(self, raw_key: bytes, raw_value: bytes) -> None:
        key = raw_key.decode("ascii")
        value = raw_value.decode("utf-8", "replace").strip(_WHITESPACE)
        if key == "printing object":
            if raw_value[:1] in (b" ", b"\t"):
                _remember(self.comment_objects, value)
        elif key == "MESH:":
            if value != "NONMESH":
                _remember(self.meshes, value)
        elif key == "estimated printing time":
            match = _TIME_MODE.match(value)
            if match is not None:
                mode = (match.group("mode") or "").strip().lower()
                rank = "plain" if not mode else "normal" if mode == "normal mode" else "other"
                self._time(rank, match.group("value"))
        elif key == "model printing time":
            # BambuStudio/Orca: "; model printing time: 7m 34s; total estimated time: 15m 1s"
            total = _TOTAL_ESTIMATED.search(value)
            if total is not None:
                self._time("total", total.group(1))
            match = _SEPARATED.match(value.partition(";")[0])
            if match is not None:
                self._time("model", match.group(1))
        elif key in ("TIME:", "PRINT.TIME:"):
            self._time("cura", value)
        elif key == "GENERATOR.NAME:":
            self.generator_name = self.generator_name or value or None
        elif key == "GENERATOR.VERSION:":
            self.generator_version = self.generator_version or value or None
        elif key in ("generated by", "Generated with", "BambuStudio"):
            if raw_value[:1] in (b" ", b"\t") and "slicer" not in self.first:
                self.first["slicer"] = f"{key} {value}" if key == "BambuStudio" else value
        elif key.endswith(":"):
            self.first.setdefault(key, value)
        else:
            match = _SEPARATED.match(value)
            if match is not None:
                self.first.setdefault(key, match.group(1))

    def _time(self, rank: str, text: str) -> None:
        seconds = parse_duration(text.strip())
        if seconds is not None:
            self.times.setdefault(_TIME_RANKS[rank], seconds)

    def _exclude_define(self, raw_args: bytes) -> None:
        match = _EXCLUDE_NAME.search(raw_args.decode("utf-8", "replace"))
        if match is not None:
            _remember(self.defined_objects, next(g for g in match.groups() if g is not None))

    # -- the result -----------------------------------------------------------------------
    def result(self, size_bytes: int) -> GcodeMetadata:
        first = self.first
        per_extruder_mm = _numbers(first.get("filament used [mm]"))
        filament_mm = _total(per_extruder_mm)
        if filament_mm is None:
            filament_mm = _total(_numbers(first.get("total filament length [mm]")))
        if filament_mm is None:
            metres = _total(_numbers(first.get("filament used [m]")))
            metres = metres if metres is not None else _total(_cura_metres(first))
            filament_mm = None if metres is None else round(metres * 1000.0, 6)
        # The first non-zero weight: PrusaSlicer writes 0.00 g when the filament profile
        # has no density, which means "unknown", not "weightless".
        weights = ("total filament used [g]", "filament used [g]", "total filament weight [g]")
        filament_g = next(
            (grams for key in weights if (grams := _total(_numbers(first.get(key))))), None
        )
        layer_count = _count(first.get("total layers count"))
        for key in ("total layer number", "LAYER_COUNT:"):
            layer_count = layer_count if layer_count is not None else _count(first.get(key))
        if layer_count is None and self.layer_changes:
            layer_count = self.layer_changes
        layer_height = _positive(first.get("layer_height"))
        if layer_height is None:
            layer_height = _positive(first.get("Layer height:"))
        # Objects: the firmware's own labels when the file defines them (they are what
        # an exclude/cancel command names), else the slicer's comments, else Cura meshes.
        objects = self.defined_objects or self.comment_objects or self.meshes
        return GcodeMetadata(
            slicer=self._slicer(),
            estimated_seconds=self.times[min(self.times)] if self.times else None,
            filament_mm=filament_mm,
            filament_g=filament_g,
            filament_type=_filament_type(first.get("filament_type"), per_extruder_mm),
            layer_count=layer_count,
            layer_height_mm=layer_height,
            objects=tuple(objects),
            gcode_lines=self.total_lines - self.skipped_lines,
            total_lines=self.total_lines,
            size_bytes=size_bytes,
        )

    def _slicer(self) -> str | None:
        text = self.first.get("slicer")
        if text is None and self.generator_name:
            text = f"{self.generator_name} {self.generator_version or ''}"
        if not text:
            return None
        # "PrusaSlicer 2.7.1+win64 on 2024-01-10 at 12:00:00 UTC" -> "PrusaSlicer 2.7.1"
        match = _SLICER_TOKENS.match(text.strip())
        if match is None:
            return None
        name, version = match.groups()
        if version:
            version = version.partition("+")[0]
        return f"{name} {version}" if version else name


def _remember(names: dict[str, None], name: str) -> None:
    name = name.strip(_WHITESPACE)[:MAX_OBJECT_NAME]
    if name and len(names) < MAX_OBJECTS:
        names.setdefault(name)


def _numbers(text: str | None) -> list[float] | None:
    """``"1234.5, 0.0"`` -> [1234.5, 0.0] (one value per extruder); None if not all numbers."""
    if text is None:
        return None
    values: list[float] = []
    for part in re.split(r"[,;]", text):
        part = part.strip().strip("\"'")
        try:
            value = float(part)
        except ValueError:
            return None
        if not math.isfinite(value) or value < 0:
            return None
        values.append(value)
    return values


def _cura_metres(first: dict[str, str]) -> list[float] | None:
    """Cura's ``;Filament used: 1.23456m, 0m`` -> metres per extruder."""
    text = first.get("Filament used:")
    if text is None:
        return None
    return _numbers(",".join(p.strip().removesuffix("m") for p in text.split(",")))


def _total(values: list[float] | None) -> float | None:
    return round(sum(values), 6) if values else None


def _count(text: str | None) -> int | None:
    if text is None or not text.strip().isascii() or not text.strip().isdigit():
        return None
    value = int(text.strip())
    return value if value < 1 << 62 else None


def _positive(text: str | None) -> float | None:
    values = _numbers(text)
    if not values or len(values) != 1 or values[0] <= 0:
        return None
    return values[0]


def _filament_type(text: str | None, per_extruder_mm: list[float] | None) -> str | None:
    """``"PLA;PETG;PLA"`` -> ``"PLA,PETG"``; only extruders that are used, when known.

    Multi-material slicers list a type for every slot (an AMS has four) even if
    the print uses one, so the per-extruder filament lengths filter the list.
    """
    if text is None:
        return None
    types = [t.strip().strip("\"'").strip() for t in re.split(r"[;,]", text)]
    if per_extruder_mm and len(per_extruder_mm) == len(types) and any(per_extruder_mm):
        types = [t for t, used in zip(types, per_extruder_mm, strict=True) if used > 0]
    unique = list(dict.fromkeys(t for t in types if t))
    return ",".join(unique)[:200] if unique else None


def scan_gcode(path: str | Path, *, chunk: int = 1 << 20) -> GcodeMetadata:
    """Stream ``path`` once and return its metadata and line counts.

    Memory stays around three ``chunk``\\ s whatever the file size. Raises only
    ``OSError`` when the file cannot be read; the contents never raise.
    """
    chunk = max(4096, int(chunk))
    found = _Collector()
    size = 0
    pending = b""  # the start of a line whose end has not been read yet
    skipping = False  # inside an over-long line already accounted for
    with open(path, "rb") as handle:
        while data := handle.read(chunk):
            size += len(data)
            if skipping:
                newline = data.find(b"\n")
                if newline < 0:
                    continue
                data = data[newline + 1 :]
                skipping = False
            last = data.rfind(b"\n")
            if last < 0:
                pending += data
            else:
                found.block(b"".join((b"\n", pending, data[: last + 1])))
                pending = data[last + 1 :]
            if len(pending) > MAX_LINE_BYTES:
                # Leading whitespace never changes what a line is, so drop it first.
                head = pending.lstrip(b" \t\r\f\v")[:MAX_LINE_BYTES]
                if not head:
                    pending = b" "  # only whitespace so far: the line is still undecided
                else:
                    found.block(b"\n" + head + b"\n")
                    pending, skipping = b"", True
    if pending:
        found.block(b"\n" + pending + b"\n")
    return found.result(size)
