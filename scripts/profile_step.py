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
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_backward_flop,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from dida.config import TrainConfig
from dida.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from dida.data.uda import UDAData, build_uda_data
from dida.methods.base import Batch, Method, MethodContext
from dida.methods.common import seg_ce, strong_augment
from dida.methods.registry import build_method, trained_domains
from dida.model import SegModel, SegOutput
from dida.optim import build_optimizer, set_lr
from dida.presets import PRESETS, preset_config

GEMM_SIZE = 2048
NOISE_SCALE = 2.0**-23
"""Relative weight change of the loss curves' noise reference: one fp32 rounding step."""
aten = torch.ops.aten
BANK_METHODS = ("dida",)


@dataclass(frozen=True)
class Variant:
    """One way of running the same step."""

    name: str
    threads: int = 1
    channels_last: bool = False
    compiled: bool = False


VARIANT_NAMES = ("threads", "channels_last", "compile")
"""``--variants``: the other thread count (1 <-> 2), channels_last, torch.compile (default mode)."""


def build_variants(names: Sequence[str], threads: int) -> dict[str, Variant]:
    """The baseline (``threads`` torch threads) first, then the named variants of it."""
    base = Variant(f"baseline ({_threads(threads)})", threads)
    other = 2 if threads == 1 else 1
    table = {
        "threads": Variant(_threads(other), other),
        "channels_last": replace(base, name="channels_last", channels_last=True),
        "compile": replace(base, name="torch.compile", compiled=True),
    }
    return {base.name: base, **{table[n].name: table[n] for n in names}}


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


@dataclass
class Trainer:
    """What one training iteration needs, and the state it started from (for ``reset``)."""

    cfg: TrainConfig
    model: SegModel
    method: Method
    optimizer: torch.optim.Optimizer
    variant: Variant = field(default_factory=lambda: Variant("baseline"))
    initial: tuple[dict, dict] = field(default_factory=lambda: ({}, {}))


class Phases:
    """Wall seconds per named region of a step, summed over the region's calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Building and running a step


def load_config(preset: str, method: str, data_root: str | None = None) -> TrainConfig:
    """The preset's TrainConfig for ``method`` (DIDA's bank from iteration 0; ``data_root`` as
    ``dida.train --data``)."""
    options = {"bank_start": 0} if method in BANK_METHODS else {}
    cfg = preset_config(preset, method, method_options=options)
    if data_root is None:
        return cfg
    return replace(cfg, data=replace(cfg.data, source_root=data_root, target_root=data_root))


def build_data(cfg: TrainConfig, workers: int = 0) -> UDAData:
    """The run's data, as the loop builds it (the oracle draws labelled target crops)."""
    target_labels = trained_domains(cfg.method) == ("target",)
    data_cfg = replace(cfg.data, workers=workers)
    return build_uda_data(data_cfg, cfg.seed, target_labels=target_labels)


def networks(method: Method) -> list[nn.Module]:
    """The student and every other SegModel the method runs (the EMA teacher)."""
    others = [v for v in vars(method).values() if isinstance(v, SegModel) and v is not method.model]
    return [method.model, *others]


def build_trainer(
    cfg: TrainConfig, source_class_pixels: Sequence[int], variant: Variant | None = None
) -> Trainer:
    """Model, method and AdamW as ``dida.train`` builds them (seeded), with ``variant`` applied."""
    variant = variant or Variant("baseline")
    torch.manual_seed(cfg.seed)
    model = SegModel(cfg.model)
    ctx = MethodContext(
        num_classes=cfg.model.num_classes,
        crop=tuple(cfg.data.crop),
        max_iters=cfg.iters,
        seed=cfg.seed,
        source_class_pixels=tuple(source_class_pixels),
    )
    method = build_method(cfg.method, model, ctx, cfg.method_options)
    for net in networks(method):  # after build_method: the teacher is a copy of the plain student
        if variant.channels_last:
            net.to(memory_format=torch.channels_last)
        if variant.compiled:
            net.compile()
    initial = (copy.deepcopy(model.state_dict()), copy.deepcopy(method.state_dict()))
    return Trainer(cfg, model, method, build_optimizer(model, cfg.optim), variant, initial)


