"""The images the app shows: SynthCity's target val split and validated uploads, with what the
pickers need about them (classes present, overlap flags, thumbnails) and the class statistics of
both domains. Slow indexes (overlaps, source statistics) are built as background tasks."""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dida import runs
from dida.analysis import rare_classes
from dida.data.classes import NUM_CLASSES
from dida.data.datasets import (
    CityscapesDataset,
    ClassStats,
    DatasetError,
    build_dataset,
    class_pixel_totals,
    load_class_stats,
)
from dida.data.overlap import OverlapIndex, build_overlap_index
from dida.data.synthcity import read_manifest, synthcity_roots
from dida.studio.predictions import LRU
from dida.studio.uploads import load_upload, upload_key
from dida.studio.work import Tasks

log = logging.getLogger(__name__)

OVERLAP_FILE = "overlap_index.json"
ImageKey = int | str
"""A val image index or an upload key (``"upload:<hash>"``)."""


@dataclass(frozen=True)
class ValItem:
    """One target val image in the picker."""

    index: int
    name: str
    path: Path
    """The image file."""
    classes: tuple[int, ...]
    """Train IDs present in its label."""
    overlap: bool | None
    """Whether it holds touching entities of different thing classes (None until indexed)."""


def source_data(run_dir: Path) -> tuple[str, Path]:
    """(dataset kind, root) of the source images a run trained on (SynthCity → its GTA5 tree)."""
    data = runs.read_json(run_dir / runs.CONFIG).get("data", {})
    kind, root = data.get("source", "synthcity"), Path(data.get("source_root", ""))
    if kind == "synthcity":
        kind, root = "gta5", synthcity_roots(root)[0]
    return kind, root


def source_crop(run_dir: Path, source_id: int, box: Sequence[int] | None) -> np.ndarray | None:
    """The source image (cropped to ``box`` (x0, y0, x1, y1) when given) a bank slot was filled
    from, or None when the slot has no recorded source or the run's source data is gone."""
    if source_id < 0:
        return None
    kind, root = source_data(run_dir)
    try:
        image = build_dataset(kind, root, require_labels=False)[source_id]["image"]
    except (DatasetError, IndexError):
        return None
    if box is None:
        return image
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


