"""Tables (markdown + JSON) and plots (PNG) of the benchmark suites from the runs' ``bench_eval.json``.

Runs that are not finished are listed as missing, never silently left out."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dida import runs
from dida.bench.archive import archive_path, carried_rows, run_entries
from dida.bench.compare import METRICS, PerSeed, compare, differences
from dida.bench.curves import MAX_EXTRAPOLATION, CurvePoint, Trend, curves_section, log_trend
from dida.bench.jobs import Job
from dida.bench.plots import (
    plot_differences,
    plot_gap_trends,
    plot_main,
    plot_shift,
    plot_sweeps,
)
from dida.bench.scores import FINAL_EVAL_SOURCE, overlap_score
from dida.data.classes import CLASSES

SHORT = [c.replace("traffic ", "t.")[:6] for c in CLASSES]


def load_scores(
    jobs: Sequence[Job], entries: dict[str, dict]
) -> tuple[list[tuple[Job, dict]], list[str]]:
    """(job, score record) of every scored run (:func:`dida.bench.archive.run_entries`), and the
    names of the runs without one."""
    found, missing = [], []
    for job in jobs:
        entry = entries.get(job.name, {})
        if "score" not in entry:
            missing.append(job.name)
            continue
        where = entry.get("trained_on", "-")
        record = {
            **entry["score"],
            "trained_on": where,
            "trained_on_cpu": where == "-"
            or where.endswith(" threads)"),  # hardware_name's CPU form
            "train_cpu_s": entry.get("train_cpu_s"),
            "images_per_it": entry.get("images_per_it"),
        }
        found.append((job, record))
    return found, missing


def stat(values: Sequence[float | None]) -> tuple[float, float, int]:
    """(mean, std, n) in percent over the defined values (NaN mean when none is)."""
    v = np.array([x for x in values if x is not None], dtype=np.float64) * 100
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def fmt(s: tuple[float, float, int]) -> str:
    mean, std, n = s
    if n == 0:
        return "-"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def metric_values(record: dict) -> dict[str, float | None]:
    """A score record's mIoU, overlap mIoU and rare-class mIoU (fractions; None where not scored)."""
    return {
        "mIoU": record["all"]["mIoU"]["19"],
        "overlap_mIoU": overlap_score(record),
        "rare_mIoU": record["rare_mIoU"],
    }


def row_stats(records: list[dict]) -> dict[str, Any]:
    """Per-class IoU, mIoU, overlap mIoU and rare-class mIoU statistics over seeds."""
    values = [metric_values(r) for r in records]
    return {
        "seeds": len(records),
        "iou": [stat([r["all"]["IoU"][c] for r in records]) for c in CLASSES],
        **{metric: stat([v[metric] for v in values]) for metric in METRICS},
        "train_min": _cpu_minutes(records),
    }


def per_seed_values(found: list[tuple[Job, dict]]) -> PerSeed:
    """Row → seed → metric → value in points of every scored run (the paired comparisons)."""
    out: PerSeed = defaultdict(dict)
    for job, record in found:
        values = metric_values(record).items()
        out[job.tags["row"]][job.seed] = {k: None if v is None else v * 100 for k, v in values}
    return dict(out)


def _cpu_minutes(records: list[dict]) -> float | None:
    """Mean training CPU minutes of the row's CPU-trained runs (a lent GPU's minutes are not
    comparable; the cost table lists each run): the process CPU time the run logged, cumulative
    over resumes, else (runs from before it was logged) the wall-time estimate; None when no run
    was trained on the CPU or none recorded a time (a run recovered from a note)."""
    minutes = [_minutes(r) for r in records if r.get("trained_on_cpu", True)]
    minutes = [m for m in minutes if m is not None]
    return float(np.mean(minutes)) if minutes else None


def _minutes(record: dict) -> float | None:
    cpu = _cpu_or_none(record)
    return cpu if cpu is not None else _wall_minutes(record)


