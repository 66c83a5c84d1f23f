"""Whole-split passes: one run's model over every val image (in the background, one image at a time
through the inference gate, so requests go first), its metrics, and the per-image scores the
Compare gallery sorts by. Score tables (``dida.scores``) come from the file shipped beside a
checkpoint when it matches the weights and the val split, else from the disk cache
(``<data>/.studio/scores/<run>-<weights stamp>.npz``), else from a background pass (batch lane)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from dida import runs
from dida.analysis import OVERLAP_WIDTH, ImageScores, pair_scores, pair_types, spread
from dida.data.overlap import overlap_mask
from dida.inference import predict_image
from dida.scores import SCORES_FILE, ScoreTable, image_row, matches, table_from_rows
from dida.studio.catalog import RunCatalog
from dida.studio.images import ImageKey, ValImages
from dida.studio.predictions import ValPass, image_confusion
from dida.studio.work import InferenceGate, Tasks


class ValPasses:
    """Val passes keyed by (run, weights stamp): computed once per checkpoint, read by key."""

    def __init__(
        self, catalog: RunCatalog, images: ValImages, gate: InferenceGate, tasks: Tasks
    ) -> None:
        self.catalog, self.images, self.gate, self.tasks = catalog, images, gate, tasks
        self._progress: dict[str, int] = {}
        self._tables: dict[tuple[str, int], ScoreTable] = {}
        self._scored: dict[str, int] = {}

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
        """Whole-val metrics: from a score table or a finished val pass, else the run's last
        evaluation record."""
        table = self.scores(run_id, start=False)
        if table is not None:
            return table.metrics()
        passed = self.get(run_id, start=False)
        if passed is not None:
            return passed.metrics()
        evals = self.catalog.metrics(run_id, "eval")
        return evals[-1] if evals else None

    def metrics_origin(self, run_id: str) -> str | None:
        """None when ``metrics`` are this val split's (a score table, a finished pass, or a
        training evaluation on this very split); else where they come from: the run's last
        training evaluation on another folder's val split or on its first images only."""
        if self.scores(run_id, start=False) is not None or self.get(run_id, start=False):
            return None
        evals = self.catalog.metrics(run_id, "eval")
        path = self.catalog.run(run_id).path / runs.CONFIG
        data = (runs.read_json(path) if path.exists() else {}).get("data", {})
        root, first = data.get("target_root"), data.get("val_images")
        here = root is not None and Path(root).resolve() == Path(self.images.data_root).resolve()
        if not evals or (here and (not first or first >= len(self.images.val))):
            return None
        where = f"val split of {root}" if root else "the val split it trained with"
        if here:
            where = f"first {first} images of this val split"
        return f"its training evaluation at iteration {evals[-1].get('it', '?')} ({where})"

    def image_scores(self, run_a: str, run_b: str) -> ImageScores | None:
        """Per-image mIoU of b minus a on every val image (None until both score tables exist)."""
        tables = [self.scores(run_a), self.scores(run_b)]
        if any(t is None for t in tables):
            return None
        return pair_scores(tables[0].class_iou, tables[1].class_iou)

    # --- score tables ----------------------------------------------------------------------

    def scores(self, run_id: str, start: bool = True) -> ScoreTable | None:
        """The run's per-image scores and confusion matrix: shipped or cached at once, else None
        while a background pass computes them (``start`` queues it)."""
        stamp = self.catalog.model_stamp(run_id)
        table = self._tables.get((run_id, stamp)) or self._stored(run_id, stamp)
        if table is not None:
            self._tables[(run_id, stamp)] = table
            return table
        key = ("scores", run_id, stamp)
        table = self.tasks.result(key)
        if table is None and start:
            self.tasks.submit(key, lambda: self._score(run_id, stamp))
        return table

    def scores_state(self, run_id: str) -> str | None:
        """State of the run's background score pass (None when never started or not needed)."""
        return self.tasks.state(("scores", run_id, self.catalog.model_stamp(run_id)))

    def cache_path(self, run_id: str, stamp: int) -> Path:
        """Where a computed score table of these weights is cached."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)
        return self.images.cache_dir / "scores" / f"{safe}-{stamp}.npz"

    def _stored(self, run_id: str, stamp: int) -> ScoreTable | None:
        """The shipped table when it matches the weights and split, else a cached one."""
        names = [s.name for s in self.images.val.samples]
        folder = self.catalog.run(run_id).path
        shipped = _read(folder / SCORES_FILE)
        if shipped is not None and matches(shipped, names, folder / runs.MODEL):
            return shipped
        cached = _read(self.cache_path(run_id, stamp))
        return cached if cached is not None and list(cached.names) == names else None

    def _score(self, run_id: str, stamp: int) -> ScoreTable:
        """One image at a time through the gate (requests first), then cached on disk."""
        model, rows, names = self.catalog.model(run_id), [], []
        for i in range(len(self.images.val)):
            if self.tasks.closing.is_set():
                raise RuntimeError("the studio is shutting down")
            item = self.images.item(i)
            with self.gate.hold(batch=True), torch.no_grad():
                pred = predict_image(model, item["image"]).labels[0].to(torch.uint8).numpy()
            rows.append(image_row(pred, item["label"], item.get("instance")))
            names.append(str(item["name"]))
            self._scored[run_id] = i + 1
        table = table_from_rows(names, rows, {"run": run_id, "model_mtime_ns": stamp})
        table.save(self.cache_path(run_id, stamp))
        return table

    def scores_progress(self, run_id: str) -> tuple[int, int]:
        """(images done, images in the val split) of the run's score pass."""
        total = len(self.images.val)
        done = self.scores(run_id, start=False) is not None
        return (total if done else self._scored.get(run_id, 0)), total

    # --- overlaps --------------------------------------------------------------------------

    def pair_types(self) -> dict[str, list[int]] | None:
        """Val indices per overlap pair type (``"person–car"``), most frequent first; None until
        the overlap index exists (``ValImages.index_overlaps`` builds it in the background)."""
        index = self.images.overlap_index()
        return None if index is None else pair_types(index)

    def overlap_mask(self, key: ImageKey) -> np.ndarray | None:
        """(H, W) bool overlap band of a val image (None for an upload or without instance map)."""
        instance = self.images.item(key).get("instance")
        return None if instance is None else overlap_mask(instance, OVERLAP_WIDTH)

    def disagreement(self, run_ids: list[str]) -> np.ndarray | None:
        """(N,) spread (max − min) of the overlap IoU across ``run_ids`` per val image (NaN where
        fewer than two runs have a value); None until every run's score table exists."""
        tables = [self.scores(r) for r in run_ids]
        if len(tables) < 2 or any(t is None for t in tables):
            return None
        return spread(np.stack([t.overlap_iou for t in tables]))


def _read(path: Path) -> ScoreTable | None:
    """A score table from disk, or None when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return ScoreTable.load(path)
    except ValueError:
        return None