class ValImages:
    """The val split (int keys) and uploads (str keys) of a SynthCity tree, with their indexes.

    ``run_folders`` lists the known runs' folders (their source data is a fallback for the source
    statistics); ``tasks`` runs the slow indexes in the background.
    """

    def __init__(
        self, data_root: Path, tasks: Tasks, run_folders: Callable[[], list[Path]]
    ) -> None:
        self.data_root, self.tasks, self.run_folders = Path(data_root), tasks, run_folders
        self.val = CityscapesDataset(synthcity_roots(self.data_root)[1], "val")
        self._val_item = functools.lru_cache(maxsize=64)(self.val.__getitem__)
        self._uploads = LRU(16)
        self._stats_lock, self._overlap_lock = threading.Lock(), threading.Lock()
        self._stats: list[dict] | None = None
        self._overlaps: OverlapIndex | bool | None = None

    @property
    def cache_dir(self) -> Path:
        """Where indexes and thumbnails are kept (``<data>/.studio``)."""
        return self.data_root / ".studio"

    def item(self, key: ImageKey) -> dict:
        """``{"image", "label" (None for uploads), "name"}`` of a val index or an upload key."""
        if isinstance(key, str):
            image = self._uploads.get(key)
            if image is None:
                raise KeyError(f"upload {key!r} is no longer cached; upload the image again")
            return {"image": image, "label": None, "name": key}
        if not 0 <= int(key) < len(self.val):
            raise IndexError(f"val image {key} out of range 0-{len(self.val) - 1}")
        return self._val_item(int(key))

    def add_upload(self, path: str | Path) -> tuple[str, list[str]]:
        """Validate and keep an uploaded image → (key, conversion notes); raises UploadError."""
        image, notes = load_upload(path)
        key = upload_key(image)
        self._uploads.put(key, image)
        return key, notes

    @property
    def thumbnail_dir(self) -> Path:
        """Where ``thumbnail`` writes (``<data>/.studio/thumbs``)."""
        return self.cache_dir / "thumbs"

    def thumbnail(self, index: int, width: int = 160) -> Path:
        """A small JPEG of val image ``index`` (written once under ``thumbnail_dir``)."""
        path = self.thumbnail_dir / f"{index:05d}_{width}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(self.val.samples[index].image) as im:
                im.thumbnail((width, width))
                buffer = io.BytesIO()
                im.convert("RGB").save(buffer, format="JPEG", quality=85)
            runs.atomic_write_bytes(path, buffer.getvalue())
        return path

    def class_pixels(self, key: ImageKey) -> np.ndarray:
        """(C,) int64 ground-truth pixels of each class in a labelled image."""
        label = self.item(key)["label"]
        if label is None:
            raise ValueError("an uploaded image has no ground truth")
        return np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES].astype(np.int64)

    # --- class statistics ------------------------------------------------------------------

    def val_items(self) -> list[ValItem]:
        """Every val image with its classes and (once indexed) its overlap flag."""
        stats, overlaps = self.target_stats(), self.overlap_flags()
        return [
            ValItem(i, s.name, s.image, tuple(sorted(int(k) for k in stats[i] if k != "file")),
                    None if overlaps is None else overlaps[i])
            for i, s in enumerate(self.val.samples)
        ]  # fmt: skip

    def target_stats(self) -> ClassStats:
        """DAFormer-format class statistics of the target val split (cached next to the data)."""
        with self._stats_lock:
            if self._stats is None:
                self._stats = load_class_stats(self.val, cache_dir=self.cache_dir)
            return self._stats

    def rare_classes(self) -> list[int]:
        """Classes below ``RARE_PIXEL_FRACTION`` of the val pixels, rarest first."""
        return rare_classes(class_pixel_totals(self.target_stats()))

    def source_stats(self, wait: bool = False) -> ClassStats | None:
        """Class statistics of a source dataset: the data root's SynthCity source split, else the
        first run's source folder on disk. Computed in the background (None until ready or when
        no source data exists; ``source_stats_state`` tells which)."""
        self.tasks.submit("source-stats", self._find_source_stats)
        if wait:
            self.tasks.wait("source-stats", timeout=600)
        return self.tasks.result("source-stats")

    def source_stats_state(self) -> str | None:
        """State of the background source statistics (``Tasks.state``)."""
        return self.tasks.state("source-stats")

    def retry_missing_source_stats(self) -> None:
        """Forget a search that found no source data (new runs may name some)."""
        if self.tasks.state("source-stats") == "done" and self.tasks.result("source-stats") is None:
            self.tasks.forget("source-stats")

    def _find_source_stats(self) -> ClassStats | None:
        for kind, root in self._source_roots():
            try:
                return load_class_stats(build_dataset(kind, root), self.cache_dir)
            except DatasetError as err:
                log.info("no source statistics from %s: %s", root, err)
        return None

    def _source_roots(self) -> list[tuple[str, Path]]:
        roots = []
        if "source" in (read_manifest(self.data_root) or {}).get("splits", {}):
            roots.append(("gta5", synthcity_roots(self.data_root)[0]))
        for folder in self.run_folders():
            kind, root = source_data(folder)
            if root.is_dir() and (kind, root) not in roots:
                roots.append((kind, root))
        return roots

    # --- overlaps --------------------------------------------------------------------------

    def overlap_flags(self) -> list[bool] | None:
        """Per val image: touching entities of different thing classes? None until indexed (a
        saved index is read at once; building one runs in the background, see index_overlaps)."""
        index = self.overlap_index()
        return None if index is None else [bool(i.pairs) for i in index.images]

    def overlap_index(self) -> OverlapIndex | None:
        """The val split's overlap index: built, or saved and matching; None until indexed."""
        index = self.tasks.result("overlap-index")
        if index is None and (self.cache_dir / OVERLAP_FILE).is_file():
            index = self._saved_overlap_index()
        return index

    def _saved_overlap_index(self) -> OverlapIndex | None:
        """The saved index when it lists exactly the val images, else None."""
        with self._overlap_lock:
            if self._overlaps is None:
                index = OverlapIndex.load(self.cache_dir / OVERLAP_FILE)
                names = [s.name for s in self.val.samples]
                self._overlaps = index if [i.name for i in index.images] == names else False
            return self._overlaps or None

    def index_overlaps(self, wait: bool = False) -> str:
        """Build (or load) the overlap index of the val split in the background."""
        state = self.tasks.submit("overlap-index", self._overlap_index)
        if wait:
            self.tasks.wait("overlap-index", timeout=600)
        return state

    def _overlap_index(self) -> OverlapIndex:
        path = self.cache_dir / OVERLAP_FILE
        if path.is_file() and self._saved_overlap_index() is not None:
            return self._saved_overlap_index()
        items = ((s.name, self.val[i]["instance"]) for i, s in enumerate(self.val.samples))
        index = build_overlap_index(items)
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path)
        return index
