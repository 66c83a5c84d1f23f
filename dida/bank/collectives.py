"""Data-parallel collectives of the bank (no-ops outside an initialised process group).

Every statistic that feeds the bank is summed or gathered over ranks before it is applied, so each
rank applies the identical write. Collectives are injectable (``Reducer``, ``Gatherer``) so the
maths is testable without a process group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

Reducer = Callable[[Tensor], Tensor]
"""Sums a tensor over data-parallel ranks and returns the result (``all_reduce(SUM)`` semantics)."""
Gatherer = Callable[[Tensor], Tensor]
"""Concatenates a tensor along dim 0 over data-parallel ranks, in rank order."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def distributed_sum_(tensor: Tensor) -> Tensor:
    """In-place sum over ranks when torch.distributed is initialised; the tensor itself otherwise."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def distributed_cat(tensor: Tensor) -> Tensor:
    """Concatenation over ranks along dim 0 (equal shapes on every rank); the tensor itself otherwise."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def reduce_class_stats(
    sums: Tensor, counts: Tensor, reducer: Reducer | None = None
) -> tuple[Tensor, Tensor]:
    """Sum per-class feature sums (..., C, D) and counts (..., C) over ranks in one collective."""
    packed = torch.cat([sums, counts[..., None]], dim=-1)  # (..., C, D + 1)
    packed = (reducer or distributed_sum_)(packed)
    return packed[..., :-1], packed[..., -1]
