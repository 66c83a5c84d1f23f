"""Step time and peak memory of every method on the same model and batch, side by side.

    python -m scripts.bench_methods [--iters 12] [--crop 256 256] [--ks 100 150 200 250 300]
    python -m scripts.bench_methods --rows modes --repeats 3   # DIDA's modes and MIC at K = 300

Each configuration runs in a fresh subprocess (so peak memory is its own): a fixed random batch
(2 source + 2 target crops), the default CPU model (mit_b0, embed_dim 64), ``--warmup`` untimed
iterations, then ``--iters`` timed iterations of step + backward + AdamW step + after_step. Reported:
median ms per iteration (wall clock, and CPU time of the stepping thread, which a loaded machine
disturbs less), the ratio to source-only, and peak memory — on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak resident set size sampled every millisecond during
all iterations, minus the resident size once model, method and batch are built ("step peak": activations,
gradients, optimizer state, the bank), plus the absolute peak.
DIDA's bank update runs every iteration here (update_interval=1), its worst case; a precomputed bank
is ready after its first step (``bank_init_images=2``), except in the "collecting" row, which times
the steps that gather the precompute's images (one extra forward of the frozen starting model).
Each subprocess uses ``--threads`` torch threads (default 1).
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
    opt, batch, times, cpu = build_optimizer(model, OptimConfig()), _batch(crop, device), [], []
    base, sampler = _rss_mb(), _PeakSampler()
    sampler.start()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for it in range(warmup + iters):
        t0, c0 = time.perf_counter(), time.thread_time()
        loss = sum(m.step(batch, it).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(it)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    sampler.running = False
    sampler.join()
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {
        "ms": 1000 * statistics.median(times[warmup:]),
        "cpu_ms": 1000 * statistics.median(cpu[warmup:]),
        "step_peak_mb": cuda_peak if cuda_peak is not None else sampler.peak - base,
        "abs_peak_mb": sampler.peak,
    }


_RELEASED = {"mode": "released", "bank_init_images": 2}
_PAPER_NEW = {"ins_weight": "confidence", "centre": True, "pseudo_upsample": "logits"}
MODE_ROWS: list[tuple[str, str, dict]] = [
    ("source_only", "source_only", {}),
    ("daformer", "daformer", {}),
    ("mic", "mic", {}),
    ("dida paper", "dida", {}),
    ("dida paper, weighted + centred", "dida", _PAPER_NEW),
    ("dida paper, label-res slots", "dida", {"slot_resolution": "label"}),
    ("dida released (faithful)", "dida", _RELEASED),
    ("dida released, collecting", "dida", {**_RELEASED, "bank_init_images": 10**6}),
    ("dida released, online 1/4", "dida", {"mode": "released", "bank_init": "online",
                                           "slot_resolution": "feature"}),
    ("dida_mic", "dida_mic", {}),
]  # fmt: skip
"""DIDA's modes and MIC at K = 300 (bank updates every iteration: ``update_interval=1``)."""


def configurations(ks: list[int]) -> list[tuple[str, str, dict]]:
    rows = [(name, name, {}) for name in ("source_only", "oracle", "daformer")]
    rows.insert(2, ("proda", "proda", {"source_init_iters": 0}))  # time the full step, not the init
    rows += [("dida (released)", "dida", {**_RELEASED, "update_interval": 1})]
    rows += [(f"dida K={k}", "dida", {"bank_size": k, "update_interval": 1}) for k in ks]
    return rows


def mode_configurations() -> list[tuple[str, str, dict]]:
    bank = {"bank_size": 300, "update_interval": 1}
    return [(label, m, {**bank, **o} if m.startswith("dida") else o) for label, m, o in MODE_ROWS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--crop", type=int, nargs=2, default=(256, 256))
    p.add_argument("--ks", type=int, nargs="+", default=[100, 150, 200, 250, 300])
    p.add_argument("--rows", choices=("methods", "modes"), default="methods")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="interleaved passes; medians reported")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        name, options = json.loads(args.one)
        print(json.dumps(run_one(name, options, tuple(args.crop), args.warmup, args.iters)))
        return
    rows = configurations(args.ks) if args.rows == "methods" else mode_configurations()
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in rows}
    for _ in range(args.repeats):  # interleaved: load changes hit every row alike
        for label, name, options in rows:
            runs[label].append(_run_subprocess(name, options, args))
            print(f"{label:>18}: {runs[label][-1]}", file=sys.stderr, flush=True)
    results = {
        label: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for label, rs in runs.items()
    }
    _print_table(results)


def _run_subprocess(name: str, options: dict, args: argparse.Namespace) -> dict:
    """One configuration in a fresh interpreter (its own peak memory)."""
    cmd = [sys.executable, "-m", "scripts.bench_methods", "--one", json.dumps([name, options])]
    cmd += [
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
        "--crop",
        *map(str, args.crop),
    ]
    cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _print_table(results: dict) -> None:
    so, daf = results["source_only"], results["daformer"]
    print("| method | ms / iteration | CPU ms / iteration | × source-only (CPU) | "
          "× DAFormer-style (CPU) | step peak (MB) | × DAFormer-style | absolute peak RSS (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['ms']:.0f} | {r['cpu_ms']:.0f} | {r['cpu_ms'] / so['cpu_ms']:.2f} | "
            f"{r['cpu_ms'] / daf['cpu_ms']:.2f} | {r['step_peak_mb']:.0f} | "
            f"{r['step_peak_mb'] / daf['step_peak_mb']:.2f} | {r['abs_peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