def reset(t: Trainer) -> None:
    """Back to the weights, method state (teacher, bank, generator), AdamW state and global RNG
    (dropout) of the build."""
    torch.manual_seed(t.cfg.seed)
    t.model.load_state_dict(t.initial[0])
    t.method.load_state_dict(copy.deepcopy(t.initial[1]))
    t.optimizer = build_optimizer(t.model, t.cfg.optim)


def prepare(batch: Batch, variant: Variant) -> Batch:
    """The batch as the variant feeds it (channels_last images)."""
    if not variant.channels_last:
        return batch
    fmt = torch.channels_last
    return {
        domain: {k: v.contiguous(memory_format=fmt) if k == "image" else v for k, v in part.items()}
        for domain, part in batch.items()
    }


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """torch intra-op threads set to ``n`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def full_step(t: Trainer, batch: Batch, it: int) -> dict[str, Tensor]:
    """One iteration in the loop's order (``dida.train._train_step`` without its finite checks)."""
    set_lr(t.optimizer, it, t.cfg.iters, t.cfg.optim)
    t.model.train()
    losses = t.method.step(batch, it)
    t.optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    t.optimizer.step()
    t.method.after_step(it)
    return losses


class Timing(NamedTuple):
    """Wall and CPU seconds of one call. CPU time is what this process used (all its threads): a
    busy machine's preemption inflates the wall time only."""

    wall: float
    cpu: float


def timed(fn: Callable[[], object]) -> Timing:
    """Run ``fn`` once and time it."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def walls(timings: Sequence[Timing]) -> float:
    """Median wall seconds."""
    return median([t.wall for t in timings])


def cpus(timings: Sequence[Timing]) -> float:
    """Median CPU seconds."""
    return median([t.cpu for t in timings])


def timed_step(t: Trainer, batch: Batch, it: int) -> Timing:
    """``full_step`` run the variant's way, timed."""
    batch = prepare(batch, t.variant)
    with num_threads(t.variant.threads):
        return timed(lambda: full_step(t, batch, it))


# ---------------------------------------------------------------------------------------------
# The step re-created from its pieces, region by region


def _student(t: Trainer, images: Tensor, ph: Phases) -> SegOutput:
    with ph("encoder forward"):
        levels = t.model.encode(images)
    with ph("decoder forward"):
        return t.model.decode(levels)


