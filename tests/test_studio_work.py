"""Background work and priorities of the studio: keyed tasks on concurrent.futures, and the inference
gate that lets a request's forward pass go before any waiting batch forward."""

from __future__ import annotations

import threading
import time

import pytest

from dida.studio.work import InferenceGate, KeyedLocks, Tasks


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert predicate(), "timed out"


def test_a_key_runs_once_and_reports_its_state_and_result() -> None:
    tasks, release, calls = Tasks("test"), threading.Event(), []

    def slow() -> int:
        calls.append(1)
        release.wait(10)
        return 42

    assert tasks.state("k") is None and tasks.result("k") is None
    tasks.submit("k", slow)
    _until(lambda: tasks.state("k") == "running")
    assert tasks.submit("other", lambda: 1) == "queued"  # one worker: waits behind "k"
    assert tasks.submit("k", slow) == "running" and tasks.result("k") is None
    release.set()
    assert tasks.wait("k") == 42 and tasks.state("k") == "done"
    assert tasks.submit("k", slow) == "done" and calls == [1]
    assert tasks.wait("other") == 1


def test_a_failed_task_says_why_and_can_be_submitted_again() -> None:
    tasks = Tasks("test")

    def broken() -> None:
        raise ValueError("no source data")

    tasks.submit("k", broken)
    assert tasks.wait("k") is None
    assert tasks.state("k") == "failed: ValueError: no source data"
    tasks.submit("k", lambda: "fixed")
    assert tasks.wait("k") == "fixed"
    tasks.forget("k")
    assert tasks.state("k") is None


def test_close_drops_queued_tasks_and_signals_the_running_one() -> None:
    tasks, started = Tasks("test"), threading.Event()

    def long_task() -> str:
        started.set()
        _until(tasks.closing.is_set)
        return "stopped early"

    tasks.submit("long", long_task)
    tasks.submit("queued", lambda: "never")
    started.wait(10)
    tasks.close()
    assert tasks.wait("long") == "stopped early"
    assert tasks.state("queued").startswith("failed: cancelled")
    assert tasks.submit("late", lambda: "never").startswith("failed: cancelled")


def _hold(gate: InferenceGate, batch: bool, order: list[str], name: str) -> threading.Thread:
    def run() -> None:
        with gate.hold(batch):
            order.append(name)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_waiting_request_goes_before_waiting_batch_work(batch_first: bool) -> None:
    gate, order = InferenceGate(), []
    with gate.hold(batch=True):  # a val pass is mid-image
        names = [("batch", True), ("request", False)]
        threads = [_hold(gate, b, order, n) for n, b in (names if batch_first else names[::-1])]
        _until(lambda: gate.requests_waiting == 1)
        time.sleep(0.05)  # the batch waiter is waiting too
    for thread in threads:
        thread.join(10)
    assert order == ["request", "batch"]


def test_batch_work_runs_when_no_request_waits() -> None:
    gate, order = InferenceGate(), []
    _hold(gate, True, order, "batch").join(10)
    _hold(gate, False, order, "request").join(10)
    assert order == ["batch", "request"]


def test_keyed_locks_serialise_one_key_and_let_others_through() -> None:
    locks, order, inside = KeyedLocks(), [], threading.Event()

    def first() -> None:
        with locks.hold("a"):
            inside.set()
            time.sleep(0.2)
            order.append("first done")

    def second() -> None:
        with locks.hold("a"):
            order.append("second in")

    t1 = threading.Thread(target=first)
    t1.start()
    inside.wait(5)
    t2 = threading.Thread(target=second)
    t2.start()
    with locks.hold("b"):  # another key is free while "a" is held
        order.append("b")
    t1.join(5)
    t2.join(5)
    assert order == ["b", "first done", "second in"]
    assert len(locks) == 0  # released keys leave nothing behind
