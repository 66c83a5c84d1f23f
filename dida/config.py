"""The training configuration: everything needed to rebuild a run (below the loop and the presets)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dida.data.uda import DataConfig
from dida.methods.registry import method_config
from dida.model import ModelConfig
from dida.optim import OptimConfig

MAX_SEED = 2**32 - 1
"""Largest seed accepted (numpy's seeds are 32-bit)."""


@dataclass
class TrainConfig:
    """Everything needed to rebuild a run: data, model, method, optimizer, schedule, seed."""

    method: str = "source_only"
    """Method name, a key of ``dida.methods.registry.METHODS``."""
    method_options: dict[str, Any] = field(default_factory=dict)
    """Overrides of the method's config dataclass fields."""
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    iters: int = 1000
    """Total training iterations (the poly schedule decays to 0 at this point)."""
    seed: int = 0
    """Seeds weights, data order, augmentation and method randomness."""
    eval_interval: int = 250
    """Evaluate on the target validation split every N iterations (and at the end); 0 = only at the end."""
    log_interval: int = 10
    """Write a train record every N iterations."""
    checkpoint_interval: int = 250
    """Write checkpoint.safetensors every N iterations (and at the end / on stop)."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."""
    snapshot_iters: list[int] = field(default_factory=list)
    """Also evaluate at these iterations and keep the eval model as
    ``snapshots/model_<it>.safetensors`` (learning curves from one run; empty = none)."""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        method_config(self.method, self.method_options)
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED} (got {self.seed})")
        if self.iters < 1:
            raise ValueError(f"iters must be >= 1 (got {self.iters})")
        for name in ("eval_interval", "log_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        self.snapshot_iters = sorted({int(i) for i in self.snapshot_iters})
        if any(not 0 < i <= self.iters for i in self.snapshot_iters):
            raise ValueError(f"snapshot_iters must lie in 1..iters={self.iters}")

    def to_dict(self) -> dict[str, Any]:
        snapshots = {"snapshot_iters": self.snapshot_iters} if self.snapshot_iters else {}
        return {
            "method": {"name": self.method, "options": dict(self.method_options)},
            "model": self.model.to_dict(),
            "optim": self.optim.to_dict(),
            "data": asdict(self.data),
            **{k: getattr(self, k) for k in _SCALARS},
            **snapshots,  # written only when set: configs of earlier runs compare equal
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        method = d["method"]
        return cls(
            method=method["name"],
            method_options=method.get("options", {}),
            model=ModelConfig.from_dict(d["model"]),
            optim=OptimConfig(**d["optim"]),
            data=DataConfig(**d["data"]),
            **{k: d[k] for k in (*_SCALARS, "snapshot_iters") if k in d},
        )


_SCALARS = ("iters", "seed", "eval_interval", "log_interval", "checkpoint_interval", "device")
