"""Pure helpers of the instance bank: class-region sums and means, boundary pixels, slot
allocation and selection, the balanced precomputed slots, grouped k-means.

Tensor in, tensor out; no bank state. Shapes: B images, C classes, K slots, D feature width,
(h, w) feature grid, (H, W) label grid. Ignore label 255.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dida.bank.collectives import Reducer, distributed_sum_
from dida.data.classes import CLASSES_19, IGNORE_INDEX, NUM_CLASSES, RARE_CLASS_SEQUENCE


def check_labels(labels: Tensor, num_classes: int, name: str = "labels") -> None:
    """Raise unless ``labels`` is an integer tensor of train IDs 0..C-1 or 255 (ignore)."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of train IDs, got {labels.dtype}")
    bad = (labels < 0) | ((labels >= num_classes) & (labels != IGNORE_INDEX))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f"{name} holds {value}, which is neither a train ID 0-{num_classes - 1} nor "
            f"{IGNORE_INDEX} (ignore); map label IDs to train IDs first (dida.data.classes)"
        )


def _check_spatial(features: Tensor, labels: Tensor, larger: bool = False) -> None:
    """Labels (B, h, w) at the feature size, or (with ``larger``) at least as large."""
    size, grid = tuple(labels.shape[1:]), tuple(features.shape[2:])
    fits = size == grid or (larger and len(size) == 2 and size[0] >= grid[0] and size[1] >= grid[1])
    if features.dim() != 4 or labels.shape[:1] != features.shape[:1] or not fits:
        raise ValueError(
            f"features (B, D, h, w) and labels (B, h, w) must match, got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}; resize the labels (nearest) to the feature size first"
        )


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) train IDs -> (B, C, H, W) float; ignore pixels are all zero."""
    classes = torch.arange(num_classes, device=labels.device)
    return (labels[:, None] == classes[None, :, None, None]).float()


def class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-image, per-class feature sums and pixel counts (ignore pixels dropped).

    features (B, D, h, w), labels (B, h, w) -> sums (B, C, D) float32, counts (B, C) float32.
    A one-hot matmul rather than ``index_add``: same result, deterministic on CUDA, no (N, D) copy.
    """
    check_labels(labels, num_classes)
    _check_spatial(features, labels)
    one_hot = _one_hot(labels, num_classes)  # (B, C, h, w)
    sums = torch.einsum("bchw,bdhw->bcd", one_hot, features.float())
    return sums, one_hot.sum((2, 3))


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class-mean feature of each class region per image: means (B, C, D) (0 where absent), counts (B, C)."""
    sums, counts = class_sums(features, labels, num_classes)
    return sums / counts.clamp_min(1)[..., None], counts


def bilinear_matrix(size_out: int, size_in: int, device: torch.device | str = "cpu") -> Tensor:
    """(size_out, size_in) matrix U with U @ x = bilinear upsampling of x along one axis
    (``F.interpolate(..., mode="bilinear", align_corners=False)``, which is separable)."""
    eye = torch.eye(size_in, device=device)[None, None]  # (1, 1, in, in)
    return F.interpolate(eye, size=(size_out, size_in), mode="bilinear", align_corners=False)[0, 0]


def region_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """``class_sums`` of the features bilinearly upsampled to the label size (B, H, W).

    The official DIDA code averages class regions of E upsampled to label resolution. Upsampling
    is linear, so Σ_region up(E) = Σ_cells (U_hᵀ 1_region U_w) ⊙ E: the one-hot masks are pooled
    onto the feature grid instead of materialising the (B, D, H, W) upsampled map. Labels at the
    feature size give ``class_sums`` exactly. -> sums (B, C, D), counts (B, C) (label pixels).
    """
    if labels.shape[1:] == features.shape[2:]:
        return class_sums(features, labels, num_classes)
    check_labels(labels, num_classes)
    _check_spatial(features, labels, larger=True)
    (height, width), (h, w) = labels.shape[1:], features.shape[2:]
    one_hot = _one_hot(labels, num_classes)  # (B, C, H, W)
    u_h, u_w = bilinear_matrix(height, h, labels.device), bilinear_matrix(width, w, labels.device)
    pooled = torch.einsum("bcHW,Ww->bcHw", one_hot, u_w)
    pooled = torch.einsum("Hh,bcHw->bchw", u_h, pooled)  # (B, C, h, w) weights on the grid
    sums = torch.einsum("bchw,bdhw->bcd", pooled, features.float())
    return sums, one_hot.sum((2, 3))


def region_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """``region_sums`` as means: (B, C, D) (0 where absent) and label-pixel counts (B, C)."""
    sums, counts = region_sums(features, labels, num_classes)
    return sums / counts.clamp_min(1)[..., None], counts


def boundary_mask(labels: Tensor) -> Tensor:
    """Pixels whose 3x3 neighbourhood holds >= 2 distinct labels (255 counts as a label).

    labels (B, h, w) -> (B, h, w) bool; max/min pooling, image borders are not padded with a label.
    """
    x = labels[:, None].float()
    high = F.max_pool2d(x, 3, stride=1, padding=1)
    low = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return (high != low)[:, 0]


def interior_labels(labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """Labels (B, h, w) with the boundary pixels (``boundary_mask``) of a class set to ignore, in
    the images where that class keeps at least one interior pixel (thin classes keep their region).
    """
    boundary = boundary_mask(labels)
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, 0)
    inner = torch.zeros(labels.shape[0], num_classes, dtype=torch.long, device=labels.device)
    inner.scatter_add_(1, safe.flatten(1), (valid & ~boundary).long().flatten(1))
    keeps_interior = torch.gather(inner, 1, safe.flatten(1)).view_as(labels) > 0
    return labels.masked_fill(boundary & valid & keeps_interior, IGNORE_INDEX)


def allocate_slot_labels(num_slots: int, classes: Sequence[int] = CLASSES_19) -> Tensor:
    """Class-balanced slot labels (K,): K // C slots per class, the remainder one each to the rarest.

    Slots are grouped by class in DIDA's rare-class order (bicycle, rider, motorcycle, ...).
    """
    order = [c for c in RARE_CLASS_SEQUENCE if c in set(classes)]
    if len(order) != len(classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct train IDs 0-18, got {list(classes)}")
    if num_slots < len(order):
        raise ValueError(
            f"a bank of {num_slots} slots cannot hold one slot per class for {len(order)} classes; "
            f"use num_slots >= {len(order)}"
        )
    base, extra = divmod(num_slots, len(order))
    per_class = torch.tensor([base + int(i < extra) for i in range(len(order))])
    return torch.repeat_interleave(torch.tensor(order), per_class)


def rank_in_class(labels: Tensor, num_classes: int, mask: Tensor | None = None) -> Tensor:
    """(K,) 1-based rank of each slot among the (masked) slots of its class, in slot order."""
    one_hot = F.one_hot(labels, num_classes)  # (K, C)
    if mask is not None:
        one_hot = one_hot * mask[:, None].long()
    return one_hot.cumsum(0).gather(1, labels[:, None])[:, 0]


def first_per_class(mask: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Index of the first slot with ``mask`` set, for every class that has one (ascending slot order)."""
    return torch.nonzero(mask & (rank_in_class(labels, num_classes, mask) == 1)).flatten()


