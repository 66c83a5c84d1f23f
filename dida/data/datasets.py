"""Raw datasets in their published layouts (GTA5, Cityscapes, SYNTHIA) and RCS class statistics.

Layouts (docs METHOD.md §8.2), each listed from its image folder:

* GTA5: ``ROOT/images/NNNNN.png`` + ``ROOT/labels/NNNNN_labelTrainIds.png`` (train IDs) or, when the
  converted files are not there for every image, ``ROOT/labels/NNNNN.png`` (8-bit 'P'/'L' PNG of
  Cityscapes label IDs).
* Cityscapes: ``ROOT/leftImg8bit/SPLIT/CITY/X_leftImg8bit.png`` +
  ``ROOT/gtFine/SPLIT/CITY/X_gtFine_labelTrainIds.png`` or ``X_gtFine_labelIds.png``, and
  ``X_gtFine_instanceIds.png`` (16-bit, ``label_id * 1000 + k``) when present for every image.
* SYNTHIA-RAND-CITYSCAPES: ``ROOT/RGB/NNNNNNN.png`` + ``ROOT/GT/LABELS/NNNNNNN_labelTrainIds.png``
  or ``ROOT/GT/LABELS/NNNNNNN.png`` (16-bit RGB PNG whose first channel, R as PIL orders it, is
  the class).

An item is ``{"image": uint8 (H, W, 3) RGB, "label": uint8 (H, W) train IDs, "name": str}`` plus
``"instance": int32 (H, W)`` when instance maps exist (docs/ARCHITECTURE.md).  Nothing is skipped:
a missing, undecodable or inconsistent file raises :class:`DatasetError` naming it.

Class statistics follow DAFormer's files (``sample_class_stats.json`` and friends) and are cached
next to the data, or in a cache folder when the data folder is read-only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dida.data.classes import CLASSES, NUM_CLASSES
from dida.data.readers import (
    CITYSCAPES_ID_FORMAT,
    SYNTHIA_ID_FORMAT,
    TRAIN_ID_FORMAT,
    DatasetError,
    LabelFormat,
    read_image,
    read_instance,
    read_size,
)
from dida.data.readers import read_8bit_label as read_8bit_label  # re-exported (moved)
from dida.data.readers import read_first_channel as read_first_channel  # re-exported (moved)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while reading many files."""


# ---------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class Sample:
    """The files of one dataset item."""

    name: str
    """Item name (file stem without layout suffixes)."""
    image: Path
    """The RGB image."""
    label: Path | None
    """The label file, None for an unlabelled item."""
    instance: Path | None = None
    """The instance-ID map, when the layout has one."""


# (label path of an image, its format): in order of preference.
LabelChoice = tuple[Callable[[Path], Path], LabelFormat]


class SegDataset:
    """A list of :class:`Sample` of one layout; ``dataset[i]`` is the item dict of that sample."""

    kind = ""
    layout = ""

    def __init__(self, root: Path, samples: list[Sample], label_format: LabelFormat | None) -> None:
        self.root = root
        self.samples = samples
        self.label_format = label_format
        self.stats_folder = root
        """Where this dataset's class statistics are cached (next to its labels)."""

    @property
    def has_labels(self) -> bool:
        """Whether items carry a ``label``."""
        return self.label_format is not None

    @property
    def has_instances(self) -> bool:
        """Whether items carry an ``instance`` map."""
        return bool(self.samples) and self.samples[0].instance is not None

    @property
    def label_files(self) -> list[Path]:
        """The label file of every sample, in item order."""
        return [self._label_path(i) for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        labels = self.label_format.name if self.label_format else "none"
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, labels={labels}, "
            f"instances={self.has_instances})"
        )

    def _label_path(self, index: int) -> Path:
        path = self.samples[index].label
        if path is None or self.label_format is None:
            raise DatasetError(f"{self.root}: this {self.kind} dataset was opened without labels")
        return path

    def read_label(self, index: int) -> np.ndarray:
        """Train IDs of item ``index``, uint8 (H, W), without reading the image."""
        return self.label_format.decode(self._label_path(index))  # type: ignore[union-attr]

    def wait(self, index: int) -> None:
        """Return once item ``index``'s files can be read (at once here; a split still being
        written waits for them: ``dida.data.pending.PendingSplit``)."""

    def image_size(self, index: int = 0) -> tuple[int, int]:
        """(H, W) of image ``index`` read from its header."""
        return read_size(self.samples[index].image)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        item = {"image": read_image(sample.image), "name": sample.name}
        if self.label_format is not None:
            item["label"] = self.read_label(index)
        if sample.instance is not None:
            item["instance"] = read_instance(sample.instance)
        _check_sizes(item, sample)
        return item


