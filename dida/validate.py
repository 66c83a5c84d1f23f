"""Run a model over a labelled dataset and accumulate segmentation metrics (the loop's evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from dida.evaluate import ConfusionMatrix, SegMetrics
from dida.inference import predict

MaskFn = Callable[[dict], np.ndarray | None]
"""Given a raw dataset item, a bool (H, W) mask of the pixels to score (None = all pixels)."""


def shard_indices(n: int, max_images: int | None, rank: int, world_size: int) -> list[int]:
    """The image indices this rank evaluates: the first ``max_images`` images, split round-robin."""
    count = n if max_images is None else min(n, max_images)
    return list(range(rank, count, world_size))


def evaluate_model(
    model: nn.Module,
    dataset: Sequence[dict],
    device: torch.device | str = "cpu",
    max_images: int | None = None,
    mask_fn: MaskFn | None = None,
    num_classes: int = 19,
) -> SegMetrics:
    """Whole-image prediction on each labelled item, compared with its train-ID label.

    ``dataset`` yields ``dida.data.pipeline.EvalImages`` items: a normalised ``image`` (3, h, w) and
    the ``label`` (H, W) at the original size, to which the logits are resized before the argmax.

    Under torch.distributed every rank scores a disjoint shard and the confusion matrices are summed,
    so all ranks return the same metrics.
    """
    masks = {"all": mask_fn}
    return evaluate_masks(model, dataset, masks, device, max_images, num_classes)["all"]


def evaluate_masks(
    model: nn.Module,
    dataset: Sequence[dict],
    masks: dict[str, MaskFn | None],
    device: torch.device | str = "cpu",
    max_images: int | None = None,
    num_classes: int = 19,
) -> dict[str, SegMetrics]:
    """As ``evaluate_model``, scoring one prediction pass on several pixel subsets at once: the
    metrics of each named mask (a mask function of None scores every labelled pixel)."""
    rank, world = _rank_world()
    matrices = {name: ConfusionMatrix(num_classes, device="cpu") for name in masks}
    was_training = model.training
    for i in shard_indices(len(dataset), max_images, rank, world):
        item = dataset[i]
        label = torch.as_tensor(item["label"], dtype=torch.int64)
        image = item["image"].unsqueeze(0).to(device)
        pred = predict(model, image, output_size=tuple(label.shape)).labels[0].cpu()
        for name, fn in masks.items():
            mask = None if fn is None else fn(item)
            matrices[name].update(pred, label, None if mask is None else torch.as_tensor(mask))
    model.train(was_training)
    return {name: m.all_reduce_().compute() for name, m in matrices.items()}


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
