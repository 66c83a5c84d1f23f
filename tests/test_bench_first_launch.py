"""scripts.bench_first_launch: the trainings' states it sets and puts back, and its summary line."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from scripts.bench_first_launch import set_trainings, summary


def _state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _wait_state(pid: int, wanted: str) -> str:
    for _ in range(100):
        if _state(pid) == wanted:
            break
        time.sleep(0.01)
    return _state(pid)


def test_pause_and_leave_stop_and_continue_a_process(sleeper: int) -> None:
    set_trainings([sleeper], "pause")
    assert _wait_state(sleeper, "T") == "T"
    set_trainings([sleeper], "leave")
    assert _wait_state(sleeper, "S") == "S" and os.getpriority(os.PRIO_PROCESS, sleeper) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="setting a niceness back to 0 needs root")
def test_renice_and_leave_set_and_restore_the_niceness(sleeper: int) -> None:
    set_trainings([sleeper], "renice")
    assert os.getpriority(os.PRIO_PROCESS, sleeper) == 19 and _wait_state(sleeper, "S") == "S"
    set_trainings([sleeper], "leave")
    assert os.getpriority(os.PRIO_PROCESS, sleeper) == 0


def test_a_finished_training_is_skipped() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    set_trainings([proc.pid], "pause")  # gone: no error


def test_summary_counts_runs_within_the_aim() -> None:
    line = summary("pause", [12.4, 15.0, 16.2])
    assert line == "pause: median 15.0 s, range 12.4–16.2 s, ≤ 15 s in 2 of 3"
