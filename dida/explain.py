"""Explain one pixel: DIDA's instance distribution over the bank and the cross-level interaction.

For the pixel (x, y) of an image (METHOD.md §4.1, §4.5 paper form), with teacher probabilities p (C,)
at the pixel and the decoder feature E at its 1/4-resolution cell:

* q^A = softmax_k(s / tp) over the K bank slots, s = ⟨E, M_k⟩ (after subtracting the bank mean from
  both when ``centre``; cosine when ``normalize``, as the run's DIDA config says); tp = 0 is the
  one-hot argmax;
* gathering: g_k = p_{y_k} (semantic -> instance), calibrated q̂_k = q_k g_k / Σ_j q_j g_j;
* scattering: a_c = Σ_{k: y_k = c} q̂_k (instance -> semantic);
* regenerated semantic scores α p + (1 − α) a, and the two pseudo-labels argmax p, argmax of those.

The maths is the one of ``dida.methods.common`` applied to one pixel (B = h = w = 1). An image's
logits and features come from ``dida.inference.predict_image`` once and are kept in an
``ImageFeatureCache``, so another pixel or another tp costs only K-way tensor operations.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from dida.inference import predict_image
from dida.methods.common import (
    calibrate,
    gather_from_classes,
    instance_scores,
    regenerate_pseudo_probs,
    scatter_to_classes,
    temperature_softmax,
)
from dida.model import SegModel


class Bank(Protocol):
    """Anything with bank ``features`` (K, D) and slot ``labels`` (K,): a ``BankSnapshot`` or an
    ``InstanceBank``."""

    features: Tensor
    labels: Tensor


# ---------------------------------------------------------------------------------------------
# The instance distribution of one feature


def _bank_tensors(bank: Bank, dim: int) -> tuple[Tensor, Tensor]:
    """Bank features (K, D) float32 and labels (K,) int64 on the CPU; checks D against ``dim``."""
    features = bank.features.detach().to("cpu", torch.float32)
    if features.ndim != 2 or features.shape[1] != dim or len(bank.labels) != len(features):
        raise ValueError(
            f"bank features {tuple(features.shape)} with {len(bank.labels)} labels do not fit "
            f"features of width D = {dim}; use the bank recorded with this model"
        )
    return features, bank.labels.detach().to("cpu", torch.int64)


def _written(bank: Bank) -> Tensor | None:
    """(K,) bool: the slots a bank snapshot has written (``ages >= 0``); None when it does not say."""
    ages = getattr(bank, "ages", None)
    return None if ages is None else ages.detach().cpu() >= 0


def instance_scores_1d(
    feature: Tensor,
    bank: Tensor,
    normalize: bool = True,
    centre: bool = False,
    written: Tensor | None = None,
) -> Tensor:
    """s_k = ⟨E, M_k⟩: feature (D,), bank (K, D) -> (K,), by DIDA's own ``instance_scores``
    (``centre``: minus the bank mean, ``normalize``: cosine). With ``written`` (K,) bool the bank
    mean is taken over the written slots only, as the method centres on its active slots."""
    feature, bank = feature.float()[None, :, None, None], bank.float()  # (1, D, 1, 1), (K, D)
    if centre and written is not None and bool(written.any()) and not bool(written.all()):
        mean = bank[written].mean(dim=0)  # (D,) centred on the active slots, as the method is
        feature, bank, centre = feature - mean[None, :, None, None], bank - mean, False
    return instance_scores(feature, bank, normalize, centre)[0, :, 0, 0]  # (K,)


def instance_distribution(
    feature: Tensor, bank: Tensor, tp: float, normalize: bool = True, centre: bool = False
) -> Tensor:
    """q_k = softmax_k(s_k / tp): feature (D,), bank (K, D) -> (K,); tp = 0 gives the argmax one-hot."""
    return temperature_softmax(instance_scores_1d(feature, bank, normalize, centre), tp, dim=0)


def entropy(q: Tensor) -> float:
    """−Σ q log q in nats (0 log 0 = 0)."""
    return float(torch.special.entr(q.double()).sum())


class TpSweep(NamedTuple):
    """Instance distributions of one feature at several temperatures (one shared y-scale)."""

    tps: tuple[float, ...]
    q: Tensor
    """(T, K) q at each tp."""
    entropy: tuple[float, ...]
    """Entropy of each row in nats (log K = uniform)."""
    y_max: float
    """Largest probability over all rows: the common y-axis limit."""


def distribution_over_tps(
    feature: Tensor,
    bank: Bank | Tensor,
    tps: Sequence[float],
    normalize: bool = True,
    centre: bool = False,
) -> TpSweep:
    """q at every tp in ``tps`` for one feature (D,) and a bank (K, D) (or a snapshot), under the
    run's similarity (``normalize``, ``centre``: its DIDA config's)."""
    if not len(tps):
        raise ValueError("tps is empty; pass the temperatures to compare, e.g. (0.05, 0.1, 1.0)")
    if isinstance(bank, Tensor):
        features, written = bank, None
    else:
        features, written = _bank_tensors(bank, feature.shape[0])[0], _written(bank)
    scores = instance_scores_1d(feature, features, normalize, centre, written)
    q = torch.stack([temperature_softmax(scores, float(tp), dim=0) for tp in tps])  # (T, K)
    return TpSweep(
        tuple(float(t) for t in tps), q, tuple(entropy(row) for row in q), float(q.max())
    )


# ---------------------------------------------------------------------------------------------
# Per-image features, cached


class ImageFeatures(NamedTuple):
    """One image's model outputs kept for explanations (on the CPU)."""

    logits: Tensor
    """(C, H, W) class scores at the image size."""
    features: Tensor
    """(D, ceil(H/4), ceil(W/4)) decoder features E."""


