"""Analyses behind the app's views: long tail, IoU vs frequency, per-image scores, 2-D projections.

* ``long_tail`` — per-class pixel and image fractions of source and target from DAFormer-format class
  statistics (``dida.data.datasets.load_class_stats`` / ``compute_class_stats``).
* ``iou_vs_frequency`` — per-class IoU of several runs against the class pixel frequency.
* ``per_image_miou`` / ``per_image_scores`` — per-image mIoU and the difference between two methods,
  to sort images by where one method beats the other; ``pair_scores`` the same from stored per-class
  IoUs; ``overlap_iou`` / ``boundary_iou`` the mIoU on the overlap band / near class boundaries;
  ``pair_types`` the images per overlap pair type; ``spread`` where methods disagree.
* ``Projector`` — a stable 2-D map of bank (or pixel) features: UMAP (umap-learn, imported lazily
  because importing it compiles with numba for seconds) fitted once and then used to ``transform``
  later snapshots, and a PCA basis as the instant fallback; results cached per key.
* ``slot_table`` — per-class bank slot counts, ages and changes of one snapshot.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dida.bank import BankSnapshot
from dida.data.classes import CLASSES, NUM_CLASSES, class_index
from dida.data.datasets import ClassStats, class_image_counts, class_pixel_totals
from dida.data.overlap import OverlapIndex, overlap_mask
from dida.evaluate import SegMetrics, boundary_mask, confusion_matrix

# ---------------------------------------------------------------------------------------------
# Long tail


@dataclass(frozen=True)
class LongTail:
    """Class frequencies of source and target, every array in ``order`` (most frequent first)."""

    order: tuple[int, ...]
    """Train IDs sorted by source pixel fraction, descending (ties by train ID)."""
    source_pixels: np.ndarray
    """(C,) fraction of all labelled source pixels."""
    source_images: np.ndarray
    """(C,) fraction of source label files containing the class."""
    target_pixels: np.ndarray | None
    """(C,) as ``source_pixels`` for the target, None without target statistics."""
    target_images: np.ndarray | None
    """(C,) as ``source_images`` for the target."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(CLASSES[c] for c in self.order)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-able dict per class, in ``order``."""
        columns = {
            "source_pixels": self.source_pixels,
            "source_images": self.source_images,
            "target_pixels": self.target_pixels,
            "target_images": self.target_images,
        }
        return [
            {"train_id": c, "class": CLASSES[c]}
            | {k: None if v is None else float(v[i]) for k, v in columns.items()}
            for i, c in enumerate(self.order)
        ]


def class_fractions(stats: ClassStats, name: str = "stats") -> tuple[np.ndarray, np.ndarray]:
    """(pixel fraction (C,), image fraction (C,)) in train-ID order from DAFormer-format stats."""
    if not stats:
        raise ValueError(f"{name} lists no label files; compute them with load_class_stats")
    pixels = class_pixel_totals(stats).astype(np.float64)
    if pixels.sum() == 0:
        raise ValueError(f"{name} count no labelled pixel (all ignore); check the label files")
    return pixels / pixels.sum(), class_image_counts(stats) / len(stats)


def long_tail(source_stats: ClassStats, target_stats: ClassStats | None = None) -> LongTail:
    """Per-class pixel and image fractions in both domains, sorted by source pixel frequency."""
    source_pixels, source_images = class_fractions(source_stats, "source_stats")
    order = np.argsort(-source_pixels, kind="stable")
    target = None if target_stats is None else class_fractions(target_stats, "target_stats")
    return LongTail(
        order=tuple(int(c) for c in order),
        source_pixels=source_pixels[order],
        source_images=source_images[order],
        target_pixels=None if target is None else target[0][order],
        target_images=None if target is None else target[1][order],
    )


def _class_ious(metrics: SegMetrics | Mapping[str, Any], run: str) -> np.ndarray:
    """(C,) IoU per train ID (NaN = undefined) from SegMetrics or its ``to_dict()`` record."""
    if isinstance(metrics, SegMetrics):
        return metrics.iou.numpy().astype(np.float64)
    if "IoU" not in metrics:
        raise ValueError(f"metrics of run {run!r} lack 'IoU'; pass SegMetrics or its to_dict()")
    ious = np.full(NUM_CLASSES, np.nan)
    for name, value in metrics["IoU"].items():
        ious[class_index(name)] = np.nan if value is None else float(value)
    return ious


