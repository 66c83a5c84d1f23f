"""The 19 Cityscapes train classes, their palette, and label-ID -> train-ID maps.

The label table is the one of cityscapesscripts' ``labels.py`` (the field's reference); the test
``tests/test_datasets.py`` checks every entry against that package.  GTA5 label PNGs hold the same
Cityscapes label IDs.  SYNTHIA-RAND-CITYSCAPES uses its own IDs (DAFormer's converter table).
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip

# Cityscapes label ID of each train ID (GTA5 label PNGs use the same IDs).
CITYSCAPES_LABEL_IDS: tuple[int, ...] = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
)  # fmt: skip

# SYNTHIA-RAND-CITYSCAPES class ID of each train ID (terrain 16, truck 18, train 20 never occur).
SYNTHIA_LABEL_IDS: tuple[int, ...] = (
    3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11,
)  # fmt: skip

# Cityscapes label IDs whose pixels carry instance indices (id * 1000 + k) in *_instanceIds.png.
CITYSCAPES_INSTANCE_LABEL_IDS: tuple[int, ...] = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)

# Train IDs of "thing" classes (countable objects): DAFormer's feature-distance classes.
THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
# Train IDs with instance annotations in Cityscapes (person ... bicycle).
INSTANCE_CLASSES: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)

# DIDA's hard-coded rare-class order (train IDs), used to fill the instance bank.
RARE_CLASS_SEQUENCE: tuple[int, ...] = (
    18, 12, 17, 16, 7, 6, 11, 15, 4, 5, 14, 3, 9, 13, 8, 1, 10, 2, 0,
)  # fmt: skip

# Evaluation subsets (train IDs).
CLASSES_19: tuple[int, ...] = tuple(range(NUM_CLASSES))
SYNTHIA_16: tuple[int, ...] = tuple(c for c in CLASSES_19 if c not in (9, 14, 16))
SYNTHIA_13: tuple[int, ...] = tuple(c for c in SYNTHIA_16 if c not in (3, 4, 5))
EVAL_SUBSETS: dict[str, tuple[int, ...]] = {"19": CLASSES_19, "16": SYNTHIA_16, "13": SYNTHIA_13}


def _lookup(label_ids: tuple[int, ...], size: int) -> np.ndarray:
    """A ``size``-entry table mapping each label ID to its train ID (255 elsewhere)."""
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    lut[list(label_ids)] = np.arange(NUM_CLASSES, dtype=np.uint8)
    return lut


CITYSCAPES_TO_TRAIN = _lookup(CITYSCAPES_LABEL_IDS, 256)
SYNTHIA_TO_TRAIN = _lookup(SYNTHIA_LABEL_IDS, 65536)


def to_train_ids(label_ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map an integer label-ID image to train IDs with ``lut``; IDs outside the table become 255."""
    ids = np.asarray(label_ids).astype(np.int64)
    out = np.full(ids.shape, IGNORE_INDEX, dtype=np.uint8)
    inside = (ids >= 0) & (ids < len(lut))
    out[inside] = lut[ids[inside]]
    return out


def train_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Inverse map for writing Cityscapes/GTA5-format label PNGs: 255 -> 0 (unlabeled)."""
    table = np.zeros(256, dtype=np.uint8)
    table[:NUM_CLASSES] = CITYSCAPES_LABEL_IDS
    return table[np.asarray(train_ids, dtype=np.uint8)]


def class_index(name_or_id: str | int) -> int:
    """Train ID of a class given by name or ID; raises with the valid names when unknown."""
    if isinstance(name_or_id, (int, np.integer)) and 0 <= int(name_or_id) < NUM_CLASSES:
        return int(name_or_id)
    if isinstance(name_or_id, str) and name_or_id in CLASSES:
        return CLASSES.index(name_or_id)
    raise ValueError(
        f"unknown class {name_or_id!r}: use a train ID 0-{NUM_CLASSES - 1} or one of {list(CLASSES)}"
    )
