"""SynthCity: file formats, determinism, the shift dial, overlaps, long tail, ensure_synthcity."""

from __future__ import annotations

import colorsys
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dida.data import synthcity_render as R
from dida.data.classes import (
    CITYSCAPES_INSTANCE_LABEL_IDS,
    CITYSCAPES_LABEL_IDS,
    CITYSCAPES_TO_TRAIN,
    PALETTE,
    train_to_label_ids,
)
from dida.data.synthcity import (
    GENERATOR_VERSION,
    PRESETS,
    SynthCityConfig,
    ensure_synthcity,
    generate,
    main,
    nearer,
    painter_order,
    read_manifest,
    render_image,
    synthcity_roots,
    target_name,
)
from dida.data.synthcity_objects import Footprint

TINY = PRESETS["tiny"]
VALID_LABEL_IDS = {0, *CITYSCAPES_LABEL_IDS}
CITYSCAPES_NAME = re.compile(r"^([a-z]+)_(\d{6})_(\d{6})_leftImg8bit\.png$")


def _pixels(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(TINY, tmp_path_factory.mktemp("synthcity") / "tiny", workers=1)


# ------------------------------------------------------------------------------ files and formats
def test_source_is_in_the_gta5_layout(tiny_tree: Path) -> None:
    source, _ = synthcity_roots(tiny_tree)
    images = sorted((source / "images").glob("*.png"))
    assert [p.name for p in images] == [f"{i:05d}.png" for i in range(1, TINY.n_source + 1)]
    for image in images:
        mode, rgb = _pixels(image)
        assert mode == "RGB" and rgb.shape == (TINY.height, TINY.width, 3) and rgb.dtype == np.uint8
        with Image.open(source / "labels" / image.name) as label:
            assert label.mode == "P"
            palette = np.array(label.getpalette()[:768]).reshape(256, 3)
            ids = np.asarray(label)
        assert ids.shape == (TINY.height, TINY.width) and set(np.unique(ids)) <= VALID_LABEL_IDS
        np.testing.assert_array_equal(palette[list(CITYSCAPES_LABEL_IDS)], PALETTE)


def test_target_is_in_the_cityscapes_layout(tiny_tree: Path) -> None:
    _, target = synthcity_roots(tiny_tree)
    for split, count in (("train", TINY.n_target_train), ("val", TINY.n_target_val)):
        images = sorted((target / "leftImg8bit" / split).rglob("*_leftImg8bit.png"))
        assert len(images) == count
        for image in images:
            city, seq, frame = CITYSCAPES_NAME.match(image.name).groups()
            assert image.parent.name == city and frame == "000019"
            stem = f"{target}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_"
            assert _pixels(image)[0] == "RGB"
            mode, label_ids = _pixels(Path(stem + "labelIds.png"))
            assert mode == "L" and label_ids.shape == (TINY.height, TINY.width)
            assert set(np.unique(label_ids)) <= VALID_LABEL_IDS
            mode, instance = _pixels(Path(stem + "instanceIds.png"))
            assert mode in ("I;16", "I") and instance.dtype in (np.uint16, np.int32)
            _check_instances(label_ids, instance.astype(np.int64))


def _check_instances(label_ids: np.ndarray, instance: np.ndarray) -> None:
    """Cityscapes rule: label_id * 1000 + k on instance classes, the plain label ID elsewhere."""
    things = np.isin(label_ids, CITYSCAPES_INSTANCE_LABEL_IDS)
    np.testing.assert_array_equal(instance[things] // 1000, label_ids[things])
    np.testing.assert_array_equal(instance[~things], label_ids[~things])


def test_manifest_records_config_and_counts(tiny_tree: Path) -> None:
    manifest = json.loads((tiny_tree / "synthcity.json").read_text())
    assert manifest["version"] == GENERATOR_VERSION and manifest["seed"] == 0
    assert SynthCityConfig(**manifest["config"]) == TINY
    assert manifest["counts"] == {"source": 8, "train": 4, "val": 4}
    for split in ("source", "train", "val"):
        entry = manifest["splits"][split]
        assert entry["images"] == TINY.count(split)
        area = TINY.count(split) * TINY.height * TINY.width
        assert 0.9 * area < sum(entry["class_pixels"]) <= area  # all but unlabelled clutter
        assert max(entry["class_images"]) <= TINY.count(split)


def test_files_hold_what_render_image_returns(tiny_tree: Path) -> None:
    frame = render_image(TINY, "val", 1)
    city, stem = target_name("val", 1, TINY.n_target_val)
    _, target = synthcity_roots(tiny_tree)
    np.testing.assert_array_equal(
        _pixels(target / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png")[1], frame.image
    )
    labels = _pixels(target / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png")[1]
    np.testing.assert_array_equal(labels, train_to_label_ids(frame.label))
    np.testing.assert_array_equal(CITYSCAPES_TO_TRAIN[labels], frame.label)


def test_every_instance_value_marks_pixels_of_its_class() -> None:
    frame = render_image(replace(TINY, height=128, width=256), "val", 0)
    ids = np.unique(frame.instance[frame.instance >= 1000])
    assert len(ids) >= 3, "expected several object instances in a street scene"
    label_ids = train_to_label_ids(frame.label)
    for value in ids:
        assert np.all(label_ids[frame.instance == value] == value // 1000)


def test_target_names_follow_cityscapes() -> None:
    assert target_name("val", 0, 250) == ("meshingen", "meshingen_000000_000019")
    assert target_name("val", 125, 250) == ("shaderton", "shaderton_000000_000019")
    assert target_name("val", 249, 250) == ("shaderton", "shaderton_000124_000019")
    assert target_name("train", 3, 4) == ("texelstadt", "texelstadt_000000_000019")


# ------------------------------------------------------------------------------ determinism
def test_output_is_byte_identical_across_worker_counts(tiny_tree: Path, tmp_path: Path) -> None:
    other = generate(TINY, tmp_path / "two_workers", workers=2)
    ours, theirs = _files(tiny_tree), _files(other)
    assert ours.keys() == theirs.keys() and len(ours) == 8 * 2 + 8 * 3
    assert all(ours[name] == theirs[name] for name in ours)


def test_seed_changes_the_images() -> None:
    a, b = render_image(TINY, "source", 0), render_image(replace(TINY, seed=1), "source", 0)
    assert not np.array_equal(a.label, b.label)


# ------------------------------------------------------------------------------ the shift dial
def _class_means(
    cfg: SynthCityConfig, split: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(19, 3) mean RGB in [0, 1] per class, (19,) pixel counts and (19,) image counts over n images."""
    sums, counts, images = np.zeros((19, 3)), np.zeros(19), np.zeros(19)
    for i in range(n):
        frame = render_image(cfg, split, i)
        labels, rgb = frame.label.ravel(), frame.image.reshape(-1, 3) / 255.0
        keep = labels < 19
        np.add.at(sums, labels[keep], rgb[keep])
        pixels = np.bincount(labels[keep], minlength=19)
        counts, images = counts + pixels, images + (pixels > 0)
    return sums / np.maximum(counts, 1)[:, None], counts, images


BIG = (0, 1, 2, 8, 10)  # road, sidewalk, building, vegetation, sky


def test_shift_zero_target_looks_like_source_and_shift_one_does_not() -> None:
    cfg = replace(TINY, shift=0.0)
    source = _class_means(cfg, "source", 40)[0]
    same = _class_means(cfg, "val", 40)[0]
    shifted = _class_means(replace(cfg, shift=1.0), "val", 40)[0]
    assert np.abs(source[list(BIG)] - same[list(BIG)]).max() < 0.06
    assert (np.abs(source[list(BIG)] - shifted[list(BIG)]).max(axis=1) > 0.1).sum() >= 3


def test_parts_switched_off_equal_shift_zero() -> None:
    off = render_image(
        replace(TINY, shift=1.0, appearance=False, camera=False, geometry=False), "val", 2
    )
    zero = render_image(replace(TINY, shift=0.0), "val", 2)
    np.testing.assert_array_equal(off.image, zero.image)
    np.testing.assert_array_equal(off.label, zero.label)


@pytest.mark.parametrize("part", ["appearance", "camera", "geometry"])
def test_each_part_changes_what_it_should(part: str) -> None:
    only = {name: name == part for name in ("appearance", "camera", "geometry")}
    shifted = render_image(replace(TINY, shift=1.0, **only), "val", 2)
    zero = render_image(replace(TINY, shift=0.0), "val", 2)
    assert not np.array_equal(shifted.image, zero.image)
    assert np.array_equal(shifted.label, zero.label) == (part != "geometry")


def test_blend_interpolates_every_field() -> None:
    a = R.Style()
    b = R.Style(
        R.Appearance(brightness=0.5, hue=(10.0,) * 19), R.Optics(noise=0.2), R.Geometry(person=5.0)
    )
    mid = R.blend(a, b, 0.5, 0.5, 0.0)
    assert mid.appearance.brightness == pytest.approx(0.75) and mid.appearance.hue[
        3
    ] == pytest.approx(5.0)
    assert mid.optics.noise == pytest.approx(0.1) and mid.geometry == a.geometry
    assert R.blend(a, b, 1.0, 1.0, 1.0) == b


def test_hsv_to_rgb_matches_colorsys() -> None:
    hsv = np.random.default_rng(0).uniform(0, 1, (50, 3)) * [360, 1, 1]
    expected = [colorsys.hsv_to_rgb(h / 360, s, v) for h, s, v in hsv]
    np.testing.assert_allclose(R.hsv_to_rgb(hsv), expected, atol=1e-9)


# ------------------------------------------------------------------------------ content
def _touching(instance: np.ndarray, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether a pixel of label-ID group ``a`` is 4-adjacent to one of group ``b`` (via instance maps)."""
    cls = instance // 1000
    in_a, in_b = np.isin(cls, a), np.isin(cls, b)
    right = (in_a[:, :-1] & in_b[:, 1:]) | (in_b[:, :-1] & in_a[:, 1:])
    down = (in_a[:-1] & in_b[1:]) | (in_b[:-1] & in_a[1:])
    return bool(right.any() or down.any())


def test_people_overlap_vehicles_and_riders_sit_on_two_wheelers() -> None:
    cfg = replace(TINY, height=128, width=256, shift=1.0)
    frames = [render_image(cfg, "val", i) for i in range(12)]
    assert any(_touching(f.instance, (24,), (26, 28)) for f in frames), (
        "no person touches a car or bus"
    )
    assert any(_touching(f.instance, (25,), (32, 33)) for f in frames), (
        "no rider touches a two-wheeler"
    )


def test_source_is_long_tailed_and_target_has_more_people() -> None:
    cfg = replace(TINY, shift=1.0)
    _, source, images = _class_means(cfg, "source", 40)
    _, target, _ = _class_means(cfg, "val", 40)
    share = source / source.sum()
    assert (
        share[[6, 12, 17, 18]].max() < 0.005
    )  # traffic light, rider, motorcycle, bicycle: rare by pixels
    assert images[16] < 0.2 * 40  # train: rare by images
    assert share[[0, 2, 10]].min() > 0.1  # road, building, sky dominate
    assert target[11] / target.sum() > 2 * share[11]  # person
    assert target[18] / target.sum() > 2 * share[18]  # bicycle


# ------------------------------------------------------------------------------ painter's order
def test_nearer_uses_a_separating_line() -> None:
    bus = Footprint(2.0, 4.5, 10.0, 22.0)
    person_on_the_road = Footprint(1.0, 1.4, 14.0, 14.4)
    person_behind = Footprint(5.0, 5.4, 14.0, 14.4)
    assert nearer(person_on_the_road, bus) and not nearer(bus, person_on_the_road)
    assert nearer(bus, person_behind)
    left = Footprint(-4.0, -2.0, 10.0, 14.0)
    assert nearer(left, Footprint(-6.0, -5.0, 12.0, 13.0))
    assert nearer(Footprint(-1.0, 1.0, 8.0, 12.0), Footprint(-1.0, 1.0, 20.0, 24.0))


def test_painter_order_draws_hidden_objects_first() -> None:
    bus = Footprint(2.0, 4.5, 10.0, 40.0)  # a tram: its far end is seen left of the person
    person = Footprint(
        1.0, 1.4, 14.0, 14.4
    )  # between the camera and the bus, but deeper than its rear
    far_left = Footprint(-3.0, -2.0, 30.0, 31.0)
    for footprints in ([person, bus, far_left], [bus, far_left, person]):
        order = [footprints[i] for i in painter_order(footprints)]
        assert order.index(bus) < order.index(person) and len(order) == 3


# ------------------------------------------------------------------------------ ensure / config / CLI
def test_ensure_generates_only_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "sc"
    ensure_synthcity(root, preset="tiny", splits=("val",))
    source, target = synthcity_roots(root)
    assert not source.exists() and len(list((target / "leftImg8bit/val").rglob("*.png"))) == 4
    first = next((target / "leftImg8bit/val").rglob("*.png"))
    first.write_bytes(b"kept")  # a re-used split is not rewritten
    assert ensure_synthcity(root, preset="tiny", splits=("val", "source")) == root
    assert first.read_bytes() == b"kept" and len(list((source / "images").glob("*.png"))) == 8
    assert set(read_manifest(root)["splits"]) == {"val", "source"}


def test_ensure_refuses_a_tree_of_another_config(tmp_path: Path) -> None:
    ensure_synthcity(tmp_path, preset="tiny", splits=("val",))
    with pytest.raises(ValueError, match=r"different config.*shift.*python -m dida.data.synthcity"):
        ensure_synthcity(tmp_path, preset="tiny", splits=("val",), shift=0.2)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "target").mkdir()
    with pytest.raises(ValueError, match="no synthcity.json"):
        ensure_synthcity(tmp_path / "other", preset="tiny")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("shift", -0.1),
        ("shift", 1.5),
        ("height", 100),
        ("width", 0),
        ("n_source", -1),
        ("seed", -2),
        ("n_target_val", 2.5),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SynthCityConfig(**{field: value})


def test_unknown_preset_and_split_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny"):
        ensure_synthcity(tmp_path, preset="huge")
    with pytest.raises(ValueError, match="source"):
        generate(TINY, tmp_path, splits=("test",))


def test_cli_writes_the_requested_splits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--out", str(tmp_path), "--preset", "tiny", "--n-source", "2", "--n-val", "1"]
    main([*args, "--workers", "1", "--splits", "source,val", "--shift", "0.3", "--no-camera"])
    manifest = read_manifest(tmp_path)
    assert manifest["config"]["shift"] == 0.3 and manifest["config"]["camera"] is False
    assert set(manifest["splits"]) == {"source", "val"} and "3 images" in capsys.readouterr().out
    assert len(list((tmp_path / "source/images").glob("*.png"))) == 2
