"""The committed record of every benchmark run the reports read (``docs/bench/records/<suite>.json``).

Run folders live on one machine and go with it: session 15 started on a new machine without
``runs/``, and every report would have lost the runs behind it. So each report keeps, per run, what
it reads of the run folder — the score record (``bench_eval.json``), the hardware it trained on, its
training CPU time, images per iteration, its state and its evaluations (the learning curve) — and
reads a run from this record when the folder is gone or behind it. Rows whose runs were lost
before this record existed are kept as the committed report's row statistics (``rows``), marked as
carried."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dida import runs
from dida.bench.curves import run_curve
from dida.bench.jobs import Job
from dida.bench.scores import BENCH_EVAL, recorded_cost
from dida.methods.registry import trained_domains

RECORDS = "records"


def archive_path(out: Path, suite: str) -> Path:
    """``<out>/bench/records/<suite>.json`` (``out`` is the reports' folder, ``docs``)."""
    return Path(out) / "bench" / RECORDS / f"{suite}.json"


def read_archive(path: Path) -> dict[str, Any]:
    """``{"runs": {name: entry}, "rows": {row: stats}}``; empty when there is no record yet."""
    if not Path(path).exists():
        return {"runs": {}, "rows": {}}
    data = runs.read_json(path)
    return {"runs": data.get("runs", {}), "rows": data.get("rows", {})}


def trained_on(run_dir: Path) -> str:
    """The hardware the run's config records (``environment.hardware``), or "-"."""
    if not (run_dir / runs.CONFIG).exists():
        return "-"
    config = runs.read_json(run_dir / runs.CONFIG)
    return config.get("environment", {}).get("hardware", "-")


def images_per_iteration(run_dir: Path) -> int | None:
    """Training crops one iteration reads: the batch of each domain the method trains on (None
    without a config)."""
    if not (run_dir / runs.CONFIG).exists():
        return None
    config = runs.read_json(run_dir / runs.CONFIG)
    return config["data"]["batch_size"] * len(trained_domains(config["method"]["name"]))


def folder_entry(run_dir: Path) -> dict[str, Any] | None:
    """What the reports read of ``run_dir``; None when it holds no run (no config, no score)."""
    if not (run_dir / runs.CONFIG).exists() and not (run_dir / BENCH_EVAL).exists():
        return None
    status = runs.read_status(run_dir)
    entry = {
        "state": status.get("state", "unknown"),
        "it": status.get("it", 0),
        "curve": [vars(p) for p in run_curve(run_dir)],
        "trained_on": trained_on(run_dir),
        "images_per_it": images_per_iteration(run_dir),
    }
    if (run_dir / BENCH_EVAL).exists():
        entry["score"] = runs.read_json(run_dir / BENCH_EVAL)
        entry["train_cpu_s"] = (recorded_cost(run_dir) or {}).get("train_cpu_s")
    else:
        entry.update(_cost_at_checkpoint(run_dir, entry["it"]))
    return entry


def _cost_at_checkpoint(run_dir: Path, it: int) -> dict[str, float]:
    """An unfinished run's ``train_cpu_s`` at its last train record up to its checkpoint ``it``,
    and that record's iteration (``cpu_it``); empty without one."""
    costs = [r for r in runs.read_metrics(run_dir, "train") if "train_cpu_s" in r and r["it"] <= it]
    return {"train_cpu_s": costs[-1]["train_cpu_s"], "cpu_it": costs[-1]["it"]} if costs else {}


def _progress(entry: dict[str, Any]) -> tuple[bool, int]:
    return "score" in entry, int(entry.get("it") or 0)


def newer(folder: dict | None, kept: dict | None) -> dict | None:
    """The entry that has got further: scored before unscored, then the higher iteration; the
    folder wins ties (a rerun of a lost run reads from its folder once it has caught up)."""
    if folder is None or kept is None:
        return folder or kept
    return folder if _progress(folder) >= _progress(kept) else kept


def read_entries(jobs: Sequence[Job], runs_root: Path, kept: dict[str, dict]) -> dict[str, dict]:
    """Every job's entry, from its folder or the record's ``kept`` runs (whichever got further);
    writes nothing."""
    entries = {}
    for job in jobs:
        entry = newer(folder_entry(job.run_dir(runs_root)), kept.get(job.name))
        if entry is not None:
            entries[job.name] = entry
    return entries


def run_entries(jobs: Sequence[Job], runs_root: Path, path: Path) -> dict[str, dict]:
    """``read_entries``, and the record rewritten with them, so a run scored once stays in the
    reports after its folder is gone."""
    archive = read_archive(path)
    entries = read_entries(jobs, runs_root, archive["runs"])
    archive["runs"].update(entries)
    if archive["runs"] or archive["rows"]:
        runs.atomic_write_json(path, archive)
    return entries


def carried_rows(path: Path, reported: set[str]) -> dict[str, dict]:
    """The record's carried row statistics of rows with no run in this report."""
    return {k: v for k, v in read_archive(path)["rows"].items() if k not in reported}


def cpu_h_left(
    job: Job, jobs: Sequence[Job], entries: dict[str, dict], iters: int, done: int
) -> float | None:
    """Training CPU-hours ``job`` needs from iteration ``done`` (its folder's) to ``iters``: at its
    own recorded rate (CPU time per iteration it logged up to its checkpoint, else of its learning
    curve), else at the median rate of
    the finished runs of its row (its other seeds), else of its method in the suite (a run that
    recorded no iteration count is taken to have trained ``iters``, as the suite's rows do); None
    when nothing comparable is recorded. A job with a CPU budget stops there."""
    own = entries.get(job.name, {})
    rate = _logged_rate(own) or _curve_rate(own) or _peer_rate(job, jobs, entries, iters)
    if rate is None:
        return None
    left = rate * max(iters - done, 0) / 3600
    budget = None if job.stop_cpu_h is None else max(job.stop_cpu_h - rate * done / 3600, 0.0)
    return left if budget is None else min(left, budget)


def _logged_rate(entry: dict) -> float | None:
    """CPU seconds per iteration an unfinished run logged up to its checkpoint (None without)."""
    cpu, its = entry.get("train_cpu_s"), entry.get("cpu_it")
    return cpu / its if cpu and its else None


def _curve_rate(entry: dict) -> float | None:
    """CPU seconds per iteration at a run's last evaluation (None without one)."""
    last = (entry.get("curve") or [{}])[-1]
    return 3600 * last["cpu_h"] / last["it"] if last.get("cpu_h") and last.get("it") else None


def _peer_rate(job: Job, jobs: Sequence[Job], entries: dict[str, dict], iters: int) -> float | None:
    rows = [j for j in jobs if j.name != job.name and j.tags.get("row") == job.tags.get("row")]
    same = rows or [j for j in jobs if j.name != job.name and j.method == job.method]
    rates = [_finished_rate(entries.get(j.name, {}), iters) for j in same]
    rates = sorted(r for r in rates if r is not None)
    return rates[len(rates) // 2] if rates else None


def _finished_rate(entry: dict, iters: int) -> float | None:
    """CPU seconds per iteration of a finished run that logged its CPU time."""
    its = entry.get("it") or (entry.get("score") or {}).get("it") or iters
    cpu = entry.get("train_cpu_s")
    return cpu / its if entry.get("state") == "finished" and cpu else None
