"""What the Compare views read of predictions — labels, pixel readouts, per-image IoU — at the
cost of what they need: from the in-memory prediction, else only the needed members of the disk
cache's file (labels; labels and each pixel's top 3; one pixel's probabilities and feature), else a
full prediction.

:class:`Readings` is a mixin of :class:`dida.studio.studio.Studio`: it uses the host's prediction
cache (``_predictions``, ``_memory_key``, ``results``, ``_result_ids``, ``predict``), ``run``, ``model_stamp`` and
``item``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dida.inference import Progress
from dida.studio.images import ImageKey
from dida.studio.predictions import PixelReading, per_class_iou, pixel_reading, pixel_vectors


class Readings:
    """Labels, readouts and per-image IoU of runs' predictions; mixed into ``Studio``."""

    def labels(self, run_id: str, key: ImageKey, progress: Progress | None = None) -> np.ndarray:
        """The run's predicted train IDs (H, W) on an image: from the in-memory prediction, else
        only the labels of the disk cache's file (what the label views of Compare need, without
        decompressing probabilities and features), else ``predict``."""
        cached = self._predictions.get(self._memory_key(run_id, key))
        if cached is not None:
            return cached.labels
        if not isinstance(key, str):
            stored = self.results.labels(*self._result_ids(run_id, key))
            if stored is not None:
                return stored
        return self.predict(run_id, key, progress=progress).labels

    def readout(self, run_ids: Sequence[str], key: ImageKey, x: int, y: int) -> list[PixelReading]:
        """Ground truth (when labelled) and every run's class and probability at pixel (x, y)."""
        item = self.item(key)
        h, w = item["image"].shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"pixel ({x}, {y}) is outside the {w}x{h} image")
        readings = []
        if item["label"] is not None:
            readings.append(PixelReading("ground truth", int(item["label"][y, x]), None))
        return readings + [self._reading(rid, key, x, y) for rid in run_ids]

    def _reading(self, run_id: str, key: ImageKey, x: int, y: int) -> PixelReading:
        """One run's reading: from the in-memory prediction, else from the top-3 of the disk
        cache's file (no whole probabilities decompressed), else from ``predict``."""
        title = self.run(run_id).title
        cached = self._predictions.get(self._memory_key(run_id, key))
        if cached is None and not isinstance(key, str):
            stored = self.results.top(*self._result_ids(run_id, key))
            if stored is not None:
                return stored.reading(title, x, y)
        prediction = self.predict(run_id, key) if cached is None else cached
        return pixel_reading(title, prediction, x, y)

    def pixel_vectors(
        self, run_id: str, key: ImageKey, x: int, y: int
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``pixel_vectors`` (feature, teacher probabilities, cell) of the run's prediction at pixel
        (x, y): from the in-memory prediction, else from the disk cache's probabilities and features
        (only the pixel converted), else from ``predict``."""
        cached = self._predictions.get(self._memory_key(run_id, key))
        if cached is None and not isinstance(key, str):
            stored = self.results.pixel(*self._result_ids(run_id, key), x, y)
            if stored is not None:
                return stored
        return pixel_vectors(self.predict(run_id, key) if cached is None else cached, x, y)

    def image_iou(
        self, run_ids: Sequence[str], key: ImageKey
    ) -> dict[str, dict[str, float | None]]:
        """Per-class IoU of each run on one labelled image: ``{run_id: {class: IoU}}``."""
        label = self.item(key)["label"]
        if label is None:
            raise ValueError("an uploaded image has no ground truth, so no IoU")
        return {rid: per_class_iou(self.labels(rid, key), label) for rid in run_ids}
