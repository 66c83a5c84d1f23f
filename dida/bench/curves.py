"""Learning curves: target mIoU and a few classes' IoU against iterations and CPU-hours, read from
the evaluations a run made at its ``snapshot_iters`` (``python -m dida.bench --suite curves``).

The cost axis is the run's cumulative *training* CPU time (``train_cpu_s``: process CPU seconds of
the training steps, data loading included, evaluations excluded), carried across resumes by the
checkpoint metadata. CPU time, not wall time, so that a run slowed by a neighbour on the same cores
is not charged for the wait.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dida import runs
from dida.bench.jobs import Job

CURVE_CLASSES = ("person", "rider", "car", "bicycle", "traffic sign")
"""The classes the app is about (overlapping entities and thin things), plotted besides mIoU."""


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a run: iteration, cumulative training cost and scores (fractions)."""

    it: int
    cpu_h: float | None
    miou: float
    iou: dict[str, float | None] = field(default_factory=dict)


def run_curve(run_dir: Path) -> list[CurvePoint]:
    """The evaluations of ``run_dir`` in iteration order (the last of each iteration wins)."""
    trains = runs.read_metrics(run_dir, "train")
    by_it = {r["it"]: r for r in runs.read_metrics(run_dir, "eval")}
    return [_point(by_it[it], trains) for it in sorted(by_it)]


def _point(record: dict, trains: list[dict]) -> CurvePoint:
    cpu_s = record.get("train_cpu_s", interpolate_cost(trains, record["it"]))
    return CurvePoint(
        it=record["it"],
        cpu_h=None if cpu_s is None else cpu_s / 3600,
        miou=record["mIoU"]["19"] or 0.0,
        iou={c: record["IoU"].get(c) for c in CURVE_CLASSES},
    )


def interpolate_cost(trains: Sequence[dict], it: int) -> float | None:
    """``train_cpu_s`` at iteration ``it`` by linear interpolation between the train records
    around it (records of runs that wrote the cost only at log iterations); None without cost."""
    points = [(r["it"], r["train_cpu_s"]) for r in trains if "train_cpu_s" in r]
    if not points:
        return None
    its = [p[0] for p in points]
    k = bisect.bisect_left(its, it)
    if k < len(points) and its[k] == it:
        return points[k][1]
    (i0, c0), (i1, c1) = _bracket(points, k)
    return c0 + (c1 - c0) * (it - i0) / max(i1 - i0, 1)


def _bracket(points: list[tuple[int, float]], k: int) -> tuple[tuple[int, float], ...]:
    """The two points around insertion index ``k`` (extrapolating at the ends; (0, 0) first)."""
    points = [(0, 0.0), *points]
    k = min(max(k + 1, 1), len(points) - 1)
    return points[k - 1], points[k]


TREND_FROM_IT = 1000
"""First iteration of the trend fit: earlier evaluations mix the warm start's jump with noise."""


@dataclass(frozen=True)
class Trend:
    """A run's mIoU against log2(iterations), least squares over its evaluations from
    ``TREND_FROM_IT`` on: what the schedule's length buys, and where the line would cross a target.
    An extrapolation of a noisy curve (±1–2 mIoU between evaluations), not a measurement."""

    per_doubling: float
    """mIoU (fraction) gained per doubling of the iterations."""
    reach_it: float | None
    """Iterations at which the line reaches the target (None: the line does not rise, or reaches
    it only beyond ``MAX_EXTRAPOLATION`` times the last fitted iteration)."""
    cpu_h_per_it: float | None
    """The run's training CPU-hours per iteration so far (None without cost records)."""
    points: int
    """Evaluations fitted."""
    intercept: float
    """The line's mIoU (fraction) at one iteration: mIoU = intercept + per_doubling · log2(it)."""

    def at(self, it: np.ndarray | float) -> np.ndarray | float:
        """The line's mIoU (fraction) at iteration(s) ``it``."""
        return self.intercept + self.per_doubling * np.log2(it)


MAX_EXTRAPOLATION = 64
"""How far past its last evaluation a trend is followed (6 doublings); beyond, a crossing means
nothing (a flat line 'reaches' any target after astronomically many iterations)."""