def _check_sizes(item: dict, sample: Sample) -> None:
    """Raise naming the files when the label or instance map is not the image's size."""
    height, width = item["image"].shape[:2]
    for key, path in (("label", sample.label), ("instance", sample.instance)):
        if key in item and item[key].shape != (height, width):
            h, w = item[key].shape
            raise DatasetError(
                f"{path}: {key} is {w}x{h} but its image {sample.image} is {width}x{height}; "
                f"image and label must have the same size"
            )


def _require_folder(folder: Path, layout: str) -> None:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found; expected the {layout}")


def _list_images(folder: Path, pattern: str, layout: str) -> list[Path]:
    """Sorted image files under ``folder`` matching ``pattern``; raises when there are none."""
    _require_folder(folder, layout)
    images = sorted(folder.glob(pattern))
    if not images:
        raise DatasetError(f"{folder}: no files matching {pattern!r}; expected the {layout}")
    return images


def _choose_labels(
    images: list[Path], choices: list[LabelChoice], layout: str, required: bool
) -> tuple[list[Path] | None, LabelFormat | None]:
    """The first label variant present for every image; raises naming a missing file if none is."""
    for to_label, label_format in choices:
        labels = [to_label(image) for image in images]
        if all(path.is_file() for path in labels):
            return labels, label_format
    if not required:
        return None, None
    for image in images:
        candidates = [to_label(image) for to_label, _ in choices]
        if not any(path.is_file() for path in candidates):
            expected = " or ".join(str(path) for path in candidates)
            raise DatasetError(f"label missing for {image}: expected {expected} ({layout})")
    missing = [next(to(i) for i in images if not to(i).is_file()) for to, _ in choices]
    raise DatasetError(
        f"no label variant is complete in the {layout}: {' and '.join(map(str, missing))} are "
        f"missing while other images have theirs; convert every label or none"
    )


def _optional_instances(
    images: list[Path], to_instance: Callable[[Path], Path]
) -> list[Path | None]:
    """Instance maps when present for every image, None when absent for all; raises when partial."""
    paths = [to_instance(image) for image in images]
    present = [path.is_file() for path in paths]
    if all(present):
        return paths
    if any(present):
        missing = paths[present.index(False)]
        raise DatasetError(f"instance map missing: {missing} (present for other images)")
    return [None] * len(images)


class _FlatDataset(SegDataset):
    """A layout with one image folder and one label folder matched by file stem (GTA5, SYNTHIA)."""

    image_dir = ""
    label_dir = ""
    raw_format: LabelFormat = TRAIN_ID_FORMAT

    def __init__(self, root: str | Path, split: str = "train", require_labels: bool = True) -> None:
        root = Path(root)
        if split != "train":
            raise DatasetError(
                f"{self.kind} has no {split!r} split: the whole folder is its training set; "
                f"use split='train'"
            )
        images = _list_images(root / self.image_dir, "*.png", self.layout)
        labels_dir = root / self.label_dir
        choices: list[LabelChoice] = [
            (lambda p: labels_dir / f"{p.stem}_labelTrainIds.png", TRAIN_ID_FORMAT),
            (lambda p: labels_dir / p.name, self.raw_format),
        ]
        labels, label_format = _choose_labels(images, choices, self.layout, require_labels)
        labels = labels or [None] * len(images)
        samples = [Sample(i.stem, i, lab) for i, lab in zip(images, labels, strict=True)]
        super().__init__(root, samples, label_format)


class GTA5Dataset(_FlatDataset):
    """GTA5: ``images/NNNNN.png`` + ``labels/NNNNN[_labelTrainIds].png``."""

    kind = "gta5"
    layout = "GTA5 layout ROOT/images/NNNNN.png + ROOT/labels/NNNNN.png or NNNNN_labelTrainIds.png"
    image_dir = "images"
    label_dir = "labels"
    raw_format = CITYSCAPES_ID_FORMAT


class SynthiaDataset(_FlatDataset):
    """SYNTHIA-RAND-CITYSCAPES: ``RGB/NNNNNNN.png`` + ``GT/LABELS/NNNNNNN[_labelTrainIds].png``."""

    kind = "synthia"
    layout = (
        "SYNTHIA layout ROOT/RGB/NNNNNNN.png + ROOT/GT/LABELS/NNNNNNN.png (16-bit) "
        "or NNNNNNN_labelTrainIds.png"
    )
    image_dir = "RGB"
    label_dir = "GT/LABELS"
    raw_format = SYNTHIA_ID_FORMAT


