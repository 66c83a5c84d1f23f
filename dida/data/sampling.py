"""Rare Class Sampling (RCS, DAFormer; docs METHOD.md §1.2).

Class frequency ``f_c = n_c / sum(n)`` over the source labels; a class is drawn with
``P(c) = softmax_c((1 - f_c) / T)``, then a source file uniformly among those holding more than
``min_pixels`` pixels of c.  The pipeline re-crops that file until the crop holds more than
``min_pixels * min_crop_ratio`` pixels of c (``dida.data.pipeline.TrainCrops``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dida.data.classes import CLASSES
from dida.data.datasets import ClassStats, DatasetError, class_pixel_totals

log = logging.getLogger(__name__)

# DAFormer's 3000 pixels of a full-resolution 1914x1052 GTA5 label, as a fraction of its area.
GTA5_MIN_PIXELS_FRACTION = 3000 / (1914 * 1052)


def rcs_probabilities(class_pixel_counts: np.ndarray, temperature: float = 0.01) -> np.ndarray:
    """``P(c) = softmax((1 - f_c) / T)`` over classes with pixels; 0 for absent classes.

    ``class_pixel_counts``: (C,) pixels per class.  Returns float64 (C,) summing to 1.
    T -> 0 puts all mass on the rarest class, T -> inf makes present classes uniform.
    """
    counts = np.asarray(class_pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(
            f"class_pixel_counts must be a non-negative (C,) vector with pixels, got {counts}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    present = counts > 0
    logits = (1.0 - counts[present] / counts.sum()) / temperature
    weights = np.exp(logits - logits.max())
    probs = np.zeros_like(counts)
    probs[present] = weights / weights.sum()
    return probs


@dataclass
class RCSConfig:
    """Rare Class Sampling knobs (DAFormer defaults)."""

    temperature: float = 0.01
    """T of the class softmax; smaller favours rare classes more."""
    min_pixels: int = 3000
    """A file is eligible for class c when it holds more than this many c pixels (full size)."""
    min_pixels_fraction: float | None = None
    """When set, replaces ``min_pixels`` by this fraction of the label area, for data smaller than
    GTA5 (``GTA5_MIN_PIXELS_FRACTION`` ~ 0.0015 reproduces DAFormer's 3000 px at 1914x1052)."""
    min_crop_ratio: float = 0.5
    """A crop is kept once it holds more than ``min_pixels * min_crop_ratio`` pixels of c."""
    max_recrops: int = 10
    """Crop re-draws before keeping the last crop regardless."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(
                f"RCSConfig.temperature must be > 0 (DAFormer: 0.01), got {self.temperature}"
            )
        if self.min_pixels < 0:
            raise ValueError(
                f"RCSConfig.min_pixels must be >= 0 (DAFormer: 3000), got {self.min_pixels}"
            )
        if self.min_pixels_fraction is not None and not 0 <= self.min_pixels_fraction < 1:
            raise ValueError(
                f"RCSConfig.min_pixels_fraction must be in [0, 1) or None, "
                f"got {self.min_pixels_fraction}"
            )
        if not 0 <= self.min_crop_ratio <= 1:
            raise ValueError(
                f"RCSConfig.min_crop_ratio must be in [0, 1], got {self.min_crop_ratio}"
            )
        if self.max_recrops < 0:
            raise ValueError(f"RCSConfig.max_recrops must be >= 0, got {self.max_recrops}")

    def file_min_pixels(self, label_area: int | None = None) -> int:
        """Pixels of c a file needs to be eligible; a fraction needs ``label_area`` (H*W)."""
        if self.min_pixels_fraction is None:
            return self.min_pixels
        if label_area is None:
            raise ValueError("RCSConfig.min_pixels_fraction is set: pass the label area (H*W)")
        return round(self.min_pixels_fraction * label_area)


class RareClassSampler:
    """Draws (class, dataset index) pairs for RCS from class statistics.

    ``label_files`` are the dataset's label files in item order (``dataset.label_files``); stats
    entries are matched to them by basename, as DAFormer does.  Classes present in the statistics
    but with no eligible file are left out (probabilities renormalised) and listed in ``dropped``.
    """

    def __init__(
        self,
        stats: ClassStats,
        label_files: Sequence[str | Path],
        config: RCSConfig | None = None,
        label_area: int | None = None,
    ) -> None:
        self.config = config or RCSConfig()
        self.min_pixels = self.config.file_min_pixels(label_area)
        self.crop_min_pixels = self.min_pixels * self.config.min_crop_ratio
        probs = rcs_probabilities(class_pixel_totals(stats), self.config.temperature)
        self.files = _eligible_files(stats, label_files, self.min_pixels)
        self.dropped = tuple(int(c) for c in np.flatnonzero(probs) if not self.files.get(int(c)))
        if self.dropped:
            log.warning("RCS: no file has > %d pixels of %s", self.min_pixels, self.dropped)
            probs[list(self.dropped)] = 0.0
        if probs.sum() == 0:
            raise DatasetError(
                f"RCS: no file holds more than {self.min_pixels} pixels of any class; lower "
                f"RCSConfig.min_pixels or min_pixels_fraction"
            )
        self.classes = np.flatnonzero(probs)
        self.probs = probs[self.classes] / probs[self.classes].sum()

    def class_probabilities(self) -> dict[str, float]:
        """``{class name: P(c)}`` of the classes that can be drawn."""
        return {CLASSES[c]: float(p) for c, p in zip(self.classes, self.probs, strict=True)}

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        """(class c ~ P, dataset index uniform among files eligible for c); deterministic in rng."""
        c = int(self.classes[rng.choice(len(self.classes), p=self.probs)])
        indices = self.files[c]
        return c, int(indices[rng.integers(len(indices))])


def _eligible_files(
    stats: ClassStats, label_files: Sequence[str | Path], min_pixels: int
) -> dict[int, list[int]]:
    """``{class: [dataset index, ...]}`` of files holding more than ``min_pixels`` of the class."""
    index_of = {Path(f).name: i for i, f in enumerate(label_files)}
    files: dict[int, list[int]] = {}
    for entry in stats:
        name = Path(entry["file"]).name
        if name not in index_of:
            raise DatasetError(
                f"class statistics list {entry['file']} which is not in the dataset; "
                f"recompute them (dida.data.datasets.load_class_stats)"
            )
        for key, count in entry.items():
            if key != "file" and count > min_pixels:
                files.setdefault(int(key), []).append(index_of[name])
    return files
