"""The training queue of the app: one job at a time in a worker thread, the others waiting in order
with a visible position; a job can be stopped (after its current iteration) or dropped while queued.

Run folders are named through ``dida.runs.run_path``: a name that is not a safe folder name (``..``,
an absolute path, a separator, a NUL byte, over 100 characters) is refused before anything is
written, with the rule in the message.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dida import runs
from dida.bank import BankHistory, BankSnapshot
from dida.config import TrainConfig
from dida.model import ModelConfig
from dida.presets import preset_config
from dida.studio.catalog import bank_path
from dida.train import TrainEvent, train

log = logging.getLogger(__name__)


def train_config(
    preset: str,
    method: str,
    data_root: str | Path,
    data_preset: str,
    iters: int | None = None,
    seed: int = 0,
    method_options: dict[str, Any] | None = None,
) -> TrainConfig:
    """A preset's TrainConfig for the app: SynthCity roots point at ``data_root`` when the preset
    uses the same SynthCity preset as the app's data, else at ``<data_root>-<preset>`` beside it."""
    cfg = preset_config(preset, method)
    root = Path(data_root)
    if cfg.data.synthcity_preset != data_preset:
        root = root.with_name(f"{root.name.split('-')[0]}-{cfg.data.synthcity_preset}")
    data = replace(cfg.data, source_root=str(root), target_root=str(root))
    options = {**cfg.method_options, **(method_options or {})}
    return replace(cfg, data=data, iters=iters or cfg.iters, seed=seed, method_options=options)


def latest_snapshot(run_dir: Path) -> BankSnapshot | None:
    """The last bank snapshot a run has saved (at its checkpoints), if any."""
    path = bank_path(run_dir)
    if path is None:
        return None
    try:
        history = BankHistory.load(path)
    except (OSError, ValueError) as err:  # being replaced right now: try at the next poll
        log.info("bank history %s not readable yet: %s", path, err)
        return None
    return history[len(history) - 1] if len(history) else None


def warm_start(cfg: TrainConfig, start: Path) -> TrainConfig:
    """``cfg`` started from the weights of the run (or shipped checkpoint) in ``start``: its
    ``model.safetensors`` and the model config they were trained with (the architecture must be
    the start's; data, method and schedule stay ``cfg``'s)."""
    weights = Path(start) / runs.MODEL
    if not weights.is_file():
        raise runs.RunError(f"{start} has no {runs.MODEL} to start from; pick a run that has one")
    model = runs.read_json(Path(start) / runs.CONFIG)["model"]
    model.update(init_weights=str(weights), backbone_weights=None)  # the whole model is replaced
    return replace(cfg, model=ModelConfig.from_dict(model))


TRAIN_NICENESS = 10
"""How much lower than the app's request threads the training thread runs (Linux nice levels)."""