def image_key(image: np.ndarray) -> str:
    """A content hash of an image (shape, dtype and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class ImageFeatureCache:
    """Thread-safe LRU of ``ImageFeatures`` keyed by (model key, image hash).

    The model key defaults to ``id(model)``; a weak reference to the model guards against a new
    model reusing the id of a collected one. Call ``clear()`` when a model's weights change.
    """

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1 image, got {capacity}")
        self.capacity = capacity
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple, tuple[weakref.ref, ImageFeatures]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(
        self, model: SegModel, image: np.ndarray, model_key: Hashable | None = None
    ) -> ImageFeatures:
        """The cached outputs of ``model`` on ``image``, computed on a miss."""
        key = (id(model) if model_key is None else model_key, image_key(image))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is model:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        computed = compute_image_features(model, image)
        with self._lock:
            self.misses += 1
            self._entries[key] = (weakref.ref(model), computed)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return computed


def compute_image_features(model: SegModel, image: np.ndarray) -> ImageFeatures:
    """Logits (C, H, W) and features (D, h, w) of one uint8 (H, W, 3) image (whole inference)."""
    pred = predict_image(model, image)
    return ImageFeatures(pred.logits[0].cpu(), pred.features[0].cpu())


# ---------------------------------------------------------------------------------------------
# Explaining a pixel


class NearestSlots(NamedTuple):
    """The bank slots most similar to the pixel's feature, most similar first."""

    indices: Tensor
    """(k,) slot indices."""
    similarities: Tensor
    """(k,) s_k (cosine when normalised)."""
    labels: Tensor
    """(k,) slot classes (train IDs)."""
    source_ids: Tensor
    """(k,) source image that filled each slot (-1 = unknown or an aggregate)."""


@dataclass(frozen=True)
class PixelExplanation:
    """DIDA's view of one pixel (x, y) of one image for one bank and temperature."""

    x: int
    y: int
    cell: tuple[int, int]
    """(row, column) of the pixel's feature cell on the 1/4 grid."""
    tp: float
    alpha: float
    """Weight of p in the regenerated scores α p + (1 − α) a."""
    feature: Tensor
    """(D,) decoder feature E of the cell (input of ``distribution_over_tps``)."""
    teacher_probs: Tensor
    """(C,) p = softmax of the model's logits at the pixel."""
    similarities: Tensor
    """(K,) s_k = ⟨E, M_k⟩ (cosine when normalised)."""
    q: Tensor
    """(K,) instance distribution softmax(s / tp)."""
    entropy: float
    """Entropy of q in nats (log K = uniform)."""
    gathered: Tensor
    """(K,) gathering g_k = p_{y_k}: the semantic score of each slot's class."""
    calibrated: Tensor
    """(K,) q̂ = q ⊙ g / Σ (q ⊙ g): the calibrated instance pseudo-distribution."""
    scattered: Tensor
    """(C,) scattering a_c = Σ_{k: y_k = c} q̂_k."""
    regenerated_probs: Tensor
    """(C,) α p + (1 − α) a."""
    pseudo_label_semantic: int
    """argmax p."""
    pseudo_label_regenerated: int
    """argmax of the regenerated scores."""
    nearest: NearestSlots
    slot_labels: Tensor
    """(K,) class of every slot."""


def check_pixel(x: int, y: int, image_size: Sequence[int]) -> None:
    """Raise a ValueError naming the image size unless (x, y) is an integer pixel inside it."""
    height, width = int(image_size[0]), int(image_size[1])
    inside = int(x) == x and int(y) == y and 0 <= x < width and 0 <= y < height
    if not inside:
        raise ValueError(
            f"pixel (x={x}, y={y}) lies outside the {width}x{height} (W x H) image; "
            f"use integers 0 <= x < {width} and 0 <= y < {height}"
        )


