"""Named training presets sized for a 2-core CPU (the same configs run unchanged on CUDA).

* ``tiny``    — a few iterations on the tiny SynthCity split; for tests and smoke runs (seconds).
* ``quick``   — a short run: source-only finishes in about 5 minutes on 2 CPU cores.
* ``default`` — the benchmark preset (docs/BENCHMARKS.md).

Each preset is a plain dict of TrainConfig fields; ``preset_config`` builds the TrainConfig.
"""

from __future__ import annotations

from typing import Any

_CPU_MODEL = {"backbone": "mit_b0", "embed_dim": 64}
_FROM_SCRATCH = {"lr": 6e-4, "head_lr_mult": 1.0}  # no ImageNet weights offline: higher LR, head x1
_SYNTHCITY_DATA = {
    "source_root": "data/synthcity",
    "target_root": "data/synthcity",
    "synthcity_preset": "default",
    "crop": [256, 256],
    "batch_size": 2,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "iters": 4,
        "eval_interval": 0,
        "log_interval": 1,
        "checkpoint_interval": 2,
        "model": {"backbone": "mit_b0", "embed_dim": 32, "drop_path_rate": 0.0},
        "optim": {"lr": 6e-4, "head_lr_mult": 1.0, "warmup_iters": 2},
        "data": {
            "source_root": "data/synthcity-tiny",
            "target_root": "data/synthcity-tiny",
            "synthcity_preset": "tiny",
            "crop": [64, 64],
            "batch_size": 2,
            "val_images": 4,
        },
    },
    "quick": {
        "iters": 1000,
        "eval_interval": 250,
        "log_interval": 10,
        "checkpoint_interval": 250,
        "model": _CPU_MODEL,
        "optim": {**_FROM_SCRATCH, "warmup_iters": 100},
        "data": {**_SYNTHCITY_DATA, "val_images": 100},
    },
    "default": {
        "iters": 3000,
        "eval_interval": 500,
        "log_interval": 20,
        "checkpoint_interval": 500,
        "model": _CPU_MODEL,
        "optim": {**_FROM_SCRATCH, "warmup_iters": 200},
        "data": {**_SYNTHCITY_DATA, "val_images": None},
    },
}


METHOD_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {"tiny": {}, "quick": {}, "default": {}}
"""Per preset, per method: method options that differ from the method's defaults (why: beside each)."""


def preset_config(preset: str, method: str, **overrides: Any):
    """The TrainConfig of ``preset`` for ``method`` (the preset's method options included);
    unknown presets raise with the valid names."""
    from dida.train import TrainConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
    options = dict(METHOD_OPTIONS.get(preset, {}).get(method, {}))
    options.update(overrides.pop("method_options", {}))
    return TrainConfig(method=method, **{**PRESETS[preset], "method_options": options, **overrides})
