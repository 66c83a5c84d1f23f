"""Instance bank tab: step through the bank snapshots of a DIDA run.

Per snapshot: per-class slot counts (written / never written / changed at this step), the age of every
slot, the table of slots written since the previous snapshot, and for a selected slot the source image
its feature came from, cut around the class region it averaged (the region outlined; runs trained
before provenance was recorded say so). Previous / next / play step through the history;
▶ play at the last snapshot (where the tab opens) rewinds to the first, and "loop" starts over.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.views.common import (
    CHEAP,
    RunPickers,
    Shared,
    bind,
    dropdown_update,
    message_figure,
    number,
    run_choices,
    style,
    user_errors,
)
from app.views.exports import write_csv
from dida import visualize as V
from dida.analysis import slot_table
from dida.bank import BankSnapshot
from dida.data.classes import CLASSES
from dida.studio import SlotSource, Studio, slot_rows

NO_BANK = "No run with an instance bank yet: train a DIDA run in the Train tab."
SLOT_HEADERS = ["slot", "class", "age", "written_at", "changed", "source_id", "box"]


def class_colors(palette: str) -> list[str]:
    return [color for _, color in V.legend_entries(palette)]


def counts_figure(snapshot: BankSnapshot, palette: str) -> go.Figure:
    """Per-class slots: written (class colour), never written (grey), changed at this step (outline)."""
    rows, colors = slot_table(snapshot), class_colors(palette)
    names = [r["class"] for r in rows]
    written = [r["slots"] - r["never_written"] for r in rows]
    fig = go.Figure()
    fig.add_bar(x=names, y=written, name="written", marker_color=colors)
    fig.add_bar(
        x=names, y=[r["never_written"] for r in rows], name="never written", marker_color="#999999"
    )
    fig.add_bar(
        x=names, y=[r["changed"] for r in rows], name="changed at this step",
        marker={"color": "rgba(0,0,0,0)", "line": {"color": "#D55E00", "width": 2}},
    )  # fmt: skip
    fig.update_layout(barmode="overlay", yaxis_title="slots")
    fig.data[1].base = written
    return style(fig, 320, f"Slots per class at iteration {snapshot.iteration}")


def ages_figure(snapshot: BankSnapshot, palette: str) -> go.Figure:
    """Age (iterations since the last write) of every slot; changed slots drawn as stars."""
    rows, colors = slot_rows(snapshot), class_colors(palette)
    fig = go.Figure()
    for changed in (False, True):
        chosen = [r for r in rows if r["changed"] == changed]
        fig.add_scatter(
            x=[r["slot"] for r in chosen],
            y=[max(r["age"], 0) for r in chosen],
            mode="markers",
            name="changed at this step" if changed else "slot",
            marker={
                "color": [
                    colors[CLASSES.index(r["class"])] if r["age"] >= 0 else "#999999"
                    for r in chosen
                ],
                "symbol": "star" if changed else "circle",
                "size": 11 if changed else 7,
                "line": {"color": "#D55E00" if changed else "rgba(0,0,0,0)", "width": 1},
            },
            customdata=[[r["class"], r["age"], r["source_id"]] for r in chosen],
            hovertemplate="slot %{x}<br>%{customdata[0]}<br>age %{customdata[1]}<br>source %{customdata[2]}<extra></extra>",
        )
    fig.update_layout(
        xaxis_title="slot (grouped by class, rarest first)", yaxis_title="age (iterations)"
    )
    return style(fig, 320, "Slot ages (−1 → never written, drawn grey at 0)")


@user_errors
def select_run(studio: Studio, run_id: str | None) -> dict:
    """Slider range of the run's snapshots (value = the last one)."""
    history = studio.bank_history(run_id) if run_id else None
    last = max(len(history) - 1, 0) if history else 0
    return gr.update(minimum=0, maximum=max(last, 1), value=last, interactive=bool(history))


def snapshot_index(history: list[BankSnapshot], index: Any) -> int:
    """The snapshot slider's value as an index of ``history`` (a cleared box: the first)."""
    return number(index, "snapshot", 0, len(history) - 1, default=0)


