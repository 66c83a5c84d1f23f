"""DIDA's labelled instance bank M (K, D): tensor state, filling, momentum updates, snapshots.

A slot holds one source "instance": the mean decoder feature E of one class region (METHOD.md §4.2).
Slots are pre-assigned to classes (class-balanced, remainder to the rare classes first) and filled
from source images — online, image by image (``fill``), or at once from a precomputed cache
(``load_slots`` with ``regions.balanced_slot_means``, as the official code loads its
``embedding_cache``); afterwards they follow momentum updates in one of two modes (§4.3, §4.6):

* ``released`` — the final public code: class means of source image 0 only (without its batch-index
  bug), every slot of class c moves toward m_c, and classes absent from the image pull their slots
  toward 0.
* ``paper`` — only classes present in the batch; per class the ``stride`` oldest slots (cyclic) move
  toward the new instance feature; optional boundary-pixel selection (BPS) and k-means centres.

Class-region means are taken at the resolution of the labels given: labels at the feature size
average E itself; full-resolution labels average E bilinearly upsampled to them (the official
code's label resolution; ``regions.region_sums``). Data parallel: every statistic is reduced over
ranks before it is applied (``collectives``). The bank knows nothing of optimizers, files of a run,
or the UI.

Provenance: every write records, per slot, the dataset index of the source image the written
feature came from and the box of the class region in that image's pixels (``source_ids``,
``boxes``; ``provenance``). A momentum update averages many pixels, possibly of several images: it
records the latest contributing image (the last one in the batch, over ranks the last rank, that
holds the slot's class); a slot whose class no image holds keeps what it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dida.bank.collectives import Gatherer, Reducer, distributed_cat, reduce_class_stats
from dida.bank.history import BankSnapshot
from dida.bank.provenance import latest_sources, per_class_boxes
from dida.bank.regions import (
    allocate_slot_labels,
    boundary_mask,
    first_per_class,
    grouped_kmeans,
    oldest_per_class,
    region_means,
    region_sums,
)
from dida.data.classes import CLASSES_19, IGNORE_INDEX, NUM_CLASSES


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


_STATE_KEYS = ("features", "labels", "ages", "source_ids", "filled", "changed")
_ALL_KEYS = (*_STATE_KEYS, "boxes")
"""State tensors; ``boxes`` may be missing from checkpoints made before provenance was recorded."""


class InstanceBank:
    """DIDA's labelled instance bank: features (K, D) float32 and per-slot bookkeeping.

    State (all tensors, on one device): ``features`` (K, D) float32, ``labels`` (K,) int64,
    ``ages`` (K,) int64 iteration of the last write (-1 never), ``source_ids`` (K,) int64 and
    ``boxes`` (K, 4) int64 (provenance, see the module docstring), ``filled`` (K,) bool,
    ``changed`` (K,) bool since the last snapshot.
    """

    def __init__(self, labels: Tensor, dim: int, num_classes: int = NUM_CLASSES) -> None:
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
        self.boxes = torch.full((slots, 4), -1, dtype=torch.long, device=device)

    @classmethod
    def allocate(
        cls,
        num_slots: int,
        dim: int,
        classes: Sequence[int] = CLASSES_19,
        device: torch.device | str = "cpu",
    ) -> InstanceBank:
        """An empty class-balanced bank (see ``allocate_slot_labels``)."""
        return cls(allocate_slot_labels(num_slots, classes).to(device), dim, NUM_CLASSES)

    @classmethod
    def from_features(cls, features: Tensor, labels: Tensor, it: int = -1) -> InstanceBank:
        """A full bank from given entries, e.g. DIDA's precomputed cache (K, D) + labels (K,)."""
        bank = cls(labels.to(features.device), features.shape[1])
        bank.features = features.detach().float().clone()
        bank.filled[:] = True
        bank.ages[:] = it
        return bank

    @classmethod
    def from_snapshot(cls, snapshot: BankSnapshot) -> InstanceBank:
        """The bank a ``BankSnapshot`` recorded (float32 features; slots never written stay empty;
        an old snapshot without boxes gives boxes of -1)."""
        bank = cls(snapshot.labels.long(), snapshot.features.shape[1])
        bank.features = snapshot.features.float().clone()
        bank.ages, bank.source_ids = snapshot.ages.clone(), snapshot.source_ids.clone()
        bank.filled = snapshot.ages >= 0
        if snapshot.boxes is not None:
            bank.boxes = snapshot.boxes.clone()
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

        features (B, D, h, w), labels (B, H, W) at the feature size or larger (means of the
        upsampled features, ``region_sums``), source_ids (B,) int64 dataset indices, boxes of
        each class region in each source image (B, C, 4) (``provenance.region_boxes`` mapped to
        image pixels), one box per image (B, 4), or None (unknown). Images are taken in order
        (over ranks: rank order), so image b's class c lands in the first slot of c still free
        after images < b; the slot records image b and its region box of c. Because slots are
        pre-assigned to classes, the rare-class order of DIDA's appending only matters through
        the allocation (the remainder slots). Returns the indices of the written slots.
        Features are detached: the bank never joins the autograd graph.
        """
        means, counts = region_means(features.detach(), labels, self.num_classes)  # (B, C, D)
        boxes = per_class_boxes(boxes, len(means), self.num_classes, means.device)
        gather = gather or distributed_cat
        means, counts, boxes = gather(means), gather(counts), gather(boxes)
        source_ids = gather(source_ids.to(means.device).long())
        written = [
            self._fill_image(means[b], counts[b] >= min_pixels, it, source_ids[b], boxes[b])
            for b in range(len(means))
        ]
        return torch.cat(written)

    def _fill_image(
        self, means: Tensor, present: Tensor, it: int, source_id: Tensor, boxes: Tensor
    ) -> Tensor:
        """Fill the first free slot of every present class from one image's means (C, D); the
        slots record the image's id (0-d) and its class-region boxes (C, 4)."""
        present = present.to(self.labels.device)
        slots = first_per_class(~self.filled & present[self.labels], self.labels, self.num_classes)
        self.features[slots] = means.to(self.features)[self.labels[slots]]
        self._mark(slots, it)
        self._record(slots, source_id.expand(len(slots)), boxes[self.labels[slots]])
        return slots

    def load_slots(
        self,
        features: Tensor,
        filled: Tensor,
        source_ids: Tensor,
        it: int,
        boxes: Tensor | None = None,
    ) -> Tensor:
        """Write a precomputed bank at once (e.g. ``regions.balanced_slot_means``): features (K, D)
        into the ``filled`` (K,) slots, which record ``source_ids`` (K,), their region boxes
        (K, 4) in those images (None: unknown) and age ``it``. Returns the written slots."""
        if features.shape != self.features.shape or filled.shape != self.labels.shape:
            raise ValueError(
                f"a precomputed bank must be ({self.num_slots}, {self.dim}) with a ({self.num_slots},)"
                f" mask, got {tuple(features.shape)} and {tuple(filled.shape)}"
            )
        slots = torch.nonzero(filled.to(self.labels.device)).flatten()
        self.features[slots] = features.detach().to(self.features)[slots]
        self._mark(slots, it)
        ids = source_ids.to(self.source_ids)[slots]
        self._record(slots, ids, None if boxes is None else boxes.to(self.boxes)[slots])
        return slots

    def _mark(self, slots: Tensor, it: int) -> None:
        self.ages[slots] = it
        self.filled[slots] = True
        self.changed[slots] = True

    def _record(self, slots: Tensor, source_ids: Tensor, boxes: Tensor | None) -> None:
        """Provenance of written slots: source ids (n,) and region boxes (n, 4) (None: -1)."""
        self.source_ids[slots] = source_ids.to(self.source_ids)
        self.boxes[slots] = -1 if boxes is None else boxes.to(self.boxes)

    def update(
        self,
        features: Tensor,
        labels: Tensor,
        it: int,
        cfg: BankUpdateConfig | None = None,
        reducer: Reducer | None = None,
        source_ids: Tensor | None = None,
        boxes: Tensor | None = None,
        gather: Gatherer | None = None,
    ) -> Tensor:
        """Momentum update from a source batch; returns the indices of the changed slots.

        features (B, D, h, w) student decoder features E_s, labels (B, h, w) source labels at the
        same resolution (or larger), source_ids (B,) and boxes (B, C, 4) / (B, 4) as in ``fill``.
        Statistics are summed over ranks (``reducer``) before any write. Changed slots get
        ``ages = it`` and, as provenance, the latest contributing image: the last image of the
        images used (``released``: image 0 of every rank; ``paper``: all, gathered over ranks)
        that holds the slot's class, with its region box; a moved slot whose class no image
        holds keeps its provenance. Without ``source_ids`` the changed slots record -1 (unknown).
        Features are detached: the bank never joins the autograd graph.
        """
        cfg, features = cfg or BankUpdateConfig(), features.detach()
        used = 1 if cfg.mode == "released" else len(labels)
        sources = latest_sources(labels[:used], source_ids, boxes, self.num_classes, gather)
        if cfg.mode == "released":
            slots = self._update_released(features, labels, it, cfg.momentum, reducer)
        else:
            slots = self._update_paper(features, labels, it, cfg, reducer)
        ids, class_boxes = (value.to(self.labels.device)[self.labels[slots]] for value in sources)
        held = (ids >= 0) | (source_ids is None)  # a class no image holds keeps its provenance
        self._record(slots[held], ids[held], class_boxes[held])
        return slots

    def _update_released(
        self, features: Tensor, labels: Tensor, it: int, momentum: float, reducer: Reducer | None
    ) -> Tensor:
        """Every written slot k: M_k <- m M_k + (1 - m) mean_{y_k} over image 0 (absent class -> 0).
        Slots never written (a precomputed bank's classes seen in no image) stay empty."""
        sums, counts = region_sums(features[:1], labels[:1], self.num_classes)
        sums, counts = reduce_class_stats(sums[0], counts[0], reducer)  # (C, D), (C,)
        means = (sums / counts.clamp_min(1)[:, None]).to(self.features)
        slots = torch.nonzero(self.filled).flatten()
        moved = (
            self.features[slots].mul(momentum).add(means[self.labels[slots]], alpha=1 - momentum)
        )
        self.features[slots] = moved
        self._mark(slots, it)
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
        sums, counts = region_sums(features, labels, self.num_classes)
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
        Needs labels at the feature size (the points are the feature cells).
        """
        if labels.shape[1:] != features.shape[2:]:
            raise ValueError("k-means bank updates need labels at the feature size")
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
        snap = BankSnapshot(
            iteration=int(it),
            features=self.features.detach().to("cpu", torch.float16),
            labels=self.labels.cpu().clone(),
            ages=self.ages.cpu().clone(),
            source_ids=self.source_ids.cpu().clone(),
            changed=self.changed.cpu().clone(),
            boxes=self.boxes.cpu().clone(),
        )
        self.changed.zero_()
        return snap

    def _tensors(self) -> dict[str, Tensor]:
        return {key: getattr(self, key) for key in _ALL_KEYS}

    def state_dict(self) -> dict[str, Tensor]:
        """Tensor-only state (safetensors-friendly), including ``num_classes`` as a 0-d tensor."""
        state = {key: value.detach().clone() for key, value in self._tensors().items()}
        state["num_classes"] = torch.tensor(self.num_classes)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from ``state_dict()`` output (keeps the current device); a state without
        ``boxes`` (saved before provenance was recorded) leaves them -1."""
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
        unknown = torch.full((slots, 4), -1, dtype=torch.long)
        self.boxes = state.get("boxes", unknown).to(device).clone()