def feature_cell(x: int, y: int, image_size: Sequence[int], grid: Sequence[int]) -> tuple[int, int]:
    """(row, column) of image pixel (x, y) of an (H, W) image on a feature grid (h, w):
    (y h // H, x w // W)."""
    check_pixel(x, y, image_size)
    return int(y) * grid[0] // image_size[0], int(x) * grid[1] // image_size[1]


def explain_features(
    outputs: ImageFeatures,
    bank: Bank,
    x: int,
    y: int,
    tp: float,
    alpha: float = 0.5,
    normalize: bool = True,
    top_k: int = 10,
    centre: bool = False,
) -> PixelExplanation:
    """``explain_pixel`` on already computed image outputs (pure tensor maths)."""
    cell = feature_cell(x, y, outputs.logits.shape[-2:], outputs.features.shape[-2:])
    p = torch.softmax(outputs.logits[:, int(y), int(x)].float(), dim=0)  # (C,)
    feature = outputs.features[:, cell[0], cell[1]]  # (D,)
    return explain_vector(
        feature, p, bank, (int(x), int(y)), cell, tp, alpha, normalize, top_k, centre
    )


def explain_vector(
    feature: Tensor,
    p: Tensor,
    bank: Bank,
    pixel: tuple[int, int],
    cell: tuple[int, int],
    tp: float,
    alpha: float = 0.5,
    normalize: bool = True,
    top_k: int = 10,
    centre: bool = False,
) -> PixelExplanation:
    """The explanation of one pixel from its decoder feature E (D,) at feature ``cell`` (row,
    column) and the teacher's probabilities p (C,) at ``pixel`` (x, y): what ``explain_features``
    computes after reading both from the image outputs (pure tensor maths)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (weight of the teacher's p), got {alpha}")
    bank_features, slot_labels = _bank_tensors(bank, feature.shape[0])
    s = instance_scores_1d(feature, bank_features, normalize, centre, _written(bank))  # (K,)
    q = temperature_softmax(s, tp, dim=0)
    g = gather_from_classes(p[None, :, None, None], slot_labels)  # (1, K, 1, 1)
    calibrated = calibrate(q[None, :, None, None], g)
    a = scatter_to_classes(calibrated, slot_labels, num_classes=p.shape[0])  # (1, C, 1, 1)
    regenerated = regenerate_pseudo_probs(p, a[0, :, 0, 0], alpha, mode="paper")
    return PixelExplanation(
        x=pixel[0], y=pixel[1], cell=cell, tp=float(tp), alpha=float(alpha),
        feature=feature, teacher_probs=p, similarities=s, q=q, entropy=entropy(q),
        gathered=g[0, :, 0, 0], calibrated=calibrated[0, :, 0, 0], scattered=a[0, :, 0, 0],
        regenerated_probs=regenerated,
        pseudo_label_semantic=int(p.argmax()),
        pseudo_label_regenerated=int(regenerated.argmax()),
        nearest=nearest_slots(s, slot_labels, top_k, getattr(bank, "source_ids", None)),
        slot_labels=slot_labels,
    )  # fmt: skip


def nearest_slots(
    similarities: Tensor, slot_labels: Tensor, k: int = 10, source_ids: Tensor | None = None
) -> NearestSlots:
    """The top-``k`` slots by similarity (fewer when the bank is smaller), most similar first."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    values, indices = similarities.topk(min(k, len(similarities)))
    sources = torch.full_like(indices, -1) if source_ids is None else source_ids.cpu()[indices]
    return NearestSlots(indices, values, slot_labels[indices], sources)


def explain_pixel(
    model: SegModel,
    image: np.ndarray,
    bank: Bank,
    x: int,
    y: int,
    tp: float,
    alpha: float = 0.5,
    normalize: bool = True,
    cache: ImageFeatureCache | None = None,
    top_k: int = 10,
    model_key: Hashable | None = None,
    centre: bool = False,
) -> PixelExplanation:
    """Explain pixel (x, y) of a uint8 (H, W, 3) image for a bank snapshot at temperature tp.

    The image's logits and features come from ``cache`` (computed on a miss) or, without a cache,
    from one forward pass. ``model_key`` names the model in the cache (e.g. a run id). ``alpha``,
    ``normalize`` and ``centre`` are the run's DIDA options (scatter_alpha, normalize, centre).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(
            f"image must be a uint8 (H, W, 3) RGB array, got {type(image).__name__} "
            f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        )
    check_pixel(x, y, image.shape[:2])
    outputs = (
        compute_image_features(model, image)
        if cache is None
        else cache.get(model, image, model_key)
    )
    return explain_features(outputs, bank, x, y, tp, alpha, normalize, top_k, centre)
