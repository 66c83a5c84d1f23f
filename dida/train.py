"""The training command line around the one loop (:mod:`dida.loop`).

    python -m dida.train --method source_only --preset quick --seed 0
    torchrun --nproc_per_node 2 -m dida.train --method dida --preset quick

Presets and ``--set KEY=VALUE`` overrides build a :class:`TrainConfig`; the loop's
:class:`TrainEvent` objects are printed one line each; SIGINT / SIGTERM stop at the next iteration.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from dida import runs
from dida.argtypes import positive_int
from dida.config import TrainConfig
from dida.data.uda import DataConfig
from dida.distributed import init_distributed, shutdown_distributed
from dida.loop import TrainEvent, train
from dida.methods.registry import METHODS
from dida.model import ModelConfig
from dida.optim import OptimConfig
from dida.presets import PRESETS, curve_snapshots, preset_config


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
    """Preset → method → CLI overrides, in that order (a preset's learning-curve snapshots follow
    ``--iters``: the √2 series up to the new length)."""
    cfg = preset_config(args.preset, args.method)
    overrides = parse_overrides(args.set or [])
    data = {**asdict(cfg.data), **overrides.pop("data", {})}
    for key in ("source", "source_root", "target", "target_root"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    if args.data is not None:
        data["source_root"] = data["target_root"] = args.data
    iters = args.iters or overrides.pop("iters", None) or cfg.iters
    snapshots = overrides.pop("snapshot_iters", None)
    if snapshots is None:
        snapshots = curve_snapshots(iters) if cfg.snapshot_iters else []
    return replace(
        cfg,
        method_options={**cfg.method_options, **overrides.pop("method", {})},
        model=ModelConfig.from_dict({**cfg.model.to_dict(), **overrides.pop("model", {})}),
        optim=OptimConfig(**{**cfg.optim.to_dict(), **overrides.pop("optim", {})}),
        data=DataConfig(**data),
        iters=iters,
        snapshot_iters=snapshots,
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
    p.add_argument(
        "--threads", type=positive_int, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--stop-cpu-h", type=float, dest="stop_cpu_h", metavar="HOURS",
        help="stop (resumable) once the run's training CPU time reaches HOURS; schedule unchanged",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.stop_cpu_h is not None and not args.stop_cpu_h > 0:
        print(f"error: --stop-cpu-h must be a positive number of hours (got {args.stop_cpu_h})",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or f"{args.method}_{args.preset}_s{args.seed}"
    stop = stop_on_signals()
    try:
        is_main = init_distributed(cfg.device).is_main
        last = None
        run_dir = runs.run_path(args.runs, name)
        command = ["python -m dida.train", *argv]
        for last in train(cfg, run_dir, stop.is_set, command, args.stop_cpu_h):
            if is_main:
                print(format_event(last), flush=True)
    except (runs.RunError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 1 if last is not None and last.kind == "failed" else 0


def stop_on_signals() -> threading.Event:
    """SIGINT (Ctrl+C) and SIGTERM ask the loop to stop at the next iteration (checkpoint, status
    "stopped"); a second signal ends the process at once."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration (again to abort)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    return stop


def format_event(e: TrainEvent) -> str:
    """One human-readable line per event."""
    if e.kind == "train":
        losses = " ".join(f"{k}={v:.4f}" for k, v in e.losses.items())
        return f"[{e.it}/{e.max_iters}] {losses} lr={e.lr:.2e} {e.it_per_s:.2f} it/s eta {e.eta_s:.0f}s"
    if e.kind == "eval":
        miou = e.metrics["mIoU"]["19"]
        return f"[{e.it}/{e.max_iters}] eval mIoU={100 * (miou or 0):.2f}"
    if e.kind == "failed":
        return f"[{e.it}/{e.max_iters}] failed: {e.extra['reason']}"
    return f"[{e.it}/{e.max_iters}] {e.kind} {e.run_dir}"


if __name__ == "__main__":
    raise SystemExit(main())
