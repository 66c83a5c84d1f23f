"""DIDA: DAFormer-style self-training + dual-level interaction with a labelled instance bank
(Yao & Li, ICCVW 2023; METHOD.md §4 and the supplement).

Per iteration, on top of DAFormer's step:

1. the bank (K source "instances": class-region mean features E_s with class labels) is filled from the
   student's source features, then updated every ``update_interval`` iterations with momentum;
2. teacher instance distribution on the clean target view:  q^A = softmax_k(<e^A, M_k> / tp);
3. gathering (semantic → instance): q̂^A ∝ q^A_k · p_{y_k} — the teacher's class probabilities unfolded
   onto the slots calibrate q^A;
4. scattering (instance → semantic): a_c = Σ_{k: y_k = c} q̂^A_k, and the semantic pseudo-labels are
   regenerated from α·p + (1 − α)·a;
5. student instance distribution on the mixed/strong view: q^α = softmax_k(<e^α, M_k> / tp);
6. L_ins = −Σ_k q̂^A_k log q^α_k on target-origin pixels (view alignment under ClassMix), weight λ.

All distributions live at feature resolution (1/4 of the crop). ``mode`` selects ``paper`` (the above,
the default) or ``released`` (the official code's behaviour, METHOD.md §4.6): sum-normalised raw dot
products instead of the tp-softmax, λ = 0.5, no scattering (DAFormer's pseudo-labels), gathering with
the student's raw mixed-view logits, no view alignment, and the class-mean bank update of image 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dida.bank import BankUpdateConfig, InstanceBank, interior_labels
from dida.methods.base import Batch, MethodContext
from dida.methods.common import (
    calibrate,
    calibrate_released,
    gather_from_classes,
    instance_loss,
    instance_scores,
    mix_instance_targets,
    pseudo_label,
    regenerate_pseudo_probs,
    scale_ignore_rows,
    scatter_to_classes,
    seg_ce,
    slot_targets_from_labels,
    sum_normalize,
    temperature_softmax,
)
from dida.methods.daformer import DAFormer, DAFormerConfig, TeacherView

MODES = ("paper", "released")
ALIGNMENTS = ("target", "labels", "none")
SLOT_PIXELS = ("region", "interior")


@dataclass
class DIDAConfig(DAFormerConfig):
    """DAFormer's knobs plus the instance level. ``None`` means "the mode's value"."""

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
    alignment: str | None = None
    """L_ins pixels under ClassMix: 'target' = target-origin pixels only; 'labels' = source-pasted
    pixels use the uniform distribution over their true class's slots; 'none' = teacher's un-mixed
    distribution everywhere (released). None: 'target' (paper) or 'none' (released)."""
    update_interval: int = 50
    """Bank update every N iterations once the bank is full (the fill runs every iteration)."""
    bank_momentum: float = 0.999
    """Momentum m of the bank update M ← m·M + (1 − m)·new."""
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
    """Iteration from which the bank is filled from the student's source features (0 = at once,
    as the official code updates it from t = 0). The paper's bank starts from a trained model's
    features (the code loads a precomputed cache); a model trained from scratch has random features
    early, so the CPU presets start later. L_ins and scattering act once the bank holds slots."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (got {self.mode!r})")
        paper = self.mode == "paper"
        self.ins_lambda = (1.0 if paper else 0.5) if self.ins_lambda is None else self.ins_lambda
        self.scatter_alpha = (
            (0.5 if paper else 1.0) if self.scatter_alpha is None else self.scatter_alpha
        )
        self.normalize = paper if self.normalize is None else self.normalize
        self.alignment = (
            ("target" if paper else "none") if self.alignment is None else self.alignment
        )
        if self.slot_pixels not in SLOT_PIXELS:
            raise ValueError(f"slot_pixels must be one of {SLOT_PIXELS} (got {self.slot_pixels!r})")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS} (got {self.alignment!r})")
        if self.bank_start < 0 or self.ins_warmup < 0:
            raise ValueError("bank_start and ins_warmup must be >= 0")
        if self.bank_size < 1 or self.update_interval < 1 or self.bank_stride < 1:
            raise ValueError("bank_size, update_interval and bank_stride must be >= 1")
        if self.tp < 0 or self.ins_lambda < 0 or not 0 <= self.scatter_alpha <= 1:
            raise ValueError("tp and ins_lambda must be >= 0 and scatter_alpha in [0, 1]")

    def bank_update(self) -> BankUpdateConfig:
        return BankUpdateConfig(
            mode=self.mode,
            momentum=self.bank_momentum,
            stride=self.bank_stride,
            boundary=self.boundary,
            kmeans_iters=self.kmeans_iters,
        )


class InstanceView(NamedTuple):
    """The teacher's instance-level view of the clean target crop (feature resolution)."""

    scores: Tensor  # (B, K, h, w) s^A
    q: Tensor  # (B, K, h, w) q^A
    calibrated: Tensor  # (B, K, h, w) q̂^A after gathering (paper mode; released: filled later)
    class_scores: Tensor  # (B, C, h, w) a = scatter(q̂^A)


def downsample_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) labels → (B, h, w) by nearest neighbour."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


