"""The benchmark command: job lists, resumable running, scoring and the reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dida import runs
from dida.bench import suites as bench
from dida.bench.archive import trained_on
from dida.bench.compare import Difference, Paired, compare, differences, paired
from dida.bench.plots import plot_differences
from dida.bench.report import (
    FIDELITY_PAIRS,
    comparisons,
    fmt,
    main_table,
    per_seed_values,
    shift_difference,
    shift_table,
    stat,
    sweep_table,
    write_reports,
)
from dida.bench.scores import (
    BENCH_EVAL,
    FINAL_EVAL_SOURCE,
    last_segment,
    mean_over,
    overlap_pixels,
    present_miou,
    score_from_final_eval,
    wall_cost,
)
from dida.data.classes import CLASSES
from dida.environment import run_config

REPO = Path(__file__).resolve().parents[1]


def test_main_jobs_run_seed_zero_of_every_row_first() -> None:
    jobs = bench.main_jobs()
    first = [j.name for j in jobs[: len(bench.MAIN_ROWS)]]
    assert first == [f"{row.key}_s0" for row in bench.MAIN_ROWS]
    assert len(jobs) == sum(row.seeds for row in bench.MAIN_ROWS) == 11
    assert sorted(j.seed for j in jobs if j.tags["row"] == "dida") == [0, 1, 2]
    released = next(j for j in jobs if j.name == "dida_released_s0")
    assert released.method == "dida" and released.settings == ("method.mode=released",)


def test_ablation_jobs_share_the_default_point_with_the_quick_suite(tmp_path: Path) -> None:
    jobs = bench.ablation_jobs()
    names = [j.name for j in jobs]
    assert len(names) == len(set(names)) == 2 + 3 * 4 + 2 + 1  # ref, default, sweeps, slots
    assert next(j for j in jobs if j.name == "dida_alignmentnone").settings == (
        "method.alignment=none",
    )
    assert next(j for j in jobs if j.name == "dida_slotsinterior").settings == (
        "method.slot_pixels=interior",
    )
    assert "dida_tp0.1" not in names and "dida_K300" not in names and "dida_lambda1.0" not in names
    assert next(j for j in jobs if j.name == "dida_K150").settings == ("method.bank_size=150",)
    quick = {j.run_dir(tmp_path): j for j in bench.quick_jobs()}
    default = next(j for j in jobs if j.tags["sweep"] == "default")
    reference = next(j for j in jobs if j.tags["sweep"] == "reference")
    assert default.run_dir(tmp_path) == tmp_path / "quick" / "dida_s0"
    assert quick[default.run_dir(tmp_path)].argv(tmp_path, 1) == default.argv(tmp_path, 1)
    assert quick[reference.run_dir(tmp_path)].method == "daformer"


def test_select_keeps_named_runs_and_rejects_unknown_names() -> None:
    jobs = bench.quick_jobs()
    assert [j.name for j in bench.select(jobs, ["dida_s0", "proda_s0"])] == ["dida_s0", "proda_s0"]
    assert bench.select(jobs, None) == jobs
    with pytest.raises(
        SystemExit, match=r"unknown run 'dida_s9'; the runs are \['quick/oracle_s0'"
    ):
        bench.select(jobs, ["dida_s9"])
    both = bench.main_jobs() + jobs
    with pytest.raises(SystemExit, match=r"ambiguous run \(write SUITE/NAME\) 'dida_s0'"):
        bench.select(both, ["dida_s0"])
    [job] = bench.select(both, ["quick/dida_s0"])
    assert job.suite == "quick" and job.name == "dida_s0"


def test_suites_share_one_queue_without_training_a_run_twice(tmp_path: Path) -> None:
    every = bench.distinct_runs(bench.quick_jobs() + bench.ablation_jobs(), tmp_path)
    folders = [j.run_dir(tmp_path) for j in every]
    assert len(folders) == len(set(folders)) == len(bench.MAIN_ROWS) + 3 * 4 + 2 + 1
    assert folders[: len(bench.MAIN_ROWS)] == [j.run_dir(tmp_path) for j in bench.quick_jobs()]
    args = bench.parse_args(["--suite", "ablations", "shift", "--only", "dida_K100", "dida_shift0"])
    assert args.suite == ["ablations", "shift"] and args.only == ["dida_K100", "dida_shift0"]


def test_quick_jobs_are_every_main_row_once() -> None:
    jobs = bench.quick_jobs()
    assert [j.tags["row"] for j in jobs] == [row.key for row in bench.MAIN_ROWS]
    assert {j.preset for j in jobs} == {"quick"} and {j.seed for j in jobs} == {0}


def test_shift_jobs_give_each_shift_its_own_target_root() -> None:
    jobs = bench.shift_jobs()
    assert len(jobs) == len(bench.SHIFT_VALUES) * len(bench.SHIFT_METHODS)
    default = [j for j in jobs if j.tags["shift"] == bench.DEFAULT_SHIFT == 1.0]
    assert {j.suite for j in default} == {"quick"} and not any(j.settings for j in default)
    job = next(j for j in jobs if j.name == "dida_shift0.25")
    assert job.settings == (
        "data.target_root=data/synthcity-shift0.25",
        "data.synthcity_shift=0.25",
    )


def test_data_config_is_what_the_training_command_reads(tmp_path: Path) -> None:
    configs = [bench.data_config(job, tmp_path) for job in bench.shift_jobs()]
    assert sorted({c.synthcity_shift for c in configs}, key=str) == [0.0, 0.25, 0.5, 0.75, None]
    job = next(j for j in bench.shift_jobs() if j.name == "oracle_shift0.25")
    assert bench.data_config(job, tmp_path).target_root == "data/synthcity-shift0.25"
    assert {c.source_root for c in configs} == {"data/synthcity"}


def test_prepare_data_generates_a_shift_target_before_training(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    target = tmp_path / "shift0.5"
    settings = (f"data.source_root={synthcity_tiny}", f"data.target_root={target}",
                "data.synthcity_shift=0.5")  # fmt: skip
    bench.prepare_data(bench.Job("shift", "dida_shift0.5", "dida", "tiny", 0, settings), tmp_path)
    manifest = runs.read_json(target / "synthcity.json")
    assert manifest["config"]["shift"] == 0.5 and set(manifest["splits"]) == {"train", "val"}
    assert len(list((target / "target").rglob("*.png"))) > 0


def test_a_run_folder_of_another_preset_is_refused_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    oracle, job = (
        next(j for j in bench.main_jobs() if j.name == n) for n in ("oracle_s0", "proda_s0")
    )
    for each in (oracle, job):  # stored with a relative start-weights path (proda)
        config = run_config(bench.job_config(each, Path("runs")))
        runs.create_run(each.run_dir(Path("runs")).parent, each.name, config)
    config = runs.read_json(oracle.run_dir(tmp_path / "runs") / runs.CONFIG)
    del config["model"]["init_weights"]  # as written before that field existed: its default
    runs.atomic_write_json(oracle.run_dir(tmp_path / "runs") / runs.CONFIG, config)
    assert bench.mismatched_runs([oracle, job], tmp_path / "runs") == []
    quick = next(j for j in bench.main_jobs("quick") if j.name == "proda_s0")
    assert {"iters", "data.val_images"} <= set(bench.config_mismatch(quick, tmp_path / "runs"))
    with runs.RunLock(job.run_dir(tmp_path / "runs")):  # a live owner
        assert bench.describe_run(job, tmp_path / "runs") == "created"
    assert bench.describe_run(job, tmp_path / "runs") == "interrupted at 0/1500"  # nobody holds it
    described = bench.describe_run(quick, tmp_path / "runs")
    assert described.startswith("interrupted at 0/1000; ANOTHER CONFIG (")
    runs.write_status(job.run_dir(tmp_path / "runs"), "running", it=550, max_iters=1000)
    with runs.RunLock(job.run_dir(tmp_path / "runs")):
        assert bench.describe_run(job, tmp_path / "runs") == "running at 550/1000"
    assert bench.describe_run(bench.main_jobs()[-1], tmp_path / "runs") == "not started"
    args = ["--suite", "main", "--preset", "quick", "--runs", "runs", "--out", "docs", "--report"]
    assert bench.main(args) == 1
    assert "runs/main/proda_s0 holds a run of another config" in capsys.readouterr().err
    assert not (tmp_path / "docs").exists()


def test_job_argv_is_the_train_cli(tmp_path: Path) -> None:
    job = bench.Job("main", "dida_s1", "dida", "default", 1, ("method.tp=0.2",))
    argv = job.argv(tmp_path, threads=1)
    assert argv[1:3] == ["-m", "dida.train"]
    assert argv[argv.index("--runs") + 1] == str(tmp_path / "main")
    assert argv[argv.index("--set") + 1] == "method.tp=0.2"
    assert job.run_dir(tmp_path) == tmp_path / "main" / "dida_s1"


def test_stat_and_fmt_golden() -> None:
    assert stat([0.5, 0.7, None]) == pytest.approx((60.0, np.std([50, 70], ddof=1), 2))
    assert fmt(stat([0.5, 0.7])) == "60.0 ± 14.1"
    assert fmt(stat([0.25])) == "25.0"
    assert fmt(stat([None])) == "-"
    assert mean_over({"car": 0.5, "bus": None, "train": 0.1}, ["car", "bus", "train"]) == 0.3
    assert mean_over({"bus": None}, ["bus"]) is None
    subset = {
        "IoU": {"car": 0.5, "road": 0.0, "bus": None},
        "Acc": {"car": 0.9, "road": None, "bus": None},
    }
    assert present_miou(subset) == 0.5  # road is only predicted in the subset: not averaged


def _record(miou: float, overlap: float, rare: float | None) -> dict:
    ious = dict.fromkeys(CLASSES, miou)
    overlap_ious = {c: (overlap if c == "car" else 0.0) for c in CLASSES}
    acc = {c: (0.5 if c == "car" else None) for c in CLASSES}
    return {
        "all": {"mIoU": {"19": miou}, "IoU": ious},
        "overlap": {"mIoU": {"19": overlap / 19}, "IoU": overlap_ious, "Acc": acc},
        "rare_mIoU": rare,
        "train_s": 600.0,
        "it_per_s": 2.0,
        "peak_mem_mb": 900.0,
    }


def _job(name: str, row: str, seed: int = 0) -> bench.Job:
    return bench.Job("main", name, row, "default", seed, (), {"row": row, "label": row.upper()})


def test_main_table_means_over_seeds_and_judges_the_spread() -> None:
    found = [
        (_job("daformer_s0", "daformer"), _record(0.40, 0.30, 0.10)),
        (_job("daformer_s1", "daformer", 1), _record(0.44, 0.30, 0.10)),
        (_job("dida_s0", "dida"), _record(0.41, 0.40, 0.20)),
        (_job("dida_s1", "dida", 1), _record(0.43, 0.40, 0.20)),
    ]
    table, rows = main_table(found)
    assert "| DIDA | 2 |" in table and "**42.0 ± 1.4**" in table and "**42.0 ± 2.8**" in table
    sentence = compare(rows)
    assert "mIoU: dida − daformer = +0.0 (within the seed spread" in sentence
    assert "overlap_mIoU: dida − daformer = +10.0 (larger than the seed spread" in sentence
    assert compare(rows, "daformer", "proda").startswith("(daformer or proda not finished")
    _, single = main_table(found[:1] + found[2:3])
    assert "one seed: no spread" in compare(single)
    _, mixed = main_table(found[:3])
    assert "overlap_mIoU: dida − daformer = +10.0 (larger than the seed spread, largest std 0.0; " \
        "the other row has one seed)" in compare(mixed)  # fmt: skip
    assert "mIoU: dida − daformer = -1.0 (within the seed spread, largest std 2.8; the" in compare(
        mixed
    )


def test_paired_differences_remove_a_seed_every_row_shares(tmp_path: Path) -> None:
    """Seed 1 is 4 points lower for both rows: the unpaired spread (2.8) hides a constant +1.0,
    the paired one (std 0) shows it; a seed only one row has is left out of the pairing."""
    found = [
        (_job("daformer_s0", "daformer"), _record(0.44, 0.30, 0.10)),
        (_job("daformer_s1", "daformer", 1), _record(0.40, 0.30, 0.10)),
        (_job("dida_s0", "dida"), _record(0.45, 0.32, 0.10)),
        (_job("dida_s1", "dida", 1), _record(0.41, 0.30, 0.10)),
        (_job("dida_s2", "dida", 2), _record(0.30, 0.30, 0.10)),
    ]
    _, rows = main_table(found)
    per_seed = per_seed_values(found)
    assert per_seed["dida"][1]["mIoU"] == pytest.approx(41.0) and set(per_seed["dida"]) == {0, 1, 2}
    miou = paired(per_seed, "daformer", "dida", "mIoU")
    assert miou == Paired((0, 1), pytest.approx(1.0), pytest.approx(0.0, abs=1e-9))
    overlap = paired(per_seed, "daformer", "dida", "overlap_mIoU")
    assert overlap.mean == pytest.approx(1.0) and overlap.std == pytest.approx(np.sqrt(2))
    sentence = compare(rows, "daformer", "dida", per_seed)
    assert "paired over seeds 0, 1: +1.0 ± 0.0, larger than its spread" in sentence
    assert "paired over seeds 0, 1: +1.0 ± 1.4, within its spread" in sentence
    assert "paired" not in compare(rows)  # no per-run values: the unpaired sentence only
    assert paired(per_seed_values(found[:1] + found[2:3]), "daformer", "dida", "mIoU") is None
    diffs = differences(rows, [("daformer", "dida")], per_seed)
    assert diffs[0].paired == miou and diffs[1].paired == overlap
    assert differences(rows, [("daformer", "dida")])[0].paired is None
    plot_differences(diffs, tmp_path / "paired.png", "test")
    assert (tmp_path / "paired.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_differences_carry_the_spread_compare_judges_them_by(tmp_path: Path) -> None:
    found = [
        (_job("daformer_s0", "daformer"), _record(0.40, 0.30, 0.10)),
        (_job("daformer_s1", "daformer", 1), _record(0.44, 0.30, 0.10)),
        (_job("dida_s0", "dida"), _record(0.41, 0.40, 0.20)),
        (_job("proda_s0", "proda"), _record(0.35, 0.20, 0.10)),
    ]
    _, rows = main_table(found)
    pairs = [("daformer", "dida"), ("dida", "proda"), ("daformer", "mic")]
    diffs = differences(rows, pairs)
    assert [(d.a, d.b, d.metric) for d in diffs[:3]] == [
        ("daformer", "dida", m) for m in ("mIoU", "overlap_mIoU", "rare_mIoU")
    ]
    assert len(diffs) == 6  # mic is not in the rows: no difference, no error
    miou = diffs[0]
    assert miou.diff == pytest.approx(-1.0) and miou.spread == pytest.approx(
        np.std([40, 44], ddof=1)
    )
    assert "largest std 2.8" in compare(rows) and all(d.spread is None for d in diffs[3:])
    assert diffs[3] == Difference("dida", "proda", "mIoU", pytest.approx(-6.0), None)
    path = tmp_path / "differences.png"
    plot_differences(diffs, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_differences([], tmp_path / "none.png", "test")
    assert not (tmp_path / "none.png").exists()


def test_pairs_with_an_unfinished_row_are_listed_once_not_a_line_each() -> None:
    found = [(_job("daformer_s0", "daformer"), _record(0.40, 0.30, 0.10)),
             (_job("dida_s0", "dida"), _record(0.41, 0.40, 0.20))]  # fmt: skip
    _, rows = main_table(found)
    lines = [line for line in comparisons("fidelity", rows) if line]
    assert lines[0].startswith("mIoU: dida − daformer = +1.0")
    assert len(lines) == 2 and lines[1].startswith("Not compared yet (a row not finished): ")
    waiting = lines[1].split(": ", 1)[1].rstrip(".").split(", ")
    assert len(waiting) == len(FIDELITY_PAIRS) - 1 and "dida_released − daformer" in waiting


def test_sweep_table_sorts_values() -> None:
    found = [
        (
            bench.Job("ablations", "b", "dida", "q", tags={"sweep": "tp", "value": 0.5}),
            _record(0.3, 0.2, None),
        ),
        (
            bench.Job("ablations", "a", "dida", "q", tags={"sweep": "tp", "value": 0.05}),
            _record(0.1, 0.2, 0.1),
        ),
    ]
    table, data = sweep_table(found)
    assert [p[0] for p in data["tp"]] == [0.05, 0.5]
    assert "| tp | 0.5 | 30.0 | 20.0 | - | 2.00 | 900 |" in table


def test_overlap_pixels_needs_instances() -> None:
    with pytest.raises(ValueError, match="no instance map"):
        overlap_pixels({"name": "x", "label": np.zeros((4, 4))})


def test_bench_trains_scores_reports_and_resumes(
    synthcity_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    data = (f"data.source_root={synthcity_tiny}", f"data.target_root={synthcity_tiny}")
    job = bench.Job("main", "source_only_s0", "source_only", "tiny", 0, data,
                    {"row": "source_only", "label": "source-only"})  # fmt: skip
    assert bench.run_jobs([job], tmp_path, workers=1, threads=1) == []
    record = runs.read_json(job.run_dir(tmp_path) / BENCH_EVAL)
    assert record["it"] == 4 and record["val_images"] == 4
    assert 0.0 <= record["all"]["mIoU"]["19"] <= 1.0
    assert set(record["rare_classes"]) <= set(CLASSES) and record["peak_mem_mb"] > 0
    metrics = runs.read_metrics(job.run_dir(tmp_path), "eval")
    assert record["all"]["mIoU"]["19"] == pytest.approx(metrics[-1]["mIoU"]["19"])
    mtime = (job.run_dir(tmp_path) / runs.MODEL).stat().st_mtime
    assert bench.run_jobs([job], tmp_path, workers=1, threads=1) == []  # finished: not retrained
    assert (job.run_dir(tmp_path) / runs.MODEL).stat().st_mtime == mtime
    md = write_reports("main", [job, _job("dida_s0", "dida")], tmp_path, tmp_path / "docs")
    text = md.read_text()
    assert "| source-only | 1 |" in text and "**Not finished (1):** dida_s0" in text
    rate, where = record["it_per_s"], trained_on(job.run_dir(tmp_path))
    assert where.endswith(" threads)")  # hardware_name's CPU form: the row counts its minutes
    row = (
        f"| source_only_s0 | {where} | {rate:.2f} | {2 * rate:.1f} | {record['peak_mem_mb']:.0f} |"
    )
    assert row in text
    assert (tmp_path / "docs" / "figures" / "bench_main.png").stat().st_size > 1000
    assert json.loads(md.with_suffix(".json").read_text())["source_only"]["seeds"] == 1
    (job.run_dir(tmp_path) / BENCH_EVAL).unlink()
    bench.score_finished([job, _job("dida_s0", "dida")], tmp_path, threads=1)  # --report
    assert runs.read_json(job.run_dir(tmp_path) / BENCH_EVAL)["all"] == record["all"]
    final = score_from_final_eval(job.run_dir(tmp_path))  # as for a GPU run's records alone
    assert final["all"]["mIoU"] == pytest.approx(record["all"]["mIoU"])
    assert final["all"]["IoU"].keys() == record["all"]["IoU"].keys()
    assert final["rare_classes"] == record["rare_classes"] and final["it"] == record["it"]
    assert final["overlap"] is None and final["scored_from"] == FINAL_EVAL_SOURCE
    text = write_reports("main", [job], tmp_path, tmp_path / "docs").read_text()
    assert (
        f"Scored from {FINAL_EVAL_SOURCE} — all-pixel and rare-class scores only: source_only_s0."
        in text
    )
    status = runs.read_status(job.run_dir(tmp_path))
    runs.write_status(job.run_dir(tmp_path), "running", it=status["it"])
    with pytest.raises(ValueError, match="not finished"):
        score_from_final_eval(job.run_dir(tmp_path))


def test_a_row_with_overlap_scores_for_some_seeds_says_how_many() -> None:
    scored, unscored = _record(0.40, 0.2, 0.1), {**_record(0.44, 0.2, 0.1), "overlap": None}
    cpu, gpu = {**scored, "trained_on_cpu": True}, {**unscored, "trained_on_cpu": False}
    found = [(_job("daformer_s0", "daformer"), cpu), (_job("daformer_s1", "daformer", 1), gpu)]
    table, rows = main_table(found)
    assert rows["daformer"]["overlap_mIoU"][2] == 1 and rows["daformer"]["mIoU"][2] == 2
    assert "| 20.0 (1 of 2 seeds) |" in table  # the car-only overlap subset of _record: 0.2
    assert rows["daformer"]["train_min"] == 10.0  # the CPU run's 600 s; the GPU run's left out
    table, rows = main_table([(_job("daformer_s1", "daformer", 1), gpu)])
    assert rows["daformer"]["train_min"] is None and table.rstrip().endswith("| - |")


def test_a_failing_run_is_reported_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    missing = ("data.source=gta5", "data.source_root=/no/such/folder", "data.target=cityscapes",
               "data.target_root=/no/such/folder")  # fmt: skip
    job = bench.Job(
        "main", "bad", "source_only", "tiny", 0, missing, {"row": "bad", "label": "bad"}
    )
    failures = bench.run_jobs([job], tmp_path, workers=1, threads=1)
    assert len(failures) == 1 and "bad" in failures[0] and "exit" in failures[0]


def test_a_target_tree_of_another_shift_fails_that_run_with_the_fix(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    settings = (f"data.source_root={synthcity_tiny}", f"data.target_root={synthcity_tiny}",
                "data.synthcity_shift=0.3")  # fmt: skip
    job = bench.Job("shift", "dida_shift0.3", "dida", "tiny", 0, settings)
    [failure] = bench.run_jobs([job], tmp_path, workers=1, threads=1)
    assert failure.startswith("dida_shift0.3: ") and "'shift': (1.0, 0.3)" in failure
    assert "delete" in failure and not job.run_dir(tmp_path).exists()


def test_ablation_and_shift_reports_write_tables_and_plots(tmp_path: Path) -> None:
    jobs = bench.ablation_jobs() + bench.shift_jobs()
    for i, job in enumerate(jobs):
        folder = job.run_dir(tmp_path)
        folder.mkdir(parents=True, exist_ok=True)  # shared quick runs
        runs.atomic_write_json(folder / BENCH_EVAL, _record(0.2 + 0.01 * i, 0.1, 0.05))
    md = write_reports("ablations", bench.ablation_jobs(), tmp_path, tmp_path / "docs")
    assert "| K | 150 |" in md.read_text() and "Not finished" not in md.read_text()
    md = write_reports("shift", bench.shift_jobs(), tmp_path, tmp_path / "docs")
    assert md.read_text().count("| dida |") == 1 and "shift 0.25" in md.read_text()
    for name in ("bench_ablations.png", "bench_shift.png"):
        assert (tmp_path / "docs" / "figures" / name).stat().st_size > 1000


def test_wall_cost_uses_the_segment_since_the_last_restart(tmp_path: Path) -> None:
    records = [(20, 0.0), (40, 10.0), (60, 20.0)]  # interrupted at 60 after 2 s / iteration
    records += [(20, 1000.0), (40, 1005.0), (60, 1010.0), (80, 1015.0), (100, 1020.0)]
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for it, t in records:
            f.write(json.dumps({"kind": "train", "it": it, "time": t, "peak_mem_mb": it}) + "\n")
    cost = wall_cost(tmp_path)
    assert cost["it_per_s"] == pytest.approx(4.0)  # 80 iterations in 20 s
    assert cost["train_s"] == pytest.approx(25.0) and cost["peak_mem_mb"] == 100
    assert [r["it"] for r in last_segment([{"it": 5}, {"it": 6}])] == [5, 6]


def test_proda_starts_from_the_source_only_run_of_its_suite(tmp_path: Path) -> None:
    for jobs in (bench.main_jobs(), bench.quick_jobs()):
        proda = next(j for j in jobs if j.tags["row"] == "proda")
        names = [j.name for j in jobs]
        assert proda.init_from == "source_only_s0" and names.index("source_only_s0") < names.index(
            proda.name
        )
        argv = proda.argv(tmp_path, 1)
        expected = f"model.init_weights={tmp_path / proda.suite / 'source_only_s0' / runs.MODEL}"
        assert expected in argv and "method.source_init_iters=50" in argv
        more = next(j for j in jobs if j.tags["row"] == "source_only_more")
        assert (more.method, more.init_from, more.settings) == ("source_only", "source_only_s0", ())


def test_wait_for_needs_a_finished_init_run(tmp_path: Path) -> None:
    import threading

    run_dir = tmp_path / "quick" / "source_only_s0"
    with pytest.raises(RuntimeError, match="proda_s0 starts from .*source_only_s0, which is not"):
        bench.wait_for(run_dir, "proda_s0", {})
    done = threading.Event()
    done.set()
    run_dir.mkdir(parents=True)
    runs.write_status(run_dir, "finished")
    bench.wait_for(run_dir, "proda_s0", {run_dir: done})  # returns: finished


def test_warm_rows_start_from_the_main_source_only_run(tmp_path: Path) -> None:
    jobs = bench.warm_jobs()
    shared = [j for j in jobs if j.suite == "main"]
    assert sorted(j.tags["row"] for j in shared) == sorted(bench.WARM_SHARED)
    warm = [j for j in jobs if j.suite == "warm"]
    assert [j.name for j in warm[:3]] == [
        "daformer_warm_s0",
        "dida_warm_s0",
        "dida_released_warm_s0",
    ]
    assert len(warm) == 7 and {j.preset for j in jobs} == {"default"}
    init = tmp_path / "main" / "source_only_s0"
    assert all(j.init_dir(tmp_path) == init for j in warm)
    assert f"model.init_weights={init / runs.MODEL}" in warm[4].argv(tmp_path, 1)
    proda = next(j for j in shared if j.tags["row"] == "proda")
    assert proda.init_dir(tmp_path) == init


def test_warm_report_compares_dida_daformer_and_the_control(tmp_path: Path) -> None:
    scores = {"source_only_more": 0.33, "daformer_warm": 0.35, "dida_warm": 0.32}
    for job in bench.warm_jobs():
        folder = job.run_dir(tmp_path)
        folder.mkdir(parents=True)
        config = {"data": {"batch_size": 2}, "method": {"name": job.method}}
        runs.atomic_write_json(folder / runs.CONFIG, config)
        miou = scores.get(job.tags["row"], 0.3) + 0.01 * job.seed
        runs.atomic_write_json(folder / BENCH_EVAL, _record(miou, 0.1, 0.05))
    text = write_reports("warm", bench.warm_jobs(), tmp_path, tmp_path / "docs").read_text()
    assert "| DAFormer-style, from source-only | 3 |" in text and "Not finished" not in text
    assert "mIoU: dida_warm − daformer_warm = -3.0 (larger than the seed spread" in text
    assert "mIoU: daformer_warm − source_only_more = +3.0 (larger than the seed spread, largest std " \
        "1.0; the other row has one seed)" in text  # fmt: skip
    assert (tmp_path / "docs" / "figures" / "bench_warm.png").stat().st_size > 1000


def test_shiftwarm_starts_each_shift_from_its_source_only_run(tmp_path: Path) -> None:
    jobs = bench.shift_warm_jobs()
    warm = [j for j in jobs if j.suite == "shiftwarm"]
    assert len(warm) == 3 * 5 - 1  # the default shift's control is the quick suite's
    control = next(j for j in jobs if j.tags == {"method": "source_only_more", "shift": 1.0})
    assert control.run_dir(tmp_path) == tmp_path / "quick" / "source_only_more_s0"
    dida = next(j for j in warm if j.name == "dida_warm_shift0.5")
    start = next(j for j in jobs if j.name == "source_only_shift0.5")
    assert dida.init_dir(tmp_path) == start.run_dir(tmp_path) == tmp_path / "shift" / start.name
    assert bench.data_config(dida, tmp_path) == bench.data_config(start, tmp_path)
    assert (
        next(j for j in warm if j.name == "daformer_warm_shift1").init_from
        == "quick/source_only_s0"
    )
    assert {j.tags["method"] for j in jobs} == {"source_only", "oracle", *bench.SHIFT_WARM_KEYS}


def test_shift_table_adds_difference_rows() -> None:
    def job(method: str, shift: float) -> bench.Job:
        return bench.Job(
            "shiftwarm", f"{method}{shift}", "x", "q", tags={"method": method, "shift": shift}
        )

    found = [(job("ctrl", 0.0), _record(0.30, 0, 0)), (job("da", 0.0), _record(0.325, 0, 0)),
             (job("da", 0.5), _record(0.2, 0, 0)), (job("ctrl", 1.0), _record(0.25, 0, 0))]  # fmt: skip
    table, data = shift_table(found, [("da", "ctrl")])
    assert data == {"ctrl": {0.0: 0.30, 1.0: 0.25}, "da": {0.0: 0.325, 0.5: 0.2}}
    assert "| da | 32.5 | 20.0 | - |" in table and "| da − ctrl | +2.5 | - | - |" in table
    assert shift_difference(data, "da", "ctrl") == pytest.approx({0.0: 0.025})


def test_a_run_started_from_another_queues_after_it(tmp_path: Path) -> None:
    jobs = bench.select(
        bench.shift_warm_jobs(), ["dida_warm_shift0.5", "oracle_shift0", "source_only_shift0.5"]
    )
    names = [j.name for j in bench.init_first(jobs, tmp_path)]
    assert names == ["source_only_shift0.5", "dida_warm_shift0.5", "oracle_shift0"]
    main = bench.main_jobs()
    assert bench.init_first(main, tmp_path) == main  # already in order: unchanged


def test_cpu_train_minutes_are_the_logged_cpu_time_else_the_wall_estimate() -> None:
    """The tables' "CPU train min": a run's logged CPU seconds (cumulative over resumes), the wall
    estimate only for a run that logged none; a run trained on a lent GPU is left out."""
    from dida.bench.report import _cpu_minutes

    records = [
        {"train_s": 600.0, "train_cpu_s": 120.0},
        {"train_s": 300.0, "train_cpu_s": None},
        {"train_s": 60.0, "train_cpu_s": 30.0, "trained_on_cpu": False},
    ]
    assert _cpu_minutes(records) == pytest.approx((2 + 5) / 2)
    assert _cpu_minutes(records[2:]) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers: must be a whole number of at least 1, not '0'"),
        (["--threads", "x"], "--threads: must be a whole number of at least 1, not 'x'"),
    ],
)
def test_the_bench_command_rejects_silly_counts_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--suite", "fidelity", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_list_honours_only_and_names_an_unknown_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--suite", "fidelity", "--runs", str(tmp_path), "--out", str(tmp_path), "--list"]
    assert bench.main([*common, "--only", "rel_quarter_s2", "dida_s0"]) == 0
    *listed, total = capsys.readouterr().out.splitlines()
    assert listed == ["fidelity rel_quarter_s2 not started", "fidelity dida_s0 not started"]
    assert total.startswith("≈ 0.0 CPU-h of training left for these runs") and "2 with no" in total
    with pytest.raises(SystemExit, match="unknown run 'nope'; the runs are"):
        bench.main([*common, "--only", "nope"])


def test_train_rejects_a_thread_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    from dida.train import main as train_main

    with pytest.raises(SystemExit):
        train_main(["--method", "source_only", "--threads", "0"])
    assert "--threads: must be a whole number of at least 1, not '0'" in capsys.readouterr().err
