"""DAFormer parameter groups and the warmup + poly schedule (METHOD.md §1.4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dida.optim import OptimConfig, build_optimizer, lr_factor, param_groups, set_lr


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        self.norm1 = nn.LayerNorm(2)
        self.decode_head = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))


def test_param_groups_follow_mmcv_keys() -> None:
    cfg = OptimConfig(lr=1e-3, head_lr_mult=10, weight_decay=0.01)
    groups = param_groups(_Toy(), cfg)
    by_key = {(g["lr_mult"], g["weight_decay"]): len(g["params"]) for g in groups}
    # head: conv w+b and BN w+b keep decay; "norm1" gets no decay; backbone linear + its LayerNorm decay.
    assert by_key == {(1.0, 0.01): 4, (1.0, 0.0): 2, (10.0, 0.01): 4}
    assert {g["lr"] for g in groups} == {1e-3, 1e-2}


def test_schedule_golden_values() -> None:
    cfg = OptimConfig(lr=6e-5, warmup_iters=1500, warmup_ratio=1e-6, power=1.0)
    assert lr_factor(0, 40000, cfg) == pytest.approx(1e-6)
    # mmcv: lr(t) = lr_reg(t) * (1 - (1 - t/1500)(1 - 1e-6)) during warmup.
    assert lr_factor(750, 40000, cfg) == pytest.approx((1 - 750 / 40000) * (1 - 0.5 * (1 - 1e-6)))
    assert lr_factor(1500, 40000, cfg) == pytest.approx(1 - 1500 / 40000)
    assert lr_factor(20000, 40000, cfg) == pytest.approx(0.5)
    assert lr_factor(40000, 40000, cfg) == 0.0


def test_min_lr_floor_and_power() -> None:
    cfg = OptimConfig(lr=1.0, warmup_iters=0, power=2.0, min_lr=0.1)
    assert lr_factor(50, 100, cfg) == pytest.approx(0.9 * 0.25 + 0.1)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.1)


def test_set_lr_scales_head_group() -> None:
    cfg = OptimConfig(lr=1e-3, warmup_iters=0)
    opt = build_optimizer(_Toy(), cfg)
    base = set_lr(opt, 50, 100, cfg)
    assert base == pytest.approx(5e-4)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([5e-4, 5e-3])


@pytest.mark.parametrize(
    "kwargs", [{"lr": 0}, {"warmup_iters": -1}, {"warmup_ratio": 0}, {"power": 0}, {"min_lr": -1}]
)
def test_bad_values_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        OptimConfig(**kwargs)


def test_frozen_parameters_are_left_out() -> None:
    model = _Toy()
    model.decode_head.requires_grad_(False)
    n = sum(len(g["params"]) for g in param_groups(model, OptimConfig()))
    assert n == 6 and torch.is_tensor(next(model.parameters()))
