"""The SynthCity benchmark in one command: the main table, the supplement's ablations, the shift sweep.

    python -m dida.bench                          # = --suite warm: the benchmark's default protocol
    python -m dida.bench --suite main             # every method from scratch (secondary; default preset)
    python -m dida.bench --suite quick            # every method once at the quick preset
    python -m dida.bench --suite ablations        # tp, lambda and K sweeps of DIDA (quick preset;
                                                  # default point and DAFormer = the quick suite's)
    python -m dida.bench --suite shift            # shift in {0, .25, .5, .75, 1} (quick preset)
    python -m dida.bench --suite warm             # DAFormer-style and DIDA started from the main
                                                  # suite's source-only run, against its control
    python -m dida.bench --suite curves           # learning curves; recipes at an equal CPU budget
    python -m dida.bench --suite showcase         # the shipped models (winning recipe, long)
    python -m dida.bench --suite shiftwarm        # the shift sweep, adaptation started from each
                                                  # shift's source-only run, against its control
    python -m dida.bench --suite all --workers 2  # everything; 2 runs side by side, 1 thread each
    python -m dida.bench --suite ablations shift  # one queue of runs for both suites
    python -m dida.bench --report                 # only rewrite tables and plots from finished runs

Runs go to ``runs/bench/<suite>/<name>``: a finished run is not retrained and an interrupted one
resumes from its checkpoint (the same ``python -m dida.train`` command is issued again). After a run,
``bench_eval.json`` in its folder holds its scores on the whole target val split: all pixels, the
overlapping-entity pixels and the rare classes. Tables go to ``docs/bench/<suite>.md`` and plots to
``docs/figures/bench_<sweep>.png``; ``docs/bench/<suite>.json`` holds the numbers behind them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from dida import runs
from dida.argtypes import positive_int
from dida.bench.archive import archive_path, cpu_h_left, read_archive, read_entries
from dida.bench.jobs import ABLATION_DEFAULTS, PRODA_SETTINGS, SEEDS, Job, Row
from dida.bench.report import write_reports
from dida.bench.scores import BENCH_EVAL, score_run
from dida.bench.showcase import curve_jobs, fidelity_jobs, showcase_jobs
from dida.data.synthcity import SynthCityConfig
from dida.data.uda import DataConfig, domain_roots
from dida.train import TrainConfig, build_parser, config_from_args, flat_config

SUITES = (
    "main", "quick", "ablations", "shift", "warm", "shiftwarm", "curves", "showcase", "fidelity",
)  # fmt: skip
TP_VALUES = (0.05, 0.1, 0.2, 0.5, 1.0)
LAMBDA_VALUES = (0.05, 0.1, 0.5, 1.0, 2.0)
K_VALUES = (100, 150, 200, 250, 300)
ALIGNMENT_VALUES = ("none", "labels")
"""View alignments under ClassMix besides the paper mode's ``target`` (``DIDAConfig.alignment``)."""
SHIFT_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)
SHIFT_METHODS = ("source_only", "daformer", "dida", "oracle")
DEFAULT_SHIFT = SynthCityConfig.shift


MAIN_ROWS = (
    Row("oracle", "oracle", "oracle (target labels)"),
    Row("source_only", "source_only", "source-only"),
    Row("proda", "proda", "ProDA-style", settings=PRODA_SETTINGS, init_from="source_only"),
    Row(
        "source_only_more",
        "source_only",
        "source-only, + ProDA's iterations",
        init_from="source_only",
    ),
    Row("daformer", "daformer", "DAFormer-style", seeds=3),
    Row("dida", "dida", "DIDA (paper mode)", seeds=3),
    Row("dida_released", "dida", "DIDA (released mode)", settings=("method.mode=released",)),
)

