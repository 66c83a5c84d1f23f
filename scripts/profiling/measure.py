"""The measurements: one method's step profiled region by region (``Profile``), the costliest torch
ops, the variants timed interleaved (``VariantTimes``), loss curves from the same weights and batches,
and data loading inline vs in DataLoader workers (``DataTimes``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from dida.config import TrainConfig
from dida.methods.base import Batch
from scripts.profiling.flops import gemm_time, step_flops
from scripts.profiling.phased import Phases, phased_step
from scripts.profiling.trainer import (
    Timing,
    Trainer,
    build_data,
    build_trainer,
    full_step,
    median,
    num_threads,
    prepare,
    reset,
    timed,
    timed_step,
)


@dataclass
class Profile:
    """One method's step, per repeat (seconds): the regions, the re-created and the real step."""

    method: str
    flops: int
    raw_flops: int
    """FLOPs as torch's counter gives them, without ``FLOP_FIXES``."""
    phases: list[dict[str, float]] = field(default_factory=list)
    phased_total: list[float] = field(default_factory=list)
    """Wall time of the whole re-created step (data excluded)."""
    full: list[Timing] = field(default_factory=list)
    """The real step: method.step + backward + AdamW + after_step."""
    data_cpu: list[float] = field(default_factory=list)
    gemm: list[Timing] = field(default_factory=list)

    def phase(self, name: str) -> float:
        """Median seconds of a region over the repeats (0 where a repeat lacks it)."""
        return median([p.get(name, 0.0) for p in self.phases])

    def names(self) -> list[str]:
        """The regions in the order they first ran."""
        return list(dict.fromkeys(name for p in self.phases for name in p))


def _profile_repeat(t: Trainer, stream: Iterator[Batch], it: int, prof: Profile) -> None:
    """One repeat: next batch (timed), re-created and real step on it in alternating order."""
    ph, cpu = Phases(), time.process_time()
    with ph("data loading"):
        batch = next(stream)
    prof.data_cpu.append(time.process_time() - cpu)
    order = ("phased", "full") if it % 2 == 0 else ("full", "phased")
    for kind in order:
        if kind == "phased":
            prof.phased_total.append(timed(lambda: phased_step(t, batch, it, ph)).wall)
        else:
            prof.full.append(timed(lambda: full_step(t, batch, it)))
    prof.phases.append(ph.seconds)
    prof.gemm.append(gemm_time())


def profile_method(cfg: TrainConfig, repeats: int, warmup: int = 2) -> Profile:
    """Profile ``cfg.method``'s step: FLOPs, ``warmup`` untimed steps, then ``repeats`` repeats."""
    data = build_data(cfg)
    t = build_trainer(cfg, data.source_class_pixels)
    stream = data.batches()
    batch = next(stream)
    prof = Profile(cfg.method, step_flops(t, batch, 0), step_flops(t, batch, 0, fixes=False))
    for it in range(1, warmup + 1):
        full_step(t, next(stream), it)
    for it in range(warmup + 1, warmup + 1 + repeats):
        _profile_repeat(t, stream, it, prof)
    stream.close()
    return prof


def top_ops(t: Trainer, batch: Batch, it: int, n: int = 10) -> list[tuple[str, float, int]]:
    """(op, self CPU seconds, calls) of the ``n`` costliest torch ops of one real step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        full_step(t, batch, it)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in events[:n]]


@dataclass
class VariantTimes:
    """Step timings per variant name, GEMM timings per thread count, the warm-up steps' wall
    seconds per variant (torch.compile compiles in them)."""

    steps: dict[str, list[Timing]]
    gemm: dict[int, list[Timing]]
    first_steps: dict[str, list[float]]


def time_variants(
    trainers: dict[str, Trainer], batches: list[Batch], repeats: int, warmup: int = 2
) -> VariantTimes:
    """Warm every variant up (its first steps kept: compile time), then time them interleaved,
    the order reversed every other repeat; a GEMM at 1 and 2 threads in every repeat."""
    names = list(trainers)
    first = {n: [timed_step(trainers[n], batches[0], i).wall for i in range(warmup)] for n in names}
    out = VariantTimes({n: [] for n in names}, {1: [], 2: []}, first)
    for r in range(repeats):
        batch = batches[r % len(batches)]
        for name in names if r % 2 == 0 else names[::-1]:
            out.steps[name].append(timed_step(trainers[name], batch, warmup + r))
        for threads in out.gemm:
            with num_threads(threads):
                out.gemm[threads].append(gemm_time())
    return out


def loss_curve(
    t: Trainer, batches: list[Batch], start_it: int, perturb: float = 0.0
) -> list[float]:
    """Total loss of each step from the build state, one batch per step, iterations from
    ``start_it`` (the learning-rate schedule's iteration); ``perturb`` scales every student weight
    by (1 + perturb) first (a rounding-sized change, to see how far such noise grows)."""
    reset(t)
    with torch.no_grad():
        for p in t.model.parameters():
            p.mul_(1.0 + perturb)
    losses = []
    with num_threads(t.variant.threads):
        for i, batch in enumerate(batches):
            step = full_step(t, prepare(batch, t.variant), start_it + i)
            losses.append(float(sum(v.detach() for v in step.values())))
    return losses


@dataclass
class DataTimes:
    """Iteration timings (next batch + step) per worker count, and whether the batches agree."""

    iteration: dict[int, list[Timing]]
    same_batches: bool


def batches_equal(a: Batch, b: Batch) -> bool:
    """Every tensor of the two batches equal."""
    return all(torch.equal(a[d][k], b[d][k]) for d in a for k in a[d])


def time_workers(
    cfg: TrainConfig, t: Trainer, blocks: int, block_len: int, skip: int = 2
) -> DataTimes:
    """Data + step with the batches loaded inline (workers=0) or by 1 DataLoader worker per domain,
    in alternating blocks of ``block_len`` iterations; the first ``skip`` of a block are dropped
    (its workers prefetched them during the other block)."""
    streams = {w: build_data(cfg, workers=w).batches() for w in (0, 1)}
    same = all(batches_equal(next(streams[0]), next(streams[1])) for _ in range(2))
    times: dict[int, list[Timing]] = {0: [], 1: []}
    for b in range(blocks):
        for w in (0, 1) if b % 2 == 0 else (1, 0):
            for i in range(block_len):
                timing = timed(lambda w=w, i=i: full_step(t, next(streams[w]), i))
                if i >= skip:
                    times[w].append(timing)
    for stream in streams.values():
        stream.close()
    return DataTimes(times, same)
