"""Per-image scores and the dataset confusion matrix of one model on the val split, as a small file.

A :class:`ScoreTable` holds, per val image, the mIoU, the overlap IoU (mIoU on the overlap band),
the boundary IoU (mIoU near class boundaries) and the per-class IoU, plus the summed confusion
matrix. ``dida.bench.ship`` writes one beside each shipped checkpoint (``scores.npz``); the studio
reads those at once and computes the same for other runs in the background, cached on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dida import runs
from dida.analysis import boundary_iou, overlap_iou, spread
from dida.data.classes import NUM_CLASSES
from dida.evaluate import confusion_matrix, seg_metrics
from dida.inference import predict_image
from dida.model import SegModel

SCORES_FILE = "scores.npz"
"""File name of a checkpoint's score table (beside ``model.safetensors``)."""


@dataclass(frozen=True, eq=False)
class ScoreTable:
    """One model's per-image scores on a val split (fractions, NaN = undefined)."""

    names: tuple[str, ...]
    """Val image names, in split order."""
    miou: np.ndarray
    """(N,) per-image mIoU over the classes present in gt or prediction."""
    overlap_iou: np.ndarray
    """(N,) mIoU on the overlap band (NaN: no overlap or no instance map)."""
    boundary_iou: np.ndarray
    """(N,) mIoU within 3 pixels of a ground-truth class boundary."""
    class_iou: np.ndarray
    """(N, C) per-class IoU of each image (NaN: class absent from gt and prediction)."""
    confusion: np.ndarray
    """(C, C) int64 pixel counts summed over the split (rows = ground truth)."""
    meta: dict = field(default_factory=dict)
    """Provenance: model file digest, iteration, data root."""

    def metrics(self) -> dict:
        """Whole-split metrics from the confusion matrix (``SegMetrics.to_dict`` format)."""
        return seg_metrics(torch.from_numpy(self.confusion)).to_dict()

    def save(self, path: str | Path) -> Path:
        """Write the table as a compressed ``.npz`` (float32 scores); returns the path."""
        path, buffer = Path(path), _npz_bytes(self)
        runs.atomic_write_bytes(path, buffer)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoreTable:
        """Read a table written by ``save``; a ValueError names a file that is not one."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                return cls(
                    tuple(str(n) for n in data["names"]),
                    *(data[k].astype(np.float64) for k in _SCORE_KEYS),
                    data["confusion"].astype(np.int64),
                    json.loads(str(data["meta"])),
                )
        except (KeyError, OSError, ValueError) as err:
            raise ValueError(f"{path} is not a score table ({err!r}); regenerate it") from err


_SCORE_KEYS = ("miou", "overlap_iou", "boundary_iou", "class_iou")


def _npz_bytes(table: ScoreTable) -> bytes:
    buffer = io.BytesIO()
    arrays = {k: np.asarray(getattr(table, k), np.float32) for k in _SCORE_KEYS}
    np.savez_compressed(
        buffer, names=np.array(table.names), confusion=table.confusion.astype(np.int64),
        meta=np.array(json.dumps(table.meta)), **arrays,
    )  # fmt: skip
    return buffer.getvalue()


def image_row(pred: np.ndarray, label: np.ndarray, instance: np.ndarray | None) -> dict:
    """Scores of one prediction: miou, overlap_iou, boundary_iou, class_iou (C,), confusion (C, C)."""
    counts = confusion_matrix(
        torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64))
    )
    iou = seg_metrics(counts).iou.numpy()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else np.nan,
        "overlap_iou": np.nan if instance is None else overlap_iou(pred, label, instance),
        "boundary_iou": boundary_iou(pred, label),
        "class_iou": iou,
        "confusion": counts.numpy(),
    }


def table_from_rows(names: Sequence[str], rows: Sequence[dict], meta: dict) -> ScoreTable:
    """A ScoreTable of ``image_row`` results in split order."""
    if not rows:
        empty = np.zeros(0)
        classes = np.zeros((0, NUM_CLASSES))
        zeros = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        return ScoreTable(tuple(names), empty, empty, empty, classes, zeros, meta)
    scalars = [np.array([r[k] for r in rows], np.float64) for k in _SCORE_KEYS[:3]]
    class_iou = np.stack([r["class_iou"] for r in rows])
    confusion = np.sum([r["confusion"] for r in rows], axis=0).astype(np.int64)
    return ScoreTable(tuple(names), *scalars, class_iou, confusion, meta)


def score_dataset(
    predict: Callable[[np.ndarray], np.ndarray],
    dataset: Sequence[dict],
    meta: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> ScoreTable:
    """Score ``predict`` (uint8 image → (H, W) train IDs) on every labelled item of ``dataset``;
    ``progress(done)`` is called after each image (it may raise to stop)."""
    names, rows = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        rows.append(image_row(predict(item["image"]), item["label"], item.get("instance")))
        names.append(str(item["name"]))
        if progress is not None:
            progress(i + 1)
    return table_from_rows(names, rows, meta or {})


def model_predictor(model: SegModel) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (H, W, 3) image → (H, W) uint8 argmax train IDs, as the studio predicts."""

    def predict(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return predict_image(model, image).labels[0].to(torch.uint8).numpy()

    return predict


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (the model weights a score table belongs to)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(table: ScoreTable, names: Sequence[str], model_file: Path) -> bool:
    """Whether ``table`` scores exactly these val images with these weights."""
    same_images = list(table.names) == list(names)
    return same_images and table.meta.get("model_sha256") == file_digest(model_file)


@dataclass(frozen=True)
class ScoreComparison:
    """Per-image scores of several runs side by side (values in percent, None = undefined)."""

    headers: list[str]
    """``index``, ``image``, each run's mIoU and overlap IoU, each later run's mIoU gain over
    the first run, and the overlap IoU spread (max − min over the runs)."""
    rows: list[list]
    """One row per val image."""


def _pct(value: float) -> float | None:
    return None if not np.isfinite(value) else round(100.0 * float(value), 1)


def compare_tables(titles: Sequence[str], tables: Sequence[ScoreTable]) -> ScoreComparison:
    """The per-image table across runs (``titles[i]`` names ``tables[i]``; same val split)."""
    first = tables[0]
    columns = [t.miou for t in tables] + [t.overlap_iou for t in tables]
    columns += [t.miou - first.miou for t in tables[1:]]
    columns.append(spread(np.stack([t.overlap_iou for t in tables])))
    headers = ["index", "image"] + [f"{t} mIoU" for t in titles]
    headers += [f"{t} overlap IoU" for t in titles]
    headers += [f"{t} − {titles[0]} mIoU" for t in titles[1:]] + ["overlap IoU spread"]
    rows = [[i, name, *(_pct(c[i]) for c in columns)] for i, name in enumerate(first.names)]
    return ScoreComparison(headers, rows)


def sort_rows(rows: list[list], column: int, descending: bool = True) -> list[list]:
    """``rows`` by one column (None last), ties in input order."""
    present = [r for r in rows if r[column] is not None]
    missing = [r for r in rows if r[column] is None]
    return sorted(present, key=lambda r: r[column], reverse=descending) + missing
