"""Bank slots and feature points for the Instance bank and UMAP views: slot tables, sampled pixel
features, and point sets coloured by domain, class, correctness and age."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dida.bank import BankSnapshot
from dida.data.classes import CLASSES, IGNORE_INDEX
from dida.model import SegModel
from dida.studio.predictions import ImagePrediction


def slot_rows(snapshot: BankSnapshot, changed_only: bool = False) -> list[dict[str, Any]]:
    """One dict per slot: slot, class, age, last write, changed, source image, box."""
    written = snapshot.ages.long()
    ages = torch.where(written >= 0, snapshot.iteration - written, -1)
    rows = []
    for k in range(len(snapshot.labels)):
        changed = bool(snapshot.changed[k])
        if changed_only and not changed:
            continue
        box = None if snapshot.boxes is None else [int(v) for v in snapshot.boxes[k]]
        rows.append(
            {
                "slot": k,
                "class": CLASSES[int(snapshot.labels[k])],
                "age": int(ages[k]),
                "written_at": int(snapshot.ages[k]),
                "changed": changed,
                "source_id": int(snapshot.source_ids[k]),
                "box": box if box and min(box) >= 0 else None,
            }
        )
    return rows


def sample_pixel_features(
    prediction: ImagePrediction, label: np.ndarray | None, count: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Up to ``count`` random feature-grid pixels of one image: ``features`` (n, D) float32,
    ``pred`` (n,) and ``gt`` (n,) train IDs at those pixels (gt = 255 without a label), and the
    pixels ``x`` (n,), ``y`` (n,) in the image (the centre of each feature cell)."""
    feats = prediction.features  # (D, h, w)
    d, h, w = feats.shape
    rng = np.random.default_rng(seed)
    cells = rng.choice(h * w, size=min(count, h * w), replace=False)
    ys, xs = cells // w, cells % w
    full_h, full_w = prediction.labels.shape
    py = np.minimum(ys * 4 + 2, full_h - 1)
    px = np.minimum(xs * 4 + 2, full_w - 1)
    gt = np.full(len(cells), IGNORE_INDEX) if label is None else label[py, px].astype(np.int64)
    return {
        "features": feats.reshape(d, -1)[:, cells].T.numpy().astype(np.float32),
        "pred": prediction.labels[py, px].astype(np.int64),
        "gt": gt,
        "x": px.astype(np.int64),
        "y": py.astype(np.int64),
    }


@dataclass(frozen=True)
class PointSet:
    """Feature vectors to project, with what the UMAP view colours and hovers by."""

    features: np.ndarray
    """(N, D) float32."""
    domain: np.ndarray
    """(N,) str: ``"bank (source)"`` or ``"target pixel"``."""
    label: np.ndarray
    """(N,) int64 slot class / ground-truth class (255 = unknown)."""
    pred: np.ndarray
    """(N,) int64 class the model's classifier gives the feature."""
    age: np.ndarray
    """(N,) int64 iterations since a slot's last write (-1: never written, or a pixel)."""
    slot: np.ndarray
    """(N,) int64 slot index (-1 for pixels)."""
    x: np.ndarray
    """(N,) int64 column of a target pixel in its image (-1 for slots)."""
    y: np.ndarray
    """(N,) int64 row of a target pixel in its image (-1 for slots)."""

    @property
    def correct(self) -> np.ndarray:
        """(N,) str: classifier agrees with the label, disagrees, or no label."""
        known = self.label != IGNORE_INDEX
        return np.where(~known, "unlabelled", np.where(self.pred == self.label, "correct", "wrong"))


def classify_features(model: SegModel, features: torch.Tensor) -> np.ndarray:
    """The model's 1x1 classifier on decoder features (N, D) → (N,) train IDs."""
    head = model.decode_head.conv_seg
    with torch.no_grad():
        x = features.float().to(head.weight.device)[:, :, None, None]  # (N, D, 1, 1)
        return head(x)[:, :, 0, 0].argmax(1).cpu().numpy()


def bank_points(snapshot: BankSnapshot, model: SegModel) -> PointSet:
    """The K slots of a snapshot as points (pred = the classifier's class of each slot feature)."""
    ages = snapshot.ages.long()
    return PointSet(
        features=snapshot.features.float().numpy(),
        domain=np.full(len(ages), "bank (source)"),
        label=snapshot.labels.long().numpy(),
        pred=classify_features(model, snapshot.features),
        age=torch.where(ages >= 0, snapshot.iteration - ages, -1).numpy(),
        slot=np.arange(len(ages)),
        x=np.full(len(ages), -1),
        y=np.full(len(ages), -1),
    )


def pixel_points(sample: dict[str, np.ndarray]) -> PointSet:
    """Sampled target pixels (``sample_pixel_features``) as points."""
    n = len(sample["pred"])
    return PointSet(
        features=sample["features"],
        domain=np.full(n, "target pixel"),
        label=sample["gt"],
        pred=sample["pred"],
        age=np.full(n, -1),
        slot=np.full(n, -1),
        x=sample["x"],
        y=sample["y"],
    )


def join_points(a: PointSet, b: PointSet) -> PointSet:
    """Concatenate two point sets (same feature width)."""
    return PointSet(
        *(np.concatenate([getattr(a, f), getattr(b, f)]) for f in PointSet.__dataclass_fields__)
    )
