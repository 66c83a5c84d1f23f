"""What a model says about images, in forms small enough to cache: a compact prediction per image,
the readout at one pixel, per-image confusion and IoU, a whole-split pass, and the bounded
least-recently-used mapping (``collections.OrderedDict``) that keeps them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dida.data.classes import CLASSES, NUM_CLASSES
from dida.evaluate import confusion_matrix, seg_metrics
from dida.explain import feature_cell


class LRU(OrderedDict):
    """An ``OrderedDict`` kept to its ``maxsize`` most recently used keys — or, given ``weigh``
    (value → weight, e.g. bytes), to a total weight of ``maxsize`` (the newest entry always stays);
    ``get`` and ``put`` are atomic, so request threads and background tasks can share one."""

    def __init__(self, maxsize: int, weigh: Callable[[Any], int] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        super().__init__()
        self.maxsize, self._lock = maxsize, threading.Lock()
        self._weigh, self._weights, self.weight = weigh or (lambda _: 1), {}, 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value of ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            if key not in self:
                return default
            self.move_to_end(key)
            return self[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value``; the least recently used entries beyond ``maxsize`` are dropped."""
        with self._lock:
            self.weight -= self._weights.pop(key, 0)
            self[key], self._weights[key] = value, self._weigh(value)
            self.weight += self._weights[key]
            self.move_to_end(key)
            while self.weight > self.maxsize and len(self) > 1:
                old, _ = self.popitem(last=False)
                self.weight -= self._weights.pop(old)


@dataclass(frozen=True)
class ImagePrediction:
    """One model's output on one image, compact enough to keep many in memory."""

    labels: np.ndarray
    """(H, W) uint8 argmax train IDs."""
    probs: np.ndarray
    """(C, H, W) float16 softmax probabilities at 1/255 resolution (``quantize_probs``)."""
    features: torch.Tensor
    """(D, ceil(H/4), ceil(W/4)) float32 decoder features E."""


@dataclass(frozen=True)
class PixelReading:
    """Ground truth or one model at one pixel."""

    source: str
    """Run title or ``"ground truth"``."""
    class_id: int
    """Train ID (255 = ignore)."""
    prob: float | None
    """Probability of ``class_id`` (None for the ground truth)."""
    top: tuple[tuple[int, float], ...] = ()
    """The three most probable (train ID, probability) pairs."""

    @property
    def class_name(self) -> str:
        return CLASSES[self.class_id] if self.class_id < NUM_CLASSES else "ignore"


@dataclass(frozen=True)
class ValPass:
    """One model over the whole val split: predicted labels and per-image confusion matrices."""

    labels: list[np.ndarray]
    """(H, W) uint8 prediction of every val image."""
    confusions: np.ndarray
    """(N, C, C) int64 per-image confusion matrices (rows = ground truth)."""

    def metrics(self) -> dict:
        """Metrics of the whole split (``SegMetrics.to_dict`` format)."""
        return seg_metrics(torch.from_numpy(self.confusions.sum(0))).to_dict()


PROB_LEVELS = 255
"""Probabilities are kept in steps of 1/255 (0.4 %): a uint8 per class and pixel on disk, where they
compress 14x better than float16; in memory and on disk the values are the same."""


def quantize_probs(probs: np.ndarray) -> np.ndarray:
    """(C, H, W) probabilities → uint8 steps of 1/255 (exact for values already on that grid)."""
    return np.rint(np.asarray(probs, dtype=np.float32) * PROB_LEVELS).astype(np.uint8)


def dequantize_probs(steps: np.ndarray) -> np.ndarray:
    """uint8 steps of 1/255 → float16 probabilities."""
    return (steps.astype(np.float32) / PROB_LEVELS).astype(np.float16)


def image_prediction(probs: torch.Tensor, features: torch.Tensor) -> ImagePrediction:
    """Compact prediction of one image from probs (C, H, W) and features (D, h, w); labels are
    the argmax of the exact probabilities."""
    return ImagePrediction(
        labels=probs.argmax(0).to(torch.uint8).cpu().numpy(),
        probs=dequantize_probs(quantize_probs(probs.float().cpu().numpy())),
        features=features.float().cpu(),
    )


def pixel_vectors(
    prediction: ImagePrediction, x: int, y: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(decoder feature E (D,) of the cell under pixel (x, y), teacher probabilities p (C,) at the
    pixel, the cell (row, column)): what the explanation reads, without converting the whole
    image. p: the stored probabilities floored at 1e-6
    and renormalised (the softmax of their logarithms)."""
    cell = feature_cell(x, y, prediction.labels.shape, prediction.features.shape[-2:])
    p = _renormalised(prediction.probs[:, int(y), int(x)])
    return prediction.features[:, cell[0], cell[1]], p, cell


def stored_pixel_vectors(
    steps: np.ndarray, features: np.ndarray, x: int, y: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """``pixel_vectors`` of a stored prediction from its members — (C, H, W) uint8 probability
    steps and (D, h, w) float16 features — converting only the pixel's values (equal results)."""
    cell = feature_cell(x, y, steps.shape[1:], features.shape[-2:])
    feature = torch.from_numpy(features[:, cell[0], cell[1]].astype(np.float32))
    return feature, _renormalised(dequantize_probs(steps[:, int(y), int(x)])), cell


def _renormalised(probs: np.ndarray) -> torch.Tensor:
    """Probabilities floored at 1e-6 and renormalised, as float32."""
    p = torch.from_numpy(probs.astype(np.float32)).clamp_min(1e-6)
    return p / p.sum()


TOP = 3
"""Classes a pixel readout lists."""


def top_classes(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``TOP`` most probable classes of every pixel of (C, ...) probabilities and their
    probabilities, most probable first (ties: the lower train ID first) → ((TOP, ...) uint8,
    (TOP, ...) as ``probs``)."""
    order = np.argsort(-probs.astype(np.float32), axis=0, kind="stable")[:TOP]
    return order.astype(np.uint8), np.take_along_axis(probs, order, axis=0)


def pixel_reading(source: str, prediction: ImagePrediction, x: int, y: int) -> PixelReading:
    """Class, probability and top-3 of ``prediction`` at pixel (x, y)."""
    classes, values = top_classes(prediction.probs[:, y, x])
    return top_reading(source, int(prediction.labels[y, x]), classes, values)


def top_reading(source: str, label: int, classes: np.ndarray, values: np.ndarray) -> PixelReading:
    """A pixel's reading from its predicted class and its (TOP,) most probable classes and
    probabilities (the label is the first of them, or tied with it)."""
    top = tuple((int(c), float(v)) for c, v in zip(classes, values, strict=True))
    return PixelReading(source, label, top[0][1], top)


def image_confusion(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(C, C) int64 confusion matrix of one image (rows = ground truth)."""
    return confusion_matrix(
        torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64))
    ).numpy()


def per_class_iou(pred: np.ndarray, label: np.ndarray) -> dict[str, float | None]:
    """Per-class IoU of one image (None where undefined), keyed by class name."""
    return seg_metrics(torch.from_numpy(image_confusion(pred, label))).to_dict()["IoU"]
