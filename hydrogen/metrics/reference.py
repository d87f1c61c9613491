"""The metrics reference table of docs/metrics.md, generated from the FamilySpec tables.

``python -m hydrogen.metrics.reference`` prints it; tests/test_metrics_docs.py fails when
the table in the docs differs, so the reference cannot drift from the code.
"""

from __future__ import annotations

from hydrogen.metrics import gateway, host, jobs, printers, registry
from hydrogen.metrics.families import FamilySpec

__all__ = ["INFO_LABELS", "SOURCES", "exposed_name", "reference_table", "unit_of"]

#: (collector, what it reads, its families) in exposition order.
SOURCES: tuple[tuple[str, str, tuple[FamilySpec, ...]], ...] = (
    ("gateway", "gateway counters", gateway.FAMILIES),
    ("host", "host snapshot", host.FAMILIES),
    ("printers", "printer state", printers.FAMILIES),
    ("jobs", "job manager", jobs.FAMILIES),
    ("connections", "connection gate", gateway.GATE_FAMILIES),
    ("scrape", "each collector's run", registry.FAMILIES),
)

#: The labels an info family's value carries (beside its own labels).
INFO_LABELS = {
    "hydrogen_build": ("version", "python"),
    "hydrogen_host_os": (
        "id", "id_like", "name", "pretty_name", "version", "version_codename", "version_id",
    ),
    "hydrogen_host_uname": ("domainname", "machine", "nodename", "release", "sysname", "version"),
    "hydrogen_printer": ("firmware", "machine_type", "protocol"),
    "hydrogen_job_file": ("file",),
}  # fmt: skip

_UNITS = (
    ("_seconds", "seconds"),
    ("_bytes", "bytes"),
    ("_celsius", "°C"),
    ("_meters", "meters"),
    ("_factor_ratio", "ratio (1 = 100 %)"),
    ("_ratio", "ratio 0..1"),
    ("_rpm", "rpm"),
)


def exposed_name(spec: FamilySpec) -> str:
    """The sample name a scrape shows (counters end in ``_total``, info in ``_info``)."""
    return spec.name + {"counter": "_total", "info": "_info"}.get(spec.kind, "")


def unit_of(spec: FamilySpec) -> str:
    for suffix, unit in _UNITS:
        if spec.name.endswith(suffix):
            return unit
    if spec.kind == "info":
        return "1 (labels)"
    if spec.kind == "histogram":
        return "seconds"
    return "count" if spec.kind == "counter" else "1"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_table() -> str:
    """Markdown: every family with its type, labels, unit, collector and help."""
    lines = [
        "| metric | type | labels | unit | collector | help |",
        "|---|---|---|---|---|---|",
    ]
    for collector, _reads, specs in SOURCES:
        for spec in specs:
            names = (*spec.labels, *INFO_LABELS.get(spec.name, ()))
            labels = ", ".join(f"`{label}`" for label in names) or "—"
            lines.append(
                f"| `{exposed_name(spec)}` | {spec.kind} | {labels} | {unit_of(spec)} "
                f"| {collector} | {_cell(spec.documentation)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_table(), end="")
