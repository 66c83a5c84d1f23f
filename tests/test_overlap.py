"""Overlapping entities on a hand-drawn instance map: golden instances, pairs (person–person included),
masks, index round-trip and version."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dida.data.classes import CITYSCAPES_TO_TRAIN, INSTANCE_CLASSES
from dida.data.overlap import (
    OVERLAP_INDEX_FILE,
    OVERLAP_INDEX_VERSION,
    POLE_CLASSES,
    OverlapIndex,
    build_overlap_index,
    images_with_overlap,
    instances,
    overlap_mask,
    overlap_pairs,
)

# Cityscapes label IDs: building 11, road 7, pole 17, traffic sign 20, person 24, rider 25, car 26,
# caravan 29 (instances but no train ID), bicycle 33.
GROUP, PERSON, RIDER, CAR, FAR_CAR, BICYCLE = 24, 24000, 25000, 26000, 26001, 33000


def _scene() -> np.ndarray:
    """10 x 12 street: a person in front of a car, a rider on a bicycle, a far car, a person group."""
    m = np.full((10, 12), 11, dtype=np.int32)  # building
    m[5:] = 7  # road
    m[3:7, 1:6] = CAR  # rows 3-6, cols 1-5
    m[2:8, 3] = PERSON  # painted in front of the car: splits it at column 3
    m[1:4, 9] = RIDER
    m[4:6, 8:11] = BICYCLE  # under the rider
    m[8:10, 10:12] = FAR_CAR  # 3 rows below the bicycle
    m[7:10, 0:2] = GROUP  # "person group": a plain label ID, touches the car's corner
    m[8:10, 3:5] = 29000  # a caravan touching the person: no train ID, never an entity
    m[0:5, 7] = 17  # pole, touching the bicycle
    m[0:2, 6] = 20  # traffic sign on the pole
    return m


def _pairs(instance_map: np.ndarray, **kwargs) -> list[tuple[int, int, int]]:
    return [(p.a.value, p.b.value, p.contact_pixels) for p in overlap_pairs(instance_map, **kwargs)]


def test_instances_golden() -> None:
    found = [(i.value, i.train_id, i.pixels, i.bbox, i.is_region) for i in instances(_scene())]
    assert found == [
        (GROUP, 11, 6, (0, 7, 2, 10), True),
        (PERSON, 11, 6, (3, 2, 4, 8), False),
        (RIDER, 12, 3, (9, 1, 10, 4), False),
        (CAR, 13, 16, (1, 3, 6, 7), False),
        (FAR_CAR, 13, 4, (10, 8, 12, 10), False),
        (BICYCLE, 18, 6, (8, 4, 11, 6), False),
    ]


def test_pairs_golden_touch_1() -> None:
    pairs = overlap_pairs(_scene())
    assert [p.classes for p in pairs] == [
        ("person", "car"),
        ("person", "car"),
        ("rider", "bicycle"),
    ]
    # group: 2 own + 2 car pixels; person: all 6 + car columns 2 and 4 (8); rider 1 + bicycle row 4 (3)
    assert _pairs(_scene()) == [(GROUP, CAR, 4), (PERSON, CAR, 14), (RIDER, BICYCLE, 4)]


def test_touch_distance_semantics() -> None:
    # 2 apart, the person group and the person touch (person–person): group column 1 rows 7-9 (3)
    # + person rows 5-7 (3)
    assert _pairs(_scene(), touch=2) == [
        (GROUP, PERSON, 6),
        (GROUP, CAR, 8),
        (PERSON, CAR, 22),
        (RIDER, BICYCLE, 8),
    ]
    # 3 apart: car column 5 / bicycle column 8 and bicycle row 5 / far car row 8 now touch
    far = [(a, b) for a, b, _ in _pairs(_scene(), touch=3)]
    assert far == [
        (GROUP, PERSON),
        (GROUP, CAR),
        (PERSON, CAR),
        (RIDER, BICYCLE),
        (CAR, BICYCLE),
        (FAR_CAR, BICYCLE),
    ]
    assert (FAR_CAR, BICYCLE, 5) in _pairs(_scene(), touch=3)  # bicycle row 5 (3) + car row 8 (2)
    with pytest.raises(ValueError, match="must be >= 1"):
        overlap_pairs(_scene(), touch=0)


def test_pole_classes_add_sign_and_pole_pairs() -> None:
    pairs = _pairs(_scene(), classes=INSTANCE_CLASSES + POLE_CLASSES)
    assert (17, 20, 5) in pairs  # sign: 2 pixels, pole rows 0-2: 3 pixels
    assert (17, BICYCLE, 4) in pairs  # pole rows 3-4, bicycle column 8 rows 4-5
    assert len(pairs) == 5


def test_overlap_mask_golden_width_1() -> None:
    expected = np.zeros((10, 12), dtype=bool)
    expected[2:8, 3] = True  # the person
    expected[3:7, [2, 4]] = True  # car columns beside the person
    expected[6, 1] = expected[7, 0] = expected[7, 1] = True  # car corner and group top row
    expected[3, 9] = True  # rider's feet
    expected[4, 8:11] = True  # bicycle top row
    np.testing.assert_array_equal(overlap_mask(_scene(), 1), expected)


def _brute_force(scene: np.ndarray, width: int) -> tuple[np.ndarray, dict[tuple[int, int], int]]:
    """Per-pixel reference: the overlap mask and {(value a, value b): contact pixels}."""
    label_ids = np.where(scene >= 1000, scene // 1000, scene)
    cls = CITYSCAPES_TO_TRAIN[label_ids].astype(int)
    cls[~np.isin(cls, INSTANCE_CLASSES)] = -1
    mask, contacts = np.zeros(scene.shape, dtype=bool), {}
    for (y, x), c in np.ndenumerate(cls):
        window = (slice(max(0, y - width), y + width + 1), slice(max(0, x - width), x + width + 1))
        near = scene[window][cls[window] >= 0]
        mask[y, x] = c >= 0 and bool((cls[window][cls[window] >= 0] != c).any())
        others = {int(v) for v in near if v != scene[y, x]}  # any other entity pairs
        for v in others if c >= 0 else ():
            key = tuple(sorted((int(scene[y, x]), v), key=lambda u: (cls[scene == u][0], u)))
            contacts[key] = contacts.get(key, 0) + 1
    return mask, contacts


def _random_scene(seed: int) -> np.ndarray:
    """Random rectangles of person / rider / car / bicycle instances, groups and caravans over road."""
    rng = np.random.default_rng(seed)
    scene = np.full((14, 18), 7, dtype=np.int32)
    for k in range(9):
        y, x, h, w = (
            rng.integers(0, 12),
            rng.integers(0, 16),
            rng.integers(1, 6),
            rng.integers(1, 6),
        )
        label = rng.choice([24, 25, 26, 33, 29])
        scene[y : y + h, x : x + w] = label if k == 8 else label * 1000 + k
    return scene


@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_scenes(width: int, seed: int) -> None:
    scene = _scene() if seed == 0 else _random_scene(seed)
    mask, contacts = _brute_force(scene, width)
    np.testing.assert_array_equal(overlap_mask(scene, width), mask)
    got = {(p.a.value, p.b.value): p.contact_pixels for p in overlap_pairs(scene, touch=width)}
    assert got == contacts
    assert len(contacts) > 0


def test_no_things_no_pairs() -> None:
    stuff = np.full((6, 7), 7, dtype=np.int32)
    stuff[:3] = 11
    stuff[2:4, 2:4] = 24  # a lone person group touching only stuff
    assert overlap_pairs(stuff, touch=2) == []
    assert not overlap_mask(stuff, 2).any()
    assert instances(np.full((1, 1), 11, dtype=np.int32)) == []
    assert overlap_pairs(np.full((1, 1), CAR, dtype=np.int32)) == []


PERSON_2, PERSON_3 = 24001, 24002


def _crowd() -> np.ndarray:
    """6 x 9 street: three people in a row (the middle one occludes both), the third in front of a car;
    two adjacent cars; a lone person far away."""
    m = np.full((6, 9), 7, dtype=np.int32)
    m[0:3, 0], m[0:3, 1], m[0:3, 2] = PERSON, PERSON_2, PERSON_3
    m[0:3, 3:5] = CAR
    m[5, 0:2], m[5, 2:4] = 26002, 26003  # two cars side by side
    m[5, 8] = 24003  # a lone person
    return m


def test_same_class_instances_pair_person_person() -> None:
    pairs = overlap_pairs(_crowd())
    assert [p.classes for p in pairs] == [
        ("person", "person"),
        ("person", "person"),
        ("person", "car"),
        ("car", "car"),
    ]
    # each person column has 3 pixels, all within 1 of the next column; cars 26002/26003 share 1 + 1
    assert _pairs(_crowd()) == [
        (PERSON, PERSON_2, 6),
        (PERSON_2, PERSON_3, 6),
        (PERSON_3, CAR, 6),
        (26002, 26003, 2),
    ]
    # the band marks only where the semantic label changes: person 3 and the car's first column
    expected = np.zeros((6, 9), dtype=bool)
    expected[0:3, 2:4] = True
    np.testing.assert_array_equal(overlap_mask(_crowd(), 1), expected)


def test_index_counts_person_person_pairs(tmp_path) -> None:
    index = build_overlap_index([("crowd", _crowd()), ("street", _scene())], touch=1, width=1)
    assert index.images[0].pairs == {
        ("person", "person"): 2,
        ("person", "car"): 1,
        ("car", "car"): 1,
    }
    assert index.images[0].overlap_pixels == 6
    assert images_with_overlap(index, ("person",)) == ["crowd"]
    assert index.version == OVERLAP_INDEX_VERSION == 2
    assert OverlapIndex.load(index.save(tmp_path / OVERLAP_INDEX_FILE)) == index


def test_index_without_version_loads_as_version_1(tmp_path) -> None:
    path = tmp_path / OVERLAP_INDEX_FILE
    data = {"touch": 1, "width": 3, "classes": [11], "images": []}
    path.write_text(json.dumps(data))
    assert OverlapIndex.load(path).version == 1


def test_integer_dtypes_agree_and_bad_maps_raise() -> None:
    assert _pairs(_scene().astype(np.uint16)) == _pairs(_scene())
    with pytest.raises(ValueError, match=r"\[-1\]"):
        overlap_pairs(np.full((2, 2), -1, dtype=np.int32))
    with pytest.raises(ValueError, match="integer"):
        overlap_pairs(_scene().astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        overlap_mask(np.stack([_scene()] * 3, -1), 1)
    with pytest.raises(ValueError, match="unknown class"):
        overlap_pairs(_scene(), classes=("pedestrian",))


def test_index_round_trip_and_filters(tmp_path) -> None:
    stuff = np.full((4, 4), 7, dtype=np.int32)
    index = build_overlap_index([("street", _scene()), ("empty", stuff)], touch=1, width=1)
    street = index.images[0]
    assert street.pairs == {("person", "car"): 2, ("rider", "bicycle"): 1}
    assert street.overlap_pixels == 21 and index.images[1].overlap_pixels == 0
    path = index.save(tmp_path / OVERLAP_INDEX_FILE)
    assert OverlapIndex.load(path) == index
    assert images_with_overlap(index) == ["street"]
    assert images_with_overlap(index, ("rider", "bicycle", "motorcycle")) == ["street"]
    assert images_with_overlap(index, ("car", 18)) == []
    wide = build_overlap_index([("street", _scene())], touch=3, width=1)
    assert images_with_overlap(wide, ("car", 18)) == ["street"]


def test_bad_inputs_name_the_image_or_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="image 'broken'"):
        build_overlap_index([("broken", np.full((2, 2), -5, dtype=np.int32))])
    bad = tmp_path / OVERLAP_INDEX_FILE
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match=f"{bad}.*rebuild"):
        OverlapIndex.load(bad)
