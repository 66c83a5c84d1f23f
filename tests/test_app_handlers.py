"""App handlers called as plain functions (no server): what each tab places, and its error messages."""

from __future__ import annotations

import base64
import csv
import io
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_studio import private_studio

from app.main import build_app, refresh_all
from app.views import bank, common, compare, longtail, temperature, train, umap
from dida import visualize as V
from dida.data.classes import CLASSES
from dida.studio import Studio

RUNS = ["run:dida", "run:daformer", "run:source_only"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> Studio:
    return private_studio(tmp_path_factory, synthcity_tiny)


def select(x: int, y: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": [x, y], "value": None})


def panel_pixels(figure, index: int) -> np.ndarray:
    """Decode the PNG data URI of panel ``index`` of an image grid."""
    uri = figure.data[index].source
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


# --- Compare ----------------------------------------------------------------------------------


def test_gallery_lists_filters_and_sorts(studio: Studio) -> None:
    studio.index_overlaps(wait=True)  # the pair-type counts poll until the overlap index is ready
    items, shown, status, timer, _, _ = compare.gallery(studio, False, "all", "file", None, None)
    assert shown == [0, 1, 2, 3] and [c for _, c in items] == ["#0", "#1", "#2", "#3"]
    assert status.startswith("4 of 4 images") and timer.active is False
    bicycle = str(CLASSES.index("bicycle"))
    _, shown, _, _, _, _ = compare.gallery(studio, False, bicycle, "file", None, None)
    assert shown == [i.index for i in studio.val_items() if CLASSES.index("bicycle") in i.classes]
    for run_id in ("run:source_only", "run:dida"):  # per-image scores: the score tables
        studio.passes.scores(run_id)
        studio.worker.wait(("scores", run_id, studio.model_stamp(run_id)), timeout=120)
    items, shown, _, timer, _, _ = compare.gallery(
        studio, False, "all", "gain", "run:source_only", "run:dida"
    )
    scores = studio.image_scores("run:source_only", "run:dida").score
    assert shown == sorted(range(4), key=lambda i: -scores[i]) and timer.active is False
    assert items[0][1] == f"#{shown[0]} · {100 * scores[shown[0]]:+.1f}"


def test_gallery_click_and_index_box_choose_the_image(studio: Studio) -> None:
    assert compare.select_image([3, 1, 2], gr.SelectData(None, {"index": 1, "value": None})) == 1
    assert compare.choose_index(studio, 2) == 2
    with pytest.raises(gr.Error, match="between 0 and 3"):
        compare.choose_index(studio, 9)


def test_grid_places_ground_truth_and_each_model_losslessly(studio: Studio) -> None:
    figure, legend, click_image = compare.grid(
        studio, 1, RUNS, "overlay", 0.5, 0, "cityscapes", [], ""
    )
    titles = [a.text for a in figure.layout.annotations]
    order = [rid for _, rid in common.run_choices(studio) if rid in RUNS]  # the checkbox order
    assert titles == ["image", "ground truth", *(studio.run(r).short_title for r in order)]
    item = studio.item(1)
    assert np.array_equal(click_image, item["image"])
    assert figure.data[0].source.startswith("data:image/jpeg")  # the photo: JPEG, close to it
    assert np.abs(panel_pixels(figure, 0).astype(int) - item["image"]).mean() < 3
    assert all(t.source.startswith("data:image/png") for t in figure.data[1:])  # labels: exact
    gt = V.overlay(
        item["image"], V.colorize(item["label"]), 0.5, where=V.visible_mask(item["label"])
    )
    assert np.array_equal(panel_pixels(figure, 1), gt)
    errors, legend, _ = compare.grid(studio, 1, ["run:dida"], "errors", 0.5, 0, "cvd", [], "")
    expected = V.error_map(studio.predict("run:dida", 1).labels, item["label"])
    assert np.array_equal(panel_pixels(errors, 2), expected) and "wrong" in legend
    _, legend, _ = compare.grid(studio, 1, ["run:dida"], "labels", 0.5, 0, "cvd", [], "")
    shown = V.present_classes(item["label"], studio.predict("run:dida", 1).labels)
    assert (
        all(CLASSES[c] in legend for c in shown) and V.legend_entries("cvd", shown)[0][1] in legend
    )


def test_hidden_and_isolated_classes_reach_the_panels(studio: Studio) -> None:
    figure, _, _ = compare.grid(
        studio, 0, ["run:dida"], "labels", 0.5, 0, "cityscapes", ["road"], "car"
    )
    pred = studio.predict("run:dida", 0).labels
    assert np.array_equal(panel_pixels(figure, 2), V.colorize(pred, "cityscapes", ["road"], "car"))


def test_grid_without_runs_shows_the_empty_state(studio: Studio) -> None:
    figure, _, _ = compare.grid(studio, 0, [], "overlay", 0.5, 0, "cityscapes", [], "")
    assert "No trained runs yet" in figure.layout.annotations[0].text


def test_click_reads_every_model_at_the_pixel(studio: Studio) -> None:
    x, y, heading, rows = compare.click(studio, 2, ["run:dida", "run:source_only"], select(20, 30))
    assert (x, y) == (20, 30) and "x=20, y=30" in heading
    assert [r[0] for r in rows][0] == "ground truth" and len(rows) == 3
    reading = studio.readout(["run:dida"], 2, 20, 30)[1]
    assert rows[1][1] == reading.class_name and rows[1][2] == f"{reading.prob:.3f}"
    with pytest.raises(gr.Error, match="outside the 128x64 image"):
        compare.readout(studio, 2, ["run:dida"], 500, 3)
    with pytest.raises(gr.Error, match="enter both x and y"):
        compare.readout(studio, 2, ["run:dida"], None, 3)


def test_diff_map_slider_and_counts(studio: Studio) -> None:
    image, pair, text = compare.diff(studio, 3, "run:source_only", "run:dida", "cityscapes")
    a, b = studio.predict("run:source_only", 3).labels, studio.predict("run:dida", 3).labels
    assert np.array_equal(image, V.diff_map(a, b, studio.item(3)["label"]))
    assert np.array_equal(pair[0], V.colorize(a)) and np.array_equal(pair[1], V.colorize(b))
    counts = V.diff_counts(a, b, studio.item(3)["label"])
    assert f"fixed (a wrong, b right): {counts['fixed (a wrong, b right)']:,}" in text


def test_iou_table_and_its_csv(studio: Studio) -> None:
    rows, headers, path = compare.iou_table(studio, 0, ["run:dida", "run:daformer"])
    assert headers == ["class", "pixels (GT)", "DIDA · dida", "DAFormer-style · daformer"]
    ious = studio.image_iou(["run:dida"], 0)["run:dida"]
    road = next(r for r in rows if r[0] == "road")
    assert road[2] == f"{100 * ious['road']:.1f}"
    label = studio.item(0)["label"]
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    assert road[1] == int((label == CLASSES.index("road")).sum())
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [headers, *[[str(v) for v in r] for r in rows]]


def test_upload_handler_accepts_images_and_names_bad_files(studio: Studio, tmp_path: Path) -> None:
    good = tmp_path / "street.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(good)
    key = compare.upload(studio, str(good))
    assert key.startswith("upload:") and studio.item(key)["image"].shape == (64, 64, 3)
    figure, _, _ = compare.grid(studio, key, ["run:dida"], "errors", 0.5, 0, "cityscapes", [], "")
    assert [a.text for a in figure.layout.annotations] == ["image", "DIDA · dida"]
    assert compare.iou_table(studio, key, ["run:dida"])[2] is None
    bad = tmp_path / "model.pth"
    bad.write_bytes(b"\x80\x02not an image")
    with pytest.raises(gr.Error, match="model.pth is not a readable image"):
        compare.upload(studio, str(bad))


# --- Instance bank ----------------------------------------------------------------------------


def test_bank_snapshot_views_and_stepping(studio: Studio) -> None:
    slider = bank.select_run(studio, "run:dida")
    assert (slider["maximum"], slider["value"]) == (2, 2)
    text, counts, ages, table, path = bank.show(studio, "run:dida", 1, "cityscapes")
    snap = studio.snapshot("run:dida", 1)
    assert text.startswith("**Snapshot 2 of 3**") and f"iteration {snap.iteration}" in text
    assert list(table["slot"]) == [int(k) for k in np.flatnonzero(snap.changed.numpy())]
    assert sum(counts.data[0].y) == int((snap.ages >= 0).sum())
    assert sum(len(trace.x) for trace in ages.data) == 38
    assert Path(path).read_text().count("\n") == 39
    assert bank.step(studio, "run:dida", 2, 1) == 2 and bank.step(studio, "run:dida", 0, -1) == 0
    nxt, timer = bank.play_tick(studio, "run:dida", 1)
    assert nxt == 2 and timer.active is False
    text, crop = bank.slot_detail(studio, "run:dida", 2, 5)
    assert "Slot 5" in text and "never written" in text and crop is None
    text, crop = bank.slot_detail(studio, "run:dida", 2, 0)
    assert "Source image **#" in text and "region" in text and crop.ndim == 3
    with pytest.raises(gr.Error, match="slot must be a number between 0 and 37"):
        bank.slot_detail(studio, "run:dida", 2, 99)
    assert bank.show(studio, None, 0, "cityscapes")[0] == bank.NO_BANK


# --- Temperature ------------------------------------------------------------------------------


def test_temperature_explanation_keeps_one_y_scale_across_tp(studio: Studio) -> None:
    x, y, sharp, summary = temperature.click(
        studio, "run:dida", 0, 0.02, 2, "cityscapes", select(40, 20)
    )
    _, _, flat, _ = temperature.click(studio, "run:dida", 0, 1.0, 2, "cityscapes", select(40, 20))
    assert (x, y) == (40, 20)
    assert sharp.layout.yaxis.range == flat.layout.yaxis.range
    e = studio.explain("run:dida", 0, 40, 20, 1.0)
    assert np.allclose(flat.data[0].y, np.sort(e.q.numpy())[::-1])
    assert "entropy H(q)" in summary and CLASSES[e.pseudo_label_semantic] in summary
    figure, text = temperature.explain(studio, None, 0, 1, 1, 0.1, 0, "cityscapes")
    assert text == temperature.NO_BANK
    snap_slider, tp_slider = temperature.select_run(studio, "run:dida")
    assert snap_slider["value"] == 2 and tp_slider["value"] == 0.1


# --- UMAP -------------------------------------------------------------------------------------


def test_projection_view_shows_pca_then_polls(studio: Studio) -> None:
    figure, status, timer, path, _ = umap.project(
        studio, "run:dida", 2, "class", True, 50, "PCA", 0, "cityscapes"
    )
    assert status.startswith("PCA") and timer.active is False
    assert sum(len(t.x) for t in figure.data) == 38 + 50
    assert {t.name for t in figure.data} <= {*CLASSES, "unlabelled"}
    assert Path(path).read_text().count("\n") == 38 + 50 + 1
    figure, *_ = umap.project(studio, "run:dida", 2, "domain", True, 50, "PCA", 0, "cityscapes")
    assert sorted(t.name for t in figure.data) == ["bank (source)", "target pixel"]
    figure, *_ = umap.project(studio, "run:dida", 2, "age", False, 50, "PCA", 0, "cityscapes")
    assert len(figure.data) == 1 and len(figure.data[0].x) == 38
    assert umap.figure_json(figure).startswith('{"data"')


def test_lasso_selection_is_summarised_by_class_and_domain(studio: Studio) -> None:
    event = gr.EventData(None, {"points": [0, 1, 38, 40, 999]})
    text, counts, path = umap.on_select(studio, "run:dida", 2, True, 50, 0, event)
    points = studio.points("run:dida", 2, 0, 50)
    assert text.startswith("**4 points selected**")
    assert int(counts.drop(columns="class").to_numpy().sum()) == 4
    assert set(counts.columns) == {"class", "bank (source)", "target pixel"}
    rows = Path(path).read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == list(points.domain[[0, 1, 38, 40]])
    assert umap.selection(studio, "run:dida", 2, False, 50, 0, [])[0].startswith("Draw a lasso")


# --- Long tail --------------------------------------------------------------------------------


def test_long_tail_frequencies_and_iou_against_frequency(studio: Studio) -> None:
    studio.source_stats(wait=True)
    pixels, images, table, path, note = longtail.frequencies(studio)
    assert note.startswith("Source bars: SynthCity source split, preset tiny (…/")
    assert len(table) == 19
    assert len(pixels.data) == 2
    source = [float(v) for v in pixels.data[0].y]
    assert source == sorted(source, reverse=True)
    figure, rows, path, status, timer = longtail.iou_frequency(
        studio, ["run:dida", "run:source_only"], False
    )
    assert len(rows) == 2 * 19 and {t.name for t in figure.data} == {
        "DIDA · dida",
        "source-only · source_only",
    }
    assert Path(path).exists()


# --- Train ------------------------------------------------------------------------------------


def test_train_tab_starts_polls_and_stops_a_job(studio: Studio) -> None:
    idle = train.poll(studio, None, "cityscapes")
    assert idle[0] == "No job started in this session." and idle[-1].active is False
    job_id, status, timer = train.start(studio, "dida", "tiny", 2, 0, "ui_run", 38, 0.1, 1.0)
    assert "ui_run" in status and timer.active is True
    job = studio.trainer.get(job_id)
    assert job.config.method_options == {"bank_size": 38, "tp": 0.1, "ins_lambda": 1.0}
    deadline = time.monotonic() + 120
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.1)
    status, progress, losses, miou, bank_fig, jobs, timer = train.poll(studio, job_id, "cityscapes")
    assert "finished" in status and timer.active is False
    assert 'value="2" max="2"' in progress
    assert {t.name for t in losses.data} >= {"loss_source", "loss_target", "loss_ins"}
    assert len(miou.data) == 1 and len(bank_fig.data) == 3
    assert "ui_run" in list(jobs["run"])
    assert "run:ui_run" in {r.run_id for r in studio.runs()}
    with pytest.raises(gr.Error, match="already exists"):
        train.start(studio, "dida", "tiny", 2, 0, "ui_run", 38, 0.1, 1.0)
    assert train.start_choices(studio)[0] == ("random weights (from scratch)", train.SCRATCH)
    assert "run:ui_run" in {v for _, v in train.refresh_start(studio, train.SCRATCH)[0]["choices"]}
    job_id, status, _ = train.start(studio, "daformer", "tiny", 1, 0, "warm_ui", None, 0.1, None,
                                    "run:ui_run")  # fmt: skip
    warm = studio.trainer.get(job_id)
    weights = studio.run("run:ui_run").path / "model.safetensors"
    assert (
        warm.config.model.init_weights == str(weights) and f"model.init_weights={weights}" in status
    )
    while not warm.done and time.monotonic() < deadline + 120:
        time.sleep(0.1)
    assert warm.state == "finished", warm.error
    with pytest.raises(gr.Error, match="no job to stop"):
        train.stop(studio, None)


def test_a_job_ending_during_a_poll_gets_one_more_poll(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, _, _ = train.start(studio, "source_only", "tiny", 1, 0, "race_run", None, 0.1, None)
    job = studio.trainer.get(job_id)
    deadline = time.monotonic() + 120
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.1)
    job.state, real_table = "running", train.jobs_table  # a poll begins while the job runs ...

    def ends_meanwhile(s: Studio) -> pd.DataFrame:
        job.state = "stopped"  # ... and the job ends before the poll returns
        return real_table(s)

    monkeypatch.setattr(train, "jobs_table", ends_meanwhile)
    first = train.poll(studio, job_id, "cityscapes")
    assert "— running" in first[0] and first[-1].active is True
    second = train.poll(studio, job_id, "cityscapes")
    assert "— stopped" in second[0] and second[-1].active is False


# --- the whole app ----------------------------------------------------------------------------


def test_app_builds_and_refresh_reports_runs(studio: Studio) -> None:
    demo = build_app(studio)
    assert isinstance(demo, gr.Blocks)
    assert "run(s) with weights" in refresh_all(studio)
    assert common.pick([("a", "x"), ("b", "y")], "z", "y") == "y"
    update = common.dropdown_update([("a", "x")], "x")
    assert "value" not in update and update["choices"] == [("a", "x")]
