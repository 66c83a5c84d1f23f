"""DIDA: DAFormer-style self-training + dual-level interaction with a labelled instance bank
(Yao & Li, ICCVW 2023; METHOD.md §4 and the supplement).

Per iteration, on top of DAFormer's step:

1. the bank (K source "instances": class-region mean features E_s with class labels) is filled from
   the student's source features (``bank_init="online"``) or precomputed once from the starting
   model (``"precomputed"``, the official code's cache), then updated every ``update_interval``
   iterations with momentum;
2. teacher instance distribution on the clean target view:  q^A = softmax_k(<e^A, M_k> / tp);
3. gathering (semantic → instance): q̂^A ∝ q^A_k · p_{y_k} — the teacher's class probabilities
   unfolded onto the slots calibrate q^A;
4. scattering (instance → semantic): a_c = Σ_{k: y_k = c} q̂^A_k, and the semantic pseudo-labels are
   regenerated from α·p + (1 − α)·a;
5. student instance distribution on the mixed/strong view: q^α = softmax_k(<e^α, M_k> / tp);
6. L_ins = −Σ_k q̂^A_k log q^α_k on target-origin pixels (view alignment under ClassMix), weight λ;
   ``ins_weight="confidence"`` weights it per pixel like L_T.

The instance distributions live at feature resolution (1/4 of the crop). ``mode`` selects
``paper`` (the above, the default) or ``released`` (the official code, METHOD.md §4.6, docs/METHODS.md):
sum-normalised raw dot products instead of the tp-softmax, λ = 0.5, no scattering (DAFormer's
pseudo-labels), gathering with the student's raw mixed-view logits, no view alignment, a bank
precomputed from the starting model and moved by the class means of image 0, slot means over
features upsampled to label resolution. ``DIDAMICConfig`` adds MIC's masked consistency (``dida_mic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dida.bank import (
    BankUpdateConfig,
    InstanceBank,
    balanced_slot_means,
    distributed_cat,
    interior_labels,
    region_means,
    source_provenance,
)
from dida.methods.base import Batch, MethodContext, unwrap
from dida.methods.common import (
    PseudoLabels,
    calibrate,
    calibrate_released,
    gather_from_classes,
    instance_loss,
    instance_scores,
    mix_instance_targets,
    pseudo_label,
    regenerate_pseudo_probs,
    resize_to,
    scale_ignore_rows,
    scatter_to_classes,
    seg_ce,
    slot_targets_from_labels,
    sum_normalize,
    temperature_softmax,
)
from dida.methods.daformer import DAFormer, DAFormerConfig, MixedView, TeacherView, frozen_copy
from dida.methods.mic import MICConfig, masked_consistency_loss

MODES = ("paper", "released")
CHOICES = {
    "mode": MODES,
    "alignment": ("target", "labels", "none"),
    "slot_pixels": ("region", "interior"),
    "bank_init": ("online", "precomputed"),
    "slot_resolution": ("feature", "label"),
    "ins_weight": ("uniform", "confidence"),
    "pseudo_upsample": ("probs", "logits"),
    "gather_from": ("teacher", "student"),
}
"""The valid values of every string option."""
MODE_DEFAULTS: dict[str, tuple[Any, Any]] = {
    "ins_lambda": (1.0, 0.5),
    "scatter_alpha": (0.5, 1.0),
    "normalize": (True, False),
    "alignment": ("target", "none"),
    "bank_init": ("online", "precomputed"),
    "slot_resolution": ("feature", "label"),
    "gather_from": ("teacher", "student"),
}
"""Option -> (paper value, released value), taken where the option is left at None."""


MAX_BANK_SIZE = 100_000
"""Largest bank K accepted (the bank holds K feature vectors in memory)."""
MAX_TP = 100.0
"""Largest softmax temperature tp accepted (far above any useful one)."""
MAX_LAMBDA = 1000.0
"""Largest L_ins weight accepted."""


@dataclass
class DIDAConfig(DAFormerConfig):
    """DAFormer's knobs plus the instance level. ``None`` means "the mode's value"
    (``MODE_DEFAULTS``); every other default reproduces the runs made before the option existed."""

    mode: str = "paper"
    """'paper' (as the paper describes) or 'released' (the official code's behaviour)."""
    bank_size: int = 300
    """K, the number of bank slots (class-balanced over the source classes)."""
    tp: float = 0.1
    """Temperature of the instance softmax (paper mode; 0 = argmax)."""
    ins_lambda: float | None = None
    """Weight λ of L_ins; None: 1.0 (paper, supplement Table 2) or 0.5 (released code)."""
    scatter_alpha: float | None = None
    """Regenerated pseudo-label probabilities α·p + (1 − α)·a; None: 0.5 (paper; α is not given in
    the paper, our choice) or 1.0 = scattering off (released code)."""
    normalize: bool | None = None
    """L2-normalise features and bank (cosine similarity) before the tp-softmax; None: True (paper,
    since unnormalised post-ReLU dot products make any small tp an argmax) or False (released)."""
    gather_from: str | None = None
    """Gathering input: 'teacher' class probabilities p (paper) or 'student' raw mixed-view logits
    (released code; targets then need not be non-negative). None: the mode's."""
    centre: bool = False
    """Paper mode: subtract the bank mean from features and slots before the similarity, so that
    cosines of post-ReLU features spread over [-1, 1] and targets vary within a class."""
    alignment: str | None = None
    """L_ins pixels under ClassMix: 'target' = target-origin pixels only; 'labels' = source-pasted
    pixels use the uniform distribution over their true class's slots; 'none' = teacher's un-mixed
    distribution everywhere (released). None: 'target' (paper) or 'none' (released)."""
    ins_weight: str = "uniform"
    """L_ins per-pixel weight: 'uniform' (1 on the aligned pixels, averaged over them; released:
    over all pixels) or 'confidence' (L_T's weight — pseudo-label confidence, ignored rows 0 —
    times the alignment mask, averaged over all pixels as the official code reduces L_ins)."""
    pseudo_upsample: str = "probs"
    """Regenerated pseudo-labels: 'probs' upsamples α·p + (1 − α)·a from 1/4 resolution; 'logits'
    mixes the softmax of upsampled teacher logits with upsampled a (the official order)."""
    bank_init: str | None = None
    """'online': slots filled from the student's source features as they come; 'precomputed': at
    ``bank_start`` the student is frozen as the starting model and the bank is computed at once
    from its class-region means over ``bank_init_images`` source images (the official cache).
    None: 'online' (paper) or 'precomputed' (released)."""
    bank_init_images: int = 50
    """Source images the precomputed bank averages over (the first ones drawn from bank_start on;
    L_ins waits for them: 25 iterations at batch 2). Bounded to keep the precompute cheap on a CPU."""
    slot_resolution: str | None = None
    """Where slot means are taken: 'feature' (1/4 resolution, nearest-downsampled labels) or
    'label' (features bilinearly upsampled to the labels, as the official code; thin classes keep
    purer means). None: 'feature' (paper) or 'label' (released)."""
    update_interval: int = 50
    """Bank update every N iterations once the bank is ready (online filling runs every iteration)."""
    bank_momentum: float = 0.999
    """Momentum m of the bank update M ← m·M + (1 − m)·new (official code: 0.999)."""
    bank_stride: int = 5
    """Paper mode: slots per present class refreshed per update (oldest first)."""
    boundary: bool = False
    """Paper mode: boundary-pixel selection (BPS) for the new instance features."""
    kmeans_iters: int = 0
    """Paper mode: Lloyd iterations of per-class k-means centres (0 = class means)."""
    slot_pixels: str = "region"
    """Pixels a slot feature averages: the whole class region (DIDA) or, with ``"interior"``, the
    region without its boundary pixels where the class has interior ones (at 1/4 resolution the
    boundary of a thin class averages in its surroundings; ``scripts/bank_purity.py``)."""
    ins_warmup: int = 0
    """Iterations before L_ins is switched on."""
    bank_start: int = 0
    """Iteration from which the bank is built (0 = at once, as the official code starts from its
    cache). A model trained from scratch has random features early, so the CPU presets start
    later. L_ins and scattering act once the bank holds slots."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (got {self.mode!r})")
        for name, values in MODE_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, values[self.mode == "released"])
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid} (got {getattr(self, name)!r})")
        _check_numbers(self)

    def bank_update(self) -> BankUpdateConfig:
        return BankUpdateConfig(
            mode=self.mode,
            momentum=self.bank_momentum,
            stride=self.bank_stride,
            boundary=self.boundary,
            kmeans_iters=self.kmeans_iters,
        )


def _check_numbers(cfg: DIDAConfig) -> None:
    """Range checks and the combinations that cannot work, each with what to change."""
    if cfg.bank_start < 0 or cfg.ins_warmup < 0:
        raise ValueError("bank_start and ins_warmup must be >= 0")
    if min(cfg.bank_size, cfg.update_interval, cfg.bank_stride, cfg.bank_init_images) < 1:
        raise ValueError("bank_size, update_interval, bank_stride, bank_init_images must be >= 1")
    if not 1 <= cfg.bank_size <= MAX_BANK_SIZE:
        raise ValueError(f"bank_size must be between 1 and {MAX_BANK_SIZE} (got {cfg.bank_size})")
    if not (0 <= cfg.tp <= MAX_TP and 0 <= cfg.ins_lambda <= MAX_LAMBDA):
        raise ValueError(
            f"tp must be between 0 and {MAX_TP} and ins_lambda between 0 and {MAX_LAMBDA} "
            f"(got tp={cfg.tp}, ins_lambda={cfg.ins_lambda})"
        )
    if not 0 <= cfg.scatter_alpha <= 1:
        raise ValueError(f"scatter_alpha must be between 0 and 1 (got {cfg.scatter_alpha})")
    if cfg.centre and cfg.mode == "released":
        raise ValueError("centre needs the tp-softmax of mode='paper' (centred scores go negative)")
    if cfg.kmeans_iters and cfg.slot_resolution == "label":
        raise ValueError("kmeans_iters needs slot_resolution='feature' (k-means runs on cells)")


@dataclass
class DIDAMICConfig(DIDAConfig, MICConfig):
    """DIDA + MIC (``dida_mic``): DIDA's options plus MIC's masked consistency on the target crop,
    trained on DIDA's (regenerated) pseudo-labels with their weights."""


class InstanceView(NamedTuple):
    """The teacher's instance-level view of the clean target crop (feature resolution)."""

    scores: Tensor  # (B, K, h, w) s^A
    q: Tensor  # (B, K, h, w) q^A
    calibrated: Tensor  # (B, K, h, w) q̂^A gathered with p (gather_from="teacher"), else q^A
    class_scores: Tensor  # (B, C, h, w) a = scatter(q̂^A)


def downsample_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) labels → (B, h, w) by nearest neighbour."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def downsample_weight(weight: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) per-pixel loss weights → (B, h, w) by nearest neighbour (as the labels)."""
    return F.interpolate(weight[:, None].float(), size=size, mode="nearest")[:, 0]