class CityscapesDataset(SegDataset):
    """Cityscapes: ``leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` + ``gtFine/SPLIT/CITY/*_gtFine_*``.

    ``require_labels=False`` opens unlabelled images (e.g. target training images): labels are then
    read when present for every image and left out otherwise.
    """

    kind = "cityscapes"
    layout = (
        "Cityscapes layout ROOT/leftImg8bit/SPLIT/CITY/X_leftImg8bit.png + "
        "ROOT/gtFine/SPLIT/CITY/X_gtFine_labelIds.png or X_gtFine_labelTrainIds.png"
    )

    def __init__(self, root: str | Path, split: str = "train", require_labels: bool = True) -> None:
        root = Path(root)
        _require_folder(root / "leftImg8bit", self.layout)
        if not (root / "leftImg8bit" / split).is_dir():
            found = sorted(p.name for p in (root / "leftImg8bit").iterdir() if p.is_dir())
            raise DatasetError(f"{root / 'leftImg8bit' / split}: no split {split!r}; found {found}")
        images = _list_images(root / "leftImg8bit" / split, "*/*_leftImg8bit.png", self.layout)

        def gt(suffix: str) -> Callable[[Path], Path]:
            return lambda p: root / "gtFine" / split / p.parent.name / (_cs_stem(p) + suffix)

        choices = [(gt("_gtFine_labelTrainIds.png"), TRAIN_ID_FORMAT)]
        choices.append((gt("_gtFine_labelIds.png"), CITYSCAPES_ID_FORMAT))
        labels, label_format = _choose_labels(images, choices, self.layout, require_labels)
        instances = _optional_instances(images, gt("_gtFine_instanceIds.png"))
        labels = labels or [None] * len(images)
        samples = [
            Sample(_cs_stem(i), i, lab, ins)
            for i, lab, ins in zip(images, labels, instances, strict=True)
        ]
        super().__init__(root, samples, label_format)
        self.stats_folder = root / "gtFine" / split  # one file set per split


def _cs_stem(image: Path) -> str:
    """'aachen_000000_000019' from '.../aachen_000000_000019_leftImg8bit.png'."""
    return image.name[: -len("_leftImg8bit.png")]


DATASETS: dict[str, type[SegDataset]] = {
    "gta5": GTA5Dataset,
    "cityscapes": CityscapesDataset,
    "synthia": SynthiaDataset,
}


def build_dataset(
    kind: str, root: str | Path, split: str = "train", require_labels: bool = True
) -> SegDataset:
    """The dataset of layout ``kind`` at ``root``; an unknown kind raises with the valid ones."""
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset kind {kind!r}: use one of {sorted(DATASETS)}")
    return DATASETS[kind](root, split, require_labels)  # type: ignore[call-arg]


def validate(dataset: SegDataset, progress: Progress | None = None) -> int:
    """Read every item; raise one :class:`DatasetError` listing all problems, else return N."""
    problems = []
    for index in range(len(dataset)):
        try:
            dataset[index]
        except DatasetError as err:
            problems.append(str(err))
        if progress is not None:
            progress(index + 1, len(dataset))
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise DatasetError(
            f"{len(problems)} of {len(dataset)} items are bad in {dataset.root}:\n{listed}"
        )
    return len(dataset)


# ---------------------------------------------------------------------------------------------
# Class statistics (DAFormer's RCS files)

STATS_FILE = "sample_class_stats.json"
STATS_DICT_FILE = "sample_class_stats_dict.json"
SAMPLES_WITH_CLASS_FILE = "samples_with_class.json"

ClassStats = list[dict]
"""DAFormer format: one ``{"<trainId>": pixels, ..., "file": label path}`` per label file."""


def file_class_counts(train_ids: np.ndarray) -> dict[str, int]:
    """Pixels of each train ID present in one label, ``{"<trainId>": count}`` (ignore left out)."""
    counts = np.bincount(train_ids.ravel(), minlength=256)[:NUM_CLASSES]
    return {str(c): int(n) for c, n in enumerate(counts) if n > 0}


def compute_class_stats(dataset: SegDataset, progress: Progress | None = None) -> ClassStats:
    """Per-label-file train-ID pixel counts at full resolution; ``file`` is relative to the root."""
    stats = []
    for index, path in enumerate(dataset.label_files):
        entry: dict = file_class_counts(dataset.read_label(index))
        entry["file"] = path.relative_to(dataset.root).as_posix()
        stats.append(entry)
        if progress is not None:
            progress(index + 1, len(dataset))
    return stats


def class_pixel_totals(stats: ClassStats) -> np.ndarray:
    """Total pixels of each train ID over all files, int64 (NUM_CLASSES,)."""
    totals = np.zeros(NUM_CLASSES, dtype=np.int64)
    for entry in stats:
        for key, count in _counts(entry):
            totals[key] += count
    return totals


def class_image_counts(stats: ClassStats) -> np.ndarray:
    """Number of files containing each train ID, int64 (NUM_CLASSES,)."""
    images = np.zeros(NUM_CLASSES, dtype=np.int64)
    for entry in stats:
        for key, count in _counts(entry):
            images[key] += count > 0
    return images


def _counts(entry: dict) -> Iterator[tuple[int, int]]:
    return ((int(k), int(v)) for k, v in entry.items() if k != "file")


