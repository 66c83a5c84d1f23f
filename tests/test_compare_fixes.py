"""Compare and Scores handlers for issue 16 §2, §3 and the Compare items of §5, called as plain
functions (no server): pair-type filter, overlap band, per-image band table, disagreement sort,
typed slider values redraw, clicks while an image loads, panel order, labels, legend, upload
toasts, previous / next image, PNG export, the per-image table across runs and the confusion view."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_app_handlers import panel_pixels, select
from test_studio import private_studio

from app.main import build_app
from app.views import common, compare, compare_picker, confusion
from dida import visualize as V
from dida.analysis import confusion_view, look_alike_classes, pair_types
from dida.data.classes import CLASSES
from dida.scores import image_row
from dida.studio import Studio

RUNS = ["run:dida", "run:daformer", "run:source_only"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> Studio:
    studio = private_studio(tmp_path_factory, synthcity_tiny)
    studio.index_overlaps(wait=True)
    yield studio
    studio.shutdown()


@pytest.fixture(scope="module")
def scored(studio: Studio) -> Studio:
    """The studio with every run's score table computed (the background pass, waited for)."""
    for rid in RUNS:
        studio.passes.scores(rid)
        studio.worker.wait(("scores", rid, studio.model_stamp(rid)), timeout=300)
    return studio


def _dependency(demo: gr.Blocks, api_name: str) -> dict:
    return next(d for d in demo.config["dependencies"] if d.get("api_name") == api_name)


def _component_id(demo: gr.Blocks, elem_id: str) -> int:
    return next(c["id"] for c in demo.config["components"] if c["props"].get("elem_id") == elem_id)


# --- §2 overlaps --------------------------------------------------------------------------------


def test_pair_type_choices_count_images_and_filter_the_gallery(studio: Studio) -> None:
    types = pair_types(studio.images.overlap_index())
    choices = compare.pair_choices(studio)
    assert choices[0] == ("any pair type", "any") and len(choices) == len(types) + 1
    for (label, value), (name, images) in zip(choices[1:], types.items(), strict=True):
        assert value == name and label == f"{name} ({len(images)} images)"
    name, images = next(iter(types.items()))
    _, shown, status, _, pairs, _ = compare.gallery(studio, False, "all", "file", None, None, name)
    assert shown == images and status.startswith(f"{len(images)} of 4 images")
    assert pairs["choices"] == choices


