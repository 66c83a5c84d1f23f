"""Cost of the engine functions behind the app's views (dida.visualize, dida.explain, dida.analysis).

* explain a pixel of a 256x512 image with a mit_b0 / D=64 model and a K=300 bank: cold (forward
  pass), warm (another pixel of the cached image), and a tp change;
* UMAP of 300x64 bank features: import, first fit and transform (cold, numba compiles), then again
  (warm); PCA of the same;
* colouring a 256x512 label map: colorize + overlay, outline, error / diff / confidence / entropy.

    python -m scripts.bench_views                      # from the repo root
    python -m scripts.bench_views --fresh-numba-cache  # cold UMAP without numba's disk cache

Times are milliseconds; repeated ones print "median / min" (the minimum is the least disturbed on
a shared machine); cold ones are single runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

SIZE = (256, 512)
SLOTS, DIM = 300, 64


def timed_ms(fn: Callable[[], object], iters: int, warmup: int = 1) -> str:
    """'median / min' milliseconds over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return f"{statistics.median(times):.2f} / {min(times):.2f}"


def once_ms(fn: Callable[[], object]) -> str:
    start = time.perf_counter()
    fn()
    return f"{1000 * (time.perf_counter() - start):.0f}"


def bank_snapshot(generator: torch.Generator):
    from dida.bank import BankSnapshot, allocate_slot_labels

    return BankSnapshot(
        iteration=0,
        features=torch.rand(SLOTS, DIM, generator=generator).half(),
        labels=allocate_slot_labels(SLOTS),
        ages=torch.zeros(SLOTS, dtype=torch.long),
        source_ids=torch.full((SLOTS,), -1),
        changed=torch.zeros(SLOTS, dtype=torch.bool),
    )


def bench_explain(iters: int) -> dict[str, str]:
    from dida.explain import ImageFeatureCache, distribution_over_tps, explain_pixel
    from dida.model import ModelConfig, SegModel

    generator = torch.Generator().manual_seed(0)
    model = SegModel(ModelConfig("mit_b0", embed_dim=DIM), load_backbone_weights=False)
    bank = bank_snapshot(generator)
    image = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    cache = ImageFeatureCache()
    points = iter(np.random.default_rng(1).integers(0, SIZE, (10_000, 2)))  # (y, x)

    def another_pixel() -> None:
        y, x = next(points)
        explain_pixel(model, image, bank, int(x), int(y), 0.1, cache=cache)

    images = iter(np.random.default_rng(2).integers(0, 256, (2 + iters, *SIZE, 3), dtype=np.uint8))
    tps = iter(np.linspace(0.01, 1.0, 10_000))
    feature = torch.rand(DIM, generator=generator)
    return {
        "explain_pixel cold (forward + cache fill)": once_ms(
            lambda: explain_pixel(model, image, bank, 10, 20, 0.1, cache=cache)
        ),
        "explain_pixel new image (forward, warm process)": timed_ms(
            lambda: explain_pixel(model, next(images), bank, 10, 20, 0.1, cache=cache), iters // 4
        ),
        "explain_pixel warm (another pixel)": timed_ms(another_pixel, iters),
        "explain_pixel tp change (same pixel)": timed_ms(
            lambda: explain_pixel(model, image, bank, 10, 20, float(next(tps)), cache=cache), iters
        ),
        "distribution_over_tps (5 tps)": timed_ms(
            lambda: distribution_over_tps(feature, bank, (0.0, 0.05, 0.1, 0.5, 1.0)), iters
        ),
    }


def bench_projection(iters: int) -> dict[str, str]:
    rng = np.random.default_rng(0)
    fit_set = rng.random((SLOTS, DIM), dtype=np.float32)
    later = fit_set + rng.normal(0, 0.05, fit_set.shape).astype(np.float32)
    from dida.analysis import Projector, import_umap, pca_2d

    row = {"import umap": once_ms(import_umap)}
    projector = Projector()
    row["UMAP fit 300x64 cold"] = once_ms(lambda: projector.fit(fit_set))
    row["UMAP transform 300x64 cold"] = once_ms(lambda: projector.transform(later))
    row["UMAP fit 300x64 warm"] = once_ms(lambda: Projector().fit(fit_set))
    row["UMAP transform 300x64 warm"] = timed_ms(lambda: projector.transform(later), iters)
    row["PCA 300x64"] = timed_ms(lambda: pca_2d(fit_set), iters)
    return row


def bench_visualize(iters: int) -> dict[str, str]:
    from dida import visualize as viz

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    blocks = rng.integers(0, 19, (SIZE[0] // 16, SIZE[1] // 16), dtype=np.uint8)
    label = np.kron(blocks, np.ones((16, 16), dtype=np.uint8))  # (256, 512) regions of 16x16
    other = np.roll(label, 5, axis=1)
    probs = torch.rand(19, *SIZE).softmax(0).numpy()
    return {
        "colorize + overlay": timed_ms(
            lambda: viz.overlay(image, viz.colorize(label, "cvd"), 0.5), iters
        ),
        "add_outline": timed_ms(lambda: viz.add_outline(image, label), iters),
        "error_map": timed_ms(lambda: viz.error_map(other, label), iters),
        "diff_map": timed_ms(lambda: viz.diff_map(other, label, label), iters),
        "confidence_map (19 classes)": timed_ms(lambda: viz.confidence_map(probs, 0.968), iters),
        "entropy_map (19 classes)": timed_ms(lambda: viz.entropy_map(probs), iters),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=20, help="repeats of the warm timings")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--fresh-numba-cache", action="store_true", help="compile umap into an empty numba cache"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.fresh_numba_cache:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-")
    from dida.analysis import numba_cache_dir

    cache = numba_cache_dir()
    print(f"torch {torch.__version__}, {args.threads} threads; image {SIZE[0]}x{SIZE[1]}, "
          f"bank K={SLOTS} D={DIM}; numba cache {cache} ({len(list(Path(cache).rglob('*')))} files)")  # fmt: skip
    for title, bench in (
        ("visualize", bench_visualize),
        ("explain", bench_explain),
        ("projection", bench_projection),
    ):
        print(f"\n{title} (ms)")
        for name, value in bench(args.iters).items():
            print(f"  {name:<44} {value}")


if __name__ == "__main__":
    main()