def iou_vs_frequency(
    per_run_metrics: Mapping[str, SegMetrics | Mapping[str, Any]], class_pixels: np.ndarray
) -> list[dict[str, Any]]:
    """Rows {run, train_id, class, pixel_fraction, iou} for every run and class.

    ``class_pixels`` (C,) are pixel counts (or fractions), e.g. ``class_pixel_totals`` of the
    source; rows are sorted by frequency, most frequent first, runs in the given order; an
    undefined IoU is NaN.
    """
    pixels = np.asarray(class_pixels, dtype=np.float64)
    if pixels.shape != (NUM_CLASSES,) or pixels.sum() <= 0 or (pixels < 0).any():
        raise ValueError(f"class_pixels must be {NUM_CLASSES} non-negative counts, got {pixels}")
    fractions = pixels / pixels.sum()
    ious = {run: _class_ious(m, run) for run, m in per_run_metrics.items()}
    return [
        {"run": run, "train_id": int(c), "class": CLASSES[c],
         "pixel_fraction": float(fractions[c]), "iou": float(iou[c])}
        for c in np.argsort(-fractions, kind="stable")
        for run, iou in ious.items()
    ]  # fmt: skip


RARE_PIXEL_FRACTION = 0.01
"""A class is "rare" in a split when it covers less than this fraction of its labelled pixels."""


def rare_classes(pixels: np.ndarray, fraction: float = RARE_PIXEL_FRACTION) -> list[int]:
    """Train IDs present but below ``fraction`` of all labelled pixels, rarest first."""
    total = max(int(pixels.sum()), 1)
    rare = [c for c in range(len(pixels)) if 0 < pixels[c] < fraction * total]
    return sorted(rare, key=lambda c: pixels[c])


# ---------------------------------------------------------------------------------------------
# Per-image scores

OVERLAP_WIDTH = 3
"""Band width (pixels) of the overlap and boundary masks, as the overlap index counts them."""


def _label_tensor(values: Any) -> torch.Tensor:
    return (
        values.detach().cpu()
        if isinstance(values, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(values))
    )


