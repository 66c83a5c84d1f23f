"""Where a bank slot's feature came from: the source image (dataset index) and the box of the class
region in it. Pure helpers, tensor in, tensor out; the bank records their results per slot.

Shapes: B images, C classes, (H, W) label grid. A box is (x0, y0, x1, y1) with exclusive ends;
-1 everywhere means "no region" / "unknown".
"""

from __future__ import annotations

import torch
from torch import Tensor

from dida.bank.collectives import Gatherer, distributed_cat
from dida.data.classes import IGNORE_INDEX
from dida.data.pipeline import boxes_in_image


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) train IDs → (B, C) int64 pixels of each class per image (ignore dropped)."""
    batch = labels.shape[0]
    valid = labels != IGNORE_INDEX
    offsets = torch.arange(batch, device=labels.device).view(-1, *[1] * (labels.dim() - 1))
    flat = (labels.clamp_max(num_classes - 1) + num_classes * offsets)[valid]
    return torch.bincount(flat, minlength=batch * num_classes).view(batch, num_classes)


def _span(occupied: Tensor) -> tuple[Tensor, Tensor]:
    """First index and one past the last index of the True entries along the last dim."""
    as_int = occupied.int()
    return as_int.argmax(-1), occupied.shape[-1] - as_int.flip(-1).argmax(-1)


def region_boxes(labels: Tensor, num_classes: int) -> Tensor:
    """(B, H, W) train IDs → (B, C, 4) int64 bounding box (x0, y0, x1, y1) of each class region
    per image, in label-grid cells (exclusive ends); -1 where the class is absent."""
    classes = torch.arange(num_classes, device=labels.device)
    mask = labels[:, None] == classes[None, :, None, None]  # (B, C, H, W)
    rows, cols = mask.any(-1), mask.any(-2)  # (B, C, H), (B, C, W)
    (y0, y1), (x0, x1) = _span(rows), _span(cols)
    boxes = torch.stack([x0, y0, x1, y1], -1)
    return torch.where(rows.any(-1)[..., None], boxes, -1)


def scale_boxes(boxes: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """Boxes (..., 4) from label-grid cells to pixels of a grid ``scale`` times finer (-1 kept)."""
    scale = torch.tensor([scale_x, scale_y, scale_x, scale_y], device=boxes.device)
    return torch.where(boxes < 0, -1, (boxes * scale).round().long())


def per_class_boxes(boxes: Tensor | None, batch: int, num_classes: int, device) -> Tensor:
    """Source boxes as (B, C, 4) int64: given per class (B, C, 4), one per image (B, 4) for every
    class, or None (all -1: unknown)."""
    if boxes is None:
        return torch.full((batch, num_classes, 4), -1, dtype=torch.long, device=device)
    boxes = boxes.to(device).long()
    return boxes if boxes.dim() == 3 else boxes[:, None].expand(-1, num_classes, -1)


def latest_source(counts: Tensor, ids: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Per class, the last image (in batch order, ranks in rank order) holding it: counts (N, C),
    ids (N,), boxes (N, C, 4) → its id (C,) and its region box (C, 4); -1 for a class in no image."""
    holds = counts > 0
    last = holds.shape[0] - 1 - holds.int().flip(0).argmax(0)  # (C,)
    found = holds.any(0)
    classes = torch.arange(holds.shape[1], device=holds.device)
    class_ids = torch.where(found, ids[last], -1)
    return class_ids, torch.where(found[:, None], boxes[last, classes], -1)


def latest_sources(
    labels: Tensor,
    source_ids: Tensor | None,
    boxes: Tensor | None,
    num_classes: int,
    gather: Gatherer | None = None,
) -> tuple[Tensor, Tensor]:
    """``latest_source`` of the images of ``labels`` (B, H, W) gathered over ranks: per class the
    id (C,) and region box (C, 4) of the last image holding it; all -1 without ``source_ids``."""
    device, batch = labels.device, len(labels)
    if source_ids is None:
        unknown = torch.full((num_classes, 4), -1, dtype=torch.long, device=device)
        return unknown[:, 0], unknown
    boxes = per_class_boxes(None if boxes is None else boxes[:batch], batch, num_classes, device)
    gather = gather or distributed_cat
    counts = gather(class_counts(labels, num_classes))
    ids = gather(source_ids[:batch].to(device).long())
    return latest_source(counts, ids, gather(boxes))


def source_provenance(
    batch: dict[str, Tensor], labels: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Dataset index (B,) of each source crop and its class-region boxes (B, C, 4) in that raw
    image's pixels, from the batch's ``index`` and ``crop_frame`` (``dida.data.pipeline``); labels
    (B, h, w) at any resolution of the crop. -1 where the batch lacks them."""
    size, device = len(labels), labels.device
    ids = batch.get("index", torch.full((size,), -1, dtype=torch.long)).to(device).long()
    frame = batch.get("crop_frame")
    if frame is None:
        return ids, torch.full((size, num_classes, 4), -1, dtype=torch.long, device=device)
    (height, width), (h, w) = batch["image"].shape[-2:], labels.shape[-2:]
    boxes = scale_boxes(region_boxes(labels, num_classes), width / w, height / h)
    return ids, boxes_in_image(boxes, frame)
