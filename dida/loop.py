"""The one training loop for every method (its command line: :mod:`dida.train`).

The loop order never changes: (stop?) → batch → LR → ``method.step`` → sum → backward → optimizer step →
``method.after_step`` → record → log → evaluate → checkpoint. It yields :class:`TrainEvent` objects so the
CLI prints them and the app streams them; a stop callable is checked between iterations. A run stopped
at a checkpoint resumes exactly (the batch stream by draw number, the RNG states in the checkpoint).
"""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dida import runs
from dida.checkpoints import nonfinite_tensors
from dida.config import TrainConfig
from dida.data.uda import UDAData, build_uda_data, domain_roots
from dida.distributed import (
    DistInfo,
    barrier,
    broadcast_flag,
    init_distributed,
)
from dida.environment import run_config
from dida.methods.base import Method, MethodContext, unwrap
from dida.methods.registry import build_method, trained_domains
from dida.model import SegModel
from dida.optim import build_optimizer, set_lr
from dida.records import Recorder
from dida.rng import global_rng_state, set_global_rng_state
from dida.validate import evaluate_model


@dataclass
class TrainEvent:
    """One progress report from the loop."""

    kind: str
    """'start', 'train', 'eval', 'checkpoint', 'done', 'stopped' or 'failed' (diverged)."""
    it: int
    max_iters: int
    run_dir: Path
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.0
    eta_s: float = 0.0
    it_per_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Loop:
    """The objects the loop works with (built once per run)."""

    cfg: TrainConfig
    run_dir: Path
    dist: DistInfo
    data: UDAData
    method: Method
    optimizer: torch.optim.Optimizer
    recorder: Recorder
    start_it: int = 0
    saved_it: int = 0
    """The iteration the checkpoint on disk holds."""
    timer: _Timer | None = None
    rng: dict[str, Tensor] | None = None
    """A resumed run's global RNG state, set once the batch stream exists (its loaders draw)."""


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    stop: Callable[[], bool] | None = None,
    argv: list[str] | None = None,
    stop_cpu_h: float | None = None,
) -> Iterator[TrainEvent]:
    """Train ``cfg`` into ``run_dir`` (resuming from its checkpoint if any), yielding events.

    ``stop_cpu_h``: stop (evaluated, checkpointed, status "stopped", resumable) once the run's
    cumulative training CPU time reaches this many hours; the schedule (``cfg.iters``, LR) is
    unchanged, so equal-budget comparisons of recipes can go on to full length later.

    The main rank holds the run folder's lock (``runs.RunLock``) until the generator ends, so a
    second writer is refused; a folder this call created is removed again if building the run fails.
    """
    dist = init_distributed(cfg.device)
    run_dir = runs.run_path(Path(run_dir).parent, Path(run_dir).name)
    fresh = not run_dir.exists()
    lock = runs.RunLock(run_dir) if dist.is_main else None
    try:
        loop = _build_or_clean(cfg, run_dir, dist, argv, lock if fresh else None)
        yield _event(loop, "start", loop.start_it)
        yield from _iterate(loop, stop or (lambda: False), stop_cpu_h)
    finally:
        if lock is not None:
            lock.release()


def _build_or_clean(
    cfg: TrainConfig,
    run_dir: Path,
    dist: DistInfo,
    argv: list[str] | None,
    lock: runs.RunLock | None,
) -> _Loop:
    """:func:`_build`; on failure a run folder created by this call (``lock`` given) is removed."""
    try:
        return _build(cfg, run_dir, dist, argv)
    except BaseException:
        if lock is not None:
            lock.release()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _build(cfg: TrainConfig, run_dir: Path, dist: DistInfo, argv: list[str] | None) -> _Loop:
    torch.manual_seed(cfg.seed)
    if dist.is_main:
        runs.create_run(run_dir.parent, run_dir.name, run_config(cfg, argv))
        runs.remove_stale_temporaries(run_dir)
        domain_roots(cfg.data)  # generates SynthCity once, before other ranks read it
    barrier(dist)
    target_labels = trained_domains(cfg.method) == ("target",)
    data = build_uda_data(cfg.data, cfg.seed, dist.rank, dist.world_size, target_labels)
    resuming = (run_dir / runs.CHECKPOINT).exists()  # the checkpoint replaces any start weights
    model = SegModel(cfg.model, load_backbone_weights=not resuming).to(dist.device)
    ctx = MethodContext(
        num_classes=cfg.model.num_classes,
        crop=tuple(cfg.data.crop),
        max_iters=cfg.iters,
        seed=cfg.seed,
        device=dist.device,
        source_class_pixels=data.source_class_pixels,
    )
    method = build_method(cfg.method, _wrap(model, dist), ctx, cfg.method_options)
    loop = _Loop(cfg, run_dir, dist, data, method, build_optimizer(model, cfg.optim), Recorder())
    _resume(loop)
    return loop