def oldest_per_class(
    ages: Tensor, labels: Tensor, present: Tensor, stride: int
) -> tuple[Tensor, Tensor]:
    """The ``stride`` oldest slots of every present class; ties go to the lowest slot index.

    ages (K,) (-1 = never written, hence oldest), labels (K,), present (C,) bool ->
    (slots (n,), rank of each slot within its class (n,) in 0..stride-1), sorted by class.
    Writing a slot makes it the newest, so repeated calls cycle through a class's slots.
    """
    order = torch.sort(ages, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]  # by class, then age, then index
    sorted_labels = labels[order]
    rank = torch.arange(len(order), device=ages.device) - torch.searchsorted(
        sorted_labels, sorted_labels
    )
    pick = (rank < stride) & present[sorted_labels]
    return order[pick], rank[pick]


class BalancedSlots(NamedTuple):
    """A precomputed bank: one class-region mean per slot."""

    features: Tensor
    """(K, D) float32 (0 for slots of classes seen in no image)."""
    filled: Tensor
    """(K,) bool: the slot's class occurs in at least one image."""
    image: Tensor
    """(K,) int64 row of ``means`` the slot copies (-1 where not filled)."""


def balanced_slot_means(
    means: Tensor, counts: Tensor, slot_labels: Tensor, min_pixels: int = 1
) -> BalancedSlots:
    """DIDA's class-balanced cache from the region means of N source images, in image order.

    means (N, C, D), counts (N, C), slot_labels (K,). The j-th slot of class c takes the mean of
    c in the j-th image holding >= ``min_pixels`` pixels of c (as the official cache appends each
    image's class means until every class owns its share); a class found in fewer images than it
    has slots reuses them cyclically; a class found in none leaves its slots unfilled.
    """
    slots_count, dim = len(slot_labels), means.shape[-1]
    features = torch.zeros(slots_count, dim, device=means.device)
    image = torch.full((slots_count,), -1, dtype=torch.long, device=means.device)
    rank = rank_in_class(slot_labels, means.shape[1]) - 1  # 0-based rank within the class
    for c in slot_labels.unique().tolist():
        holders = torch.nonzero(counts[:, c] >= min_pixels).flatten()
        if len(holders) == 0:
            continue
        slots = torch.nonzero(slot_labels == c).flatten()
        image[slots] = holders[rank[slots] % len(holders)]
        features[slots] = means[image[slots], c].float()
    return BalancedSlots(features, image >= 0, image)


