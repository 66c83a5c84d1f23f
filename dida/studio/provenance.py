"""Where the points of the bank and UMAP views come from: a slot's source image and region box at a
snapshot (``slot_source``), crops of it with the box drawn (``box_crop``) and of a target pixel's
surroundings (``pixel_crop``), and the listing of a UMAP selection (``list_selection``).

Images arrive as uint8 RGB arrays; crops are numpy, ready to place. Histories saved before
provenance was recorded carry no boxes: their slots say so (``NOT_RECORDED``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dida.bank import BankSnapshot
from dida.data.classes import CLASSES
from dida.data.datasets import DatasetError, SegDataset, build_dataset
from dida.studio.images import ImageKey, source_data
from dida.studio.points import PointSet

NOT_RECORDED = "not recorded in this run (trained before provenance was recorded)"
NO_INDEX = "not recorded: the training batches carried no source image index"
NEVER_WRITTEN = "never written"
NO_IMAGE = "the run's source images are not available here"
BOX_COLOR = (213, 94, 0)
"""Vermillion (#D55E00, colour-blind safe) outline of a region box or a pixel marker."""
MAX_CROPS = 24
"""Crops made for one selection (every selected point is listed; the first ones get a crop)."""


@dataclass(frozen=True)
class SlotSource:
    """One bank slot at a snapshot and the source image its feature came from."""

    slot: int
    class_name: str
    age: int
    """Iterations since the slot's last write (-1: never written)."""
    written_at: int
    source_id: int
    """Dataset index of the source image (-1: unknown, see ``note``)."""
    box: tuple[int, int, int, int] | None
    """(x0, y0, x1, y1) of the class region in that image's pixels (None: unknown)."""
    note: str
    """Empty when the source and box are recorded, else why not."""
    crop: np.ndarray | None = None
    """(h, w, 3) uint8 crop of the source image around ``box`` with the box drawn."""


@dataclass(frozen=True)
class SelectedPixel:
    """A sampled target pixel in a UMAP selection."""

    point: int
    image: ImageKey
    x: int
    y: int
    class_name: str
    """Ground-truth class ("unlabelled" without a label)."""
    predicted: str
    crop: np.ndarray | None = None


@dataclass(frozen=True)
class Selection:
    """The bank slots and target pixels of a UMAP box / lasso selection."""

    slots: list[SlotSource]
    pixels: list[SelectedPixel]


def _class_name(c: int) -> str:
    """Class name of a train ID; "unlabelled" for 255 (ignore)."""
    return CLASSES[c] if 0 <= c < len(CLASSES) else "unlabelled"


def _note(snapshot: BankSnapshot, slot: int, box: list[int] | None) -> str:
    if int(snapshot.ages[slot]) < 0:
        return NEVER_WRITTEN
    if snapshot.boxes is None:
        return NOT_RECORDED if int(snapshot.source_ids[slot]) < 0 else "region box " + NOT_RECORDED
    return "" if int(snapshot.source_ids[slot]) >= 0 and box else NO_INDEX


def slot_source(snapshot: BankSnapshot, slot: int) -> SlotSource:
    """Provenance of ``slot`` in ``snapshot`` (no crop; ``Studio.slot_source`` adds it)."""
    if not 0 <= slot < len(snapshot.labels):
        raise IndexError(f"slot {slot} out of range 0-{len(snapshot.labels) - 1}")
    written = int(snapshot.ages[slot])
    box = None if snapshot.boxes is None else [int(v) for v in snapshot.boxes[slot]]
    box = box if box and min(box) >= 0 else None
    return SlotSource(
        slot=slot,
        class_name=_class_name(int(snapshot.labels[slot])),
        age=snapshot.iteration - written if written >= 0 else -1,
        written_at=written,
        source_id=int(snapshot.source_ids[slot]) if written >= 0 else -1,
        box=tuple(box) if box else None,
        note=_note(snapshot, slot, box),
    )


def draw_box(image: np.ndarray, box: tuple[int, int, int, int], width: int = 2) -> np.ndarray:
    """A copy of ``image`` (h, w, 3) with the outline of ``box`` (x0, y0, x1, y1) drawn inside it."""
    out = image.copy()
    h, w = out.shape[:2]
    x0, y0 = max(box[0], 0), max(box[1], 0)
    x1, y1 = min(box[2], w), min(box[3], h)
    if x1 <= x0 or y1 <= y0:
        return out
    for rows, cols in (
        (slice(y0, min(y0 + width, y1)), slice(x0, x1)),
        (slice(max(y1 - width, y0), y1), slice(x0, x1)),
        (slice(y0, y1), slice(x0, min(x0 + width, x1))),
        (slice(y0, y1), slice(max(x1 - width, x0), x1)),
    ):
        out[rows, cols] = BOX_COLOR
    return out


def box_crop(
    image: np.ndarray, box: tuple[int, int, int, int] | None, margin: float = 0.25, least: int = 16
) -> np.ndarray:
    """``image`` cut to ``box`` plus a margin (``margin`` of the box's size, at least ``least``
    pixels) with the box drawn; the whole image when the box is unknown."""
    if box is None:
        return image.copy()
    x0, y0, x1, y1 = box
    dx = max(int((x1 - x0) * margin), least)
    dy = max(int((y1 - y0) * margin), least)
    left, top = max(x0 - dx, 0), max(y0 - dy, 0)
    window = image[top : min(y1 + dy, image.shape[0]), left : min(x1 + dx, image.shape[1])]
    return draw_box(window, (x0 - left, y0 - top, x1 - left, y1 - top))


def pixel_crop(image: np.ndarray, x: int, y: int, half: int = 24) -> np.ndarray:
    """A (2·half)² window of ``image`` around pixel (x, y) (clamped at the borders) with a small
    box drawn around the pixel."""
    h, w = image.shape[:2]
    left, top = (
        min(max(x - half, 0), max(w - 2 * half, 0)),
        min(max(y - half, 0), max(h - 2 * half, 0)),
    )
    window = image[top : top + 2 * half, left : left + 2 * half]
    return draw_box(window, (x - left - 3, y - top - 3, x - left + 4, y - top + 4), width=1)


@functools.lru_cache(maxsize=8)
def _source_dataset(kind: str, root: str) -> SegDataset:
    return build_dataset(kind, root, require_labels=False)


def source_image(run_dir: Path, source_id: int) -> np.ndarray | None:
    """Source image ``source_id`` of the dataset a run trained on (None when unknown or gone)."""
    if source_id < 0:
        return None
    try:
        return _source_dataset(*map(str, source_data(run_dir)))[source_id]["image"]
    except (DatasetError, IndexError, OSError):
        return None


def with_crop(source: SlotSource, image: np.ndarray | None) -> SlotSource:
    """``source`` with the crop of its source image (the note says when the image is missing)."""
    if source.source_id < 0:
        return source
    if image is None:
        return replace(source, note=source.note or NO_IMAGE)
    return replace(source, crop=box_crop(image, source.box))


def split_points(points: PointSet, point_ids: Iterable[int]) -> tuple[list[int], list[int]]:
    """Valid selected point ids (sorted, unique) → (bank slot points, target pixel points)."""
    chosen = sorted({int(i) for i in point_ids if 0 <= int(i) < len(points.slot)})
    slots = [i for i in chosen if points.slot[i] >= 0]
    return slots, [i for i in chosen if points.slot[i] < 0]


def list_selection(
    points: PointSet,
    point_ids: Iterable[int],
    snapshot: BankSnapshot,
    key: ImageKey | None,
    target: np.ndarray | None,
    read_source: Callable[[int], np.ndarray | None],
    max_crops: int = MAX_CROPS,
) -> Selection:
    """The slots (with their source crops) and target pixels of image ``key`` (crops around them
    from ``target``) among ``point_ids``. At most ``max_crops`` entries get a crop, the first ones of
    each kind (slots with a recorded source): pixels at least half when both kinds are selected."""
    slot_ids, pixel_ids = split_points(points, point_ids)
    slots = [slot_source(snapshot, int(points.slot[i])) for i in slot_ids]
    sourced = [n for n, s in enumerate(slots) if s.source_id >= 0]  # slots that can have a crop
    pixel_crops = min(len(pixel_ids), max(max_crops - len(sourced), max_crops // 2))
    cropped = set(sourced[: max_crops - pixel_crops])
    slots = [
        with_crop(s, read_source(s.source_id)) if n in cropped else s for n, s in enumerate(slots)
    ]
    pixels = [
        SelectedPixel(
            point=i, image=key, x=int(points.x[i]), y=int(points.y[i]),
            class_name=_class_name(int(points.label[i])),
            predicted=_class_name(int(points.pred[i])),
            crop=pixel_crop(target, int(points.x[i]), int(points.y[i]))
            if target is not None and n < pixel_crops else None,
        )
        for n, i in enumerate(pixel_ids)
    ]  # fmt: skip
    return Selection(slots, pixels)
