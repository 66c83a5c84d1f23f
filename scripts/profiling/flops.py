"""FLOPs and the GEMM reference rate: an fp32 matmul timed at the current thread count, torch's
``FlopCounterMode`` with corrections to its formulas (``FLOP_FIXES``), and the FLOPs of one step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_backward_flop,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from dida.methods.base import Batch
from scripts.profiling.trainer import Timing, Trainer, timed

GEMM_SIZE = 2048
aten = torch.ops.aten


def gemm_time(size: int = GEMM_SIZE) -> Timing:
    """One fp32 ``size`` x ``size`` matmul at the current thread count, timed."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return timed(lambda: torch.mm(a, b))


def gemm_flops(size: int = GEMM_SIZE) -> int:
    """FLOPs of a ``size``² matmul (a multiply-add = 2)."""
    return 2 * size**3


def _conv_backward_flop(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    bias: object,
    stride: object,
    padding: object,
    dilation: object,
    transposed: bool,
    output_padding: object,
    groups: int,
    output_mask: Sequence[bool],
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """torch's ``convolution_backward`` FLOPs with the weight gradient divided by ``groups``:
    torch 2.14 counts the weight gradient of a grouped conv as a dense conv's (x256 for the
    DAFormer head's depthwise branches on 4D = 256 channels; its input gradient is right)."""
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed)
    args += (output_padding, groups)
    grad_input = conv_backward_flop(*args, [output_mask[0], False], out_val=out_shape)
    grad_weight = conv_backward_flop(*args, [False, output_mask[1]], out_val=out_shape)
    return grad_input + grad_weight // groups


def _cpu_sdpa_flop(
    query: Sequence[int], key: Sequence[int], value: Sequence[int], *args, **kw
) -> int:
    """The CPU flash-attention kernel (MiT's attention), which torch 2.14 does not count."""
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(
    grad: Sequence[int], query: Sequence[int], key: Sequence[int], value: Sequence[int], *args, **kw
) -> int:
    """Its backward (2.5 forwards, torch's count for the other attention kernels)."""
    return sdpa_backward_flop_count(grad, query, key, value)


FLOP_FIXES = {
    aten.convolution_backward: _conv_backward_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}
"""Corrections to torch's FLOP formulas (checked against hand counts in tests/test_profile_step.py)."""


def flop_counter(fixes: bool = True) -> FlopCounterMode:
    """torch's FLOP counter (multiply-add = 2 FLOPs), with ``FLOP_FIXES`` unless ``fixes=False``."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_FIXES if fixes else None)


def step_flops(t: Trainer, batch: Batch, it: int, fixes: bool = True) -> int:
    """FLOPs of ``method.step`` + backward (``flop_counter``; no optimizer step is taken)."""
    t.model.train()
    with flop_counter(fixes) as counter:
        sum(t.method.step(batch, it).values()).backward()
    t.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()
