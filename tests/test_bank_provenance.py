"""Slot provenance: every bank write records the source image's dataset index and the box of the
class region in that image's pixels — online fills, momentum updates (paper and released: the
latest contributing image), a precomputed bank, over fake ranks — and old histories still load."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dida import bank as B
from dida.methods.base import MethodContext
from dida.methods.registry import build_method
from dida.model import ModelConfig, SegModel

NONE = [-1, -1, -1, -1]
CROP = (64, 64)
FRAMES = torch.tensor([[1.0, 100.0, 1.0, 50.0], [-2.0, 142.0, 2.0, 6.0]])
"""Image 0: the crop at (x 100, y 50), unflipped; image 1: a flipped crop of an image resized by 1/2."""
IDS = torch.tensor([7, 3])
# Class-region boxes of ``crop_labels`` in the raw images (x0, y0, x1, y1):
BOX_5_IMAGE_0 = [116, 58, 140, 74]  # crop x 16-40, y 8-24, shifted by (100, 50)
BOX_11_IMAGE_0 = [100, 90, 116, 106]  # crop x 0-16, y 40-56
BOX_5_IMAGE_1 = [14, 70, 78, 102]  # crop x 32-64 → 142 - 2x; y 32-48 → 2y + 6
BOX_11_IMAGE_1 = [110, 6, 142, 38]  # crop x 0-16 → 142 - 2x; y 0-16 → 2y + 6


def crop_labels(eleven: tuple[int, ...] = (0,)) -> torch.Tensor:
    """(2, 64, 64): class 5 in both crops, class 11 in the crops ``eleven``."""
    labels = torch.full((2, *CROP), 255)
    labels[0, 8:24, 16:40], labels[1, 32:48, 32:64] = 5, 5
    if 0 in eleven:
        labels[0, 40:56, 0:16] = 11
    if 1 in eleven:
        labels[1, 0:16, 0:16] = 11
    return labels


def source_batch(labels: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    image = torch.randn(2, 3, *CROP, generator=torch.Generator().manual_seed(seed))
    return {"image": image, "label": labels, "index": IDS, "crop_frame": FRAMES}


# --- pure helpers ------------------------------------------------------------------------------


def test_region_boxes_golden_and_absent_classes() -> None:
    labels = torch.full((1, 4, 6), 255)
    labels[0, 1:3, 2:5] = 0
    labels[0, 0, 0], labels[0, 3, 5] = 2, 2  # two corners: the box spans the whole image
    boxes = B.region_boxes(labels, 3)
    assert boxes.tolist() == [[[2, 1, 5, 3], NONE, [0, 0, 6, 4]]]
    assert B.class_counts(labels, 3).tolist() == [[6, 0, 2]]


def test_source_provenance_maps_region_boxes_through_the_crop_frames() -> None:
    ids, boxes = B.source_provenance(source_batch(crop_labels()), crop_labels(), 19)
    assert ids.tolist() == [7, 3]
    assert boxes[0, 5].tolist() == BOX_5_IMAGE_0 and boxes[0, 11].tolist() == BOX_11_IMAGE_0
    assert boxes[1, 5].tolist() == BOX_5_IMAGE_1 and boxes[1, 11].tolist() == NONE
    quarter = torch.nn.functional.interpolate(crop_labels()[:, None].float(), size=(16, 16))
    _, coarse = B.source_provenance(source_batch(crop_labels()), quarter[:, 0].long(), 19)
    assert torch.equal(coarse, boxes)  # 4-pixel aligned regions: the same boxes at 1/4
    ids, unknown = B.source_provenance({"image": torch.zeros(2, 3, 8, 8)}, crop_labels(), 19)
    assert ids.tolist() == [-1, -1] and (unknown == -1).all()


# --- the bank ----------------------------------------------------------------------------------


def two_class_bank(per_class: int = 2) -> B.InstanceBank:
    return B.InstanceBank(torch.tensor([5] * per_class + [11] * per_class), dim=3)


def provenance(bank: B.InstanceBank) -> list[tuple[int, list[int]]]:
    return list(zip(bank.source_ids.tolist(), bank.boxes.tolist(), strict=True))


def test_fill_records_each_slots_image_and_region_box() -> None:
    labels = crop_labels()
    ids, boxes = B.source_provenance(source_batch(labels), labels, 19)
    bank = two_class_bank()
    bank.fill(torch.rand(2, 3, *CROP), labels, 0, ids, boxes)
    assert provenance(bank) == [
        (7, BOX_5_IMAGE_0), (3, BOX_5_IMAGE_1), (7, BOX_11_IMAGE_0), (-1, NONE),
    ]  # fmt: skip


def test_paper_update_records_the_latest_image_holding_the_class() -> None:
    labels = crop_labels(eleven=(0, 1))
    ids, boxes = B.source_provenance(source_batch(labels), labels, 19)
    bank = two_class_bank()
    bank.fill(torch.rand(2, 3, *CROP), labels, 0, ids, boxes)
    only_5 = crop_labels()  # class 11 now only in image 0, class 5 in both
    ids, boxes = torch.tensor([20, 21]), B.source_provenance(source_batch(only_5), only_5, 19)[1]
    cfg = B.BankUpdateConfig(mode="paper", stride=2)
    changed = bank.update(torch.rand(2, 3, *CROP), only_5, 9, cfg, source_ids=ids, boxes=boxes)
    assert changed.tolist() == [0, 1, 2, 3] and bank.ages.tolist() == [9] * 4
    assert provenance(bank) == [
        (21, BOX_5_IMAGE_1), (21, BOX_5_IMAGE_1), (20, BOX_11_IMAGE_0), (20, BOX_11_IMAGE_0),
    ]  # fmt: skip


def test_released_update_uses_image_0_and_absent_classes_keep_their_source() -> None:
    labels = crop_labels(eleven=(0, 1))
    ids, boxes = B.source_provenance(source_batch(labels), labels, 19)
    bank = two_class_bank()
    bank.fill(torch.rand(2, 3, *CROP), labels, 0, ids, boxes)
    no_11 = crop_labels(eleven=())  # image 0 holds class 5 only (image 1 is not used)
    ids, boxes = torch.tensor([30, 31]), B.source_provenance(source_batch(no_11), no_11, 19)[1]
    cfg = B.BankUpdateConfig(mode="released")
    changed = bank.update(torch.rand(2, 3, *CROP), no_11, 9, cfg, source_ids=ids, boxes=boxes)
    assert changed.tolist() == [0, 1, 2, 3]  # absent class 11 is pulled toward 0, keeps its source
    assert provenance(bank) == [
        (30, BOX_5_IMAGE_0), (30, BOX_5_IMAGE_0), (7, BOX_11_IMAGE_0), (3, BOX_11_IMAGE_1),
    ]  # fmt: skip


def test_update_without_source_ids_records_unknown() -> None:
    labels = crop_labels()
    ids, boxes = B.source_provenance(source_batch(labels), labels, 19)
    bank = two_class_bank()
    bank.fill(torch.rand(2, 3, *CROP), labels, 0, ids, boxes)
    bank.update(torch.rand(2, 3, *CROP), labels, 5, B.BankUpdateConfig(mode="paper"))
    assert bank.source_ids.tolist() == [-1, -1, -1, -1] and (bank.boxes == -1).all()


def test_update_over_ranks_takes_the_last_rank_holding_the_class() -> None:
    """Rank 1 holds class 5 in its image 0 (id 40); the fake gatherer appends rank 1's tensors."""
    labels = crop_labels()
    rank1_boxes = torch.full((1, 19, 4), -1)
    rank1_boxes[0, 5] = torch.tensor([1, 2, 3, 4])
    rank1 = {1: torch.tensor([40]), 2: torch.zeros(1, 19, dtype=torch.long), 3: rank1_boxes}
    rank1[2][0, 5] = 10  # pixels of class 5 on rank 1

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor, rank1[tensor.dim()].to(tensor)])

    ids, boxes = B.source_provenance(source_batch(labels), labels, 19)
    bank = two_class_bank()
    bank.fill(torch.rand(2, 3, *CROP), labels, 0, ids, boxes)
    cfg = B.BankUpdateConfig(mode="released")
    bank.update(torch.rand(2, 3, *CROP), labels, 9, cfg, reducer=lambda t: t, source_ids=ids,
                boxes=boxes, gather=gather)  # fmt: skip
    assert provenance(bank)[:3] == [(40, [1, 2, 3, 4]), (40, [1, 2, 3, 4]), (7, BOX_11_IMAGE_0)]


