"""Compare tab: one target image, the ground truth and every chosen model side by side.

Synced zoom (linked plotly panels; "window i of n" progress per model while a slow image is
predicted by sliding windows), overlay opacity, class hide/isolate, error / confidence /
entropy views, a fixed-vs-broke diff of two methods (also as an image slider), a click-a-pixel
readout of every model and a per-image per-class IoU table (with overlap and boundary IoU) with a
CSV download, the overlap band drawn over the panels, the panel grid as a PNG download, and
previous / next image by the ← / → keys. The image picker filters on overlapping entities, their
pair type and rare classes, and sorts by a per-image score (B − A mIoU, or where the shown models
disagree most on overlaps); scores come from ``Studio.passes`` (shipped files read at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from app.views import compare_picker
from app.views.common import (
    CHEAP,
    EMPTY_RUNS,
    HEAVY,
    MAX_INDEX,
    RunPickers,
    Shared,
    bind,
    default_runs,
    dropdown_update,
    image_grid,
    legend_html,
    message_figure,
    number,
    percent,
    run_choices,
    user_errors,
)
from app.views.compare_picker import (  # the picker's handlers, re-exported
    SORTS,
    choose_index,
    filtered_indices,
    gallery,
    next_image,
    pair_choices,
    previous_image,
    select_image,
    sorted_indices,
    step_image,
    upload,
)
from app.views.exports import write_csv, write_png
from dida import visualize as V
from dida.data.classes import CLASSES
from dida.scores import image_row
from dida.studio import ImageKey, Studio

__all__ = [
    "build", "grid", "panels", "export_png", "legend", "readout", "click", "click_image", "diff",
    "iou_table", "band_table", "in_checkbox_order", "gallery", "filtered_indices", "sorted_indices",
    "pair_choices", "select_image", "choose_index", "upload", "step_image", "previous_image",
    "next_image", "window_progress", "SORTS", "VIEWS",
]  # fmt: skip
"""The handlers (the picker's re-exported from ``compare_picker``)."""

VIEWS = ["overlay", "labels", "errors", "confidence", "entropy"]
READOUT_HEADERS = ["source", "class", "probability", "top 3"]
STILL_LOADING = "**Still loading the new image — click again.**"
"""The readout's answer to a click that arrived before the clicked image was placed."""
PROGRESS = gr.Progress()
"""The grid's progress tracker (Gradio passes it to a handler whose parameter defaults to it)."""
WindowProgress = Callable[[int, int], None]
"""``progress(windows done, windows in all)`` of one model's prediction (``Studio.predict``)."""


# --- the panels ------------------------------------------------------------------------------


def panel(
    studio: Studio,
    key: ImageKey,
    run_id: str,
    view: str,
    opacity: float,
    threshold: float,
    palette: str,
    hidden: list[str],
    isolate: str | None,
    progress: WindowProgress | None = None,
) -> np.ndarray:
    """One model's image for ``view`` (the colouring itself is ``dida.visualize``'s);
    ``progress`` follows the windows of a prediction that is not cached yet."""
    item = studio.item(key)
    if view in ("confidence", "entropy"):
        probs = studio.predict(run_id, key, progress=progress).probs
        return (
            V.confidence_map(probs, threshold or None)
            if view == "confidence"
            else V.entropy_map(probs)
        )
    labels = studio.labels(run_id, key, progress=progress)  # no probabilities decompressed
    if view == "errors" and item["label"] is not None:
        return V.error_map(labels, item["label"])
    return _labels(item["image"], labels, view, opacity, palette, hidden, isolate)


def _labels(image, label, view, opacity, palette, hidden, isolate) -> np.ndarray:
    rgb = V.colorize(label, palette, hidden, isolate or None)
    if view == "labels":
        return rgb
    return V.overlay(image, rgb, opacity, where=V.visible_mask(label, hidden))


def ground_truth_panel(studio, key, view, opacity, palette, hidden, isolate) -> np.ndarray | None:
    item = studio.item(key)
    if item["label"] is None:
        return None
    mode = "overlay" if view == "overlay" else "labels"
    return _labels(item["image"], item["label"], mode, opacity, palette, hidden, isolate)


def in_checkbox_order(studio: Studio, run_ids: list[str] | None) -> list[str]:
    """The ticked runs in the order the checkboxes list them (not the order they were ticked)."""
    ticked = set(run_ids or [])
    return [rid for _, rid in run_choices(studio) if rid in ticked]


def window_progress(
    progress: Callable[..., Any] | None, title: str, position: int, count: int
) -> WindowProgress | None:
    """A ``Studio.predict`` progress callback that tells ``progress`` (a ``gr.Progress``)
    "<title>: window i of n", at the fraction of all ``count`` models done (this one is the
    ``position``-th, from 0)."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        fraction = (position + done / max(total, 1)) / max(count, 1)
        progress(fraction, desc=f"{title}: window {done} of {total}")

    return report


def panels(
    studio: Studio,
    key: ImageKey,
    run_ids: list[str],
    view: str,
    opacity: float,
    threshold: float,
    palette: str,
    hidden: list[str],
    isolate: str | None,
    show_overlap: bool = False,
    progress: Callable[..., Any] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """(title, RGB) of the image, the ground truth and each run, in that order; with
    ``show_overlap`` the overlap band is drawn over every panel in magenta; ``progress``
    (a ``gr.Progress``) shows "window i of n" while a model predicts a slow image."""
    item = studio.item(key)
    if view == "errors" and item["label"] is None:
        gr.Warning("an upload has no ground truth: showing labels instead of errors")
        view = "labels"
    opacity = number(opacity, "opacity", 0, 1, integer=False)
    threshold = number(threshold, "confidence threshold", 0, 1, integer=False, default=0)
    args = (view, opacity, threshold, palette, hidden, isolate)
    shown = [("image", item["image"])]
    gt = ground_truth_panel(studio, key, view, opacity, palette, hidden, isolate)
    shown += [] if gt is None else [("ground truth", gt)]
    for position, rid in enumerate(run_ids):
        title = studio.run(rid).short_title
        report = window_progress(progress, title, position, len(run_ids))
        shown.append((title, panel(studio, key, rid, *args, progress=report)))
    return _with_overlap(studio, key, shown) if show_overlap else shown


def _with_overlap(
    studio: Studio, key: ImageKey, shown: list[tuple[str, np.ndarray]]
) -> list[tuple[str, np.ndarray]]:
    mask = studio.passes.overlap_mask(key)
    if mask is None:
        gr.Warning("this image has no instance map, so no overlap band to draw")
        return shown
    return [(title, V.mark_mask(rgb, mask)) for title, rgb in shown]


@user_errors
def grid(
    studio: Studio,
    key: ImageKey,
    run_ids: list[str],
    view: str,
    opacity: float,
    threshold: float,
    palette: str,
    hidden: list[str],
    isolate: str | None,
    show_overlap: bool = False,
    progress: Callable[..., Any] | None = None,
) -> tuple[Any, str, np.ndarray]:
    """(panel figure with linked zoom, legend HTML, the image to click on). Panels follow the
    checkbox order; the legend lists the classes of the ground truth and the shown predictions;
    ``progress`` (a ``gr.Progress``) shows "window i of n" per model while a slow image runs."""
    run_ids = in_checkbox_order(studio, run_ids)
    args = (view, opacity, threshold, palette, hidden, isolate, show_overlap)
    shown = panels(studio, key, run_ids, *args, progress=progress)
    figure = image_grid(shown, photos=1) if run_ids else message_figure(EMPTY_RUNS_PLAIN)
    item = studio.item(key)
    labels = [studio.labels(r, key) for r in run_ids]
    labels += [] if item["label"] is None else [item["label"]]
    overlap = " · overlap band in magenta" if show_overlap else ""
    return figure, legend(view, palette, V.present_classes(*labels)) + overlap, item["image"]


@user_errors
def export_png(
    studio: Studio,
    key: ImageKey,
    run_ids: list[str],
    view: str,
    opacity: float,
    threshold: float,
    palette: str,
    hidden: list[str],
    isolate: str | None,
    show_overlap: bool = False,
) -> str:
    """The panel grid as one PNG (composed by ``dida.visualize.grid_image``); returns its path."""
    args = (view, opacity, threshold, palette, hidden, isolate, show_overlap)
    shown = panels(studio, key, in_checkbox_order(studio, run_ids), *args)
    return write_png(f"compare_{str(key).replace(':', '_')}_{view}.png", V.grid_image(shown))


EMPTY_RUNS_PLAIN = "No trained runs yet: start one in the Train tab"


def legend(view: str, palette: str, classes: list[int] | None = None) -> str:
    """Legend of the current view (class colours — of ``classes`` only when given — or the error
    or colour-map meaning)."""
    if view == "errors":
        return legend_html(V.ERROR_LEGEND)
    if view == "confidence":
        return legend_html(
            [
                ("low max-probability", "#440154"),
                ("high", "#fde725"),
                ("below threshold", "#999999"),
            ]
        )
    if view == "entropy":
        return legend_html([("certain (entropy 0)", "#00224e"), ("uniform (entropy 1)", "#fee838")])
    return legend_html(V.legend_entries(palette, classes))


# --- readout, diff, IoU table ----------------------------------------------------------------


@user_errors
def readout(
    studio: Studio, key: ImageKey, run_ids: list[str], x: float | None, y: float | None
) -> tuple[str, list[list[Any]]]:
    """(heading, rows) of the class and probability of every model at pixel (x, y)."""
    if x is None or y is None:
        raise gr.Error("enter both x and y (pixels from the top-left corner)")
    x, y = number(x, "x", 0, MAX_INDEX), number(y, "y", 0, MAX_INDEX)
    readings = studio.readout(run_ids, key, x, y)
    rows = [
        [
            r.source,
            r.class_name,
            "" if r.prob is None else f"{r.prob:.3f}",
            ", ".join(f"{CLASSES[c]} {p:.2f}" for c, p in r.top),
        ]
        for r in readings
    ]
    return f"**Pixel (x={x}, y={y})**", rows


def click(
    studio: Studio,
    key: ImageKey,
    run_ids: list[str],
    evt: gr.SelectData,
    placed: ImageKey | None = None,
) -> tuple[Any, Any, str, Any]:
    """A click on the image (``evt.index == [x, y]``) → x, y and the readout there. ``placed`` is
    the image the click image shows: while a new image is still being placed the click is
    answered "still loading — click again" (never dropped silently)."""
    if placed is not None and placed != key:
        gr.Info("still loading the new image — click again")
        return gr.update(), gr.update(), STILL_LOADING, gr.update()
    x, y = int(evt.index[0]), int(evt.index[1])
    return (x, y, *readout(studio, key, run_ids, x, y))


def click_image(studio: Studio, key: ImageKey) -> tuple[np.ndarray, ImageKey]:
    """(the image to click on, its key): placed by a cheap event as soon as the image changes."""
    return studio.item(key)["image"], key


@user_errors
def diff(
    studio: Studio, key: ImageKey, run_a: str | None, run_b: str | None, palette: str
) -> tuple[np.ndarray | None, tuple | None, str]:
    """(fixed/broke map of A → B, (A labels, B labels) for the slider, pixel counts)."""
    item = studio.item(key)
    if not run_a or not run_b:
        return None, None, "Choose methods A and B."
    pred_a, pred_b = studio.labels(run_a, key), studio.labels(run_b, key)
    pair = (V.colorize(pred_a, palette), V.colorize(pred_b, palette))
    if item["label"] is None:
        return None, pair, "An upload has no ground truth, so no fixed / broke map."
    counts = V.diff_counts(pred_a, pred_b, item["label"])
    text = " · ".join(f"{name}: {n:,}" for name, n in counts.items())
    return V.diff_map(pred_a, pred_b, item["label"]), pair, f"{legend_html(V.DIFF_LEGEND)}{text}"


@user_errors
def iou_table(
    studio: Studio, key: ImageKey, run_ids: list[str]
) -> tuple[list[list[Any]], list[str], str | None]:
    """(rows, headers, CSV path) of per-class IoU (%) of every model on this image, classes sorted by
    their ground-truth pixels (most frequent first)."""
    if studio.item(key)["label"] is None or not run_ids:
        return [], ["class"], None
    ious = studio.image_iou(run_ids, key)
    pixels = studio.class_pixels(key)
    titles = [studio.run(r).short_title for r in run_ids]
    shown = [
        c
        for c in np.argsort(-pixels, kind="stable")
        if any(ious[r][CLASSES[c]] is not None for r in run_ids)
    ]
    rows = [
        [CLASSES[c], int(pixels[c])] + [percent(ious[r][CLASSES[c]]) for r in run_ids]
        for c in shown
    ]
    headers = ["class", "pixels (GT)", *titles]
    return rows, headers, write_csv(f"iou_{key}.csv", headers, rows)


BAND_HEADERS = ["model", "mIoU", "overlap IoU", "boundary IoU"]
BAND_NOTE = (
    "mIoU (%) on this image: over all labelled pixels; on the overlap band (pixels within 3 px of a"
    " touching entity of another thing class); near class boundaries (within 3 px)."
)


@user_errors
def band_table(studio: Studio, key: ImageKey, run_ids: list[str]) -> list[list[Any]]:
    """Rows [model, mIoU, overlap IoU, boundary IoU] (%) of each run on this image (empty for
    an upload); "–" where undefined (no overlap in the image)."""
    item = studio.item(key)
    if item["label"] is None:
        return []
    rows = []
    for rid in in_checkbox_order(studio, run_ids):
        pred = studio.labels(rid, key)
        row = image_row(pred, item["label"], item.get("instance"))
        values = (row["miou"], row["overlap_iou"], row["boundary_iou"])
        rows.append([studio.run(rid).short_title, *(percent(v) for v in values)])
    return rows


# --- layout and wiring -----------------------------------------------------------------------


def build(studio: Studio, shared: Shared) -> RunPickers:
    """Lay out the Compare tab inside the current ``gr.Tab``; returns its run pickers."""
    choices, chosen = run_choices(studio), default_runs(studio)
    empty = gr.Markdown(EMPTY_RUNS, visible=not choices)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            picker = compare_picker.layout(studio)
        with gr.Column(scale=3):
            ui = _panels(choices, chosen)
    _wire(studio, shared, picker, ui)
    return RunPickers(
        [ui["models"], ui["run_a"], ui["run_b"], empty],
        bind(_refresh, studio),
    )


def _refresh(
    studio: Studio, models: list[str] | None, run_a: str | None, run_b: str | None, _empty: Any
) -> list[Any]:
    choices = run_choices(studio)
    ids = {rid for _, rid in choices}
    kept = [m for m in models or [] if m in ids]
    chosen = default_runs(studio)
    models_update = (
        gr.update(choices=choices)
        if kept == (models or []) and kept
        else gr.update(choices=choices, value=kept or chosen)
    )
    return [
        models_update,
        dropdown_update(choices, run_a, chosen[-1] if chosen else None),
        dropdown_update(choices, run_b, chosen[0] if chosen else None),
        gr.update(visible=not choices),
    ]


def _panels(choices: list[tuple[str, str]], chosen: list[str]) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    ui["models"] = gr.CheckboxGroup(choices, value=chosen, label="models")
    with gr.Row():
        ui["view"] = gr.Radio(VIEWS, value="overlay", label="view")
        ui["opacity"] = gr.Slider(
            0, 1, value=0.6, step=0.05, label="overlay opacity", elem_id="compare-opacity"
        )
        ui["threshold"] = gr.Slider(
            0, 1, value=0, step=0.01, label="confidence threshold (0 = off)"
        )
    with gr.Row():
        ui["show_overlap"] = gr.Checkbox(
            label="show the overlap band (magenta)", value=False, elem_id="compare-overlap-band"
        )
        ui["export"] = gr.Button("Export panels as PNG", size="sm", elem_id="compare-export")
        ui["png"] = gr.File(label="panel grid (PNG)", interactive=False, elem_id="compare-png")
    with gr.Accordion("Classes: hide or isolate", open=False):
        ui["hidden"] = gr.CheckboxGroup(list(CLASSES), value=[], label="hide classes")
        ui["isolate"] = gr.Dropdown(
            [("none", "")] + [(c, c) for c in CLASSES], value="", label="isolate one class"
        )
    ui["grid"] = gr.Plot(label="side by side (zoom one panel: all follow)", elem_id="compare-grid")
    ui["legend"] = gr.HTML()
    ui.update(_readout())
    ui["placed"] = gr.State(None)
    return {**ui, **_diff_and_table(choices, chosen)}


def _readout() -> dict[str, Any]:
    """The clickable image, x / y entry and the per-model pixel readout."""
    ui: dict[str, Any] = {}
    with gr.Row():
        with gr.Column():
            ui["click"] = gr.Image(
                label="click a pixel for the readout", format="png", interactive=False, height=280,
                elem_id="compare-click", buttons=["download"],
            )  # fmt: skip
            with gr.Row():
                ui["x"] = gr.Number(label="x", precision=0, minimum=0)
                ui["y"] = gr.Number(label="y", precision=0, minimum=0)
                ui["read"] = gr.Button("Read pixel")
        with gr.Column():
            ui["pixel"] = gr.Markdown("Click the image (or enter x, y) to read every model there.")
            ui["readout"] = gr.Dataframe(
                headers=READOUT_HEADERS,
                label="pixel readout",
                elem_id="compare-readout",
                interactive=False,
            )
    return ui


def _diff_and_table(choices: list[tuple[str, str]], chosen: list[str]) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    gr.Markdown("#### Fixed / broke: method A → method B")
    with gr.Row():
        ui["run_a"] = gr.Dropdown(choices, value=chosen[-1] if chosen else None, label="method A")
        ui["run_b"] = gr.Dropdown(choices, value=chosen[0] if chosen else None, label="method B")
    with gr.Row():
        ui["diff"] = gr.Image(label="fixed / broke", format="png", interactive=False, height=300)
        ui["slider"] = gr.ImageSlider(label="A | B (drag the divider)", format="png", height=300)
    ui["diff_text"] = gr.HTML()
    gr.Markdown(f"#### Scores on this image\n{BAND_NOTE}")
    ui["bands"] = gr.Dataframe(
        headers=BAND_HEADERS, label="mIoU / overlap IoU / boundary IoU (%)", interactive=False,
        elem_id="compare-bands",
    )  # fmt: skip
    gr.Markdown("#### Per-class IoU on this image (%), most frequent classes first")
    ui["iou"] = gr.Dataframe(label="IoU", interactive=False)
    ui["csv"] = gr.DownloadButton("Download IoU table (CSV)", value=None)
    return ui


def _wire(studio: Studio, shared: Shared, p: dict[str, Any], ui: dict[str, Any]) -> None:
    """On a page load the grid comes first (what a user opening the app waits for); the gallery's
    thumbnails, the fixed/broke map and the tables follow it instead of competing with it."""
    first = _wire_panels(studio, shared, ui)
    compare_picker.wire(studio, shared, p, ui, after=first)
    key = shared.image_key
    diff_in, diff_out = (
        [key, ui["run_a"], ui["run_b"], shared.palette],
        [ui["diff"], ui["slider"], ui["diff_text"]],
    )
    gr.on([key.change, ui["run_a"].change, ui["run_b"].change, shared.palette.change],
          bind(diff, studio), diff_in, diff_out, api_name="diff", **HEAVY)  # fmt: skip
    first.then(bind(diff, studio), diff_in, diff_out, api_visibility="private", **HEAVY)
    iou_in, iou_out = [key, ui["models"]], [ui["bands"], ui["iou"], ui["csv"]]
    gr.on([key.change, ui["models"].change], bind(_iou_outputs, studio), iou_in, iou_out,
          api_name="iou_table", **HEAVY)  # fmt: skip
    first.then(bind(_iou_outputs, studio), iou_in, iou_out, api_visibility="private", **HEAVY)


def _wire_panels(studio: Studio, shared: Shared, ui: dict[str, Any]) -> Any:
    """The grid redraws on every change of its inputs — a slider's typed value included (its
    ``.change``; ``.release`` would only add a second draw of the same value) — always for the
    latest values; the click image is placed by a cheap event of its own. Returns the page load's
    first grid (the views a new user waits for less are chained after it)."""
    key = shared.image_key
    view_in = [key, ui["models"], ui["view"], ui["opacity"], ui["threshold"], shared.palette,
               ui["hidden"], ui["isolate"], ui["show_overlap"]]  # fmt: skip
    gr.on(
        [key.change, ui["models"].change, ui["view"].change, ui["opacity"].change,
         ui["threshold"].change, shared.palette.change, ui["hidden"].change, ui["isolate"].change,
         ui["show_overlap"].change],
        bind(_grid_outputs, studio), view_in, [ui["grid"], ui["legend"]], api_name="grid",
        trigger_mode="always_last", **HEAVY,
    )  # fmt: skip
    first = shared.demo.load(bind(_grid_outputs, studio), view_in, [ui["grid"], ui["legend"]],
                             api_visibility="private", **HEAVY)  # fmt: skip
    ui["export"].click(bind(export_png, studio), view_in, ui["png"], api_name="export_png", **HEAVY)
    gr.on([shared.demo.load, key.change], bind(click_image, studio), key,
          [ui["click"], ui["placed"]], api_name="click_image", show_progress="hidden",
          **CHEAP)  # fmt: skip
    readout_out = [ui["pixel"], ui["readout"]]
    ui["click"].select(bind(click, studio), [key, ui["models"], ui["placed"]],
                       [ui["x"], ui["y"], *readout_out], api_name="click", **CHEAP)  # fmt: skip
    ui["read"].click(bind(readout, studio), [key, ui["models"], ui["x"], ui["y"]], readout_out,
                     api_name="readout", **CHEAP)  # fmt: skip
    return first


def _grid_outputs(
    studio: Studio,
    key: ImageKey,
    run_ids: list[str],
    view: str,
    opacity: float,
    threshold: float,
    palette: str,
    hidden: list[str],
    isolate: str | None,
    show_overlap: bool,
    progress: gr.Progress = PROGRESS,
) -> tuple[Any, str]:
    args = (view, opacity, threshold, palette, hidden, isolate, show_overlap)
    figure, legend_text, _ = grid(studio, key, run_ids, *args, progress=progress)
    return figure, legend_text


def _iou_outputs(studio: Studio, key: ImageKey, run_ids: list[str]) -> tuple[Any, Any, Any]:
    bands = pd.DataFrame(band_table(studio, key, run_ids), columns=BAND_HEADERS)
    rows, headers, path = iou_table(studio, key, run_ids)
    update = gr.update(value=path, interactive=path is not None)
    return bands, pd.DataFrame(rows, columns=headers), update
