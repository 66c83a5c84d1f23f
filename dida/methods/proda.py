"""ProDA-style self-training, single stage on the DAFormer substrate (METHOD.md §5.2).

Per iteration: EMA teacher on the clean target crop → class probabilities p and fused features E';
class prototypes P (C, D) in feature space; soft prototypical weights w = softmax_c(−(‖E' − P_c‖ − min)·τ);
rectified pseudo-labels ŷ = argmax(w ⊙ p); the student on a strong photometric view of the same target
crop learns ŷ with symmetric CE (α CE + β RCE) and matches the teacher's prototype assignment with a
KL "structure learning" term; plus source CE. Prototypes start as running means of source ground-truth
class features (the student's source features), then follow the teacher's target features and argmax
with momentum.

Soft labels p come from one of two models (``soft_labels``): ``"warmup"`` — a frozen copy of the
student taken when the source-only phase ends, ProDA's fixed warm-up soft pseudo-labels computed online
instead of read from files — or ``"teacher"``, the EMA teacher (a mean-teacher variant). Features for
the prototypes and their distances always come from the EMA teacher, as in ProDA. ``confidence_weight``
optionally weights the symmetric CE like DAFormer's pseudo-labels (fraction of rectified probabilities
≥ 0.968, ignored top/bottom rows).

Dropped from the official multi-stage pipeline (and why): the adversarial warm-up (the source-only
phase of ``source_init_iters`` iterations stands in for it), the offline soft pseudo-label files,
stages 2–3 (SimCLR-initialised self-distillation, worth ≈ +3.8 mIoU on GTA in ProDA),
RandAugment's geometric ops and Cutout (strong view = DAFormer's colour jitter + blur, so no warping
is needed between views), and the MRKLD regulariser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dida.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from dida.methods.base import Batch, Method, MethodContext, unwrap
from dida.methods.common import (
    ema_alpha,
    ema_update_,
    proto_kl,
    prototype_distances,
    prototype_logits,
    prototype_weights,
    pseudo_label,
    rectified_pseudo_label,
    resize_to,
    scale_ignore_rows,
    seg_ce,
    strong_augment,
    symmetric_ce,
    update_prototypes,
)
from dida.methods.daformer import frozen_copy, teacher_mode
from dida.methods.dida import downsample_labels

SOFT_LABELS = ("warmup", "teacher")


@dataclass
class ProDAConfig:
    """ProDA's stage-1 knobs (GTA command) adapted to a single stage."""

    alpha: float = 0.999
    """Maximum EMA momentum of the teacher."""
    proto_momentum: float = 1e-3
    """Weight of the new class mean in the prototype EMA (ProDA: 1e-4 for 90k×4 images; larger
    here because runs are much shorter)."""
    proto_temperature: float = 1.0
    """τ multiplying the feature-prototype distance in the soft weights."""
    source_init_iters: int = 100
    """Prototypes are running means of source ground-truth class features for this many iterations."""
    sce_alpha: float = 0.1
    """Weight of CE in the symmetric CE."""
    sce_beta: float = 1.0
    """Weight of reverse CE in the symmetric CE."""
    kl_weight: float = 10.0
    """Weight of the structure-learning KL term."""
    soft_labels: str = "warmup"
    """Model giving the soft labels p: ``"warmup"`` (frozen at ``source_init_iters``, ProDA) or
    ``"teacher"`` (the EMA teacher)."""
    confidence_weight: bool = False
    """Weight the symmetric CE by DAFormer's pseudo-label confidence weight (not in ProDA)."""
    threshold: float = 0.968
    """Confidence threshold of that weight."""
    ignore_top: int = 15
    """Rows ignored at the top of a 512 crop by that weight (scaled to the crop)."""
    ignore_bottom: int = 120
    """Rows ignored at the bottom of a 512 crop by that weight (scaled to the crop)."""
    jitter_p: float = 0.2
    """Strong view: colour jitter iff U > jitter_p."""
    blur_p: float = 0.5
    """Strong view: gaussian blur iff U > blur_p."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0 or not 0.0 < self.proto_momentum <= 1.0:
            raise ValueError("alpha must be in [0, 1] and proto_momentum in (0, 1]")
        if min(self.proto_temperature, self.sce_alpha, self.sce_beta, self.kl_weight) < 0:
            raise ValueError("proto_temperature, sce_alpha, sce_beta and kl_weight must be >= 0")
        if self.source_init_iters < 0:
            raise ValueError("source_init_iters must be >= 0")
        if self.soft_labels not in SOFT_LABELS:
            raise ValueError(f"soft_labels must be one of {SOFT_LABELS}, got {self.soft_labels!r}")


class ProDA(Method):
    """Prototypical pseudo-label denoising + target structure learning, one stage."""

    name = "proda"

    def __init__(self, model: nn.Module, ctx: MethodContext, cfg: ProDAConfig | None = None):
        super().__init__(model, ctx)
        self.cfg = cfg or ProDAConfig()
        self.teacher = frozen_copy(model)
        dim = unwrap(model).config.embed_dim
        self.prototypes = torch.zeros(ctx.num_classes, dim, device=ctx.device)
        self.counts = torch.zeros(ctx.num_classes, dtype=torch.long, device=ctx.device)
        self.warmup: nn.Module | None = None
        """Frozen copy of the student at the end of the source-only phase (soft_labels warmup);
        with no source-only phase, the initial model (e.g. an ``init_checkpoint``)."""
        if self.cfg.source_init_iters == 0 and self.cfg.soft_labels == "warmup":
            self.warmup = frozen_copy(model)

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        src, tgt = batch["source"], batch["target"]
        out_s = self.model(src["image"])
        losses = {"loss_source": seg_ce(out_s.logits, src["label"])}
        if it < self.cfg.source_init_iters:
            small = downsample_labels(src["label"], out_s.features.shape[-2:])
            self._update_prototypes(out_s.features.detach(), small, momentum=1.0)
            return losses
        teacher = self.teacher_outputs(tgt["image"])
        strong = strong_augment(
            tgt["image"], IMAGENET_MEAN, IMAGENET_STD, self.generator,
            jitter_p=self.cfg.jitter_p, blur_p=self.cfg.blur_p,
        )  # fmt: skip
        out_t = self.model(strong)
        losses["loss_sce"] = symmetric_ce(
            out_t.logits, teacher["pseudo_label"], self.cfg.sce_alpha, self.cfg.sce_beta,
            weight=teacher["weight"],
        )  # fmt: skip
        d_student = prototype_distances(out_t.features, self.prototypes)
        log_assign = F.log_softmax(prototype_logits(d_student, self.cfg.proto_temperature), dim=1)
        losses["loss_kl"] = self.cfg.kl_weight * proto_kl(teacher["assign"], log_assign)
        self._update_prototypes(teacher["features"], teacher["argmax"], self.cfg.proto_momentum)
        return losses

    @torch.no_grad()
    def teacher_outputs(self, target_image: Tensor) -> dict[str, Tensor]:
        """EMA-teacher features E' and prototype assignment, soft labels p (warm-up model or
        teacher), rectified pseudo-labels and their loss weight (None unless confidence_weight)."""
        out = teacher_mode(self.teacher)(target_image)
        p = self.soft_labels(target_image, out.logits).softmax(dim=1)
        assign = prototype_weights(
            prototype_distances(out.features, self.prototypes), self.cfg.proto_temperature
        )
        rectified = resize_to(rectified_pseudo_label(assign, p).probs, target_image.shape[-2:])
        return {
            "features": out.features,
            "argmax": out.logits.argmax(dim=1),
            "assign": assign,
            "pseudo_label": rectified.argmax(dim=1),
            "weight": self.label_weight(rectified),
        }

    def soft_labels(self, target_image: Tensor, teacher_logits: Tensor) -> Tensor:
        """Logits giving p: the frozen warm-up model's, else the EMA teacher's."""
        if self.cfg.soft_labels == "teacher":
            return teacher_logits
        if self.warmup is None:
            raise RuntimeError(
                f"the warm-up model exists after source_init_iters={self.cfg.source_init_iters}"
            )
        return teacher_mode(self.warmup)(target_image).logits

    def label_weight(self, probs: Tensor) -> Tensor | None:
        """DAFormer's confidence weight (B, H, W) of rectified probabilities at the crop size."""
        if not self.cfg.confidence_weight:
            return None
        top, bottom = scale_ignore_rows(
            self.cfg.ignore_top, self.cfg.ignore_bottom, probs.shape[-2]
        )
        return pseudo_label(probs, self.cfg.threshold, top, bottom).weight

    def _update_prototypes(self, features: Tensor, labels: Tensor, momentum: float) -> None:
        start_mean = momentum >= 1.0
        self.prototypes, self.counts = update_prototypes(
            self.prototypes, features, labels, self.counts,
            momentum=min(momentum, 1.0), start_mean=start_mean,
            mean_updates=10**9 if start_mean else 0,
        )  # fmt: skip

    def after_step(self, it: int) -> None:
        ema_update_(self.teacher, unwrap(self.model), ema_alpha(it + 1, self.cfg.alpha))
        if it + 1 == self.cfg.source_init_iters and self.cfg.soft_labels == "warmup":
            self.warmup = frozen_copy(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "teacher": self.teacher.state_dict(),
            "prototypes": self.prototypes,
            "counts": self.counts,
            **({"warmup": self.warmup.state_dict()} if self.warmup is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.teacher.load_state_dict(state["teacher"])
        self.prototypes = state["prototypes"].to(self.prototypes.device)
        self.counts = state["counts"].to(self.counts.device)
        if "warmup" in state:
            self.warmup = frozen_copy(self.model)
            self.warmup.load_state_dict(state["warmup"])
