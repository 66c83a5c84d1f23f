"""Source-only training: cross-entropy on labelled source crops (METHOD.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from dida.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from dida.methods.base import Batch, Method, MethodContext
from dida.methods.common import seg_ce, strong_augment


@dataclass
class SourceOnlyConfig:
    """Knobs of the supervised baseline."""

    photometric: bool = True
    """Colour jitter + blur on the training crops (stands in for mmseg's PhotoMetricDistortion)."""


class SourceOnly(Method):
    """Train on source labels only; the target domain is seen only at evaluation."""

    name = "source_only"
    domain = "source"

    def __init__(self, model, ctx: MethodContext, cfg: SourceOnlyConfig | None = None) -> None:
        super().__init__(model, ctx)
        self.cfg = cfg or SourceOnlyConfig()

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        images, labels = batch[self.domain]["image"], batch[self.domain]["label"]
        if self.cfg.photometric:
            images = strong_augment(images, IMAGENET_MEAN, IMAGENET_STD, self.generator)
        logits = self.model(images).logits
        return {f"loss_{self.domain}": seg_ce(logits, labels)}
