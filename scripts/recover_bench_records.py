"""Seed ``docs/bench/records/<suite>.json`` from the committed reports of runs whose folders were
lost (session 15 started on a new machine without ``runs/``; :mod:`dida.bench.archive`).

A one-seed row of a committed main-style report is exactly its run's scores, so it becomes that
run's entry (per-class IoU, mIoU, overlap and rare mIoU, the cost table's hardware, rate, memory and
times); a row of several seeds cannot be split into runs and is kept as row statistics (marked † in
the reports); the curves report's evaluations become its runs' curves. Entries already in a record
are kept. ``--extra`` adds a run known only from a note (its scores given on the command line)::

    python -m scripts.recover_bench_records --commit 22f71b1
    python -m scripts.recover_bench_records --commit 67353cd --suites main warm quick   # session 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from dida import runs
from dida.bench.archive import archive_path, read_archive
from dida.bench.jobs import Job
from dida.bench.suites import suite_jobs
from dida.data.classes import CLASSES

RECOVERABLE = ("showcase", "fidelity", "curves", "main", "warm", "quick")
"""The suites with a committed run record: the main-style reports and the learning curves (the
sweep and shift reports keep their committed files: ``dida.bench.report.report_loses_runs``)."""
COST_COLUMNS = ("trained_on", "it_per_s", "images_per_s", "peak_mem_mb", "wall_min", "cpu_min")


def committed(commit: str, path: str) -> str:
    """The text of ``path`` at ``commit``."""
    return subprocess.run(
        ["git", "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


OLD_COST_COLUMNS = ("it_per_s", "images_per_s", "peak_mem_mb", "wall_min")
"""The cost table before session 14 (main, warm, quick): no hardware, wall train minutes only."""


def cost_rows(markdown: str) -> dict[str, dict]:
    """The cost table of a committed report (either layout): run name -> its columns."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        columns = {7: COST_COLUMNS, 5: OLD_COST_COLUMNS}.get(len(cells))
        if columns and cells[0] != "run" and not cells[0].startswith("---"):
            rows[cells[0]] = dict(zip(columns, cells[1:], strict=True))
    return rows


def _number(cell: str) -> float | None:
    return None if cell in ("-", "") else float(cell)


def run_entry(stats: dict, cost: dict, note: str) -> dict:
    """A one-seed row's statistics (percent) and cost columns as a run entry (fractions)."""
    iou = {c: (m / 100 if n else None) for c, (m, _, n) in zip(CLASSES, stats["iou"], strict=True)}
    overlap, rare = stats["overlap_mIoU"], stats["rare_mIoU"]
    rate = _number(cost.get("it_per_s", "-"))
    images = _number(cost.get("images_per_s", "-"))
    wall = _number(cost.get("wall_min", "-"))
    score = {
        "all": {"IoU": iou, "mIoU": {"19": stats["mIoU"][0] / 100}},
        "overlap": None,
        "overlap_mIoU": overlap[0] / 100 if overlap[2] else None,
        "rare_mIoU": rare[0] / 100 if rare[2] else None,
        "it_per_s": rate,
        "peak_mem_mb": _number(cost.get("peak_mem_mb", "-")),
        "train_s": None if wall is None else 60 * wall,
        "recovered": note,
    }
    cpu_min = _number(cost.get("cpu_min", "-"))
    return {
        "state": "finished",
        "score": score,
        "curve": [],
        "trained_on": cost.get("trained_on", "-"),
        "train_cpu_s": None if cpu_min is None else 60 * cpu_min,
        "images_per_it": None if not (rate and images) else round(images / rate),
    }


def trend_lines(markdown: str) -> dict[str, str]:
    """The gap-trend lines of a committed showcase report: run name -> its text."""
    lines = [line[2:] for line in markdown.splitlines() if line.startswith("- ") and ": " in line]
    return dict(line.split(": ", 1) for line in lines)


def recover_main(suite: str, commit: str, jobs: list[Job]) -> tuple[dict, dict]:
    """(run entries, carried rows) of a committed main-style report."""
    data = json.loads(committed(commit, f"docs/bench/{suite}.json"))
    markdown = committed(commit, f"docs/bench/{suite}.md")
    costs, trends = cost_rows(markdown), trend_lines(markdown)
    note = f"recovered from docs/bench/{suite}.json at {commit} (run folder lost, session 15)"
    labels = {j.tags["row"]: j.tags["label"] for j in jobs}
    entries, rows = {}, {}
    for key, stats in data.items():
        if stats["seeds"] == 1:
            [job] = [j for j in jobs if j.tags["row"] == key and j.seed == 0]
            entries[job.name] = run_entry(stats, costs.get(job.name, {}), note)
            if job.name in trends:
                entries[job.name]["trend"] = trends[job.name]
        else:
            rows[key] = {"label": labels[key], "stats": stats, "note": _carried(suite, commit)}
    return entries, rows


def _carried(suite: str, commit: str) -> str:
    return (
        f"row statistics carried from docs/bench/{suite}.json at {commit}: its runs' folders were "
        "lost with the machine (session 15), so the row cannot gain or lose a seed here; their "
        f"per-run costs are in docs/bench/{suite}.md at {commit}."
    )


def recover_curves(commit: str) -> dict:
    """The committed curves report's evaluations as run entries (state as of that report)."""
    data = json.loads(committed(commit, "docs/bench/curves.json"))
    return {
        name: {"state": "stopped", "it": points[-1]["it"], "curve": points}
        for name, points in data.items()
    }


def extra_entry(spec: str, commit: str) -> tuple[str, dict]:
    """``NAME:MIOU:OVERLAP:RARE`` (percent) of a run known only from a session note."""
    name, *values = spec.split(":")
    miou, overlap, rare = (float(v) for v in values)
    stats = {
        "iou": [(0.0, 0.0, 0)] * len(CLASSES),
        "mIoU": (miou, 0.0, 1),
        "overlap_mIoU": (overlap, 0.0, 1),
        "rare_mIoU": (rare, 0.0, 1),
    }
    note = f"recovered from the session-14 closing note (per-class IoU not kept; {commit})"
    return name, run_entry(stats, {}, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", required=True, help="the commit of the committed reports")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--extra", nargs="*", default=[], help="SUITE/NAME:MIOU:OVERLAP:RARE")
    parser.add_argument(
        "--suites", nargs="+", default=["showcase", "fidelity", "curves"], choices=RECOVERABLE,
        help="the suites whose committed reports seed their records",
    )  # fmt: skip
    args = parser.parse_args()
    found: dict[str, tuple[dict, dict]] = {
        s: recover_main(s, args.commit, suite_jobs(s, None)) for s in args.suites if s != "curves"
    }
    if "curves" in args.suites:
        found["curves"] = (recover_curves(args.commit), {})
    for spec in args.extra:
        suite, _, rest = spec.partition("/")
        name, entry = extra_entry(rest, args.commit)
        found[suite][0][name] = entry
    for suite, (entries, rows) in found.items():
        path = archive_path(args.out, suite)
        archive = read_archive(path)
        archive["runs"] = {**entries, **archive["runs"]}
        archive["rows"] = {**rows, **archive["rows"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_json(path, archive)
        print(f"{path}: {len(archive['runs'])} runs, {len(archive['rows'])} carried rows")


if __name__ == "__main__":
    main()