def test_precomputed_slots_record_their_images_and_boxes() -> None:
    bank = two_class_bank()
    ids = torch.tensor([7, 3, 7, 7])
    boxes = torch.tensor([BOX_5_IMAGE_0, BOX_5_IMAGE_1, BOX_11_IMAGE_0, BOX_11_IMAGE_0])
    bank.load_slots(torch.rand(4, 3), torch.tensor([True, True, True, False]), ids, 0, boxes)
    assert provenance(bank) == [
        (7, BOX_5_IMAGE_0), (3, BOX_5_IMAGE_1), (7, BOX_11_IMAGE_0), (-1, NONE),
    ]  # fmt: skip


def test_old_history_and_checkpoint_without_boxes_load(tmp_path) -> None:
    bank = two_class_bank()
    old = dataclasses.replace(bank.snapshot(0), boxes=None)  # as saved before provenance
    history = B.BankHistory()
    history.append(old)
    history.save(tmp_path / "bank_history.safetensors")
    loaded = B.BankHistory.load(tmp_path / "bank_history.safetensors")
    assert loaded[0].boxes is None and loaded[0].source_ids.tolist() == [-1] * 4
    assert (B.InstanceBank.from_snapshot(loaded[0]).boxes == -1).all()
    state = {k: v for k, v in bank.state_dict().items() if k != "boxes"}
    restored = two_class_bank()
    restored.boxes[:] = 5
    restored.load_state_dict(state)
    assert restored.boxes.shape == (4, 4) and (restored.boxes == -1).all()