def class_ious(
    pred: Any, gt: Any, num_classes: int = NUM_CLASSES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU (C,) float64 of one image (NaN where 0/0) and ``present`` (C,): the class
    occurs in gt or in the prediction at labelled pixels."""
    counts = confusion_matrix(_label_tensor(pred), _label_tensor(gt), num_classes).double()
    tp = counts.diagonal()
    union = counts.sum(0) + counts.sum(1) - tp
    return tp / union, union > 0


def _mean_over(iou: torch.Tensor, present: torch.Tensor, chosen: torch.Tensor) -> float:
    """Mean IoU over ``chosen`` classes; a chosen class absent from gt and prediction counts 1."""
    if not bool(chosen.any()):
        return math.nan
    return float(torch.where(present, iou, 1.0)[chosen].mean())


def per_image_miou(
    pred: Any, gt: Any, classes: Iterable[int] | None = None, num_classes: int = NUM_CLASSES
) -> float:
    """mIoU of one image over the classes present in gt or prediction (mmseg's per-image mIoU),
    or over ``classes`` where a class absent from both counts IoU 1. NaN when no class is left."""
    iou, present = class_ious(pred, gt, num_classes)
    chosen = present
    if classes is not None:
        chosen = torch.zeros(num_classes, dtype=torch.bool)
        chosen[list(classes)] = True
    return _mean_over(iou, present, chosen)


@dataclass(frozen=True)
class ImageScores:
    """Per-image mIoU of methods a and b on one class set per image, and score = b − a."""

    miou_a: np.ndarray
    """(N,) mIoU of a over the classes present in gt, pred_a or pred_b (absent for a = IoU 1)."""
    miou_b: np.ndarray
    """(N,) the same for b."""
    score: np.ndarray
    """(N,) miou_b − miou_a: > 0 where b is better (NaN for an image without labels)."""

    def ranking(self, descending: bool = True) -> list[int]:
        """Image indices by score (b's biggest wins first by default); NaN scores last."""
        key = -self.score if descending else self.score
        return [int(i) for i in np.argsort(np.where(np.isnan(key), np.inf, key), kind="stable")]


def per_image_scores(
    preds_a: Iterable[Any], preds_b: Iterable[Any], labels: Iterable[Any],
    num_classes: int = NUM_CLASSES,
) -> ImageScores:  # fmt: skip
    """Scores of method b against a on every image; the three iterables yield (H, W) label maps
    (arrays or tensors) in the same image order, so predictions can be streamed."""
    rows = []
    for index, (a, b, gt) in enumerate(zip(preds_a, preds_b, labels, strict=True)):
        try:
            iou_a, present_a = class_ious(a, gt, num_classes)
            iou_b, present_b = class_ious(b, gt, num_classes)
        except ValueError as err:
            raise ValueError(f"image {index}: {err}") from err
        union = present_a | present_b
        rows.append((_mean_over(iou_a, present_a, union), _mean_over(iou_b, present_b, union)))
    miou = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return ImageScores(miou[:, 0], miou[:, 1], miou[:, 1] - miou[:, 0])


def masked_miou(pred: Any, gt: Any, mask: Any, num_classes: int = NUM_CLASSES) -> float:
    """mIoU of one image on the pixels where the bool ``mask`` holds (and gt is labelled), over the
    classes present there in gt or prediction; NaN when no labelled pixel is left."""
    counts = confusion_matrix(
        _label_tensor(pred), _label_tensor(gt), num_classes, mask=_label_tensor(mask).bool()
    ).double()
    tp = counts.diagonal()
    union = counts.sum(0) + counts.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if bool(present.any()) else math.nan


def overlap_iou(pred: Any, gt: Any, instance: Any, width: int = OVERLAP_WIDTH) -> float:
    """mIoU on the overlap band: entity pixels within ``width`` pixels of an entity of another
    thing class (``dida.data.overlap.overlap_mask``); NaN for an image without overlaps."""
    return masked_miou(pred, gt, overlap_mask(np.asarray(instance), width))


def boundary_iou(pred: Any, gt: Any, width: int = OVERLAP_WIDTH) -> float:
    """Trimap mIoU: mIoU on the pixels within ``width`` pixels of a ground-truth class boundary
    (``dida.evaluate.boundary_mask``); NaN for an image with one class."""
    return masked_miou(pred, gt, boundary_mask(_label_tensor(gt), width))


def pair_label(pair: tuple[str, str]) -> str:
    """``"person–car"``: the two class names of an overlap pair type."""
    return "–".join(pair)


def pair_types(index: OverlapIndex) -> dict[str, list[int]]:
    """Image positions per overlap pair type (``"person–car"`` → images holding such a pair),
    most frequent type first (ties by name)."""
    found: dict[str, list[int]] = {}
    for position, image in enumerate(index.images):
        for pair in sorted(image.pairs):
            found.setdefault(pair_label(pair), []).append(position)
    return dict(sorted(found.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def spread(values: np.ndarray) -> np.ndarray:
    """(N,) max − min over methods of an (M, N) score array, ignoring NaN (NaN when < 2 values)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    high = np.where(finite, values, -np.inf).max(0, initial=-np.inf)
    low = np.where(finite, values, np.inf).min(0, initial=np.inf)
    return np.where(finite.sum(0) >= 2, high - low, np.nan)


def ranking_by(score: np.ndarray, descending: bool = True) -> list[int]:
    """Positions of ``score`` sorted (largest first by default), NaN last, ties in input order."""
    key = -np.asarray(score, dtype=np.float64) if descending else np.asarray(score, np.float64)
    return [int(i) for i in np.argsort(np.where(np.isnan(key), np.inf, key), kind="stable")]


def pair_scores(class_iou_a: np.ndarray, class_iou_b: np.ndarray) -> ImageScores:
    """``per_image_scores`` from stored (N, C) per-class IoUs (NaN = class absent from gt and
    prediction): the same class set per image, a class absent for one method counting 1."""
    a, b = np.asarray(class_iou_a, np.float64), np.asarray(class_iou_b, np.float64)
    union = ~np.isnan(a) | ~np.isnan(b)
    count = union.sum(1)

    def mean(values: np.ndarray) -> np.ndarray:
        total = np.where(union, np.nan_to_num(values, nan=1.0), 0.0).sum(1)
        return np.divide(total, count, out=np.full(len(count), np.nan), where=count > 0)

    miou_a, miou_b = mean(a), mean(b)
    return ImageScores(miou_a, miou_b, miou_b - miou_a)


LOOK_ALIKE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("road", "sidewalk"),
    ("person", "rider"),
    ("car", "truck", "bus", "train"),
    ("motorcycle", "bicycle"),
)
"""Classes a segmenter confuses with each other (the blocks the confusion view outlines)."""


@dataclass(frozen=True)
class ConfusionView:
    """A row-normalised confusion matrix, possibly cut to some classes (rows = ground truth)."""

    rows: tuple[str, ...]
    """Ground-truth class names."""
    columns: tuple[str, ...]
    """Predicted class names (plus ``"other"`` for a cut matrix: every class not shown)."""
    percent: np.ndarray
    """(R, K) percent of each ground-truth row's pixels (NaN for a row without pixels)."""
    pixels: np.ndarray
    """(R,) int64 ground-truth pixels of each row."""


def confusion_view(
    confusion: np.ndarray, classes: Iterable[int | str] | None = None
) -> ConfusionView:
    """Row-normalised (percent) view of a (C, C) confusion matrix; with ``classes`` only their rows
    and columns, plus an ``"other"`` column holding the rest of each row."""
    counts = np.asarray(confusion, dtype=np.int64)
    ids = list(range(len(counts))) if classes is None else [class_index(c) for c in classes]
    cut = counts[np.ix_(ids, ids)]
    names = tuple(CLASSES[c] for c in ids)
    pixels = counts[ids].sum(1)
    if classes is not None:
        cut = np.concatenate([cut, (pixels - cut.sum(1))[:, None]], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = 100.0 * cut / pixels[:, None]
    columns = names + (("other",) if classes is not None else ())
    return ConfusionView(names, columns, percent, pixels)


def look_alike_classes() -> list[int]:
    """Train IDs of every class in ``LOOK_ALIKE_GROUPS``, group by group."""
    return [class_index(name) for group in LOOK_ALIKE_GROUPS for name in group]


# ---------------------------------------------------------------------------------------------
# Bank slot table


def slot_table(snapshot: BankSnapshot) -> list[dict[str, Any]]:
    """One row per class: slots, never written, changed since the previous snapshot, the age
    (iterations since the last write) mean and max over written slots, and the mean feature norm."""
    labels, ages = snapshot.labels.long(), snapshot.ages.long()
    norms = torch.linalg.vector_norm(snapshot.features.float(), dim=1)
    rows = []
    for c in range(NUM_CLASSES):
        mine = labels == c
        written = mine & (ages >= 0)
        age = (snapshot.iteration - ages[written]).double()
        rows.append({
            "train_id": c, "class": CLASSES[c], "slots": int(mine.sum()),
            "never_written": int((mine & (ages < 0)).sum()),
            "changed": int((mine & snapshot.changed.bool()).sum()),
            "mean_age": float(age.mean()) if len(age) else None,
            "max_age": int(age.max()) if len(age) else None,
            "mean_norm": float(norms[mine].mean()) if bool(mine.any()) else None,
        })  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------
# 2-D projections


def _points(features: Any, name: str = "features") -> np.ndarray:
    """(N, D) float32 numpy from an array or tensor (e.g. a snapshot's float16 bank)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().float().numpy()
    points = np.asarray(features, dtype=np.float32)
    if points.ndim != 2 or len(points) == 0 or not np.isfinite(points).all():
        raise ValueError(f"{name} must be a finite (N, D) array with N >= 1, got {points.shape}")
    return points


class PcaBasis(NamedTuple):
    """A fitted 2-D PCA: project with ``(x - mean) @ components.T``."""

    mean: np.ndarray
    """(D,) mean of the fitted points."""
    components: np.ndarray
    """(2, D) principal axes (zero rows when fewer than 2 exist); the largest-|.| entry of each
    axis is positive, so the result does not depend on the SVD's sign choice."""

    def transform(self, features: Any) -> np.ndarray:
        """(N, D) -> (N, 2) float32."""
        points = _points(features)
        if points.shape[1] != len(self.mean):
            raise ValueError(f"features have D = {points.shape[1]}, the basis {len(self.mean)}")
        return ((points - self.mean) @ self.components.T).astype(np.float32)


def fit_pca(features: Any) -> PcaBasis:
    """The 2-D PCA basis of (N, D) points (exact SVD, deterministic).

    The SVD runs on one BLAS thread: on a loaded 2-core machine the multi-threaded LAPACK call
    on a 300 x 64 matrix was seen to stall for ~0.6 s instead of taking 1-2 ms.
    """
    points = _points(features).astype(np.float64)
    mean = points.mean(axis=0)
    with threadpool_limits(limits=1, user_api="blas"):
        _, _, vt = np.linalg.svd(points - mean, full_matrices=False)  # (min(N, D), D)
    axes = np.zeros((2, points.shape[1]))
    axes[: min(2, len(vt))] = vt[:2]
    pivot = np.abs(axes).argmax(axis=1)
    axes *= np.where(axes[np.arange(2), pivot] < 0, -1.0, 1.0)[:, None]
    return PcaBasis(mean.astype(np.float32), axes.astype(np.float32))


def pca_2d(features: Any) -> np.ndarray:
    """(N, D) -> (N, 2) float32 first two principal components (instant fallback for UMAP)."""
    return fit_pca(features).transform(features)


def numba_cache_dir() -> Path:
    """Where numba caches compiled functions: $NUMBA_CACHE_DIR, else ``.cache/numba`` in the
    repository (or the temp folder when that is not writable); created if missing."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    for folder in (
        Path(__file__).resolve().parents[1] / ".cache" / "numba",
        Path(tempfile.gettempdir()) / "dida-numba",
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError("no writable numba cache folder; set NUMBA_CACHE_DIR to a writable folder")


def import_umap() -> Any:
    """``import umap`` with NUMBA_CACHE_DIR set first (numba reads it once, when first imported)."""
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())
    import umap

    return umap


@dataclass
class UmapConfig:
    """umap-learn settings of a ``Projector`` (2 components; reproducible, so single-threaded)."""

    n_neighbors: int = 15
    """Neighbourhood size (local vs global structure); lowered to N - 1 for tiny sets."""
    min_dist: float = 0.1
    """How tightly points may pack in the map."""
    n_epochs: int = 200
    """Optimisation epochs; 200 is enough for an interactive view (umap's default is 200-500)."""
    random_state: int = 0
    """Fixed seed: the same features give the same map (forces one thread)."""
    metric: str = "euclidean"
    """Distance in feature space ("cosine" ignores feature norms)."""

    def __post_init__(self) -> None:
        if self.n_neighbors < 2 or self.n_epochs < 1 or self.min_dist < 0:
            raise ValueError(
                f"need n_neighbors >= 2, n_epochs >= 1, min_dist >= 0; got {self.n_neighbors}, "
                f"{self.n_epochs}, {self.min_dist}"
            )


MIN_UMAP_POINTS = 5
"""Fewer points cannot be laid out by UMAP's spectral start; use ``pca_2d``."""


class Projector:
    """A stable 2-D map of feature sets (e.g. bank snapshots of one run), cached per key.

    UMAP is fitted once — on the first set given to ``project`` or explicitly with ``fit`` (e.g. on
    the union of all snapshots) — and later sets are placed with ``transform``, so the layout does
    not jump between snapshots. ``pca`` does the same with a PCA basis and returns at once.
    Thread-safe: UMAP work is serialised by its own lock, so ``pca`` and ``cached`` answer while a
    fit runs in another thread; ``warm_up()`` compiles umap's numba code and suits a background
    thread at start.
    """

    def __init__(self, config: UmapConfig | None = None, max_cached: int = 256) -> None:
        self.config = config or UmapConfig()
        self.max_cached = max_cached
        self._reducer: Any = None
        self._pca: PcaBasis | None = None
        self._cache: OrderedDict[tuple[str, Hashable], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # cache and PCA basis (held for milliseconds)
        self._umap_lock = threading.RLock()  # the UMAP reducer (held for seconds)

    @property
    def fitted(self) -> bool:
        return self._reducer is not None

    def _umap(self, n_points: int) -> Any:
        cfg = self.config
        return import_umap().UMAP(
            n_components=2,
            n_neighbors=min(cfg.n_neighbors, n_points - 1),
            min_dist=cfg.min_dist,
            n_epochs=cfg.n_epochs,
            random_state=cfg.random_state,
            metric=cfg.metric,
            n_jobs=1,
        )

    def cached(self, key: Hashable | None, kind: str = "umap") -> np.ndarray | None:
        """The stored result of ``project`` (kind "umap") or ``pca`` (kind "pca") for ``key``."""
        with self._lock:
            return None if key is None else self._cache.get((kind, key))

    def _store(self, kind: str, key: Hashable | None, result: np.ndarray) -> np.ndarray:
        if key is None:
            return result
        with self._lock:
            self._cache[(kind, key)] = result
            self._cache.move_to_end((kind, key))
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return result

    def fit(self, features: Any, key: Hashable | None = None) -> np.ndarray:
        """Fit UMAP on (N, D) features (replacing any earlier fit and its cached maps): (N, 2)."""
        points = _points(features)
        if len(points) < MIN_UMAP_POINTS:
            raise ValueError(
                f"UMAP needs at least {MIN_UMAP_POINTS} points, got {len(points)}; use pca_2d"
            )
        with self._umap_lock:
            reducer = self._umap(len(points))
            embedding = reducer.fit_transform(points).astype(np.float32)
            with self._lock:
                self._reducer = reducer
                self._cache = OrderedDict((k, v) for k, v in self._cache.items() if k[0] != "umap")
            return self._store("umap", key, embedding)

    def transform(self, features: Any, key: Hashable | None = None) -> np.ndarray:
        """Place (N, D) features into the fitted map: (N, 2); cached under ``key``."""
        if (hit := self.cached(key)) is not None:
            return hit
        points = _points(features)
        with self._umap_lock:
            if self._reducer is None:
                raise RuntimeError("the projector is not fitted; call fit() or project() first")
            return self._store("umap", key, self._reducer.transform(points).astype(np.float32))

    def project(self, features: Any, key: Hashable | None = None) -> np.ndarray:
        """The cached map of ``key``, else ``fit`` on the first call and ``transform`` after."""
        if (hit := self.cached(key)) is not None:
            return hit
        with self._umap_lock:
            if (hit := self.cached(key)) is not None:  # computed while this call waited
                return hit
            if self._reducer is None:
                return self.fit(features, key)
            return self.transform(features, key)

    def pca(self, features: Any, key: Hashable | None = None) -> np.ndarray:
        """PCA map (N, 2): the basis is fitted on the first call and reused (stable layout)."""
        if (hit := self.cached(key, "pca")) is not None:
            return hit
        with self._lock:
            if self._pca is None:
                self._pca = fit_pca(features)
            basis = self._pca
        return self._store("pca", key, basis.transform(features))

    def warm_up(self, n_points: int = 40, dim: int = 8) -> float:
        """Import umap and run a tiny fit and transform to trigger numba's compilation.

        Leaves this projector unfitted; returns the seconds it took.
        """
        start = time.perf_counter()
        points = np.random.default_rng(0).normal(size=(n_points, dim)).astype(np.float32)
        reducer = self._umap(n_points)
        reducer.n_epochs = 10
        reducer.fit(points)
        reducer.transform(points[:5] + 0.01)
        return time.perf_counter() - start