def group(found: list[tuple[Job, dict]], key: str) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = defaultdict(list)
    for job, record in found:
        out[job.tags[key]].append(record)
    return out


CARRIED_MARK = " †"


def main_table(
    found: list[tuple[Job, dict]], carried: dict[str, dict] | None = None, order: Sequence[str] = ()
) -> tuple[str, dict]:
    """The paper-style table: one row per method, per-class IoU and mIoU (mean ± std over seeds).
    ``carried``: rows kept as statistics only (:func:`dida.bench.archive.carried_rows`), marked
    †; rows in ``order`` (row keys) where given."""
    labels = {job.tags["row"]: job.tags["label"] for job, _ in found}
    rows = {key: row_stats(recs) for key, recs in group(found, "row").items()}
    for key, row in (carried or {}).items():
        labels[key], rows[key] = row["label"] + CARRIED_MARK, row["stats"]
    rank = {key: i for i, key in enumerate(order)}
    rows = dict(sorted(rows.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    head = (
        "| method | seeds | "
        + " | ".join(SHORT)
        + " | mIoU | overlap mIoU | rare mIoU | CPU train min |"
    )
    lines = [head, "|---|---|" + "---|" * (len(SHORT) + 4)]
    for key, r in rows.items():
        cells = " | ".join(f"{m:.1f}" if n else "-" for m, _, n in r["iou"])
        lines.append(
            f"| {labels[key]} | {r['seeds']} | {cells} | **{fmt(r['mIoU'])}** | "
            f"{_seeds_fmt(r['overlap_mIoU'], r['seeds'])} | {fmt(r['rare_mIoU'])} | "
            f"{_num(r['train_min'], 0)} |"
        )
    return "\n".join(lines), rows


def carried_note(carried: dict[str, dict]) -> list[str]:
    """The footnote of the † rows: where their statistics come from."""
    if not carried:
        return []
    notes = sorted({row["note"] for row in carried.values()})
    return [f"† {note}" for note in notes] + [""]


def _seeds_fmt(s: tuple[float, float, int], seeds: int) -> str:
    """``fmt`` plus "(n of N seeds)" when only some of the row's runs have this score."""
    return fmt(s) if s[2] in (0, seeds) else f"{fmt(s)} ({s[2]} of {seeds} seeds)"


def final_eval_note(found: list[tuple[Job, dict]]) -> list[str]:
    """A paragraph naming the runs scored from their final training evaluation, if any."""
    names = [job.name for job, r in found if r.get("scored_from")]
    if not names:
        return []
    return [
        f"Scored from {FINAL_EVAL_SOURCE} — all-pixel and rare-class scores only: "
        f"{', '.join(names)}.",
        "",
    ]


def cost_table(found: list[tuple[Job, dict]]) -> str:
    """Throughput and peak memory of every run, as trained by the benchmark (its workers and threads)."""
    lines = [
        "| run | trained on | it/s | images/s | peak memory (MB) | wall min (est.) | CPU min |",
        "|---|---|---|---|---|---|---|",
    ]
    for job, r in found:
        rate, per_it = r.get("it_per_s"), r.get("images_per_it")
        images = None if rate is None or per_it is None else rate * per_it
        lines.append(
            f"| {job.name} | {r['trained_on']} | {_num(rate, 2)} | "
            f"{_num(images, 1)} | {_num(r.get('peak_mem_mb'), 0)} | "
            f"{_num(_wall_minutes(r), 1)} | {_num(_cpu_or_none(r), 1)} |"
        )
    return "\n".join(lines)


def _wall_minutes(record: dict) -> float | None:
    """The wall estimate in minutes; None for a recovered run that kept none."""
    if record.get("train_s") is None and "recovered" in record:
        return None
    return (record.get("train_s") or 0) / 60


def _cpu_or_none(record: dict) -> float | None:
    return None if record.get("train_cpu_s") is None else record["train_cpu_s"] / 60


def sweep_table(found: list[tuple[Job, dict]]) -> tuple[str, dict]:
    """Ablations: one row per (sweep, value) with mIoU, overlap, rare mIoU, speed and memory."""
    lines = [
        "| sweep | value | mIoU | overlap mIoU | rare mIoU | it/s | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    data: dict[str, list] = defaultdict(list)
    for job, r in sorted(found, key=lambda jr: (jr[0].tags["sweep"], jr[0].tags["value"] or 0)):
        sweep, value = job.tags["sweep"], job.tags["value"]
        point = (value, r["all"]["mIoU"]["19"], overlap_score(r), r["rare_mIoU"])
        data[sweep].append((*point, r.get("it_per_s"), r.get("peak_mem_mb")))
        lines.append(
            f"| {sweep} | {'-' if value is None else value} | {100 * point[1]:.1f} | "
            f"{_pct(point[2])} | {_pct(point[3])} | {_num(r.get('it_per_s'), 2)} | "
            f"{_num(r.get('peak_mem_mb'), 0)} |"
        )
    return "\n".join(lines), dict(data)


SHIFT_DIFFERENCES = {
    "shiftwarm": (("daformer_warm", "source_only_more"), ("dida_warm", "source_only_more"),
                  ("dida_warm", "daformer_warm")),
}  # fmt: skip
"""Rows ``a − b`` (mIoU points) under a shift table, per suite."""


def shift_table(
    found: list[tuple[Job, dict]], differences: Sequence[tuple[str, str]] = ()
) -> tuple[str, dict]:
    """Shift sweep: one row per method, one column per shift (mIoU), then the ``a − b`` rows
    (points; at the shifts where both ran)."""
    data: dict[str, dict[float, float]] = defaultdict(dict)
    for job, r in found:
        data[job.tags["method"]][job.tags["shift"]] = r["all"]["mIoU"]["19"]
    data = {m: dict(sorted(d.items())) for m, d in data.items()}
    shifts = sorted({s for d in data.values() for s in d})
    lines = ["| method | " + " | ".join(f"shift {s:g}" for s in shifts) + " |"]
    lines.append("|---|" + "---|" * len(shifts))
    lines += [_shift_row(method, by_shift, shifts, _pct) for method, by_shift in data.items()]
    lines += [
        _shift_row(f"{a} − {b}", shift_difference(data, a, b), shifts, _signed)
        for a, b in differences
    ]
    return "\n".join(lines), data


def _shift_row(name: str, by_shift: dict[float, float], shifts: list[float], cell) -> str:
    return f"| {name} | " + " | ".join(cell(by_shift.get(s)) for s in shifts) + " |"


def shift_difference(data: dict[str, dict[float, float]], a: str, b: str) -> dict[float, float]:
    """``a − b`` at every shift where both have a score (fractions, like the scores)."""
    both = data.get(a, {}).keys() & data.get(b, {}).keys()
    return {s: data[a][s] - data[b][s] for s in sorted(both)}


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# -------------------------------------------------------------------------------------------------
# Writing


def _header(suite: str, jobs: Sequence[Job], missing: list[str]) -> list[str]:
    presets = sorted({j.preset for j in jobs})
    lines = [
        f"# Benchmark suite `{suite}`",
        "",
        f"Written by `python -m dida.bench --suite {suite}`",
    ]
    lines += [f"(presets {', '.join(presets)}; IoU in % on the whole target val split).", ""]
    if missing:
        lines += [f"**Not finished ({len(missing)}):** {', '.join(missing)}.", ""]
    return lines


MAIN_TITLES = {
    "main": "SynthCity, default preset",
    "quick": "SynthCity, quick preset",
    "warm": "SynthCity, default preset, adaptation from the source-only run",
    "showcase": "SynthCity, showcase preset, adaptation from the source-only run",
    "fidelity": "SynthCity, 2,000 iterations from the showcase source-only model at 8,000",
}
WARM_PAIRS = (
    ("daformer_warm", "dida_warm"),
    ("source_only_more", "daformer_warm"),
    ("source_only_more", "dida_warm"),
)
"""The warm table's comparisons: DIDA against DAFormer-style, each against the control row."""
SHOWCASE_PAIRS = (
    ("daformer", "dida"),
    ("daformer", "dida_released"),
    ("daformer", "mic"),
    ("mic", "dida_mic"),
    ("mic", "mic_long"),
    ("daformer", "dida_weighted"),
    ("dida", "dida_weighted"),
    ("source_only_more", "daformer"),
    ("source_only_more", "dida"),
)
FIDELITY_PAIRS = (
    ("daformer", "dida"),
    ("daformer", "dida_released"),
    ("daformer", "mic"),
    ("mic", "dida_mic"),
    ("source_only_more", "daformer"),
    ("dida_released", "rel_teacher"),
    *(("rel_teacher", key) for key in ("rel_online", "rel_cosine", "rel_weighted")),
    *(("rel_teacher", key) for key in ("rel_scatter", "rel_quarter")),
    ("dida", "paper_weighted"),
    ("daformer", "paper_weighted"),
    ("dida", "paper_centred"),
    ("dida", "paper_combo"),
    ("daformer", "paper_combo"),
)
"""The fidelity table's comparisons: the deciding pairs, then each switch against its mode."""
GAP_ROWS = (
    "source_only_more", "proda", "daformer", "dida", "dida_released", "mic", "dida_mic",
    "dida_weighted", "mic_long",
)  # fmt: skip


def suite_pairs(suite: str) -> tuple[tuple[str, str], ...]:
    """The (a, b) row pairs a suite's report compares (b − a)."""
    pairs = {"warm": WARM_PAIRS, "showcase": SHOWCASE_PAIRS, "fidelity": FIDELITY_PAIRS}
    return pairs.get(suite, (("daformer", "dida"),))


def comparisons(suite: str, rows: dict, per_seed: PerSeed | None = None) -> list[str]:
    """The comparison sentences under a main-style table, one paragraph each (``per_seed``: the
    runs' values for the paired differences)."""
    pairs = suite_pairs(suite)
    ready = [(a, b) for a, b in pairs if a in rows and b in rows]
    lines = [line for a, b in ready for line in (compare(rows, a, b, per_seed), "")]
    waiting = [f"{b} − {a}" for a, b in pairs if (a, b) not in ready]
    if waiting:
        lines += [f"Not compared yet (a row not finished): {', '.join(waiting)}.", ""]
    return lines + ([gap_closed(rows), ""] if suite == "showcase" else [])


def gap_closed(rows: dict) -> str:
    """The share of the source-only → oracle mIoU gap each adaptation row closes."""
    if "source_only" not in rows or "oracle" not in rows:
        return "(source-only or oracle not finished: no gap)"
    low, high = rows["source_only"]["mIoU"][0], rows["oracle"]["mIoU"][0]
    parts = [
        f"{key} {100 * (rows[key]['mIoU'][0] - low) / (high - low):.0f} %"
        for key in GAP_ROWS
        if key in rows
    ]
    return f"Gap closed (source-only {low:.1f} → oracle {high:.1f} mIoU): " + ", ".join(parts)


GAP_TARGET = 0.40
"""Share of the source-only → oracle gap the best adaptation row should close (issue 13 §5)."""


def gap_levels(rows: dict) -> tuple[float, float, float] | None:
    """Source-only, oracle and target mIoU (%) of the gap (None: a row not finished)."""
    if "source_only" not in rows or "oracle" not in rows:
        return None
    low, high = rows["source_only"]["mIoU"][0], rows["oracle"]["mIoU"][0]
    return low, high, low + GAP_TARGET * (high - low)


def _gap_jobs(jobs: Sequence[Job], entries: dict[str, dict]) -> list[Job]:
    """The finished adaptation rows' jobs (those the gap target is about)."""
    return [
        job
        for job in jobs
        if job.tags["row"] in GAP_ROWS and entries.get(job.name, {}).get("state") == "finished"
    ]


def gap_trends(jobs: Sequence[Job], entries: dict[str, dict], rows: dict) -> list[str]:
    """What the gap target asks of each adaptation row's schedule: its mIoU per doubling of the
    iterations and where that line crosses ``GAP_TARGET`` of the gap (an extrapolation)."""
    if (levels := gap_levels(rows)) is None:
        return []
    target = levels[2] / 100
    lines = [
        f"What {100 * GAP_TARGET:.0f} % of the gap ({100 * target:.1f} mIoU) asks of the schedule: "
        "mIoU against log2(iterations), least squares over each finished run's evaluations from "
        "1,000 its on — an extrapolation of a curve that moves ±1–2 points between evaluations, "
        "and of one schedule (its learning rate decays to zero at its end, so a longer schedule "
        "is not this run continued):", "",
    ]  # fmt: skip
    for job in _gap_jobs(jobs, entries):
        lines += [f"- {job.name}: {_entry_trend(entries[job.name], target)}"]
    return lines + [""]


def gap_figure(jobs: Sequence[Job], entries: dict[str, dict], rows: dict, path: Path) -> list[str]:
    """Plot the finished adaptation rows' curves with their trend lines against the source-only,
    oracle and target levels; the markdown showing it (nothing when no such row kept a curve)."""
    finished = _gap_jobs(jobs, entries)
    kept = [j for j in finished if entries[j.name].get("curve")]
    if (levels := gap_levels(rows)) is None or not kept:
        return []
    low, high, target = levels
    curves = {j.tags["label"]: [CurvePoint(**p) for p in entries[j.name]["curve"]] for j in kept}
    trends = {name: log_trend(points, target / 100) for name, points in curves.items()}
    named = {f"source-only {low:.1f}": low, f"oracle {high:.1f}": high}
    named[f"{100 * GAP_TARGET:.0f} % of the gap {target:.1f}"] = target
    plot_gap_trends(curves, {k: t for k, t in trends.items() if t is not None}, named, path)
    lost = [j.name for j in finished if j not in kept]
    note = f" ({', '.join(lost)}: curve not kept, in the list only)" if lost else ""
    return [f"The curves behind the trends{note}:", "", f"![gap](../figures/{path.name})", ""]


def _entry_trend(entry: dict, target: float) -> str:
    """The trend of an entry's curve; a recovered entry's committed trend text when its curve
    was lost (``scripts.recover_bench_records``)."""
    trend = log_trend([CurvePoint(**p) for p in entry.get("curve", [])], target)
    if trend is not None:
        return _trend_text(trend)
    if "trend" in entry:
        return f"{entry['trend']} (from the committed report; curve not kept)"
    return "no learning curve kept"


def _trend_text(trend: Trend) -> str:
    head = f"{100 * trend.per_doubling:+.1f} mIoU per doubling ({trend.points} evaluations)"
    if trend.reach_it is None and trend.per_doubling <= 0:
        return head + "; the line does not rise"
    if trend.reach_it is None:
        return (
            head + f"; the line does not reach the target within {MAX_EXTRAPOLATION}× its schedule"
        )
    cost = (
        "" if trend.cpu_h_per_it is None else f", ≈ {trend.reach_it * trend.cpu_h_per_it:.0f} CPU-h"
    )
    return head + f"; reaches the target at ≈ {trend.reach_it:,.0f} its{cost}"


COST_NOTE = (
    "Cost of each run as the benchmark trained it (wall min: the last uninterrupted segment's rate "
    "times the iterations, slowed by whatever shared the cores; CPU min: the process CPU time of "
    "the training steps the run logged, over all its resumes — the tables' CPU train min, which "
    "falls back to the wall estimate for runs that logged none):"
)


def main_section(
    suite: str,
    jobs: Sequence[Job],
    entries: dict[str, dict],
    scores: tuple[list[tuple[Job, dict]], dict[str, dict]],
    figures: Path,
) -> tuple[list[str], dict]:
    """A main-style suite's table, comparisons (sentences and the differences plot), gap trends,
    plots and cost table; ``scores`` = the runs' records and the carried rows."""
    found, carried = scores
    table, data = main_table(found, carried, list(dict.fromkeys(j.tags["row"] for j in jobs)))
    labels = {j.tags["row"]: j.tags["label"] for j in jobs}
    plot_main(data, labels, figures / f"bench_{suite}.png", MAIN_TITLES[suite])
    lines = [table, "", *carried_note(carried), *final_eval_note(found)]
    per_seed = per_seed_values(found)
    lines += comparisons(suite, data, per_seed)
    if suite == "showcase":
        lines += gap_trends(jobs, entries, data)
        lines += gap_figure(jobs, entries, data, figures / f"bench_{suite}_gap.png")
    lines += [f"![{suite}](../figures/bench_{suite}.png)", ""]
    diffs = differences(data, suite_pairs(suite), per_seed)
    if diffs:
        name = f"bench_{suite}_differences.png"
        plot_differences(diffs, figures / name, f"{MAIN_TITLES[suite]}: differences")
        lines += [f"![{suite} differences](../figures/{name})", ""]
    return lines + [COST_NOTE, "", cost_table(found)], data


def reported_runs(data: dict) -> int:
    """How many runs a written report's JSON holds: a main-style row's seeds, a sweep's points or
    a method's shifts (each one run)."""
    count = 0
    for value in data.values():
        if isinstance(value, dict) and "seeds" in value:
            count += value["seeds"]
        elif isinstance(value, dict | list):
            count += len(value)
    return count


def report_loses_runs(md: Path, present: int) -> str | None:
    """Why the report at ``md`` must not be rewritten, or None: it holds more runs than the
    ``present`` ones found now (their folders are gone and no committed record has them)."""
    written = md.with_suffix(".json")
    held = reported_runs(json.loads(written.read_text())) if written.exists() else 0
    if present >= held:
        return None
    return (
        f"kept {md} as it is: it reports {held} runs, only {present} are in the run folders or "
        f"in docs/bench/records here (run folders lost?). Rewriting it would drop rows; train "
        f"the missing runs again (`python -m dida.bench --suite {md.stem}`) or seed the record "
        "from the committed report (`python -m scripts.recover_bench_records --help`)."
    )


def write_reports(suite: str, jobs: Sequence[Job], runs_root: Path, out: Path) -> Path:
    """Write ``out/bench/<suite>.md`` and ``.json`` and the suite's plots from the runs' folders
    or their committed record (:mod:`dida.bench.archive`, rewritten here); returns the markdown."""
    record = archive_path(out, suite)
    entries = run_entries(jobs, runs_root, record)
    found, missing = load_scores(jobs, entries)
    carried = carried_rows(record, {job.tags.get("row") for job, _ in found})
    missing = [j.name for j in jobs if j.name in missing and j.tags.get("row") not in carried]
    md = Path(out) / "bench" / f"{suite}.md"
    if suite != "curves" and (lost := report_loses_runs(md, len(jobs) - len(missing))):
        print(lost, file=sys.stderr)
        return md
    lines, figures = _header(suite, jobs, missing), Path(out) / "figures"
    if suite in MAIN_TITLES:
        section, data = main_section(suite, jobs, entries, (found, carried), figures)
        lines += section
    elif suite == "curves":
        section, data = curves_section(jobs, entries, figures / "learning_curves.png")
        lines += section
    elif suite == "ablations":
        table, data = sweep_table(found)
        plot_sweeps(data, figures / "bench_ablations.png")
        lines += [table, "", "![ablations](../figures/bench_ablations.png)"]
    else:
        table, data = shift_table(found, SHIFT_DIFFERENCES.get(suite, ()))
        plot_shift(data, figures / f"bench_{suite}.png")
        lines += [table, "", f"![{suite}](../figures/bench_{suite}.png)"]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines) + "\n")
    runs.atomic_write_json(md.with_suffix(".json"), json.loads(json.dumps(data, default=str)))
    return md
