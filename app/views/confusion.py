"""Scores tab: per-image scores of several runs side by side (sortable, exportable, a row opens
the image in Compare) and each run's dataset confusion matrix on the val split (row-normalised,
look-alike classes outlined or shown alone, exportable).

Shipped checkpoints carry their scores (``scores.npz``, read at once); other runs are scored in
the background by ``Studio.passes`` and this tab polls until they are ready.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from app.views.common import (
    CHEAP,
    HEAVY,
    RunPickers,
    Shared,
    bind,
    default_runs,
    dropdown_update,
    message_figure,
    pick,
    run_choices,
    style,
    user_errors,
)
from app.views.exports import write_csv
from dida.analysis import LOOK_ALIKE_GROUPS, ConfusionView, confusion_view, look_alike_classes
from dida.scores import ScoreTable, compare_tables, sort_rows
from dida.studio import Studio

SPREAD = "overlap IoU spread"
"""The default sort column: where the ticked runs disagree most on overlapping entities."""
TABLE_NOTE = (
    "Values in % per val image: mIoU over the classes present; overlap IoU = mIoU on the pixels"
    f" within 3 px of a touching entity of another thing class; '{SPREAD}' = best − worst run"
    " (where the runs disagree on overlaps). Select a row to open the image in Compare."
)


# --- the per-image table ---------------------------------------------------------------------


def _tables(studio: Studio, run_ids: list[str]) -> tuple[list[ScoreTable] | None, str]:
    """Every run's score table, or None with a progress note while some are computed."""
    tables = [studio.passes.scores(r) for r in run_ids]
    if all(t is not None for t in tables):
        return tables, ""
    done = [studio.passes.scores_progress(r) for r in run_ids]
    count, total = sum(d for d, _ in done), sum(t for _, t in done)
    return None, f"scoring the runs on the val split in the background… {count}/{total} images"


@user_errors
def score_table(
    studio: Studio, run_ids: list[str], sort: str | None, descending: bool = True
) -> tuple[pd.DataFrame, str | None, Any, str, Any]:
    """(table, CSV path, sort-choice update, status, timer update) of the per-image scores."""
    if not run_ids:
        return pd.DataFrame(), None, gr.update(), "Tick one run or more.", gr.Timer(active=False)
    tables, note = _tables(studio, run_ids)
    if tables is None:
        return pd.DataFrame(), None, gr.update(), note, gr.Timer(active=True)
    titles = [studio.run(r).short_title for r in run_ids]
    table = compare_tables(titles, tables)
    column = sort if sort in table.headers else SPREAD
    rows = sort_rows(table.rows, table.headers.index(column), descending)
    path = write_csv("per_image_scores.csv", table.headers, rows)
    sorts = gr.update(choices=table.headers[1:], value=column)
    status = (
        f"{len(rows)} images, sorted by {column} ({'largest' if descending else 'smallest'} first)"
    )
    return pd.DataFrame(rows, columns=table.headers), path, sorts, status, gr.Timer(active=False)


def open_row(table: pd.DataFrame, evt: gr.SelectData) -> tuple[int, str]:
    """A selected row → (its val index for Compare, a note)."""
    index = int(table.iloc[evt.index[0]]["index"])
    return index, f"Image #{index} is now open in the **Compare** tab."


# --- the confusion matrix --------------------------------------------------------------------


@user_errors
def confusion(
    studio: Studio, run_id: str | None, look_alike: bool
) -> tuple[go.Figure, str | None, str, Any]:
    """(row-normalised heatmap, CSV path, status, timer update) of a run's confusion matrix."""
    if not run_id:
        return message_figure("Choose a run."), None, "", gr.Timer(active=False)
    tables, note = _tables(studio, [run_id])
    if tables is None:
        return message_figure(note), None, note, gr.Timer(active=True)
    view = confusion_view(tables[0].confusion, look_alike_classes() if look_alike else None)
    title = studio.run(run_id).short_title
    path = write_csv(f"confusion_{run_id.replace(':', '_')}.csv", *_csv(view))
    pixels = int(view.pixels.sum())
    status = f"{title}: {pixels:,} labelled pixels of {len(tables[0].names)} val images"
    return heatmap(view, title, look_alike), path, status, gr.Timer(active=False)


