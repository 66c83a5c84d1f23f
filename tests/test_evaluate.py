"""Metric maths: confusion matrix vs scikit-learn, golden IoU, NaN rules, subsets, streaming, boundary bands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from dida.data.classes import CLASSES, SYNTHIA_13, SYNTHIA_16
from dida.evaluate import ConfusionMatrix, boundary_mask, confusion_matrix, seg_metrics

# A 3-class 4x4 example; 255 = ignore.  Hand-computed confusion (rows = GT): see test_golden_iou.
TARGET_4X4 = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 1], [2, 2, 2, 255]])
PRED_4X4 = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2], [2, 0, 0, 1], [2, 2, 2, 2]])


def _random_labels(seed: int, shape=(2, 17, 23)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, 19, shape, generator=g)
    target = torch.randint(0, 19, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = 255
    mask = torch.rand(shape, generator=g) < 0.7
    return pred, target, mask


def test_confusion_matrix_matches_sklearn_with_ignore_and_mask() -> None:
    pred, target, mask = _random_labels(0)
    keep = (target != 255) & mask
    expected = sk_confusion_matrix(target[keep].numpy(), pred[keep].numpy(), labels=list(range(19)))
    got = confusion_matrix(pred, target, mask=mask)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), expected)
    assert int(got.sum()) == int(keep.sum())


def test_golden_iou() -> None:
    conf = confusion_matrix(PRED_4X4, TARGET_4X4, num_classes=3)
    assert conf.tolist() == [[3, 1, 0], [0, 4, 1], [1, 0, 4]]
    m = seg_metrics(conf)
    np.testing.assert_allclose(m.iou.numpy(), [3 / 5, 4 / 6, 4 / 6])
    np.testing.assert_allclose(m.acc.numpy(), [3 / 4, 4 / 5, 4 / 5])
    assert m.miou == {"3": pytest.approx((3 / 5 + 2 * 4 / 6) / 3)}
    assert m.aacc == pytest.approx(11 / 14)
    assert m.macc == pytest.approx((3 / 4 + 2 * 4 / 5) / 3)


def test_nan_for_absent_classes() -> None:
    target = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 2], [1, 1]])  # class 2 only predicted, class 3 absent everywhere
    m = seg_metrics(confusion_matrix(pred, target, num_classes=4))
    assert m.iou[2] == 0.0 and math.isnan(m.acc[2])
    assert math.isnan(m.iou[3]) and math.isnan(m.acc[3])
    assert m.miou["4"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m.macc == pytest.approx((1 / 2 + 1) / 2)
    empty = seg_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert math.isnan(empty.miou["3"]) and math.isnan(empty.aacc) and math.isnan(empty.macc)


def test_subset_mious_average_their_classes() -> None:
    pred, target, _ = _random_labels(1, shape=(40, 40))
    target[target == 4] = 255  # fence absent from GT ...
    pred[pred == 4] = 0  # ... and prediction: NaN, skipped by every mean
    m = seg_metrics(confusion_matrix(pred, target))
    iou = m.iou.numpy()
    assert set(m.miou) == {"19", "16", "13"}
    assert m.miou["19"] == pytest.approx(np.nanmean(iou))
    assert m.miou["16"] == pytest.approx(np.mean([iou[c] for c in SYNTHIA_16 if c != 4]))
    assert m.miou["13"] == pytest.approx(np.mean(iou[list(SYNTHIA_13)]))
    assert m.miou["16"] != pytest.approx(m.miou["19"])


def test_streaming_equals_one_shot_and_merge() -> None:
    pred, target, mask = _random_labels(2, shape=(4, 9, 11))
    one_shot = confusion_matrix(pred, target, mask=mask)
    first, second = ConfusionMatrix(), ConfusionMatrix()
    for i in range(2):
        first.update(pred[i], target[i], mask[i])
    second.update(pred[2:], target[2:], mask[2:])
    assert torch.equal(first.matrix, confusion_matrix(pred[:2], target[:2], mask=mask[:2]))
    assert torch.equal(first.merge(second).matrix, one_shot)
    assert first.compute().miou["19"] == pytest.approx(seg_metrics(one_shot).miou["19"])
    assert first.all_reduce_() is first and torch.equal(first.matrix, one_shot)  # not distributed
    first.reset()
    assert int(first.matrix.sum()) == 0
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(ConfusionMatrix(num_classes=3))


def _all_reduce_worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    acc = ConfusionMatrix(num_classes=2)
    acc.update(
        torch.tensor([rank]), torch.tensor([0])
    )  # rank 0: TP of class 0, rank 1: FP of class 1
    acc.all_reduce_()
    assert acc.matrix.tolist() == [[1, 1], [0, 0]], acc.matrix.tolist()
    dist.destroy_process_group()


def test_all_reduce_sums_over_ranks(tmp_path) -> None:
    mp.spawn(_all_reduce_worker, args=(str(tmp_path / "init"),), nprocs=2)


def test_invalid_values_raise() -> None:
    target = torch.zeros(2, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"pred holds class indices outside \[0, 19\): \[19\]"):
        confusion_matrix(torch.tensor([[0, 19], [0, 0]]), target)
    with pytest.raises(ValueError, match=r"pred .*\[-1\]"):
        confusion_matrix(torch.tensor([[0, -1], [0, 0]]), target)
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(torch.zeros(2, 2), target)
    with pytest.raises(ValueError, match="target holds"):
        confusion_matrix(target, torch.tensor([[0, 30], [0, 0]]))
    with pytest.raises(ValueError, match="mask must be a bool"):
        confusion_matrix(target, target, mask=torch.ones(2, 2))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(target, target[0])


def test_ignored_pixels_may_hold_any_prediction() -> None:
    pred = torch.tensor([[0, 99]])  # out-of-range prediction on an ignore pixel is not counted
    assert confusion_matrix(pred, torch.tensor([[0, 255]]), num_classes=2).tolist() == [
        [1, 0],
        [0, 0],
    ]


def test_to_dict_is_json_and_table_lists_classes() -> None:
    pred, target, _ = _random_labels(3, shape=(30, 30))
    target[target == 16] = 255
    pred[pred == 16] = 0
    m = seg_metrics(confusion_matrix(pred, target))
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["IoU"]["train"] is None and d["IoU"]["road"] == pytest.approx(float(m.iou[0]))
    assert d["mIoU"]["16"] == pytest.approx(m.miou["16"]) and d["classes"] == list(CLASSES)
    assert torch.equal(
        seg_metrics(torch.tensor(d["confusion"])).iou.nan_to_num(), m.iou.nan_to_num()
    )
    table = m.table()
    assert all(name in table for name in CLASSES)
    assert f"{100 * m.miou['19']:6.2f}" in table and "mIoU13" in table


BLOCK = torch.zeros(5, 5, dtype=torch.int64)
BLOCK[:2, :2] = 1  # a 2x2 block of class 1 in the corner of class 0


def test_boundary_mask_golden() -> None:
    expected_1 = torch.zeros(5, 5, dtype=torch.bool)
    expected_1[:3, :3] = True
    expected_1[0, 0] = False  # all its neighbours are class 1
    assert torch.equal(boundary_mask(BLOCK, 1), expected_1)
    expected_2 = torch.zeros(5, 5, dtype=torch.bool)
    expected_2[:4, :4] = True
    assert torch.equal(boundary_mask(BLOCK, 2), expected_2)


def test_boundary_mask_ignore_semantics() -> None:
    row = torch.tensor([[0, 0, 255, 1, 1, 1]])
    assert not boundary_mask(row, 1).any()
    assert boundary_mask(row, 2).tolist() == [[False, True, False, True, False, False]]
    with_ignore = boundary_mask(row, 1, ignore_creates_boundary=True)
    assert with_ignore.tolist() == [[False, True, False, True, False, False]]


def _brute_force_boundary(label: np.ndarray, width: int) -> np.ndarray:
    h, w = label.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            window = label[max(0, y - width) : y + width + 1, max(0, x - width) : x + width + 1]
            others = window[(window != 255) & (window != label[y, x])]
            out[y, x] = label[y, x] != 255 and others.size > 0
    return out


@pytest.mark.parametrize("width", [1, 2, 3])
def test_boundary_mask_matches_brute_force_batched(width: int) -> None:
    g = torch.Generator().manual_seed(width)
    labels = torch.randint(0, 4, (2, 7, 9), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.15] = 255
    got = boundary_mask(labels.to(torch.uint8), width)
    assert got.shape == labels.shape and got.dtype == torch.bool
    for b in range(2):
        np.testing.assert_array_equal(
            got[b].numpy(), _brute_force_boundary(labels[b].numpy(), width)
        )


def test_boundary_mask_restricts_evaluation() -> None:
    pred = torch.zeros(5, 5, dtype=torch.int64)  # misses the block entirely
    conf = confusion_matrix(pred, BLOCK, num_classes=2, mask=boundary_mask(BLOCK, 1))
    assert conf.tolist() == [[5, 0], [3, 0]]
    with pytest.raises(ValueError, match="width must be >= 1"):
        boundary_mask(BLOCK, 0)
