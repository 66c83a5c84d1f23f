"""DAFormer-style self-training (METHOD.md §3): EMA mean teacher, confidence-weighted pseudo-labels,
ClassMix with colour jitter and blur, and the thing-class feature-distance regulariser.

Rare class sampling lives in the data pipeline (``DataConfig.rcs``), not here.

The feature-distance (FD) regulariser compares the student's deepest encoder features on source crops
with those of a frozen reference network. DAFormer uses ImageNet weights for that reference; they cannot
be downloaded here, so the reference is a checkpoint the user gives (``fd_reference``, e.g. the
``model.safetensors`` of a source-only run). Without one, FD is off and the loss is not reported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dida.data.classes import THING_CLASSES
from dida.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from dida.methods.base import Batch, Method, MethodContext, unwrap
from dida.methods.common import (
    PseudoLabels,
    class_mix_masks,
    ema_alpha,
    ema_update_,
    feature_distance_loss,
    mix,
    pseudo_label,
    scale_ignore_rows,
    seg_ce,
    strong_augment,
)


@dataclass
class DAFormerConfig:
    """DAFormer defaults (METHOD.md §3); every field is one documented knob."""

    alpha: float = 0.999
    """Maximum EMA momentum of the teacher: α_t = min(1 − 1/(t+1), alpha)."""
    threshold: float = 0.968
    """Pseudo-label confidence threshold τ; the target weight is the fraction of pixels above it."""
    ignore_top: int = 15
    """Rows at the top of a 512-row crop whose pseudo-label weight is 0 (scaled to the crop height)."""
    ignore_bottom: int = 120
    """Rows at the bottom of a 512-row crop whose pseudo-label weight is 0 (scaled to the crop height)."""
    jitter_p: float = 0.2
    """Colour jitter is applied iff U(0,1) > jitter_p (80 % of iterations)."""
    jitter_s: float = 0.2
    """Colour jitter strength for brightness, contrast, saturation and hue."""
    blur_p: float = 0.5
    """Gaussian blur is applied iff U(0,1) > blur_p."""
    fd_lambda: float = 0.005
    """Weight of the feature-distance regulariser (only used with fd_reference)."""
    fd_classes: tuple[int, ...] = field(default_factory=lambda: THING_CLASSES)
    """Train IDs whose source cells are regularised (DAFormer's thing classes)."""
    fd_scale_min_ratio: float = 0.75
    """A downscaled label cell counts only if one class covers at least this fraction of it."""
    fd_reference: str | None = None
    """Checkpoint of the frozen reference network for FD (safetensors/official); None disables FD."""

    def __post_init__(self) -> None:
        self.fd_classes = tuple(self.fd_classes)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (got {self.alpha})")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1] (got {self.threshold})")
        if self.ignore_top < 0 or self.ignore_bottom < 0:
            raise ValueError("ignore_top / ignore_bottom must be >= 0 rows")
        if self.fd_lambda < 0:
            raise ValueError(f"fd_lambda must be >= 0 (got {self.fd_lambda})")


class TeacherView(NamedTuple):
    """The teacher on the clean target crop."""

    probs: Tensor
    """(B, C, H, W) softmax at crop resolution."""
    logits: Tensor
    """(B, C, H/4, W/4) raw class scores at feature resolution."""
    features: Tensor
    """(B, D, H/4, W/4) fused decoder features E'."""


class MixedView(NamedTuple):
    """The ClassMix image the student trains on, with its labels and weights."""

    image: Tensor  # (B, 3, H, W) strongly augmented
    label: Tensor  # (B, H, W) source labels where mask = 1, pseudo-labels elsewhere
    weight: Tensor  # (B, H, W) 1 on source pixels, the pseudo-label weight elsewhere
    mask: Tensor  # (B, 1, H, W) 1 where the pixel comes from the source image