WARM_ROWS = (
    Row("daformer_warm", "daformer", "DAFormer-style, from source-only", 3, (), "main/source_only"),
    Row("dida_warm", "dida", "DIDA (paper), from source-only", 3, (), "main/source_only"),
    Row("dida_released_warm", "dida", "DIDA (released), from source-only", 1,
        ("method.mode=released",), "main/source_only"),
)  # fmt: skip
"""The adaptation rows again, started from the main suite's trained source-only model (the start
the published methods assume: a trained, not a random, encoder); judged against the control row."""
WARM_SHARED = ("oracle", "source_only", "source_only_more", "proda")
"""Main-suite rows the warm table reprints (ProDA-style and the control already start there)."""


def main_jobs(preset: str = "default") -> list[Job]:
    """Seed 0 of every row first (a usable table early), then the extra seeds."""
    return [
        _row_job("main", row, preset, seed)
        for seed in SEEDS for row in MAIN_ROWS if seed < row.seeds
    ]  # fmt: skip


def _row_job(suite: str, row: Row, preset: str, seed: int) -> Job:
    init = None if row.init_from is None else f"{row.init_from}_s0"
    tags = {"row": row.key, "label": row.label}
    return Job(
        suite, f"{row.key}_s{seed}", row.method, preset, seed, row.settings_with_iters(), tags, init
    )


def quick_jobs(preset: str = "quick") -> list[Job]:
    """Every row of the main table once (seed 0) at the quick preset: the methods issue's table.
    The ablation and shift suites reuse these runs for their default points."""
    return [_row_job("quick", row, preset, 0) for row in MAIN_ROWS]


def warm_jobs(preset: str = "default") -> list[Job]:
    """The main suite's oracle, source-only, control and ProDA-style runs, then DAFormer-style and
    DIDA started from its source-only run (seed 0 of each row first)."""
    shared = [j for j in main_jobs(preset) if j.tags["row"] in WARM_SHARED]
    return shared + [
        _row_job("warm", row, preset, seed)
        for seed in SEEDS for row in WARM_ROWS if seed < row.seeds
    ]  # fmt: skip


def shared_quick_job(row: str, preset: str, **tags: Any) -> Job:
    """The quick suite's run of ``row`` with another suite's tags (trained once, reported twice)."""
    job = next(j for j in quick_jobs(preset) if j.tags["row"] == row)
    return replace(job, tags=tags)


def _dida_job(sweep: str, value: Any, setting: str, preset: str) -> Job:
    name, settings = f"dida_{sweep}{value}", (f"{setting}={value}",)
    return Job("ablations", name, "dida", preset, 0, settings, {"sweep": sweep, "value": value})


def ablation_jobs(preset: str = "quick") -> list[Job]:
    """DIDA at seed 0 for every tp, lambda and K, for the other view alignments, and with
    interior-pixel slots; the default point (DIDA) and the reference (DAFormer-style) are the quick
    suite's runs."""
    sweeps = {
        "tp": ("method.tp", TP_VALUES),
        "lambda": ("method.ins_lambda", LAMBDA_VALUES),
        "K": ("method.bank_size", K_VALUES),
    }
    jobs = [
        shared_quick_job("daformer", preset, sweep="reference", value=None),
        shared_quick_job("dida", preset, sweep="default", value=None),
    ]
    for sweep, (setting, values) in sweeps.items():
        jobs += [
            _dida_job(sweep, v, setting, preset) for v in values if v != ABLATION_DEFAULTS[sweep]
        ]
    jobs += [_dida_job("alignment", v, "method.alignment", preset) for v in ALIGNMENT_VALUES]
    return jobs + [_dida_job("slots", "interior", "method.slot_pixels", preset)]


def shift_root(shift: float) -> str:
    """The SynthCity target folder generated for one shift of the sweep."""
    return f"data/synthcity-shift{shift:g}"


def _shift_job(method: str, shift: float, preset: str) -> Job:
    if shift == DEFAULT_SHIFT:
        return shared_quick_job(method, preset, method=method, shift=shift)
    settings = (f"data.target_root={shift_root(shift)}", f"data.synthcity_shift={shift}")
    tags = {"method": method, "shift": shift}
    return Job("shift", f"{method}_shift{shift:g}", method, preset, 0, settings, tags)