class DIDA(DAFormer):
    """DAFormer-style self-training + the instance bank and cross-level interaction."""

    name = "dida"

    def __init__(self, model: nn.Module, ctx: MethodContext, cfg: DIDAConfig | None = None):
        super().__init__(model, ctx, cfg or DIDAConfig())
        self.bank = InstanceBank.allocate(
            self.cfg.bank_size, _feature_dim(model), _source_classes(ctx), device=ctx.device
        )
        self._written_at: int | None = None

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        src, tgt = batch["source"], batch["target"]
        losses, out_s = self.source_losses(src)
        self._write_bank(out_s.features.detach(), src, it)
        teacher = self.teacher_view(tgt["image"])
        view_a = self.instance_view(teacher) if self.bank.filled.any() else None
        labels, weight = self.regenerated_pseudo_labels(teacher, view_a)
        mixed = self.mixed_view(src, tgt["image"], labels, weight)
        out_m = self.model(mixed.image)
        losses["loss_target"] = seg_ce(out_m.logits, mixed.label, mixed.weight)
        losses["loss_ins"] = self.cfg.ins_lambda * self.instance_term(view_a, out_m, mixed, src, it)
        return losses

    def records(self, it: int) -> dict[str, Any]:
        return {"bank": self.bank.snapshot(it)} if self._written_at == it else {}

    # --- the bank ---------------------------------------------------------------------------

    def _write_bank(self, features: Tensor, src: dict[str, Tensor], it: int) -> None:
        """Fill free slots every iteration; once full, a momentum update every update_interval."""
        if it < self.cfg.bank_start:
            return
        labels = downsample_labels(src["label"], features.shape[-2:])
        if self.cfg.slot_pixels == "interior":
            labels = interior_labels(labels, self.bank.num_classes)
        if not self.bank.is_full():
            ids = src.get("index", torch.full((len(labels),), -1, dtype=torch.long))
            changed = self.bank.fill(features, labels, it, ids.to(features.device))
        elif it % self.cfg.update_interval == 0:
            changed = self.bank.update(features, labels, it, self.cfg.bank_update())
        else:
            return
        if len(changed):
            self._written_at = it

    def active_slots(self) -> tuple[Tensor, Tensor]:
        """(features (K', D), labels (K',)) of the slots written so far."""
        filled = self.bank.filled
        return self.bank.features[filled], self.bank.labels[filled]

    # --- the instance level -----------------------------------------------------------------

    @torch.no_grad()
    def instance_view(self, teacher: TeacherView) -> InstanceView:
        """s^A, q^A, the gathered q̂^A and the scattered class scores a (paper semantics)."""
        bank, slot_labels = self.active_slots()
        scores = instance_scores(teacher.features, bank, normalize=self.cfg.normalize)
        if self.cfg.mode == "released":
            q = sum_normalize(scores)
            return InstanceView(scores, q, q, scatter_to_classes(q, slot_labels, _C(teacher)))
        q = temperature_softmax(scores, self.cfg.tp)
        p = teacher.logits.softmax(dim=1)
        calibrated = calibrate(q, gather_from_classes(p, slot_labels))
        return InstanceView(
            scores, q, calibrated, scatter_to_classes(calibrated, slot_labels, _C(teacher))
        )

    def regenerated_pseudo_labels(
        self, teacher: TeacherView, view: InstanceView | None
    ) -> tuple[Tensor, Tensor]:
        """Semantic pseudo-labels from α·p + (1 − α)·a (α = 1 or no bank yet: DAFormer's labels)."""
        if self.cfg.scatter_alpha >= 1.0 or view is None:
            return self.pseudo_labels(teacher)
        p = teacher.logits.softmax(dim=1)
        mode = "released" if self.cfg.mode == "released" else "paper"
        probs = regenerate_pseudo_probs(p, view.class_scores, self.cfg.scatter_alpha, mode)
        probs = F.interpolate(probs, size=teacher.probs.shape[-2:], mode="bilinear")
        top, bottom = scale_ignore_rows(
            self.cfg.ignore_top, self.cfg.ignore_bottom, probs.shape[-2]
        )
        return pseudo_label(probs, self.cfg.threshold, top, bottom)

    def instance_term(self, view: InstanceView | None, out_m, mixed, src: dict, it: int) -> Tensor:
        """L_ins between the (aligned, calibrated) teacher target and the student's q^α."""
        if it < self.cfg.ins_warmup or view is None:
            return out_m.features.sum() * 0.0
        bank, slot_labels = self.active_slots()
        scores = instance_scores(out_m.features, bank, normalize=self.cfg.normalize)
        if self.cfg.mode == "released":
            gathered = gather_from_classes(out_m.logits.detach(), slot_labels)
            target = calibrate_released(view.scores, gathered)
            return instance_loss(target, sum_normalize(scores), student_is_log=False)
        log_q = F.log_softmax(scores / max(self.cfg.tp, 1e-6), dim=1)
        target, weight = self._aligned_target(view.calibrated, mixed, src)
        return instance_loss(target, log_q, weight, reduction="weight")

    def _aligned_target(self, q_target: Tensor, mixed, src: dict) -> tuple[Tensor, Tensor | None]:
        """View alignment under ClassMix at feature resolution."""
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

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bank": self.bank.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.bank.load_state_dict(state["bank"])


def _C(teacher: TeacherView) -> int:
    return teacher.logits.shape[1]


def _feature_dim(model: nn.Module) -> int:
    from dida.methods.base import unwrap

    return unwrap(model).config.embed_dim


def _source_classes(ctx: MethodContext) -> list[int]:
    """Classes that occur in the source (a class with no source pixels cannot own slots)."""
    if ctx.source_class_pixels is None:
        return list(range(ctx.num_classes))
    return [c for c, n in enumerate(ctx.source_class_pixels) if n > 0]
