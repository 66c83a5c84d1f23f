"""The committed run record behind the benchmark reports (``dida.bench.archive``): a report
survives the loss of its run folders, a rerun takes over once it has caught up, and rows kept as
statistics are marked and explained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dida import runs
from dida.bench.archive import archive_path, folder_entry, newer, read_archive, run_entries
from dida.bench.jobs import Job
from dida.bench.report import write_reports
from dida.bench.scores import BENCH_EVAL
from dida.data.classes import CLASSES

HARDWARE = "AMD EPYC (1 threads)"


def _job(name: str, row: str, seed: int = 0) -> Job:
    return Job("fidelity", name, row, "showcase", seed, (), {"row": row, "label": row.upper()})


def _fake_run(run_dir: Path, miou: float, it: int = 2000, scored: bool = True) -> None:
    """A run folder as training and scoring leave it: config, status, evaluations, score."""
    run_dir.mkdir(parents=True)
    config = {
        "data": {"batch_size": 2},
        "method": {"name": "daformer"},
        "environment": {"hardware": HARDWARE},
    }
    runs.atomic_write_json(run_dir / runs.CONFIG, config)
    runs.write_status(run_dir, "finished" if scored else "running", it=it)
    for at in (it // 2, it):
        record = {"mIoU": {"19": miou * at / it}, "IoU": {}, "train_cpu_s": 0.9 * at}
        runs.append_metrics(run_dir, {"kind": "eval", "it": at, **record})
    if scored:
        score = {
            "it": it,
            "all": {"mIoU": {"19": miou}, "IoU": dict.fromkeys(CLASSES, miou)},
            "overlap": None,
            "overlap_mIoU": miou / 2,
            "rare_mIoU": miou / 3,
            "train_s": 1200.0,
            "it_per_s": 2.0,
            "peak_mem_mb": 900.0,
        }
        runs.atomic_write_json(run_dir / BENCH_EVAL, score)


def test_a_report_survives_the_loss_of_its_run_folders(tmp_path: Path) -> None:
    jobs = [_job("daformer_s0", "daformer"), _job("daformer_s1", "daformer", 1)]
    for job, miou in zip(jobs, (0.40, 0.44), strict=True):
        _fake_run(job.run_dir(tmp_path / "runs"), miou)
    docs = tmp_path / "docs"
    before = write_reports("fidelity", jobs, tmp_path / "runs", docs).read_text()
    assert "**42.0 ± 2.8**" in before and f"| daformer_s0 | {HARDWARE} | 2.00 | 8.0 |" in before
    record = read_archive(archive_path(docs, "fidelity"))
    assert record["runs"]["daformer_s1"]["score"]["all"]["mIoU"]["19"] == 0.44
    assert [p["it"] for p in record["runs"]["daformer_s0"]["curve"]] == [1000, 2000]
    after = write_reports("fidelity", jobs, tmp_path / "no_runs_here", docs).read_text()
    assert after == before


def test_a_report_without_a_record_is_kept_when_its_run_folders_are_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A suite whose runs only its committed report holds (no record yet, folders lost) keeps
    that report: rewriting it would drop rows; the message says what to do."""
    jobs = [_job("daformer_s0", "daformer"), _job("daformer_s1", "daformer", 1)]
    for job, miou in zip(jobs, (0.40, 0.44), strict=True):
        _fake_run(job.run_dir(tmp_path / "runs"), miou)
    docs = tmp_path / "docs"
    md = write_reports("fidelity", jobs, tmp_path / "runs", docs)
    before, table = md.read_text(), md.with_suffix(".json").read_text()
    archive_path(docs, "fidelity").unlink()  # a report written before the record existed
    assert write_reports("fidelity", jobs, tmp_path / "no_runs_here", docs) == md
    assert md.read_text() == before and md.with_suffix(".json").read_text() == table
    err = capsys.readouterr().err
    assert "it reports 2 runs, only 0 are in the run folders" in err
    assert "scripts.recover_bench_records" in err
    _fake_run(tmp_path / "runs2" / "fidelity" / "daformer_s0", 0.5)
    write_reports("fidelity", jobs, tmp_path / "runs2", docs)  # 1 of 2: still kept
    assert md.read_text() == before
    more = [*jobs, _job("dida_s0", "dida")]
    _fake_run(tmp_path / "runs" / "fidelity" / "dida_s0", 0.38)
    assert "| DIDA_S0 |" not in before
    assert "| DIDA |" in write_reports("fidelity", more, tmp_path / "runs", docs).read_text()


