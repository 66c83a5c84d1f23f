"""Compare tab: one target image, the ground truth and every chosen model side by side.

Synced zoom (linked plotly panels), overlay opacity, class hide/isolate, error / confidence /
entropy views, a fixed-vs-broke diff of two methods (also as an image slider), a click-a-pixel
readout of every model and a per-image per-class IoU table with a CSV download. The image picker
filters on overlapping entities and rare classes and sorts by a per-image score (B − A mIoU).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from app.views.common import (
    CHEAP,
    EMPTY_RUNS,
    HEAVY,
    RunPickers,
    Shared,
    bind,
    default_runs,
    dropdown_update,
    image_grid,
    legend_html,
    message_figure,
    percent,
    run_choices,
    user_errors,
    write_csv,
)
from dida import visualize as V
from dida.data.classes import CLASSES
from dida.studio import ImageKey, Studio

VIEWS = ["overlay", "labels", "errors", "confidence", "entropy"]
SORTS = [
    ("file order", "file"),
    ("B − A mIoU, B's wins first", "gain"),
    ("B − A, B's losses first", "loss"),
]
MAX_GALLERY = 120
"""Thumbnails shown at once (filters and sorting pick which)."""
READOUT_HEADERS = ["source", "class", "probability", "top 3"]


# --- the image picker ------------------------------------------------------------------------


def class_filter_choices(studio: Studio) -> list[tuple[str, str]]:
    rare = ", ".join(CLASSES[c] for c in studio.rare_classes()) or "none"
    return [("all images", "all"), (f"any rare class ({rare})", "rare")] + [
        (name, str(c)) for c, name in enumerate(CLASSES)
    ]


def filtered_indices(
    studio: Studio, overlap_only: bool, class_filter: str
) -> tuple[list[int], str]:
    """Val indices passing the filters, and a note when the overlap index is not ready yet."""
    items, note = studio.val_items(), ""
    if overlap_only and items and items[0].overlap is None:
        state = studio.index_overlaps()  # "unavailable: ..." when the data has no instanceIds
        unavailable = state.startswith("unavailable")
        note = state if unavailable else "indexing overlapping entities… (applies when done)"
    wanted = set(studio.rare_classes()) if class_filter == "rare" else None
    if class_filter not in ("all", "rare", None):
        wanted = {int(class_filter)}
    keep = [
        i.index
        for i in items
        if (not overlap_only or i.overlap in (True, None))
        and (wanted is None or wanted & set(i.classes))
    ]
    return keep, note


def sorted_indices(
    studio: Studio, indices: list[int], sort: str, run_a: str | None, run_b: str | None
) -> tuple[list[int], dict[int, float], str]:
    """Indices in the chosen order, their scores, and a progress note while scores compute."""
    if sort == "file" or not run_a or not run_b:
        return indices, {}, "" if sort == "file" else "choose methods A and B below to sort"
    scores = studio.image_scores(run_a, run_b)
    if scores is None:
        done = [studio.val_pass_progress(r) for r in (run_a, run_b)]
        total = sum(t for _, t in done)
        return indices, {}, f"computing per-image scores… {sum(d for d, _ in done)}/{total} images"
    wanted = set(indices)
    ranked = [i for i in scores.ranking(descending=sort == "gain") if i in wanted]
    return ranked, {i: float(scores.score[i]) for i in ranked}, ""


@user_errors
def gallery(
    studio: Studio,
    overlap_only: bool,
    class_filter: str,
    sort: str,
    run_a: str | None,
    run_b: str | None,
) -> tuple[list[tuple[str, str]], list[int], str, Any]:
    """(thumbnails with captions, their val indices, status, timer update)."""
    indices, note = filtered_indices(studio, overlap_only, class_filter)
    indices, scores, progress = sorted_indices(studio, indices, sort, run_a, run_b)
    shown = indices[:MAX_GALLERY]
    items = [(str(studio.thumbnail(i)), _caption(i, scores.get(i))) for i in shown]
    status = f"{len(indices)} of {len(studio.val)} images" + (
        f" (first {MAX_GALLERY} shown)" if len(indices) > MAX_GALLERY else ""
    )
    waiting = " · ".join(n for n in (note, progress) if n)
    return (
        items,
        shown,
        status + (f" — {waiting}" if waiting else ""),
        gr.Timer(active=bool(waiting)),
    )


def _caption(index: int, score: float | None) -> str:
    return f"#{index}" if score is None or score != score else f"#{index} · {100 * score:+.1f}"


def select_image(shown: list[int], evt: gr.SelectData) -> int:
    """Gallery click → the val index of that thumbnail."""
    return int(shown[evt.index])


@user_errors
def choose_index(studio: Studio, value: float | None) -> int:
    """The index typed in the number box (checked against the val split)."""
    if value is None or not 0 <= int(value) < len(studio.val):
        raise gr.Error(f"image index must be between 0 and {len(studio.val) - 1}")
    return int(value)


def upload(studio: Studio, path: str | None) -> str:
    """Validate an uploaded file → its key; conversions are reported as warnings."""
    if not path:
        raise gr.Error("no file received; choose an image file (PNG or JPEG)")
    key, notes = user_errors(studio.add_upload)(path)
    for note in notes:
        gr.Warning(note)
    return key


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
) -> np.ndarray:
    """One model's image for ``view`` (the colouring itself is ``dida.visualize``'s)."""
    item, pred = studio.item(key), studio.predict(run_id, key)
    if view == "errors" and item["label"] is not None:
        return V.error_map(pred.labels, item["label"])
    if view == "confidence":
        return V.confidence_map(pred.probs, threshold or None)
    if view == "entropy":
        return V.entropy_map(pred.probs)
    return _labels(item["image"], pred.labels, view, opacity, palette, hidden, isolate)


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
) -> tuple[Any, str, np.ndarray]:
    """(panel figure with linked zoom, legend HTML, the image to click on)."""
    item = studio.item(key)
    if view == "errors" and item["label"] is None:
        gr.Warning("an upload has no ground truth: showing labels instead of errors")
        view = "labels"
    args = (view, opacity, threshold, palette, hidden, isolate)
    panels = [("image", item["image"])]
    gt = ground_truth_panel(studio, key, view, opacity, palette, hidden, isolate)
    panels += [] if gt is None else [("ground truth", gt)]
    panels += [(studio.run(r).short_title, panel(studio, key, r, *args)) for r in run_ids]
    figure = image_grid(panels) if run_ids else message_figure(EMPTY_RUNS_PLAIN)
    return figure, legend(view, palette), item["image"]


EMPTY_RUNS_PLAIN = "No trained runs yet: start one in the Train tab"


def legend(view: str, palette: str) -> str:
    """Legend of the current view (class colours, error or colour-map meaning)."""
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
    return legend_html(V.legend_entries(palette))


# --- readout, diff, IoU table ----------------------------------------------------------------


@user_errors
def readout(
    studio: Studio, key: ImageKey, run_ids: list[str], x: float | None, y: float | None
) -> tuple[str, list[list[Any]]]:
    """(heading, rows) of the class and probability of every model at pixel (x, y)."""
    if x is None or y is None:
        raise gr.Error("enter both x and y (pixels from the top-left corner)")
    readings = studio.readout(run_ids, key, int(x), int(y))
    rows = [
        [
            r.source,
            r.class_name,
            "" if r.prob is None else f"{r.prob:.3f}",
            ", ".join(f"{CLASSES[c]} {p:.2f}" for c, p in r.top),
        ]
        for r in readings
    ]
    return f"**Pixel (x={int(x)}, y={int(y)})**", rows


def click(
    studio: Studio, key: ImageKey, run_ids: list[str], evt: gr.SelectData
) -> tuple[int, int, str, list[list[Any]]]:
    """A click on the image (``evt.index == [x, y]``) → x, y and the readout there."""
    x, y = int(evt.index[0]), int(evt.index[1])
    return (x, y, *readout(studio, key, run_ids, x, y))


@user_errors
def diff(
    studio: Studio, key: ImageKey, run_a: str | None, run_b: str | None, palette: str
) -> tuple[np.ndarray | None, tuple | None, str]:
    """(fixed/broke map of A → B, (A labels, B labels) for the slider, pixel counts)."""
    item = studio.item(key)
    if not run_a or not run_b:
        return None, None, "Choose methods A and B."
    pred_a, pred_b = studio.predict(run_a, key).labels, studio.predict(run_b, key).labels
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


# --- layout and wiring -----------------------------------------------------------------------


def build(studio: Studio, shared: Shared) -> RunPickers:
    """Lay out the Compare tab inside the current ``gr.Tab``; returns its run pickers."""
    choices, chosen = run_choices(studio), default_runs(studio)
    empty = gr.Markdown(EMPTY_RUNS, visible=not choices)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            picker = _picker(studio)
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


def _picker(studio: Studio) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    gr.Markdown("#### Target image")
    ui["overlap"] = gr.Checkbox(label="only images with overlapping entities", value=False)
    ui["classes"] = gr.Dropdown(class_filter_choices(studio), value="all", label="contains class")
    ui["sort"] = gr.Dropdown(SORTS, value="file", label="sort by (methods A and B below)")
    ui["status"] = gr.Markdown()
    ui["gallery"] = gr.Gallery(
        columns=3, height=420, allow_preview=False, label="val images", format="jpeg",
        object_fit="contain", elem_id="compare-gallery",
    )  # fmt: skip
    ui["shown"] = gr.State([])
    ui["timer"] = gr.Timer(2.0, active=False)
    with gr.Row():
        ui["index"] = gr.Number(label="image index", precision=0, value=0, minimum=0)
        ui["upload"] = gr.File(label="or upload an image", file_types=["image"], type="filepath")
    return ui


def _panels(choices: list[tuple[str, str]], chosen: list[str]) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    ui["models"] = gr.CheckboxGroup(choices, value=chosen, label="models")
    with gr.Row():
        ui["view"] = gr.Radio(VIEWS, value="overlay", label="view")
        ui["opacity"] = gr.Slider(0, 1, value=0.6, step=0.05, label="overlay opacity")
        ui["threshold"] = gr.Slider(
            0, 1, value=0, step=0.01, label="confidence threshold (0 = off)"
        )
    with gr.Accordion("Classes: hide or isolate", open=False):
        ui["hidden"] = gr.CheckboxGroup(list(CLASSES), value=[], label="hide classes")
        ui["isolate"] = gr.Dropdown(
            [("none", "")] + [(c, c) for c in CLASSES], value="", label="isolate one class"
        )
    ui["grid"] = gr.Plot(label="side by side (zoom one panel: all follow)", elem_id="compare-grid")
    ui["legend"] = gr.HTML()
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
    return {**ui, **_diff_and_table(choices, chosen)}


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
    gr.Markdown("#### Per-class IoU on this image (%), most frequent classes first")
    ui["iou"] = gr.Dataframe(label="IoU", interactive=False)
    ui["csv"] = gr.DownloadButton("Download IoU table (CSV)", value=None)
    return ui


def _wire(studio: Studio, shared: Shared, p: dict[str, Any], ui: dict[str, Any]) -> None:
    key = shared.image_key
    gallery_in = [p["overlap"], p["classes"], p["sort"], ui["run_a"], ui["run_b"]]
    gallery_out = [p["gallery"], p["shown"], p["status"], p["timer"]]
    gr.on(
        [shared.demo.load, p["overlap"].change, p["classes"].change, p["sort"].change,
         p["timer"].tick],
        bind(gallery, studio), gallery_in, gallery_out, api_name="gallery", **HEAVY,
    )  # fmt: skip
    p["gallery"].select(select_image, p["shown"], key, api_name="select_image", **CHEAP)
    p["index"].submit(bind(choose_index, studio), p["index"], key, api_name="choose_index",
                      **CHEAP)  # fmt: skip
    p["upload"].upload(bind(upload, studio), p["upload"], key, api_name="upload", **HEAVY)
    view_in = [key, ui["models"], ui["view"], ui["opacity"], ui["threshold"], shared.palette,
               ui["hidden"], ui["isolate"]]  # fmt: skip
    gr.on(
        [shared.demo.load, key.change, ui["models"].change, ui["view"].change, ui["opacity"].release,
         ui["threshold"].release, shared.palette.change, ui["hidden"].change, ui["isolate"].change],
        bind(grid, studio), view_in, [ui["grid"], ui["legend"], ui["click"]], api_name="grid",
        **HEAVY,
    )  # fmt: skip
    readout_out = [ui["pixel"], ui["readout"]]
    ui["click"].select(
        bind(click, studio),
        [key, ui["models"]],
        [ui["x"], ui["y"], *readout_out],
        api_name="click",
        **CHEAP,
    )
    ui["read"].click(
        bind(readout, studio),
        [key, ui["models"], ui["x"], ui["y"]],
        readout_out,
        api_name="readout",
        **CHEAP,
    )
    diff_in = [key, ui["run_a"], ui["run_b"], shared.palette]
    gr.on(
        [shared.demo.load, key.change, ui["run_a"].change, ui["run_b"].change, shared.palette.change],
        bind(diff, studio), diff_in, [ui["diff"], ui["slider"], ui["diff_text"]], api_name="diff",
        **HEAVY,
    )  # fmt: skip
    gr.on([shared.demo.load, key.change, ui["models"].change], bind(_iou_outputs, studio), [key, ui["models"]],
          [ui["iou"], ui["csv"]], api_name="iou_table", **HEAVY)  # fmt: skip


def _iou_outputs(studio: Studio, key: ImageKey, run_ids: list[str]) -> tuple[Any, Any]:
    rows, headers, path = iou_table(studio, key, run_ids)
    return pd.DataFrame(rows, columns=headers), gr.update(value=path, interactive=path is not None)
