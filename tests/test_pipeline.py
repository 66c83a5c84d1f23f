"""Training crops, evaluation images, normalisation and the deterministic per-rank batch stream."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dida.data.datasets import GTA5Dataset, load_class_stats
from dida.data.pipeline import (
    CropConfig,
    Draw,
    EvalImages,
    TrainCrops,
    boxes_in_image,
    choose_box,
    crop_accepted,
    cut,
    denormalize,
    draw_stream,
    infinite_batches,
    normalize,
    resize_arrays,
)
from dida.data.sampling import RareClassSampler, RCSConfig


class _Arrays:
    """A raw dataset held in memory (the loaders' item contract without files)."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    @property
    def has_labels(self) -> bool:
        return "label" in self.items[0]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return {
            k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.items[index].items()
        }


def _coded_item(h: int, w: int, seed: int) -> dict:
    """Image channels encode (label * 10, column * 4, row * 4); instance = label * 1000 + column."""
    label = np.random.default_rng(seed).integers(0, 19, (h, w)).astype(np.uint8)
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([label.astype(int) * 10, cols * 4, rows * 4], axis=-1).astype(np.uint8)
    instance = (label.astype(np.int32) * 1000 + cols).astype(np.int32)
    return {"image": image, "label": label, "instance": instance, "name": f"{seed}"}


# ---------------------------------------------------------------------------------------------
# normalize / denormalize


def test_normalize_golden_values_and_layouts() -> None:
    image = np.array([[[0, 255, 128], [10, 20, 30]]], dtype=np.uint8)  # (1, 2, 3)
    x = normalize(image)
    assert x.dtype == torch.float32 and x.shape == (3, 1, 2)
    expected = [[[-2.1179039, -1.9466564]], [[2.4285714, -1.6855742]], [[0.4264924, -1.2815686]]]
    torch.testing.assert_close(x, torch.tensor(expected), rtol=0, atol=1e-6)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)  # (2, 3, 1, 2)
    torch.testing.assert_close(normalize(batch), x[None].repeat(2, 1, 1, 1))


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.float32), torch.zeros(2, 4, 4, 4, dtype=torch.uint8), [1, 2, 3]]
)
def test_normalize_rejects_bad_input(bad) -> None:
    with pytest.raises(ValueError, match="normalize expects uint8 RGB"):
        normalize(bad)


def test_normalize_denormalize_round_trip() -> None:
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    assert torch.equal(denormalize(normalize(images)), images)
    array = images[0].permute(1, 2, 0).numpy()
    assert torch.equal(denormalize(normalize(array)), images[0])
    assert denormalize(torch.full((3, 1, 1), 100.0)).tolist() == [[[255]], [[255]], [[255]]]


# ---------------------------------------------------------------------------------------------
# Resize and crop pieces


@pytest.mark.parametrize(
    ("config", "size", "expected"),
    [
        (CropConfig(resize=(1280, 720)), (1052, 1914), (704, 1280)),
        (CropConfig(resize=(1280, 760)), (760, 1280), (760, 1280)),
        (CropConfig(resize=(1024, 512)), (1024, 2048), (512, 1024)),
        (CropConfig(resize=None, ratio=0.5), (25, 32), (13, 16)),
        (CropConfig(resize=None), (25, 32), (25, 32)),
    ],
)
def test_target_size_fits_keeping_aspect(config: CropConfig, size, expected) -> None:
    assert config.target_size(*size) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 0.5}, "set resize or ratio, not both"),
        ({"cat_max_ratio": 0.0}, r"cat_max_ratio must be in \(0, 1\]"),
        ({"crop": (0, 512)}, "crop must be a positive"),
        ({"flip_p": 2.0}, "flip_p must be in"),
    ],
)
def test_crop_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CropConfig(**kwargs)


def test_crop_accepted_golden_cases() -> None:
    label = np.zeros((4, 4), np.uint8)
    assert not crop_accepted(label, 0.75)
    label.ravel()[:4] = 1  # 12 / 16 = 0.75, not < 0.75
    assert not crop_accepted(label, 0.75)
    label.ravel()[4] = 1  # 11 / 16
    assert crop_accepted(label, 0.75)
    ignored = np.full((4, 4), 255, np.uint8)
    ignored[0, :2] = (3, 5)  # ignore is not a class: 1 / 2 each
    assert crop_accepted(ignored, 0.75)


def _stripes() -> dict:
    """64x64 label: columns < 48 class 0, the rest class 1; 7 of 49 crop columns are accepted."""
    label = np.zeros((64, 64), np.uint8)
    label[:, 48:] = 1
    return {"image": np.zeros((64, 64, 3), np.uint8), "label": label}


