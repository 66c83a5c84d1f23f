"""The UMAP tab's selection listing: the bank slots and target pixels of a box / lasso selection, each
with a crop of its image (a slot's source image around the class region its feature averaged, a
target pixel's surroundings), and a button that opens the chosen image in the Compare tab (a slot's
source image opens there like an upload: predictions, no ground truth).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from app.views.common import CHEAP, MAX_INDEX, Shared, bind, number, user_errors
from dida.studio import ImageKey, SelectedPixel, Selection, SlotSource, Studio

MAX_POINTS = 2000
"""Most target pixels sampled into the map (the UMAP tab's slider maximum)."""
LISTING_HEADERS = ["kind", "slot", "class", "age", "image", "where", "predicted"]
NOTHING = "Draw a lasso or box on the map to list the selected slots and pixels."
TARGET = "target"
"""Open-in-Compare choice of the target image whose pixels are shown (the current image)."""
SOURCE = "source:"
"""Prefix of the open-in-Compare choice of a slot's source image (``source:<dataset index>``)."""


def typed_points(snapshot: Any, with_pixels: bool, count: Any) -> tuple[int, int]:
    """(snapshot index, number of pixel points) typed in the tab (-1: the last snapshot)."""
    index = number(snapshot, "snapshot", -1, MAX_INDEX, default=-1)
    return index, number(count, "point count", 0, MAX_POINTS) if with_pixels else 0


def image_name(key: ImageKey | None) -> str:
    return "upload" if isinstance(key, str) else f"val image #{key}"


def slot_row(source: SlotSource) -> list[Any]:
    where = "x {}–{}, y {}–{}".format(*(source.box[i] for i in (0, 2, 1, 3))) if source.box else ""
    image = f"source #{source.source_id}" if source.source_id >= 0 else source.note
    return ["bank slot", source.slot, source.class_name, source.age, image, where, ""]


def pixel_row(pixel: SelectedPixel) -> list[Any]:
    where = f"pixel ({pixel.x}, {pixel.y})"
    return [
        "target pixel",
        "",
        pixel.class_name,
        "",
        image_name(pixel.image),
        where,
        pixel.predicted,
    ]


def gallery_items(selection: Selection) -> tuple[list[tuple[Any, str]], list[str]]:
    """(crop, caption) of every entry with a crop, and each one's open-in-Compare choice."""
    items, targets = [], []
    for s in selection.slots:
        if s.crop is not None:
            items.append((s.crop, f"slot {s.slot} · {s.class_name} · source #{s.source_id}"))
            targets.append(f"{SOURCE}{s.source_id}")
    for p in selection.pixels:
        if p.crop is not None:
            items.append((p.crop, f"({p.x}, {p.y}) · {p.class_name} → {p.predicted}"))
            targets.append(TARGET)
    return items, targets


def open_choices(selection: Selection) -> list[tuple[str, str]]:
    """The images a selection can open in Compare: the target image, then each source image."""
    choices = []
    if selection.pixels:
        key = selection.pixels[0].image
        choices.append((f"{image_name(key)} ({len(selection.pixels)} pixels)", TARGET))
    for source_id in dict.fromkeys(s.source_id for s in selection.slots if s.source_id >= 0):
        slots = [str(s.slot) for s in selection.slots if s.source_id == source_id]
        choices.append(
            (f"source image #{source_id} (slots {', '.join(slots)})", f"{SOURCE}{source_id}")
        )
    return choices


@user_errors
def listing(
    studio: Studio,
    run_id: str | None,
    snapshot: float,
    with_pixels: bool,
    count: float,
    key: ImageKey,
    indices: list[int],
) -> tuple[str, pd.DataFrame, list, list[str], Any]:
    """(note, table of selected slots and pixels, crops, their open choices, choice update)."""
    if not run_id or not indices:
        empty = pd.DataFrame(columns=LISTING_HEADERS)
        return NOTHING, empty, [], [], gr.update(choices=[], value=None)
    index, n = typed_points(snapshot, with_pixels, count)
    selection = studio.selection(run_id, index, key if with_pixels else None, n, indices)
    rows = [slot_row(s) for s in selection.slots] + [pixel_row(p) for p in selection.pixels]
    items, targets = gallery_items(selection)
    choices = open_choices(selection)
    cropped = [
        sum(e.crop is not None for e in kind) for kind in (selection.slots, selection.pixels)
    ]
    note = (
        f"{len(selection.slots)} bank slots and {len(selection.pixels)} target pixels selected; "
        f"crops of the first {cropped[0]} slots and {cropped[1]} pixels below. Click a crop, or "
        "choose an image, then open it in Compare."
    )
    choice = gr.update(choices=choices, value=choices[0][1] if choices else None)
    return note, pd.DataFrame(rows, columns=LISTING_HEADERS), items, targets, choice


def on_select(studio: Studio, run_id, snapshot, with_pixels, count, key, evt: gr.EventData):
    """The canvas's ``select`` event (``evt.points``: point indices) → the listing."""
    points = list(getattr(evt, "points", []))
    return listing(studio, run_id, snapshot, with_pixels, count, key, points)


def pick_crop(targets: list[str], evt: gr.SelectData) -> Any:
    """A click on a crop chooses its image for Compare."""
    index = evt.index if isinstance(evt.index, int) else evt.index[0]
    return gr.update(value=targets[index]) if 0 <= index < len(targets) else gr.update()


@user_errors
def open_in_compare(
    studio: Studio, run_id: str | None, choice: str | None, key: ImageKey
) -> tuple[ImageKey, Any, str]:
    """(Compare's image key, the tab to show, a note) for the chosen image."""
    if not run_id or not choice:
        return key, gr.Tabs(), "Select points on the map first."
    if choice == TARGET:
        return key, gr.Tabs(selected="compare"), f"{image_name(key)} is open in **Compare**."
    source_id = int(choice.removeprefix(SOURCE))
    opened = studio.open_source_image(run_id, source_id)
    note = f"Source image #{source_id} is open in **Compare** (as an upload: no ground truth)."
    return opened, gr.Tabs(selected="compare"), note


def layout() -> dict[str, Any]:
    """The listing's components (placed under the map's selection summary)."""
    ui: dict[str, Any] = {}
    gr.Markdown("#### Selected slots and target pixels")
    ui["note"] = gr.Markdown(NOTHING, elem_id="umap-listing-note")
    ui["table"] = gr.Dataframe(
        value=pd.DataFrame(columns=LISTING_HEADERS), headers=LISTING_HEADERS, interactive=False,
        max_height=300, elem_id="umap-listing",
    )  # fmt: skip
    ui["crops"] = gr.Gallery(
        label="crops (slot: its source image, region outlined; pixel: its surroundings)",
        columns=6, height=260, allow_preview=False, format="png", elem_id="umap-crops",
    )  # fmt: skip
    ui["targets"] = gr.State([])
    with gr.Row():
        ui["choice"] = gr.Dropdown([], label="image to open", scale=3, elem_id="umap-open-choice")
        ui["open"] = gr.Button("Open in Compare", scale=1, elem_id="umap-open")
    ui["opened"] = gr.Markdown()
    return ui


def wire(studio: Studio, shared: Shared, ui: dict[str, Any], figure: Any, inputs: list) -> None:
    """The map's selection fills the listing; a crop click or the dropdown picks the image to open."""
    out = [ui["note"], ui["table"], ui["crops"], ui["targets"], ui["choice"]]
    figure.select(bind(on_select, studio), inputs, out, api_name="umap_listing", **CHEAP)
    ui["crops"].select(pick_crop, ui["targets"], ui["choice"], api_visibility="private", **CHEAP)
    tabs = shared.tabs if shared.tabs is not None else gr.State()  # a tab built on its own
    opened = [shared.image_key, tabs, ui["opened"]]
    ui["open"].click(bind(open_in_compare, studio), [inputs[0], ui["choice"], shared.image_key],
                     opened, api_name="umap_open_in_compare", **CHEAP)  # fmt: skip
