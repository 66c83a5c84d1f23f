"""The method contract shared by every adaptation method (one method = one file = one class)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Batch = dict[str, dict[str, Tensor]]
"""``{"source": {"image", "label"}, "target": {"image", "label"?}}`` (see docs/ARCHITECTURE.md)."""


@dataclass(frozen=True)
class MethodContext:
    """What the loop tells a method about the run (never mutated by the method)."""

    num_classes: int = 19
    crop: tuple[int, int] = (256, 256)
    max_iters: int = 1000
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source_class_pixels: tuple[int, ...] | None = None
    """Per-class source pixel totals (class statistics), for rare-class ordering."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


class Method:
    """Base class: subclasses implement ``step``; the loop owns backward, optimizer, eval and saving.

    ``model`` is the student (the only trained network); extra networks and state (EMA teacher,
    prototypes, the instance bank) belong to the method and travel through ``state_dict``.
    """

    name = "base"

    def __init__(self, model: nn.Module, ctx: MethodContext) -> None:
        self.model = model
        self.ctx = ctx
        self.generator = torch.Generator(device="cpu").manual_seed(ctx.seed)

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        """Named, already-weighted scalar losses for one iteration."""
        raise NotImplementedError

    def after_step(self, it: int) -> None:
        """Called after the optimizer step (EMA teacher updates happen here)."""

    def records(self, it: int) -> dict[str, Any]:
        """Things the loop should record for iteration ``it`` (e.g. a bank snapshot); none by default."""
        return {}

    @property
    def eval_model(self) -> nn.Module:
        """The network evaluated and shipped: the student, as in DAFormer's reference code."""
        return unwrap(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
