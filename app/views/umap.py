"""UMAP tab: the bank features of a snapshot (and sampled target pixel features) in 2-D.

The map is fitted once per run (on its last snapshot) and later snapshots are placed into it, so the
layout stays put while stepping. UMAP never runs inside a UI event: the first request shows PCA at
once and queues UMAP in the background; a timer swaps the map in when it is ready.

``gr.Plot`` sends no events back, so the scatter is drawn by the plotly.js shipped inside the plotly
package in a ``gr.HTML`` component, which reports lasso / box selections (``plotly_selected``) to
Python; the selection is summarised by class and domain and can be downloaded, and listed slot by
slot and pixel by pixel with crops of their images (``umap_selection``), one of which opens in Compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import plotly
import plotly.graph_objects as go

from app.errors import client_text
from app.views import umap_selection
from app.views.common import (
    CHEAP,
    HEAVY,
    RunPickers,
    Shared,
    bind,
    dropdown_update,
    message_figure,
    run_choices,
    style,
    user_errors,
)
from app.views.exports import write_csv
from dida import visualize as V
from dida.data.classes import CLASSES, IGNORE_INDEX
from dida.studio import ImageKey, PointSet, Studio

COLOR_BY = ["class", "domain", "age", "correct"]
NO_BANK = "No run with an instance bank yet: train a DIDA run in the Train tab."
CATEGORY_COLORS = {
    "bank (source)": "#0072B2",
    "target pixel": "#E69F00",
    "correct": "#009E73",
    "wrong": "#D55E00",
    "unlabelled": "#999999",
}
HEADERS = ["x", "y", "domain", "class", "predicted", "age", "slot"]
SELECTION_HEADERS = ["class", "bank (source)", "target pixel"]
"""Columns of the selection table (also when nothing is selected yet)."""
CORRECT_NOTE = (
    "**correct / wrong**: the run's own classifier applied to the feature of that point agrees "
    "(correct) or not (wrong) with its label — the class of a bank slot, the ground truth of a "
    "target pixel; unlabelled pixels are grey."
)
"""Caption under the map when it is coloured by correctness."""
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
"""plotly.js of the installed plotly package (served by Gradio; nothing is downloaded)."""
LASSO_JS = """
const draw = () => {
  const div = element.querySelector('.umap-canvas');
  if (!div || !props.value || typeof Plotly === 'undefined') return;
  const fig = JSON.parse(props.value);
  Plotly.react(div, fig.data, fig.layout, {displaylogo: false, responsive: true});
  if (div.removeAllListeners) div.removeAllListeners('plotly_selected');
  div.on('plotly_selected', (ev) => {
    const points = ev ? ev.points.map((p) => p.customdata[5]) : [];
    trigger('select', {points: points});
  });
};
const start = () => (typeof Plotly === 'undefined' ? setTimeout(start, 100) : draw());
start();
watch('value', draw);
"""


def class_name(c: int) -> str:
    return CLASSES[c] if 0 <= c < len(CLASSES) else "unlabelled"


def _hover(points: PointSet, rows: np.ndarray) -> tuple[list[list[Any]], str]:
    """customdata rows (domain, class, predicted, age, slot, point index) and the hover text."""
    data = [
        [points.domain[i], class_name(points.label[i]), class_name(points.pred[i]),
         int(points.age[i]), int(points.slot[i]), int(i)]
        for i in rows
    ]  # fmt: skip
    template = (
        "%{customdata[0]}<br>class %{customdata[1]} · predicted %{customdata[2]}"
        "<br>age %{customdata[3]} · slot %{customdata[4]}<extra></extra>"
    )
    return data, template


def groups(points: PointSet, color_by: str, palette: str) -> list[tuple[str, np.ndarray, str]]:
    """(legend name, point indices, colour) per category of ``color_by``."""
    if color_by == "class":
        colors = dict(V.legend_entries(palette))
        return [
            (CLASSES[c], np.flatnonzero(points.label == c), colors[CLASSES[c]])
            for c in range(len(CLASSES))
            if (points.label == c).any()
        ] + [("unlabelled", np.flatnonzero(points.label == IGNORE_INDEX), "#999999")]
    values = points.domain if color_by == "domain" else points.correct
    return [(v, np.flatnonzero(values == v), CATEGORY_COLORS[v]) for v in np.unique(values)]


def scatter_figure(
    xy: np.ndarray, points: PointSet, color_by: str, palette: str, title: str, revision: str
) -> go.Figure:
    """WebGL scatter; pixels drawn as small crosses, bank slots as circles."""
    fig = go.Figure()
    if color_by == "age":
        data, template = _hover(points, np.arange(len(xy)))
        fig.add_scattergl(
            x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=data, hovertemplate=template,
            marker={"color": points.age, "colorscale": "Viridis", "colorbar": {"title": "age"}, "size": 7},
            name="age",
        )  # fmt: skip
    for name, rows, color in [] if color_by == "age" else groups(points, color_by, palette):
        if not len(rows):
            continue
        data, template = _hover(points, rows)
        symbols = np.where(points.slot[rows] >= 0, "circle", "x").tolist()
        fig.add_scattergl(
            x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=name, customdata=data,
            hovertemplate=template, marker={"color": color, "size": 8, "symbol": symbols},
        )  # fmt: skip
    fig.update_layout(uirevision=revision, dragmode="lasso", xaxis_title="", yaxis_title="")
    return style(fig, 560, title)


@user_errors
def project(
    studio: Studio,
    run_id: str | None,
    snapshot: float,
    color_by: str,
    with_pixels: bool,
    count: float,
    method: str,
    key: ImageKey,
    palette: str,
) -> tuple[Any, str, Any, str | None]:
    """(scatter, status with the colouring's caption, timer update, CSV of the points, label
    update of the projection radio)."""
    if not run_id:
        return message_figure(NO_BANK), NO_BANK, gr.Timer(active=False), None, gr.update()
    index, n = umap_selection.typed_points(snapshot, with_pixels, count)
    pixels = key if with_pixels else None
    points = studio.points(run_id, index, pixels, n)
    xy, used = studio.projection(run_id, index, pixels, n, method.lower())
    state = studio.projection_state(run_id, index, pixels, n)
    waiting = method.lower() == "umap" and used != "umap" and state in ("queued", "running")
    iteration = studio.snapshot(run_id, index).iteration
    title = f"{used.upper()} of {len(xy)} points · bank at iteration {iteration}"
    status = _status(used, method, state) + ("\n\n" + CORRECT_NOTE if color_by == "correct" else "")
    rows = [[*map(float, xy[i]), *_hover(points, [i])[0][0][:5]] for i in range(len(xy))]
    csv = write_csv(f"projection_{iteration}.csv", HEADERS, rows)
    figure = scatter_figure(xy, points, color_by, palette, title, f"{run_id}:{used}")
    return figure, status, gr.Timer(active=waiting), csv, method_label(used, method, state)


def method_label(used: str, method: str, state: str | None) -> dict:
    """The projection radio's label says what is drawn: "PCA (UMAP computing…)" while UMAP waits."""
    if method.lower() == "umap" and used != "umap":
        failed = bool(state and state.startswith("failed"))
        return gr.update(
            label="projection — showing PCA" + ("" if failed else " (UMAP computing…)")
        )
    return gr.update(label=f"projection — showing {used.upper()}")


