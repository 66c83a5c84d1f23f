"""Whole-split passes: one run's model over every val image (in the background, one image at a time
through the inference gate, so requests go first), its metrics, and the per-image scores of two
runs that the Compare gallery sorts by."""

from __future__ import annotations

import numpy as np
import torch

from dida.analysis import ImageScores, per_image_scores
from dida.inference import predict_image
from dida.studio.catalog import RunCatalog
from dida.studio.images import ValImages
from dida.studio.predictions import ValPass, image_confusion
from dida.studio.work import InferenceGate, Tasks


class ValPasses:
    """Val passes keyed by (run, weights stamp): computed once per checkpoint, read by key."""

    def __init__(
        self, catalog: RunCatalog, images: ValImages, gate: InferenceGate, tasks: Tasks
    ) -> None:
        self.catalog, self.images, self.gate, self.tasks = catalog, images, gate, tasks
        self._progress: dict[str, int] = {}

    def get(self, run_id: str, start: bool = True) -> ValPass | None:
        """The run over every val image (None until computed; ``start`` queues it)."""
        key = ("val-pass", run_id, self.catalog.model_stamp(run_id))
        result = self.tasks.result(key)
        if result is None and start:
            self.tasks.submit(key, lambda: self._compute(run_id))
        return result

    def _compute(self, run_id: str) -> ValPass:
        """One image at a time through the gate, yielding to requests; stops when closing."""
        model, labels, confusions = self.catalog.model(run_id), [], []
        for i in range(len(self.images.val)):
            if self.tasks.closing.is_set():
                raise RuntimeError("the studio is shutting down")
            item = self.images.item(i)
            with self.gate.hold(batch=True):
                pred = predict_image(model, item["image"]).labels[0].to(torch.uint8).numpy()
            labels.append(pred)
            confusions.append(image_confusion(pred, item["label"]))
            self._progress[run_id] = i + 1
        return ValPass(labels, np.stack(confusions))

    def progress(self, run_id: str) -> tuple[int, int]:
        """(images done, images in the val split) of the run's val pass."""
        total = len(self.images.val)
        return (total if self.get(run_id, start=False) else self._progress.get(run_id, 0)), total

    def metrics(self, run_id: str) -> dict | None:
        """Whole-val metrics: from a finished val pass, else the run's last evaluation record."""
        passed = self.get(run_id, start=False)
        if passed is not None:
            return passed.metrics()
        evals = self.catalog.metrics(run_id, "eval")
        return evals[-1] if evals else None

    def image_scores(self, run_a: str, run_b: str) -> ImageScores | None:
        """Per-image mIoU of b minus a on every val image (None until both val passes are done)."""
        passes = [self.get(run_a), self.get(run_b)]
        if any(p is None for p in passes):
            return None
        labels = (self.images.item(i)["label"] for i in range(len(self.images.val)))
        return per_image_scores(passes[0].labels, passes[1].labels, labels)