def test_cpu_hours_left_from_the_own_curve_the_other_seeds_or_the_budget() -> None:
    """--list's estimate: a run's own learning-curve rate first, else the median of its row's
    finished seeds (or its method's), capped by a CPU budget; None with nothing to go on."""
    from dataclasses import replace

    from dida.bench.archive import cpu_h_left

    jobs = [_job(f"dida_s{s}", "dida", s) for s in range(3)] + [_job("mic_s0", "mic")]
    entries = {
        "dida_s0": {"state": "finished", "it": 2000, "train_cpu_s": 1800.0},
        "dida_s1": {"state": "finished", "score": {}, "train_cpu_s": 2400.0},  # it: the job's
        "dida_s2": {"state": "stopped", "it": 500, "curve": [{"it": 500, "cpu_h": 0.125}]},
    }
    assert cpu_h_left(jobs[2], jobs, entries, 2000, 500) == pytest.approx(1500 * 0.9 / 3600)
    del entries["dida_s2"]
    median = sorted([0.9, 1.2])[1]  # the upper middle of two rates (CPU-s per iteration)
    assert cpu_h_left(jobs[2], jobs, entries, 2000, 0) == pytest.approx(2000 * median / 3600)
    assert cpu_h_left(jobs[3], jobs, entries, 2000, 0) is None  # no MIC run recorded
    budgeted = replace(jobs[2], stop_cpu_h=0.3)  # 2000 its would take 0.67 CPU-h at 1.2 s/it
    assert cpu_h_left(budgeted, jobs, entries, 2000, 0) == 0.3
    assert cpu_h_left(budgeted, jobs, entries, 2000, 500) == pytest.approx(0.3 - 500 * 1.2 / 3600)


def test_a_running_run_is_estimated_at_the_rate_it_logged_up_to_its_checkpoint(
    tmp_path: Path,
) -> None:
    """A run with no evaluation yet (the showcase rows evaluate only when scored) is estimated
    from its own train records up to its checkpoint, not left without an estimate."""
    from dida.bench.archive import cpu_h_left

    run_dir = tmp_path / "mic_s0"
    run_dir.mkdir()
    runs.atomic_write_json(
        run_dir / runs.CONFIG, {"data": {"batch_size": 2}, "method": {"name": "mic"}}
    )
    runs.write_status(run_dir, "running", it=500)
    for it, cpu in ((250, 300.0), (450, 540.0), (550, 700.0)):  # 550: after the checkpoint
        runs.append_metrics(
            run_dir, {"kind": "train", "it": it, "train_cpu_s": cpu, "train_wall_s": cpu}
        )
    entry = folder_entry(run_dir)
    assert entry is not None and entry["train_cpu_s"] == 540.0 and entry["cpu_it"] == 450
    jobs = [_job("mic_s0", "mic")]
    assert cpu_h_left(jobs[0], jobs, {"mic_s0": entry}, 2000, 500) == pytest.approx(
        1500 * 1.2 / 3600
    )


def test_reported_runs_counts_each_report_shape() -> None:
    """One run per seed of a main-style row, per point of a sweep, per shift of a method: the
    committed reports' counts equal their finished runs (checked on all of them in session 16)."""
    from dida.bench.report import reported_runs

    rows = {"daformer": {"seeds": 3, "mIoU": [42.0, 1.0, 3]}, "dida": {"seeds": 1}}
    sweeps = {"tp": [[0.05, 0.3], [0.1, 0.31]], "default": [[0.1, 0.3]]}
    shifts = {"source_only": {"0.0": 0.38, "0.5": 0.35}, "dida": {"0.0": 0.36}}
    assert [reported_runs(d) for d in (rows, sweeps, shifts, {})] == [4, 3, 3, 0]


def test_a_recovered_report_of_the_old_cost_layout_keeps_its_costs() -> None:
    from scripts.recover_bench_records import cost_rows

    old = "| run | it/s | images/s | peak memory (MB) | train min |\n|---|---|---|---|---|\n"
    old += "| oracle_s0 | 2.14 | 4.3 | 1211 | 11.7 |\n"
    assert cost_rows(old) == {
        "oracle_s0": {"it_per_s": "2.14", "images_per_s": "4.3", "peak_mem_mb": "1211",
                      "wall_min": "11.7"}
    }  # fmt: skip


def test_a_rerun_takes_over_from_the_record_once_it_has_caught_up(tmp_path: Path) -> None:
    kept = {"state": "stopped", "it": 4000, "curve": []}
    assert newer(None, kept) is kept and newer(kept, None) is kept and newer(None, None) is None
    _fake_run(tmp_path / "behind", 0.3, it=1000, scored=False)
    behind = folder_entry(tmp_path / "behind")
    assert behind is not None and newer(behind, kept) is kept
    _fake_run(tmp_path / "level", 0.3, it=4000, scored=False)
    level = folder_entry(tmp_path / "level")
    assert newer(level, kept) is level  # ties go to the folder
    _fake_run(tmp_path / "scored", 0.3, it=10, scored=True)
    scored = folder_entry(tmp_path / "scored")
    assert newer(scored, kept) is scored  # a scored run beats an unscored record
    assert folder_entry(tmp_path / "empty") is None


