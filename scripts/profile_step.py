"""Cost of one training step of a preset's recipe: where the time goes, FLOP/s, what speeds it up.

    python -m scripts.profile_step              # default preset; ~10 min on the busy 2-core machine
    python -m scripts.profile_step --quick      # 1-2 minute smoke (fewer repeats, no compile)

1. Phase profile. The step is re-created outside the method from its own pieces, in the order
   ``method.step`` runs them: the student's encoder and decoder (``SegModel.encode`` / ``decode``),
   the losses, the EMA teacher's view, pseudo-labels + ClassMix, DIDA's bank and instance level;
   then backward, AdamW and the EMA update. Every region is timed, as is the next batch of the
   ``UDAData.batches`` stream. The real step (``method.step`` + backward + AdamW + ``after_step``,
   the loop's order) is timed on the same batch, interleaved, so the parts can be checked against it.
   DIDA runs with ``bank_start=0`` so that the profiled steps include the bank (filled online every
   iteration until full: the bank's worst case).
2. FLOP/s: FLOPs of ``method.step`` + backward (``FlopCounterMode`` with two corrections, see
   ``FLOP_FIXES``) over the real step's median time, against the fp32 GEMM rate (a 2048² matmul,
   median) measured in the same loop.
3. Variants, interleaved with the baseline in one loop: the other thread count (2 for the baseline's
   1 thread, the setting of the benchmark trainings), channels_last, torch.compile (default mode;
   the first steps, which compile, are reported apart); then data loading inline vs in DataLoader
   workers (``DataConfig.workers``, alternating blocks of iterations). Every variant that is faster
   than the baseline has its loss curve (``--curve-steps`` steps at the peak learning rate, fixed
   seed, the same batches) compared with the baseline's.

Times are wall-clock on a shared machine: compare numbers measured in the same run, not absolute ms.
The pieces live in ``scripts/profiling/`` (trainer, phased, flops, measure, tables); this file is the
command line.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import torch

from dida.presets import PRESETS
from scripts.profiling.flops import step_flops
from scripts.profiling.measure import (
    Profile,
    loss_curve,
    profile_method,
    time_variants,
    time_workers,
    top_ops,
)
from scripts.profiling.phased import PHASED_LOSSES
from scripts.profiling.tables import (
    curve_note,
    data_table,
    ops_table,
    profile_table,
    speed_up,
    variant_table,
)
from scripts.profiling.trainer import (
    VARIANT_NAMES,
    build_data,
    build_trainer,
    build_variants,
    cpus,
    load_config,
    num_threads,
    threads_label,
    walls,
)

NOISE_SCALE = 2.0**-23
"""Relative weight change of the loss curves' noise reference: one fp32 rounding step."""


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _section(title: str) -> None:
    print(f"\n## {title}  (load {_load()})\n", flush=True)


def run_profiles(args: argparse.Namespace) -> dict[str, Profile]:
    """Profile every ``args.methods`` step and print the table."""
    _section(f"Phase profile, {threads_label(args.threads)}, {args.repeats} repeats")
    profiles = {m: profile_method(load_config(args.preset, m, args.data), args.repeats)
                for m in args.methods}  # fmt: skip
    print(profile_table(list(profiles.values())))
    return profiles


def run_variants(args: argparse.Namespace, profile: Profile | None) -> None:
    """Variants of ``args.variant_method``'s step: timing, FLOP/s, loss curves, data workers."""
    cfg = load_config(args.preset, args.variant_method, args.data)
    data = build_data(cfg)
    variants = build_variants(args.variants, args.threads)
    trainers = {n: build_trainer(cfg, data.source_class_pixels, v) for n, v in variants.items()}
    stream = data.batches()
    batches = [next(stream) for _ in range(max(args.curve_steps, 2))]
    stream.close()
    baseline = next(iter(variants))
    base = trainers[baseline]
    flops = step_flops(base, batches[0], 0)
    _section(f"Top torch ops of one {args.variant_method} step (baseline)")
    print(ops_table(top_ops(base, batches[1], 1)))
    _section(f"Variants of the {args.variant_method} step, interleaved, {args.repeats} repeats")
    times = time_variants(trainers, batches, args.repeats)
    start = cfg.optim.warmup_iters
    faster = [n for n in trainers if max(speed_up(times, n, c) for c in (walls, cpus)) > 1.0]
    checked = [baseline, *(n for n in faster if n != baseline)]
    curves = {n: loss_curve(trainers[n], batches[: args.curve_steps], start) for n in checked}
    print(variant_table(times, flops, curves, variants))
    noise = loss_curve(base, batches[: args.curve_steps], start, perturb=NOISE_SCALE)
    print(curve_note(curves[baseline], noise, start, cfg.seed))
    _section(f"Data loading inline vs DataLoader workers ({args.variant_method} step)")
    print(data_table(time_workers(cfg, base, args.blocks, args.block_len), profile))


def build_parser() -> argparse.ArgumentParser:
    """The CLI; ``parse_args`` fills the defaults that depend on ``--quick``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--data", help="SynthCity root (source and target) instead of the preset's")
    p.add_argument("--methods", nargs="+", choices=sorted(PHASED_LOSSES))
    p.add_argument("--variant-method", choices=sorted(PHASED_LOSSES), default="source_only")
    p.add_argument("--variants", nargs="*", choices=VARIANT_NAMES)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads of the profile and baseline"
    )
    p.add_argument("--repeats", type=int, help="timed repeats (default 5; --quick 2)")
    p.add_argument("--curve-steps", type=int, help="loss-curve steps (default 30; --quick 4)")
    p.add_argument("--blocks", type=int, help="data-loading blocks per worker count (default 3)")
    p.add_argument("--block-len", type=int, default=6, help="iterations per data-loading block")
    p.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Arguments with the defaults of a full or a ``--quick`` run filled in."""
    args = build_parser().parse_args(argv)
    quick = args.quick
    defaults = {
        "methods": ["source_only", "daformer"] if quick else ["source_only", "daformer", "dida"],
        "variants": ["threads", "channels_last"] if quick else list(VARIANT_NAMES),
        "repeats": 2 if quick else 5,
        "curve_steps": 4 if quick else 30,
        "blocks": 1 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.block_len = min(args.block_len, 3)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run every section, printing markdown tables and the load average at the start and end."""
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"# Training step cost: preset {args.preset}, torch {torch.__version__}")
    print(f"1/5/15-min load average at the start: {_load()} ({os.cpu_count()} cores)")
    with num_threads(args.threads):
        profiles = run_profiles(args)
        run_variants(args, profiles.get(args.variant_method))
    print(f"\n1/5/15-min load average at the end: {_load()}; "
          f"total {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
