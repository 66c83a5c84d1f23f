"""DIDA's labelled instance bank M (K, D): tensor state, filling, momentum updates, snapshots.

A slot holds one source "instance": the mean decoder feature E of one class region (METHOD.md §4.2).
Slots are pre-assigned to classes (class-balanced, remainder to the rare classes first) and filled
from source images; afterwards they follow momentum updates in one of two modes (§4.3, §4.6):

* ``released`` — the final public code: class means of source image 0 only (without its batch-index
  bug), every slot of class c moves toward m_c, and classes absent from the image pull their slots
  toward 0.
* ``paper`` — only classes present in the batch; per class the ``stride`` oldest slots (cyclic) move
  toward the new instance feature; optional boundary-pixel selection (BPS) and k-means centres.

Data parallel: every statistic that feeds the bank (class sums and counts, per-image fill means,
k-means cluster sums) is summed or gathered over ranks before it is applied, so each rank applies the
identical write and the banks never diverge. Collectives are injectable (``reducer``, ``gather``) so
the maths is testable without a process group.

The bank knows nothing of optimizers, files of a run, or the UI; ``BankHistory`` saves snapshots to
one safetensors file for the app.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from dida.data.classes import CLASSES_19, IGNORE_INDEX, NUM_CLASSES, RARE_CLASS_SEQUENCE

Reducer = Callable[[Tensor], Tensor]
"""Sums a tensor over data-parallel ranks and returns the result (``all_reduce(SUM)`` semantics)."""
Gatherer = Callable[[Tensor], Tensor]
"""Concatenates a tensor along dim 0 over data-parallel ranks, in rank order."""

HISTORY_FORMAT = "dida-bank-history"
HISTORY_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Pure helpers


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


def _check_spatial(features: Tensor, labels: Tensor) -> None:
    if features.dim() != 4 or labels.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"features (B, D, h, w) and labels (B, h, w) must match, got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}; resize the labels (nearest) to the feature size first"
        )


def class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-image, per-class feature sums and pixel counts (ignore pixels dropped).

    features (B, D, h, w), labels (B, h, w) -> sums (B, C, D) float32, counts (B, C) float32.
    A one-hot matmul rather than ``index_add``: same result, deterministic on CUDA, no (N, D) copy.
    """
    check_labels(labels, num_classes)
    _check_spatial(features, labels)
    classes = torch.arange(num_classes, device=labels.device)
    one_hot = (labels[:, None] == classes[None, :, None, None]).float()  # (B, C, h, w)
    sums = torch.einsum("bchw,bdhw->bcd", one_hot, features.float())
    return sums, one_hot.sum((2, 3))


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class-mean feature of each class region per image: means (B, C, D) (0 where absent), counts (B, C)."""
    sums, counts = class_sums(features, labels, num_classes)
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


def first_per_class(mask: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Index of the first slot with ``mask`` set, for every class that has one (ascending slot order)."""
    one_hot = F.one_hot(labels, num_classes) * mask[:, None].long()  # (K, C)
    rank = one_hot.cumsum(0).gather(1, labels[:, None])[:, 0]
    return torch.nonzero(mask & (rank == 1)).flatten()


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


# ---------------------------------------------------------------------------------------------
# Data-parallel collectives (no-ops outside an initialised process group)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def distributed_sum_(tensor: Tensor) -> Tensor:
    """In-place sum over ranks when torch.distributed is initialised; the tensor itself otherwise."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def distributed_cat(tensor: Tensor) -> Tensor:
    """Concatenation over ranks along dim 0 (equal shapes on every rank); the tensor itself otherwise."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def reduce_class_stats(
    sums: Tensor, counts: Tensor, reducer: Reducer | None = None
) -> tuple[Tensor, Tensor]:
    """Sum per-class feature sums (..., C, D) and counts (..., C) over ranks in one collective."""
    packed = torch.cat([sums, counts[..., None]], dim=-1)  # (..., C, D + 1)
    packed = (reducer or distributed_sum_)(packed)
    return packed[..., :-1], packed[..., -1]


# ---------------------------------------------------------------------------------------------
# The bank


