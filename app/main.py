"""Build the DIDA Studio Blocks (six tabs over one shared ``Studio``) and serve them.

Models, predictions and banks live in the one ``Studio`` of the process; a session keeps only the
current image key, its training job id and UI choices. Tabs render lazily: opening a tab refreshes its
run pickers (new or finished runs) and draws its content.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (the analytics switch must be set before the import)
import numpy as np  # noqa: E402

from app.errors import client_text, short_path  # noqa: E402
from app.views import bank, compare, confusion, longtail, temperature, train, umap  # noqa: E402
from app.views.common import (  # noqa: E402
    CHEAP,
    PALETTE_CHOICES,
    RunPickers,
    Shared,
    bind,
    image_grid,
)
from dida.studio import Studio  # noqa: E402

TABS = (
    ("Compare", "compare", compare),
    ("Scores & confusion", "confusion", confusion),
    ("Instance bank", "bank", bank),
    ("Temperature", "temperature", temperature),
    ("UMAP", "umap", umap),
    ("Long tail", "longtail", longtail),
    ("Train", "train", train),
)
"""(tab label, id, view module with ``build(studio, shared) -> RunPickers``)."""

THEME = gr.themes.Soft(primary_hue="blue", neutral_hue="slate")
CSS = """
.legend {display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 0.85em; margin: 4px 0;}
.legend .swatch {display: inline-flex; align-items: center; gap: 4px;}
.legend .swatch i {width: 14px; height: 14px; border: 1px solid #8888; border-radius: 2px;
                   display: inline-block;}
.train-progress {display: flex; align-items: center; gap: 12px;}
.train-progress progress {width: 60%; height: 18px;}
"""
GRADIO_ASSETS = Path(gr.__file__).parent / "templates" / "frontend" / "assets"
"""Gradio's built frontend (its JavaScript chunks)."""
MAX_FILE_SIZE = "25mb"
"""Largest upload the server accepts (bigger files are refused before they reach a handler)."""


def header_text(studio: Studio) -> str:
    """The page header: what the app compares and on which data — the dataset loaded (kind,
    SynthCity preset or read-only Cityscapes, val images) and its folder (name only: no server path)."""
    data = studio.data
    folder = short_path(str(data.root.resolve()))
    split = f"preset {studio.data_preset}, target" if data.owned else "read only"
    return (
        "## DIDA Studio\nDomain-adaptive segmentation: source-only, ProDA-style, DAFormer-style and "
        f"DIDA side by side, on **{data.title}** val images ({split}: {len(studio.val)} images "
        f"in `{folder}`)."
    )


def problems_text(studio: Studio) -> str:
    """Runs that could not be listed (shown under the header, never silently skipped)."""
    if not studio.problems:
        return ""
    lines = "\n".join(f"- {client_text(p)}" for p in studio.problems)
    return "**Some folders could not be read:**\n" + lines


def refresh_all(studio: Studio) -> str:
    """Rediscover runs (the pickers update when their tab is opened)."""
    studio.refresh()
    count = len(studio.runs(with_model=True))
    return f"{count} run(s) with weights. {problems_text(studio)}"


def build_app(studio: Studio) -> gr.Blocks:
    """The Blocks of the whole app (not launched)."""
    gr.set_static_paths([umap.PLOTLY_JS, studio.thumbnail_dir])  # served as is, never copied
    with gr.Blocks(title="DIDA Studio", delete_cache=(1800, 3600)) as demo:
        with gr.Row():
            gr.Markdown(header_text(studio), elem_id="app-header")
            with gr.Column(scale=0, min_width=260):
                palette = gr.Radio(PALETTE_CHOICES, value="cityscapes", label="palette")
                refresh = gr.Button("Refresh runs", size="sm", elem_id="refresh-runs")
        notes = gr.Markdown(problems_text(studio))
        shared = Shared(demo, palette, gr.State(0))
        pickers = []
        with gr.Tabs() as tabs:
            shared.tabs = tabs
            for label, tab_id, view in TABS:
                with gr.Tab(label, id=tab_id, elem_id=f"tab-{tab_id}") as tab:
                    pickers.append(view.build(studio, shared))
                _wire_tab(studio, tab, pickers[-1])
        refresh.click(bind(refresh_all, studio), None, notes, api_name="refresh", **CHEAP)
        for picker in pickers:
            if picker.components:
                fn, both = _outputs_of(picker.refresh, len(picker.components)), picker.components
                refresh.click(fn, both, both, api_visibility="private", **CHEAP)
    return demo


def _outputs_of(fn, count: int):
    """Gradio expects a bare value (not a one-item list) for a single output."""
    if count != 1:
        return fn
    return lambda *args: fn(*args)[0]


def _wire_tab(studio: Studio, tab: gr.Tab, picker: RunPickers) -> None:
    """Opening a tab: rediscover runs, update its pickers (cheap), then draw its content (in the
    tab's ``select_lane``)."""
    private = {"api_visibility": "private"}
    event = tab.select(lambda: studio.refresh() and None, None, None, **private, **CHEAP)
    if picker.components:
        refresh, both = _outputs_of(picker.refresh, len(picker.components)), picker.components
        event = event.then(refresh, both, both, **private, **CHEAP)
    if picker.on_select is not None:
        fn, inputs, outputs = picker.on_select
        event.then(fn, inputs, outputs, **private, **picker.select_lane)


def warm_up_figures() -> None:
    """Build and serialise one small image grid: plotly's first figure costs ~0.3 s."""
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image_grid([("a", image), ("b", image)]).to_json()


def plotly_preload(assets: Path = GRADIO_ASSETS) -> str:
    """``<head>`` markup that imports Gradio's plotly chunk (≈ 4.6 MB) while the page starts.

    Gradio fetches that chunk only when the first figure arrives, so the Compare grid waited
    ≈ 2.5 s more for its download and evaluation (docs/BENCHMARKS.md, first launch). Importing it
    from the head overlaps that with the page's start; the frontend's own import then finds it
    loaded. Empty when this Gradio build names no such chunk (the page works the same, later).
    """
    chunks = sorted(assets.glob("PlotlyPlot-*.js"))
    if len(chunks) != 1:
        return ""
    return f'<script type="module">import("./assets/{chunks[0].name}").catch(() => {{}});</script>'


def launch_app(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    auth: list[tuple[str, str]] | None = None,
    demo: gr.Blocks | None = None,
) -> tuple[gr.Blocks, str]:
    """Build, queue and serve the app; returns (demo, local URL).

    ``auth``: (user, password) pairs required to log in (``app.auth.credentials_for``). Clients see
    ``gr.Error`` messages (made path-free by ``app.errors.client_text``) and a generic "Error" for
    anything else; full tracebacks go to the server's console only (``show_error=False``).
    ``demo``: the Blocks already built by ``build_app(studio)`` (``app.startup`` builds them while
    its progress page answers).
    """
    threading.Thread(target=warm_up_figures, name="warm-figures", daemon=True).start()
    demo = demo or build_app(studio)
    demo.queue(max_size=64, default_concurrency_limit=2)
    allowed = [str(studio.data_root.resolve())]
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        auth=auth,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=False,
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=allowed,
        footer_links=["api", "gradio"],
        theme=THEME,
        css=CSS,
        head=plotly_preload(),
    )
    return demo, url
