"""The engine (`dida/`) never imports the UI (`app/`) or gradio: data flows one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "dida"
FORBIDDEN = ("gradio", "gradio_client", "app")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


ENGINE_FILES = sorted(ENGINE.rglob("*.py"))


def test_engine_has_modules() -> None:
    assert len(ENGINE_FILES) >= 2, "the layering check found no engine modules to inspect"


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_engine_module_does_not_import_ui(path: Path) -> None:
    bad = _imported_roots(path) & set(FORBIDDEN)
    assert not bad, f"{path} imports {sorted(bad)}; the engine must not depend on the UI"


def test_checker_detects_a_forbidden_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import gradio as gr\nfrom app.views import compare\n")
    assert _imported_roots(probe) & set(FORBIDDEN) == {"gradio", "app"}
