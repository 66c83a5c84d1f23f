"""Are class-region means (what DIDA's bank stores) classified as their own class? No training.

For a DIDA (or DAFormer) run's final student and EMA teacher, on source crops drawn like the run's own,
at feature resolution: every class region of every image gives one mean feature (as a bank slot); the
run's own 1x1 classifier decides its class. "region" uses all pixels of the class (the bank's rule),
"interior" drops the pixels whose 3x3 neighbourhood holds another label (``dida.bank.boundary_mask``).

    python -m scripts.bank_purity runs/bench/main/dida_s0 --batches 30
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from dida import runs
from dida.bank import boundary_mask, class_means
from dida.data.classes import IGNORE_INDEX, NUM_CLASSES
from dida.data.uda import build_uda_data
from dida.methods.dida import downsample_labels
from dida.model import SegModel
from dida.studio import classify_features
from dida.train import TrainConfig


def own_class_hits(
    model: SegModel, features: torch.Tensor, labels: torch.Tensor
) -> tuple[int, int]:
    """(class-region means classified as their class, means) over a batch; >= 4 pixels a region."""
    means, pixels = class_means(features, labels, NUM_CLASSES)  # (B, C, D), (B, C)
    present = pixels >= 4
    classes = torch.arange(NUM_CLASSES).expand_as(present)[present]
    predicted = torch.from_numpy(classify_features(model, means[present]))
    return int((predicted == classes).sum()), int(present.sum())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", type=Path)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(runs.read_json(args.run / runs.CONFIG))
    models = {
        "student": runs.load_run_model(args.run),
        "teacher": runs.load_checkpoint_model(args.run),
    }
    counts = {f"{m} {rule}": [0, 0] for m in models for rule in ("region", "interior")}
    data = build_uda_data(cfg.data, seed=args.seed)
    with torch.no_grad():
        for batch in itertools.islice(data.batches(), args.batches):
            for name, model in models.items():
                out = model(batch["source"]["image"])
                region = downsample_labels(batch["source"]["label"], out.features.shape[-2:])
                interior = region.masked_fill(boundary_mask(region), IGNORE_INDEX)
                for rule, labels in (("region", region), ("interior", interior)):
                    hits, total = own_class_hits(model, out.features, labels)
                    counts[f"{name} {rule}"][0] += hits
                    counts[f"{name} {rule}"][1] += total
    for key, (hits, total) in counts.items():
        print(f"{key:18s} {100 * hits / max(total, 1):5.1f} % of {total} class-region means")


if __name__ == "__main__":
    main()