def shift_jobs(preset: str = "quick") -> list[Job]:
    """Source-only, DAFormer-style, DIDA and the oracle at every shift; the source split is the
    default tree's, the target is generated per shift; the default shift is the quick suite's."""
    return [_shift_job(m, s, preset) for s in SHIFT_VALUES for m in SHIFT_METHODS]


SHIFT_WARM_ROWS = (
    ("source_only_more", "source_only"),
    ("daformer_warm", "daformer"),
    ("dida_warm", "dida"),
)
"""The shift sweep's rows started from that shift's source-only run: (row key, method); the
control (source-only trained on) first."""
SHIFT_WARM_KEYS = tuple(key for key, _ in SHIFT_WARM_ROWS)


def _shift_warm_job(key: str, method: str, shift: float, preset: str) -> Job:
    if shift == DEFAULT_SHIFT and key == "source_only_more":
        return shared_quick_job(key, preset, method=key, shift=shift)
    start = _shift_job("source_only", shift, preset)
    tags = {"method": key, "shift": shift}
    init = f"{start.suite}/{start.name}"
    return Job("shiftwarm", f"{key}_shift{shift:g}", method, preset, 0, start.settings, tags, init)


def shift_warm_jobs(preset: str = "quick") -> list[Job]:
    """The shift sweep again with DAFormer-style and DIDA started from each shift's source-only
    run, beside the control (source-only trained on as long) and the shift suite's source-only
    and oracle runs (re-used)."""
    shared = [j for j in shift_jobs(preset) if j.tags["method"] in ("source_only", "oracle")]
    return shared + [
        _shift_warm_job(key, method, s, preset)
        for s in SHIFT_VALUES
        for key, method in SHIFT_WARM_ROWS
    ]


SUITE_JOBS = {
    "main": main_jobs,
    "quick": quick_jobs,
    "ablations": ablation_jobs,
    "shift": shift_jobs,
    "warm": warm_jobs,
    "shiftwarm": shift_warm_jobs,
    "curves": curve_jobs,
    "showcase": showcase_jobs,
    "fidelity": fidelity_jobs,
}


# -------------------------------------------------------------------------------------------------
# Running


def is_finished(run_dir: Path) -> bool:
    """The run reached its last iteration and was scored (``bench_eval.json`` written)."""
    return runs.read_status(run_dir).get("state") == "finished" and (run_dir / BENCH_EVAL).exists()


def recorded_only(runs_root: Path, out: Path, preset: str | None = None) -> set[Path]:
    """Run folders of the runs only the committed record still holds, as scores or as a carried
    row (their folder is gone or unfinished here; :mod:`dida.bench.archive`): done, trained
    again only when named with ``--only``."""
    found = set()
    for suite in SUITES:
        kept = read_archive(archive_path(out, suite))
        for job in suite_jobs(suite, preset):
            entry = kept["runs"].get(job.name, {})
            done = "score" in entry or _budget_recorded(job, entry)
            carried = job.tags.get("row") in kept["rows"]
            if (done or carried) and not _done_here(job, runs_root):
                found.add(job.run_dir(runs_root))
    return found


def _budget_recorded(job: Job, entry: dict) -> bool:
    """A recorded learning-curve run that stopped at this job's CPU budget (its last evaluation)."""
    last = (entry.get("curve") or [{}])[-1].get("cpu_h")
    return job.stop_cpu_h is not None and last is not None and last >= job.stop_cpu_h


def _done_here(job: Job, runs_root: Path) -> bool:
    return is_finished(job.run_dir(runs_root)) or job.budget_spent(runs_root)


def wait_for(run_dir: Path, waiting: str, events: dict[Path, threading.Event]) -> None:
    """Block until ``run_dir`` is done when this invocation trains it (``events``); then it must be
    finished, else an error names what to train first."""
    if run_dir in events:
        events[run_dir].wait()
    if runs.read_status(run_dir).get("state") != "finished":
        raise RuntimeError(f"{waiting} starts from {run_dir}, which is not trained; train it first")


