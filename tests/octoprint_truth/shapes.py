"""The shape of a JSON answer (keys and JSON types, no values) and the diff of two.

A shape is JSON itself, so the recorded ground truth is a committed file:

* an object is an object of the shapes of its members;
* a list is ``[shape]`` (the members of its items merged; ``[]`` when empty);
* a scalar is its JSON type name: ``"string"``, ``"number"`` (int and float are one
  JSON type; OctoPrint itself writes ``0`` and ``0.0`` for one field), ``"boolean"``,
  ``"null"``.

An object whose keys are data (printer profiles by id) is ``{"*": shape}``: the paths
given as ``maps`` ("profiles", "temps.*") name them.

:func:`diff` lists what differs. ``"null"`` matches any type on either side: OctoPrint
answers ``null`` for any value it does not know yet (no job: ``"size": null``), so a
type is only compared where both sides know a value, and a member that is ``null`` on one
side may be absent on the other (OctoPrint itself leaves out or nulls the same member
depending on the printer's state: ``job.file.display`` before and after a print).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Shape = Any


def shape(value: Any, maps: Iterable[str] = (), _path: str = "") -> Shape:
    maps = tuple(maps)
    if isinstance(value, dict):
        if _path in maps:
            merged: Shape = None
            for item in value.values():
                merged = _merge(merged, shape(item, maps, _join(_path, "*")))
            return {"*": "null" if merged is None else merged}
        return {k: shape(v, maps, _join(_path, k)) for k, v in sorted(value.items())}
    if isinstance(value, list):
        merged = None
        for item in value:
            merged = _merge(merged, shape(item, maps, _join(_path, "[]")))
        return [] if merged is None else [merged]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge(a: Shape, b: Shape) -> Shape:
    """Two items of one list as one shape (the union of their keys)."""
    if a is None or a == "null":
        return b
    if b == "null":
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())}
    if isinstance(a, list) and isinstance(b, list):
        if not a or not b:
            return a or b
        return [_merge(a[0], b[0])]
    return a if a == b else "mixed"


def diff(truth: Shape, ours: Shape, *, subset: bool = False, _path: str = "$") -> list[str]:
    """What ``ours`` lacks, adds or types differently from ``truth``, one line each.

    With ``subset``, keys OctoPrint has and we leave out are not differences (the
    settings, of which clients read a few sections); keys we add still are.
    """
    if truth == "null" or ours == "null" or truth == "mixed":
        return []
    if isinstance(truth, dict) and isinstance(ours, dict):
        if "*" in truth and list(truth) == ["*"]:
            return [
                line
                for key, value in ours.items()
                for line in diff(truth["*"], value, subset=subset, _path=f"{_path}.{key}")
            ]
        lines = []
        for key in sorted(truth.keys() | ours.keys()):
            where = f"{_path}.{key}"
            if key not in ours:
                if not subset and truth[key] != "null":
                    lines.append(f"{where}: missing (OctoPrint has {_brief(truth[key])})")
            elif key not in truth:
                if ours[key] != "null":
                    lines.append(f"{where}: not in OctoPrint's answer")
            else:
                lines.extend(diff(truth[key], ours[key], subset=subset, _path=where))
        return lines
    if isinstance(truth, list) and isinstance(ours, list):
        if not truth or not ours:
            return []  # an empty list says nothing about its items
        return diff(truth[0], ours[0], subset=subset, _path=f"{_path}[]")
    if truth != ours:
        return [f"{_path}: {_brief(ours)}, OctoPrint has {_brief(truth)}"]
    return []


def _brief(value: Shape) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return str(value)
