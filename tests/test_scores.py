"""Per-image scores and confusion matrices (issue 16 §2-3): overlap / boundary IoU golden values on
4×4 maps, overlap pair types, disagreement spread, the score file written by ``dida.bench.ship``
(equal to a direct recomputation, confusion summing to the labelled pixels, per-class IoU equal to
the evaluator's) and the studio reading it at once or scoring other runs in the background."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_studio import fixture_runs, make_studio

from dida import runs
from dida.analysis import (
    ConfusionView,
    boundary_iou,
    confusion_view,
    look_alike_classes,
    masked_miou,
    overlap_iou,
    pair_scores,
    pair_types,
    per_image_miou,
    per_image_scores,
    ranking_by,
    spread,
)
from dida.bench.ship import checkpoint_scores, parse_args, val_split, write_scores
from dida.data.classes import CLASSES, IGNORE_INDEX
from dida.data.overlap import build_overlap_index
from dida.evaluate import ConfusionMatrix
from dida.scores import (
    SCORES_FILE,
    ScoreTable,
    compare_tables,
    image_row,
    model_predictor,
    sort_rows,
)

PERSON, RIDER, CAR, BICYCLE = (CLASSES.index(c) for c in ("person", "rider", "car", "bicycle"))
# Cityscapes label IDs of the instance map: person 24, rider 25, car 26, bicycle 33
P, R, C, B = 24, 25, 26, 33


# --- golden values on 4×4 maps ----------------------------------------------------------------


def test_masked_miou_counts_only_the_masked_labelled_pixels() -> None:
    gt = np.array([[0, 0, 1, 1]] * 4)
    pred = np.array([[0, 1, 1, 1]] * 4)
    mask = np.zeros((4, 4), bool)
    mask[:, 1:3] = True  # the two middle columns: gt 0 | 1, pred 1 | 1
    # class 0: tp 0, union 4 → 0; class 1: tp 4, union 8 → 0.5
    assert masked_miou(pred, gt, mask) == pytest.approx(0.25)
    assert np.isnan(masked_miou(pred, gt, np.zeros((4, 4), bool)))
    ignored = np.where(mask, IGNORE_INDEX, gt)
    assert np.isnan(masked_miou(pred, ignored, mask))


def test_overlap_iou_golden_value_on_a_rider_on_a_bicycle() -> None:
    instance = np.array([[R * 1000, R * 1000, 0, 0]] * 2 + [[B * 1000, B * 1000, 0, 0]] * 2)
    gt = np.array([[RIDER, RIDER, 0, 0]] * 2 + [[BICYCLE, BICYCLE, 0, 0]] * 2)
    pred = gt.copy()
    pred[1, :2] = BICYCLE  # the rider's lower row predicted as bicycle
    # band width 1: rows 1 and 2 of columns 0-1 (rider row 1, bicycle row 2) → 4 pixels
    # rider: tp 0, union 2 → 0; bicycle: tp 2, union 4 → 0.5
    assert overlap_iou(pred, gt, instance, width=1) == pytest.approx(0.25)
    assert overlap_iou(gt, gt, instance, width=1) == pytest.approx(1.0)
    no_overlap = np.where(instance == B * 1000, 0, instance)
    assert np.isnan(overlap_iou(pred, gt, no_overlap, width=1))


def test_boundary_iou_golden_value() -> None:
    gt = np.array([[0, 0, 0, 1]] * 4)
    pred = np.array([[0, 0, 1, 1]] * 4)
    # width 1 band: columns 2 (gt 0) and 3 (gt 1); pred 1 on both
    # class 0: tp 0, union 4 → 0; class 1: tp 4, union 8 → 0.5
    assert boundary_iou(pred, gt, width=1) == pytest.approx(0.25)
    assert np.isnan(boundary_iou(gt, np.zeros((4, 4), np.int64), width=1))


def test_image_row_matches_the_single_metrics() -> None:
    instance = np.array([[R * 1000, R * 1000, 0, 0]] * 2 + [[B * 1000, B * 1000, 0, 0]] * 2)
    gt = np.array([[RIDER, RIDER, 0, 0]] * 2 + [[BICYCLE, BICYCLE, 0, 0]] * 2)
    pred = gt.copy()
    pred[1, :2] = BICYCLE
    row = image_row(pred, gt, instance)
    assert row["miou"] == pytest.approx(per_image_miou(pred, gt))
    assert row["overlap_iou"] == pytest.approx(overlap_iou(pred, gt, instance))
    assert row["boundary_iou"] == pytest.approx(boundary_iou(pred, gt))
    assert row["confusion"].sum() == 16 and row["class_iou"][BICYCLE] == pytest.approx(4 / 6)
    assert np.isnan(image_row(pred, gt, None)["overlap_iou"])


# --- pair types and disagreement ---------------------------------------------------------------


def _instance_map(pairs: str) -> np.ndarray:
    """An 8x8 map: 'pc' a person touching a car, 'rb' a rider on a bicycle, 'p' a lone person."""
    m = np.zeros((8, 8), np.int32)
    if "pc" in pairs:
        m[0:2, 0:2], m[0:2, 2:4] = P * 1000, C * 1000
    if "rb" in pairs:
        m[5:6, 5:7], m[6:7, 5:7] = R * 1000 + 1, B * 1000 + 1
    if pairs == "p":
        m[4:6, 0:2] = P * 1000 + 2
    return m


def test_pair_types_count_images_per_pair_type() -> None:
    items = [(f"i{k}", _instance_map(p)) for k, p in enumerate(["pc", "pc rb", "rb", "p", "pc"])]
    types = pair_types(build_overlap_index(items))
    assert types == {"person–car": [0, 1, 4], "rider–bicycle": [1, 2]}
    assert list(types) == ["person–car", "rider–bicycle"]  # most frequent first


def test_spread_and_ranking_ignore_missing_values() -> None:
    values = np.array([[0.2, 0.5, np.nan, 0.1], [0.6, 0.5, 0.3, np.nan], [0.4, 0.2, np.nan, 0.2]])
    assert np.allclose(spread(values)[:2], [0.4, 0.3]) and np.isnan(spread(values)[2])
    assert spread(values)[3] == pytest.approx(0.1)
    assert ranking_by(spread(values)) == [0, 1, 3, 2]
    assert ranking_by(np.array([0.3, np.nan, 0.1]), descending=False) == [2, 0, 1]


def test_pair_scores_from_stored_class_ious_equal_per_image_scores() -> None:
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 4, (6, 6)) for _ in range(5)]
    a = [rng.integers(0, 5, (6, 6)) for _ in range(5)]
    b = [rng.integers(0, 3, (6, 6)) for _ in range(5)]
    direct = per_image_scores(a, b, gts)
    rows = [
        [image_row(p, g, None)["class_iou"] for p, g in zip(x, gts, strict=True)] for x in (a, b)
    ]
    ious = [np.stack(r) for r in rows]
    stored = pair_scores(*ious)
    assert np.allclose(stored.miou_a, direct.miou_a) and np.allclose(stored.miou_b, direct.miou_b)
    assert stored.ranking() == direct.ranking()


def test_confusion_view_rows_are_percent_and_look_alike_cut_keeps_the_rest() -> None:
    counts = np.zeros((19, 19), np.int64)
    counts[CAR, CAR], counts[CAR, CLASSES.index("truck")], counts[CAR, 0] = 6, 3, 1
    full = confusion_view(counts)
    assert isinstance(full, ConfusionView) and full.percent[CAR, CAR] == pytest.approx(60.0)
    assert np.isnan(full.percent[1]).all() and full.pixels[CAR] == 10
    cut = confusion_view(counts, look_alike_classes())
    assert cut.columns[-1] == "other" and len(cut.rows) == 10 == len(cut.columns) - 1
    car = cut.rows.index("car")
    assert cut.percent[car, cut.columns.index("truck")] == pytest.approx(30.0)
    assert cut.percent[car, -1] == pytest.approx(0.0)  # road is a look-alike class: shown
    assert np.nansum(cut.percent[car]) == pytest.approx(100.0)


def test_compare_tables_and_sort_rows() -> None:
    def table(miou, overlap):
        n = len(miou)
        return ScoreTable(
            tuple(f"img{i}" for i in range(n)), np.array(miou), np.array(overlap),
            np.zeros(n), np.zeros((n, 19)), np.zeros((19, 19), np.int64),
        )  # fmt: skip

    a, b = table([0.5, 0.2], [0.1, np.nan]), table([0.6, 0.1], [0.4, 0.3])
    result = compare_tables(["A", "B"], [a, b])
    assert result.headers == [
        "index", "image", "A mIoU", "B mIoU", "A overlap IoU", "B overlap IoU", "B − A mIoU",
        "overlap IoU spread",
    ]  # fmt: skip
    assert result.rows[0] == [0, "img0", 50.0, 60.0, 10.0, 40.0, 10.0, 30.0]
    assert result.rows[1][-1] is None and result.rows[1][-2] == -10.0
    assert sort_rows(result.rows, 7)[0][0] == 0 and sort_rows(result.rows, 6, False)[0][0] == 1


# --- the shipped score file ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> Path:
    """A copy of the tiny DIDA fixture run laid out as a shipped checkpoint, with scores.npz."""
    assets = tmp_path_factory.mktemp("assets") / "checkpoints"
    folder = assets / "dida"
    source = fixture_runs(tmp_path_factory, synthcity_tiny) / "dida"
    folder.mkdir(parents=True)
    for name in (runs.MODEL, runs.CONFIG, runs.METRICS):
        shutil.copyfile(source / name, folder / name)
    write_scores(folder, val_split(synthcity_tiny))
    return folder


def test_written_scores_equal_a_direct_recomputation(shipped: Path, synthcity_tiny: Path) -> None:
    table, val = ScoreTable.load(shipped / SCORES_FILE), val_split(synthcity_tiny)
    predict = model_predictor(runs.load_run_model(shipped).eval())
    matrix, labelled = ConfusionMatrix(), 0
    assert table.names == tuple(s.name for s in val.samples)
    for i in range(len(val)):
        item = val[i]
        pred = predict(item["image"])
        assert table.miou[i] == pytest.approx(per_image_miou(pred, item["label"]), abs=1e-6)
        expected = overlap_iou(pred, item["label"], item["instance"])
        assert np.isnan(expected) == np.isnan(table.overlap_iou[i])
        assert np.nan_to_num(table.overlap_iou[i]) == pytest.approx(np.nan_to_num(expected), 1e-6)
        assert table.boundary_iou[i] == pytest.approx(boundary_iou(pred, item["label"]), abs=1e-6)
        matrix.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(item["label"]))
        labelled += int((item["label"] != IGNORE_INDEX).sum())
    assert int(table.confusion.sum()) == labelled
    assert np.array_equal(table.confusion, matrix.matrix.numpy())
    evaluator = matrix.compute().iou.numpy()
    from_file = np.array([v if v is not None else np.nan for v in table.metrics()["IoU"].values()])
    assert np.allclose(from_file, evaluator, equal_nan=True)
    assert (shipped / SCORES_FILE).stat().st_size < 100_000


def test_score_file_round_trip_and_model_digest(shipped: Path, synthcity_tiny: Path) -> None:
    table = ScoreTable.load(shipped / SCORES_FILE)
    again = checkpoint_scores(shipped, val_split(synthcity_tiny))
    assert table.meta == again.meta and table.names == again.names
    assert np.allclose(table.class_iou, again.class_iou, equal_nan=True, atol=1e-6)
    assert np.array_equal(table.confusion, again.confusion)
    bad = shipped.parent / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a score table"):
        ScoreTable.load(bad)


def test_scores_only_is_a_ship_option() -> None:
    args = parse_args(["--scores-only", "--names", "dida"])
    assert args.scores_only and args.names == ["dida"]


def test_studio_reads_shipped_scores_at_once_and_scores_runs_in_background(
    shipped: Path, synthcity_tiny: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run_dir = tmp_path_factory.mktemp("runs")
    source = fixture_runs(tmp_path_factory, synthcity_tiny) / "source_only"
    shutil.copytree(source, run_dir / "source_only")
    stamp = time.time_ns()  # a model version no earlier test has scored into the shared data cache
    os.utime(run_dir / "source_only" / "model.safetensors", ns=(stamp, stamp))
    studio = make_studio(synthcity_tiny, run_dir, shipped.parent.parent)
    try:
        table = studio.passes.scores("shipped:dida")
        assert table is not None and studio.passes.scores_state("shipped:dida") is None
        assert np.array_equal(table.confusion, ScoreTable.load(shipped / SCORES_FILE).confusion)
        rid = "run:source_only"
        assert studio.passes.scores(rid) is None  # queued in the batch lane
        studio.worker.wait(("scores", rid, studio.model_stamp(rid)), timeout=300)
        computed = studio.passes.scores(rid)
        cached = studio.passes.cache_path(rid, studio.model_stamp(rid))
        assert computed is not None and cached.is_file()
        assert studio.image_scores("shipped:dida", rid) is not None
        assert studio.passes.disagreement(["shipped:dida", rid]).shape == (len(studio.val),)
        assert studio.passes.scores_progress(rid) == (len(studio.val), len(studio.val))
    finally:
        studio.shutdown()