def teacher_mode(module: nn.Module) -> nn.Module:
    """Train mode (BN uses batch statistics, as in DAFormer) with dropout and drop-path disabled."""
    module.train()
    for m in module.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d) or type(m).__name__ == "DropPath":
            m.eval()
    return module


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy with gradients disabled (the EMA teacher starts as the student)."""
    teacher = copy.deepcopy(unwrap(model))
    teacher.requires_grad_(False)
    return teacher


class DAFormer(Method):
    """Mean-teacher self-training with ClassMix (DACS) and DAFormer's training strategies."""

    name = "daformer"

    def __init__(self, model: nn.Module, ctx: MethodContext, cfg: DAFormerConfig | None = None):
        super().__init__(model, ctx)
        self.cfg = cfg or DAFormerConfig()
        self.teacher = frozen_copy(model)
        self.reference = _load_reference(self.cfg.fd_reference, ctx.device)

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        return self.self_training(batch)[0]

    def self_training(self, batch: Batch) -> tuple[dict[str, Tensor], PseudoLabels]:
        """DAFormer's losses and the target pseudo-labels they used (for extra target terms)."""
        src, tgt = batch["source"], batch["target"]
        losses, _ = self.source_losses(src)
        pseudo = self.pseudo_labels(self.teacher_view(tgt["image"]))
        view = self.mixed_view(src, tgt["image"], *pseudo)
        losses["loss_target"] = seg_ce(self.model(view.image).logits, view.label, view.weight)
        return losses, pseudo

    def after_step(self, it: int) -> None:
        ema_update_(self.teacher, unwrap(self.model), ema_alpha(it + 1, self.cfg.alpha))

    def source_losses(self, src: dict[str, Tensor]) -> tuple[dict[str, Tensor], Any]:
        """Supervised source CE (+ FD when a reference network is given) and the student output."""
        student = unwrap(self.model)
        levels = student.encode(src["image"]) if self.reference is not None else None
        out = student.decode(levels) if levels is not None else self.model(src["image"])
        losses = {"loss_source": seg_ce(out.logits, src["label"])}
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference.encode(src["image"])[-1]
            fd = feature_distance_loss(
                levels[-1], ref, src["label"], self.cfg.fd_classes, self.cfg.fd_scale_min_ratio
            )
            losses["loss_fd"] = self.cfg.fd_lambda * fd
        return losses, out

    @torch.no_grad()
    def teacher_view(self, target_image: Tensor) -> TeacherView:
        out = teacher_mode(self.teacher)(target_image)
        logits = F.interpolate(out.logits, size=target_image.shape[-2:], mode="bilinear")
        return TeacherView(logits.softmax(dim=1), out.logits, out.features)

    def pseudo_labels(self, teacher: TeacherView) -> PseudoLabels:
        """Hard pseudo-labels and their confidence weights (B, H, W) from the teacher's p."""
        top, bottom = scale_ignore_rows(
            self.cfg.ignore_top, self.cfg.ignore_bottom, teacher.probs.shape[-2]
        )
        return pseudo_label(teacher.probs, self.cfg.threshold, top, bottom)

    def mixed_view(
        self, src: dict[str, Tensor], target_image: Tensor, labels: Tensor, weight: Tensor
    ) -> MixedView:
        """ClassMix source classes onto the target, then colour jitter + blur (DACS)."""
        mask = class_mix_masks(src["label"], self.generator).to(target_image.device)
        image = mix(mask, src["image"], target_image)
        image = strong_augment(
            image,
            IMAGENET_MEAN,
            IMAGENET_STD,
            self.generator,
            jitter_p=self.cfg.jitter_p,
            jitter_s=self.cfg.jitter_s,
            blur_p=self.cfg.blur_p,
        )
        m = mask[:, 0]
        label = mix(m, src["label"], labels).long()
        return MixedView(image, label, mix(m, torch.ones_like(weight), weight), mask)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.teacher.load_state_dict(state["teacher"])


def _load_reference(path: str | None, device: torch.device) -> nn.Module | None:
    """The frozen FD reference network (eval mode, no grad), or None."""
    if path is None:
        return None
    from dida.model import load_model_file

    reference = load_model_file(path).to(device).eval()
    return reference.requires_grad_(False)