def test_carried_rows_are_marked_explained_and_not_listed_as_unfinished(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    stats = {
        "seeds": 3,
        "iou": [[50.0, 1.0, 3]] * len(CLASSES),
        "mIoU": [42.3, 1.5, 3],
        "overlap_mIoU": [14.2, 0.0, 1],
        "rare_mIoU": [21.6, 1.6, 3],
        "train_min": 30.0,
    }
    note = "row statistics carried from an older report"
    path = archive_path(docs, "fidelity")
    path.parent.mkdir(parents=True)
    row = {"label": "DAFormer-style", "stats": stats, "note": note}
    path.write_text(json.dumps({"runs": {}, "rows": {"daformer": row}}))
    jobs = [_job(f"daformer_s{s}", "daformer", s) for s in range(3)] + [_job("dida_s0", "dida")]
    _fake_run(jobs[-1].run_dir(tmp_path / "runs"), 0.40)
    text = write_reports("fidelity", jobs, tmp_path / "runs", docs).read_text()
    assert "| DAFormer-style † | 3 |" in text and f"† {note}" in text
    assert "**42.3 ± 1.5** | 14.2 (1 of 3 seeds) | 21.6 ± 1.6 | 30 |" in text
    assert "Not finished" not in text
    assert text.index("DAFormer-style †") < text.index("| DIDA |")  # the suite's row order
    assert "mIoU: dida − daformer = -2.3" in text  # carried rows are compared like the others
    _fake_run(jobs[0].run_dir(tmp_path / "runs"), 0.41)  # one seed rerun: 3 seeds would become 1
    assert write_reports("fidelity", jobs, tmp_path / "runs", docs).read_text() == text
    for job, miou in zip(jobs[1:3], (0.43, 0.45), strict=True):
        _fake_run(job.run_dir(tmp_path / "runs"), miou)  # all three: the row is its runs again
    text = write_reports("fidelity", jobs, tmp_path / "runs", docs).read_text()
    assert "†" not in text and "Not finished" not in text and "**43.0 ± 2.0**" in text


def test_run_entries_keep_runs_no_longer_in_the_job_list(tmp_path: Path) -> None:
    path = archive_path(tmp_path / "docs", "fidelity")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"runs": {"old_s0": {"state": "finished", "it": 9}}, "rows": {}}))
    job = _job("new_s0", "new")
    _fake_run(job.run_dir(tmp_path / "runs"), 0.2)
    entries = run_entries([job], tmp_path / "runs", path)
    assert set(entries) == {"new_s0"}
    assert set(read_archive(path)["runs"]) == {"old_s0", "new_s0"}


def test_a_recovered_one_seed_row_reads_back_as_the_same_row() -> None:
    """``scripts.recover_bench_records``: a one-seed report row becomes its run's entry, and the
    report's statistics of that entry are the row again (cost columns parsed from the table)."""
    from dida.bench.report import load_scores, row_stats
    from scripts.recover_bench_records import cost_rows, run_entry, trend_lines

    table = (
        "| run | trained on | it/s | images/s | peak memory (MB) | wall min (est.) | CPU min |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| dida_s0 | {HARDWARE} | 0.48 | 1.9 | 1429 | 278.6 | 130.3 |\n"
        "- dida_s0: +1.0 mIoU per doubling (7 evaluations); reaches the target at ≈ 9 its\n"
    )
    [cost] = cost_rows(table).values()
    assert cost["trained_on"] == HARDWARE and cost["cpu_min"] == "130.3"
    assert trend_lines(table) == {"dida_s0": table.splitlines()[-1][len("- dida_s0: ") :]}
    iou = [[10.0 + i, 0.0, 1] for i in range(len(CLASSES) - 1)] + [[0.0, 0.0, 0]]
    stats = {"seeds": 1, "iou": iou, "mIoU": [47.0, 0.0, 1], "overlap_mIoU": [13.8, 0.0, 1]}
    stats |= {"rare_mIoU": [27.0, 0.0, 1], "train_min": 130.3}
    entry = run_entry(stats, cost, "recovered in a test")
    assert entry["images_per_it"] == 4 and entry["train_cpu_s"] == 60 * 130.3
    [(_, record)], _ = load_scores([_job("dida_s0", "dida")], {"dida_s0": entry})
    again = row_stats([record])
    for key in ("mIoU", "overlap_mIoU", "rare_mIoU"):
        assert again[key][0] == pytest.approx(stats[key][0]) and again[key][2] == 1
    assert [m for m, _, _ in again["iou"][:-1]] == pytest.approx([m for m, _, _ in iou[:-1]])
    assert again["iou"][-1][2] == 0 and again["train_min"] == 130.3