def log_trend(
    points: Sequence[CurvePoint], target: float, from_it: int = TREND_FROM_IT
) -> Trend | None:
    """The ``Trend`` of ``points`` towards mIoU ``target`` (None with fewer than 3 evaluations
    from ``from_it`` on)."""
    fitted = [p for p in points if p.it >= from_it]
    if len(fitted) < 3:
        return None
    x = np.log2([p.it for p in fitted])
    slope, intercept = np.polyfit(x, [p.miou for p in fitted], 1)
    last = fitted[-1]
    doublings = (target - intercept) / slope - np.log2(last.it) if slope > 0 else np.inf
    reach = (
        float(2 ** ((target - intercept) / slope))
        if doublings <= np.log2(MAX_EXTRAPOLATION)
        else None
    )
    cost = None if last.cpu_h is None else last.cpu_h / last.it
    return Trend(float(slope), reach, cost, len(fitted), float(intercept))


def curve_table(curves: Mapping[str, list[CurvePoint]]) -> str:
    """Markdown: one row per (run, evaluation) with iterations, CPU-hours, mIoU and class IoUs."""
    head = ["run", "iteration", "CPU-h", "mIoU", *CURVE_CLASSES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, points in curves.items():
        for p in points:
            cells = [name, str(p.it), _num(p.cpu_h, 2), _pct(p.miou)]
            cells += [_pct(p.iou.get(c)) for c in CURVE_CLASSES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_per_budget(
    curves: Mapping[str, list[CurvePoint]], budgets: Sequence[float], finished: set[str]
) -> str:
    """Markdown: for each CPU-hour budget, each run's best mIoU reached within it ("…" where an
    unfinished run has not yet spent the budget)."""
    head = ["run", *(f"≤ {b:g} CPU-h" for b in budgets)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, points in curves.items():
        cells = [_budget_cell(points, b, name in finished) for b in budgets]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _budget_cell(points: Sequence[CurvePoint], budget: float, finished: bool) -> str:
    spent = max((p.cpu_h for p in points if p.cpu_h is not None), default=0.0)
    if spent < budget and not finished:
        return "…"
    within = budget * (1 + BUDGET_SLACK)
    scores = [p.miou for p in points if p.cpu_h is not None and p.cpu_h <= within]
    return _pct(max(scores) if scores else None)


BUDGET_SLACK = 0.01
"""A run stopped by ``--stop-cpu-h H`` evaluates just after passing H (1.0002 CPU-h for H = 1):
evaluations up to 1 % past a budget count within it."""
CPU_BUDGETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Training CPU-hour budgets of the quality-per-CPU-hour table."""


def curves_section(
    jobs: Sequence[Job], entries: Mapping[str, dict], figure: Path
) -> tuple[list[str], dict]:
    """The curves suite's report from the runs' entries (:func:`dida.bench.archive.run_entries`):
    the per-evaluation table, the best mIoU within each CPU budget and the plot (runs still
    training included up to their last evaluation)."""
    curves = {
        j.name: [CurvePoint(**p) for p in entries[j.name].get("curve", [])]
        for j in jobs
        if j.name in entries
    }
    curves = {name: points for name, points in curves.items() if points}
    done = {j.name for j in jobs if entries.get(j.name, {}).get("state") == "finished"}
    plot_curves(curves, figure)
    table = best_per_budget(curves, CPU_BUDGETS, done)
    lines = [
        "Best mIoU within a training CPU-hour budget (… = not yet spent; an evaluation up to 1 % "
        "past a budget counts within it: a run stopped at its budget evaluates just after it):",
        "", table,
    ]  # fmt: skip
    lines += ["Every evaluation:", "", curve_table(curves), f"![curves](../figures/{figure.name})"]
    data = {name: [vars(p) for p in points] for name, points in curves.items()}
    return lines, data


def plot_curves(curves: Mapping[str, list[CurvePoint]], path: Path) -> None:
    """mIoU against iterations (log) and CPU-hours, and each of :data:`CURVE_CLASSES` against
    iterations, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5), constrained_layout=True)
    panels = [("mIoU", "it"), ("mIoU", "cpu_h"), *((c, "it") for c in CURVE_CLASSES)]
    for ax, (score, x) in zip(axes.flat, panels, strict=False):
        _panel(ax, curves, score, x)
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax, curves: Mapping[str, list[CurvePoint]], score: str, x: str) -> None:
    for name, points in curves.items():
        pts = [(getattr(p, x), _score(p, score)) for p in points]
        pts = [(a, 100 * b) for a, b in pts if a is not None and b is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("iterations" if x == "it" else "training CPU-hours")
    ax.set_ylabel(f"{score} (%)" if score == "mIoU" else f"{score} IoU (%)")
    ax.grid(alpha=0.3)


def _score(p: CurvePoint, score: str) -> float | None:
    return p.miou if score == "mIoU" else p.iou.get(score)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
