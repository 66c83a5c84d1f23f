"""The showcase preset and suite (issue 13): the shipped models' recipe and runs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from dida import runs
from dida.bench.curves import CurvePoint, log_trend
from dida.bench.jobs import Job, Row
from dida.bench.report import gap_closed, gap_figure, gap_trends
from dida.bench.showcase import (
    SHOWCASE_ADAPT_ITERS,
    SHOWCASE_RECIPE,
    SHOWCASE_ROWS,
    curve_jobs,
    showcase_jobs,
)
from dida.bench.suites import job_config
from dida.presets import CURVE_SNAPSHOTS, curve_snapshots, preset_config
from dida.train import build_parser, config_from_args, train


def test_the_showcase_preset_resolves_and_two_iterations_run(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    argv = ["--preset", "showcase", "--method", "dida", "--set", "iters=2"]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.iters == 2 and cfg.snapshot_iters == [] and cfg.method_options == {}
    showcase = preset_config("showcase", "oracle")
    assert showcase.snapshot_iters == curve_snapshots(showcase.iters)  # √2 steps to its end
    assert showcase.snapshot_iters[: len(CURVE_SNAPSHOTS)] == CURVE_SNAPSHOTS
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
        shipped = job.tags["row"] in (
            "mic",
            "dida_mic",
            "dida_weighted",
            "mic_long",
        )  # after the loss
        start = "shipped:source_only" if shipped else f"curves/source_only_{SHOWCASE_RECIPE}"
        assert job.init_from == start
        argv = job.train_args(Path("runs"), 1)
        iters = 3 * SHOWCASE_ADAPT_ITERS if job.tags["row"] == "mic_long" else SHOWCASE_ADAPT_ITERS
        assert f"iters={iters}" in argv and "--stop-cpu-h" not in argv
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


def test_gap_trends_extrapolate_finished_adaptation_rows_only() -> None:
    """The target is 40 % of the gap (46.0 mIoU here); a finished row rising 1.5 points per
    doubling from 43.0 at 1,000 its reaches it at 4,000; an unfinished row is left out."""
    rows = {"source_only": {"mIoU": (30.0, 0.0, 1)}, "oracle": {"mIoU": (70.0, 0.0, 1)}}
    jobs = [
        Job("showcase", f"{r}_s0", r, "showcase", tags={"row": r}) for r in ("daformer", "dida")
    ]
    curve = [
        {"it": it, "cpu_h": 0.9 * it / 3600, "miou": 0.43 + 0.015 * math.log2(it / 1000)}
        for it in (1000, 2000, 8000)
    ]
    entries = {
        job.name: {"state": state, "it": 8000, "curve": curve}
        for job, state in zip(jobs, ("finished", "running"), strict=True)
    }
    lines = gap_trends(jobs, entries, rows)
    assert "What 40 % of the gap (46.0 mIoU)" in lines[0]
    assert lines[2] == (
        "- daformer_s0: +1.5 mIoU per doubling (3 evaluations); reaches the target at ≈ 4,000 its, "
        "≈ 1 CPU-h"
    )
    assert not any("dida_s0" in line for line in lines)
    assert gap_trends(jobs, entries, {"oracle": rows["oracle"]}) == []


def test_the_gap_figure_draws_the_rows_that_kept_a_curve_and_names_the_others(
    tmp_path: Path,
) -> None:
    """A finished row with a curve is drawn (its trend line lies on its points: at 2,000 its it
    is 44.5); a finished row whose curve was lost is named; without a finished row that kept a
    curve, or without the oracle, there is no figure."""
    rows = {"source_only": {"mIoU": (30.0, 0.0, 1)}, "oracle": {"mIoU": (70.0, 0.0, 1)}}
    jobs = [
        Job("showcase", f"{r}_s0", r, "showcase", tags={"row": r, "label": r.upper()})
        for r in ("daformer", "dida", "mic")
    ]
    curve = [
        {"it": it, "cpu_h": None, "miou": 0.43 + 0.015 * math.log2(it / 1000)}
        for it in (1000, 2000, 8000)
    ]
    entries = {
        "daformer_s0": {"state": "finished", "curve": curve},
        "dida_s0": {"state": "finished", "trend": "+1.0 mIoU per doubling"},
        "mic_s0": {"state": "running", "curve": curve},
    }
    figure = tmp_path / "figures" / "gap.png"
    lines = gap_figure(jobs, entries, rows, figure)
    assert lines[0] == "The curves behind the trends (dida_s0: curve not kept, in the list only):"
    assert lines[2] == "![gap](../figures/gap.png)"
    assert figure.read_bytes().startswith(b"\x89PNG")
    trend = log_trend([CurvePoint(**p) for p in curve], 0.46)
    assert trend.at(2000) == pytest.approx(0.445) and trend.at(4000) == pytest.approx(0.46)
    entries["daformer_s0"]["state"] = "running"
    assert gap_figure(jobs, entries, rows, tmp_path / "none.png") == []
    entries["daformer_s0"]["state"] = "finished"
    assert gap_figure(jobs, entries, {"oracle": rows["oracle"]}, tmp_path / "none.png") == []
    assert not (tmp_path / "none.png").exists()


def test_fidelity_rows_start_from_the_showcase_source_only_snapshot() -> None:
    from dida.bench.showcase import FIDELITY_ITERS, FIDELITY_START_IT, fidelity_jobs

    jobs = fidelity_jobs()
    seeds = {
        row: sorted(j.seed for j in jobs if j.tags["row"] == row) for row in ("dida", "rel_online")
    }
    assert seeds == {"dida": [0, 1, 2], "rel_online": [0, 1, 2]}
    assert [j.seed for j in jobs[: len({j.tags["row"] for j in jobs})]] == [0] * 15
    job = next(j for j in jobs if j.name == "rel_weighted_s0")
    argv = job.train_args(Path("r"), 1)
    assert {"method.mode=released", "method.ins_weight=confidence"} <= set(argv)
    released = [j for j in jobs if "method.mode=released" in j.settings]
    on_teacher = {j.tags["row"] for j in released if "method.gather_from=teacher" in j.settings}
    assert {j.tags["row"] for j in released} - on_teacher == {"dida_released"}  # switches: teacher
    assert config_changes(job) == {"method.ins_weight": "confidence"}  # one switch over rel_teacher
    assert f"iters={FIDELITY_ITERS}" in argv
    start = Path("r/curves") / f"source_only_{SHOWCASE_RECIPE}" / runs.SNAPSHOTS
    assert f"model.init_weights={start / f'model_{FIDELITY_START_IT:06d}.safetensors'}" in argv
    assert job.init_dir(Path("r")) == Path("r/curves") / f"source_only_{SHOWCASE_RECIPE}"
    config = job_config(job, Path("r"))  # final scores only: no learning-curve evaluations
    assert config.iters == FIDELITY_ITERS and config.snapshot_iters == []


def config_changes(job) -> dict:
    """The flat config keys in which ``job`` differs from ``rel_teacher_s0`` (seed aside)."""
    from dida.bench.showcase import fidelity_jobs
    from dida.train import flat_config

    base = next(j for j in fidelity_jobs() if j.name == "rel_teacher_s0")
    a, b = (flat_config(job_config(j, Path("r"))) for j in (job, base))
    return {k: v for k, v in a.items() if b.get(k) != v}


def test_a_snapshot_start_waits_only_for_its_file(tmp_path: Path) -> None:
    import threading

    import pytest

    from dida.bench.showcase import fidelity_jobs
    from dida.bench.suites import wait_for_start

    job = fidelity_jobs()[0]
    with pytest.raises(RuntimeError, match="does not exist yet; train .* past that iteration"):
        wait_for_start(job, tmp_path, {})
    snapshot = job.init_file(tmp_path)
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"weights")
    wait_for_start(job, tmp_path, {job.init_dir(tmp_path): threading.Event()})  # never set: no wait


def test_the_showcase_preset_is_the_winning_recipe() -> None:
    from dida.bench.showcase import CURVE_RECIPES

    recipe = CURVE_RECIPES[SHOWCASE_RECIPE]
    via_recipe = ["--preset", "long", "--method", "oracle"]
    for pair in recipe.settings:
        via_recipe += ["--set", pair]
    a = config_from_args(build_parser().parse_args(via_recipe))
    b = config_from_args(build_parser().parse_args(["--preset", "showcase", "--method", "oracle"]))
    assert a.to_dict() == b.to_dict()
    names = {j.name for j in curve_jobs()}
    assert {f"oracle_{SHOWCASE_RECIPE}", f"source_only_{SHOWCASE_RECIPE}"} <= names


def test_a_rows_own_schedule_length_wins_over_the_suites() -> None:
    row = Row("mic_long", "mic", "MIC", settings=("method.mask_ratio=0.7",), iters=24000)
    assert row.settings_with_iters(8000) == ("method.mask_ratio=0.7", "iters=24000")
    plain = replace(row, iters=None)
    assert plain.settings_with_iters(8000) == ("method.mask_ratio=0.7", "iters=8000")
    assert plain.settings_with_iters() == ("method.mask_ratio=0.7",)  # the preset's length
