"""Benchmark scores of a finished run on its whole target val split: every labelled pixel, the
overlapping-entity pixels (where DIDA claims its gain), the rare classes, and the run's cost.

``score_run(run_dir)`` writes them to ``<run_dir>/bench_eval.json`` (one prediction pass)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dida import runs
from dida.analysis import RARE_PIXEL_FRACTION, rare_classes
from dida.config import TrainConfig
from dida.data.classes import CLASSES
from dida.data.datasets import class_pixel_totals, load_class_stats
from dida.data.overlap import overlap_mask
from dida.data.uda import target_val_images
from dida.validate import evaluate_masks

BENCH_EVAL = "bench_eval.json"
OVERLAP_WIDTH = 3
"""Overlapping-entity pixels: entity pixels within this many pixels of an entity of another class
(``dida.data.overlap.overlap_mask``; 3 px at SynthCity's 256 x 512 ~ 12 px at Cityscapes' 1024)."""


def overlap_pixels(item: dict) -> np.ndarray:
    """The overlap mask of a val item; a split without instance maps cannot be scored there."""
    if "instance" not in item:
        raise ValueError(
            f"val image {item.get('name')!r} has no instance map (Cityscapes *_instanceIds.png / "
            "SynthCity gtFine); overlapping-entity pixels cannot be found without it"
        )
    return overlap_mask(item["instance"].numpy(), OVERLAP_WIDTH)


def mean_over(ious: dict[str, float | None], names: list[str]) -> float | None:
    """Mean IoU over ``names`` skipping undefined IoUs (None when none is defined)."""
    values = [ious[n] for n in names if ious.get(n) is not None]
    return float(np.mean(values)) if values else None


def present_miou(metrics: dict) -> float | None:
    """mIoU over the classes with ground-truth pixels in the scored subset (``Acc`` defined).

    On a pixel subset such as the overlap mask, a class that is only predicted there (road under a
    car's edge) has IoU 0 and would drag the plain 19-class mean toward 0; this mean keeps the classes
    the subset is about."""
    names = [c for c, acc in metrics["Acc"].items() if acc is not None]
    return mean_over(metrics["IoU"], names)


def overlap_score(record: dict) -> float | None:
    """A ``bench_eval`` record's overlap mIoU (present classes), None when the overlap pixels were
    not scored (a run scored from its final evaluation: :func:`score_from_final_eval`); a record
    recovered from a report (``scripts.recover_bench_records``) keeps only ``overlap_mIoU``."""
    if record.get("overlap") is None:
        return record.get("overlap_mIoU")
    return present_miou(record["overlap"])


def last_segment(train: list[dict]) -> list[dict]:
    """The train records since the run last (re)started: a resumed or restarted run logs its
    iterations again, so an iteration not above the previous one starts a new segment."""
    starts = [i for i in range(1, len(train)) if train[i]["it"] <= train[i - 1]["it"]]
    return train[starts[-1] :] if starts else train


def wall_cost(run_dir: Path) -> dict[str, Any]:
    """Wall time of the training iterations (from the logged timestamps of the last uninterrupted
    segment, scaled to all iterations), iterations per second and the peak memory logged."""
    train = last_segment(runs.read_metrics(run_dir, "train"))
    if len(train) < 2:
        return {"train_s": None, "it_per_s": None, "peak_mem_mb": None}
    span, its = train[-1]["time"] - train[0]["time"], train[-1]["it"] - train[0]["it"]
    peaks = [r["peak_mem_mb"] for r in train if r.get("peak_mem_mb") is not None]
    return {
        "train_s": span * train[-1]["it"] / max(its, 1),
        "it_per_s": its / span if span > 0 else None,
        "peak_mem_mb": max(peaks) if peaks else None,
    }


def recorded_cost(run_dir: Path, upto: int | None = None) -> dict[str, float] | None:
    """The run's cumulative training cost (``train_cpu_s``, ``train_wall_s``) at its last train
    record (at or before iteration ``upto`` when given); None for runs trained before the cost
    was recorded."""
    costs = [
        r
        for r in runs.read_metrics(run_dir, "train")
        if "train_cpu_s" in r and (upto is None or r["it"] <= upto)
    ]
    return None if not costs else {k: costs[-1][k] for k in ("train_cpu_s", "train_wall_s")}


def val_rare_classes(val: Any) -> list[str]:
    """Names of the rare classes of a val split (``EvalImages``), from its cached statistics."""
    stats = load_class_stats(val.dataset, cache_dir=Path(".cache") / "class_stats")
    return [CLASSES[c] for c in rare_classes(class_pixel_totals(stats))]


def score_run(run_dir: str | Path, device: str = "cpu", max_images: int | None = None) -> dict:
    """Score ``run_dir``'s final weights and write ``bench_eval.json``; returns the record."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.from_dict(runs.read_json(run_dir / runs.CONFIG))
    val = target_val_images(cfg.data)
    model = runs.load_run_model(run_dir, device)
    start = time.perf_counter()
    with torch.no_grad():
        scores = evaluate_masks(
            model, val, {"all": None, "overlap": overlap_pixels}, device, max_images
        )
    rare = val_rare_classes(val)
    everything, overlap = scores["all"].to_dict(), scores["overlap"].to_dict()
    record = {
        "it": runs.run_info(run_dir).iteration,
        "val_images": len(val) if max_images is None else min(max_images, len(val)),
        "all": everything,
        "overlap": overlap,
        "overlap_mIoU": present_miou(overlap),
        "rare_classes": rare,
        "rare_fraction": RARE_PIXEL_FRACTION,
        "rare_mIoU": mean_over(everything["IoU"], rare),
        "overlap_width": OVERLAP_WIDTH,
        "eval_s": time.perf_counter() - start,
        **wall_cost(run_dir),
    }
    runs.atomic_write_json(run_dir / BENCH_EVAL, record)
    return record


FINAL_EVAL_SOURCE = "the training's final evaluation (weights not kept; overlap not scored)"


def score_from_final_eval(run_dir: str | Path) -> dict:
    """``bench_eval.json`` from a finished run's last logged evaluation (the whole target val split,
    the same metrics ``score_run`` computes on all pixels) when its weights are not here, e.g. a run
    trained on a lent GPU whose records alone came back. The overlap scores stay None and
    ``scored_from`` says so; the rare-class mIoU is the mean of the logged per-class IoU."""
    run_dir = Path(run_dir)
    status = runs.read_status(run_dir)
    final = [r for r in runs.read_metrics(run_dir, "eval") if r["it"] == status.get("it")]
    if status.get("state") != "finished" or not final:
        raise ValueError(f"{run_dir} is not finished with a logged final evaluation")
    cfg = TrainConfig.from_dict(runs.read_json(run_dir / runs.CONFIG))
    val = target_val_images(cfg.data)
    rare = val_rare_classes(val)
    everything = {
        k: v for k, v in final[-1].items() if k not in ("kind", "it", "train_cpu_s", "train_wall_s")
    }
    record = {
        "it": status["it"],
        "val_images": len(val),
        "all": everything,
        "overlap": None,
        "overlap_mIoU": None,
        "rare_classes": rare,
        "rare_fraction": RARE_PIXEL_FRACTION,
        "rare_mIoU": mean_over(everything["IoU"], rare),
        "overlap_width": OVERLAP_WIDTH,
        "eval_s": None,
        "scored_from": FINAL_EVAL_SOURCE,
        **wall_cost(run_dir),
    }
    runs.atomic_write_json(run_dir / BENCH_EVAL, record)
    return record
