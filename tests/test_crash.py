"""Crash safety of the loop: the NaN guard, the run-folder lock, SIGTERM, SIGKILL at any moment
(also during a checkpoint write), and clean CLI errors (issue 15)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors import safe_open

from dida import runs
from dida.presets import preset_config
from dida.train import TrainConfig, main, train

REPO = Path(__file__).resolve().parents[1]


def _cfg(root: Path, **kw) -> TrainConfig:
    cfg = preset_config("tiny", "source_only")
    data = replace(cfg.data, source_root=str(root), target_root=str(root), rcs=False)
    return replace(cfg, data=data, **kw)


def _diverging(root: Path, **kw) -> TrainConfig:
    cfg = _cfg(root, **kw)
    return replace(cfg, optim=replace(cfg.optim, lr=1e10))


def _meta_it(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(json.loads(f.metadata()["metadata"])["it"])


def test_a_diverging_run_fails_and_keeps_the_last_good_checkpoint(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    cfg = _diverging(synthcity_tiny, iters=6, checkpoint_interval=1)
    events = list(train(cfg, tmp_path / "nan"))
    run = tmp_path / "nan"
    status = runs.read_status(run)
    assert events[-1].kind == "failed" and status["state"] == "failed"
    assert status["reason"].startswith(f"diverged at iteration {status['failed_it']}")
    assert "lower optim.lr" in status["reason"]
    saved = status["saved_it"]
    assert saved < status["failed_it"] and _meta_it(run / runs.CHECKPOINT) == saved
    state, _ = runs.load_state(run / runs.CHECKPOINT)
    assert all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point())
    assert not [r for r in runs.read_metrics(run, "eval") if r["it"] > saved]


def test_the_cli_exits_1_on_divergence(synthcity_tiny: Path, tmp_path: Path) -> None:
    argv = ["--preset", "tiny", "--data", str(synthcity_tiny), "--runs", str(tmp_path)]
    argv += ["--name", "nan", "--set", "optim.lr=1e30", "--set", "data.rcs=false"]
    assert main(argv) == 1
    assert runs.read_status(tmp_path / "nan")["state"] == "failed"


def _hold_lock(run_dir: str, ready: mp.Event, release: mp.Event) -> None:
    with runs.RunLock(run_dir):
        ready.set()
        release.wait(60)


def test_a_second_writer_is_refused_and_a_dead_owner_is_detected(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    run = tmp_path / "r"
    list(train(_cfg(synthcity_tiny, iters=2), run))
    runs.write_status(run, "running", it=2, saved_it=2)
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    owner = ctx.Process(target=_hold_lock, args=(str(run), ready, release))
    owner.start()
    try:
        assert ready.wait(60)
        assert runs.lock_owner(run) == owner.pid
        assert runs.run_state(run)["state"] == "running"
        with pytest.raises(runs.RunLockedError, match=f"pid {owner.pid}"):
            list(train(_cfg(synthcity_tiny, iters=4), run))
    finally:
        owner.kill()
        owner.join()
    assert runs.lock_owner(run) is None
    assert runs.run_state(run)["state"] == "interrupted"
    assert runs.run_info(run).state == "interrupted"


def test_an_interrupted_status_claims_only_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    runs.write_status(run, "running", it=28, saved_it=26)
    state = runs.run_state(run)
    assert (state["state"], state["it"], state["unsaved_it"]) == ("interrupted", 26, 28)
    assert runs.state_text(state) == "interrupted at 26 (resumable with the same command)"


def test_cli_errors_are_one_line_and_leave_no_folder(synthcity_tiny: Path, tmp_path: Path) -> None:
    base = ["--preset", "tiny", "--data", str(synthcity_tiny), "--runs", str(tmp_path)]
    assert main([*base, "--name", "bad", "--set", "model.init_weights=/nonexistent.pth"]) == 2
    assert not (tmp_path / "bad").exists()
    assert main([*base, "--name", "../escape"]) == 2
    assert not (tmp_path.parent / "escape").exists()
    assert main([*base, "--name", "a", "--iters", "2"]) == 0
    assert main([*base, "--name", "a", "--iters", "3", "--set", "optim.lr=1"]) == 2
    assert runs.read_status(tmp_path / "a")["state"] == "finished"


def _train_cmd(root: Path, runs_dir: Path, iters: int) -> list[str]:
    cmd = [sys.executable, "-m", "dida.train", "--preset", "tiny", "--data", str(root)]
    cmd += ["--runs", str(runs_dir), "--name", "k", "--iters", str(iters), "--threads", "1"]
    return cmd + ["--set", "checkpoint_interval=1", "--set", "data.rcs=false"]


def _start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _kill_during_write(proc: subprocess.Popen, run: Path, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as a checkpoint temporary file appears (True), or after its first
    checkpoint if none is caught within the time limit (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if run.is_dir() and any(n.startswith(".checkpoint") for n in os.listdir(run)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    proc.kill()
    proc.wait()
    return False


def _assert_consistent(run: Path) -> None:
    state = runs.run_state(run)
    assert state["state"] in ("interrupted", "created"), state
    saved = runs.checkpoint_it(run) if (run / runs.CHECKPOINT).exists() else 0
    assert state.get("saved_it", 0) <= saved
    if (run / runs.MODEL).exists():
        assert _meta_it(run / runs.MODEL) <= saved
        runs.load_run_model(run)


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_then_resume(synthcity_tiny: Path, tmp_path: Path) -> None:
    run, cmd = tmp_path / "k", _train_cmd(synthcity_tiny, tmp_path, iters=30)
    caught = 0
    for _ in range(3):
        caught += _kill_during_write(_start(cmd), run)
        _assert_consistent(run)
    assert caught >= 1, "no kill landed during a checkpoint write"
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:]
    assert runs.read_status(run)["state"] == "finished" and runs.checkpoint_it(run) == 30
    assert not list(run.glob(".*.tmp"))
    train_its = [r["it"] for r in runs.read_metrics(run, "train")]
    assert train_its == sorted(set(train_its)) and train_its[-1] == 30


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(synthcity_tiny: Path, tmp_path: Path) -> None:
    run, cmd = tmp_path / "k", _train_cmd(synthcity_tiny, tmp_path, iters=150)
    for delay in (6.0, 9.0, 12.5):
        proc = _start(cmd)
        time.sleep(delay)
        if proc.poll() is not None:  # a fast machine finished the run before this kill
            break
        proc.kill()
        proc.wait()
        if run.exists():
            _assert_consistent(run)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:]
    assert runs.read_status(run)["state"] == "finished"


@pytest.mark.slow
def test_sigterm_stops_at_a_checkpoint(synthcity_tiny: Path, tmp_path: Path) -> None:
    run, proc = tmp_path / "k", _start(_train_cmd(synthcity_tiny, tmp_path, iters=150))
    end = time.monotonic() + 120
    while time.monotonic() < end and runs.checkpoint_it(run) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    status = runs.read_status(run)
    assert proc.returncode == 0, out[-2000:]
    assert status["state"] == "stopped" and runs.checkpoint_it(run) == status["it"] >= 2
    assert runs.lock_owner(run) is None