@user_errors
def show(
    studio: Studio, run_id: str | None, index: float, palette: str
) -> tuple[str, Any, Any, pd.DataFrame, str | None]:
    """(summary, counts figure, ages figure, changed-slot table, CSV of all slots)."""
    if not run_id:
        empty = message_figure(NO_BANK)
        return NO_BANK, empty, empty, pd.DataFrame(columns=SLOT_HEADERS), None
    history = studio.bank_history(run_id)
    index = snapshot_index(history, index)
    snap = history[index]
    rows = slot_rows(snap)
    changed = [r for r in rows if r["changed"]]
    filled = sum(r["age"] >= 0 for r in rows)
    text = (
        f"**Snapshot {index + 1} of {len(history)}** — iteration {snap.iteration} · K = {len(rows)} slots · "
        f"{filled} written · {len(changed)} changed since the previous snapshot"
    )
    table = pd.DataFrame([[r[h] for h in SLOT_HEADERS] for r in changed], columns=SLOT_HEADERS)
    csv = write_csv(
        f"bank_{snap.iteration}.csv", SLOT_HEADERS, [[r[h] for h in SLOT_HEADERS] for r in rows]
    )
    return text, counts_figure(snap, palette), ages_figure(snap, palette), table, csv


@user_errors
def step(studio: Studio, run_id: str | None, index: float, delta: int) -> int:
    """The previous / next snapshot index (clamped)."""
    history = studio.bank_history(run_id) if run_id else None
    if not history:
        return 0
    return min(max(snapshot_index(history, index) + delta, 0), len(history) - 1)


@user_errors
def play(studio: Studio, run_id: str | None, index: float) -> tuple[int, Any]:
    """▶ play: from the last snapshot (where the tab opens) rewind to the first, then start the
    timer; with fewer than two snapshots there is nothing to play."""
    history = studio.bank_history(run_id) if run_id else None
    if not history or len(history) < 2:
        gr.Info("This run has a single bank snapshot: nothing to play.")
        return 0, gr.Timer(active=False)
    index = snapshot_index(history, index)
    return (0 if index >= len(history) - 1 else index), gr.Timer(active=True)


@user_errors
def play_tick(
    studio: Studio, run_id: str | None, index: float, loop: bool = False
) -> tuple[int, Any]:
    """Advance one snapshot; at the last one the timer stops, or (``loop``) starts over."""
    history = studio.bank_history(run_id) if run_id else None
    if not history:
        return 0, gr.Timer(active=False)
    if loop and snapshot_index(history, index) >= len(history) - 1:
        return 0, gr.Timer(active=True)
    nxt = step(studio, run_id, index, 1)
    return nxt, gr.Timer(active=loop or nxt < len(history) - 1)


def source_text(source: SlotSource) -> str:
    """What the slot holds and where its feature came from (or why that is not known)."""
    if source.written_at < 0:
        return f"**Slot {source.slot}** — class *{source.class_name}*, never written."
    text = (
        f"**Slot {source.slot}** — class *{source.class_name}*, last written at iteration "
        f"{source.written_at} (age {source.age})."
    )
    if source.source_id >= 0:
        text += f" Source image **#{source.source_id}**"
        if source.box:
            x0, y0, x1, y1 = source.box
            text += f", {source.class_name} region x {x0}–{x1}, y {y0}–{y1} (outlined)"
        text += " (after momentum updates: the latest image that contributed)."
    return text + (f" Source image: {source.note}." if source.note else "")


@user_errors
def slot_detail(
    studio: Studio, run_id: str | None, index: float, slot: float | None
) -> tuple[str, np.ndarray | None]:
    """(description, crop of the slot's source image around its region) of one slot of the
    current snapshot."""
    if not run_id or slot is None:
        return "Select a slot in the table (or type its number).", None
    history = studio.bank_history(run_id)
    position = snapshot_index(history, index)
    k = number(slot, "slot", 0, len(history[position].labels) - 1)
    source = studio.slot_source(run_id, position, k)
    return source_text(source), source.crop