def lower_priority(niceness: int = TRAIN_NICENESS) -> bool:
    """Lower the calling thread's CPU priority by ``niceness`` (Linux schedules threads as tasks,
    so only this thread is affected: the web server's request threads keep theirs). A training
    job then takes the CPU the requests leave instead of competing with them. False where the
    platform does not allow it (the thread keeps its priority)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except (AttributeError, OSError):  # not Linux / not permitted
        return False
    return True


@dataclass
class TrainJob:
    """One training request of the app."""

    job_id: str
    name: str
    """Run name (folder under the first runs directory)."""
    config: TrainConfig
    run_dir: Path
    state: str = "queued"
    """``queued``, ``running``, ``finished``, ``stopped``, ``cancelled`` or ``failed``."""
    events: deque = field(default_factory=lambda: deque(maxlen=2000))
    """The latest TrainEvents (train/eval events drive the live curves)."""
    stop_flag: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    command: list[str] = field(default_factory=list)
    """The ``python -m dida.train`` command that trains the same run (recorded in its config)."""

    @property
    def last(self) -> TrainEvent | None:
        return self.events[-1] if self.events else None

    @property
    def done(self) -> bool:
        return self.state in ("finished", "stopped", "cancelled", "failed")


class TrainQueue:
    """Runs one training job at a time in a worker thread; the others wait in order.

    A daemon thread over a deque rather than an executor: a queued job shows its position and can be
    dropped, and an app that exits never waits for queued trainings (``Studio.shutdown`` stops the
    running one at its next iteration)."""

    def __init__(self, runs_dir: Path, on_done: Callable[[TrainJob], None] | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.on_done = on_done
        self.jobs: dict[str, TrainJob] = {}
        self._pending: deque[str] = deque()
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._loop, name="studio-train", daemon=True)
        self._thread.start()

    def submit(self, config: TrainConfig, name: str, command: list[str] | None = None) -> TrainJob:
        """Queue a job training ``config`` into ``runs_dir/name``; ``command`` is the equivalent
        command line recorded in the run's config. Raises ``runs.RunNameError`` (a ValueError
        naming the rule) for an unsafe name and ValueError for a name in use."""
        run_dir = runs.run_path(self.runs_dir, name)
        if (run_dir / runs.CONFIG).exists() or self._name_taken(name):
            raise ValueError(
                f"a run named {name!r} already exists in {self.runs_dir}; pick another name"
            )
        job = TrainJob(
            f"job{next(self._ids)}", name, config, run_dir, command=command or ["studio"]
        )
        with self._lock:
            self.jobs[job.job_id] = job
            self._pending.append(job.job_id)
        self._wake.set()
        return job

    def _name_taken(self, name: str) -> bool:
        with self._lock:
            return any(j.name == name and not j.done for j in self.jobs.values())

    def position(self, job_id: str) -> int | None:
        """0 = running, n = n-th in the queue, None = finished or unknown."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.done:
                return None
            if job.state == "running":
                return 0
            return list(self._pending).index(job_id) + 1

    def stop(self, job_id: str) -> TrainJob:
        """Ask a running job to stop after its current iteration, or drop a queued one."""
        job = self.get(job_id)
        job.stop_flag.set()
        with self._lock:
            if job_id in self._pending:
                self._pending.remove(job_id)
                job.state = "cancelled"
        return job

    def get(self, job_id: str) -> TrainJob:
        with self._lock:
            if job_id not in self.jobs:
                raise KeyError(f"no training job {job_id!r}; known jobs: {sorted(self.jobs)}")
            return self.jobs[job_id]

    def stop_all(self, timeout: float = 60.0) -> None:
        """Stop every job and wait (up to ``timeout`` s) until none runs."""
        for job in list(self.jobs.values()):
            if not job.done:
                self.stop(job.job_id)
        deadline = time.monotonic() + timeout
        while self.active() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def active(self) -> TrainJob | None:
        with self._lock:
            return next((j for j in self.jobs.values() if j.state == "running"), None)

    def _next(self) -> TrainJob | None:
        with self._lock:
            if not self._pending:
                return None
            job = self.jobs[self._pending.popleft()]
            job.state = "running"
            return job

    def _loop(self) -> None:
        lower_priority()
        while True:
            job = self._next()
            if job is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: TrainJob) -> None:
        try:
            for event in train(
                job.config, job.run_dir, stop=job.stop_flag.is_set, argv=job.command
            ):
                job.events.append(event)
            job.state, job.error = _end_state(job.last)
        except Exception as err:  # reported in the Train tab; the queue goes on
            job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            log.warning("training job %s failed:\n%s", job.job_id, traceback.format_exc())
            if (job.run_dir / runs.CONFIG).exists():
                runs.write_status(job.run_dir, "failed", error=job.error)
        if self.on_done is not None:
            self.on_done(job)


def _end_state(last: TrainEvent | None) -> tuple[str, str | None]:
    """A job's state after its event stream ended normally: stopped, failed (diverged) or finished."""
    if last is not None and last.kind == "failed":
        return "failed", last.extra.get("reason", "diverged")
    return ("stopped" if last is not None and last.kind == "stopped" else "finished"), None
