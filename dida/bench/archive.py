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
    return entry


def _progress(entry: dict[str, Any]) -> tuple[bool, int]:
    return "score" in entry, int(entry.get("it") or 0)


def newer(folder: dict | None, kept: dict | None) -> dict | None:
    """The entry that has got further: scored before unscored, then the higher iteration; the
    folder wins ties (a rerun of a lost run reads from its folder once it has caught up)."""
    if folder is None or kept is None:
        return folder or kept
    return folder if _progress(folder) >= _progress(kept) else kept


def run_entries(jobs: Sequence[Job], runs_root: Path, path: Path) -> dict[str, dict]:
    """Every job's entry, from its folder or the record (whichever got further); the record is
    rewritten with them, so a run scored once stays in the reports after its folder is gone."""
    archive = read_archive(path)
    entries = {}
    for job in jobs:
        entry = newer(folder_entry(job.run_dir(runs_root)), archive["runs"].get(job.name))
        if entry is not None:
            entries[job.name] = entry
    archive["runs"].update(entries)
    if archive["runs"] or archive["rows"]:
        runs.atomic_write_json(path, archive)
    return entries


def carried_rows(path: Path, reported: set[str]) -> dict[str, dict]:
    """The record's carried row statistics of rows with no run in this report."""
    return {k: v for k, v in read_archive(path)["rows"].items() if k not in reported}
