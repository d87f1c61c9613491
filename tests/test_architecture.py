"""The shape of the package: import circles and which layers may import which.

Built from the source with ``ast`` (nothing is imported), counting every import,
those under ``if TYPE_CHECKING:`` and inside functions too: a circle that only type
checkers walk is still two modules that cannot be understood apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hydrogen"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package``."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = module_names(package)

    def known(name: str) -> str | None:
        return name if name in modules else None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    # ``import a.b.c`` loads a, a.b and a.b.c: the deepest known one counts.
                    parts = alias.name.split(".")
                    for end in range(len(parts), 0, -1):
                        if target := known(".".join(parts[:end])):
                            targets.add(target)
                            break
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    # ``from a import b``: b is a submodule, or a name defined in a.
                    target = known(f"{base}.{alias.name}") or known(base)
                    if target:
                        targets.add(target)
        targets.discard(name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_metrics_is_a_leaf() -> None:
    """Only the app factory wires metrics; no manager (nor the core) imports them."""
    graph = import_graph(PACKAGE)
    importers = {
        name
        for name, targets in graph.items()
        if not name.startswith("hydrogen.metrics")
        and any(t == "hydrogen.metrics" or t.startswith("hydrogen.metrics.") for t in targets)
    }
    assert importers == {"hydrogen.server.app"}


def test_the_cycle_finder_finds_cycles(tmp_path: Path) -> None:
    """The checker itself: a circle through a TYPE_CHECKING import and a relative one."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import thing\n"
    )
    (package / "c.py").write_text("import pkg.a\n")
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.sub.b"]]


#: A module past this is usually two concepts (issue 22 brought every file under it).
MAX_MODULE_LINES = 500


def test_no_module_of_the_package_passes_the_line_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): count
        for path in sorted(PACKAGE.rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these along a seam that explains itself: {long}"
