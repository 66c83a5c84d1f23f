"""What a benchmark run is: a main-table ``Row`` (method, settings, seeds) and a ``Job`` (one
``python -m dida.train`` command with the tags the report groups by). Suites build jobs, reports read
them; this module imports neither, so the two never import each other."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dida import runs

ABLATION_DEFAULTS = {"tp": 0.1, "lambda": 1.0, "K": 300}
"""DIDA's default point (tp, λ, K): the ablation run every sweep shares."""


SHIPPED = "shipped:"
"""``init_from`` prefix of a shipped checkpoint (``shipped:source_only``: the float16 weights in
``assets/checkpoints/source_only``), for runs whose init run's folder is gone (session 15)."""
REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets" / "checkpoints"

SEEDS = (0, 1, 2)
PRODA_SETTINGS = ("method.source_init_iters=50",)
"""ProDA-style starts from the source-only run (its warm-up stage); 50 source iterations then
build the class prototypes and freeze the warm-up model."""


@dataclass(frozen=True)
class Row:
    """One row of the main table: a method (with settings) and how many seeds it runs."""

    key: str
    """Row key and run-name prefix, e.g. ``dida_released``."""
    method: str
    """Method name (``dida.methods.registry.METHODS``)."""
    label: str
    """Name printed in the table."""
    seeds: int = 1
    """Number of seeds (0, 1, ...)."""
    settings: tuple[str, ...] = ()
    """``--set KEY=VALUE`` overrides."""
    init_from: str | None = None
    """Row whose seed-0 run initialises this one (``model.init_weights``): ``row`` of the same
    suite or ``suite/row``, or ``shipped:NAME`` (a shipped checkpoint)."""
    iters: int | None = None
    """Schedule length of this row's runs; None: the suite's (its preset's, or the length the
    suite sets for every row)."""

    def settings_with_iters(self, default: int | None = None) -> tuple[str, ...]:
        """``settings`` plus ``iters=`` (this row's length, else ``default``; none if both unset)."""
        iters = self.iters or default
        return self.settings if iters is None else (*self.settings, f"iters={iters}")


@dataclass(frozen=True)
class Job:
    """One training run of the benchmark."""

    suite: str
    name: str
    method: str
    preset: str
    seed: int = 0
    settings: tuple[str, ...] = ()
    """``--set KEY=VALUE`` overrides given to ``python -m dida.train``."""
    tags: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """What the report groups by (row, sweep, value)."""
    init_from: str | None = None
    """Run (``name`` of the same suite or ``suite/name``) whose final weights initialise this one
    (it trains first), ``suite/name@IT``: its learning-curve snapshot of iteration IT, or
    ``shipped:NAME``: the shipped checkpoint ``assets/checkpoints/NAME``."""

    stop_cpu_h: float | None = None
    """Stop (resumable) once the run has spent this many training CPU-hours (``--stop-cpu-h``):
    recipes compared at an equal budget; the schedule stays the full one."""

    def run_dir(self, runs_root: Path) -> Path:
        return Path(runs_root) / self.suite / self.name

    def argv(self, runs_root: Path, threads: int) -> list[str]:
        """The ``python -m dida.train`` command of this run."""
        return [sys.executable, "-m", "dida.train", *self.train_args(runs_root, threads)]

    def train_args(self, runs_root: Path, threads: int) -> list[str]:
        """The arguments of ``python -m dida.train`` for this run."""
        args = ["--method", self.method, "--preset", self.preset, "--seed", str(self.seed)]
        args += ["--name", self.name, "--threads", str(threads)]
        args += ["--runs", str(Path(runs_root) / self.suite)]
        for pair in self.settings:
            args += ["--set", pair]
        if self.init_from is not None:
            args += ["--set", f"model.init_weights={self.init_file(runs_root)}"]
        if self.stop_cpu_h is not None:
            args += ["--stop-cpu-h", f"{self.stop_cpu_h:g}"]
        return args

    def budget_spent(self, runs_root: Path) -> bool:
        """The run stopped at this job's CPU budget (done for now; a larger budget resumes it)."""
        status = runs.read_status(self.run_dir(runs_root))
        spent = status.get("stop_cpu_h") if status.get("state") == "stopped" else None
        return self.stop_cpu_h is not None and spent is not None and spent >= self.stop_cpu_h

    @property
    def starts_shipped(self) -> bool:
        """Whether this run starts from a shipped checkpoint (no init run to wait for)."""
        return str(self.init_from).startswith(SHIPPED)

    def init_dir(self, runs_root: Path) -> Path:
        """The folder of the run (or shipped checkpoint) this one starts from."""
        assert self.init_from is not None
        if self.starts_shipped:
            return ASSETS / self.init_from.removeprefix(SHIPPED)
        suite, _, name = self.init_from.partition("@")[0].rpartition("/")
        return Path(runs_root) / (suite or self.suite) / name

    def init_file(self, runs_root: Path) -> Path:
        """The weights this run starts from: the init run's model, or its snapshot ``@IT``."""
        assert self.init_from is not None
        _, at, it = self.init_from.partition("@")
        if not at or self.starts_shipped:
            return self.init_dir(runs_root) / runs.MODEL
        return self.init_dir(runs_root) / runs.SNAPSHOTS / f"model_{int(it):06d}.safetensors"
