"""Named training presets sized for a 2-core CPU (the same configs run unchanged on CUDA).

* ``tiny``    — a few iterations on the tiny SynthCity split; for tests and smoke runs (seconds).
* ``quick``   — a short run: source-only finishes in about 5 minutes on 2 CPU cores.
* ``default`` — the benchmark preset (docs/BENCHMARKS.md): 1500 iterations.
* ``long``    — the default recipe for 16,000 iterations, evaluated and snapshotted at √2-spaced
  iterations (learning curves: ``python -m dida.bench --suite curves``).
* ``showcase`` — the recipe that won the equal-CPU comparison of the learning curves, at the
  longest schedule (the shipped models: ``python -m dida.bench --suite showcase``); adaptation
  starts from its source-only model with the methods' published options.

Each preset is a plain dict of TrainConfig fields; ``preset_config`` builds the TrainConfig.
"""

from __future__ import annotations

from typing import Any

from dida.config import TrainConfig

# Calibrated on SynthCity (docs/BENCHMARKS.md, "Calibrating the CPU presets"): no ImageNet weights
# offline, so a higher LR than DAFormer's 6e-5 with its head x10, and no stochastic depth or dropout
# in runs this short (600-iteration oracle probes: head x1 18.9, head x10 26.7, + no drop 27.7 mIoU).
_CPU_MODEL = {"backbone": "mit_b0", "embed_dim": 64, "drop_path_rate": 0.0, "dropout": 0.0}
_FROM_SCRATCH = {"lr": 6e-4, "head_lr_mult": 10.0}
_SYNTHCITY_DATA = {
    "source_root": "data/synthcity",
    "target_root": "data/synthcity",
    "synthcity_preset": "default",
    "crop": [256, 256],
    "batch_size": 2,
}

LONG_ITERS = 16000


def curve_snapshots(iters: int) -> list[int]:
    """The √2-spaced learning-curve iterations 250, 354, 500, 707, 1000, ... up to ``iters``."""
    points, k = [], 0
    while round(250 * 2 ** (k / 2)) <= iters:
        points.append(round(250 * 2 ** (k / 2)))
        k += 1
    return points


CURVE_SNAPSHOTS = curve_snapshots(LONG_ITERS)
"""250, 354, 500, 707, 1000, ..., 11314, 16000."""

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
        "eval_interval": 500,
        "log_interval": 10,
        "checkpoint_interval": 250,
        "model": _CPU_MODEL,
        "optim": {**_FROM_SCRATCH, "warmup_iters": 100},
        "data": {**_SYNTHCITY_DATA, "val_images": 100},
    },
    "default": {
        "iters": 1500,
        "eval_interval": 500,
        "log_interval": 20,
        "checkpoint_interval": 500,
        "model": _CPU_MODEL,
        "optim": {**_FROM_SCRATCH, "warmup_iters": 150},
        "data": {**_SYNTHCITY_DATA, "val_images": None},
    },
    "long": {
        "iters": LONG_ITERS,
        "eval_interval": 0,
        "log_interval": 50,
        "checkpoint_interval": 500,
        "snapshot_iters": CURVE_SNAPSHOTS,
        "model": _CPU_MODEL,
        "optim": {**_FROM_SCRATCH, "warmup_iters": 150},
        "data": {**_SYNTHCITY_DATA, "val_images": None},
    },
}
SHOWCASE_RECIPE: dict[str, Any] = {"model": {**_CPU_MODEL, "embed_dim": 32}, "iters": 27000}
"""What the showcase recipe changes in ``long`` (top-level keys replace ``long``'s: a whole
``model`` dict): decoder width 32 for 27,000 iterations, the winner of the equal-CPU comparison
(docs/BENCHMARKS.md, learning curves: 63.0 mIoU at 1 CPU-h against 58.6 for width 64)."""
PRESETS["showcase"] = {**PRESETS["long"], **SHOWCASE_RECIPE}
PRESETS["showcase"]["snapshot_iters"] = curve_snapshots(PRESETS["showcase"]["iters"])


# Runs of 1-2k iterations instead of DAFormer's 40k: the EMA teacher averages over ~100 iterations
# (alpha 0.99, as in DACS) instead of ~1000, and DIDA's bank starts after 20 % of the run (features of
# a network trained from scratch are random before) and is renewed as much over the run as the
# official code's bank (0.999 per update x 800 updates leaves 45 % of the start; here each slot is
# refreshed ~8 times, 0.9^8 = 0.43). The momentum 0.9 applies to both DIDA modes: the released
# code's combination (bank precomputed from the starting model and nearly fixed) needs
# `--set method.bank_momentum=0.999` at these presets.
# ProDA's target losses likewise wait for 20 % of the run (`source_init_iters`): the official pipeline
# starts them from a warm-up model (43 mIoU); from a 100-iteration student they taught the student its
# own noise (15.9 mIoU at default, below source-only's 27.9; docs/BENCHMARKS.md).
# MIC-style and DIDA + MIC take the teacher of DAFormer-style and DIDA (MIC shares the host's
# teacher and pseudo-labels); their masking keeps MIC's values (ratio 0.7, 16-px patches at 256 px).
_SHORT_RUN = {"alpha": 0.99}
_DIDA_SHORT = {**_SHORT_RUN, "bank_momentum": 0.9}
METHOD_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {},
    "quick": {
        "daformer": _SHORT_RUN,
        "proda": {**_SHORT_RUN, "source_init_iters": 200},
        "dida": {**_DIDA_SHORT, "bank_start": 200},
        "mic": _SHORT_RUN,
        "dida_mic": {**_DIDA_SHORT, "bank_start": 200},
    },
    "default": {
        "daformer": _SHORT_RUN,
        "proda": {**_SHORT_RUN, "source_init_iters": 300},
        "dida": {**_DIDA_SHORT, "bank_start": 300},
        "mic": _SHORT_RUN,
        "dida_mic": {**_DIDA_SHORT, "bank_start": 300},
    },
    "showcase": {},  # warm starts of 8,000 iterations: the methods' published options
}
"""Per preset, per method: method options that differ from the method's defaults (why: beside each)."""


def preset_config(preset: str, method: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of ``preset`` for ``method`` (the preset's method options included);
    unknown presets raise with the valid names."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
    options = dict(METHOD_OPTIONS.get(preset, {}).get(method, {}))
    options.update(overrides.pop("method_options", {}))
    return TrainConfig(method=method, **{**PRESETS[preset], "method_options": options, **overrides})
