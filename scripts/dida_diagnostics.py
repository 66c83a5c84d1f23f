"""How good is a DIDA run's instance level? Diagnostics on target val images, no training.

For the run's final student and the last bank snapshot (or ``--snapshot i``), at feature resolution
(1/4 of the image) against the nearest-downsampled ground truth:

* pixel accuracy and mean class accuracy of the semantic argmax p, of the scattered instance scores
  a = scatter(calibrate(q, gather(p))) (what regenerates DIDA's pseudo-labels), of the uncalibrated
  scatter(q), of the regenerated α·p + (1 − α)·a, and of the nearest slot's class;
* slot purity: the fraction of slots whose feature the classifier puts in the slot's own class.

    python -m scripts.dida_diagnostics runs/bench/main/dida_s0 --images 50
    python -m scripts.dida_diagnostics runs/bench/main/dida_s0 --tp 0.05 0.1 0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dida import runs
from dida.bank import BankHistory
from dida.data.classes import IGNORE_INDEX, NUM_CLASSES
from dida.data.uda import target_val_images
from dida.methods.common import (
    calibrate,
    gather_from_classes,
    instance_scores,
    regenerate_pseudo_probs,
    scatter_to_classes,
    temperature_softmax,
)
from dida.methods.dida import downsample_labels
from dida.studio import classify_features
from dida.train import TrainConfig

RULES = ("semantic p", "scatter(calibrated q)", "scatter(q)", "regenerated", "nearest slot")


def rule_maps(logits, features, bank, labels, tp: float, alpha: float, normalize: bool) -> dict:
    """(h, w) class maps of every rule for one image (batch of 1)."""
    p = logits.softmax(1)
    scores = instance_scores(features, bank, normalize=normalize)
    q = temperature_softmax(scores, tp)
    a = scatter_to_classes(calibrate(q, gather_from_classes(p, labels)), labels, NUM_CLASSES)
    regen = regenerate_pseudo_probs(p, a, alpha, "paper")
    maps = (p, a, scatter_to_classes(q, labels, NUM_CLASSES), regen)
    out = {name: m.argmax(1)[0] for name, m in zip(RULES, maps, strict=False)}
    out["nearest slot"] = labels[scores.argmax(1)[0]]
    return out


def accumulate(confusions: dict, maps: dict, gt: torch.Tensor) -> None:
    valid = gt != IGNORE_INDEX
    for name, pred in maps.items():
        idx = gt[valid] * NUM_CLASSES + pred[valid]
        confusions[name] += torch.bincount(idx, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, -1)


def summary(confusion: torch.Tensor) -> tuple[float, float]:
    """(pixel accuracy, mean class accuracy over classes present) in %."""
    c = confusion.double()
    present = c.sum(1) > 0
    return 100 * float(c.diag().sum() / c.sum()), 100 * float((c.diag() / c.sum(1))[present].mean())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", type=Path)
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--snapshot", type=int, default=-1)
    p.add_argument("--tp", type=float, nargs="*", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(runs.read_json(args.run / runs.CONFIG))
    from dida.methods.registry import method_config

    mcfg = method_config("dida", cfg.method_options)
    history = BankHistory.load(args.run / runs.BANK_HISTORY)
    snap = history[args.snapshot % len(history)]
    model = runs.load_run_model(args.run)
    bank, labels = snap.features.float(), snap.labels
    purity = (classify_features(model, bank) == labels.numpy()).mean()
    print(f"{args.run.name}: snapshot at iteration {snap.iteration} ({len(history)} snapshots), "
          f"K={len(labels)}, slot purity {100 * purity:.1f} %, alpha {mcfg.scatter_alpha}")  # fmt: skip
    val = target_val_images(cfg.data)
    for tp in args.tp or [mcfg.tp]:
        confusions = {
            name: torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long) for name in RULES
        }
        for i in range(min(args.images, len(val))):
            item = val[i]
            with torch.no_grad():
                out = model(item["image"][None])
                maps = rule_maps(
                    out.logits, out.features, bank, labels, tp, mcfg.scatter_alpha, mcfg.normalize
                )
            gt = downsample_labels(item["label"][None], out.features.shape[-2:])[0]
            accumulate(confusions, maps, gt)
        for name, c in confusions.items():
            acc, macc = summary(c)
            print(f"  tp {tp:<5g} {name:<22s} pixel acc {acc:5.1f}   mean class acc {macc:5.1f}")


if __name__ == "__main__":
    main()