class DIDA(DAFormer):
    """DAFormer-style self-training + the instance bank and cross-level interaction."""

    name = "dida"

    def __init__(self, model: nn.Module, ctx: MethodContext, cfg: DIDAConfig | None = None):
        super().__init__(model, ctx, cfg or DIDAConfig())
        self.bank = InstanceBank.allocate(
            self.cfg.bank_size, _feature_dim(model), _source_classes(ctx), device=ctx.device
        )
        # While a precomputed bank collects its images: the student frozen at bank_start, and the
        # region "means" (N, C, D), "counts" (N, C), source "ids" (N,) and region "boxes"
        # (N, C, 4) collected so far.
        self.starting_model: nn.Module | None = None
        self.cache: dict[str, Tensor] | None = None
        self._written_at: int | None = None

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        src, tgt = batch["source"], batch["target"]
        losses, out_s = self.source_losses(src)
        self._write_bank(out_s.features.detach(), src, it)
        teacher = self.teacher_view(tgt["image"])
        view_a = self.instance_view(teacher) if self.bank.filled.any() else None
        pseudo = self.regenerated_pseudo_labels(teacher, view_a)
        mixed = self.mixed_view(src, tgt["image"], *pseudo)
        out_m = self.model(mixed.image)
        losses["loss_target"] = seg_ce(out_m.logits, mixed.label, mixed.weight)
        losses["loss_ins"] = self.cfg.ins_lambda * self.instance_term(view_a, out_m, mixed, src, it)
        if isinstance(self.cfg, MICConfig) and self.cfg.mic_lambda > 0:
            masked = masked_consistency_loss(self, tgt["image"], *pseudo)
            losses["loss_mask"] = self.cfg.mic_lambda * masked
        return losses

    def records(self, it: int) -> dict[str, Any]:
        return {"bank": self.bank.snapshot(it)} if self._written_at == it else {}

    # --- the bank ---------------------------------------------------------------------------

    def _write_bank(self, features: Tensor, src: dict[str, Tensor], it: int) -> None:
        """Build the bank (online fill every iteration, or the precompute); once it is ready, a
        momentum update every update_interval iterations. Every write records the source images'
        dataset indices and class-region boxes (``source_provenance``)."""
        if it < self.cfg.bank_start:
            return
        labels = self.slot_labels(src["label"], features.shape[-2:])
        ids, boxes = source_provenance(src, labels, self.bank.num_classes)
        precomputed = self.cfg.bank_init == "precomputed"
        ready = self.bank.filled.any() if precomputed else self.bank.is_full()
        if not ready and precomputed:
            changed = self._precompute(src, labels, it)
        elif not ready:
            changed = self.bank.fill(features, labels, it, ids, boxes)
        elif it % self.cfg.update_interval == 0:
            update = self.cfg.bank_update()
            changed = self.bank.update(features, labels, it, update, source_ids=ids, boxes=boxes)
        else:
            return
        if len(changed):
            self._written_at = it

    def slot_labels(self, labels: Tensor, size: tuple[int, int]) -> Tensor:
        """Source labels (B, H, W) at the resolution of the slot means (``slot_resolution``), with
        boundary pixels dropped for ``slot_pixels="interior"``."""
        if self.cfg.slot_resolution == "feature":
            labels = downsample_labels(labels, size)
        if self.cfg.slot_pixels == "interior":
            labels = interior_labels(labels, self.bank.num_classes)
        return labels

    @torch.no_grad()
    def _precompute(self, src: dict[str, Tensor], labels: Tensor, it: int) -> Tensor:
        """Collect the starting model's class-region means of this source batch; once
        ``bank_init_images`` images are in, write the class-balanced bank at once.
        Returns the written slots (none while collecting)."""
        if self.starting_model is None:
            self.starting_model = frozen_copy(self.model).eval()
        features = self.starting_model(src["image"]).features
        means, counts = region_means(features, labels, self.bank.num_classes)
        ids, boxes = source_provenance(src, labels, self.bank.num_classes)
        new = {"means": means, "counts": counts, "ids": ids, "boxes": boxes}
        new = {key: distributed_cat(value) for key, value in new.items()}
        old = self.cache or {key: value[:0] for key, value in new.items()}
        self.cache = {key: torch.cat([old[key], new[key]]) for key in new}
        if len(self.cache["ids"]) < self.cfg.bank_init_images:
            return torch.empty(0, dtype=torch.long)
        cache = {key: value[: self.cfg.bank_init_images] for key, value in self.cache.items()}
        slots = balanced_slot_means(cache["means"], cache["counts"], self.bank.labels)
        image = slots.image.clamp_min(0)
        ids = torch.where(slots.filled, cache["ids"][image], -1)
        boxes = torch.where(slots.filled[:, None], cache["boxes"][image, self.bank.labels], -1)
        self.starting_model, self.cache = None, None
        return self.bank.load_slots(slots.features, slots.filled, ids, it, boxes)

    def active_slots(self) -> tuple[Tensor, Tensor]:
        """(features (K', D), labels (K',)) of the slots written so far."""
        filled = self.bank.filled
        return self.bank.features[filled], self.bank.labels[filled]

    # --- the instance level -----------------------------------------------------------------

    def scores(self, features: Tensor, bank: Tensor) -> Tensor:
        """s = ⟨E, M_k⟩ under the configured similarity: (B, D, h, w), (K, D) -> (B, K, h, w)."""
        return instance_scores(features, bank, normalize=self.cfg.normalize, centre=self.cfg.centre)

    @torch.no_grad()
    def instance_view(self, teacher: TeacherView) -> InstanceView:
        """s^A, q^A, q̂^A gathered with the teacher's p (``gather_from="teacher"``; else q^A, to be
        calibrated with the student's logits in ``instance_term``) and the scattered scores a."""
        bank, slot_labels = self.active_slots()
        scores = self.scores(teacher.features, bank)
        released = self.cfg.mode == "released"
        q = sum_normalize(scores) if released else temperature_softmax(scores, self.cfg.tp)
        calibrated = q
        if self.cfg.gather_from == "teacher":
            p = gather_from_classes(teacher.logits.softmax(dim=1), slot_labels)
            calibrated = calibrate(scores if released else q, p)
        a = scatter_to_classes(q if released else calibrated, slot_labels, _C(teacher))
        return InstanceView(scores, q, calibrated, a)

    def regenerated_pseudo_labels(
        self, teacher: TeacherView, view: InstanceView | None
    ) -> PseudoLabels:
        """Semantic pseudo-labels from α·p + (1 − α)·a (α = 1 or no bank yet: DAFormer's labels)."""
        if self.cfg.scatter_alpha >= 1.0 or view is None:
            return self.pseudo_labels(teacher)
        size = teacher.probs.shape[-2:]
        p, a = teacher.logits.softmax(dim=1), view.class_scores
        if self.cfg.pseudo_upsample == "logits":
            p, a = teacher.probs, resize_to(a, size)
        mode = "released" if self.cfg.mode == "released" else "paper"
        probs = resize_to(regenerate_pseudo_probs(p, a, self.cfg.scatter_alpha, mode), size)
        top, bottom = scale_ignore_rows(self.cfg.ignore_top, self.cfg.ignore_bottom, size[0])
        return pseudo_label(probs, self.cfg.threshold, top, bottom)

    def instance_term(
        self, view: InstanceView | None, out_m, mixed: MixedView, src: dict, it: int
    ) -> Tensor:
        """L_ins between the (aligned, calibrated) teacher target and the student's q^α."""
        if it < self.cfg.ins_warmup or view is None:
            return out_m.features.sum() * 0.0
        scores = self.scores(out_m.features, self.active_slots()[0])
        target = self.instance_target(view, out_m.logits.detach())
        if self.cfg.mode == "released":
            weight = self.pixel_weight(mixed, None, scores.shape[-2:])
            return instance_loss(target, sum_normalize(scores), weight, student_is_log=False)
        log_q = F.log_softmax(scores / max(self.cfg.tp, 1e-6), dim=1)
        target, align = self._aligned_target(target, mixed, src)
        if self.cfg.ins_weight == "uniform":
            return instance_loss(target, log_q, align, reduction="weight")
        weight = self.pixel_weight(mixed, align, scores.shape[-2:])
        return instance_loss(target, log_q, weight, reduction="all")

    def instance_target(self, view: InstanceView, student_logits: Tensor) -> Tensor:
        """The calibrated target q̂^A (B, K', h, w): gathered with the teacher's p, or (released
        code) s^A (paper: q^A) ⊙ the student's raw mixed-view logits z_{y_k}, normalised over K."""
        if self.cfg.gather_from == "teacher":
            return view.calibrated
        gathered = gather_from_classes(student_logits, self.active_slots()[1])
        return calibrate_released(view.scores if self.cfg.mode == "released" else view.q, gathered)

    def pixel_weight(
        self, mixed: MixedView, align: Tensor | None, size: tuple[int, int]
    ) -> Tensor | None:
        """L_ins weight per feature cell (B, h, w): ``align`` as given ('uniform'), or L_T's weight
        — pseudo-label confidence, ignored rows 0, source pixels 1 — times it ('confidence')."""
        if self.cfg.ins_weight == "uniform":
            return align
        weight = downsample_weight(mixed.weight, size)
        return weight if align is None else weight * align

    def _aligned_target(
        self, q_target: Tensor, mixed: MixedView, src: dict
    ) -> tuple[Tensor, Tensor | None]:
        """View alignment under ClassMix at feature resolution: the target and its pixel mask."""
        size = q_target.shape[-2:]
        mask = F.interpolate(mixed.mask, size=size, mode="nearest")  # (B, 1, h, w)
        if self.cfg.alignment == "none":
            return q_target, None
        if self.cfg.alignment == "target":
            return q_target, 1.0 - mask[:, 0]
        q_src, valid = slot_targets_from_labels(
            downsample_labels(src["label"], size), self.active_slots()[1]
        )
        weight = torch.where(mask[:, 0] > 0, valid.float(), torch.ones_like(mask[:, 0]))
        return mix_instance_targets(q_target, q_src, mask), weight

    # --- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "bank": self.bank.state_dict()}
        if self.cache is not None:  # a checkpoint in the middle of the precompute
            state["bank_cache"] = {**self.cache, "model": self.starting_model.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.bank.load_state_dict(state["bank"])
        cache = dict(state.get("bank_cache") or {})
        self.starting_model = None
        if cache:
            self.starting_model = frozen_copy(self.model).eval()
            self.starting_model.load_state_dict(cache.pop("model"))
        if cache and "boxes" not in cache:  # saved before provenance was recorded
            counts = cache["counts"]
            cache["boxes"] = torch.full(
                (*counts.shape, 4), -1, dtype=torch.long, device=counts.device
            )
        self.cache = cache or None


def _C(teacher: TeacherView) -> int:
    return teacher.logits.shape[1]


def _feature_dim(model: nn.Module) -> int:
    return unwrap(model).config.embed_dim


def _source_classes(ctx: MethodContext) -> list[int]:
    """Classes that occur in the source (a class with no source pixels cannot own slots)."""
    if ctx.source_class_pixels is None:
        return list(range(ctx.num_classes))
    return [c for c, n in enumerate(ctx.source_class_pixels) if n > 0]