# --- through DIDA's step -----------------------------------------------------------------------


def dida(**options) -> object:
    """DIDA on a bank of classes 5 and 11 only, so two batches fill it: slots 0, 1 hold class 11
    (the rarer, first in DIDA's rare-class order), slots 2, 3 class 5."""
    torch.manual_seed(0)
    model = SegModel(ModelConfig(backbone="mit_b0", embed_dim=32, drop_path_rate=0.0))
    pixels = tuple(100 if c in (5, 11) else 0 for c in range(19))
    ctx = MethodContext(crop=CROP, max_iters=10, source_class_pixels=pixels)
    return build_method("dida", model, ctx, {"bank_size": 4, "update_interval": 1, **options})


def step(method, labels: torch.Tensor, it: int) -> None:
    target = {"image": torch.randn(2, 3, *CROP), "label": torch.full((2, *CROP), 255)}
    method.step({"source": source_batch(labels, it), "target": target}, it)


@pytest.mark.parametrize("resolution", ["feature", "label"])
def test_dida_online_fill_then_update_record_provenance(resolution: str) -> None:
    method = dida(slot_resolution=resolution)
    step(method, crop_labels(), 0)
    assert provenance(method.bank) == [
        (7, BOX_11_IMAGE_0), (-1, NONE), (7, BOX_5_IMAGE_0), (3, BOX_5_IMAGE_1),
    ]  # fmt: skip
    step(method, crop_labels(eleven=(1,)), 1)  # fills the last free slot: image 1's class 11
    assert provenance(method.bank)[1] == (3, BOX_11_IMAGE_1)
    step(method, crop_labels(), 2)  # the bank is full: a paper momentum update
    snap = method.records(2)["bank"]
    assert snap.changed.all() and snap.source_ids.tolist() == [7, 7, 3, 3]
    assert snap.boxes.tolist() == [BOX_11_IMAGE_0, BOX_11_IMAGE_0, BOX_5_IMAGE_1, BOX_5_IMAGE_1]


def test_dida_precomputed_bank_and_released_update_record_provenance() -> None:
    method = dida(mode="released", bank_init_images=2, update_interval=2)
    step(method, crop_labels(), 1)  # two images collected: the bank is written at once
    assert provenance(method.bank) == [  # class 11 is in image 0 only: both its slots reuse it
        (7, BOX_11_IMAGE_0), (7, BOX_11_IMAGE_0), (7, BOX_5_IMAGE_0), (3, BOX_5_IMAGE_1),
    ]  # fmt: skip
    step(method, crop_labels()[[1, 0]], 2)  # released update: image 0 only (no class 11)
    assert method.bank.source_ids.tolist() == [7, 7, 7, 7]  # the batch's ids are (7, 3)
    assert method.bank.boxes[:2].tolist() == [BOX_11_IMAGE_0] * 2  # kept: not from image 1
    assert method.bank.boxes[2:].tolist() == [[132, 82, 164, 98]] * 2  # crop 1's class 5, frame 0
