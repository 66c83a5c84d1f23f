"""Learning curves from a run's evaluations (dida.bench.curves)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dida import runs
from dida.bench.curves import (
    CURVE_CLASSES,
    best_per_budget,
    curve_table,
    interpolate_cost,
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
