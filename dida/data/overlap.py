"""Overlapping entities: thing instances that touch in Cityscapes-style instance maps.

An instance map (``*_gtFine_instanceIds.png``, SynthCity's copy of that format) is an int32 (H, W) array:
pixels of an annotated instance hold ``label_id * 1000 + k`` (k >= 0); every other pixel holds its plain
Cityscapes label ID (< 1000).  A plain ID of an instance class ("person group", "car group": a crowd the
annotators could not split) is kept as one *region* entity of its class without instance index; so is the
whole region of a class without instance annotations (pole, traffic light, traffic sign) when such classes are
asked for.  Label IDs map to train IDs with ``classes.CITYSCAPES_TO_TRAIN``; caravan and trailer have
instances but no train ID and are never entities.

Painter's-order occlusion (a person in front of a car, a rider on a bicycle) leaves the two masks adjacent, so
"overlapping" means: within ``touch`` pixels (Chebyshev distance) of each other.  Pairs are any two
different entities, of two classes (person–car) or of one class (person–person: two people occluding each
other); the overlap *band* (``overlap_mask``, the overlap IoU) is where entities of different classes meet,
i.e. where the semantic label changes.  Everything is computed with shifted-array comparisons over the
(2 touch + 1)^2 offsets, no per-pixel Python loops.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from dida.data.classes import CITYSCAPES_TO_TRAIN, CLASSES, INSTANCE_CLASSES, class_index

POLE_CLASSES: tuple[int, ...] = (5, 6, 7)
"""Pole, traffic light, traffic sign: add to ``classes`` to also find signs on poles (and things at poles)."""
OVERLAP_INDEX_VERSION = 2
"""Version of what an ``OverlapIndex`` records; 2 added same-class pairs (person–person). A saved index of
another version is stale: rebuild it (files without a version are version 1)."""
OVERLAP_INDEX_FILE = "overlap_index.json"
"""Default file name of a saved ``OverlapIndex``, kept next to the data like the class statistics."""
NO_INSTANCES = "unavailable: this dataset has no instanceIds"
"""The overlap state of a dataset without ``*_gtFine_instanceIds.png`` maps (what the views show)."""


@dataclass(frozen=True)
class Instance:
    """One entity of an instance map: an annotated instance or a region without instance index."""

    value: int
    """Its value in the instance map (label_id * 1000 + k, or the plain label ID for a region)."""
    train_id: int
    """Train ID of its class."""
    pixels: int
    """Number of pixels."""
    bbox: tuple[int, int, int, int]
    """Bounding box (x0, y0, x1, y1), half-open: x0 <= x < x1, y0 <= y < y1."""

    @property
    def is_region(self) -> bool:
        """True for a group or whole-class region (no instance index)."""
        return self.value < 1000

    @property
    def name(self) -> str:
        """Class name."""
        return CLASSES[self.train_id]


@dataclass(frozen=True)
class OverlapPair:
    """Two touching entities (of two classes, or two instances of one class), ordered by (train ID, value)."""

    a: Instance
    """The entity first in (train ID, value) order."""
    b: Instance
    """The entity second in (train ID, value) order."""
    contact_pixels: int
    """Pixels of a within ``touch`` of b plus pixels of b within ``touch`` of a."""

    @property
    def classes(self) -> tuple[str, str]:
        """The two class names, e.g. ("person", "car")."""
        return self.a.name, self.b.name


def _check_map(instance_map: np.ndarray) -> np.ndarray:
    """The map as an int64 (H, W) array; raises on a wrong shape, dtype or value."""
    m = np.asarray(instance_map)
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(
            f"instance map must be an integer (H, W) array, got {m.dtype} {m.shape}; "
            "read *_instanceIds.png with PIL and np.asarray (no RGB conversion)"
        )
    m = m.astype(np.int64)
    label_ids = np.where(m >= 1000, m // 1000, m)
    bad = (m < 0) | (label_ids >= len(CITYSCAPES_TO_TRAIN))
    if bad.any():
        raise ValueError(
            f"instance map holds values that are not label_id*1000+k or a label ID: "
            f"{np.unique(m[bad])[:5].tolist()}; is this a Cityscapes-style *_instanceIds.png?"
        )
    return m


def _entities(
    instance_map: np.ndarray, classes: Sequence[int | str]
) -> tuple[np.ndarray, list[Instance]]:
    """Entity index map (H, W) (-1 off entities) and the entities, sorted by (train ID, value)."""
    m = _check_map(instance_map)
    wanted = [class_index(c) for c in classes]
    values, inverse = np.unique(m, return_inverse=True)
    train_ids = CITYSCAPES_TO_TRAIN[np.where(values >= 1000, values // 1000, values)].astype(
        np.int64
    )
    chosen = np.flatnonzero(np.isin(train_ids, wanted))
    chosen = chosen[np.lexsort((values[chosen], train_ids[chosen]))]
    remap = np.full(len(values), -1, dtype=np.int64)
    remap[chosen] = np.arange(len(chosen))
    index = remap[inverse.reshape(m.shape)]  # (H, W)
    pixels = np.bincount(index[index >= 0], minlength=len(chosen))
    boxes = ndimage.find_objects(index + 1, max_label=len(chosen))
    entities = [
        Instance(
            int(values[v]),
            int(train_ids[v]),
            int(n),
            (b[1].start, b[0].start, b[1].stop, b[0].stop),
        )
        for v, n, b in zip(chosen, pixels, boxes, strict=True)
    ]
    return index, entities


def instances(
    instance_map: np.ndarray, classes: Sequence[int | str] = INSTANCE_CLASSES
) -> list[Instance]:
    """The entities of ``classes`` in an instance map, sorted by (train ID, value)."""
    return _entities(instance_map, classes)[1]


def _span(d: int) -> tuple[slice, slice]:
    """Slices (source, neighbour) of one axis pairing each position i with i + d inside the axis."""
    return slice(max(0, -d), -d if d > 0 else None), slice(max(0, d), d if d < 0 else None)


def _contacts(
    index: np.ndarray, entities: list[Instance], touch: int, same_class: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (pixel, other) pairs: flat index of an entity pixel that has a pixel of entity ``other``
    within ``touch`` pixels (Chebyshev); ``other`` of another class, or with ``same_class`` any other
    entity (another instance of the pixel's own class included)."""
    if touch < 1:
        raise ValueError(f"touch / width must be >= 1 pixel, got {touch}")
    train_of = np.array([e.train_id for e in entities] + [-1], dtype=np.int64)
    cls = index if same_class else train_of[index]  # (H, W) entity or train ID, -1 off entities
    flat = np.arange(index.size).reshape(index.shape)
    pixels, others = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    reach_y, reach_x = (min(touch, size - 1) for size in index.shape)
    for dy in range(-reach_y, reach_y + 1):
        for dx in range(-reach_x, reach_x + 1):
            (sy, ny), (sx, nx) = _span(dy), _span(dx)
            here, there = cls[sy, sx], cls[ny, nx]
            hit = (here >= 0) & (there >= 0) & (here != there)  # the zero offset never hits
            pixels.append(flat[sy, sx][hit])
            others.append(index[ny, nx][hit])
    n = max(len(entities), 1)
    codes = np.unique(np.concatenate(pixels) * n + np.concatenate(others))
    return codes // n, codes % n