def wait_for_start(job: Job, runs_root: Path, events: dict[Path, threading.Event]) -> None:
    """Block until the weights ``job`` starts from exist: a finished init run, or its snapshot
    (which a still-running init run may already have written)."""
    start = job.init_file(runs_root)
    if job.starts_shipped:
        if not start.exists():
            raise RuntimeError(f"{job.name} starts from the shipped {start}, which is missing")
        return None
    if "@" not in str(job.init_from):
        return wait_for(job.init_dir(runs_root), job.name, events)
    if not start.exists() and job.init_dir(runs_root) in events:
        events[job.init_dir(runs_root)].wait()
    if not start.exists():
        raise RuntimeError(
            f"{job.name} starts from {start}, which does not exist yet; train "
            f"{job.init_dir(runs_root)} past that iteration first"
        )


def run_job(
    job: Job, runs_root: Path, threads: int, log_dir: Path, events: dict[Path, threading.Event]
) -> Path:
    """Train (or resume) one run in a subprocess, then score it; a failure raises with the log.
    ``events`` (run dir -> done) of the runs this invocation trains: a job waits for its
    ``init_from`` run there."""
    run_dir = job.run_dir(runs_root)
    try:
        if job.init_from is not None:
            wait_for_start(job, runs_root, events)
        return _train_and_score(job, runs_root, threads, log_dir)
    finally:
        events.setdefault(run_dir, threading.Event()).set()


def _train_and_score(job: Job, runs_root: Path, threads: int, log_dir: Path) -> Path:
    run_dir = job.run_dir(runs_root)
    if job.budget_spent(runs_root):
        return run_dir
    if runs.read_status(run_dir).get("state") != "finished":
        log = log_dir / f"{job.suite}_{job.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        prepare_data(job, runs_root)
        with open(log, "a") as f:
            done = subprocess.run(job.argv(runs_root, threads), stdout=f, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{job.name} failed (exit {done.returncode}); see {log}")
    if job.budget_spent(runs_root):
        return run_dir  # learning-curve points only: scored at the full schedule
    torch.set_num_threads(threads)
    score_run(run_dir)
    return run_dir


def job_config(job: Job, runs_root: Path) -> TrainConfig:
    """The config the job's training command builds (parsed by the train CLI itself)."""
    return config_from_args(build_parser().parse_args(job.train_args(runs_root, 1)))


def data_config(job: Job, runs_root: Path) -> DataConfig:
    """The data config the job's training command reads."""
    return job_config(job, runs_root).data


def config_mismatch(job: Job, runs_root: Path) -> list[str]:
    """The config fields (dotted) in which the job's run folder holds another run than the job
    would train, e.g. one of another preset; empty when they agree or the folder has no run."""
    path = job.run_dir(runs_root) / runs.CONFIG
    if not path.exists():
        return []
    stored = _comparable(TrainConfig.from_dict(runs.read_json(path)))
    wanted = _comparable(job_config(job, runs_root))
    return sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    """Dotted keys → JSON-normalised values; a start-weights path is compared by the run it names
    (``suite/name/file``: bench runs are launched from any folder, absolute or relative)."""
    flat = json.loads(json.dumps(flat_config(cfg)))
    if flat.get("model.init_weights"):
        flat["model.init_weights"] = list(Path(flat["model.init_weights"]).parts[-3:])
    return flat


def mismatched_runs(jobs: Sequence[Job], runs_root: Path) -> list[str]:
    """One message per job whose folder holds a run of another config (nothing mixed silently)."""
    return [
        f"{job.run_dir(runs_root)} holds a run of another config (differs in {', '.join(diff)}); "
        "delete that folder or pass another --runs"
        for job in jobs
        if (diff := config_mismatch(job, runs_root))
    ]


_GENERATING = threading.Lock()


def prepare_data(job: Job, runs_root: Path) -> None:
    """Generate the missing SynthCity trees the job reads, one job at a time: two runs side by
    side generating the same folder (a shift's target) would race."""
    with _GENERATING:
        domain_roots(data_config(job, runs_root))


def run_jobs(jobs: Sequence[Job], runs_root: Path, workers: int, threads: int) -> list[str]:
    """Run every unfinished job, ``workers`` at a time; returns the failures (nothing is skipped
    silently: a failed run is reported and the others go on)."""
    todo = init_first([j for j in jobs if not is_finished(j.run_dir(runs_root))], runs_root)
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; {len(todo)} to run")
    log_dir, failures = Path(runs_root) / "logs", []
    events = {j.run_dir(runs_root): threading.Event() for j in todo}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(run_job, j, runs_root, threads, log_dir, events): j for j in todo}
        for future, job in futures.items():
            try:
                print(f"finished {future.result()}")
            except Exception as err:  # noqa: BLE001 - reported, the rest of the benchmark goes on
                failures.append(f"{job.name}: {err}")
                print(f"FAILED {job.name}: {err}")
    return failures