@dataclass
class BankUpdateConfig:
    """How ``InstanceBank.update`` moves the slots (METHOD.md §4.3 released, §4.5 paper)."""

    mode: Literal["paper", "released"] = "paper"
    """``released``: image 0, every slot toward its class mean (absent classes toward 0).
    ``paper``: classes present in the batch, ``stride`` oldest slots per class."""
    momentum: float = 0.999
    """Weight of the old slot: M <- m * M + (1 - m) * new (DIDA code: 0.999)."""
    stride: int = 5
    """Paper mode: slots per present class updated per call (DIDA's ``update_stride``)."""
    boundary: bool = False
    """Paper mode: instance = (centre + mean of the class's boundary pixels) / 2 (BPS)."""
    kmeans_iters: int = 0
    """Paper mode: Lloyd iterations refining one centre per chosen slot (0 = the class mean)."""
    min_pixels: int = 1
    """Paper mode: a class counts as present with at least this many pixels (over all ranks)."""

    def __post_init__(self) -> None:
        if self.mode not in ("paper", "released"):
            raise ValueError(f"bank update mode {self.mode!r} unknown; use 'paper' or 'released'")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"bank momentum {self.momentum} must lie in [0, 1] (DIDA: 0.999)")
        if self.stride < 1 or self.kmeans_iters < 0 or self.min_pixels < 1:
            raise ValueError(
                f"need stride >= 1, kmeans_iters >= 0, min_pixels >= 1; got {self.stride}, "
                f"{self.kmeans_iters}, {self.min_pixels}"
            )


@dataclass
class BankSnapshot:
    """The bank at one iteration, on CPU, for the app (features stored as float16)."""

    iteration: int
    features: Tensor
    """(K, D) float16."""
    labels: Tensor
    """(K,) int64 slot classes."""
    ages: Tensor
    """(K,) int64 iteration of each slot's last write (-1 = never)."""
    source_ids: Tensor
    """(K,) int64 source image that filled the slot (-1 = none or an aggregate of several)."""
    changed: Tensor
    """(K,) bool, slots written since the previous snapshot."""
    boxes: Tensor | None = None
    """(K, 4) int64 crop box (x0, y0, x1, y1) of the filling image, -1 when unknown."""


_STATE_KEYS = ("features", "labels", "ages", "source_ids", "filled", "changed")
_SNAPSHOT_KEYS = ("features", "labels", "ages", "source_ids", "changed", "boxes")