def test_the_rare_class_choice_fills_in_once_the_classes_are_known(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a first launch writes the val split the rare classes are unknown: the gallery keeps
    polling and its class-filter choices say so; a later poll names them (no page reload)."""
    known = studio.known_rare_classes()
    monkeypatch.setattr(studio, "known_rare_classes", lambda: None)
    *_, timer, _, classes = compare.gallery(studio, False, "all", "file", None, None)
    assert timer.active and classes["choices"][1][0].endswith(
        "(listed once the val split is written)"
    )
    monkeypatch.undo()
    *_, classes = compare.gallery(studio, False, "all", "file", None, None)
    names = ", ".join(CLASSES[c] for c in known) or "none"
    assert classes["choices"][1] == (f"any rare class ({names})", "rare")


def test_overlap_band_is_drawn_over_every_panel(studio: Studio) -> None:
    key = next(iter(studio.passes.pair_types().values()))[0]
    figure, legend, _ = compare.grid(
        studio, key, ["run:dida"], "overlay", 0.5, 0, "cityscapes", [], "", True
    )
    mask = studio.passes.overlap_mask(key)
    assert mask.any() and "overlap band in magenta" in legend
    item = studio.item(key)
    gt = V.overlay(
        item["image"], V.colorize(item["label"]), 0.5, where=V.visible_mask(item["label"])
    )
    assert np.array_equal(panel_pixels(figure, 1), V.mark_mask(gt, mask))  # lossless panels
    photo = panel_pixels(figure, 0).astype(int)  # the photo (JPEG): magenta in the band
    assert np.abs(photo[mask] - V.mark_mask(item["image"], mask)[mask]).mean() < 8


def test_band_table_gives_miou_overlap_and_boundary_iou_per_model(studio: Studio) -> None:
    rows = compare.band_table(studio, 1, ["run:source_only", "run:dida"])
    item = studio.item(1)
    row = image_row(studio.predict("run:dida", 1).labels, item["label"], item["instance"])
    dida = next(r for r in rows if r[0] == "DIDA · dida")
    values = (row["miou"], row["overlap_iou"], row["boundary_iou"])
    assert dida[1:] == [common.percent(v) for v in values]
    assert [r[0] for r in rows] == [
        studio.run(r).short_title for r in compare.in_checkbox_order(studio, RUNS[::2])
    ]


def test_gallery_sorts_by_disagreement_on_overlaps(scored: Studio) -> None:
    spread = scored.passes.disagreement(RUNS)
    items, shown, _, timer, _, _ = compare.gallery(
        scored, False, "all", "spread", None, None, "any", RUNS
    )
    finite = [i for i in range(4) if spread[i] == spread[i]]
    assert shown[: len(finite)] == sorted(finite, key=lambda i: -spread[i])
    assert timer.active is False
    _, _, status, _, _, _ = compare.gallery(
        scored, False, "all", "spread", None, None, "any", RUNS[:1]
    )
    assert "tick two models or more" in status


# --- §5 Compare fixes ---------------------------------------------------------------------------


def test_typed_slider_values_redraw_the_grid_once(studio: Studio) -> None:
    demo = build_app(studio)
    grid = _dependency(demo, "grid")
    triggers = {(t[0], t[1]) for t in grid["targets"]}
    for elem_id in ("compare-opacity",):
        target = _component_id(demo, elem_id)
        assert (target, "change") in triggers and (target, "release") not in triggers
    assert grid["trigger_mode"] == "always_last"


def test_a_click_while_the_image_loads_is_answered(studio: Studio) -> None:
    x, y, heading, rows = compare.click(studio, 2, RUNS, select(3, 4), 1)
    assert heading == compare.STILL_LOADING and "click again" in heading
    x, y, heading, rows = compare.click(studio, 2, RUNS, select(3, 4), 2)
    assert (x, y) == (3, 4) and len(rows) == 4
    image, placed = compare.click_image(studio, 2)
    assert placed == 2 and np.array_equal(image, studio.item(2)["image"])
    demo = build_app(studio)
    placing = _dependency(demo, "click_image")
    assert placing["show_progress"] == "hidden" and _dependency(demo, "click")["trigger_mode"]


def test_panels_follow_the_checkbox_order(studio: Studio) -> None:
    order = [rid for _, rid in common.run_choices(studio)]
    figure, _, _ = compare.grid(
        studio, 1, list(reversed(order)), "labels", 0.5, 0, "cityscapes", [], ""
    )
    titles = [a.text for a in figure.layout.annotations][2:]
    assert titles == [studio.run(r).short_title for r in order]


def test_labels_explain_their_number(studio: Studio) -> None:
    for title, _ in common.run_choices(studio):
        assert not re.search(r"\(\d+\.\d\)", title)
        assert re.search(r"\(mIoU \d+\.\d\)", title)


def test_legend_lists_only_the_classes_shown(studio: Studio) -> None:
    _, legend, _ = compare.grid(studio, 1, ["run:dida"], "labels", 0.5, 0, "cvd", [], "")
    present = V.present_classes(studio.item(1)["label"], studio.predict("run:dida", 1).labels)
    names = re.findall(r"</i>([^<]+)</span>", legend)
    assert names == [V.legend_entries("cvd", [c])[0][0] for c in present]
    assert len(names) < 19


def test_upload_toasts_show_no_server_path_nor_decoder_text(studio: Studio, tmp_path: Path) -> None:
    bad = tmp_path / "deep" / "server" / "folder" / "model.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x80\x02not an image")
    with pytest.raises(gr.Error) as err:
        compare.upload(studio, str(bad))
    text = err.value.message
    assert text == "model.pth is not a readable image; upload a PNG or JPEG"
    assert str(tmp_path) not in text and "Error" not in text and "identify" not in text


def test_previous_and_next_image_by_buttons_and_keys(studio: Studio) -> None:
    assert compare.next_image(studio, 1, [3, 1, 2]) == 2
    assert compare.previous_image(studio, 1, [3, 1, 2]) == 3
    assert compare.next_image(studio, 2, [3, 1, 2]) == 3  # wraps around the gallery
    assert compare.next_image(studio, 0, [3, 1]) == 1 and compare.previous_image(studio, 0, []) == 3
    assert compare.next_image(studio, "upload:abc", []) == 0
    demo = build_app(studio)
    assert any(d.get("js") == compare_picker.KEYS_JS for d in demo.config["dependencies"])
    assert "ArrowLeft" in compare_picker.KEYS_JS and "compare-prev" in compare_picker.KEYS_JS
    for elem_id in ("compare-prev", "compare-next"):
        assert _component_id(demo, elem_id)


def test_panel_grid_exports_as_png(studio: Studio) -> None:
    args = ("overlay", 0.5, 0, "cityscapes", [], "", False)
    path = compare.export_png(studio, 1, ["run:dida", "run:source_only"], *args)
    order = compare.in_checkbox_order(studio, ["run:dida", "run:source_only"])
    expected = V.grid_image(compare.panels(studio, 1, order, *args))
    assert Path(path).suffix == ".png"
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), expected)


# --- §3 the Scores tab --------------------------------------------------------------------------


def test_score_table_across_runs_sorts_and_exports(scored: Studio) -> None:
    table, path, sorts, status, timer = confusion.score_table(scored, RUNS, None)
    assert isinstance(table, pd.DataFrame) and len(table) == 4 and timer.active is False
    assert sorts["value"] == confusion.SPREAD and "sorted by overlap IoU spread" in status
    spread = [v for v in table[confusion.SPREAD] if v == v and v is not None]
    assert spread == sorted(spread, reverse=True)
    first = scored.passes.scores("run:dida")
    row = table[table["index"] == 0].iloc[0]
    assert row["DIDA · dida mIoU"] == pytest.approx(round(100 * first.miou[0], 1))
    assert pd.read_csv(path).shape == table.shape
    table, *_ = confusion.score_table(scored, RUNS, "DIDA · dida mIoU", False)
    values = list(table["DIDA · dida mIoU"])
    assert values == sorted(values)
    index, note = confusion.open_row(table, gr.SelectData(None, {"index": [1, 3], "value": 0}))
    assert index == int(table.iloc[1]["index"]) and "Compare" in note


def test_confusion_view_is_row_normalised_with_look_alike_cut(scored: Studio) -> None:
    figure, path, status, timer = confusion.confusion(scored, "run:dida", False)
    matrix = scored.passes.scores("run:dida").confusion
    expected = confusion_view(matrix)
    heat = figure.data[0]
    assert np.allclose(np.array(heat.z, float), expected.percent, equal_nan=True)
    assert len(figure.layout.shapes) == 4 and f"{int(matrix.sum()):,} labelled pixels" in status
    figure, path, _, _ = confusion.confusion(scored, "run:dida", True)
    cut = confusion_view(matrix, look_alike_classes())
    assert list(figure.data[0].x) == list(cut.columns) and list(figure.data[0].y) == list(cut.rows)
    csv = pd.read_csv(path)
    assert list(csv.columns[2:]) == list(cut.columns) and len(csv) == len(cut.rows)
    assert csv["pixels (GT)"].tolist() == cut.pixels.tolist()