def _supervised_losses(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """SourceOnly.step (and the oracle's, on the target domain)."""
    m = t.method
    images, labels = batch[m.domain]["image"], batch[m.domain]["label"]
    if m.cfg.photometric:
        with ph("augment"):
            images = strong_augment(images, IMAGENET_MEAN, IMAGENET_STD, m.generator)
    out = _student(t, images, ph)
    with ph("loss"):
        return {f"loss_{m.domain}": seg_ce(out.logits, labels)}


def _daformer_losses(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """DAFormer.step without a feature-distance reference (the presets set none)."""
    m, src, tgt = t.method, batch["source"], batch["target"]
    out = _student(t, src["image"], ph)
    with ph("loss"):
        losses = {"loss_source": seg_ce(out.logits, src["label"])}
    with ph("teacher forward"):
        teacher = m.teacher_view(tgt["image"])
    with ph("pseudo-labels + mix"):
        view = m.mixed_view(src, tgt["image"], *m.pseudo_labels(teacher))
    out = _student(t, view.image, ph)
    with ph("loss"):
        losses["loss_target"] = seg_ce(out.logits, view.label, view.weight)
    return losses


def _dida_losses(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """DIDA.step (no MIC term): DAFormer's pieces plus the bank and the instance level."""
    m, src, tgt = t.method, batch["source"], batch["target"]
    out_s = _student(t, src["image"], ph)
    with ph("loss"):
        losses = {"loss_source": seg_ce(out_s.logits, src["label"])}
    with ph("bank + instance level"):
        m._write_bank(out_s.features.detach(), src, it)
    with ph("teacher forward"):
        teacher = m.teacher_view(tgt["image"])
    with ph("bank + instance level"):
        view_a = m.instance_view(teacher) if m.bank.filled.any() else None
    with ph("pseudo-labels + mix"):
        mixed = m.mixed_view(src, tgt["image"], *m.regenerated_pseudo_labels(teacher, view_a))
    out_m = _student(t, mixed.image, ph)
    with ph("loss"):
        losses["loss_target"] = seg_ce(out_m.logits, mixed.label, mixed.weight)
    with ph("bank + instance level"):
        ins = m.instance_term(view_a, out_m, mixed, src, it)
        losses["loss_ins"] = m.cfg.ins_lambda * ins
    return losses


PHASED_LOSSES: dict[str, Callable[[Trainer, Batch, int, Phases], dict[str, Tensor]]] = {
    "source_only": _supervised_losses,
    "oracle": _supervised_losses,
    "daformer": _daformer_losses,
    "dida": _dida_losses,
}
"""Methods whose step is re-created here -> the function computing their losses region by region."""


def phased_step(t: Trainer, batch: Batch, it: int, ph: Phases) -> dict[str, Tensor]:
    """``full_step`` with every region timed into ``ph``; the same losses and updates."""
    with ph("optimizer"):
        set_lr(t.optimizer, it, t.cfg.iters, t.cfg.optim)
    t.model.train()
    losses = PHASED_LOSSES[t.cfg.method](t, batch, it, ph)
    with ph("loss"):
        total = sum(losses.values())
    with ph("optimizer"):
        t.optimizer.zero_grad(set_to_none=True)
    with ph("backward"):
        total.backward()
    with ph("optimizer"):
        t.optimizer.step()
    if hasattr(t.method, "teacher"):
        with ph("EMA update"):
            t.method.after_step(it)
    else:
        t.method.after_step(it)
    return losses


# ---------------------------------------------------------------------------------------------
# Measurements


def gemm_time(size: int = GEMM_SIZE) -> Timing:
    """One fp32 ``size`` x ``size`` matmul at the current thread count, timed."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return timed(lambda: torch.mm(a, b))


def gemm_flops(size: int = GEMM_SIZE) -> int:
    """FLOPs of a ``size``² matmul (a multiply-add = 2)."""
    return 2 * size**3


def _conv_backward_flop(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    bias: object,
    stride: object,
    padding: object,
    dilation: object,
    transposed: bool,
    output_padding: object,
    groups: int,
    output_mask: Sequence[bool],
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """torch's ``convolution_backward`` FLOPs with the weight gradient divided by ``groups``:
    torch 2.14 counts the weight gradient of a grouped conv as a dense conv's (x256 for the
    DAFormer head's depthwise branches on 4D = 256 channels; its input gradient is right)."""
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed)
    args += (output_padding, groups)
    grad_input = conv_backward_flop(*args, [output_mask[0], False], out_val=out_shape)
    grad_weight = conv_backward_flop(*args, [False, output_mask[1]], out_val=out_shape)
    return grad_input + grad_weight // groups


def _cpu_sdpa_flop(
    query: Sequence[int], key: Sequence[int], value: Sequence[int], *args, **kw
) -> int:
    """The CPU flash-attention kernel (MiT's attention), which torch 2.14 does not count."""
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(
    grad: Sequence[int], query: Sequence[int], key: Sequence[int], value: Sequence[int], *args, **kw
) -> int:
    """Its backward (2.5 forwards, torch's count for the other attention kernels)."""
    return sdpa_backward_flop_count(grad, query, key, value)


FLOP_FIXES = {
    aten.convolution_backward: _conv_backward_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}
"""Corrections to torch's FLOP formulas (checked against hand counts in tests/test_profile_step.py)."""


def flop_counter(fixes: bool = True) -> FlopCounterMode:
    """torch's FLOP counter (multiply-add = 2 FLOPs), with ``FLOP_FIXES`` unless ``fixes=False``."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_FIXES if fixes else None)


def step_flops(t: Trainer, batch: Batch, it: int, fixes: bool = True) -> int:
    """FLOPs of ``method.step`` + backward (``flop_counter``; no optimizer step is taken)."""
    t.model.train()
    with flop_counter(fixes) as counter:
        sum(t.method.step(batch, it).values()).backward()
    t.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


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


# ---------------------------------------------------------------------------------------------
# Report


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def gflops_rate(flops: int, seconds: float) -> float:
    """GFLOP/s."""
    return flops / seconds / 1e9


def profile_table(profiles: list[Profile]) -> str:
    """Regions as rows, methods as columns: 'median ms (share of data + real step)'."""
    names = list(dict.fromkeys(n for p in profiles for n in p.names()))
    rows = []
    for name in names:
        cells = []
        for p in profiles:
            total = p.phase("data loading") + walls(p.full)
            value = p.phase(name)
            cells.append(f"{_ms(value)} ({100 * value / total:.0f} %)" if value else "—")
        rows.append([name, *cells])
    rows += _profile_checks(profiles)
    return _table(["region (ms, median)", *(p.method for p in profiles)], rows)


def _profile_checks(profiles: list[Profile]) -> list[list[object]]:
    """The rows that check the split and give the FLOP rate."""

    def parts(p: Profile) -> float:
        return median([sum(v for k, v in r.items() if k != "data loading") for r in p.phases])

    def rate(p: Profile, clock: Callable[[Sequence[Timing]], float]) -> float:
        return gflops_rate(p.flops, clock(p.full))

    def share(p: Profile, clock: Callable[[Sequence[Timing]], float]) -> str:
        return f"{100 * rate(p, clock) / gflops_rate(gemm_flops(), clock(p.gemm)):.0f} %"

    return [
        ["**sum of the regions (without data)**", *(_ms(parts(p)) for p in profiles)],
        ["re-created step, whole (without data)", *(_ms(median(p.phased_total)) for p in profiles)],
        ["**real step: method.step + backward + AdamW + after_step**",
         *(_ms(walls(p.full)) for p in profiles)],
        ["real step, CPU time", *(_ms(cpus(p.full)) for p in profiles)],
        ["data loading, CPU time", *(_ms(median(p.data_cpu)) for p in profiles)],
        ["GFLOP per step (forward + backward)", *(f"{p.flops / 1e9:.1f}" for p in profiles)],
        ["(torch's counter uncorrected)", *(f"{p.raw_flops / 1e9:.1f}" for p in profiles)],
        ["achieved GFLOP/s (wall)", *(f"{rate(p, walls):.1f}" for p in profiles)],
        ["fp32 GEMM GFLOP/s (wall), same loop",
         *(f"{gflops_rate(gemm_flops(), walls(p.gemm)):.1f}" for p in profiles)],
        ["**% of GEMM rate (wall)**", *(share(p, walls) for p in profiles)],
        ["% of GEMM rate (CPU time)", *(share(p, cpus) for p in profiles)],
    ]  # fmt: skip


def _curve_cells(curves: dict[str, list[float]], name: str, baseline: str) -> list[str]:
    """|loss − baseline loss| at the first step (forward only) and the largest over the curve."""
    if name not in curves:
        return ["slower: not checked"] * 2
    diffs = [abs(a - b) for a, b in zip(curves[name], curves[baseline], strict=True)]
    return [f"{diffs[0]:.1e}", f"{max(diffs):.1e}"]


def _curve_note(base: list[float], noise: list[float], start: int, seed: int) -> str:
    diffs = _curve_cells({"noise": noise, "base": base}, "noise", "base")
    return (
        f"\nloss curves: {len(base)} steps from iteration {start} (peak LR), seed {seed}; noise "
        f"reference, the baseline with every weight x (1 + 2^-23) (about 1 ulp): loss diff step 1 "
        f"{diffs[0]}, max {diffs[1]}\nbaseline losses: {', '.join(f'{x:.4f}' for x in base)}"
    )


def variant_table(
    times: VariantTimes, flops: int, curves: dict[str, list[float]], variants: dict[str, Variant]
) -> str:
    """Variants as rows: step ms, speed-up over the baseline, FLOP/s vs GEMM, loss differences."""
    baseline = next(iter(times.steps))
    rows = []
    for name, steps in times.steps.items():
        gemm = times.gemm[variants[name].threads]
        shares = [
            f"{100 * (flops / clock(steps)) / (gemm_flops() / clock(gemm)):.0f} %"
            for clock in (walls, cpus)
        ]
        wall = f"{_ms(walls(steps))} ({_ms(min(t.wall for t in steps))})"
        speed = [f"{speed_up(times, name, clock):.2f}" for clock in (walls, cpus)]
        first = " / ".join(f"{s:.1f}" for s in times.first_steps[name])
        rows.append([name, wall, _ms(cpus(steps)), *speed, f"{gflops_rate(flops, walls(steps)):.1f}",
                     *shares, first, *_curve_cells(curves, name, baseline)])  # fmt: skip
    header = ["variant", "wall ms, median (min)", "CPU ms", "speed-up (wall)", "speed-up (CPU)",
              "GFLOP/s (wall)", "% of GEMM (wall)", "% of GEMM (CPU)", "first steps (s)",
              "loss diff, step 1", "max loss diff"]  # fmt: skip
    return _table(header, rows)


def speed_up(
    times: VariantTimes, name: str, clock: Callable[[Sequence[Timing]], float] = walls
) -> float:
    """Baseline median step time over the variant's, by wall or CPU time."""
    return clock(next(iter(times.steps.values()))) / clock(times.steps[name])


def data_table(d: DataTimes, prof: Profile | None) -> str:
    """Iteration time per worker count, and inline data loading's share of the profiled step."""
    rows = [
        [f"{w} worker{'s' if w != 1 else ''} per domain", _ms(walls(v)), _ms(cpus(v)), len(v)]
        for w, v in d.iteration.items()
    ]
    header = ["data loading", "data + step, wall ms", "training process CPU ms", "iterations"]
    text = _table(header, rows)
    text += f"\n\nbatches identical with 0 and 1 workers: {'yes' if d.same_batches else 'NO'}"
    if prof is not None:
        data, step = prof.phase("data loading"), walls(prof.full)
        text += (
            f"\ninline data loading: {_ms(data)} ms wall, {_ms(median(prof.data_cpu))} ms CPU of "
            f"{_ms(data + step)} ms data + step = {100 * data / (data + step):.0f} % (the most a "
            "prefetching worker can save when a core is free for it)"
        )
    return text


def ops_table(ops: list[tuple[str, float, int]]) -> str:
    """The costliest ops with their share of the listed ops' time."""
    total = sum(s for _, s, _ in ops)
    rows = [[name, _ms(s), f"{100 * s / total:.0f} %", n] for name, s, n in ops]
    return _table(["op", "self CPU ms", "share of these", "calls"], rows)


# ---------------------------------------------------------------------------------------------
# CLI


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _section(title: str) -> None:
    print(f"\n## {title}  (load {_load()})\n", flush=True)


def run_profiles(args: argparse.Namespace) -> dict[str, Profile]:
    """Profile every ``args.methods`` step and print the table."""
    _section(f"Phase profile, {_threads(args.threads)}, {args.repeats} repeats")
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
    print(_curve_note(curves[baseline], noise, start, cfg.seed))
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
