"""CPU cost of candidate SegModel configurations: training step, inference, parameters, memory.

Each configuration runs in its own process so that the peak RSS (``ru_maxrss``) is its own.
A training step is what a source-only iteration does: forward, bilinear x4 upsampling, pixel
cross-entropy, backward and an AdamW step (batch 2).

    python -m scripts.bench_model                    # from the repo root; default candidates
    python -m scripts.bench_model --configs mit_b0:128 mit_b1:128 --iters 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch
import torch.nn.functional as F

from dida.inference import predict
from dida.model import ModelConfig, SegModel

CROPS = ((256, 256), (256, 512))
INFER_SIZE = (256, 512)
DEFAULT_CONFIGS = ("mit_b0:32", "mit_b0:64", "mit_b0:128", "mit_b0:256", "mit_b1:64", "mit_b1:128")


def _timed_ms(fn, iters: int, warmup: int = 2) -> str:
    """'median / min' milliseconds; the minimum is the least disturbed by other processes."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return f"{statistics.median(times):.0f} / {min(times):.0f}"


def _train_step_ms(model: SegModel, crop: tuple[int, int], batch: int, iters: int) -> str:
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    x = torch.randn(batch, 3, *crop)
    y = torch.randint(0, model.config.num_classes, (batch, *crop))

    def step() -> None:
        logits = F.interpolate(model(x).logits, size=crop, mode="bilinear")  # (B, C, h, w)
        loss = F.cross_entropy(logits, y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    return _timed_ms(step, iters)


def bench_one(spec: str, threads: int, batch: int, iters: int) -> dict:
    """Measure one ``backbone:embed_dim`` configuration (runs in a fresh process)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone, dim = spec.split(":")
    model = SegModel(ModelConfig(backbone=backbone, embed_dim=int(dim)))
    row = {"config": spec, "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    for crop in CROPS:
        row[f"train_{crop[0]}x{crop[1]}_ms"] = _train_step_ms(model, crop, batch, iters)
    image = torch.randn(1, 3, *INFER_SIZE)
    row["infer_ms_per_image"] = _timed_ms(lambda: predict(model, image), iters)
    row["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def print_table(rows: list[dict]) -> None:
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, threads {args.threads}, batch {args.batch}; times in ms as "
        f"median / min of {args.iters} after 2 warm-up runs; load {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for spec in args.configs:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(bench_one, spec, args.threads, args.batch, args.iters).result())
    print_table(rows)
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