def _csv(view: ConfusionView) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows: ground truth, its pixels, then % predicted as each column class."""
    headers = ["ground truth \\ predicted (% of row)", "pixels (GT)", *view.columns]
    rows = [
        [name, int(n), *(None if v != v else round(float(v), 2) for v in row)]
        for name, n, row in zip(view.rows, view.pixels, view.percent, strict=True)
    ]
    return headers, rows


def heatmap(view: ConfusionView, title: str, look_alike: bool) -> go.Figure:
    """The matrix as a plotly heatmap (percent of each ground-truth row), look-alike blocks
    outlined on the full matrix."""
    text = [["" if v != v else f"{v:.0f}" for v in row] for row in view.percent]
    fig = go.Figure(
        go.Heatmap(
            z=view.percent, x=list(view.columns), y=list(view.rows), text=text,
            texttemplate="%{text}", colorscale="Viridis", zmin=0, zmax=100,
            colorbar={"title": "% of row"},
            hovertemplate="GT %{y} → predicted %{x}: %{z:.1f}%<extra></extra>",
        )
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed", title_text="ground truth")
    fig.update_xaxes(title_text="predicted", tickangle=-45)
    if not look_alike:
        for group in LOOK_ALIKE_GROUPS:
            _outline(fig, [view.rows.index(name) for name in group])
    suffix = " — look-alike classes (other = every other class)" if look_alike else ""
    return style(fig, 620 if not look_alike else 480, f"{title}: confusion matrix{suffix}")


def _outline(fig: go.Figure, positions: list[int]) -> None:
    """A box around the square block of ``positions`` (consecutive rows and columns)."""
    low, high = min(positions) - 0.5, max(positions) + 0.5
    fig.add_shape(type="rect", x0=low, x1=high, y0=low, y1=high,
                  line={"color": "#ff00ff", "width": 2})  # fmt: skip


# --- layout and wiring -----------------------------------------------------------------------


def build(studio: Studio, shared: Shared) -> RunPickers:
    """Lay out the Scores tab inside the current ``gr.Tab``; returns its run pickers."""
    choices, chosen = run_choices(studio), default_runs(studio)
    gr.Markdown(f"#### Per-image scores across runs\n{TABLE_NOTE}")
    with gr.Row():
        runs = gr.CheckboxGroup(choices, value=chosen, label="runs", scale=3, elem_id="scores-runs")
        sort = gr.Dropdown([SPREAD], value=SPREAD, label="sort by", scale=2, elem_id="scores-sort")
        descending = gr.Checkbox(label="largest first", value=True, scale=1)
    status = gr.Markdown(elem_id="scores-status")
    table = gr.Dataframe(interactive=False, max_height=420, elem_id="scores-table")
    csv = gr.DownloadButton("Download per-image scores (CSV)", value=None)
    gr.Markdown("#### Confusion matrix on the val split (rows = ground truth, % of each row)")
    with gr.Row():
        run = gr.Dropdown(choices, value=pick(choices, chosen[0] if chosen else None),
                          label="run", elem_id="confusion-run")  # fmt: skip
        look_alike = gr.Checkbox(label="look-alike classes only", value=False,
                                 elem_id="confusion-lookalike")  # fmt: skip
    matrix_status = gr.Markdown()
    matrix = gr.Plot(label="confusion matrix", elem_id="confusion-plot")
    matrix_csv = gr.DownloadButton("Download the shown matrix (CSV)", value=None)
    table_timer, matrix_timer = gr.Timer(2.0, active=False), gr.Timer(2.0, active=False)
    table_io = ([runs, sort, descending], [table, csv, sort, status, table_timer])
    matrix_io = ([run, look_alike], [matrix, matrix_csv, matrix_status, matrix_timer])
    gr.on([runs.change, sort.input, descending.change, table_timer.tick],
          bind(score_table, studio), *table_io, api_name="score_table", **HEAVY)  # fmt: skip
    gr.on([run.change, look_alike.change, matrix_timer.tick], bind(confusion, studio), *matrix_io,
          api_name="confusion", **HEAVY)  # fmt: skip
    table.select(open_row, table, [shared.image_key, status], api_name="open_row", **CHEAP)
    on_open = (bind(_open, studio), [runs, sort, descending, run, look_alike],
               [*table_io[1], *matrix_io[1]])  # fmt: skip
    return RunPickers([runs, run], bind(_refresh, studio), on_select=on_open, select_lane=HEAVY)


def _open(
    studio: Studio, run_ids: list[str], sort: str, descending: bool, run_id: str, look: bool
) -> tuple[Any, ...]:
    return (*score_table(studio, run_ids, sort, descending), *confusion(studio, run_id, look))


def _refresh(studio: Studio, run_ids: list[str] | None, run_id: str | None) -> list[Any]:
    choices = run_choices(studio)
    ids = {rid for _, rid in choices}
    kept = [r for r in run_ids or [] if r in ids]
    chosen = default_runs(studio)
    return [
        gr.update(choices=choices, value=kept or chosen),
        dropdown_update(choices, run_id, chosen[0] if chosen else None),
    ]