def init_first(jobs: Sequence[Job], runs_root: Path) -> list[Job]:
    """The jobs in their order, except that a run another one starts from moves just before it
    (a worker waiting for a run queued behind it would wait forever)."""
    by_dir = {j.run_dir(runs_root): j for j in jobs}
    ordered: list[Job] = []

    def place(job: Job) -> None:
        if job in ordered:
            return
        if job.init_from is not None and job.init_dir(runs_root) in by_dir:
            place(by_dir[job.init_dir(runs_root)])
        ordered.append(job)

    for job in jobs:
        place(job)
    return ordered


def score_finished(jobs: Sequence[Job], runs_root: Path, threads: int) -> None:
    """Score every finished run without ``bench_eval.json`` (e.g. one trained by hand with the
    job's own command)."""
    torch.set_num_threads(threads)
    for job in jobs:
        run_dir = job.run_dir(runs_root)
        if runs.read_status(run_dir).get("state") == "finished" and not is_finished(run_dir):
            print(f"scoring {run_dir}")
            score_run(run_dir)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dida.bench", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--suite", nargs="+", choices=(*SUITES, "all"), default=["warm"],
        help="one queue of runs for all the suites named (init runs train first)",
    )  # fmt: skip
    p.add_argument("--preset", default=None, help="training preset (main: default, else quick)")
    p.add_argument("--runs", type=Path, default=Path("runs/bench"), help="runs folder")
    p.add_argument(
        "--out", type=Path, default=Path("docs"), help="tables → OUT/bench, plots → OUT/figures"
    )
    p.add_argument("--workers", type=positive_int, default=2, help="runs trained side by side")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per run")
    p.add_argument(
        "--report", action="store_true",
        help="train nothing: score finished runs that lack scores, then write tables and plots",
    )  # fmt: skip
    p.add_argument("--list", action="store_true", help="print the runs and their state, then exit")
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="train (or with --list, list) only these runs, in this order",
    )
    return p.parse_args(argv)


def suite_jobs(suite: str, preset: str | None) -> list[Job]:
    default = {
        "main": "default", "warm": "default", "curves": "long",
        "showcase": "showcase", "fidelity": "showcase",
    }  # fmt: skip
    default = default.get(suite, "quick")
    return SUITE_JOBS[suite](preset or default)


def select(jobs: Sequence[Job], names: Sequence[str] | None) -> list[Job]:
    """The jobs named in ``names`` (``NAME`` or ``SUITE/NAME``), in that order (all when None);
    an unknown or ambiguous name is an error listing the valid ones."""
    if names is None:
        return list(jobs)
    chosen = []
    for name in dict.fromkeys(names):
        found = [j for j in jobs if name in (j.name, f"{j.suite}/{j.name}")]
        if len(found) != 1:
            problem = "ambiguous run (write SUITE/NAME)" if found else "unknown run"
            valid = [f"{j.suite}/{j.name}" for j in jobs]
            raise SystemExit(f"{problem} {name!r}; the runs are {valid}")
        chosen += found
    return chosen


def distinct_runs(jobs: Sequence[Job], runs_root: Path) -> list[Job]:
    """The first job of each run folder (the ablation and shift suites reuse quick-suite runs)."""
    first: dict[Path, Job] = {}
    for job in jobs:
        first.setdefault(job.run_dir(runs_root), job)
    return list(first.values())


