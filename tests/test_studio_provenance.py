"""Slot provenance in the studio and the views: the crop of a slot's source image around its region,
the listing of a UMAP selection (slots and target pixels with crops), opening an image in Compare,
and a run trained before provenance was recorded ("not recorded")."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from test_studio import fixture_runs, make_studio

from app.views import bank, umap_selection
from dida import runs
from dida.bank import BankHistory
from dida.data.classes import CLASSES
from dida.data.datasets import build_dataset
from dida.data.synthcity import synthcity_roots
from dida.studio import NOT_RECORDED, Studio, box_crop, pixel_crop
from dida.studio.provenance import BOX_COLOR

RUN = "run:dida"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> Studio:
    return make_studio(synthcity_tiny, fixture_runs(tmp_path_factory, synthcity_tiny))


@pytest.fixture(scope="module")
def source(synthcity_tiny: Path):
    """The source split the fixture runs trained on."""
    return build_dataset("gta5", synthcity_roots(synthcity_tiny)[0])


def test_box_crop_and_pixel_crop_golden() -> None:
    image = np.arange(40 * 50 * 3, dtype=np.int64).reshape(40, 50, 3).astype(np.uint8)
    crop = box_crop(image, (20, 10, 30, 18), margin=0.5, least=4)  # margins 5 and 4 pixels
    assert crop.shape == (16, 20, 3)  # rows 6-22, columns 15-35
    assert (crop[4, 5:15] == BOX_COLOR).all() and (crop[11, 5:15] == BOX_COLOR).all()
    assert (crop[4:12, 5] == BOX_COLOR).all() and (crop[4:12, 14] == BOX_COLOR).all()
    assert np.array_equal(crop[0], image[6, 15:35]) and np.array_equal(
        crop[7, 7:13], image[13, 22:28]
    )
    corner = box_crop(image, (0, 0, 4, 4), least=8)  # clamped at the border
    assert corner.shape == (12, 12, 3) and (corner[0, :4] == BOX_COLOR).all()
    assert np.array_equal(box_crop(image, None), image)
    window = pixel_crop(image, 2, 38, half=6)  # clamped: rows 28-40, columns 0-12
    assert window.shape == (12, 12, 3) and np.array_equal(window[0, 8], image[28, 8])
    assert (window[7, :6] == BOX_COLOR).all()  # the 7x7 marker's top edge around (2, 38)


def test_written_slots_name_their_source_image_and_region(studio: Studio, source) -> None:
    snap = studio.snapshot(RUN, -1)
    written = np.flatnonzero(snap.ages.numpy() >= 0)
    assert len(written) > 0 and (snap.source_ids.numpy()[written] >= 0).all()
    for slot in written[:6]:
        found = studio.slot_source(RUN, -1, int(slot))
        item = source[found.source_id]
        x0, y0, x1, y1 = found.box
        assert found.note == "" and found.class_name == CLASSES[int(snap.labels[slot])]
        assert 0 <= x0 < x1 <= item["image"].shape[1] and 0 <= y0 < y1 <= item["image"].shape[0]
        region = item["label"][y0:y1, x0:x1]
        assert (region == int(snap.labels[slot])).any()  # the class the slot holds is in its box
        assert np.array_equal(found.crop, box_crop(item["image"], found.box))
    text, crop = bank.slot_detail(studio, RUN, 2, int(written[0]))
    assert f"Source image **#{int(snap.source_ids[written[0]])}**" in text and crop is not None


def test_selection_lists_slots_and_pixels_with_their_crops(studio: Studio) -> None:
    points = studio.points(RUN, -1, pixels=0, count=20)
    chosen = [0, 1, 38, 45, 999]
    selection = studio.selection(RUN, -1, 0, 20, chosen)
    assert [s.slot for s in selection.slots] == [0, 1]
    for s in selection.slots:
        expected = studio.slot_source(RUN, -1, s.slot)
        assert (s.source_id, s.box, s.class_name, s.age) == (
            expected.source_id, expected.box, expected.class_name, expected.age,
        )  # fmt: skip
        assert (s.crop is None) == (expected.crop is None)
        assert s.crop is None or np.array_equal(s.crop, expected.crop)
    image, label = studio.item(0)["image"], studio.item(0)["label"]
    assert [p.point for p in selection.pixels] == [38, 45]
    for p in selection.pixels:
        assert (p.x, p.y) == (int(points.x[p.point]), int(points.y[p.point])) and p.image == 0
        assert p.class_name == CLASSES[int(label[p.y, p.x])]
        assert np.array_equal(p.crop, pixel_crop(image, p.x, p.y))
    few = studio.selection(RUN, -1, 0, 20, chosen, max_crops=1)
    assert (
        few.slots[0].crop is not None and few.slots[1].crop is None and few.pixels[0].crop is None
    )


def test_listing_handler_and_open_in_compare(studio: Studio, source) -> None:
    note, table, crops, targets, choice = umap_selection.listing(
        studio, RUN, 2, True, 20, 0, [0, 38]
    )
    assert list(table.columns) == umap_selection.LISTING_HEADERS
    assert list(table["kind"]) == ["bank slot", "target pixel"] and table["slot"].iloc[0] == 0
    slot = studio.slot_source(RUN, 2, 0)
    assert table["image"].iloc[0] == f"source #{slot.source_id}" and len(crops) == len(targets) == 2
    assert targets == [f"source:{slot.source_id}", "target"] and choice["value"] == "target"
    assert "1 bank slots and 1 target pixels" in note
    key, tabs, text = umap_selection.open_in_compare(studio, RUN, "target", 0)
    assert key == 0 and tabs.selected == "compare" and "val image #0" in text
    key, tabs, text = umap_selection.open_in_compare(studio, RUN, targets[0], 0)
    assert key.startswith("upload:") and tabs.selected == "compare"
    assert np.array_equal(studio.item(key)["image"], source[slot.source_id]["image"])
    pick = umap_selection.pick_crop(targets, gr.SelectData(None, {"index": 1, "value": None}))
    assert pick["value"] == "target"
    empty = umap_selection.listing(studio, RUN, 2, True, 20, 0, [])
    assert empty[0] == umap_selection.NOTHING and empty[1].empty


def test_a_run_trained_before_provenance_says_not_recorded(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path
) -> None:
    folder = tmp_path / "runs"
    shutil.copytree(fixture_runs(tmp_path_factory, synthcity_tiny) / "dida", folder / "dida")
    path = folder / "dida" / runs.BANK_HISTORY
    history = BankHistory.load(path)
    old = BankHistory(history.max_snapshots)
    for snap in history.snapshots:  # as saved before: no boxes, -1 for updated slots
        ids = snap.source_ids.masked_fill(snap.ages >= 0, -1)
        old.snapshots.append(dataclasses.replace(snap, boxes=None, source_ids=ids))
    old.save(path)
    studio = make_studio(synthcity_tiny, folder)
    slot = int(np.flatnonzero(studio.snapshot(RUN, -1).ages.numpy() >= 0)[0])
    found = studio.slot_source(RUN, -1, slot)
    assert found.note == NOT_RECORDED and found.source_id == -1 and found.crop is None
    text, crop = bank.slot_detail(studio, RUN, 2, slot)
    assert (
        "not recorded in this run (trained before provenance was recorded)" in text and crop is None
    )
    listed = umap_selection.listing(studio, RUN, 2, False, 0, 0, [slot])
    assert listed[1]["image"].iloc[0] == NOT_RECORDED and listed[2] == []