def _status(used: str, method: str, state: str | None) -> str:
    if method.lower() == "pca":
        return "PCA (instant, linear)."
    if used == "umap":
        return "UMAP (fitted once on the run's last snapshot; other snapshots are placed into it)."
    if state and state.startswith("failed"):
        return f"UMAP failed ({client_text(state)}); showing PCA."
    return "Showing PCA while UMAP computes in the background…"


def figure_json(figure: go.Figure) -> str:
    """The figure as JSON for the plotly.js canvas."""
    return figure.to_json()


@user_errors
def selection(
    studio: Studio,
    run_id: str | None,
    snapshot: float,
    with_pixels: bool,
    count: float,
    key: ImageKey,
    indices: list[int],
) -> tuple[str, pd.DataFrame, str | None]:
    """(summary, per class × domain counts, CSV of the selected points) of a lasso/box selection."""
    if not run_id or not indices:
        empty = pd.DataFrame(columns=SELECTION_HEADERS)
        return "Draw a lasso or box on the map to select points.", empty, None
    index, n = umap_selection.typed_points(snapshot, with_pixels, count)
    pixels = key if with_pixels else None
    points = studio.points(run_id, index, pixels, n)
    chosen = np.array(sorted({int(i) for i in indices if 0 <= int(i) < len(points.label)}))
    rows = [_hover(points, [i])[0][0][:5] for i in chosen]
    table = pd.DataFrame(rows, columns=["domain", "class", "predicted", "age", "slot"])
    counts = table.groupby(["class", "domain"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=SELECTION_HEADERS[1:], fill_value=0).reset_index()
    wrong = int((points.correct[chosen] == "wrong").sum())
    text = f"**{len(chosen)} points selected** — {wrong} the classifier gets wrong."
    return text, counts, write_csv("selection.csv", list(table.columns), table.values.tolist())


def on_select(studio: Studio, run_id, snapshot, with_pixels, count, key, evt: gr.EventData):
    """The ``select`` event the canvas triggers: ``evt.points`` are point indices."""
    return selection(
        studio, run_id, snapshot, with_pixels, count, key, list(getattr(evt, "points", []))
    )


@user_errors
def select_run(studio: Studio, run_id: str | None) -> dict:
    history = studio.bank_history(run_id) if run_id else None
    last = max(len(history) - 1, 0) if history else 0
    return gr.update(maximum=max(last, 1), value=last)


def _layout(choices: list[tuple[str, str]]) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    with gr.Row():
        ui["run"] = gr.Dropdown(
            choices, value=choices[0][1] if choices else None, label="DIDA run", scale=2
        )
        ui["snapshot"] = gr.Slider(
            0, 1, value=0, step=1, label="bank snapshot", scale=2, elem_id="umap-slider"
        )
        ui["method"] = gr.Radio(
            ["UMAP", "PCA"], value="UMAP", label="projection", scale=1, elem_id="umap-method"
        )
    with gr.Row():
        ui["color_by"] = gr.Radio(COLOR_BY, value="class", label="colour by")
        ui["with_pixels"] = gr.Checkbox(label="add target pixels of the current image", value=False)
        ui["count"] = gr.Slider(
            50, umap_selection.MAX_POINTS, value=300, step=50, label="target pixels"
        )
    ui["status"] = gr.Markdown(NO_BANK if not choices else "")
    gr.Markdown("Bank features (circles) and target pixels (crosses) — lasso or box to select.")
    ui["figure"] = gr.HTML(
        value="",
        html_template='<div class="umap-canvas" style="height:580px"></div>',
        js_on_load=LASSO_JS,
        head=f'<script src="/gradio_api/file={PLOTLY_JS}"></script>',
        elem_id="umap-plot",
        apply_default_css=False,
    )
    ui["csv"] = gr.DownloadButton("Download points (CSV)", value=None)
    ui.update(_selection())
    ui["listing"] = umap_selection.layout()
    ui["timer"] = gr.Timer(1.5, active=False)
    return ui  # fmt: skip


def _selection() -> dict[str, Any]:
    """What a lasso or box selection lists: the summary, its CSV and the table by class and domain."""
    ui: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            ui["chosen"] = gr.Markdown("Draw a lasso or box on the map to select points.")
            ui["chosen_csv"] = gr.DownloadButton("Download selection (CSV)", value=None)
        ui["chosen_table"] = gr.Dataframe(
            value=pd.DataFrame(columns=SELECTION_HEADERS),
            headers=SELECTION_HEADERS,
            label="selection by class and domain",
            interactive=False,
            scale=2,
        )
    return ui


def build(studio: Studio, shared: Shared) -> RunPickers:
    """Lay out and wire the tab; returns its run picker."""
    gr.Markdown(studio.bank_note(), visible=bool(studio.bank_note()))  # official: no bank
    ui = _layout(run_choices(studio, with_bank=True))
    run, snapshot = ui["run"], ui["snapshot"]
    names = ("run", "snapshot", "color_by", "with_pixels", "count", "method")
    inputs = [*(ui[n] for n in names), shared.image_key, shared.palette]
    outputs = [ui["figure"], ui["status"], ui["timer"], ui["csv"], ui["method"]]
    triggers = [ui[n].change for n in ("snapshot", "color_by", "with_pixels", "method")]
    gr.on([*triggers, ui["count"].release, shared.palette.change, ui["timer"].tick],
          bind(_project_view, studio), inputs, outputs, api_name="umap_project",
          trigger_mode="always_last", **HEAVY)  # fmt: skip
    run.change(bind(select_run, studio), run, snapshot, api_visibility="private", **CHEAP).then(
        bind(_project_view, studio), inputs, outputs, **HEAVY
    )
    selection_in = [run, snapshot, ui["with_pixels"], ui["count"], shared.image_key]
    selection_out = [ui["chosen"], ui["chosen_table"], ui["chosen_csv"]]
    ui["figure"].select(
        bind(on_select, studio), selection_in, selection_out, api_name="umap_selection", **CHEAP
    )
    umap_selection.wire(studio, shared, ui["listing"], ui["figure"], selection_in)
    on_open = (bind(_open, studio), inputs, [snapshot, *outputs])
    return RunPickers([run], bind(_refresh, studio), on_select=on_open, select_lane=HEAVY)


def _refresh(studio: Studio, run_id: str | None) -> list[Any]:
    return [dropdown_update(run_choices(studio, with_bank=True), run_id)]


def _project_view(studio: Studio, *args: Any) -> tuple[Any, ...]:
    """``project`` with the figure as JSON for the canvas."""
    figure, *rest = project(studio, *args)
    return (figure_json(figure), *rest)


def _open(studio: Studio, run_id, snapshot, *rest) -> list[Any]:
    slider = select_run(studio, run_id)
    value = slider.get("value", snapshot)
    return [slider, *_project_view(studio, run_id, value, *rest)]