def pick_slot(table: pd.DataFrame, evt: gr.SelectData) -> int | None:
    """A click in the changed-slot table → that row's slot number."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return None if table is None or row >= len(table) else int(table.iloc[row]["slot"])


def _layout(choices: list[tuple[str, str]]) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    with gr.Row():
        ui["run"] = gr.Dropdown(
            choices, value=choices[0][1] if choices else None, label="DIDA run", scale=3
        )
        ui["prev"] = gr.Button("◀ previous", scale=1)
        ui["play"] = gr.Button("▶ play", scale=1, elem_id="bank-play")
        ui["pause"] = gr.Button("❚❚ pause", scale=1)
        ui["next"] = gr.Button("next ▶", scale=1)
        ui["loop"] = gr.Checkbox(label="loop", value=False, scale=1, elem_id="bank-loop")
    ui["index"] = gr.Slider(0, 1, value=0, step=1, label="snapshot", elem_id="bank-slider")
    ui["timer"] = gr.Timer(0.8, active=False)
    ui["summary"] = gr.Markdown(NO_BANK if not choices else "")
    with gr.Row():
        ui["counts"] = gr.Plot(label="slots per class")
        ui["ages"] = gr.Plot(label="slot ages")
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("#### Slots written since the previous snapshot (click a row)")
            ui["table"] = gr.Dataframe(
                headers=SLOT_HEADERS, interactive=False, max_height=300, elem_id="bank-table"
            )
            ui["csv"] = gr.DownloadButton("Download all slots (CSV)", value=None)
        with gr.Column(scale=1):
            ui["slot"] = gr.Number(label="slot", precision=0, minimum=0, elem_id="bank-slot")
            ui["detail"] = gr.Markdown(elem_id="bank-slot-detail")
            ui["crop"] = gr.Image(
                label="source image of the slot (its class region outlined)", format="png",
                interactive=False, height=280, elem_id="bank-slot-crop",
            )  # fmt: skip
    return ui


def build(studio: Studio, shared: Shared) -> RunPickers:
    """Lay out and wire the tab; returns its run picker."""
    gr.Markdown(studio.bank_note(), visible=bool(studio.bank_note()))  # official: no bank
    ui = _layout(run_choices(studio, with_bank=True))
    run, index, timer, private = ui["run"], ui["index"], ui["timer"], "private"
    shown = [ui[k] for k in ("summary", "counts", "ages", "table", "csv")]
    load = [run, index, shared.palette]
    run.change(bind(select_run, studio), run, index, api_name="bank_select_run", **CHEAP).then(
        bind(show, studio), load, shown, **CHEAP
    )
    gr.on([index.change, shared.palette.change], bind(show, studio), load, shown,
          api_name="bank_show", **CHEAP)  # fmt: skip
    steps = {"api_visibility": private, **CHEAP}
    ui["prev"].click(bind(step, studio), [run, index, gr.State(-1)], index, **steps)
    ui["next"].click(bind(step, studio), [run, index, gr.State(1)], index, **steps)
    ui["play"].click(bind(play, studio), [run, index], [index, timer], **steps)
    ui["pause"].click(lambda: gr.Timer(active=False), None, timer, **steps)
    timer.tick(bind(play_tick, studio), [run, index, ui["loop"]], [index, timer], **steps)
    ui["table"].select(pick_slot, ui["table"], ui["slot"], **steps)
    ui["slot"].change(bind(slot_detail, studio), [run, index, ui["slot"]], [ui["detail"], ui["crop"]],
                      api_name="bank_slot", **CHEAP)  # fmt: skip
    on_open = (bind(_first_show, studio), load, [index, *shown])
    return RunPickers([run], bind(_refresh, studio), on_select=on_open)


def _refresh(studio: Studio, run_id: str | None) -> list[Any]:
    return [dropdown_update(run_choices(studio, with_bank=True), run_id)]


def _first_show(studio: Studio, run_id: str | None, index: float, palette: str) -> list[Any]:
    """When the tab opens: the slider range and the current snapshot."""
    slider = select_run(studio, run_id)
    value = slider.get("value", index) if run_id else 0
    return [slider, *show(studio, run_id, value, palette)]
