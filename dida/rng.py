"""The global random state a training step draws from (dropout, drop path), saved with every
checkpoint so that a resumed run continues exactly as the uninterrupted run would have.

The methods' own draws (class mixing, augmentation, MIC's masks) come from ``Method.generator``,
saved in the method state; the data stream is addressed by draw number
(:func:`dida.data.pipeline.draw_stream`). With these three, a run stopped and resumed at any
checkpoint trains the same batches with the same draws as one that was never stopped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def global_rng_state(device: torch.device) -> dict[str, Tensor]:
    """torch's global generator state on the CPU and, on a CUDA device, on that device."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: Mapping[str, Tensor], device: torch.device) -> None:
    """Restore what :func:`global_rng_state` returned (a CPU-saved state leaves CUDA's alone)."""
    torch.set_rng_state(state["cpu"].to("cpu", torch.uint8))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].to("cpu", torch.uint8), device)
