"""AdamW with DAFormer's parameter groups and its warmup + poly learning-rate schedule (METHOD.md §1.4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class OptimConfig:
    """AdamW and schedule settings; defaults are DAFormer's."""

    lr: float = 6e-5
    """Base learning rate of the encoder."""
    head_lr_mult: float = 10.0
    """Multiplier for parameters whose name contains "head" (the decoder)."""
    weight_decay: float = 0.01
    """Decoupled weight decay; 0 for parameters whose name contains "norm" (LayerNorms)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_iters: int = 1500
    """Linear warmup length in iterations (0 disables)."""
    warmup_ratio: float = 1e-6
    """LR factor at iteration 0 of the warmup."""
    power: float = 1.0
    """Exponent of the poly decay ``(1 - t / T) ** power``."""
    min_lr: float = 0.0
    """Floor of the poly decay."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.lr <= 0 or self.head_lr_mult <= 0:
            raise ValueError(f"lr ({self.lr}) and head_lr_mult ({self.head_lr_mult}) must be > 0")
        if self.warmup_iters < 0 or not 0 < self.warmup_ratio <= 1:
            raise ValueError("warmup_iters must be >= 0 and warmup_ratio in (0, 1]")
        if self.power <= 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise ValueError("power must be > 0; min_lr and weight_decay must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into (lr multiplier, weight decay) groups, mmcv-style.

    The first matching key wins, "head" before "norm" (mmcv sorts keys by length, then name).
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "head" in name:
            key = (cfg.head_lr_mult, cfg.weight_decay)
        elif "norm" in name:
            key = (1.0, 0.0)
        else:
            key = (1.0, cfg.weight_decay)
        groups.setdefault(key, []).append(param)
    return [
        {"params": ps, "lr_mult": mult, "lr": cfg.lr * mult, "weight_decay": wd}
        for (mult, wd), ps in groups.items()
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``param_groups(model, cfg)``."""
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas)


def lr_factor(it: int, max_iters: int, cfg: OptimConfig) -> float:
    """Schedule factor at iteration ``it``: poly decay times linear warmup (mmcv semantics)."""
    progress = min(it, max_iters) / max(max_iters, 1)
    factor = ((cfg.lr - cfg.min_lr) * (1.0 - progress) ** cfg.power + cfg.min_lr) / cfg.lr
    if it < cfg.warmup_iters:
        k = (1.0 - it / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
        factor *= 1.0 - k
    return factor


def set_lr(optimizer: torch.optim.Optimizer, it: int, max_iters: int, cfg: OptimConfig) -> float:
    """Set every group's LR for iteration ``it``; returns the encoder LR."""
    factor = lr_factor(it, max_iters, cfg)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * group.get("lr_mult", 1.0) * factor
    return cfg.lr * factor