def overlap_pairs(
    instance_map: np.ndarray, touch: int = 1, classes: Sequence[int | str] = INSTANCE_CLASSES
) -> list[OverlapPair]:
    """Pairs of different entities of ``classes`` within ``touch`` pixels of each other (1 = adjacent,
    8-neighbourhood), with their contact pixel counts; sorted by (a, b). Two instances of one class
    (person–person) pair too, and so does a group region with an instance of its class."""
    index, entities = _entities(instance_map, classes)
    pixels, others = _contacts(index, entities, touch, same_class=True)
    owners = index.ravel()[pixels]
    n = len(entities)
    keys, counts = np.unique(
        np.minimum(owners, others) * n + np.maximum(owners, others), return_counts=True
    )
    return [
        OverlapPair(entities[k // n], entities[k % n], int(c))
        for k, c in zip(keys, counts, strict=True)
    ]


def overlap_mask(
    instance_map: np.ndarray, width: int, classes: Sequence[int | str] = INSTANCE_CLASSES
) -> np.ndarray:
    """Bool (H, W): entity pixels within ``width`` pixels of an entity of another class.

    The band on both sides of every contact line between different-class entities, ``width`` pixels deep
    (background pixels are never marked); the union of the contact pixels of the different-class pairs of
    ``overlap_pairs(touch=width)``. Same-class contacts (person–person) are not in it: the semantic label
    does not change there.
    """
    index, entities = _entities(instance_map, classes)
    mask = np.zeros(index.size, dtype=bool)
    mask[_contacts(index, entities, width)[0]] = True
    return mask.reshape(index.shape)


@dataclass(frozen=True)
class ImageOverlap:
    """The overlap summary of one image."""

    name: str
    """Image name (as the dataset reports it)."""
    pairs: dict[tuple[str, str], int]
    """Number of touching entity pairs per class-name pair, e.g. {("person", "car"): 2} or
    {("person", "person"): 1}."""
    overlap_pixels: int
    """Pixels of ``overlap_mask(width)``."""


@dataclass(frozen=True)
class OverlapIndex:
    """Per-image overlap summaries of a dataset and the settings they were computed with."""

    images: list[ImageOverlap]
    """One summary per image, in input order."""
    touch: int
    """Touch distance of the pairs."""
    width: int
    """Band width of the overlap pixel counts."""
    classes: tuple[int, ...]
    """Train IDs whose entities were considered."""
    version: int = OVERLAP_INDEX_VERSION
    """What the index records (``OVERLAP_INDEX_VERSION``); 1: different-class pairs only."""

    def save(self, path: str | Path) -> Path:
        """Write the index as JSON (conventionally ``<data dir>/overlap_index.json``); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(_index_to_json(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> OverlapIndex:
        """Read an index written by ``save``."""
        path = Path(path)
        try:
            return _index_from_json(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path} is not an overlap index written by OverlapIndex.save ({err!r}); delete it and "
                "rebuild it with build_overlap_index"
            ) from err


def _index_to_json(index: OverlapIndex) -> dict:
    """A JSON-able dict: class-name pairs become [name_a, name_b, count] triples."""
    images = [
        {
            "name": i.name,
            "pairs": [[a, b, n] for (a, b), n in i.pairs.items()],
            "overlap_pixels": i.overlap_pixels,
        }
        for i in index.images
    ]
    return {
        "version": index.version,
        "touch": index.touch,
        "width": index.width,
        "classes": list(index.classes),
        "images": images,
    }


def _index_from_json(data: dict) -> OverlapIndex:
    """Inverse of ``_index_to_json``."""
    images = [
        ImageOverlap(
            str(i["name"]),
            {(str(a), str(b)): int(n) for a, b, n in i["pairs"]},
            int(i["overlap_pixels"]),
        )
        for i in data["images"]
    ]
    classes = tuple(int(c) for c in data["classes"])
    version = int(data.get("version", 1))
    return OverlapIndex(images, int(data["touch"]), int(data["width"]), classes, version)


def summarize_overlaps(
    name: str,
    instance_map: np.ndarray,
    touch: int = 1,
    width: int = 3,
    classes: Sequence[int | str] = INSTANCE_CLASSES,
) -> ImageOverlap:
    """Class-pair counts and overlap pixel count of one image."""
    pairs: dict[tuple[str, str], int] = {}
    for pair in overlap_pairs(instance_map, touch, classes):
        pairs[pair.classes] = pairs.get(pair.classes, 0) + 1
    return ImageOverlap(name, pairs, int(overlap_mask(instance_map, width, classes).sum()))


def build_overlap_index(
    items: Iterable[tuple[str, np.ndarray | None]],
    touch: int = 1,
    width: int = 3,
    classes: Sequence[int | str] = INSTANCE_CLASSES,
) -> OverlapIndex:
    """Summaries of (name, instance map) items; errors name the offending image."""
    images = []
    for name, instance_map in items:
        if instance_map is None:
            raise ValueError(f"image {name!r}: no instance map ({NO_INSTANCES})")
        try:
            images.append(summarize_overlaps(name, instance_map, touch, width, classes))
        except ValueError as err:
            raise ValueError(f"image {name!r}: {err}") from err
    return OverlapIndex(images, touch, width, tuple(class_index(c) for c in classes))


def images_with_overlap(
    index: OverlapIndex, classes: Iterable[int | str] | None = None
) -> list[str]:
    """Names of images with at least one touching pair; with ``classes`` (names or train IDs), only pairs
    whose two classes are both among them count (``("rider", "bicycle", "motorcycle")``)."""
    if classes is None:
        return [i.name for i in index.images if i.pairs]
    names = {CLASSES[class_index(c)] for c in classes}
    return [i.name for i in index.images if any(a in names and b in names for a, b in i.pairs)]
