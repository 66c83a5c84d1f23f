"""The page's head imports Gradio's plotly chunk early (``app.main.plotly_preload``): the markup
names the one chunk of the installed Gradio, and nothing when a build has none or several."""

from __future__ import annotations

from pathlib import Path

from app.main import GRADIO_ASSETS, plotly_preload


def test_the_head_imports_the_one_plotly_chunk(tmp_path: Path) -> None:
    (tmp_path / "PlotlyPlot-Ab12.js").write_text("export {};\n")
    (tmp_path / "Plot-Zz99.js").write_text("export {};\n")
    markup = plotly_preload(tmp_path)
    assert markup.startswith('<script type="module">')
    assert 'import("./assets/PlotlyPlot-Ab12.js")' in markup and "Plot-Zz99" not in markup


def test_no_chunk_or_an_ambiguous_build_gives_no_markup(tmp_path: Path) -> None:
    assert plotly_preload(tmp_path) == ""
    for name in ("PlotlyPlot-a.js", "PlotlyPlot-b.js"):
        (tmp_path / name).write_text("export {};\n")
    assert plotly_preload(tmp_path) == ""


def test_the_installed_gradio_has_the_chunk_the_head_names() -> None:
    """Fails when a Gradio upgrade renames or splits the chunk (the preload would be lost)."""
    markup = plotly_preload()
    name = markup.split("./assets/")[1].split('"')[0]
    assert (GRADIO_ASSETS / name).is_file()
