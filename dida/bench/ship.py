"""Export finished benchmark runs as the app's shipped checkpoints (``assets/checkpoints/<name>/``).

    python -m dida.bench.ship                               # seed-0 runs of runs/bench/main
    python -m dida.bench.ship --runs runs/bench/main --names dida_s0 --out assets/checkpoints
    python -m dida.bench.ship --suite showcase              # the showcase models (runs/bench)

Each folder gets ``model.safetensors`` (the student's weights in half precision), ``config.json``
(the run's config: it rebuilds the model), ``bank_history.safetensors`` (DIDA), ``metrics.jsonl``
(one eval record: the half-precision weights scored on the whole target val split after saving),
``expected.json`` (mIoU on a fixed slice of the val split, checked by ``tests/test_shipped.py``) and
``MODEL_CARD.md``, and ``scores.npz`` (per-image mIoU / overlap IoU / boundary IoU / per-class IoU
and the confusion matrix on the default SynthCity val split, read by the app at once).

    python -m dida.bench.ship --scores-only                 # (re)write scores.npz of every shipped folder
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from dida import runs
from dida.bank import BankHistory
from dida.bench.jobs import REPO
from dida.bench.scores import recorded_cost
from dida.bench.showcase import showcase_jobs
from dida.bench.suites import MAIN_ROWS, SUITES
from dida.config import TrainConfig
from dida.data.datasets import CityscapesDataset
from dida.data.pipeline import EvalImages
from dida.data.synthcity import synthcity_roots
from dida.data.uda import domain_roots, target_val_images
from dida.scores import SCORES_FILE, ScoreTable, file_digest, model_predictor, score_dataset
from dida.validate import evaluate_model

EXPECTED = "expected.json"
SLICE_IMAGES = 16
"""The fixed slice: the first this-many images of the SynthCity default val split."""
DEFAULT_DATA = Path("data/synthcity")
"""The default SynthCity tree whose val split the shipped scores are computed on."""
SHIPPED_SNAPSHOTS = 48
"""Bank snapshots a shipped DIDA model keeps (the run's history thinned evenly, first and last kept):
a showcase run's 196 snapshots take 7.2 MB, these 48 1.8 MB."""
SHIPPED_ROWS = ("oracle", "source_only", "proda", "daformer", "dida")
"""One checkpoint per method (+ oracle): the rows that must ship (``SHOWCASE_SHIPPED`` adds more)."""
SHOWCASE_SHIPPED = (*SHIPPED_ROWS, "dida_released", "mic")
"""The showcase models shipped (issue 13 §4). Measured on the four shipped in session 12: ≈ 6.6–6.8 MB
each in fp16 (decoder width 32) and 1.8 MB of bank history for DIDA (its 196 snapshots thinned to
``SHIPPED_SNAPSHOTS``): all seven ≈ 52 MB, within the ~60 MB budget of assets/ (the six shipped by
session 13, with DIDA released, take 44 MB). DIDA + MIC stays a benchmark run."""


def half_state(model_file: Path) -> dict[str, torch.Tensor]:
    """The run's weights with floating tensors in float16 (integers, e.g. BN counters, kept)."""
    state, _ = runs.load_state(model_file)
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def slice_miou(folder: Path, val: EvalImages, images: int = SLICE_IMAGES) -> float:
    """mIoU (19 classes) of a checkpoint folder on the first ``images`` images of ``val``."""
    model = runs.load_run_model(folder)
    with torch.no_grad():
        return evaluate_model(model, val, max_images=images).miou["19"]


def _shift(data: dict) -> float:
    """The SynthCity shift a run's target was generated with."""
    from dida.data.synthcity import PRESETS

    shift = data.get("synthcity_shift")
    return PRESETS[data["synthcity_preset"]].shift if shift is None else shift


def _init_line(init_weights: str | None, cost: dict[str, float] | None) -> list[str]:
    if init_weights is None:
        return []
    start, shown = init_cost(Path(init_weights)), _repo_relative(Path(init_weights))
    if start is None or cost is None:
        return [f"- Starts from `{shown}` (whole segmentor; its iterations come on top of these)"]
    before, total = start["train_cpu_s"] / 3600, (start["train_cpu_s"] + cost["train_cpu_s"]) / 3600
    return [
        f"- Starts from `{shown}` (whole segmentor, {before:.2f} CPU-hours of training; its "
        f"iterations come on top of these: **{total:.2f} CPU-hours in all**)"
    ]


def _repo_relative(path: Path) -> Path:
    """``path`` relative to the repository when it lies inside it (a shipped start is recorded
    absolute), else as recorded."""
    return path.relative_to(REPO) if path.is_absolute() and path.is_relative_to(REPO) else path


def init_cost(weights: Path) -> dict[str, float] | None:
    """Training cost of the model a run started from: ``<run>/model.safetensors`` (the run's
    last record), ``<run>/snapshots/model_<it>.safetensors`` (its record at that iteration) or a
    shipped checkpoint's weights (the CPU-hours its card states); None when the file is in neither
    a run folder that recorded costs nor a shipped folder whose card states them."""
    snapshot = re.fullmatch(r"model_(\d+)\.safetensors", weights.name)
    run_dir = weights.parent.parent if snapshot else weights.parent
    if (run_dir / runs.METRICS).exists() and (cost := recorded_cost(run_dir, _it(snapshot))):
        return cost
    return None if snapshot else card_cost(weights.parent)


def _it(snapshot: re.Match | None) -> int | None:
    return int(snapshot.group(1)) if snapshot else None


CARD_COST = re.compile(r"^- Training cost: ([0-9.]+) CPU-hours", re.MULTILINE)
"""The cost line ``card`` writes (a shipped folder keeps no train records)."""


def card_cost(folder: Path) -> dict[str, float] | None:
    """The training CPU-seconds a shipped folder's model card states, None when it states none."""
    path = folder / runs.MODEL_CARD
    found = CARD_COST.search(path.read_text()) if path.is_file() else None
    return {"train_cpu_s": float(found.group(1)) * 3600} if found else None


def _cost_line(cost: dict[str, float] | None, device: str) -> str:
    if cost is None:
        return f"- Training cost: not recorded (trained before costs were logged), on {device}"
    cpu_h, wall_h = cost["train_cpu_s"] / 3600, cost["train_wall_s"] / 3600
    return f"- Training cost: {cpu_h:.2f} CPU-hours ({wall_h:.2f} h wall), on {device}"


BUDGET_STOP = re.compile(r"\s--stop-cpu-h(?:=|\s+)\S+")
"""The CPU budget flag: it only decides where a session's part of a run stops, never the weights."""


def reproduce_command(command: str) -> str:
    """The recorded command without a budget stop (``--stop-cpu-h``): the command that trains the
    whole schedule (a run stopped by a budget resumes to the end without the flag), with paths
    inside the repository relative to it (the bench runs from its root; a shipped start is
    recorded absolute)."""
    return BUDGET_STOP.sub("", command).replace(f"{REPO}/", "")


def _budget_note(command: str) -> str:
    stops = [m.group().strip() for m in BUDGET_STOP.finditer(command)]
    if not stops:
        return ""
    return (
        f" (recorded with `{stops[0]}`, a CPU budget stop: trained in parts, "
        "resumed to the full schedule without it)"
    )


def card(
    name: str,
    config: dict,
    run_name: str,
    metrics: dict,
    slice_value: float,
    cost: dict[str, float] | None = None,
    suite: str = "main",
) -> str:
    """The MODEL_CARD.md text."""
    data, options = config["data"], config["method"]["options"]
    per_class = ", ".join(f"{c} {100 * v:.1f}" for c, v in metrics["IoU"].items() if v is not None)
    return "\n".join([
        f"# {name}: {config['method']['name']} on SynthCity",
        "",
        f"- Trained by: `python -m dida.bench --suite {suite}` (run `{run_name}`), i.e. "
        f"`{reproduce_command(config['command'])}`{_budget_note(config['command'])}",
        f"- Seed {config['seed']}, {config['iters']} iterations, SynthCity preset `{data['synthcity_preset']}`"
        f" (shift {_shift(data)}), crop {data['crop']}, batch {data['batch_size']}",
        f"- Model: {config['model']['backbone']}, decoder embed_dim {config['model']['embed_dim']}; "
        f"method options {options or 'defaults'}",
        *_init_line(config["model"].get("init_weights"), cost),
        _cost_line(cost, config.get("environment", {}).get("hardware", "hardware not recorded")),
        f"- Environment: {config.get('environment', {})}",
        "- Weights: the student, stored in float16 (`python -m dida.bench.ship`).",
        f"- Target mIoU measured after saving (float16 weights, whole val split): **{100 * metrics['mIoU']['19']:.1f}**",
        f"- mIoU on the first {SLICE_IMAGES} val images (checked by tests/test_shipped.py): {100 * slice_value:.2f}",
        f"- Per-class IoU: {per_class}",
        "",
    ])  # fmt: skip


def ship_run(
    run_dir: Path, out: Path, name: str, data_root: Path | None = None, suite: str = "main"
) -> Path:
    """Export one finished run to ``out/name`` and measure it there (scores on the val split of
    the SynthCity tree ``data_root``, or of the run's own target when None); ``suite``: the bench
    suite that trained it (its card says so); returns the folder."""
    if runs.read_status(run_dir).get("state") != "finished":
        raise runs.RunError(f"{run_dir} is not a finished run; finish it with python -m dida.bench")
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    config = runs.read_json(run_dir / runs.CONFIG)
    runs.save_state(folder / runs.MODEL, half_state(run_dir / runs.MODEL), {"from": run_dir.name})
    runs.atomic_write_json(folder / runs.CONFIG, config)
    if (run_dir / runs.BANK_HISTORY).exists():
        history = BankHistory.load(run_dir / runs.BANK_HISTORY)
        history.thinned(SHIPPED_SNAPSHOTS).save(folder / runs.BANK_HISTORY)
    val = target_val_images(TrainConfig.from_dict(config).data)
    with torch.no_grad():
        metrics = evaluate_model(runs.load_run_model(folder), val).to_dict()
    (folder / runs.METRICS).unlink(missing_ok=True)
    runs.append_metrics(folder, {"kind": "eval", "it": config["iters"], **metrics})
    value = slice_miou(folder, val)
    runs.atomic_write_json(folder / EXPECTED, {"val_images": SLICE_IMAGES, "mIoU": value})
    cost = recorded_cost(run_dir)
    text = card(name, config, run_dir.name, metrics, value, cost, suite)
    (folder / runs.MODEL_CARD).write_text(text)
    split = val_split(data_root) if data_root else run_val_split(TrainConfig.from_dict(config))
    write_scores(folder, split)
    return folder


def val_split(data_root: Path) -> CityscapesDataset:
    """The target val split of a SynthCity tree, read as the studio reads it."""
    return CityscapesDataset(synthcity_roots(data_root)[1], "val")


def run_val_split(config: TrainConfig) -> CityscapesDataset:
    """The target val split a run was evaluated on, read as the studio reads it."""
    return CityscapesDataset(domain_roots(config.data)[1], "val")


def checkpoint_scores(folder: Path, val: CityscapesDataset) -> ScoreTable:
    """Per-image scores and the confusion matrix of a run / checkpoint folder's model on ``val``."""
    model = runs.load_run_model(folder).eval()
    meta = {
        "model_sha256": file_digest(folder / runs.MODEL),
        "iteration": runs.read_json(folder / runs.CONFIG).get("iters"),
        "val_root": str(val.root),
    }
    return score_dataset(model_predictor(model), val, meta)


def write_scores(folder: Path, val: CityscapesDataset) -> Path:
    """Write ``folder/scores.npz`` (see ``checkpoint_scores``); returns its path."""
    return checkpoint_scores(folder, val).save(folder / SCORES_FILE)


def scores_main(out: Path, names: Sequence[str], data_root: Path) -> None:
    """``--scores-only``: score every named shipped folder under ``out`` (all when none named)."""
    val = val_split(data_root)
    folders = [out / n for n in names] or sorted(p.parent for p in out.glob(f"*/{runs.MODEL}"))
    for folder in folders:
        path = write_scores(folder, val)
        table = ScoreTable.load(path)
        print(
            f"{path}: {path.stat().st_size / 1024:.0f} KiB, mIoU {table.metrics()['mIoU']['19']:.4f}"
        )


def showcase_runs(bench_root: Path, names: Sequence[str] = SHOWCASE_SHIPPED) -> dict[str, Path]:
    """Shipped name → run folder of the showcase models ``names`` (``--suite showcase``):
    source-only and the oracle are the winning recipe's curve runs, the adaptation rows the
    showcase suite's seed 0."""
    unknown = sorted(set(names) - set(SHOWCASE_SHIPPED))
    if unknown:
        raise ValueError(f"not a shipped showcase model: {unknown}; choose from {SHOWCASE_SHIPPED}")
    jobs = {job.tags["row"]: job.run_dir(bench_root) for job in showcase_jobs()}
    return {name: jobs[name] for name in names}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dida.bench.ship", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--suite", choices=("main", "showcase"), default="main",
        help="main: --names under --runs; showcase: the showcase models under --runs (runs/bench)",
    )  # fmt: skip
    p.add_argument(
        "--runs", type=Path, default=None, help="runs/bench/main; runs/bench for showcase"
    )
    p.add_argument("--out", type=Path, default=Path("assets/checkpoints"))
    p.add_argument(
        "--names", nargs="*", default=None,
        help=f"runs to ship (main: default {' '.join(f'{k}_s0' for k in SHIPPED_ROWS)}); with "
        f"--suite showcase, which of {' '.join(SHOWCASE_SHIPPED)} (default all)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--data", type=Path, default=None,
        help=f"SynthCity root whose val split is scored (default: each run's own target; {DEFAULT_DATA} with --scores-only)",
    )  # fmt: skip
    p.add_argument(
        "--scores-only", action="store_true",
        help="only (re)write scores.npz of the shipped folders in --out (--names: folder names)",
    )  # fmt: skip
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scores_only:
        return scores_main(args.out, args.names or [], args.data or DEFAULT_DATA)
    for name, run_dir in _sources(args).items():
        folder = ship_run(run_dir, args.out, name, args.data, _suite(args))
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        print(f"{folder}: {size:.1f} MB, {(folder / runs.MODEL_CARD).read_text().splitlines()[-3]}")


def _suite(args: argparse.Namespace) -> str:
    """The bench suite that trained the runs shipped: showcase, else the --runs folder's name
    when it is a suite's (runs/bench/<suite>), else main."""
    if args.suite == "showcase":
        return "showcase"
    return args.runs.name if args.runs is not None and args.runs.name in SUITES else "main"


def _sources(args: argparse.Namespace) -> dict[str, Path]:
    """Shipped name → run folder for the command line's suite."""
    if args.suite == "showcase":
        return showcase_runs(args.runs or Path("runs/bench"), args.names or SHOWCASE_SHIPPED)
    root, known = args.runs or Path("runs/bench/main"), {row.key for row in MAIN_ROWS}
    chosen = args.names or [f"{k}_s0" for k in SHIPPED_ROWS]
    names = {n: n.rsplit("_s", 1)[0] for n in chosen}
    return {(key if key in known else n): root / n for n, key in names.items()}


if __name__ == "__main__":
    main()