def _wrap(model: nn.Module, dist: DistInfo) -> nn.Module:
    if not dist.enabled:
        return model
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def _iterate(
    loop: _Loop, stop: Callable[[], bool], stop_cpu_h: float | None = None
) -> Iterator[TrainEvent]:
    try:
        yield from _steps(loop, stop, stop_cpu_h)
    except DivergedError as err:
        yield from _fail(loop, err.it, str(err))


def _steps(loop: _Loop, stop: Callable[[], bool], stop_cpu_h: float | None) -> Iterator[TrainEvent]:
    cfg, timer = loop.cfg, loop.timer
    batches = loop.data.batches(start_it=loop.start_it)
    if loop.rng is not None:
        set_global_rng_state(loop.rng, loop.dist.device)
    for it in range(loop.start_it, cfg.iters):
        if broadcast_flag(stop_cpu_h is not None and timer.cpu_s >= 3600 * stop_cpu_h, loop.dist):
            yield from _stop_at_budget(loop, it, stop_cpu_h)
            return
        if broadcast_flag(stop(), loop.dist):
            yield from _finish(loop, it, "stopped")
            return
        timer.begin()
        losses, lr = _train_step(loop, next(batches), it)
        timer.tick()
        yield from _after_step(loop, it + 1, losses, lr)
    yield _evaluate(loop, cfg.iters)
    yield from _finish(loop, cfg.iters, "finished")


def _stop_at_budget(loop: _Loop, it: int, stop_cpu_h: float) -> Iterator[TrainEvent]:
    """Evaluate at ``it`` (unless the schedule just did) and stop: the CPU budget is spent."""
    cfg = loop.cfg
    evaluated = it in cfg.snapshot_iters or _due(it, cfg.eval_interval)
    if not evaluated and it > loop.start_it:
        yield _evaluate(loop, it)
    reason = f"CPU budget {stop_cpu_h:g} h reached"
    yield from _finish(loop, it, "stopped", stop_reason=reason, stop_cpu_h=stop_cpu_h)


def _after_step(loop: _Loop, done: int, losses: dict, lr: float) -> Iterator[TrainEvent]:
    """Log, evaluate, snapshot and checkpoint after iteration ``done`` as the config says."""
    cfg = loop.cfg
    if cfg.log_interval and (done % cfg.log_interval == 0 or done == cfg.iters):
        yield _log_train(loop, done, losses, lr, loop.timer)
    if done < cfg.iters and (_due(done, cfg.eval_interval) or done in cfg.snapshot_iters):
        yield _evaluate(loop, done)
    if done in cfg.snapshot_iters:
        _save_snapshot(loop, done)
    if done < cfg.iters and _due(done, cfg.checkpoint_interval):
        yield _checkpoint(loop, done)


def _due(it: int, interval: int) -> bool:
    return bool(interval) and it % interval == 0


def _train_step(loop: _Loop, batch: dict, it: int) -> tuple[dict[str, float], float]:
    """One iteration: method losses → backward → optimizer step → after_step → records."""
    method, optimizer = loop.method, loop.optimizer
    lr = set_lr(optimizer, it, loop.cfg.iters, loop.cfg.optim)
    unwrap(method.model).train()
    losses = method.step(_to_device(batch, loop.dist.device), it)
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    _check_finite(loop, it, total, losses)
    optimizer.step()
    method.after_step(it)
    loop.recorder.add(method.records(it))
    return {k: float(v.detach()) for k, v in losses.items()}, lr


