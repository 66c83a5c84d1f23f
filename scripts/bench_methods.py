"""Step time and peak memory of every method on the same model and batch, side by side.

    python -m scripts.bench_methods [--iters 12] [--crop 256 256] [--ks 100 150 200 250 300]

Each configuration runs in a fresh subprocess (so peak memory is its own): a fixed random batch
(2 source + 2 target crops), the default CPU model (mit_b0, embed_dim 64), ``--warmup`` untimed
iterations, then ``--iters`` timed iterations of step + backward + AdamW step + after_step. Reported:
median ms per iteration, the ratio to source-only, and peak memory — on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak resident set size sampled every millisecond during
all iterations, minus the resident size once model, method and batch are built ("step peak": activations,
gradients, optimizer state, the bank), plus the absolute peak.
DIDA's bank update runs every iteration here (update_interval=1), its worst case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

import torch


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class _PeakSampler(threading.Thread):
    """Samples the resident set size every millisecond until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = _rss_mb(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.001)


def _batch(crop: tuple[int, int], device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)

    def domain() -> dict:
        label = torch.randint(0, 19, (2, crop[0] // 16, crop[1] // 16), generator=g)
        label = label.repeat_interleave(16, 1).repeat_interleave(16, 2)
        return {
            "image": torch.randn(2, 3, *crop, generator=g).to(device),
            "label": label.to(device),
        }

    return {"source": domain(), "target": domain()}


def run_one(method: str, options: dict, crop: tuple[int, int], warmup: int, iters: int) -> dict:
    """Time one configuration in this process."""
    from dida.methods.base import MethodContext
    from dida.methods.registry import build_method
    from dida.model import ModelConfig, SegModel
    from dida.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = SegModel(ModelConfig()).to(device)
    ctx = MethodContext(crop=crop, device=device, source_class_pixels=tuple([1] * 19))
    m = build_method(method, model, ctx, options)
    opt, batch, times = build_optimizer(model, OptimConfig()), _batch(crop, device), []
    base, sampler = _rss_mb(), _PeakSampler()
    sampler.start()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for it in range(warmup + iters):
        t0 = time.perf_counter()
        loss = sum(m.step(batch, it).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(it)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    sampler.running = False
    sampler.join()
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "ms": 1000 * statistics.median(times[warmup:]),
        "step_peak_mb": cuda_peak if cuda_peak is not None else sampler.peak - base,
        "abs_peak_mb": sampler.peak,
    }


def configurations(ks: list[int]) -> list[tuple[str, str, dict]]:
    rows = [(name, name, {}) for name in ("source_only", "oracle", "daformer")]
    rows.insert(2, ("proda", "proda", {"source_init_iters": 0}))  # time the full step, not the init
    rows += [("dida (released)", "dida", {"mode": "released", "update_interval": 1})]
    rows += [(f"dida K={k}", "dida", {"bank_size": k, "update_interval": 1}) for k in ks]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--crop", type=int, nargs=2, default=(256, 256))
    p.add_argument("--ks", type=int, nargs="+", default=[100, 150, 200, 250, 300])
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        name, options = json.loads(args.one)
        print(json.dumps(run_one(name, options, tuple(args.crop), args.warmup, args.iters)))
        return
    results = {}
    for label, name, options in configurations(args.ks):
        cmd = [sys.executable, "-m", "scripts.bench_methods", "--one", json.dumps([name, options])]
        cmd += [
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
            "--crop",
            *map(str, args.crop),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
        print(f"{label:>18}: {results[label]}", file=sys.stderr, flush=True)
    _print_table(results)


def _print_table(results: dict) -> None:
    so, daf = results["source_only"], results["daformer"]
    print("| method | ms / iteration | × source-only | × DAFormer-style | step peak (MB) | "
          "× DAFormer-style | absolute peak RSS (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['ms']:.0f} | {r['ms'] / so['ms']:.2f} | {r['ms'] / daf['ms']:.2f} | "
            f"{r['step_peak_mb']:.0f} | {r['step_peak_mb'] / daf['step_peak_mb']:.2f} | "
            f"{r['abs_peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
