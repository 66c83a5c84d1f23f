"""Learning curves from a run's evaluations (dida.bench.curves)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from dida import runs
from dida.bench.curves import (
    CURVE_CLASSES,
    MAX_EXTRAPOLATION,
    CurvePoint,
    best_per_budget,
    curve_table,
    interpolate_cost,
    log_trend,
    plot_curves,
    run_curve,
)
from dida.presets import CURVE_SNAPSHOTS, preset_config
from dida.train import build_parser, config_from_args, train


def _eval(it: int, miou: float, **extra) -> dict:
    iou = dict.fromkeys(CURVE_CLASSES, miou / 2)
    return {"kind": "eval", "it": it, "mIoU": {"19": miou}, "IoU": iou, **extra}


def test_interpolated_cost_between_and_beyond_records() -> None:
    trains = [{"it": 50, "train_cpu_s": 100.0}, {"it": 100, "train_cpu_s": 300.0}]
    assert interpolate_cost(trains, 50) == 100.0
    assert interpolate_cost(trains, 75) == pytest.approx(200.0)
    assert interpolate_cost(trains, 25) == pytest.approx(50.0)  # from (0, 0)
    assert interpolate_cost(trains, 150) == pytest.approx(500.0)  # the last slope goes on
    assert interpolate_cost([{"it": 50}], 50) is None


def test_run_curve_reads_evals_in_order_with_cost(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    for record in (
        {"kind": "train", "it": 100, "train_cpu_s": 360.0},
        {"kind": "train", "it": 200, "train_cpu_s": 720.0},
        _eval(200, 0.30, train_cpu_s=720.0),
        _eval(150, 0.20),
        _eval(200, 0.35, train_cpu_s=720.0),  # a re-evaluation of the same iteration wins
    ):
        runs.append_metrics(run, record)
    points = run_curve(run)
    assert [p.it for p in points] == [150, 200]
    assert [p.cpu_h for p in points] == pytest.approx([0.15, 0.2])
    assert [p.miou for p in points] == [0.20, 0.35] and points[1].iou["person"] == 0.175
    table = curve_table({"oracle": points})
    assert "| oracle | 200 | 0.20 | 35.0 | 17.5 |" in table
    budget = best_per_budget({"oracle": points}, [0.1, 0.15, 1.0], finished={"oracle"})
    running = best_per_budget({"oracle": points}, [0.1, 0.15, 1.0], finished=set())
    assert running.splitlines()[-1] == "| oracle | – | 20.0 | … |"
    assert budget.splitlines()[-1] == "| oracle | – | 20.0 | 35.0 |"
    just_past = best_per_budget({"oracle": points}, [0.199, 0.19], finished={"oracle"})
    assert just_past.splitlines()[-1] == "| oracle | 35.0 | 20.0 |"  # 0.2 is within 1 % of 0.199
    plot_curves({"oracle": points}, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_the_long_preset_resolves_and_two_iterations_run(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    args = build_parser().parse_args(["--preset", "long", "--method", "oracle", "--iters", "2"])
    cfg = config_from_args(args)
    assert cfg.iters == 2 and cfg.snapshot_iters == [] and cfg.model.backbone == "mit_b0"
    assert preset_config("long", "oracle").snapshot_iters == CURVE_SNAPSHOTS
    data = replace(cfg.data, source_root=str(synthcity_tiny), target_root=str(synthcity_tiny))
    data = replace(data, synthcity_preset="tiny", crop=(64, 64), rcs=False, val_images=2)
    cfg = replace(cfg, data=data, snapshot_iters=[1])
    events = list(train(cfg, tmp_path / "long"))
    assert events[-1].kind == "done"
    evals = runs.read_metrics(tmp_path / "long", "eval")
    assert [r["it"] for r in evals] == [1, 2] and evals[0]["train_cpu_s"] > 0
    assert (tmp_path / "long" / runs.SNAPSHOTS / "model_000001.safetensors").exists()
    assert [p.it for p in run_curve(tmp_path / "long")] == [1, 2]


def test_snapshots_follow_the_schedule_length_both_ways() -> None:
    def snapshots(iters: str) -> list[int]:
        argv = ["--preset", "long", "--method", "oracle", "--set", f"iters={iters}"]
        return config_from_args(build_parser().parse_args(argv)).snapshot_iters

    assert snapshots("16000") == CURVE_SNAPSHOTS
    assert snapshots("27000") == [*CURVE_SNAPSHOTS, 22627]  # 16000 * sqrt(2)
    assert snapshots("600") == [250, 354, 500]
    assert CURVE_SNAPSHOTS[:3] == [250, 354, 500] and CURVE_SNAPSHOTS[-1] == 16000


def _tiny_cfg(synthcity_tiny: Path, iters: int):
    cfg = preset_config("tiny", "source_only", iters=iters, eval_interval=0, checkpoint_interval=0)
    data = replace(cfg.data, source_root=str(synthcity_tiny), target_root=str(synthcity_tiny))
    return replace(cfg, data=replace(data, rcs=False, val_images=2))


def test_a_cpu_budget_stops_evaluated_and_resumable_with_the_schedule_unchanged(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    cfg, run = _tiny_cfg(synthcity_tiny, 10_000), tmp_path / "budget"
    events = list(train(cfg, run, stop_cpu_h=1e-5))  # 0.036 CPU-s: stops after the first step
    status = runs.read_status(run)
    assert events[-1].kind == "stopped" and status["state"] == "stopped"
    assert status["stop_reason"] == "CPU budget 1e-05 h reached"
    assert status["max_iters"] == 10_000 and status["it"] >= 1 and status["stop_cpu_h"] == 1e-5
    evals = runs.read_metrics(run, "eval")
    assert [r["it"] for r in evals] == [status["it"]] and evals[0]["train_cpu_s"] >= 0.036
    again = list(train(cfg, run, stop_cpu_h=1e-5))  # spent already: stops at once, no re-evaluation
    assert again[-1].kind == "stopped" and runs.read_status(run)["it"] == status["it"]
    assert len(runs.read_metrics(run, "eval")) == 1


def test_curve_alternatives_stop_at_the_equal_budget_and_the_current_recipe_runs_long() -> None:
    from dida.bench.showcase import CURVE_BUDGET_CPU_H, CURVE_RECIPES, SHOWCASE_RECIPE, curve_jobs

    jobs = {j.name: j for j in curve_jobs()}
    assert jobs["oracle_long"].stop_cpu_h is None and "source_only_long" in jobs
    winner = [j for j in jobs.values() if j.tags["recipe"] == SHOWCASE_RECIPE]
    assert {j.method for j in winner} == {"oracle", "source_only"}  # both, at full length
    assert all(j.stop_cpu_h is None for j in winner)
    assert len(CURVE_RECIPES) >= 4  # the current recipe and at least three alternatives
    alternatives = [j for j in jobs.values() if j.tags["recipe"] not in ("long", SHOWCASE_RECIPE)]
    budgets = {}
    for job in alternatives:
        argv = job.train_args(Path("runs"), 1)
        budgets[job.name] = float(argv[argv.index("--stop-cpu-h") + 1])
    assert min(budgets.values()) == CURVE_BUDGET_CPU_H  # every alternative reaches the budget
    assert all(b in (CURVE_BUDGET_CPU_H, 2 * CURVE_BUDGET_CPU_H) for b in budgets.values())


def test_a_budget_is_spent_only_up_to_the_budget_it_stopped_at(tmp_path: Path) -> None:
    from dida.bench.showcase import curve_jobs

    job = next(j for j in curve_jobs() if j.stop_cpu_h is not None)
    run = job.run_dir(tmp_path)
    run.mkdir(parents=True)
    runs.write_status(run, "stopped", stop_cpu_h=job.stop_cpu_h / 2)
    assert not job.budget_spent(tmp_path)  # a larger budget resumes it
    runs.write_status(run, "stopped", stop_cpu_h=job.stop_cpu_h)
    assert job.budget_spent(tmp_path)
    runs.write_status(run, "running", stop_cpu_h=job.stop_cpu_h)
    assert not job.budget_spent(tmp_path)


def test_the_log_trend_recovers_its_line_and_where_it_crosses_a_target() -> None:
    """mIoU = 0.40 + 0.015 log2(it / 1000): +1.5 points per doubling, 0.43 reached at 4,000 its
    (the 500-it point before the fit's start is ignored); the cost per iteration is the last
    point's."""
    points = [CurvePoint(500, 0.1, 0.9)] + [
        CurvePoint(it, it / 4000, 0.40 + 0.015 * math.log2(it / 1000)) for it in (1000, 2000, 8000)
    ]
    trend = log_trend(points, target=0.43)
    assert trend.per_doubling == pytest.approx(0.015)
    assert trend.reach_it == pytest.approx(4000)
    assert trend.cpu_h_per_it == pytest.approx(1 / 4000) and trend.points == 3


def test_a_flat_or_short_curve_has_no_crossing() -> None:
    flat = [CurvePoint(it, None, 0.45) for it in (1000, 2000, 4000)]
    trend = log_trend(flat, target=0.5)
    assert trend.reach_it is None and trend.cpu_h_per_it is None
    assert log_trend(flat[:2], target=0.5) is None


def test_a_crossing_far_beyond_the_schedule_is_not_extrapolated() -> None:
    """+0.1 points per doubling from 0.396 at 8,000 its would 'reach' 0.52 after ~2^1240 its:
    beyond MAX_EXTRAPOLATION times the last evaluation the trend names no crossing."""
    points = [
        CurvePoint(it, None, 0.396 + 0.001 * math.log2(it / 8000)) for it in (1000, 2000, 8000)
    ]
    trend = log_trend(points, target=0.52)
    assert trend.per_doubling == pytest.approx(0.001) and trend.reach_it is None
    within = log_trend(points, target=0.396 + 0.001 * math.log2(MAX_EXTRAPOLATION / 2))
    assert within.reach_it == pytest.approx(8000 * MAX_EXTRAPOLATION / 2)
