"""The showcase preset and suite (issue 13): the shipped models' recipe and runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dida import runs
from dida.bench.report import gap_closed
from dida.bench.suites import (
    SHOWCASE_ADAPT_ITERS,
    SHOWCASE_RECIPE,
    SHOWCASE_ROWS,
    curve_jobs,
    showcase_jobs,
)
from dida.presets import CURVE_SNAPSHOTS, preset_config
from dida.train import build_parser, config_from_args, train


def test_the_showcase_preset_resolves_and_two_iterations_run(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    argv = ["--preset", "showcase", "--method", "dida", "--set", "iters=2"]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.iters == 2 and cfg.snapshot_iters == [] and cfg.method_options == {}
    assert preset_config("showcase", "oracle").snapshot_iters == CURVE_SNAPSHOTS
    data = replace(cfg.data, source_root=str(synthcity_tiny), target_root=str(synthcity_tiny))
    data = replace(data, synthcity_preset="tiny", crop=(64, 64), rcs=False, val_images=2)
    events = list(train(replace(cfg, data=data), tmp_path / "showcase"))
    assert events[-1].kind == "done"
    assert runs.read_status(tmp_path / "showcase")["it"] == 2


def test_showcase_bases_are_the_winning_curve_runs_at_full_length() -> None:
    jobs = showcase_jobs()
    curves = {j.name: j for j in curve_jobs()}
    base, adapt = jobs[:2], jobs[2:]
    assert [j.method for j in base] == ["source_only", "oracle"]  # the start trains first
    for job in base:
        assert job.suite == "curves" and job.stop_cpu_h is None
        assert job.run_dir(Path("r")) == curves[f"{job.method}_{SHOWCASE_RECIPE}"].run_dir(
            Path("r")
        )
    assert [j.tags["row"] for j in adapt] == [row.key for row in SHOWCASE_ROWS]
    for job in adapt:
        assert job.init_from == f"curves/source_only_{SHOWCASE_RECIPE}"
        argv = job.train_args(Path("runs"), 1)
        assert f"iters={SHOWCASE_ADAPT_ITERS}" in argv and "--stop-cpu-h" not in argv
        assert argv[argv.index("--preset") + 1] == "showcase"


def test_gap_closed_is_the_share_of_the_source_only_to_oracle_gap() -> None:
    rows = {
        "source_only": {"mIoU": (30.0, 0.0, 1)},
        "oracle": {"mIoU": (70.0, 0.0, 1)},
        "daformer": {"mIoU": (46.0, 0.0, 1)},
        "dida": {"mIoU": (28.0, 0.0, 1)},
    }
    line = gap_closed(rows)
    assert line.endswith("daformer 40 %, dida -5 %") and "30.0 → oracle 70.0" in line
    assert "no gap" in gap_closed({"oracle": rows["oracle"]})
