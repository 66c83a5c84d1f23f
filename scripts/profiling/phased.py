"""The training step re-created outside the method from its own pieces, in the order
``method.step`` runs them, with every region (encoder and decoder forward, losses, the teacher's
view, pseudo-labels + ClassMix, DIDA's bank and instance level, backward, AdamW, the EMA update)
timed into ``Phases``. The losses and updates are the real step's (tests/test_profile_step.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor

from dida.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from dida.methods.base import Batch
from dida.methods.common import seg_ce, strong_augment
from dida.model import SegOutput
from dida.optim import set_lr
from scripts.profiling.trainer import Trainer


class Phases:
    """Wall seconds per named region of a step, summed over the region's calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _student(t: Trainer, images: Tensor, ph: Phases) -> SegOutput:
    with ph("encoder forward"):
        levels = t.model.encode(images)
    with ph("decoder forward"):
        return t.model.decode(levels)


def _supervised_losses(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """SourceOnly.step (and the oracle's, on the target domain)."""
    m = t.method
    images, labels = batch[m.domain]["image"], batch[m.domain]["label"]
    if m.cfg.photometric:
        with ph("augment"):
            images = strong_augment(images, IMAGENET_MEAN, IMAGENET_STD, m.generator)
    out = _student(t, images, ph)
    with ph("loss"):
        return {f"loss_{m.domain}": seg_ce(out.logits, labels)}


def _daformer_losses(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """DAFormer.step without a feature-distance reference (the presets set none)."""
    m, src, tgt = t.method, batch["source"], batch["target"]
    out = _student(t, src["image"], ph)
    with ph("loss"):
        losses = {"loss_source": seg_ce(out.logits, src["label"])}
    with ph("teacher forward"):
        teacher = m.teacher_view(tgt["image"])
    with ph("pseudo-labels + mix"):
        view = m.mixed_view(src, tgt["image"], *m.pseudo_labels(teacher))
    out = _student(t, view.image, ph)
    with ph("loss"):
        losses["loss_target"] = seg_ce(out.logits, view.label, view.weight)
    return losses


def _dida_losses(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """DIDA.step (no MIC term): DAFormer's pieces plus the bank and the instance level."""
    m, src, tgt = t.method, batch["source"], batch["target"]
    out_s = _student(t, src["image"], ph)
    with ph("loss"):
        losses = {"loss_source": seg_ce(out_s.logits, src["label"])}
    with ph("bank + instance level"):
        m._write_bank(out_s.features.detach(), src, it)
    with ph("teacher forward"):
        teacher = m.teacher_view(tgt["image"])
    with ph("bank + instance level"):
        view_a = m.instance_view(teacher) if m.bank.filled.any() else None
    with ph("pseudo-labels + mix"):
        mixed = m.mixed_view(src, tgt["image"], *m.regenerated_pseudo_labels(teacher, view_a))
    out_m = _student(t, mixed.image, ph)
    with ph("loss"):
        losses["loss_target"] = seg_ce(out_m.logits, mixed.label, mixed.weight)
    with ph("bank + instance level"):
        ins = m.instance_term(view_a, out_m, mixed, src, it)
        losses["loss_ins"] = m.cfg.ins_lambda * ins
    return losses


PHASED_LOSSES: dict[str, Callable[[Trainer, Batch, int, Phases], dict[str, Tensor]]] = {
    "source_only": _supervised_losses,
    "oracle": _supervised_losses,
    "daformer": _daformer_losses,
    "dida": _dida_losses,
}
"""Methods whose step is re-created here -> the function computing their losses region by region."""


def phased_step(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """``full_step`` with every region timed into ``ph``; the same losses and updates."""
    with ph("optimizer"):
        set_lr(t.optimizer, it, t.cfg.iters, t.cfg.optim)
    t.model.train()
    losses = PHASED_LOSSES[t.cfg.method](t, batch, it, ph)
    with ph("loss"):
        total = sum(losses.values())
    with ph("optimizer"):
        t.optimizer.zero_grad(set_to_none=True)
    with ph("backward"):
        total.backward()
    with ph("optimizer"):
        t.optimizer.step()
    if hasattr(t.method, "teacher"):
        with ph("EMA update"):
            t.method.after_step(it)
    else:
        t.method.after_step(it)
    return losses