def stats_dict(stats: ClassStats) -> dict[str, dict[str, int]]:
    """``{file: {"<trainId>": count}}`` (``sample_class_stats_dict.json``)."""
    return {entry["file"]: {k: v for k, v in entry.items() if k != "file"} for entry in stats}


def samples_with_class(stats: ClassStats) -> dict[str, list[list]]:
    """``{"<trainId>": [[file, count], ...]}`` (``samples_with_class.json``)."""
    table: dict[str, list[list]] = {}
    for entry in stats:
        for key, count in _counts(entry):
            table.setdefault(str(key), []).append([entry["file"], count])
    return table


def write_class_stats(stats: ClassStats, folder: Path) -> None:
    """Write the three DAFormer JSON files into ``folder`` (each atomically)."""
    contents = {
        STATS_FILE: stats,
        STATS_DICT_FILE: stats_dict(stats),
        SAMPLES_WITH_CLASS_FILE: samples_with_class(stats),
    }
    for name, value in contents.items():
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(handle, "w") as out:
            json.dump(value, out, indent=1)
        os.replace(tmp, folder / name)


def _read_cached(folder: Path, dataset: SegDataset) -> ClassStats | None:
    """Cached stats in ``folder`` when they cover exactly the dataset's label files, else None."""
    path = folder / STATS_FILE
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text())
        cached = sorted(Path(entry["file"]).name for entry in stats)
    except (ValueError, TypeError, KeyError) as err:
        log.warning("%s is unreadable (%s); recomputing class statistics", path, err)
        return None
    if cached != sorted(p.name for p in dataset.label_files):
        log.warning("%s lists other files than %s holds; recomputing", path, dataset)
        return None
    return stats


def stats_cache_folder(root: Path, cache_dir: Path) -> Path:
    """The folder under ``cache_dir`` holding the stats of the dataset at ``root``."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"{root.name}-{digest}"


def load_class_stats(
    dataset: SegDataset, cache_dir: str | Path | None = None, progress: Progress | None = None
) -> ClassStats:
    """Class statistics of ``dataset``, computed once and cached.

    Cached files are looked for next to the data, then under ``cache_dir``; they are reused only
    when they list exactly the dataset's label files (by basename, as DAFormer matches them) and
    recomputed otherwise.  New statistics go next to the data, or under ``cache_dir`` when the
    data folder is not writable.
    """
    folders = [dataset.stats_folder]
    if cache_dir is not None:
        folders.append(stats_cache_folder(dataset.stats_folder, Path(cache_dir)))
    for folder in folders:
        cached = _read_cached(folder, dataset)
        if cached is not None:
            return cached
    stats = compute_class_stats(dataset, progress)
    _store(stats, folders)
    return stats


def _store(stats: ClassStats, folders: list[Path]) -> None:
    """Write to the first writable folder; raise saying to pass a cache folder when none is."""
    errors = []
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_class_stats(stats, folder)
            return
        except OSError as err:
            errors.append(f"{folder}: {err}")
    raise DatasetError(
        f"cannot write class statistics ({'; '.join(errors)}); pass a writable cache_dir"
    )


# ---------------------------------------------------------------------------------------------
# Command line


def _print_progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 20) == 0:
        print(f"  {done}/{total}", file=sys.stderr, flush=True)


def _cmd_check(args: argparse.Namespace) -> None:
    dataset = build_dataset(args.kind, args.root, args.split, not args.unlabelled)
    print(dataset)
    print(f"OK: {validate(dataset, _print_progress)} items read without problems")


def _cmd_stats(args: argparse.Namespace) -> None:
    dataset = build_dataset(args.kind, args.root, args.split)
    stats = load_class_stats(dataset, args.cache_dir, _print_progress)
    totals, images = class_pixel_totals(stats), class_image_counts(stats)
    print(f"{'id':>3} {'class':<14} {'pixels':>14} {'images':>8}")
    for c in range(NUM_CLASSES):
        print(f"{c:>3} {CLASSES[c]:<14} {totals[c]:>14} {images[c]:>8}")


def main(argv: list[str] | None = None) -> int:
    """``python -m dida.data.datasets {check,stats} --kind KIND --root DIR [--split S]``."""
    parser = argparse.ArgumentParser(prog="python -m dida.data.datasets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="read every file and report all problems")
    stats = commands.add_parser("stats", help="compute (or load cached) RCS class statistics")
    for sub in (check, stats):
        sub.add_argument("--kind", required=True, choices=sorted(DATASETS))
        sub.add_argument("--root", required=True, type=Path)
        sub.add_argument("--split", default="train")
    check.add_argument("--unlabelled", action="store_true", help="labels are not required")
    stats.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        {"check": _cmd_check, "stats": _cmd_stats}[args.command](args)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
