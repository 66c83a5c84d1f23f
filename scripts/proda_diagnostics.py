"""How good are a ProDA-style run's pseudo-labels? Diagnostics on target val images, no training.

From the run's training checkpoint: the frozen warm-up model (soft labels p), the EMA teacher (features
for the prototype distances) and the class prototypes; and the run's final student. At feature
resolution (1/4; networks in eval mode) against the nearest-downsampled ground truth, pixel accuracy and mIoU (over the
classes present) of: warm-up p, teacher p, student p, the rectified label argmax(w ⊙ p_warmup) with
τ = the run's ``proto_temperature``, and the nearest prototype.

    python -m scripts.proda_diagnostics runs/bench/quick/proda_s0 --images 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors import safe_open

from dida import runs
from dida.data.classes import NUM_CLASSES
from dida.data.uda import target_val_images
from dida.methods.common import prototype_distances, prototype_weights, rectified_pseudo_label
from dida.methods.dida import downsample_labels
from dida.methods.registry import method_config
from dida.train import TrainConfig
from scripts.dida_diagnostics import accumulate

RULES = ("warm-up p", "teacher p", "student p", "rectified (warm-up p)", "nearest prototype")


def rule_maps(nets: dict, image: torch.Tensor, prototypes: torch.Tensor, tau: float) -> dict:
    """(h, w) class map of every rule for one image (batch of 1)."""
    out = {name: net(image[None]) for name, net in nets.items()}
    distances = prototype_distances(out["teacher"].features, prototypes)
    p_warm = out["warmup"].logits.softmax(1)
    rectified = rectified_pseudo_label(prototype_weights(distances, tau), p_warm).labels
    maps = (p_warm, out["teacher"].logits, out["student"].logits)
    found = {name: m.argmax(1)[0] for name, m in zip(RULES, maps, strict=False)}
    return {**found, RULES[3]: rectified[0], RULES[4]: distances.argmin(1)[0]}


def scores(confusion: torch.Tensor) -> tuple[float, float]:
    """(pixel accuracy, mIoU over classes with ground truth) in %."""
    c = confusion.double()
    iou = c.diag() / (c.sum(0) + c.sum(1) - c.diag())
    return 100 * float(c.diag().sum() / c.sum()), 100 * float(iou[c.sum(1) > 0].mean())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", type=Path)
    p.add_argument("--images", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(runs.read_json(args.run / runs.CONFIG))
    tau = method_config("proda", cfg.method_options).proto_temperature
    nets = {
        "warmup": runs.load_checkpoint_model(args.run, "method.warmup."),
        "teacher": runs.load_checkpoint_model(args.run, "method.teacher."),
        "student": runs.load_run_model(args.run),
    }
    with safe_open(str(args.run / runs.CHECKPOINT), "pt") as f:
        prototypes = f.get_tensor("method.prototypes")
    confusions = {r: torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long) for r in RULES}
    val = target_val_images(cfg.data)
    with torch.no_grad():
        for i in range(min(args.images, len(val))):
            item = val[i]
            maps = rule_maps(nets, item["image"], prototypes, tau)
            size = next(iter(maps.values())).shape
            accumulate(confusions, maps, downsample_labels(item["label"][None], size)[0])
    for rule, c in confusions.items():
        acc, miou = scores(c)
        print(f"{rule:24s} pixel acc {acc:5.1f}   mIoU {miou:5.1f}")


if __name__ == "__main__":
    main()