def test_the_driver_skips_runs_only_the_record_holds_unless_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dida.bench import suites

    out, runs_root = tmp_path / "docs", tmp_path / "runs"
    path = archive_path(out, "fidelity")
    path.parent.mkdir(parents=True)
    scored = {"state": "finished", "it": 2000, "score": {"all": {}}}
    row = {"label": "DAFormer-style", "stats": {}, "note": "carried"}
    path.write_text(json.dumps({"runs": {"rel_teacher_s0": scored}, "rows": {"daformer": row}}))
    kept = suites.recorded_only(runs_root, out)
    names = {d.name for d in kept if d.parent.name == "fidelity"}
    assert names == {"rel_teacher_s0", "daformer_s0", "daformer_s1", "daformer_s2"}
    args = ["--suite", "fidelity", "--runs", str(runs_root), "--out", str(out), "--list"]
    assert suites.main(args) == 0
    listed = dict(line.split(" ", 2)[1:] for line in capsys.readouterr().out.splitlines())
    assert listed["rel_teacher_s0"] == suites.RECORDED and listed["daformer_s2"] == suites.RECORDED
    assert listed["rel_online_s0"] == "not started"


def test_a_curve_recorded_at_its_budget_is_done_and_a_folder_behind_the_record_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An alternative recipe stops at its CPU budget (no score); once only the record holds it,
    it is done, not retrained from scratch. One recorded short of its budget is still to train."""
    from dida.bench import suites

    out, runs_root = tmp_path / "docs", tmp_path / "runs"
    path = archive_path(out, "curves")
    path.parent.mkdir(parents=True)
    at_budget = {"state": "stopped", "it": 2842, "curve": [{"it": 2842, "cpu_h": 0.5}]}
    short = {"state": "stopped", "it": 2000, "curve": [{"it": 2000, "cpu_h": 0.35}]}
    scored = {"state": "finished", "it": 27000, "score": {"all": {}}}
    kept = {"oracle_lr2x": at_budget, "oracle_wide": short, "source_only_d32": scored}
    path.write_text(json.dumps({"runs": kept, "rows": {}}))
    behind = runs_root / "curves" / "source_only_d32"
    behind.mkdir(parents=True)
    runs.write_status(behind, "stopped", it=8365, max_iters=27000)
    names = {d.name for d in suites.recorded_only(runs_root, out) if d.parent.name == "curves"}
    assert names == {"oracle_lr2x", "source_only_d32"}
    args = ["--suite", "curves", "--runs", str(runs_root), "--out", str(out), "--list"]
    assert suites.main(args) == 0
    listed = dict(line.split(" ", 2)[1:] for line in capsys.readouterr().out.splitlines())
    assert listed["oracle_lr2x"] == suites.RECORDED
    # its recorded curve gives the rate; it trains again from 0 up to its 0.5 CPU-h budget
    assert listed["oracle_wide"] == "not started (≈ 0.50 CPU-h of training left)"
    assert listed["source_only_d32"].endswith("the run folder here: stopped at 8365/27000)")


def test_a_showcase_row_can_start_from_a_shipped_checkpoint(tmp_path: Path) -> None:
    """The rows trained after the run folders were lost start from the shipped float16
    source-only weights; a missing shipped file is an error naming it, not a wait."""
    from dataclasses import replace

    from dida.bench.jobs import ASSETS
    from dida.bench.showcase import showcase_jobs
    from dida.bench.suites import wait_for_start

    mic = next(j for j in showcase_jobs() if j.name == "mic_s0")
    start = ASSETS / "source_only" / runs.MODEL
    assert mic.starts_shipped and mic.init_file(tmp_path) == start and start.exists()
    assert f"model.init_weights={start}" in mic.train_args(tmp_path, 1)
    assert wait_for_start(mic, tmp_path, {}) is None
    daformer = next(j for j in showcase_jobs() if j.name == "daformer_s0")
    assert not daformer.starts_shipped  # trained before the loss: from the fp32 run
    gone = replace(mic, init_from="shipped:no_such_model")
    with pytest.raises(RuntimeError, match="no_such_model.*missing"):
        wait_for_start(gone, tmp_path, {})
