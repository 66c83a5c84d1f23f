"""Long tail tab: how often each class occurs in source and target, and how every method does on it.

Class pixel and image frequencies (log scale, sorted by source pixel frequency; every bar series
named by its dataset and folder) and per-class IoU of every run against the class pixel frequency.
IoUs come from each run's last evaluation, or from a whole-val-split pass when requested (computed
in the background). When a ticked run trained on other source data (another SynthCity preset,
another folder) than the one counted, the source bars are withheld and the note says which run
trained on what, instead of setting that run beside another dataset's statistics.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.errors import client_text, short_path
from app.views.common import (
    HEAVY,
    RunPickers,
    Shared,
    bind,
    message_figure,
    percent,
    run_choices,
    style,
    user_errors,
)
from app.views.exports import write_csv
from dida.analysis import class_fractions, iou_vs_frequency, long_tail
from dida.data.classes import CLASSES
from dida.data.datasets import class_pixel_totals
from dida.studio import Studio

DOMAIN_COLORS = {"source": "#0072B2", "target": "#E69F00"}
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross", "hexagon"]
LABELLED_RARE = 5
"""How many of the rarest classes carry their name as text beside the points (all have a hover)."""


WHOLE_SPLIT = "evaluate on the whole val split (background)"
"""The checkbox that scores every ticked run on this val split."""
RESCORE = "tick “evaluate on the whole val split” to score it here"


def dataset_names(studio: Studio) -> dict[str, str | None]:
    """The dataset behind each bar series, paths cut to the folder name (``…/name``)."""
    source = studio.source_name()
    target = f"{studio.data.title} val split ({short_path(str(studio.data.root.resolve()))})"
    return {"source": None if source is None else client_text(source), "target": target}


def mismatch_note(studio: Studio, mismatched: list[str]) -> str:
    """Why the source bars are withheld: the data they count and what the runs trained on."""
    runs_text = "; ".join(client_text(m) for m in mismatched)
    return (
        f"**Source bars withheld:** they count {dataset_names(studio)['source']}, but {runs_text}"
        " — that is not those runs' training data. Untick those runs, or start the app with "
        "--source set to the data they trained on."
    )


def frequency_table(studio: Studio, run_ids: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Per-class fractions (source sorted when available) and a note naming the dataset of each
    bar series or saying what is missing — or why the source is withheld: a run of ``run_ids``
    trained on other source data than the one counted."""
    mismatched = studio.source_mismatches(run_ids or [])
    source, target = studio.source_stats(), studio.target_stats()
    names = dataset_names(studio)
    if source is not None and not mismatched:
        note = f"Source bars: {names['source']}; target bars: {names['target']}."
        return pd.DataFrame(long_tail(source, target).rows()), note
    if mismatched:
        return target_table(target), mismatch_note(studio, mismatched)
    state = studio.source_stats_state() or ""
    note = (
        "computing source statistics…"
        if state in ("queued", "running")
        else "No source dataset (start the app with --source DIR: a GTA5, SYNTHIA or SynthCity "
        f"folder): target only ({names['target']})."
    )
    return target_table(target), note


def target_table(target: Any) -> pd.DataFrame:
    """Per-class target fractions, most frequent first, without source columns."""
    pixels, images = class_fractions(target, "target_stats")
    order = np.argsort(-pixels, kind="stable")
    rows = [
        {"train_id": int(c), "class": CLASSES[c], "source_pixels": None, "source_images": None,
         "target_pixels": float(pixels[c]), "target_images": float(images[c])}
        for c in order
    ]  # fmt: skip
    return pd.DataFrame(rows)


