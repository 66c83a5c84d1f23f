"""Print the last evaluation of run directories as a markdown table (per-class IoU, mIoU, wall time).

    python -m scripts.results_table runs/source_only_quick_s0 runs/oracle_quick_s0 ...
    python -m scripts.results_table runs/*_quick_s0

Wall time = time between the first and the last logged training record, scaled to all iterations
(the first record is written after ``log_interval`` iterations), plus nothing for evaluation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dida import runs
from dida.data.classes import CLASSES

SHORT = [c.replace("traffic ", "t.")[:6] for c in CLASSES]


def row(run_dir: Path) -> str:
    train, evals = runs.read_metrics(run_dir, "train"), runs.read_metrics(run_dir, "eval")
    if not evals:
        return f"| {run_dir.name} | (no evaluation yet) |"
    last = evals[-1]
    ious = [last["IoU"][c] for c in CLASSES]
    cells = " | ".join("-" if v is None else f"{100 * v:.1f}" for v in ious)
    span = train[-1]["time"] - train[0]["time"]
    wall = span * train[-1]["it"] / max(train[-1]["it"] - train[0]["it"], 1)
    return f"| {run_dir.name} | {last['it']} | {cells} | **{100 * last['mIoU']['19']:.1f}** | {wall / 60:.1f} |"


def main(paths: list[str]) -> None:
    print("| run | iters | " + " | ".join(SHORT) + " | mIoU | wall (min) |")
    print("|---|---|" + "---|" * len(SHORT) + "---|---|")
    for path in paths:
        print(row(Path(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
