"""The engine-side registry of the app: run discovery, cached predictions, readouts, uploads, bank
tables, explanations, projections, whole-split passes and the one-at-a-time training queue.

``fixture_runs`` trains three tiny runs once per test session (the app tests import it too).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.views import longtail
from dida import runs
from dida.analysis import pca_2d, per_image_scores
from dida.data.classes import IGNORE_INDEX
from dida.data.datasets import class_pixel_totals
from dida.data.synthcity import read_manifest
from dida.explain import ImageFeatures, explain_features, explain_pixel
from dida.inference import predict_image
from dida.model import SegModel
from dida.presets import preset_config
from dida.studio import (
    LRU,
    MAX_UPLOAD_SIDE,
    Studio,
    UploadError,
    ValPass,
    classify_features,
    load_upload,
    per_class_iou,
    rare_classes,
    sample_pixel_features,
    slot_rows,
    train_config,
    warm_start,
)
from dida.studio.results import ResultStore
from dida.train import build_parser, config_from_args, train

FIXTURE_RUNS = (("source_only", 2, {}), ("daformer", 2, {}), ("dida", 3, {"bank_size": 38}))


def tiny_config(root: Path, method: str, iters: int, options: dict):
    cfg = preset_config("tiny", method)
    data = replace(cfg.data, source_root=str(root), target_root=str(root), rcs=False)
    return replace(cfg, data=data, iters=iters, method_options=options, checkpoint_interval=1)


def fixture_runs(tmp_path_factory: pytest.TempPathFactory, synthcity: Path) -> Path:
    """Three tiny finished runs (source-only, DAFormer, DIDA with K = 38), trained once per session."""
    folder = tmp_path_factory.getbasetemp() / "studio_runs"
    if (folder / "READY").exists():
        return folder
    for method, iters, options in FIXTURE_RUNS:
        list(train(tiny_config(synthcity, method, iters, options), folder / method))
    (folder / "READY").write_text("ok")
    return folder


def make_studio(synthcity: Path, runs_dir: Path, assets: Path | None = None) -> Studio:
    return Studio(synthcity, [runs_dir], assets, data_preset="tiny", cache_size=16)


def private_studio(tmp_path_factory: pytest.TempPathFactory, synthcity: Path) -> Studio:
    """A Studio over a private copy of the fixture runs (runs trained by a test stay local)."""
    folder = tmp_path_factory.mktemp("runs")
    for method, _, _ in FIXTURE_RUNS:
        shutil.copytree(fixture_runs(tmp_path_factory, synthcity) / method, folder / method)
    return make_studio(synthcity, folder)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> Path:
    return fixture_runs(tmp_path_factory, synthcity_tiny)


@pytest.fixture(scope="module")
def studio(runs_dir: Path, synthcity_tiny: Path) -> Studio:
    return make_studio(synthcity_tiny, runs_dir)


# --- discovery ---------------------------------------------------------------------------------


def test_runs_are_discovered_with_their_methods_and_banks(studio: Studio) -> None:
    found = {r.run_id: r for r in studio.runs()}
    assert set(found) == {"run:source_only", "run:daformer", "run:dida"}
    assert {r.method for r in found.values()} == {"source_only", "daformer", "dida"}
    assert all(r.has_model and r.state == "finished" for r in found.values())
    assert [r.run_id for r in studio.runs(with_bank=True)] == ["run:dida"]
    assert found["run:dida"].method_options == {"bank_size": 38}
    assert found["run:dida"].title.startswith("DIDA · dida")


def test_shipped_checkpoint_folder_is_listed_and_predicts_like_the_run(
    studio: Studio, runs_dir: Path, synthcity_tiny: Path, tmp_path: Path
) -> None:
    shipped = tmp_path / "assets" / "checkpoints" / "dida_small"
    shipped.mkdir(parents=True)
    for name in (runs.CONFIG, runs.MODEL, runs.BANK_HISTORY):
        shutil.copy(runs_dir / "dida" / name, shipped / name)
    (shipped / "MODEL_CARD.md").write_text("# DIDA small\n")
    other = make_studio(synthcity_tiny, runs_dir, tmp_path / "assets")
    summary = other.run("shipped:dida_small")
    assert (summary.kind, summary.state, summary.has_bank) == ("shipped", "shipped", True)
    assert other.model_card("shipped:dida_small") == "# DIDA small\n"
    a, b = other.predict("shipped:dida_small", 0), studio.predict("run:dida", 0)
    assert np.array_equal(a.labels, b.labels)


def test_compare_features_the_shipped_paper_dida_over_a_better_released_one(
    runs_dir: Path, synthcity_tiny: Path, tmp_path: Path
) -> None:
    """Per method the shipped folder named after the method wins (the Instance bank tab opens on
    its bank too); mIoU only ranks the rest."""
    for name, miou in (("dida", 0.30), ("dida_released", 0.40)):
        shipped = tmp_path / "assets" / "checkpoints" / name
        shipped.mkdir(parents=True)
        for file in (runs.CONFIG, runs.MODEL, runs.BANK_HISTORY):
            shutil.copy(runs_dir / "dida" / file, shipped / file)
        runs.append_metrics(shipped, {"kind": "eval", "it": 1, "mIoU": {"19": miou}})
    other = make_studio(synthcity_tiny, runs_dir, tmp_path / "assets")
    assert other.run("shipped:dida_released").miou == 0.40
    assert other.featured_runs(limit=1) == ["shipped:dida"]
    assert other.runs(with_bank=True)[0].run_id == "shipped:dida"


def test_no_runs_gives_an_empty_list_and_a_helpful_error(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    empty = make_studio(synthcity_tiny, tmp_path / "nothing")
    assert empty.runs() == []
    with pytest.raises(KeyError, match="Train tab"):
        empty.model("run:missing")


def test_an_unreadable_run_is_reported_not_skipped(synthcity_tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "runs" / "broken").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / runs.CONFIG).write_text("{not json")
    broken = make_studio(synthcity_tiny, tmp_path / "runs")
    assert broken.runs() == []
    assert len(broken.problems) == 1 and "broken" in broken.problems[0]


# --- predictions and readouts -------------------------------------------------------------------


def test_prediction_matches_inference_and_is_cached_until_the_weights_change(
    studio: Studio, runs_dir: Path
) -> None:
    image = studio.item(1)["image"]
    reference = predict_image(studio.model("run:source_only"), image)
    first = studio.predict("run:source_only", 1)
    assert np.array_equal(first.labels, reference.labels[0].numpy())
    exact = reference.probs[0].numpy()
    assert np.abs(first.probs.astype(np.float32) - exact).max() <= 0.5 / 255 + 1e-3  # 1/255 steps
    assert np.allclose(first.probs.astype(np.float32).sum(0), 1.0, atol=19 * 0.5 / 255)
    assert first.features.shape == reference.features[0].shape
    assert studio.predict("run:source_only", 1) is first
    weights = runs_dir / "source_only" / runs.MODEL
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    again = studio.predict("run:source_only", 1)
    assert again is not first and np.array_equal(again.labels, first.labels)


def test_readout_reports_ground_truth_and_each_model_at_the_pixel(studio: Studio) -> None:
    x, y = 17, 40
    readings = studio.readout(["run:dida", "run:daformer"], 2, x, y)
    assert [r.source for r in readings][0] == "ground truth"
    assert readings[0].class_id == int(studio.item(2)["label"][y, x]) and readings[0].prob is None
    pred = studio.predict("run:dida", 2)
    dida = readings[1]
    assert dida.class_id == int(pred.labels[y, x])
    assert dida.prob == pytest.approx(float(pred.probs[dida.class_id, y, x]))
    assert dida.top[0][0] == dida.class_id and len(dida.top) == 3
    assert dida.top[0][1] >= dida.top[1][1] >= dida.top[2][1]
    with pytest.raises(ValueError, match="outside the 128x64 image"):
        studio.readout(["run:dida"], 2, 128, 0)


def test_per_class_iou_golden_values() -> None:
    pred = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    label = np.array([[0, 1], [1, IGNORE_INDEX]], dtype=np.uint8)
    iou = per_class_iou(pred, label)
    assert iou["road"] == pytest.approx(1 / 2) and iou["sidewalk"] == pytest.approx(1 / 2)
    assert iou["building"] is None


def test_image_iou_uses_each_runs_prediction(studio: Studio) -> None:
    table = studio.image_iou(["run:dida", "run:source_only"], 0)
    label = studio.item(0)["label"]
    for run_id, ious in table.items():
        assert ious == per_class_iou(studio.predict(run_id, 0).labels, label)


# --- uploads ------------------------------------------------------------------------------------


def _save(tmp_path: Path, name: str, array: np.ndarray, mode: str | None = None) -> Path:
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_upload_grayscale_becomes_rgb_and_is_predicted(studio: Studio, tmp_path: Path) -> None:
    gray = np.tile(np.arange(64, dtype=np.uint8)[:, None], (1, 96))
    key, notes = studio.add_upload(_save(tmp_path, "g.png", gray))
    assert key.startswith("upload:") and "converted to RGB" in notes[0]
    image = studio.item(key)["image"]
    assert image.shape == (64, 96, 3) and np.array_equal(image[..., 0], gray)
    assert studio.item(key)["label"] is None
    assert studio.predict("run:dida", key).labels.shape == (64, 96)


def test_upload_rgba_drops_alpha_over_black(tmp_path: Path) -> None:
    rgba = np.full((40, 40, 4), 200, dtype=np.uint8)
    rgba[:20, :, 3], rgba[20:, :, 3] = 0, 255
    image, notes = load_upload(_save(tmp_path, "a.png", rgba))
    assert "alpha channel dropped" in notes[0]
    assert (image[:20] == 0).all() and (image[20:] == 200).all()


def test_upload_errors_name_the_file_and_the_reason(tmp_path: Path, monkeypatch) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UploadError, match="notes.txt is not a readable image"):
        load_upload(text)
    with pytest.raises(UploadError, match="at least 32x32"):
        load_upload(_save(tmp_path, "small.png", np.zeros((10, 50, 3), np.uint8)))
    monkeypatch.setattr("dida.studio.uploads.MAX_UPLOAD_PIXELS", 1000)
    with pytest.raises(UploadError, match="MP limit"):
        load_upload(_save(tmp_path, "big.png", np.zeros((40, 40, 3), np.uint8)))


def test_large_uploads_are_downscaled(tmp_path: Path) -> None:
    image, notes = load_upload(_save(tmp_path, "w.png", np.zeros((100, 2048, 3), np.uint8)))
    assert image.shape == (50, MAX_UPLOAD_SIDE, 3) and "downscaled" in notes[0]


# --- data index ---------------------------------------------------------------------------------


def test_val_items_classes_and_rare_classes(studio: Studio) -> None:
    items = studio.val_items()
    assert [i.index for i in items] == list(range(4))
    for item in items:
        present = set(np.unique(studio.item(item.index)["label"]).tolist()) - {IGNORE_INDEX}
        assert set(item.classes) == present
    pixels = class_pixel_totals(studio.target_stats())
    assert rare_classes(pixels) == studio.rare_classes()
    assert rare_classes(np.array([10000, 5, 0, 50])) == [1, 3]


def test_overlap_flags_follow_the_instance_maps(studio: Studio) -> None:
    from dida.data.overlap import summarize_overlaps

    studio.index_overlaps(wait=True)
    flags = studio.overlap_flags()
    expected = [bool(summarize_overlaps("x", studio.item(i)["instance"]).pairs) for i in range(4)]
    assert flags == expected
    assert all(i.overlap == f for i, f in zip(studio.val_items(), flags, strict=True))


def test_source_stats_match_the_synthcity_manifest(studio: Studio, synthcity_tiny: Path) -> None:
    stats = studio.source_stats(wait=True)
    manifest = read_manifest(synthcity_tiny)["splits"]["source"]
    assert class_pixel_totals(stats).tolist() == manifest["class_pixels"]


def test_thumbnail_is_small_and_cached(studio: Studio) -> None:
    path = studio.thumbnail(0, width=64)
    with Image.open(path) as im:
        assert max(im.size) == 64
    assert studio.thumbnail(0, width=64) == path


# --- whole-split passes -------------------------------------------------------------------------


def test_val_pass_and_image_scores(studio: Studio) -> None:
    studio.image_scores("run:source_only", "run:dida")  # queues the score tables (or reads the
    # disk cache: an earlier test may have scored the same weights on the same data)
    for run_id in ("run:source_only", "run:dida"):
        studio.val_pass(run_id)
        studio.worker.wait(("val-pass", run_id, studio.model_stamp(run_id)), timeout=120)
        studio.worker.wait(("scores", run_id, studio.model_stamp(run_id)), timeout=120)
    passes = [studio.val_pass(r, start=False) for r in ("run:source_only", "run:dida")]
    assert all(isinstance(p, ValPass) for p in passes)
    labels = [studio.item(i)["label"] for i in range(4)]
    assert np.array_equal(passes[1].labels[3], studio.predict("run:dida", 3).labels)
    assert passes[1].confusions.sum() == sum(int((lab != IGNORE_INDEX).sum()) for lab in labels)
    scores = studio.image_scores("run:source_only", "run:dida")
    expected = per_image_scores(passes[0].labels, passes[1].labels, labels)
    assert np.allclose(scores.score, expected.score, equal_nan=True)
    assert studio.val_metrics("run:dida")["mIoU"] == passes[1].metrics()["mIoU"]
    assert studio.val_pass_progress("run:dida") == (4, 4)


# --- bank, explanation, projection --------------------------------------------------------------


def test_slot_rows_describe_every_slot(studio: Studio) -> None:
    snap = studio.snapshot("run:dida")
    rows = slot_rows(snap)
    assert len(rows) == 38 and [r["slot"] for r in rows] == list(range(38))
    assert sum(r["changed"] for r in rows) == int(snap.changed.sum())
    written = [r for r in rows if r["written_at"] >= 0]
    assert all(r["age"] == snap.iteration - r["written_at"] for r in written)
    assert all(r["age"] == -1 for r in rows if r["written_at"] < 0)
    assert len(slot_rows(snap, changed_only=True)) == int(snap.changed.sum())
    with pytest.raises(IndexError, match="3 snapshots"):
        studio.snapshot("run:dida", 5)


def test_explain_matches_explain_pixel_and_reuses_image_features(studio: Studio) -> None:
    snap = studio.snapshot("run:dida", 1)
    direct = explain_pixel(studio.model("run:dida"), studio.item(0)["image"], snap, 30, 20, 0.2)
    via = studio.explain("run:dida", 0, 30, 20, 0.2, snapshot=1)
    assert (
        torch.allclose(via.q, direct.q)
        and via.pseudo_label_regenerated == direct.pseudo_label_regenerated
    )
    forwards: list = []
    original = studio._compute
    studio._compute = lambda *a, **k: forwards.append(a) or original(*a, **k)
    try:
        sharper = studio.explain("run:dida", 0, 30, 20, 0.05, snapshot=1)
        studio._predictions.clear()  # only the disk copy left (float16 features)
        from_disk = studio.explain("run:dida", 0, 30, 20, 0.2, snapshot=1)
    finally:
        del studio._compute
    assert forwards == []  # a new tp and a new process read the stored prediction
    torch.testing.assert_close(from_disk.q, direct.q, atol=1e-2, rtol=0)
    assert from_disk.pseudo_label_semantic == direct.pseudo_label_semantic
    assert sharper.entropy < via.entropy
    sweep = studio.tp_sweep("run:dida", 0, 30, 20, (0.05, 0.2, 1.0), snapshot=1)
    disk_sharper = studio.explain("run:dida", 0, 30, 20, 0.05, snapshot=1)
    assert sweep.y_max == pytest.approx(float(disk_sharper.q.max()), rel=1e-5)


def test_explain_reads_one_pixel_like_explain_features_on_the_whole_image(studio: Studio) -> None:
    """The studio reads only the pixel's probabilities and feature (no whole-image conversion);
    the result equals explain_features on logits = log of the stored probabilities."""
    pred, snap = studio.predict("run:dida", 0), studio.snapshot("run:dida", 1)
    probs = torch.from_numpy(pred.probs.astype(np.float32))
    outputs = ImageFeatures(probs.clamp_min(1e-6).log(), pred.features)
    o = studio.dida_options("run:dida")
    h, w = pred.labels.shape
    for x, y in ((0, 0), (30, 20), (w - 1, h - 1)):
        ref = explain_features(
            outputs, snap, x, y, 0.2, o.scatter_alpha, o.normalize, centre=o.centre
        )
        via = studio.explain("run:dida", 0, x, y, 0.2, snapshot=1)
        assert via.cell == ref.cell and (via.x, via.y) == (x, y)
        torch.testing.assert_close(via.teacher_probs, ref.teacher_probs)
        torch.testing.assert_close(via.q, ref.q)
        torch.testing.assert_close(via.regenerated_probs, ref.regenerated_probs)
        assert via.pseudo_label_regenerated == ref.pseudo_label_regenerated
    with pytest.raises(ValueError, match="outside"):
        studio.explain("run:dida", 0, w, 0, 0.2)


def test_points_classify_bank_and_sampled_pixels(studio: Studio) -> None:
    model, snap = studio.model("run:dida"), studio.snapshot("run:dida")
    points = studio.points("run:dida", -1, pixels=1, count=40)
    assert points.features.shape == (38 + 40, 32)
    assert (points.domain[:38] == "bank (source)").all() and (
        points.domain[38:] == "target pixel"
    ).all()
    logits = model.decode_head.conv_seg(snap.features.float()[:, :, None, None])[:, :, 0, 0]
    assert np.array_equal(points.pred[:38], logits.argmax(1).numpy())
    assert np.array_equal(classify_features(model, snap.features), points.pred[:38])
    assert set(points.correct) <= {"correct", "wrong", "unlabelled"}


def test_sampled_pixel_features_read_the_label_at_each_cell(studio: Studio) -> None:
    prediction, label = studio.predict("run:dida", 0), studio.item(0)["label"]
    sample = sample_pixel_features(prediction, label, 25, seed=3)
    assert sample["features"].shape == (25, 32)
    feats = prediction.features.reshape(32, -1).T.numpy()
    rows = [int(np.flatnonzero((feats == f).all(1))[0]) for f in sample["features"]]
    w = prediction.features.shape[2]
    ys, xs = np.array(rows) // w * 4 + 2, np.array(rows) % w * 4 + 2
    assert np.array_equal(sample["gt"], label[ys, xs]) and np.array_equal(
        sample["pred"], prediction.labels[ys, xs]
    )


class _PcaProjector:
    """Stands in for UMAP (tested in test_analysis): a PCA fitted on the first set."""

    def __init__(self) -> None:
        self.fitted, self.calls, self._cache = False, [], {}

    def cached(self, key, kind="umap"):
        return self._cache.get(key)

    def fit(self, features, key=None):
        self.fitted, self.basis = True, np.asarray(features, np.float32)
        self.calls.append("fit")

    def transform(self, features, key=None):
        self.calls.append("transform")
        self._cache[key] = pca_2d(np.asarray(features, np.float32)) + 100.0
        return self._cache[key]

    def pca(self, features, key=None):
        return pca_2d(features)


def test_projection_shows_pca_at_once_then_the_background_map(studio: Studio) -> None:
    fake = _PcaProjector()
    studio._projectors["run:dida"] = fake
    xy, used = studio.projection("run:dida", 0)
    assert used == "pca" and xy.shape == (38, 2)
    key = studio._projection_key("run:dida", 0, None, 300)
    studio.umap_worker.wait(("umap", key), timeout=30)
    assert studio.projection_state("run:dida", 0) == "done"
    xy, used = studio.projection("run:dida", 0)
    assert used == "umap" and fake.calls == ["fit", "transform"] and xy.min() > 50
    assert studio.projection("run:dida", 0, method="pca")[1] == "pca"


# --- training queue -----------------------------------------------------------------------------


def test_train_config_points_synthcity_at_the_apps_data() -> None:
    same = train_config("tiny", "dida", "data/synthcity-tiny", "tiny", iters=3, seed=2)
    assert same.data.source_root == same.data.target_root == "data/synthcity-tiny"
    assert (same.iters, same.seed) == (3, 2)
    other = train_config("tiny", "source_only", "data/synthcity", "default", method_options={})
    assert other.data.source_root == "data/synthcity-tiny"


def test_warm_start_takes_the_start_runs_weights_and_architecture(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "assets" / "checkpoints" / "source_only"
    cfg = warm_start(preset_config("quick", "daformer"), shipped)
    assert cfg.model.embed_dim == 32 != preset_config("quick", "daformer").model.embed_dim
    assert cfg.model.init_weights == str(shipped / runs.MODEL)
    assert cfg.data == preset_config("quick", "daformer").data  # the data stay the preset's
    started, trained = SegModel(cfg.model), runs.load_run_model(shipped)
    for (name, a), b in zip(
        started.state_dict().items(), trained.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert cfg.model.backbone_weights is None
    (tmp_path / runs.CONFIG).write_text(json.dumps({"model": {}}))
    with pytest.raises(runs.RunError, match="has no model.safetensors to start from"):
        warm_start(cfg, tmp_path)


def _wait(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert predicate(), "timed out"


def test_one_job_at_a_time_with_queue_positions_stop_and_refresh(
    synthcity_tiny: Path, runs_dir: Path, tmp_path: Path
) -> None:
    own_runs = tmp_path / "runs"
    shutil.copytree(runs_dir / "dida", own_runs / "dida")
    local = make_studio(synthcity_tiny, own_runs)
    first = local.train("source_only", "tiny", iters=50, name="long")
    second = local.train("dida", "tiny", iters=2, method_options={"bank_size": 38}, name="short")
    third = local.train("daformer", "tiny", iters=2, name="dropped")
    _wait(lambda: first.state == "running" and any(e.kind == "train" for e in first.events))
    assert local.trainer.position(first.job_id) == 0
    assert local.trainer.position(second.job_id) == 1 and local.trainer.position(third.job_id) == 2
    assert local.trainer.stop(third.job_id).state == "cancelled"
    local.trainer.stop(first.job_id)
    _wait(lambda: second.done)
    assert first.state == "stopped" and first.last.kind == "stopped" and first.last.it < 50
    assert second.state == "finished" and [e.kind for e in second.events][-1] == "done"
    assert not (own_runs / "dropped").exists()
    _wait(lambda: "run:short" in {r.run_id for r in local.runs()})
    assert local.run("run:long").state == "stopped"
    assert local.job_snapshot(second.job_id).labels.shape == (38,)
    command = shlex.split(runs.read_json(own_runs / "short" / runs.CONFIG)["command"])
    assert command[:3] == ["python", "-m", "dida.train"]  # the same run from the shell
    rebuilt = config_from_args(build_parser().parse_args(command[3:]))
    assert rebuilt.to_dict() == second.config.to_dict()
    with pytest.raises(ValueError, match="already exists"):
        local.train("dida", "tiny", name="short")


def test_a_failing_job_is_reported_and_the_queue_goes_on(
    synthcity_tiny: Path, runs_dir: Path, tmp_path: Path
) -> None:
    local = make_studio(synthcity_tiny, tmp_path / "runs")
    cfg = tiny_config(tmp_path / "no-such-data", "source_only", 2, {})
    cfg = replace(cfg, data=replace(cfg.data, synthcity_preset="no-such-preset"))
    bad = local.trainer.submit(cfg, "bad")
    good = local.train("source_only", "tiny", iters=1, name="good")
    _wait(lambda: good.done)
    assert bad.state == "failed" and "no-such-preset" in bad.error
    assert not (tmp_path / "runs" / "bad").exists()  # a run that never started leaves no folder
    assert good.state == "finished"


def test_a_diverging_job_fails_with_the_reason(synthcity_tiny: Path, tmp_path: Path) -> None:
    local = make_studio(synthcity_tiny, tmp_path / "runs")
    cfg = tiny_config(synthcity_tiny, "source_only", 4, {})
    job = local.trainer.submit(replace(cfg, optim=replace(cfg.optim, lr=1e30)), "nan")
    _wait(lambda: job.done)
    assert job.state == "failed" and job.error.startswith("diverged at iteration 2")
    assert runs.read_status(tmp_path / "runs" / "nan")["state"] == "failed"


def test_lru_keeps_the_most_recent_entries() -> None:
    cache = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2


def test_a_weighed_lru_keeps_its_total_weight_and_always_the_newest_entry() -> None:
    cache = LRU(10, weigh=len)
    cache.put("a", "xxxx")
    cache.put("b", "xxxx")
    assert cache.weight == 8 and cache.get("a") == "xxxx"  # "a" now the most recent
    cache.put("c", "xxx")  # 11 > 10: the least recent, "b", goes
    assert cache.get("b") is None and list(cache) == ["a", "c"] and cache.weight == 7
    cache.put("a", "x")  # a replaced entry's weight is replaced too
    assert cache.weight == 4
    cache.put("big", "x" * 50)  # heavier than the bound: kept alone
    assert list(cache) == ["big"] and cache.weight == 50


def test_featured_runs_and_prefetch(studio: Studio) -> None:
    assert studio.featured_runs() == ["run:dida", "run:daformer", "run:source_only"]
    assert studio.featured_runs(limit=1) == ["run:dida"]
    studio.prefetch(["run:daformer"], key=3, thumbnails=2)
    studio.worker.wait(("prefetch", ("run:daformer",), 3), timeout=60)
    stamp = studio.model_stamp("run:daformer")
    assert studio._predictions.get(("run:daformer", stamp, 3)) is not None


def test_one_image_asked_by_three_callers_at_once_is_computed_once(
    studio: Studio, tmp_path: Path
) -> None:
    local = make_studio(studio.data_root, studio.runs_dirs[0])
    local.results = ResultStore(tmp_path / "cache")  # nothing stored yet
    computed, compute = [], local._compute

    def slow_compute(*args, **kwargs):
        computed.append(args[:2])
        time.sleep(0.3)  # long enough for the other callers to arrive meanwhile
        return compute(*args, **kwargs)

    local._compute = slow_compute
    callers = [  # a request, the start-up prefetch and the background precompute, say
        threading.Thread(target=local.predict, args=("run:daformer", 1)),
        threading.Thread(target=local.predict, args=("run:daformer", 1, True)),
        threading.Thread(target=local._stored_or_new, args=("run:daformer", 1, True, None)),
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(60)
    assert computed == [("run:daformer", 1)]
    assert local.results.get(*local._result_ids("run:daformer", 1)) is not None
    assert len(local.computing) == 0


def test_the_background_precompute_starts_after_the_start_up_prefetch(
    studio: Studio, tmp_path: Path
) -> None:
    local = make_studio(studio.data_root, studio.runs_dirs[0])
    local.results = ResultStore(tmp_path / "cache")
    release, predict = threading.Event(), local.predict

    def held_predict(*args, **kwargs):
        release.wait(60)  # the prefetch is still predicting the first image
        return predict(*args, **kwargs)

    local.predict = held_predict
    local.prefetch(["run:daformer"], thumbnails=0)
    local.precompute(["run:daformer"])
    time.sleep(1.0)
    assert local.precompute_state(["run:daformer"]) == "running"
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing precomputed meanwhile
    release.set()
    _wait(lambda: local.precompute_state(["run:daformer"]) == "done")
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == len(local.val)
    local.shutdown()


def test_metrics_say_when_they_are_not_this_val_splits(
    synthcity_tiny: Path, runs_dir: Path, tmp_path: Path
) -> None:
    own = tmp_path / "runs"
    for name, data in (
        ("here", {}),
        ("elsewhere", {"target_root": "/data/other-synthcity"}),
        ("first_two", {"val_images": 2}),
    ):
        shutil.copytree(runs_dir / "daformer", own / name)
        config = runs.read_json(own / name / runs.CONFIG)
        config["data"].update(data)
        (own / name / runs.CONFIG).write_text(json.dumps(config))
    local = make_studio(synthcity_tiny, own)
    assert local.val_metrics("run:elsewhere") is not None  # the training evaluation is still shown
    assert local.val_metrics_origin("run:here") is None  # trained and evaluated on this split
    assert local.val_metrics_origin("run:elsewhere") == (
        "its training evaluation at iteration 2 (val split of /data/other-synthcity)"
    )
    assert local.val_metrics_origin("run:first_two") == (
        "its training evaluation at iteration 2 (first 2 images of this val split)"
    )
    *_, status, _ = longtail.iou_frequency(local, ["run:here", "run:elsewhere"], False)
    assert status == (
        "DAFormer-style · elsewhere: IoU from its training evaluation at iteration 2 (val split "
        "of /data/other-synthcity), not from this val split; " + longtail.RESCORE
    )
