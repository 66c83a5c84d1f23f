"""The training step as the profiler runs it: a preset's config and data, the model, method and
AdamW built as ``dida.train`` builds them (``Trainer``), the ways of running it (``Variant``: thread
count, channels_last, torch.compile), the loop's real step (``full_step``) and its timing (``Timing``).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from dida.config import TrainConfig
from dida.data.uda import UDAData, build_uda_data
from dida.methods.base import Batch, Method, MethodContext
from dida.methods.registry import build_method, trained_domains
from dida.model import SegModel
from dida.optim import build_optimizer, set_lr
from dida.presets import preset_config

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
    base = Variant(f"baseline ({threads_label(threads)})", threads)
    other = 2 if threads == 1 else 1
    table = {
        "threads": Variant(threads_label(other), other),
        "channels_last": replace(base, name="channels_last", channels_last=True),
        "compile": replace(base, name="torch.compile", compiled=True),
    }
    return {base.name: base, **{table[n].name: table[n] for n in names}}


def threads_label(n: int) -> str:
    """``n`` as the tables write it: '1 thread', '2 threads'."""
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
    """One iteration in the loop's order (``dida.loop._train_step`` without its finite checks)."""
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


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


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
