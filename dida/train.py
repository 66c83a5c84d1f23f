"""The one training loop for every method, and its CLI.

    python -m dida.train --method source_only --preset quick --seed 0
    torchrun --nproc_per_node 2 -m dida.train --method dida --preset quick

The loop order never changes: (stop?) → batch → LR → ``method.step`` → sum → backward → optimizer step →
``method.after_step`` → record → log → evaluate → checkpoint. It yields :class:`TrainEvent` objects so the
CLI prints them and the app streams them; a stop callable is checked between iterations.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dida import runs
from dida.config import TrainConfig
from dida.data.uda import DataConfig, UDAData, build_uda_data, domain_roots
from dida.distributed import (
    DistInfo,
    barrier,
    broadcast_flag,
    init_distributed,
    shutdown_distributed,
)
from dida.methods.base import Method, MethodContext, unwrap
from dida.methods.registry import METHODS, build_method, trained_domains
from dida.model import ModelConfig, SegModel
from dida.optim import OptimConfig, build_optimizer, set_lr
from dida.presets import PRESETS, preset_config
from dida.records import Recorder
from dida.validate import evaluate_model


@dataclass
class TrainEvent:
    """One progress report from the loop."""

    kind: str
    """'start', 'train', 'eval', 'checkpoint', 'done' or 'stopped'."""
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
    timer: _Timer | None = None


def run_config(cfg: TrainConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """The config written to ``config.json``: the train config + command + environment."""
    return {
        **cfg.to_dict(),
        "command": command_line(argv if argv is not None else sys.argv),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }


def command_line(argv: list[str]) -> str:
    """The program (first item, as given) and its shell-quoted arguments."""
    return " ".join([argv[0], shlex.join(argv[1:])]) if argv else ""


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    stop: Callable[[], bool] | None = None,
    argv: list[str] | None = None,
) -> Iterator[TrainEvent]:
    """Train ``cfg`` into ``run_dir`` (resuming from its checkpoint if any), yielding events."""
    dist = init_distributed(cfg.device)
    loop = _build(cfg, Path(run_dir), dist, argv)
    yield _event(loop, "start", loop.start_it)
    yield from _iterate(loop, stop or (lambda: False))


def _build(cfg: TrainConfig, run_dir: Path, dist: DistInfo, argv: list[str] | None) -> _Loop:
    torch.manual_seed(cfg.seed)
    if dist.is_main:
        runs.create_run(run_dir.parent, run_dir.name, run_config(cfg, argv))
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


def _iterate(loop: _Loop, stop: Callable[[], bool]) -> Iterator[TrainEvent]:
    cfg, timer = loop.cfg, loop.timer
    batches = loop.data.batches(start_it=loop.start_it)
    for it in range(loop.start_it, cfg.iters):
        if broadcast_flag(stop(), loop.dist):
            yield from _finish(loop, it, "stopped")
            return
        timer.begin()
        losses, lr = _train_step(loop, next(batches), it)
        timer.tick()
        done = it + 1
        if cfg.log_interval and (done % cfg.log_interval == 0 or done == cfg.iters):
            yield _log_train(loop, done, losses, lr, timer)
        if (
            done < cfg.iters
            and cfg.eval_interval
            and done % cfg.eval_interval == 0
            or done < cfg.iters
            and done in cfg.snapshot_iters
        ):
            yield _evaluate(loop, done)
        if done in cfg.snapshot_iters:
            _save_snapshot(loop, done)
        if done < cfg.iters and cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0:
            yield _checkpoint(loop, done)
    yield _evaluate(loop, cfg.iters)
    yield from _finish(loop, cfg.iters, "finished")


def _train_step(loop: _Loop, batch: dict, it: int) -> tuple[dict[str, float], float]:
    """One iteration: method losses → backward → optimizer step → after_step → records."""
    method, optimizer = loop.method, loop.optimizer
    lr = set_lr(optimizer, it, loop.cfg.iters, loop.cfg.optim)
    unwrap(method.model).train()
    losses = method.step(_to_device(batch, loop.dist.device), it)
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    method.after_step(it)
    loop.recorder.add(method.records(it))
    return {k: float(v.detach()) for k, v in losses.items()}, lr


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
        runs.write_status(loop.run_dir, "running", it=it, max_iters=loop.cfg.iters, eta_s=timer.eta)
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
        runs.append_metrics(loop.run_dir, {"kind": "eval", "it": it, **metrics})
    return _event(loop, "eval", it, metrics=metrics)


def _save_snapshot(loop: _Loop, it: int) -> None:
    """Keep the eval model of iteration ``it`` for learning curves (``snapshots/``)."""
    if loop.dist.is_main:
        path = loop.run_dir / runs.SNAPSHOTS / f"model_{it:06d}.safetensors"
        runs.save_state(path, loop.method.eval_model.state_dict(), {"it": it, **loop.timer.cost()})


def _checkpoint(loop: _Loop, it: int) -> TrainEvent:
    if loop.dist.is_main:
        state = {
            "model": unwrap(loop.method.model).state_dict(),
            "method": loop.method.state_dict(),
            "optimizer": loop.optimizer.state_dict(),
        }
        runs.save_state(loop.run_dir / runs.CHECKPOINT, state, {"it": it, **loop.timer.cost()})
        runs.save_state(loop.run_dir / runs.MODEL, loop.method.eval_model.state_dict(), {"it": it})
        loop.recorder.save(loop.run_dir)
    return _event(loop, "checkpoint", it)


def _finish(loop: _Loop, it: int, state: str) -> Iterator[TrainEvent]:
    yield _checkpoint(loop, it)
    if loop.dist.is_main:
        runs.write_status(loop.run_dir, state, it=it, max_iters=loop.cfg.iters)
        runs.write_summary(loop.run_dir)
    yield _event(loop, "done" if state == "finished" else "stopped", it)


def _resume(loop: _Loop) -> None:
    """Continue from ``checkpoint.safetensors`` when the run directory has one."""
    path = loop.run_dir / runs.CHECKPOINT
    loop.timer = _Timer(0, loop.cfg.iters)
    if not path.exists():
        return
    state, meta = runs.load_state(path, device=str(loop.dist.device))
    loop.timer = _Timer(int(meta["it"]), loop.cfg.iters, meta)
    unwrap(loop.method.model).load_state_dict(state["model"])
    loop.method.load_state_dict(state["method"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.start_it = int(meta["it"])
    loop.recorder.load(loop.run_dir, after_it=loop.start_it)
    if loop.dist.is_main:
        runs.truncate_metrics(loop.run_dir, loop.start_it)


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


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["model.embed_dim=128", "method.tp=0.2"]`` → nested dict, values parsed as JSON when possible."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(
                f"--set expects KEY=VALUE (got {pair!r}), e.g. --set model.embed_dim=128"
            )
        key, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Preset → method → CLI overrides, in that order."""
    cfg = preset_config(args.preset, args.method)
    overrides = parse_overrides(args.set or [])
    data = {**asdict(cfg.data), **overrides.pop("data", {})}
    for key in ("source", "source_root", "target", "target_root"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    if args.data is not None:
        data["source_root"] = data["target_root"] = args.data
    return replace(
        cfg,
        method_options={**cfg.method_options, **overrides.pop("method", {})},
        model=ModelConfig.from_dict({**cfg.model.to_dict(), **overrides.pop("model", {})}),
        optim=OptimConfig(**{**cfg.optim.to_dict(), **overrides.pop("optim", {})}),
        data=DataConfig(**data),
        iters=args.iters or cfg.iters,
        seed=args.seed,
        device=args.device,
        **overrides,
    )


def cli_args(cfg: TrainConfig, preset: str, name: str, runs_dir: str | Path) -> list[str]:
    """The ``python -m dida.train`` arguments that rebuild ``cfg`` (the inverse of
    ``config_from_args``): the preset, then ``--set`` for every field the config changes."""
    base = flat_config(preset_config(preset, cfg.method))
    args = ["--method", cfg.method, "--preset", preset, "--seed", str(cfg.seed)]
    args += ["--iters", str(cfg.iters), "--device", cfg.device, "--name", name]
    args += ["--runs", str(runs_dir)]
    changed = {k: v for k, v in flat_config(cfg).items() if base.get(k, ...) != v}
    for key in sorted(changed.keys() - {"method", "seed", "iters", "device"}):
        args += ["--set", f"{key}={_cli_value(changed[key])}"]
    return args


def flat_config(cfg: TrainConfig) -> dict[str, Any]:
    """Dotted ``--set`` keys of a config → values (method options under ``method.``; the method's
    name under ``method``)."""
    d = cfg.to_dict()
    method = d.pop("method")
    flat = {"method": method["name"], **{f"method.{k}": v for k, v in method["options"].items()}}
    for section in ("model", "optim", "data"):
        flat.update({f"{section}.{k}": v for k, v in d.pop(section).items()})
    return {**flat, **d}


def _cli_value(value: Any) -> str:
    """A ``--set`` value that ``parse_overrides`` reads back as ``value``."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dida.train", description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=sorted(METHODS), default="source_only")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--data", help="SynthCity root (source and target); generated when missing")
    p.add_argument("--source", help="source dataset kind: synthcity, gta5, synthia")
    p.add_argument("--source-root", dest="source_root")
    p.add_argument("--target", help="target dataset kind: synthcity, cityscapes")
    p.add_argument("--target-root", dest="target_root")
    p.add_argument("--iters", type=int, help="training iterations (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="run name (default: <method>_<preset>_s<seed>)")
    p.add_argument("--runs", default="runs", help="folder holding run directories")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or f"{args.method}_{args.preset}_s{args.seed}"
    run_dir = Path(args.runs) / name
    try:
        is_main = init_distributed(cfg.device).is_main
        for event in train(cfg, run_dir, argv=["python -m dida.train", *argv]):
            if is_main:
                print(format_event(event), flush=True)
    finally:
        shutdown_distributed()
    return 0


def format_event(e: TrainEvent) -> str:
    """One human-readable line per event."""
    if e.kind == "train":
        losses = " ".join(f"{k}={v:.4f}" for k, v in e.losses.items())
        return f"[{e.it}/{e.max_iters}] {losses} lr={e.lr:.2e} {e.it_per_s:.2f} it/s eta {e.eta_s:.0f}s"
    if e.kind == "eval":
        miou = e.metrics["mIoU"]["19"]
        return f"[{e.it}/{e.max_iters}] eval mIoU={100 * (miou or 0):.2f}"
    return f"[{e.it}/{e.max_iters}] {e.kind} {e.run_dir}"


if __name__ == "__main__":
    raise SystemExit(main())
