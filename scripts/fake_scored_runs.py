"""Fake scored runs (deterministic ``bench_eval.json`` + the config each job would train) for every
job of the report suites, so two versions of the report code can be diffed without CPU-hours:

    python scripts/fake_scored_runs.py /tmp/runs_a                     # in each checkout
    python -m dida.bench --suite main --report --runs /tmp/runs_a --out /tmp/out_a
    diff -r /tmp/out_a /tmp/out_b                                      # tables and plots

Used for issue 17's "report identical before and after the move" (55862a3 vs the package layout).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

from dida.bench.suites import job_config, suite_jobs
from dida.data.classes import CLASSES

SUITES = ("main", "quick", "ablations", "shift", "warm", "shiftwarm")


def fake_record(rng: random.Random) -> dict:
    """A bench_eval record with the keys the report reads (IoU in [0, 1], some Acc undefined)."""
    iou = {c: rng.random() for c in CLASSES}
    overlap = {c: rng.random() for c in CLASSES}
    acc = {c: None if rng.random() < 0.2 else rng.random() for c in CLASSES}
    return {
        "it": 1000, "val_images": 250,
        "all": {"mIoU": {"19": sum(iou.values()) / len(iou)}, "IoU": iou},
        "overlap": {"mIoU": {"19": sum(overlap.values()) / len(overlap)}, "IoU": overlap, "Acc": acc},
        "overlap_mIoU": rng.random(), "rare_classes": ["train", "bicycle"], "rare_fraction": 0.005,
        "rare_mIoU": rng.random(), "overlap_width": 5, "eval_s": 1.0,
        "train_s": rng.uniform(600, 2000), "it_per_s": rng.uniform(0.5, 2),
        "peak_mem_mb": rng.uniform(1000, 1500),
    }  # fmt: skip


def main(root: Path) -> None:
    for suite in SUITES:
        for job in suite_jobs(suite, None):
            folder = job.run_dir(root)
            folder.mkdir(parents=True, exist_ok=True)
            rng = random.Random(hashlib.sha1(f"{suite}/{job.name}".encode()).hexdigest())
            (folder / "bench_eval.json").write_text(json.dumps(fake_record(rng)))
            (folder / "config.json").write_text(json.dumps(job_config(job, root).to_dict()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