class DivergedError(RuntimeError):
    """A loss, gradient or weight became NaN or infinite at iteration ``it``."""

    def __init__(self, it: int, what: str, saved_it: int, lr: float) -> None:
        kept = (
            f"the last good checkpoint (iteration {saved_it}) is kept"
            if saved_it
            else ("no checkpoint had been written yet")
        )
        super().__init__(
            f"diverged at iteration {it}: {what}; {kept} — lower optim.lr (now {lr:g}) and "
            "start a new run"
        )
        self.it = it


def _check_finite(loop: _Loop, it: int, total: Tensor, losses: dict[str, Tensor]) -> None:
    """Raise :class:`DivergedError` (before the optimizer step) when the summed loss or the
    student's gradient norm is not finite; every rank decides as rank 0 does."""
    grads = [p.grad for p in unwrap(loop.method.model).parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else total.new_zeros(())
    bad = not (bool(torch.isfinite(total.detach())) and bool(torch.isfinite(norm)))
    if broadcast_flag(bad, loop.dist):
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        what = f"losses {values}, gradient norm {float(norm):.4g}"
        raise DivergedError(it + 1, what, loop.saved_it, loop.cfg.optim.lr)


def _check_weights(loop: _Loop, it: int) -> None:
    """Refuse to checkpoint a student whose weights are no longer finite."""
    state = unwrap(loop.method.model).state_dict()
    bad = len(nonfinite_tensors(state))
    if broadcast_flag(bad > 0, loop.dist):
        what = f"{bad} of {len(state)} weight tensors are not finite"
        raise DivergedError(it, what, loop.saved_it, loop.cfg.optim.lr)


def _to_device(batch: dict, device: torch.device) -> dict:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _log_train(loop: _Loop, it: int, losses: dict, lr: float, timer: _Timer) -> TrainEvent:
    event = _event(loop, "train", it, losses=losses, lr=lr, eta_s=timer.eta, it_per_s=timer.rate)
    if loop.dist.is_main:
        samples = it * loop.cfg.data.batch_size * loop.dist.world_size  # source images seen so far
        record = {"kind": "train", "it": it, "samples": samples, "lr": lr, "it_per_s": timer.rate}
        record.update(timer.cost())
        record["eta_s"], record["peak_mem_mb"] = timer.eta, peak_memory_mb(loop.dist.device)
        runs.append_metrics(loop.run_dir, {**record, **losses, "time": time.time()})
        runs.write_status(
            loop.run_dir, "running", it=it, saved_it=loop.saved_it, max_iters=loop.cfg.iters,
            eta_s=timer.eta,
        )  # fmt: skip
    return event


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated by torch on a GPU, else the process's peak
    resident set size (Linux ``ru_maxrss``, KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _evaluate(loop: _Loop, it: int) -> TrainEvent:
    """Evaluate the student on the target validation split (every rank computes; rank 0 writes)."""
    metrics = evaluate_model(
        loop.method.eval_model,
        loop.data.target_val,
        device=loop.dist.device,
        max_images=loop.cfg.data.val_images,
    ).to_dict()
    if loop.dist.is_main:
        record = {"kind": "eval", "it": it, **loop.timer.cost(), **metrics}
        runs.append_metrics(loop.run_dir, record)
    return _event(loop, "eval", it, metrics=metrics)


def _save_snapshot(loop: _Loop, it: int) -> None:
    """Keep the eval model of iteration ``it`` for learning curves (``snapshots/``)."""
    if loop.dist.is_main:
        path = loop.run_dir / runs.SNAPSHOTS / f"model_{it:06d}.safetensors"
        runs.save_state(path, loop.method.eval_model.state_dict(), {"it": it, **loop.timer.cost()})


def _checkpoint(loop: _Loop, it: int) -> TrainEvent:
    """Bank history → checkpoint → model → status, each atomic: nothing claims past the checkpoint."""
    _check_weights(loop, it)
    if loop.dist.is_main:
        state = {
            "model": unwrap(loop.method.model).state_dict(),
            "method": loop.method.state_dict(),
            "optimizer": loop.optimizer.state_dict(),
            "rng": global_rng_state(loop.dist.device),
        }
        loop.recorder.save(loop.run_dir)
        runs.save_state(loop.run_dir / runs.CHECKPOINT, state, {"it": it, **loop.timer.cost()})
        _save_model(loop, it)
        runs.write_status(loop.run_dir, "running", it=it, saved_it=it, max_iters=loop.cfg.iters)
    loop.saved_it = it
    return _event(loop, "checkpoint", it)


def _save_model(loop: _Loop, it: int) -> None:
    runs.save_state(loop.run_dir / runs.MODEL, loop.method.eval_model.state_dict(), {"it": it})


def _finish(loop: _Loop, it: int, state: str, **info: Any) -> Iterator[TrainEvent]:
    yield _checkpoint(loop, it)
    if loop.dist.is_main:
        runs.write_status(loop.run_dir, state, it=it, saved_it=it, max_iters=loop.cfg.iters, **info)
        runs.write_summary(loop.run_dir)
    yield _event(loop, "done" if state == "finished" else "stopped", it)


def _fail(loop: _Loop, it: int, reason: str) -> Iterator[TrainEvent]:
    """End a diverged run: no checkpoint is written (the last good one stays), status "failed"."""
    if loop.dist.is_main:
        runs.write_status(
            loop.run_dir, "failed", it=loop.saved_it, saved_it=loop.saved_it,
            max_iters=loop.cfg.iters, reason=reason, failed_it=it,
        )  # fmt: skip
        runs.write_summary(loop.run_dir)
    yield _event(loop, "failed", it, extra={"reason": reason})


def _resume(loop: _Loop) -> None:
    """Continue from ``checkpoint.safetensors`` when the run directory has one."""
    path = loop.run_dir / runs.CHECKPOINT
    loop.timer = _Timer(0, loop.cfg.iters)
    if not path.exists():
        if loop.dist.is_main:
            runs.truncate_metrics(loop.run_dir, 0)  # records of a start killed before a checkpoint
        return
    state, meta = runs.load_state(path, device=str(loop.dist.device))
    loop.timer = _Timer(int(meta["it"]), loop.cfg.iters, meta)
    loop.saved_it = int(meta["it"])
    unwrap(loop.method.model).load_state_dict(state["model"])
    loop.method.load_state_dict(state["method"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.rng = state.get("rng")  # checkpoints before session 18 kept none: the seed's goes on
    loop.start_it = int(meta["it"])
    loop.recorder.load(loop.run_dir, after_it=loop.start_it)
    if loop.dist.is_main:
        runs.truncate_metrics(loop.run_dir, loop.start_it)
        _save_model(loop, loop.start_it)  # a kill between checkpoint and model left it behind


def _event(loop: _Loop, kind: str, it: int, **kw: Any) -> TrainEvent:
    return TrainEvent(kind=kind, it=it, max_iters=loop.cfg.iters, run_dir=loop.run_dir, **kw)


class _Timer:
    """Iterations per second (exponential moving average of step time), the time left, and the
    run's cumulative training cost (CPU and wall seconds of steps, evaluations excluded; carried
    across resumes by the checkpoint metadata)."""

    def __init__(self, start_it: int, max_iters: int, cost: dict[str, float] | None = None) -> None:
        self.it, self.max_iters, self.rate = start_it, max_iters, 0.0
        self.cpu_s = float((cost or {}).get("train_cpu_s", 0.0))
        self.wall_s = float((cost or {}).get("train_wall_s", 0.0))
        self.begin()

    def begin(self) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def tick(self) -> None:
        step = max(time.perf_counter() - self._wall0, 1e-9)
        self.cpu_s += time.process_time() - self._cpu0
        self.wall_s += step
        self.rate = 1 / step if self.rate == 0 else 0.9 * self.rate + 0.1 / step
        self.it += 1

    def cost(self) -> dict[str, float]:
        return {"train_cpu_s": round(self.cpu_s, 3), "train_wall_s": round(self.wall_s, 3)}

    @property
    def eta(self) -> float:
        return (self.max_iters - self.it) / self.rate if self.rate > 0 else 0.0


# --- CLI ----------------------------------------------------------------------------------------