def frequency_figure(
    table: pd.DataFrame, kind: str, names: dict[str, str | None] | None = None
) -> go.Figure:
    """Grouped bars of source and target fractions, log y; each series named by its dataset
    (``names``: domain → dataset) in the legend."""
    fig, names = go.Figure(), names or {}
    for domain in ("source", "target"):
        values = table[f"{domain}_{kind}"]
        if values.isna().all():
            continue
        name = f"{domain}: {names[domain]}" if names.get(domain) else domain
        fig.add_bar(x=table["class"], y=values, name=name, marker_color=DOMAIN_COLORS[domain])
    what = "labelled pixels" if kind == "pixels" else "images containing the class"
    fig.update_yaxes(type="log", title_text=f"fraction of {what}")
    fig.update_xaxes(tickangle=-45)
    style(fig, 380, f"Class frequency: {what} (sorted, log scale)")
    legend = {"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0}  # the datasets, on top
    return fig.update_layout(showlegend=True, legend=legend, margin={"t": 90})


@user_errors
def frequencies(
    studio: Studio, run_ids: list[str] | None = None
) -> tuple[Any, Any, pd.DataFrame, str | None, str]:
    """(pixel figure, image figure, table, CSV, note); the source bars are withheld when a run of
    ``run_ids`` trained on other source data (see ``frequency_table``)."""
    table, note = frequency_table(studio, run_ids)
    names = dataset_names(studio)
    shown = table.copy()
    for col in ("source_pixels", "source_images", "target_pixels", "target_images"):
        shown[col] = [percent(v) for v in table[col]]
    shown = shown.rename(
        columns={c: f"{c} (%)" for c in shown.columns if "_" in c and c != "train_id"}
    )
    csv = write_csv("class_frequencies.csv", list(table.columns), table.values.tolist())
    figures = [frequency_figure(table, kind, names) for kind in ("pixels", "images")]
    return *figures, shown, csv, note


def run_metrics(studio: Studio, run_ids: list[str], whole_split: bool) -> tuple[dict, list[str]]:
    """Per-run metrics to plot, and notes on runs still computing or without any evaluation."""
    chosen, notes = {}, []
    for rid in run_ids:
        title = studio.run(rid).short_title
        if whole_split:
            studio.val_pass(rid)
        metrics = studio.val_metrics(rid)
        done, total = studio.val_pass_progress(rid)
        if whole_split and done < total:
            notes.append(f"{title}: whole-split pass {done}/{total}")
        if metrics is None:
            notes.append(f"{title}: no evaluation yet")
            continue
        origin = None if whole_split else studio.val_metrics_origin(rid)
        if origin is not None:
            notes.append(f"{title}: IoU from {origin}, not from this val split; {RESCORE}")
        chosen[title] = metrics
    return chosen, notes


@user_errors
def iou_frequency(
    studio: Studio, run_ids: list[str], whole_split: bool
) -> tuple[Any, pd.DataFrame, str | None, str, Any]:
    """(IoU vs frequency scatter, table, CSV, status, timer update)."""
    if not run_ids:
        return (
            message_figure("No trained runs yet"),
            pd.DataFrame(),
            None,
            "",
            gr.Timer(active=False),
        )
    metrics, notes = run_metrics(studio, run_ids, whole_split)
    pixels = class_pixel_totals(studio.target_stats())
    rows = iou_vs_frequency(metrics, pixels) if metrics else []
    waiting = any("pass" in n for n in notes)
    table = pd.DataFrame(rows)
    csv = (
        write_csv("iou_vs_frequency.csv", list(table.columns), table.values.tolist())
        if rows
        else None
    )
    return iou_figure(rows), table, csv, " · ".join(notes), gr.Timer(active=waiting)


def rare_names(rows: list[dict], count: int = LABELLED_RARE) -> set[str]:
    """The ``count`` rarest classes of the rows (by pixel fraction)."""
    fractions = {r["class"]: r["pixel_fraction"] for r in rows}
    return set(sorted(fractions, key=fractions.get)[:count])


def iou_figure(rows: list[dict]) -> go.Figure:
    """IoU of every run against target class pixel frequency (log x): one marker per class and
    run (no lines: classes are not a sequence), every point named on hover, the rarest by text."""
    if not rows:
        return message_figure("No evaluated runs yet")
    fig, rare = go.Figure(), rare_names(rows)
    for i, run in enumerate(dict.fromkeys(r["run"] for r in rows)):
        mine = [r for r in rows if r["run"] == run and r["iou"] == r["iou"]]
        fig.add_scatter(
            x=[r["pixel_fraction"] for r in mine], y=[100 * r["iou"] for r in mine],
            mode="markers+text", name=run, customdata=[r["class"] for r in mine],
            text=[r["class"] if r["class"] in rare else "" for r in mine],
            textposition="top center", marker={"symbol": SYMBOLS[i % len(SYMBOLS)], "size": 9},
            hovertemplate="%{customdata}<br>frequency %{x:.2%}<br>IoU %{y:.1f}<extra>" + run
            + "</extra>",
        )  # fmt: skip
    fig.update_xaxes(type="log", title_text="target class pixel frequency (log)")
    fig.update_yaxes(title_text="IoU (%)", range=[0, 100])
    return style(fig, 420, "Per-class IoU against class frequency")


def build(studio: Studio, shared: Shared) -> RunPickers:
    note = gr.Markdown()
    with gr.Row():
        pixels = gr.Plot(label="pixel frequency")
        images = gr.Plot(label="image frequency")
    with gr.Accordion("Frequency table", open=False):
        table = gr.Dataframe(interactive=False, max_height=320)
        csv = gr.DownloadButton("Download frequencies (CSV)", value=None)
    gr.Markdown("#### Per-class IoU against class frequency")
    choices = run_choices(studio)
    with gr.Row():
        runs = gr.CheckboxGroup(
            choices, value=default_runs(studio), label="runs (shipped checkpoints by default)",
            scale=3, elem_id="longtail-runs",
        )  # fmt: skip
        whole = gr.Checkbox(label=WHOLE_SPLIT, value=False, scale=1)
    status = gr.Markdown()
    scatter = gr.Plot(label="IoU vs frequency", elem_id="longtail-iou")
    with gr.Accordion("IoU table", open=False):
        iou_table = gr.Dataframe(interactive=False, max_height=320)
        iou_csv = gr.DownloadButton("Download IoU vs frequency (CSV)", value=None)
    timer = gr.Timer(2.0, active=False)
    freq_out = [pixels, images, table, csv, note]
    iou_out = [scatter, iou_table, iou_csv, status, timer]
    gr.on([runs.change, whole.change], bind(iou_frequency, studio), [runs, whole], iou_out,
          api_name="longtail_iou", **HEAVY)  # fmt: skip
    runs.change(bind(frequencies, studio), runs, freq_out, api_visibility="private",
                **HEAVY)  # fmt: skip
    timer.tick(bind(_open, studio), [runs, whole], [*freq_out, *iou_out], api_visibility="private",
               **HEAVY)  # fmt: skip
    on_open = (bind(_open, studio), [runs, whole], [*freq_out, *iou_out])
    return RunPickers([runs], bind(_refresh, studio), on_select=on_open, select_lane=HEAVY)


def default_runs(studio: Studio) -> list[str]:
    """The runs ticked when the tab is built: the shipped checkpoints, else the featured runs."""
    shipped = [r.run_id for r in studio.runs(with_model=True) if r.kind == "shipped"]
    return shipped or studio.featured_runs()


def _refresh(studio: Studio, current: list[str] | None) -> list[Any]:
    """New runs join the choices unticked; the user's ticks stay (minus runs that are gone)."""
    choices = run_choices(studio)
    ids = [rid for _, rid in choices]
    kept = [r for r in current or [] if r in ids]
    if kept == list(current or []):
        return [gr.update(choices=choices)]
    return [gr.update(choices=choices, value=kept)]


def _open(studio: Studio, run_ids: list[str], whole: bool) -> list[Any]:
    """Both views; the timer keeps polling while source statistics or val passes compute."""
    freq, iou = frequencies(studio, run_ids), iou_frequency(studio, run_ids, whole)
    waiting = (studio.source_stats_state() or "") in ("queued", "running") or iou[-1].active
    return [*freq, *iou[:-1], gr.Timer(active=waiting)]