def describe_run(job: Job, runs_root: Path) -> str:
    """The run's state for ``--list``: not started, finished (scored or not), or the iteration an
    unfinished run reached (``interrupted`` at its checkpoint when its process died: the next
    call resumes)."""
    status = runs.run_state(job.run_dir(runs_root))
    state = {"unknown": "not started"}.get(status["state"], status["state"])
    if "it" in status and state != "finished":
        state += f" at {status['it']}/{status.get('max_iters') or job_config(job, runs_root).iters}"
    elif state == "finished" and not is_finished(job.run_dir(runs_root)):
        state += " (not scored: --report scores it)"
    diff = config_mismatch(job, runs_root)
    return state + (f"; ANOTHER CONFIG ({', '.join(diff)})" if diff else "")


RECORDED = "done (kept in docs/bench/records, no run folder here; --only NAME trains it again)"


def list_runs(jobs: Sequence[Job], runs_root: Path, out: Path, recorded: set[Path]) -> None:
    """``--list``: each run's state and, for those still to train, the training CPU-hours left
    (estimated from the record: ``archive.cpu_h_left``), then their sum."""
    total, unknown, entries = 0.0, 0, {}
    for job in jobs:
        if job.run_dir(runs_root) in recorded:
            print(job.suite, job.name, describe_recorded(job, runs_root))
            continue
        if job.suite not in entries:  # each suite's folders and record read once
            kept = read_archive(archive_path(out, job.suite))["runs"]
            entries[job.suite] = read_entries(suite_jobs(job.suite, None), runs_root, kept)
        left = estimate_left(job, runs_root, entries[job.suite])
        total, unknown = total + (left or 0.0), unknown + (left is None)
        cost = "" if left in (None, 0.0) else f" (≈ {left:.2f} CPU-h of training left)"
        print(job.suite, job.name, describe_run(job, runs_root) + cost)
    tail = f"; {unknown} with no recorded rate to estimate from" if unknown else ""
    print(f"≈ {total:.1f} CPU-h of training left for these runs (scoring not included{tail})")


def estimate_left(job: Job, runs_root: Path, entries: dict[str, dict]) -> float | None:
    """Training CPU-hours ``job`` still needs (0 when finished), from its suite's ``entries``."""
    status = runs.run_state(job.run_dir(runs_root))
    if status["state"] == "finished":
        return 0.0
    peers = suite_jobs(job.suite, None)
    done = int(status.get("it") or 0)
    return cpu_h_left(job, peers, entries, job_config(job, runs_root).iters, done)


def describe_recorded(job: Job, runs_root: Path) -> str:
    """``--list``'s line for a run only the record holds, naming the unfinished folder if any."""
    if runs.run_state(job.run_dir(runs_root))["state"] == "unknown":
        return RECORDED
    here = describe_run(job, runs_root)
    return f"done (kept in docs/bench/records; the run folder here: {here})"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    suites = SUITES if "all" in args.suite else tuple(dict.fromkeys(args.suite))
    jobs = {suite: suite_jobs(suite, args.preset) for suite in suites}
    every = distinct_runs([j for suite in suites for j in jobs[suite]], args.runs)
    recorded = recorded_only(args.runs, args.out, args.preset)
    if args.list:
        list_runs(select(every, args.only), args.runs, args.out, recorded)
        return 0
    mismatched = mismatched_runs(every, args.runs)
    if mismatched:
        print("\n".join(mismatched), file=sys.stderr)
        return 1
    failures: list[str] = []
    if args.report:
        score_finished(
            [j for j in every if j.run_dir(args.runs) not in recorded], args.runs, args.threads
        )
    else:
        todo = select(every, args.only)  # named runs train even when only the record holds them
        todo = todo if args.only else [j for j in todo if j.run_dir(args.runs) not in recorded]
        failures = run_jobs(todo, args.runs, args.workers, args.threads)
    for suite in suites:
        write_reports(suite, jobs[suite], args.runs, args.out)
    for failure in failures:
        print("FAILED", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
