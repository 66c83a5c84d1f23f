"""Segmentation metrics: confusion matrix, IoU / accuracy (mmseg conventions), masked evaluation.

Only metric maths lives here (pure torch, CPU or CUDA, int64 counts); running a model over a dataset is done
elsewhere.  Conventions follow mmseg's ``eval_metrics``: per-class IoU = TP / (TP + FP + FN) is NaN for a class
absent from both ground truth and prediction, per-class accuracy = TP / (TP + FN) is NaN for a class absent from
the ground truth, and means are NaN-means.  The 16- and 13-class SYNTHIA means average the per-class IoUs of the
full 19-class confusion matrix over the subset (predictions of an excluded class stay false positives), as
DAFormer reports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dida.data.classes import CLASSES, EVAL_SUBSETS, IGNORE_INDEX, NUM_CLASSES


def _check_integer(name: str, values: torch.Tensor) -> None:
    """Raise if ``values`` is not an integer label map (e.g. logits or probabilities)."""
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {values.dtype}; "
            "pass logits.argmax(1) rather than logits or probabilities"
        )


def _check_labels(name: str, values: torch.Tensor, num_classes: int) -> None:
    """Raise if any class index in ``values`` lies outside [0, num_classes)."""
    bad = (values < 0) | (values >= num_classes)
    if bool(bad.any()):
        raise ValueError(
            f"{name} holds class indices outside [0, {num_classes}): "
            f"{sorted(set(values[bad].unique().tolist()))[:10]}; map them to train IDs "
            f"0-{num_classes - 1} (or to the ignore index in the target) first"
        )


def confusion_matrix(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel confusion matrix (C, C) int64: rows = ground truth, columns = prediction.

    ``pred`` and ``target`` are integer label maps of one shape (any, e.g. (B, H, W)); pixels whose target is
    ``ignore_index`` or where the bool ``mask`` (same shape) is False are left out.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    _check_integer("pred", pred)
    _check_integer("target", target)
    keep = target != ignore_index
    if mask is not None:
        if mask.shape != target.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of the target's shape {tuple(target.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        keep &= mask.to(keep.device)
    pred, target = pred[keep].long(), target[keep].long()  # (N,) kept pixels
    _check_labels("pred", pred, num_classes)
    _check_labels("target", target, num_classes)
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def class_names(num_classes: int) -> tuple[str, ...]:
    """The Cityscapes class names for 19 classes, ``class_<i>`` otherwise."""
    return (
        CLASSES if num_classes == NUM_CLASSES else tuple(f"class_{i}" for i in range(num_classes))
    )


def eval_subsets(num_classes: int) -> dict[str, tuple[int, ...]]:
    """mIoU subsets: 19 / 16 / 13 (classes.EVAL_SUBSETS) for 19 classes, all classes otherwise."""
    return (
        dict(EVAL_SUBSETS)
        if num_classes == NUM_CLASSES
        else {str(num_classes): tuple(range(num_classes))}
    )


def _nanmean(values: torch.Tensor) -> float:
    """Mean over the non-NaN entries; NaN when all are NaN (as numpy.nanmean, without the warning)."""
    finite = values[~values.isnan()]
    return float(finite.mean()) if finite.numel() else math.nan


def _as_float(value: float) -> float | None:
    """A JSON-safe float: NaN becomes None."""
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True, eq=False)
class SegMetrics:
    """Metrics derived from one confusion matrix; all values are fractions in [0, 1] (NaN = undefined)."""

    confusion: torch.Tensor
    """(C, C) int64 pixel counts, rows = ground truth, columns = prediction (on the CPU)."""
    iou: torch.Tensor
    """(C,) float64 per-class IoU; NaN for a class absent from both ground truth and prediction."""
    acc: torch.Tensor
    """(C,) float64 per-class accuracy (recall); NaN for a class absent from the ground truth."""
    miou: dict[str, float]
    """NaN-mean IoU per evaluation subset name ("19", "16", "13" for Cityscapes classes)."""
    aacc: float
    """Overall pixel accuracy (trace / total)."""
    macc: float
    """NaN-mean of the per-class accuracies."""
    class_names: tuple[str, ...]
    """Name of each class, in train-ID order."""

    def to_dict(self) -> dict:
        """A JSON-able dict (NaN -> None) with per-class values keyed by class name."""
        return {
            "mIoU": {name: _as_float(v) for name, v in self.miou.items()},
            "aAcc": _as_float(self.aacc),
            "mAcc": _as_float(self.macc),
            "IoU": {
                n: _as_float(float(v)) for n, v in zip(self.class_names, self.iou, strict=True)
            },
            "Acc": {
                n: _as_float(float(v)) for n, v in zip(self.class_names, self.acc, strict=True)
            },
            "classes": list(self.class_names),
            "confusion": self.confusion.tolist(),
        }

    def table(self) -> str:
        """A plain-text table of per-class IoU / Acc and the summary metrics, in percent."""
        width = max(len(n) for n in self.class_names)
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
        for name, iou, acc in zip(
            self.class_names, self.iou.tolist(), self.acc.tolist(), strict=True
        ):
            lines.append(f"{name:<{width}}  {_percent(iou)}  {_percent(acc)}")
        lines.append("-" * (width + 16))
        lines += [f"{'mIoU' + k:<{width}}  {_percent(v)}" for k, v in self.miou.items()]
        lines += [
            f"{'mAcc':<{width}}  {_percent(self.macc)}",
            f"{'aAcc':<{width}}  {_percent(self.aacc)}",
        ]
        return "\n".join(lines)


def _percent(value: float) -> str:
    """A fraction as a 6-wide percentage, or a dash for NaN."""
    return f"{'-':>6}" if math.isnan(value) else f"{100 * value:6.2f}"


def seg_metrics(confusion: torch.Tensor) -> SegMetrics:
    """IoU, accuracies and subset mIoUs from a (C, C) confusion matrix (rows = ground truth)."""
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(
            f"confusion must be a square (C, C) matrix, got shape {tuple(confusion.shape)}"
        )
    confusion = confusion.detach().to("cpu", torch.int64)
    counts = confusion.double()
    tp, gt, predicted = counts.diagonal(), counts.sum(1), counts.sum(0)
    iou = tp / (gt + predicted - tp)  # 0 / 0 = NaN for absent classes
    acc = tp / gt
    total = counts.sum()
    subsets = eval_subsets(confusion.shape[0])
    return SegMetrics(
        confusion=confusion,
        iou=iou,
        acc=acc,
        miou={name: _nanmean(iou[list(ids)]) for name, ids in subsets.items()},
        aacc=float(tp.sum() / total) if total > 0 else math.nan,
        macc=_nanmean(acc),
        class_names=class_names(confusion.shape[0]),
    )


class ConfusionMatrix:
    """Streaming confusion-matrix accumulator: ``update`` per batch, ``all_reduce_`` across ranks, ``compute``."""

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Add the pixels of one batch (see ``confusion_matrix`` for the arguments)."""
        batch = confusion_matrix(pred, target, self.num_classes, self.ignore_index, mask)
        self.matrix += batch.to(self.matrix.device)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another accumulator's counts into this one (same classes and ignore index); returns self."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a {other.num_classes}-class (ignore {other.ignore_index}) matrix into a "
                f"{self.num_classes}-class (ignore {self.ignore_index}) one"
            )
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce_(self) -> ConfusionMatrix:
        """Sum the counts over all torch.distributed ranks in place (no-op when not initialised)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        on_cuda = dist.get_backend() == "nccl" and self.matrix.device.type != "cuda"
        matrix = self.matrix.cuda() if on_cuda else self.matrix
        dist.all_reduce(matrix, op=dist.ReduceOp.SUM)
        self.matrix.copy_(matrix)
        return self

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix.zero_()

    def compute(self) -> SegMetrics:
        """The metrics of everything accumulated so far."""
        return seg_metrics(self.matrix)


def boundary_mask(
    label: torch.Tensor,
    width: int,
    ignore_index: int = IGNORE_INDEX,
    ignore_creates_boundary: bool = False,
) -> torch.Tensor:
    """Pixels within ``width`` (Chebyshev distance) of a pixel of another class, as a bool map.

    ``label`` is (H, W) or (B, H, W).  A pixel is marked when some pixel of a different class lies in the
    (2 width + 1)^2 window around it, so both sides of every class boundary get a band ``width`` pixels deep;
    the image border is not a boundary.  Ignore pixels are never marked and, unless
    ``ignore_creates_boundary``, do not make their neighbours boundary pixels either.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1 pixel, got {width}")
    if label.ndim not in (2, 3):
        raise ValueError(f"label must be (H, W) or (B, H, W), got shape {tuple(label.shape)}")
    x = label.reshape(-1, 1, *label.shape[-2:]).float()  # (B, 1, H, W)
    ignored = x == ignore_index
    low = x.masked_fill(ignored, -1.0) if not ignore_creates_boundary else x
    high = x.masked_fill(ignored, float(2**24)) if not ignore_creates_boundary else x
    marked = (_window_max(low, width) != x) | (-_window_max(-high, width) != x)
    return (marked & ~ignored).reshape(label.shape)


def _window_max(x: torch.Tensor, width: int) -> torch.Tensor:
    """Max over the (2 width + 1)^2 window around each pixel (separable; borders padded with -inf)."""
    size = 2 * width + 1
    rows = F.max_pool2d(x, (1, size), stride=1, padding=(0, width))
    return F.max_pool2d(rows, (size, 1), stride=1, padding=(width, 0))
