"""What a first Compare page pays per model besides the forward pass: loading a shipped model, and
writing its prediction to the disk cache (docs/BENCHMARKS.md, "App: first launch").

    python -m scripts.bench_io [--repeats 3]

Loading: ``dida.runs.load_run_model`` (the model's meta-device skeleton given the checkpoint's
values) against building the model for real and loading the same state (what it did before).
Writing: ``dida.studio.results.npz_bytes`` (zlib level 1) against ``np.savez_compressed`` (level 6)
on one shipped model's prediction of val image 0 of ``data/synthcity``. Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dida import runs
from dida.model import SegModel

CHECKPOINTS = Path("assets/checkpoints")


def median_s(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def built_and_loaded(folder: Path) -> SegModel:
    """The former path: a meta-device fit check, a real model (random init), then the state."""
    config = runs._model_config(folder)
    state, _ = runs.load_state(folder / runs.MODEL)
    with torch.device("meta"):
        SegModel(config, load_backbone_weights=False)
    model = SegModel(config, load_backbone_weights=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


def prediction_members(folder: Path) -> dict[str, np.ndarray]:
    """The members the disk cache stores for the model's prediction of val image 0."""
    from dida.studio import Studio
    from dida.studio.predictions import quantize_probs, top_classes

    studio = Studio("data/synthcity", [], "assets")
    try:
        pred = studio.predict(f"shipped:{folder.name}", 0)
    finally:
        studio.shutdown()
    steps = quantize_probs(pred.probs)
    classes, probs = top_classes(steps)
    features = pred.features.numpy().astype(np.float16)
    return {"labels": pred.labels, "probs": steps, "features": features,
            "top_classes": classes, "top_probs": probs}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_io", description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    folders = sorted(c.parent for c in CHECKPOINTS.glob("*/config.json"))
    for folder in folders:
        new = median_s(lambda f=folder: runs.load_run_model(f), args.repeats)
        old = median_s(lambda f=folder: built_and_loaded(f), args.repeats)
        print(f"load {folder.name}: skeleton + state {new:.3f} s, built + loaded {old:.3f} s")
    from dida.studio.results import NPZ_LEVEL, npz_bytes

    members = prediction_members(folders[0])
    level = median_s(lambda: npz_bytes(**members), args.repeats)
    six = median_s(lambda: np.savez_compressed(io.BytesIO(), **members), args.repeats)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **members)
    print(
        f"cache write ({folders[0].name}, val image 0): level {NPZ_LEVEL} {level:.3f} s "
        f"({len(npz_bytes(**members)) / 1e6:.2f} MB), savez_compressed {six:.3f} s "
        f"({len(buffer.getvalue()) / 1e6:.2f} MB)"
    )


if __name__ == "__main__":
    main()