def test_cat_max_ratio_is_respected() -> None:
    arrays, crop = _stripes(), (16, 16)
    config = CropConfig(resize=None, crop=crop, cat_max_tries=200)
    boxes = [choose_box(np.random.default_rng(s), arrays, config) for s in range(50)]
    assert all(crop_accepted(cut(arrays["label"], b, crop), 0.75) for b in boxes)
    unchecked = CropConfig(resize=None, crop=crop, cat_max_ratio=1.0)
    free = [choose_box(np.random.default_rng(s), arrays, unchecked) for s in range(50)]
    assert sum(crop_accepted(cut(arrays["label"], b, crop), 0.75) for b in free) < 20
    no_retry = CropConfig(resize=None, crop=crop, cat_max_tries=0)
    assert [choose_box(np.random.default_rng(s), arrays, no_retry) for s in range(50)] == free


def test_resize_uses_nearest_for_labels() -> None:
    item = _coded_item(20, 30, seed=0)
    out = resize_arrays({k: item[k] for k in ("image", "label", "instance")}, (7, 11))
    assert out["image"].shape == (7, 11, 3) and out["label"].shape == (7, 11)
    assert out["label"].dtype == np.uint8 and out["instance"].dtype == np.int32
    assert set(np.unique(out["label"])) <= set(np.unique(item["label"]))
    np.testing.assert_array_equal(out["instance"] // 1000, out["label"])


# ---------------------------------------------------------------------------------------------
# TrainCrops


def _flipped(image: torch.Tensor) -> bool:
    cols = denormalize(image)[1].to(torch.int64)  # column * 4
    return bool((cols[:, 1:] < cols[:, :-1]).all())


def test_crops_keep_image_label_and_instance_aligned_under_flips() -> None:
    crops = TrainCrops(
        _Arrays([_coded_item(24, 32, seed=s) for s in range(3)]),
        CropConfig(resize=None, crop=(16, 16), cat_max_ratio=1.0),
    )
    flips = []
    for key in range(40):
        item = crops[Draw(key % 3, (5, key))]
        assert item["image"].shape == (3, 16, 16) and item["label"].dtype == torch.int64
        image = denormalize(item["image"]).to(torch.int64)
        assert torch.equal(image[0], item["label"] * 10)
        assert torch.equal(item["instance"] // 1000, item["label"])
        assert torch.equal(item["instance"] % 1000, image[1] // 4)
        flips.append(_flipped(item["image"]))
    assert 5 < sum(flips) < 35


@pytest.mark.parametrize(("flip_p", "expected"), [(0.0, False), (1.0, True)])
def test_flip_probability_extremes(flip_p: float, expected: bool) -> None:
    config = CropConfig(resize=None, crop=(16, 16), cat_max_ratio=1.0, flip_p=flip_p)
    crops = TrainCrops(_Arrays([_coded_item(24, 32, seed=0)]), config)
    assert all(_flipped(crops[Draw(0, (k,))]["image"]) == expected for k in range(10))


def test_small_images_are_resized_then_padded() -> None:
    config = CropConfig(resize=None, ratio=0.5, crop=(16, 16), cat_max_ratio=1.0)
    item = TrainCrops(_Arrays([_coded_item(20, 24, seed=1)]), config)[0]  # -> 10 x 12, padded
    assert item["image"].shape == (3, 16, 16)
    assert (item["label"][10:] == 255).all() and (item["label"][:, 12:] == 255).all()
    assert (item["label"][:10, :12] < 19).all()
    assert (item["image"][:, 10:] == 0).all() and (item["instance"][10:] == 0).all()
    assert (item["image"][:, :, 12:] == 0).all() and (item["instance"][:, 12:] == 0).all()


@pytest.mark.parametrize("ratio", [None, 0.5])
def test_crop_frame_maps_a_crop_box_onto_the_raw_item(ratio: float | None) -> None:
    """The coded image says which raw column / row each crop pixel shows (channels 1 and 2)."""
    config = CropConfig(resize=None, ratio=ratio, crop=(8, 8), cat_max_ratio=1.0)
    crops = TrainCrops(_Arrays([_coded_item(24, 32, seed=0)]), config)
    flips = set()
    for key in range(16):
        item = crops[Draw(0, (key,))]
        raw = boxes_in_image(
            torch.tensor([[[2, 1, 5, 7], [-1, -1, -1, -1]]]), item["crop_frame"][None]
        )
        image = denormalize(item["image"]).long() // 4
        cols, rows = image[1, 1:7, 2:5], image[2, 1:7, 2:5]  # crop rows 1-6, columns 2-4
        x0, y0, x1, y1 = raw[0, 0].tolist()
        if ratio is None:  # no resize: the box is exact
            assert [x0, y0, x1, y1] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert x0 <= cols.min() and cols.max() < x1 and y0 <= rows.min() and rows.max() < y1
        assert raw[0, 1].tolist() == [-1, -1, -1, -1]
        flips.add(bool(item["crop_frame"][0] < 0))
    assert flips == {False, True}


def test_int_key_is_a_fixed_draw() -> None:
    crops = TrainCrops(_Arrays([_coded_item(24, 32, seed=0)]), CropConfig(resize=None, crop=(8, 8)))
    assert torch.equal(crops[0]["image"], crops[Draw(0, (0,))]["image"])


def test_unlabelled_dataset_needs_cat_max_ratio_one() -> None:
    unlabelled = _Arrays([{"image": np.zeros((8, 8, 3), np.uint8), "name": "x"}])
    with pytest.raises(ValueError, match="cat_max_ratio=1.0"):
        TrainCrops(unlabelled, CropConfig())
    item = TrainCrops(unlabelled, CropConfig(resize=None, crop=(4, 4), cat_max_ratio=1.0))[0]
    assert set(item) == {"image", "index", "crop_frame"} and int(item["index"]) == 0


def _rare_tree(root: Path) -> GTA5Dataset:
    """Four 32x32 GTA5 images of road; image 2 also holds a 10x10 bicycle (label ID 33)."""
    for i in range(4):
        label = np.full((32, 32), 7, np.uint8)
        if i == 2:
            label[18:28, 4:14] = 33
        for folder, array in (("images", np.zeros((32, 32, 3), np.uint8)), ("labels", label)):
            (root / folder).mkdir(exist_ok=True)
            Image.fromarray(array).save(root / folder / f"{i:05d}.png")
    return GTA5Dataset(root)


def test_rare_class_sampling_picks_and_recrops_the_rare_class(tmp_path: Path) -> None:
    dataset = _rare_tree(tmp_path)
    config = RCSConfig(
        min_pixels_fraction=0.05, max_recrops=60
    )  # 51 px of 32x32; crops need > 25.5
    sampler = RareClassSampler(load_class_stats(dataset), dataset.label_files, config, 32 * 32)
    assert sampler.min_pixels == 51 and sampler.files == {0: [0, 1, 2, 3], 18: [2]}
    crop_config = CropConfig(resize=None, crop=(16, 16), cat_max_ratio=1.0)
    with_rcs = TrainCrops(dataset, crop_config, sampler)
    without = TrainCrops(dataset, crop_config)
    bicycle = [int((with_rcs[Draw(0, (k,))]["label"] == 18).sum()) for k in range(20)]
    assert all(n > 25 for n in bicycle)
    assert sum(int((without[Draw(2, (k,))]["label"] == 18).sum()) > 25 for k in range(20)) < 18


# ---------------------------------------------------------------------------------------------
# EvalImages and the batch stream


def test_eval_images_resize_image_but_keep_label_size() -> None:
    item = EvalImages(_Arrays([_coded_item(48, 64, seed=0)]), resize=(32, 24))[0]
    assert item["image"].shape == (3, 24, 32) and item["label"].shape == (48, 64)
    assert item["size"].tolist() == [48, 64] and item["name"] == "0"
    assert item["label"].dtype == torch.int64


def test_draw_stream_partitions_each_epoch_between_ranks() -> None:
    streams = [
        list(itertools.islice(draw_stream(10, seed=3, rank=r, world_size=3), 8)) for r in range(3)
    ]
    first_epoch = [d.index for stream in streams for d in stream[:4]]
    assert set(first_epoch) == set(range(10)) and len(first_epoch) == 12
    assert streams[1][5].seed == (3, 1, 5)
    assert [d.index for d in streams[0][4:]] != [d.index for d in streams[0][:4]]
    with pytest.raises(ValueError, match="rank < world_size"):
        next(draw_stream(10, seed=0, rank=2, world_size=2))


@pytest.mark.parametrize("start", [0, 3, 4, 9, 13])
def test_a_stream_from_draw_n_is_the_uninterrupted_streams_tail(start: int) -> None:
    for rank in (0, 1):  # 9 items on 2 ranks: 5 draws per rank and epoch
        whole = list(itertools.islice(draw_stream(9, seed=5, rank=rank, world_size=2), 30))
        tail = draw_stream(9, seed=5, rank=rank, world_size=2, start=start)
        tail = list(itertools.islice(tail, 10))
        assert tail == whole[start : start + 10] and tail[0].seed == (5, rank, start)


def _batches(crops: TrainCrops, n: int, **kwargs) -> list[dict]:
    return list(itertools.islice(infinite_batches(crops, batch_size=2, **kwargs), n))


def test_infinite_batches_are_reproducible_and_differ_between_ranks() -> None:
    crops = TrainCrops(
        _Arrays([_coded_item(24, 32, seed=s) for s in range(5)]),
        CropConfig(resize=None, crop=(16, 16)),
    )
    first = _batches(crops, 4, seed=0)
    assert first[0]["image"].shape == (2, 3, 16, 16) and first[0]["label"].shape == (2, 16, 16)
    again = _batches(crops, 4, seed=0, workers=1)
    other_rank = _batches(crops, 4, seed=0, rank=1, world_size=2)
    other_seed = _batches(crops, 4, seed=1)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not any(
        torch.equal(a["label"], b["label"]) for a, b in zip(first, other_rank, strict=True)
    )
    assert not any(
        torch.equal(a["label"], b["label"]) for a, b in zip(first, other_seed, strict=True)
    )
