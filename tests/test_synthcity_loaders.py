"""A generated SynthCity tree read through the real-dataset code paths (GTA5 and Cityscapes loaders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dida.data.classes import CITYSCAPES_TO_TRAIN, INSTANCE_CLASSES
from dida.data.datasets import CityscapesDataset, GTA5Dataset, load_class_stats, validate
from dida.data.overlap import build_overlap_index, overlap_mask
from dida.data.synthcity import synthcity_roots


def test_source_reads_as_gta5(synthcity_tiny: Path) -> None:
    source_root, _ = synthcity_roots(synthcity_tiny)
    ds = GTA5Dataset(source_root)
    assert len(ds) == 8 and validate(ds) == 8
    item = ds[0]
    raw = np.asarray(
        Image.open(source_root / "labels" / "00001.png")
    )  # palette indices = label IDs
    assert item["image"].shape == (64, 128, 3) and item["image"].dtype == np.uint8
    np.testing.assert_array_equal(item["label"], CITYSCAPES_TO_TRAIN[raw])
    assert set(np.unique(item["label"])) <= set(range(19)) | {255}


def test_target_reads_as_cityscapes_with_instances(synthcity_tiny: Path) -> None:
    _, target_root = synthcity_roots(synthcity_tiny)
    for split in ("train", "val"):
        ds = CityscapesDataset(target_root, split)
        assert len(ds) == 4 and ds.has_instances and validate(ds) == 4
    item = CityscapesDataset(target_root, "val")[0]
    inst = item["instance"]
    things = inst >= 1000
    # instance pixels carry their class: label_id * 1000 + k, consistent with the label map
    np.testing.assert_array_equal(CITYSCAPES_TO_TRAIN[inst[things] // 1000], item["label"][things])
    assert set(np.unique(item["label"][things])) <= set(INSTANCE_CLASSES)


def test_class_stats_and_overlaps_on_synthcity(synthcity_tiny: Path, tmp_path: Path) -> None:
    source_root, target_root = synthcity_roots(synthcity_tiny)
    ds = GTA5Dataset(source_root)
    stats = load_class_stats(ds, cache_dir=tmp_path)
    assert len(stats) == 8
    total = sum(int(ds[i]["label"].size - (ds[i]["label"] == 255).sum()) for i in range(len(ds)))
    assert sum(v for e in stats for k, v in e.items() if k != "file") == total
    val = CityscapesDataset(target_root, "val")
    index = build_overlap_index((val[i]["name"], val[i]["instance"]) for i in range(len(val)))
    assert len(index.images) == 4
    for entry, i in zip(index.images, range(len(val)), strict=True):
        assert entry.overlap_pixels == int(overlap_mask(val[i]["instance"], index.width).sum())