class InstanceBank:
    """DIDA's labelled instance bank: features (K, D) float32 and per-slot bookkeeping.

    State (all tensors, on one device): ``features`` (K, D) float32, ``labels`` (K,) int64,
    ``ages`` (K,) int64 iteration of the last write (-1 never), ``source_ids`` (K,) int64,
    ``filled`` (K,) bool, ``changed`` (K,) bool since the last snapshot, optional ``boxes`` (K, 4).
    """

    def __init__(
        self, labels: Tensor, dim: int, num_classes: int = NUM_CLASSES, track_boxes: bool = False
    ) -> None:
        if (
            labels.dim() != 1
            or len(labels) == 0
            or not 0 <= int(labels.min()) <= int(labels.max()) < num_classes
        ):
            raise ValueError(f"slot labels must be a non-empty (K,) tensor of IDs < {num_classes}")
        device, slots = labels.device, len(labels)
        self.num_classes = num_classes
        self.labels = labels.long()
        self.features = torch.zeros(slots, dim, device=device)
        self.ages = torch.full((slots,), -1, dtype=torch.long, device=device)
        self.source_ids = torch.full((slots,), -1, dtype=torch.long, device=device)
        self.filled = torch.zeros(slots, dtype=torch.bool, device=device)
        self.changed = torch.zeros(slots, dtype=torch.bool, device=device)
        self.boxes = (
            torch.full((slots, 4), -1, dtype=torch.long, device=device) if track_boxes else None
        )

    @classmethod
    def allocate(
        cls,
        num_slots: int,
        dim: int,
        classes: Sequence[int] = CLASSES_19,
        track_boxes: bool = False,
        device: torch.device | str = "cpu",
    ) -> InstanceBank:
        """An empty class-balanced bank (see ``allocate_slot_labels``)."""
        return cls(
            allocate_slot_labels(num_slots, classes).to(device), dim, NUM_CLASSES, track_boxes
        )

    @classmethod
    def from_features(cls, features: Tensor, labels: Tensor, it: int = -1) -> InstanceBank:
        """A full bank from given entries, e.g. DIDA's precomputed cache (K, D) + labels (K,)."""
        bank = cls(labels.to(features.device), features.shape[1])
        bank.features = features.detach().float().clone()
        bank.filled[:] = True
        bank.ages[:] = it
        return bank

    @property
    def num_slots(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def is_full(self) -> bool:
        """Whether every slot has been written at least once."""
        return bool(self.filled.all())

    def to(self, device: torch.device | str) -> InstanceBank:
        """Move the state to ``device`` (in place); returns the bank."""
        for key, value in self._tensors().items():
            setattr(self, key, value.to(device))
        return self

    def fill(
        self,
        features: Tensor,
        labels: Tensor,
        it: int,
        source_ids: Tensor,
        boxes: Tensor | None = None,
        min_pixels: int = 1,
        gather: Gatherer | None = None,
    ) -> Tensor:
        """Write each image's class-region means into the next free slot of that class.

        features (B, D, h, w), labels (B, h, w) at the same resolution, source_ids (B,) int64,
        boxes (B, 4) or None. Images are taken in order (over ranks: rank order), so image b's
        class c lands in the first slot of c still free after images < b. Because slots are
        pre-assigned to classes, the rare-class order of DIDA's appending only matters through
        the allocation (the remainder slots). Returns the indices of the written slots.
        Features are detached: the bank never joins the autograd graph.
        """
        means, counts = class_means(
            features.detach(), labels, self.num_classes
        )  # (B, C, D), (B, C)
        gather = gather or distributed_cat
        means, counts = gather(means), gather(counts)
        source_ids = gather(source_ids.to(means.device).long())
        boxes = gather(boxes.to(means.device).long()) if boxes is not None else None
        written = [
            self._fill_image(
                means[b],
                counts[b] >= min_pixels,
                it,
                int(source_ids[b]),
                None if boxes is None else boxes[b],
            )
            for b in range(len(means))
        ]
        return torch.cat(written)

    def _fill_image(
        self, means: Tensor, present: Tensor, it: int, source_id: int, box: Tensor | None
    ) -> Tensor:
        """Fill the first free slot of every present class from one image's means (C, D)."""
        present = present.to(self.labels.device)
        slots = first_per_class(~self.filled & present[self.labels], self.labels, self.num_classes)
        self.features[slots] = means.to(self.features)[self.labels[slots]]
        self._mark(slots, it, source_id)
        if self.boxes is not None and box is not None:
            self.boxes[slots] = box.to(self.boxes)
        return slots

    def _mark(self, slots: Tensor, it: int, source_id: int = -1) -> None:
        self.ages[slots] = it
        self.source_ids[slots] = source_id
        self.filled[slots] = True
        self.changed[slots] = True
        if self.boxes is not None and source_id < 0:
            self.boxes[slots] = -1

    def update(
        self,
        features: Tensor,
        labels: Tensor,
        it: int,
        cfg: BankUpdateConfig | None = None,
        reducer: Reducer | None = None,
    ) -> Tensor:
        """Momentum update from a source batch; returns the indices of the changed slots.

        features (B, D, h, w) student decoder features E_s, labels (B, h, w) source labels at the
        same resolution. Statistics are summed over ranks (``reducer``) before any write. Changed
        slots get ``ages = it`` and ``source_ids = -1`` (an aggregate of several pixels/images).
        Features are detached: the bank never joins the autograd graph.
        """
        cfg, features = cfg or BankUpdateConfig(), features.detach()
        if cfg.mode == "released":
            return self._update_released(features, labels, it, cfg.momentum, reducer)
        return self._update_paper(features, labels, it, cfg, reducer)

    def _update_released(
        self, features: Tensor, labels: Tensor, it: int, momentum: float, reducer: Reducer | None
    ) -> Tensor:
        """Every slot k: M_k <- m M_k + (1 - m) mean_{y_k} over image 0 (absent class -> 0)."""
        sums, counts = class_sums(features[:1], labels[:1], self.num_classes)
        sums, counts = reduce_class_stats(sums[0], counts[0], reducer)  # (C, D), (C,)
        means = (sums / counts.clamp_min(1)[:, None]).to(self.features)
        self.features.mul_(momentum).add_(means[self.labels], alpha=1.0 - momentum)
        slots = torch.arange(self.num_slots, device=self.features.device)
        self.ages[:] = it
        self.source_ids[:] = -1
        self.changed[:] = True
        if self.boxes is not None:
            self.boxes[:] = -1
        return slots

    def _update_paper(
        self,
        features: Tensor,
        labels: Tensor,
        it: int,
        cfg: BankUpdateConfig,
        reducer: Reducer | None,
    ) -> Tensor:
        """The ``stride`` oldest slots of every present class move toward the new instance feature."""
        sums, counts = self._batch_stats(features, labels, reducer)  # (C, D), (C,)
        means = (sums / counts.clamp_min(1)[:, None]).to(self.features)
        present = (counts >= cfg.min_pixels).to(self.labels.device)
        slots, ranks = oldest_per_class(self.ages, self.labels, present, cfg.stride)
        targets = means[self.labels[slots]]  # (n, D)
        if cfg.kmeans_iters:
            targets = self._kmeans_targets(features, labels, slots, ranks, targets, cfg, reducer)
        if cfg.boundary:
            targets = self._blend_boundary(features, labels, slots, targets, reducer)
        self._write(slots, targets, it, cfg.momentum)
        return slots

    def _batch_stats(
        self, features: Tensor, labels: Tensor, reducer: Reducer | None
    ) -> tuple[Tensor, Tensor]:
        """Class feature sums (C, D) and pixel counts (C,) over the batch and over ranks."""
        sums, counts = class_sums(features, labels, self.num_classes)
        return reduce_class_stats(sums.sum(0), counts.sum(0), reducer)

    def _blend_boundary(
        self,
        features: Tensor,
        labels: Tensor,
        slots: Tensor,
        targets: Tensor,
        reducer: Reducer | None,
    ) -> Tensor:
        """BPS: target <- (target + mean boundary feature of its class) / 2 where the class has one."""
        boundary_labels = torch.where(boundary_mask(labels), labels, IGNORE_INDEX)
        sums, counts = self._batch_stats(features, boundary_labels, reducer)
        means = (sums / counts.clamp_min(1)[:, None]).to(targets)
        slot_labels = self.labels[slots]
        has_boundary = (counts > 0).to(slot_labels.device)[slot_labels, None]
        return torch.where(has_boundary, (targets + means[slot_labels]) / 2, targets)

    def _kmeans_targets(
        self,
        features: Tensor,
        labels: Tensor,
        slots: Tensor,
        ranks: Tensor,
        fallback: Tensor,
        cfg: BankUpdateConfig,
        reducer: Reducer | None,
    ) -> Tensor:
        """One k-means centre per chosen slot, initialised from the slot (class mean if unfilled).

        Runs on the features' device; a slot whose cluster ends empty keeps ``fallback`` (n, D).
        """
        device, classes = features.device, self.num_classes
        init = torch.where(self.filled[slots, None], self.features[slots], fallback).to(device)
        index = (self.labels[slots].to(device), ranks.to(device))  # (class, rank) of each slot
        centres = torch.zeros(classes, cfg.stride, self.dim, device=device)
        valid = torch.zeros(classes, cfg.stride, dtype=torch.bool, device=device)
        centres[index], valid[index] = init, True
        flat_labels = labels.reshape(-1)
        keep = valid.any(1)[flat_labels.clamp_max(classes - 1)] & (flat_labels != IGNORE_INDEX)
        points = features.permute(0, 2, 3, 1).reshape(-1, self.dim)[keep].float()  # (N, D)
        centres, counts = grouped_kmeans(
            points, flat_labels[keep], centres, valid, cfg.kmeans_iters, reducer
        )
        found = (counts[index] > 0)[:, None].to(fallback.device)
        return torch.where(found, centres[index].to(fallback), fallback)

    def _write(self, slots: Tensor, targets: Tensor, it: int, momentum: float) -> None:
        """Filled slots: M <- m M + (1 - m) target; unfilled slots take the target directly."""
        old = self.features[slots]
        moved = momentum * old + (1.0 - momentum) * targets
        self.features[slots] = torch.where(self.filled[slots, None], moved, targets)
        self._mark(slots, it)

    def snapshot(self, it: int) -> BankSnapshot:
        """A CPU copy of the bank (features float16) and the slots changed since the last snapshot."""
        boxes = self.boxes.cpu().clone() if self.boxes is not None else None
        snap = BankSnapshot(
            iteration=int(it),
            features=self.features.detach().to("cpu", torch.float16),
            labels=self.labels.cpu().clone(),
            ages=self.ages.cpu().clone(),
            source_ids=self.source_ids.cpu().clone(),
            changed=self.changed.cpu().clone(),
            boxes=boxes,
        )
        self.changed.zero_()
        return snap

    def _tensors(self) -> dict[str, Tensor]:
        state = {key: getattr(self, key) for key in _STATE_KEYS}
        if self.boxes is not None:
            state["boxes"] = self.boxes
        return state

    def state_dict(self) -> dict[str, Tensor]:
        """Tensor-only state (safetensors-friendly), including ``num_classes`` as a 0-d tensor."""
        state = {key: value.detach().clone() for key, value in self._tensors().items()}
        state["num_classes"] = torch.tensor(self.num_classes)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from ``state_dict()`` output (keeps the current device)."""
        missing = [key for key in (*_STATE_KEYS, "num_classes") if key not in state]
        if missing:
            raise KeyError(
                f"bank state lacks {missing}; pass the output of InstanceBank.state_dict()"
            )
        slots = len(state["labels"])
        if state["features"].shape[0] != slots or any(len(state[k]) != slots for k in _STATE_KEYS):
            raise ValueError(f"bank state tensors disagree on the number of slots ({slots} labels)")
        device = self.features.device
        self.num_classes = int(state["num_classes"])
        for key in _STATE_KEYS:
            setattr(self, key, state[key].to(device).clone())
        self.features = self.features.float()
        self.boxes = state["boxes"].to(device).clone() if "boxes" in state else None


# ---------------------------------------------------------------------------------------------
# Snapshot history


class BankHistory:
    """A bounded list of bank snapshots with strictly increasing iterations.

    When a new snapshot exceeds ``max_snapshots``, one interior snapshot is dropped: the one whose
    removal leaves the smallest gap (earliest on ties). The first and the last are always kept,
    and snapshots recorded at a regular interval stay (nearly) evenly spread over the run.
    """

    def __init__(self, max_snapshots: int = 100) -> None:
        if max_snapshots < 2:
            raise ValueError(f"max_snapshots must be >= 2 (first and last), got {max_snapshots}")
        self.max_snapshots = max_snapshots
        self.snapshots: list[BankSnapshot] = []

    def __len__(self) -> int:
        return len(self.snapshots)

    def __getitem__(self, index: int) -> BankSnapshot:
        return self.snapshots[index]

    @property
    def iterations(self) -> list[int]:
        return [s.iteration for s in self.snapshots]

    def append(self, snapshot: BankSnapshot) -> None:
        """Add a snapshot (iteration after the last one), thinning if over ``max_snapshots``."""
        if self.snapshots and snapshot.iteration <= self.snapshots[-1].iteration:
            raise ValueError(
                f"snapshot iteration {snapshot.iteration} is not after the last one "
                f"({self.snapshots[-1].iteration}); call drop_after(it) when resuming a run"
            )
        self.snapshots.append(snapshot)
        if len(self.snapshots) > self.max_snapshots:
            its = self.iterations
            gaps = [its[i + 1] - its[i - 1] for i in range(1, len(its) - 1)]
            del self.snapshots[1 + gaps.index(min(gaps))]

    def drop_after(self, iteration: int) -> None:
        """Forget snapshots taken after ``iteration`` (resuming from an earlier checkpoint)."""
        self.snapshots = [s for s in self.snapshots if s.iteration <= iteration]

    def save(self, path: str | Path) -> None:
        """Write all snapshots to ONE safetensors file (JSON description in its metadata)."""
        tensors: dict[str, Tensor] = {}
        for i, snap in enumerate(self.snapshots):
            for key in _SNAPSHOT_KEYS:
                value = getattr(snap, key)
                if value is not None:
                    tensors[f"{i}.{key}"] = value.contiguous()
        meta = {
            "format": HISTORY_FORMAT,
            "version": HISTORY_VERSION,
            "max_snapshots": self.max_snapshots,
            "iterations": self.iterations,
        }
        save_file(tensors, str(path), metadata={"dida": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> BankHistory:
        """Read a file written by ``save``; raises naming the file if it is something else."""
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("dida", "{}"))
            if meta.get("format") != HISTORY_FORMAT or meta.get("version") != HISTORY_VERSION:
                raise ValueError(
                    f"{path} is not a bank history (format {HISTORY_FORMAT} v{HISTORY_VERSION}); "
                    "write it with BankHistory.save"
                )
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        history = cls(int(meta["max_snapshots"]))
        for i, it in enumerate(meta["iterations"]):
            fields = {key: tensors.get(f"{i}.{key}") for key in _SNAPSHOT_KEYS}
            history.snapshots.append(BankSnapshot(iteration=int(it), **fields))
        return history
