"""docs/metrics.md cannot drift from the code.

The reference table is generated from the collectors' FamilySpec tables and must equal
the one in the docs; every metric name the prose and the mapping tables mention must be
one a collector declares; and every collector's family is in the docs.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from hydrogen.metrics.reference import SOURCES, exposed_name, reference_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
BEGIN = "<!-- metrics-reference: begin -->\n"
END = "<!-- metrics-reference: end -->"


def declared() -> set[str]:
    return {exposed_name(spec) for _, _, specs in SOURCES for spec in specs}


def expand(name: str) -> list[str]:
    """``a_{receive,transmit}_b`` -> both names."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def test_reference_table_is_generated_from_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    table = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert table == reference_table(), (
        "docs/metrics.md's reference is stale: paste `python -m hydrogen.metrics.reference`"
    )


def test_every_name_the_docs_mention_is_exported_by_a_collector() -> None:
    text = DOC.read_text(encoding="utf-8").split(BEGIN, 1)[0]
    mentioned = set()
    for code in re.findall(r"`([^`]+)`", text):
        # ``{a,b}`` followed by ``_`` is alternation; at the end it is a label list.
        for token in re.findall(r"hydrogen_(?:[a-z0-9_]|\{[a-z,]+\}(?=_))*[a-z0-9]", code):
            mentioned.update(expand(token))
    names = declared()
    # A name with a suffix left out (``hydrogen_host_load1``, then ``load5``) is fine; a
    # name no collector declares is a renamed metric the docs still promise.
    unknown = {n for n in mentioned if n not in names and n != "hydrogen_host"}
    assert not unknown, f"docs/metrics.md mentions metrics no collector exports: {unknown}"
    assert len(mentioned) > 60


def test_every_family_is_in_the_reference() -> None:
    reference = DOC.read_text(encoding="utf-8").split(BEGIN, 1)[1]
    missing = {name for name in declared() if f"`{name}`" not in reference}
    assert not missing
