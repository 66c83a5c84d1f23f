"""Raw dataset loaders on tiny GTA5, Cityscapes and SYNTHIA trees, and the class statistics."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.json2instanceImg import json2instanceImg
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

from dida.data import datasets as ds
from dida.data.datasets import (
    CityscapesDataset,
    DatasetError,
    GTA5Dataset,
    SynthiaDataset,
    build_dataset,
    class_image_counts,
    class_pixel_totals,
    file_class_counts,
    load_class_stats,
    read_first_channel,
    validate,
)

H, W = 24, 32

# Independent of dida.data.classes: cityscapesscripts' table and METHOD.md §8.1's SYNTHIA column.
CS_TRAIN = {i: (255 if lab.trainId in (-1, 255) else lab.trainId) for i, lab in id2label.items()}
SYNTHIA_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11,
                 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}  # fmt: skip


def _map(values: np.ndarray, table: dict[int, int]) -> np.ndarray:
    return np.vectorize(lambda v: table.get(int(v), 255))(values).astype(np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def _rgb(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _write_png16(path: Path, array: np.ndarray) -> Path:
    """Independent 16-bit RGB(A) PNG encoder cycling through all five row filters."""
    h, w, channels = array.shape
    rows = array.astype(">u2").view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp, prev, raw = 2 * channels, np.zeros(rows.shape[1], np.int32), b""
    for y, row in enumerate(rows):
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        pred = [0 * row, left, prev, (left + prev) // 2, _paeth(left, prev, up_left)][y % 5]
        raw += bytes([y % 5]) + ((row - pred) % 256).astype(np.uint8).tobytes()
        prev = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


def _gta5(root: Path, n: int = 3, converted: bool = False, seed: int = 0) -> list[np.ndarray]:
    """A GTA5 tree with 'P'-mode label-ID PNGs (and train-ID files when ``converted``)."""
    rng, ids = np.random.default_rng(seed), []
    for i in range(n):
        _save(root / "images" / f"{i + 1:05d}.png", _rgb(rng))
        label_ids = rng.choice([0, 1, 7, 8, 9, 11, 17, 26, 33], size=(H, W)).astype(np.uint8)
        (root / "labels").mkdir(exist_ok=True)
        Image.fromarray(label_ids, "L").convert("P").save(root / "labels" / f"{i + 1:05d}.png")
        if converted:
            _save(root / "labels" / f"{i + 1:05d}_labelTrainIds.png", _map(label_ids, CS_TRAIN))
        ids.append(label_ids)
    return ids


# ---------------------------------------------------------------------------------------------
# GTA5


def test_gta5_palette_label_ids_map_to_train_ids(tmp_path: Path) -> None:
    label_ids = _gta5(tmp_path)
    assert Image.open(tmp_path / "labels" / "00001.png").mode == "P"
    dataset = GTA5Dataset(tmp_path)
    assert len(dataset) == 3 and dataset.label_format.name == "Cityscapes label IDs"
    item = dataset[1]
    assert item["name"] == "00002" and item["image"].dtype == np.uint8
    assert item["image"].shape == (H, W, 3) and "instance" not in item
    np.testing.assert_array_equal(item["label"], _map(label_ids[1], CS_TRAIN))
    assert set(np.unique(item["label"])) == {255, 0, 1, 2, 5, 13, 18}


def test_gta5_prefers_converted_labels_only_when_complete(tmp_path: Path) -> None:
    label_ids = _gta5(tmp_path, converted=True)
    dataset = GTA5Dataset(tmp_path)
    assert dataset.label_format.name == "train IDs"
    assert dataset.label_files[0].name == "00001_labelTrainIds.png"
    np.testing.assert_array_equal(dataset[0]["label"], _map(label_ids[0], CS_TRAIN))
    (tmp_path / "labels" / "00002_labelTrainIds.png").unlink()
    partial = GTA5Dataset(tmp_path)
    assert partial.label_format.name == "Cityscapes label IDs"
    assert [p.name for p in partial.label_files] == ["00001.png", "00002.png", "00003.png"]


def test_gta5_rejects_a_split(tmp_path: Path) -> None:
    _gta5(tmp_path, n=1)
    with pytest.raises(DatasetError, match="no 'val' split"):
        GTA5Dataset(tmp_path, split="val")


# ---------------------------------------------------------------------------------------------
# Cityscapes, labels made by cityscapesscripts from polygons

POLYGONS = {
    "imgHeight": H,
    "imgWidth": W,
    "objects": [
        {"label": "road", "polygon": [[0, 12], [31, 12], [31, 23], [0, 23]]},
        {"label": "sky", "polygon": [[0, 0], [31, 0], [31, 6], [0, 6]]},
        {"label": "building", "polygon": [[0, 5], [15, 5], [15, 12], [0, 12]]},
        {"label": "guard rail", "polygon": [[16, 7], [31, 7], [31, 11], [16, 11]]},
        {"label": "car", "polygon": [[2, 14], [9, 14], [9, 20], [2, 20]]},
        {"label": "car", "polygon": [[12, 15], [18, 15], [18, 21], [12, 21]]},
        {"label": "person", "polygon": [[22, 10], [25, 10], [25, 20], [22, 20]]},
        {"label": "bicycle", "polygon": [[26, 16], [30, 13], [30, 21]]},
    ],
}


def _cityscapes(root: Path, encoding: str, city: str = "aachen", n: int = 2) -> Path:
    """A Cityscapes tree whose labels and instance maps are drawn by cityscapesscripts."""
    rng = np.random.default_rng(1)
    suffix = {"ids": "labelIds", "trainIds": "labelTrainIds"}[encoding]
    for i in range(n):
        stem = f"{city}_{i:06d}_000019"
        _save(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", _rgb(rng))
        gt = root / "gtFine" / "train" / city
        gt.mkdir(parents=True, exist_ok=True)
        polygons = gt / f"{stem}_gtFine_polygons.json"
        polygons.write_text(json.dumps(POLYGONS))
        json2labelImg(str(polygons), str(gt / f"{stem}_gtFine_{suffix}.png"), encoding)
        json2instanceImg(str(polygons), str(gt / f"{stem}_gtFine_instanceIds.png"), "ids")
    return root


def test_cityscapes_label_ids_and_train_ids_agree_pixel_by_pixel(tmp_path: Path) -> None:
    from_ids = CityscapesDataset(_cityscapes(tmp_path / "a", "ids"))
    from_train = CityscapesDataset(_cityscapes(tmp_path / "b", "trainIds"))
    assert from_ids.label_format.name == "Cityscapes label IDs"
    assert from_train.label_format.name == "train IDs"
    gt = tmp_path / "a" / "gtFine" / "train" / "aachen"
    raw_ids = np.asarray(Image.open(gt / "aachen_000000_000019_gtFine_labelIds.png"))
    a, b = from_ids[0], from_train[0]
    assert a["name"] == "aachen_000000_000019"
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["label"], _map(raw_ids, CS_TRAIN))
    assert {0, 2, 10, 11, 13, 18, 255} == set(np.unique(a["label"]))


def test_cityscapes_instance_maps(tmp_path: Path) -> None:
    item = CityscapesDataset(_cityscapes(tmp_path, "ids"))[0]
    instance = item["instance"]
    assert instance.dtype == np.int32 and instance.shape == (H, W)
    assert sorted(v for v in np.unique(instance) if v >= 1000) == [24000, 26000, 26001, 33000]
    class_ids = np.where(instance >= 1000, instance // 1000, instance)
    np.testing.assert_array_equal(_map(class_ids, CS_TRAIN), item["label"])
    assert instance[17, 5] == 26000 and instance[18, 15] == 26001


def test_cityscapes_unlabelled_images_and_splits(tmp_path: Path) -> None:
    _cityscapes(tmp_path, "ids")
    for label in (tmp_path / "gtFine").rglob("*_labelIds.png"):
        label.unlink()
    with pytest.raises(DatasetError, match="_gtFine_labelIds.png"):
        CityscapesDataset(tmp_path)
    unlabelled = CityscapesDataset(tmp_path, require_labels=False)
    assert not unlabelled.has_labels and "label" not in unlabelled[0]
    assert unlabelled.has_instances
    with pytest.raises(DatasetError, match=r"no split 'val'; found \['train'\]"):
        CityscapesDataset(tmp_path, split="val")


def test_cityscapes_partial_instance_maps_are_an_error(tmp_path: Path) -> None:
    _cityscapes(tmp_path, "ids")
    missing = next((tmp_path / "gtFine").rglob("aachen_000001_000019_gtFine_instanceIds.png"))
    missing.unlink()
    with pytest.raises(DatasetError, match=str(missing)):
        CityscapesDataset(tmp_path)


# ---------------------------------------------------------------------------------------------
# SYNTHIA: 16-bit multi-channel labels


@pytest.mark.parametrize("channels", [3, 4])
def test_read_first_channel_decodes_16_bit_samples_exactly(tmp_path: Path, channels: int) -> None:
    values = np.random.default_rng(2).integers(0, 65536, (9, 11, channels)).astype(np.uint16)
    path = _write_png16(tmp_path / "x.png", values)
    np.testing.assert_array_equal(read_first_channel(path), values[..., 0])


def _synthia(root: Path, n: int = 2) -> list[np.ndarray]:
    rng, ids = np.random.default_rng(3), []
    for i in range(n):
        _save(root / "RGB" / f"{i:07d}.png", _rgb(rng))
        class_ids = rng.choice([0, 1, 2, 3, 8, 10, 12, 13, 21, 22], size=(H, W)).astype(np.uint16)
        noise = rng.integers(0, 65536, (H, W, 2)).astype(np.uint16)
        _write_png16(root / "GT" / "LABELS" / f"{i:07d}.png", np.dstack([class_ids, noise]))
        ids.append(class_ids)
    return ids


def test_synthia_16_bit_labels_map_to_train_ids(tmp_path: Path) -> None:
    class_ids = _synthia(tmp_path)
    dataset = SynthiaDataset(tmp_path)
    assert dataset.label_format.name == "SYNTHIA label IDs"
    item = dataset[1]
    assert item["name"] == "0000001"
    np.testing.assert_array_equal(item["label"], _map(class_ids[1], SYNTHIA_TRAIN))
    assert set(np.unique(item["label"])) == {255, 10, 2, 0, 13, 11, 17, 3}


def test_synthia_converted_labels(tmp_path: Path) -> None:
    class_ids = _synthia(tmp_path)
    for i, ids in enumerate(class_ids):
        _save(tmp_path / "GT" / "LABELS" / f"{i:07d}_labelTrainIds.png", _map(ids, SYNTHIA_TRAIN))
    dataset = build_dataset("synthia", tmp_path)
    assert dataset.label_format.name == "train IDs"
    np.testing.assert_array_equal(dataset[0]["label"], _map(class_ids[0], SYNTHIA_TRAIN))


def test_synthia_8_bit_grey_label_is_a_wrong_mode(tmp_path: Path) -> None:
    _synthia(tmp_path, n=1)
    label = _save(tmp_path / "GT" / "LABELS" / "0000000.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match=f"{label}: label has PIL mode 'L'"):
        SynthiaDataset(tmp_path)[0]


# ---------------------------------------------------------------------------------------------
# Bad inputs: every error names the file


def test_unknown_kind_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['cityscapes', 'gta5', 'synthia'\]"):
        build_dataset("kitti", tmp_path)


def test_missing_and_empty_folders_name_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="folder not found; expected the GTA5 layout"):
        GTA5Dataset(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(
        DatasetError, match=r"images: no files matching '\*.png'; expected the GTA5"
    ):
        GTA5Dataset(tmp_path)
    (tmp_path / "RGB").mkdir()
    with pytest.raises(DatasetError, match="expected the SYNTHIA layout"):
        SynthiaDataset(tmp_path)


def test_missing_label_names_image_and_expected_paths(tmp_path: Path) -> None:
    _gta5(tmp_path)
    (tmp_path / "labels" / "00002.png").unlink()
    with pytest.raises(DatasetError) as err:
        GTA5Dataset(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "images" / "00002.png") in message
    assert str(tmp_path / "labels" / "00002_labelTrainIds.png") in message
    assert str(tmp_path / "labels" / "00002.png") in message


def test_half_converted_labels_are_an_error(tmp_path: Path) -> None:
    _gta5(tmp_path, converted=True)
    (tmp_path / "labels" / "00001_labelTrainIds.png").unlink()
    (tmp_path / "labels" / "00002.png").unlink()
    with pytest.raises(DatasetError, match="no label variant is complete"):
        GTA5Dataset(tmp_path)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    _gta5(tmp_path)
    image = tmp_path / "images" / "00003.png"
    image.write_bytes(image.read_bytes()[:200])
    dataset = GTA5Dataset(tmp_path)
    with pytest.raises(DatasetError, match=f"{image}: cannot decode image"):
        dataset[2]


def test_wrong_label_mode_names_the_file(tmp_path: Path) -> None:
    _gta5(tmp_path)
    label = _save(tmp_path / "labels" / "00001.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(DatasetError, match=f"{label}: label has PIL mode 'RGB'"):
        GTA5Dataset(tmp_path)[0]


def test_unknown_label_id_names_file_and_valid_values(tmp_path: Path) -> None:
    _gta5(tmp_path)
    label_ids = np.full((H, W), 7, np.uint8)
    label_ids[3, 4] = 200
    label = _save(tmp_path / "labels" / "00002.png", label_ids)
    with pytest.raises(DatasetError, match=rf"{label}: unexpected label values \[200\].*0-33"):
        GTA5Dataset(tmp_path)[1]


def test_train_id_file_with_label_ids_is_rejected(tmp_path: Path) -> None:
    _gta5(tmp_path, converted=True)
    label = _save(tmp_path / "labels" / "00001_labelTrainIds.png", np.full((H, W), 26, np.uint8))
    with pytest.raises(DatasetError, match=rf"{label}: unexpected label values \[26\].*0-18, 255"):
        GTA5Dataset(tmp_path)[0]


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    _gta5(tmp_path)
    label = _save(tmp_path / "labels" / "00001.png", np.full((H, W + 1), 7, np.uint8))
    with pytest.raises(DatasetError, match=f"{label}: label is 33x24 but its image .*00001.png"):
        GTA5Dataset(tmp_path)[0]


def test_validate_collects_every_problem(tmp_path: Path) -> None:
    _gta5(tmp_path, n=4)
    _save(tmp_path / "labels" / "00001.png", np.full((H, W), 99, np.uint8))
    bad_image = tmp_path / "images" / "00003.png"
    bad_image.write_bytes(bad_image.read_bytes()[:100])
    seen = []
    with pytest.raises(DatasetError, match="2 of 4 items are bad") as err:
        validate(GTA5Dataset(tmp_path), progress=lambda done, total: seen.append((done, total)))
    assert "00001.png" in str(err.value) and str(bad_image) in str(err.value)
    assert seen[-1] == (4, 4) and len(seen) == 4


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _gta5(tmp_path)
    assert ds.main(["check", "--kind", "gta5", "--root", str(tmp_path)]) == 0
    assert "OK: 3 items" in capsys.readouterr().out
    _save(tmp_path / "labels" / "00003.png", np.zeros((H, W, 3), np.uint8))
    assert ds.main(["check", "--kind", "gta5", "--root", str(tmp_path)]) == 1
    assert "00003.png: label has PIL mode 'RGB'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Class statistics


def test_class_stats_format_and_totals(tmp_path: Path) -> None:
    label_ids = _gta5(tmp_path)
    stats = load_class_stats(GTA5Dataset(tmp_path))
    expected = []
    for i, ids in enumerate(label_ids):
        train = _map(ids, CS_TRAIN)
        entry = {str(c): int((train == c).sum()) for c in range(19) if (train == c).any()}
        expected.append({**entry, "file": f"labels/{i + 1:05d}.png"})
    assert stats == expected
    assert json.loads((tmp_path / "sample_class_stats.json").read_text()) == expected
    by_file = json.loads((tmp_path / "sample_class_stats_dict.json").read_text())
    assert by_file["labels/00002.png"] == {k: v for k, v in expected[1].items() if k != "file"}
    with_class = json.loads((tmp_path / "samples_with_class.json").read_text())
    assert with_class["13"] == [[e["file"], e["13"]] for e in expected]
    totals = class_pixel_totals(stats)
    all_train = _map(np.stack(label_ids), CS_TRAIN)
    np.testing.assert_array_equal(totals, np.bincount(all_train.ravel(), minlength=256)[:19])
    images = np.zeros(19, np.int64)
    images[[0, 1, 2, 5, 13, 18]] = 3
    np.testing.assert_array_equal(class_image_counts(stats), images)


def test_class_stats_are_cached_and_recomputed_when_files_change(
    tmp_path: Path, monkeypatch
) -> None:
    _gta5(tmp_path)
    first = load_class_stats(GTA5Dataset(tmp_path))
    calls = []
    original = ds.compute_class_stats
    monkeypatch.setattr(ds, "compute_class_stats", lambda *a: calls.append(1) or original(*a))
    assert load_class_stats(GTA5Dataset(tmp_path)) == first and calls == []
    _gta5(tmp_path, n=4, seed=5)
    second = load_class_stats(GTA5Dataset(tmp_path))
    assert calls == [1] and len(second) == 4 and second[0] != first[0]
    on_disk = json.loads((tmp_path / "sample_class_stats.json").read_text())
    assert [e["file"] for e in on_disk] == [f"labels/{i:05d}.png" for i in range(1, 5)]


def test_class_stats_fall_back_to_cache_dir_when_data_is_read_only(
    tmp_path: Path, monkeypatch
) -> None:
    root, cache = tmp_path / "gta", tmp_path / "cache"
    _gta5(root)
    original = ds.write_class_stats

    def refuse_root(stats, folder: Path) -> None:
        if folder == root:
            raise PermissionError(13, "Permission denied", str(folder))
        original(stats, folder)

    monkeypatch.setattr(ds, "write_class_stats", refuse_root)
    with pytest.raises(DatasetError, match="pass a writable cache_dir"):
        load_class_stats(GTA5Dataset(root))
    stats = load_class_stats(GTA5Dataset(root), cache_dir=cache)
    folder = ds.stats_cache_folder(root, cache)
    assert json.loads((folder / "sample_class_stats.json").read_text()) == stats
    assert not (root / "sample_class_stats.json").exists()
    monkeypatch.setattr(ds, "compute_class_stats", lambda *a: pytest.fail("recomputed"))
    assert load_class_stats(GTA5Dataset(root), cache_dir=cache) == stats


def test_file_class_counts_ignores_ignore_pixels() -> None:
    label = np.array([[0, 0, 255], [18, 3, 255]], np.uint8)
    assert file_class_counts(label) == {"0": 2, "3": 1, "18": 1}


def test_cityscapes_splits_keep_their_own_class_stats(
    synthcity_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dida.data.datasets as D

    target = synthcity_tiny / "target"
    train, val = (
        D.build_dataset("cityscapes", target, "train"),
        D.build_dataset("cityscapes", target, "val"),
    )
    calls = []
    compute = D.compute_class_stats
    monkeypatch.setattr(
        D, "compute_class_stats", lambda ds, p=None: calls.append(ds) or compute(ds, p)
    )
    first = (D.load_class_stats(train), D.load_class_stats(val))
    computed = len(calls)
    again = (D.load_class_stats(train), D.load_class_stats(val))
    assert len(calls) == computed <= 2 and first == again  # the second round reads both caches
    assert (target / "gtFine" / "val" / D.STATS_FILE).is_file()
    assert len(first[1]) == len(val) and len(first[0]) == len(train)
