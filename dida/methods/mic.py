"""MIC-style: DAFormer-style self-training + masked image consistency (Hoyer et al., CVPR 2023).

On top of DAFormer's step, the student sees the clean target crop with its own strong photometric
augmentation (colour jitter + blur, drawn apart from the ClassMix image's) and random square
patches masked out (set to 0 in normalised space, i.e. the ImageNet mean colour), and must predict
the EMA teacher's pseudo-labels of the *unmasked* crop, with the same confidence weight as L_T:

    L_M = λ_M · CE_w(f_θ(M ⊙ aug(x_t)), ŷ_t)            (MIC's ``separatetrgaug`` mode)

Pseudo-labels and weights are the host method's (MIC's ``mask_alpha = mask_pseudo_threshold =
'same'``): DAFormer's here, DIDA's regenerated ones for DIDA + MIC (``dida_mic``), which reuses
``masked_consistency_loss`` and ``MICConfig`` rather than a copy of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from dida.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from dida.methods.base import Batch, MethodContext
from dida.methods.common import block_mask, seg_ce, strong_augment
from dida.methods.daformer import DAFormer, DAFormerConfig


@dataclass
class MICConfig(DAFormerConfig):
    """DAFormer's knobs plus MIC's masking (lhoyer/MIC defaults, the patch scaled to our crops)."""

    mask_ratio: float = 0.7
    """Probability that a patch is masked (MIC: 0.7)."""
    mask_patch: int = 16
    """Patch side in pixels. MIC uses 64 px on its 1024-px HRDA crops, 1/16 of the crop side;
    16 px keeps that fraction on our 256-px crops (scale it with ``data.crop``)."""
    mic_lambda: float = 1.0
    """Weight λ_M of the masked consistency loss (MIC: 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1) (MIC: 0.7), got {self.mask_ratio}")
        if self.mask_patch < 1 or self.mic_lambda < 0:
            raise ValueError(
                f"mask_patch must be >= 1 pixel and mic_lambda >= 0, got {self.mask_patch} and "
                f"{self.mic_lambda}"
            )


def masked_consistency_loss(
    method: DAFormer, target_image: Tensor, labels: Tensor, weight: Tensor
) -> Tensor:
    """CE_w of the student on the augmented, block-masked target crop (B, 3, H, W) against the
    teacher's pseudo-labels (B, H, W) of the clean crop with their weights (B, H, W); unweighted
    by λ_M. ``method.cfg`` is a ``MICConfig``; its generator draws the augmentation and the mask."""
    cfg = method.cfg
    image = strong_augment(
        target_image,
        IMAGENET_MEAN,
        IMAGENET_STD,
        method.generator,
        jitter_p=cfg.jitter_p,
        jitter_s=cfg.jitter_s,
        blur_p=cfg.blur_p,
    )
    batch, _, height, width = image.shape
    mask = block_mask((batch, height, width), cfg.mask_patch, cfg.mask_ratio, method.generator)
    return seg_ce(method.model(image * mask.to(image)).logits, labels, weight)


class MIC(DAFormer):
    """DAFormer-style self-training with masked image consistency on the target crop."""

    name = "mic"

    def __init__(self, model: nn.Module, ctx: MethodContext, cfg: MICConfig | None = None):
        super().__init__(model, ctx, cfg or MICConfig())

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        losses, pseudo = self.self_training(batch)
        masked = masked_consistency_loss(self, batch["target"]["image"], *pseudo)
        losses["loss_mask"] = self.cfg.mic_lambda * masked
        return losses
