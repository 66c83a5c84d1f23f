"""The house rules of the code base: imports between ``dida`` and ``app`` modules form no circle
(data flows one way), and no module of theirs or of ``scripts/`` grows past 600 lines.

Imports are read with ``ast`` from every file, those inside functions and ``TYPE_CHECKING`` blocks
included (a lazy import is still a dependency). ``from pkg import name`` counts as an import of the
module ``pkg.name`` when that is a module, else of ``pkg``; importing a submodule does not count as
importing its parent package (its ``__init__`` runs, but that is Python's order, not the author's).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dida", "app")
MAX_LINES = 600
LINE_LIMITED = (*PACKAGES, "scripts")
"""Where the line limit holds: the import-checked packages and the scripts."""


def module_name(path: Path, root: Path = REPO) -> str:
    """``dida/studio/catalog.py`` → ``dida.studio.catalog``; a package's ``__init__`` → the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Module name → file of every module of ``packages`` under ``root``."""
    files = [p for package in packages for p in sorted((root / package).rglob("*.py"))]
    return {module_name(p, root): p for p in files}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + is_package]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file ``path`` (module ``module``) imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            names = [f"{source}.{alias.name}" for alias in node.names] + [source]
            names = [n for n in names[:-1] if n in known] or names[-1:]
        else:
            continue
        found |= {_nearest(name, known) for name in names} - {None, module}
    return found


def _nearest(name: str, known: set[str]) -> str | None:
    """``name`` or its nearest enclosing module that is in ``known``."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or None


def import_graph(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the modules it imports, over ``packages``."""
    files = module_files(root, packages)
    return {name: imported_modules(path, name, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: dict[str, str] = {}
    for start in sorted(graph):
        if start in state:
            continue
        state[start], path = "open", [start]
        stack = [(start, iter(sorted(graph[start])))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                stack.pop()
                path.pop()
            elif state.get(child) == "open":
                return path[path.index(child) :] + [child]
            elif child not in state:
                state[child] = "open"
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def test_the_graph_covers_both_packages() -> None:
    graph = import_graph()
    assert {"dida.studio.studio", "dida.bench.suites", "app.main"} <= set(graph)
    assert "dida.studio.catalog" in graph["dida.studio.studio"]
    assert "dida.runs" in graph["dida.bench.suites"]


def test_imports_form_no_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_only_the_app_imports_the_studio() -> None:
    """The studio is the app's engine, the last room before the views (STYLE.md's arrow):
    training, benchmark and analysis modules never import it."""
    graph = import_graph()
    upstream = [m for m in graph if m.startswith("dida.") and not m.startswith("dida.studio")]
    bad = {m: sorted(i for i in graph[m] if i.startswith("dida.studio")) for m in upstream}
    assert not {m: i for m, i in bad.items() if i}, "imports against the arrow"


def test_the_checker_finds_a_circle_and_resolves_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("from . import b\n")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("from ..a import f\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


@pytest.mark.parametrize(
    "path",
    list(module_files(packages=LINE_LIMITED).values()),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_module_is_over_600_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines; split it by room"


STUDIO_ROOM_LINES = 420
"""Issue 17: each room of ``dida/studio/`` stays at about 400 lines."""


@pytest.mark.parametrize(
    "path", sorted((REPO / "dida" / "studio").glob("*.py")), ids=lambda p: p.name
)
def test_each_studio_room_is_about_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= STUDIO_ROOM_LINES, f"dida/studio/{path.name} has {lines} lines; split the room"