def grouped_kmeans(
    points: Tensor,
    groups: Tensor,
    centres: Tensor,
    valid: Tensor,
    iters: int,
    reducer: Reducer | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd iterations where each point may only join a centre of its own group.

    points (N, D), groups (N,) in 0..G-1, centres (G, S, D) initial centres, valid (G, S) bool
    -> (centres (G, S, D), counts (G, S) of the last assignment). Deterministic given the
    initial centres (no random draw). Cluster sums/counts are reduced over ranks each iteration;
    an empty cluster keeps its centre. Every group with points must own a valid centre.
    """
    num_groups, slots, dim = centres.shape
    counts = torch.zeros(num_groups * slots, device=points.device)
    for _ in range(iters):
        cid = _nearest_centre(points, groups, centres, valid)  # (N,) in 0..G*S-1
        packed = torch.zeros(num_groups * slots, dim + 1, device=points.device)
        packed[:, :dim].index_add_(0, cid, points.float())
        packed[:, dim] = torch.bincount(cid, minlength=num_groups * slots).float()
        packed = (reducer or distributed_sum_)(packed)
        counts = packed[:, dim]
        new = packed[:, :dim] / counts.clamp_min(1)[:, None]
        flat = torch.where(counts[:, None] > 0, new, centres.reshape(-1, dim))
        centres = flat.reshape(num_groups, slots, dim)
    return centres, counts.reshape(num_groups, slots)


def _nearest_centre(points: Tensor, groups: Tensor, centres: Tensor, valid: Tensor) -> Tensor:
    """Flat index g * S + s of the nearest valid centre of each point's own group."""
    num_groups, slots, dim = centres.shape
    flat = centres.reshape(-1, dim).to(points.dtype)
    d2 = (flat * flat).sum(1)[None] - 2 * points @ flat.T  # (N, G*S), |x|^2 dropped
    d2 = d2.view(-1, num_groups, slots)[torch.arange(len(points), device=points.device), groups]
    d2 = d2.masked_fill(~valid[groups], float("inf"))  # (N, S)
    return groups * slots + d2.argmin(1)
