"""dida.analysis: long-tail fractions, IoU vs frequency, per-image scores, slot table, projections."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from dida.analysis import (
    Projector,
    UmapConfig,
    fit_pca,
    iou_vs_frequency,
    long_tail,
    pca_2d,
    per_image_miou,
    per_image_scores,
    slot_table,
)
from dida.bank import BankSnapshot
from dida.data.classes import NUM_CLASSES
from dida.evaluate import confusion_matrix, seg_metrics

SOURCE = [{"0": 60, "13": 20, "file": "a.png"}, {"0": 10, "18": 10, "file": "b.png"}]
TARGET = [{"0": 5, "file": "c.png"}, {"13": 15, "file": "d.png"}]


# ---------------------------------------------------------------------------------------------
# Long tail and IoU vs frequency


def test_long_tail_golden_fractions() -> None:
    tail = long_tail(SOURCE, TARGET)
    rest = [c for c in range(NUM_CLASSES) if c not in (0, 13, 18)]
    assert tail.order == (0, 13, 18, *rest)
    assert tail.names[:3] == ("road", "car", "bicycle")
    np.testing.assert_allclose(tail.source_pixels[:3], [0.7, 0.2, 0.1])
    np.testing.assert_allclose(tail.source_images[:3], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(tail.target_pixels[:3], [0.25, 0.75, 0.0])
    np.testing.assert_allclose(tail.target_images[:3], [0.5, 0.5, 0.0])
    assert not tail.source_pixels[3:].any()
    assert tail.rows()[1] == {
        "train_id": 13,
        "class": "car",
        "source_pixels": pytest.approx(0.2),
        "source_images": 0.5,
        "target_pixels": 0.75,
        "target_images": 0.5,
    }


def test_long_tail_without_target_and_bad_stats() -> None:
    tail = long_tail(SOURCE)
    assert tail.target_pixels is None and tail.rows()[0]["target_pixels"] is None
    with pytest.raises(ValueError, match="source_stats lists no label files"):
        long_tail([])
    with pytest.raises(ValueError, match="target_stats count no labelled pixel"):
        long_tail(SOURCE, [{"file": "x.png"}])


def test_iou_vs_frequency_rows() -> None:
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    confusion[0, 0], confusion[13, 13], confusion[13, 0] = 3, 1, 1  # road 3/4, car 1/2
    metrics = {"dida": seg_metrics(confusion), "daformer": {"IoU": {"road": 0.5, "car": None}}}
    pixels = np.zeros(NUM_CLASSES)
    pixels[[0, 13, 18]] = [70, 20, 10]
    rows = iou_vs_frequency(metrics, pixels)
    assert len(rows) == 2 * NUM_CLASSES
    assert [(r["run"], r["class"]) for r in rows[:4]] == [
        ("dida", "road"),
        ("daformer", "road"),
        ("dida", "car"),
        ("daformer", "car"),
    ]
    assert rows[0]["iou"] == pytest.approx(0.75) and rows[1]["iou"] == 0.5
    assert rows[2]["iou"] == pytest.approx(0.5) and math.isnan(rows[3]["iou"])
    assert rows[0]["pixel_fraction"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="lack 'IoU'"):
        iou_vs_frequency({"x": {"mIoU": 1.0}}, pixels)


# ---------------------------------------------------------------------------------------------
# Per-image scores


def test_per_image_miou_golden() -> None:
    gt = np.array([[0, 0], [1, 255]], dtype=np.uint8)
    pred = np.array(
        [[0, 1], [1, 1]], dtype=np.uint8
    )  # the ignored pixel's prediction is not counted
    assert per_image_miou(pred, gt) == pytest.approx(0.5)
    assert per_image_miou(pred, gt, classes=[0, 1, 5]) == pytest.approx(2 / 3)
    reference = seg_metrics(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt)))
    assert per_image_miou(pred, gt) == pytest.approx(reference.miou["19"])
    assert math.isnan(per_image_miou(pred, np.full((2, 2), 255, np.uint8)))


def test_per_image_scores_sign_and_ranking() -> None:
    gt = [np.array([[0, 0, 1, 1]]), np.array([[0, 0, 0, 0]]), np.array([[2, 2, 3, 3]])]
    gt.append(np.full((1, 4), 255))
    preds_a = [np.array([[0, 0, 0, 0]]), gt[1], np.array([[2, 3, 3, 3]]), np.zeros((1, 4), int)]
    preds_b = [gt[0], np.array([[0, 0, 0, 2]]), preds_a[2], np.zeros((1, 4), int)]
    scores = per_image_scores(preds_a, preds_b, (torch.from_numpy(g) for g in gt))
    # image 0: b perfect (1) vs a (0.5 + 0) / 2; image 1: b adds a false class 2 that a avoids
    np.testing.assert_allclose(scores.miou_a[:3], [0.25, 1.0, (0.5 + 2 / 3) / 2])
    np.testing.assert_allclose(scores.miou_b[:3], [1.0, (0.75 + 0.0) / 2, (0.5 + 2 / 3) / 2])
    np.testing.assert_allclose(scores.score[:3], [0.75, -0.625, 0.0])
    assert math.isnan(scores.score[3])
    assert scores.ranking() == [0, 2, 1, 3]
    assert scores.ranking(descending=False) == [1, 2, 0, 3]


def test_per_image_scores_names_the_bad_image() -> None:
    good = np.zeros((2, 2), int)
    with pytest.raises(ValueError, match="image 1"):
        per_image_scores([good, good], [good, np.zeros((2, 3), int)], [good, good])
    with pytest.raises(ValueError, match="shorter|longer"):
        per_image_scores([good], [good, good], [good, good])


# ---------------------------------------------------------------------------------------------
# Slot table


def test_slot_table_golden() -> None:
    snap = BankSnapshot(
        iteration=100,
        features=torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]).half(),
        labels=torch.tensor([0, 0, 1, 18]),
        ages=torch.tensor([50, -1, 100, 90]),
        source_ids=torch.tensor([7, -1, 8, 9]),
        changed=torch.tensor([True, False, False, True]),
    )
    rows = slot_table(snap)
    assert len(rows) == NUM_CLASSES
    assert rows[0] == {
        "train_id": 0,
        "class": "road",
        "slots": 2,
        "never_written": 1,
        "changed": 1,
        "mean_age": 50.0,
        "max_age": 50,
        "mean_norm": 2.5,
    }
    assert (rows[1]["mean_age"], rows[18]["mean_age"], rows[18]["changed"]) == (0.0, 10.0, 1)
    assert rows[5]["slots"] == 0 and rows[5]["mean_age"] is None and rows[5]["mean_norm"] is None


# ---------------------------------------------------------------------------------------------
# Projections


def clusters(seed: int = 0, per: int = 20, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 1.0, (per, dim)) for c in (0, 4, 8)]).astype(np.float32)


def test_pca_is_deterministic_and_matches_sklearn_up_to_sign() -> None:
    points = clusters()
    out = pca_2d(points)
    assert out.shape == (60, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, pca_2d(points.copy()))
    reference = PCA(n_components=2, svd_solver="full").fit_transform(points)
    np.testing.assert_allclose(np.abs(out), np.abs(reference), atol=1e-3)
    basis = fit_pca(points)
    pivots = basis.components[np.arange(2), np.abs(basis.components).argmax(1)]
    assert (pivots > 0).all()


def test_pca_of_tiny_sets_and_stable_projector_basis() -> None:
    assert pca_2d(np.ones((1, 3))).tolist() == [[0.0, 0.0]]
    projector = Projector()
    first, second = clusters(0), clusters(1)
    projector.pca(first, key="a")
    np.testing.assert_array_equal(projector.pca(second, key="b"), fit_pca(first).transform(second))
    assert projector.cached("b", "pca") is projector.pca(clusters(2), key="b")


def test_pca_answers_while_a_umap_fit_holds_the_projector() -> None:
    projector = Projector()
    held, release, released_in_time = threading.Event(), threading.Event(), []

    def busy_fit() -> None:
        with projector._umap_lock:
            held.set()
            released_in_time.append(release.wait(timeout=20))

    worker = threading.Thread(target=busy_fit)
    worker.start()
    assert held.wait(timeout=20)
    try:
        assert projector.pca(clusters(), key="k").shape == (60, 2)
        assert projector.cached("other") is None
    finally:
        release.set()
        worker.join()
    assert released_in_time == [True], "pca waited for the UMAP lock"


def _ranks(values: np.ndarray) -> np.ndarray:
    return values.argsort().argsort().astype(np.float64)


def test_umap_projector_is_stable_and_cached() -> None:
    projector = Projector(UmapConfig(n_epochs=50))
    assert projector.warm_up() > 0 and not projector.fitted
    points = clusters()
    fitted = projector.project(points, key=("run", 0))
    assert fitted.shape == (60, 2) and fitted.dtype == np.float32 and np.isfinite(fitted).all()
    assert projector.project(clusters(5), key=("run", 0)) is fitted, "same key -> cached map"

    jitter = np.random.default_rng(1).normal(0, 0.01, points.shape).astype(np.float32)
    moved = projector.project(points + jitter, key=("run", 50))  # placed by transform
    assert projector.cached(("run", 50)) is moved
    pairs = np.triu_indices(60, 1)
    d_fit = np.linalg.norm(fitted[:, None] - fitted[None], axis=-1)[pairs]
    d_new = np.linalg.norm(moved[:, None] - moved[None], axis=-1)[pairs]
    assert np.corrcoef(_ranks(d_fit), _ranks(d_new))[0, 1] > 0.8, "layout order preserved"
    nearest = np.linalg.norm(moved[:, None] - fitted[None], axis=-1).argmin(1)
    assert (nearest // 20 == np.arange(60) // 20).mean() >= 0.95, "points stay in their cluster"

    with pytest.raises(ValueError, match="at least 5 points"):
        projector.fit(points[:3])
    with pytest.raises(RuntimeError, match="not fitted"):
        Projector().transform(points)
