"""Distributed training on PyTorch's engine: a 2-process gloo run via torchrun, consistent with 1 process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from dida import runs


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _train_args(root: Path, runs_dir: Path, name: str, batch: int) -> list[str]:
    return [
        "-m", "dida.train", "--preset", "tiny", "--method", "source_only", "--data", str(root),
        "--iters", "3", "--runs", str(runs_dir), "--name", name, "--device", "cpu",
        "--set", f"data.batch_size={batch}", "--set", "data.rcs=false",
    ]  # fmt: skip


def test_two_process_gloo_run_matches_one_process(synthcity_tiny: Path, tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    two = _run([*torchrun, *_train_args(synthcity_tiny, tmp_path, "ddp", 1)], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _run([sys.executable, *_train_args(synthcity_tiny, tmp_path, "single", 2)], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]

    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]  # rank 1 wrote nothing
    ddp, single = (
        runs.read_metrics(tmp_path / "ddp", "train"),
        runs.read_metrics(tmp_path / "single", "train"),
    )
    assert [r["samples"] for r in ddp] == [r["samples"] for r in single] == [2, 4, 6]
    assert runs.read_status(tmp_path / "ddp")["state"] == "finished"
    # Same initial weights (seeded) and the same number of samples per step: the first losses agree
    # within the spread of different random crops; all stay finite.
    first = torch.tensor([ddp[0]["loss_source"], single[0]["loss_source"]])
    assert torch.isfinite(first).all() and (first[0] - first[1]).abs() < 0.5 * first.mean()
    state, meta = runs.load_state(tmp_path / "ddp" / runs.MODEL)
    assert meta["it"] == 3 and all(
        torch.isfinite(v).all() for v in state.values() if v.is_floating_point()
    )
