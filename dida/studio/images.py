"""The images the app shows: the val split of a SynthCity or Cityscapes root and validated uploads,
with what the pickers need about them (classes present, overlap flags, thumbnails) and the class
statistics of both domains. Slow indexes (overlaps, source statistics) are built as background tasks.

Only a SynthCity root the project created is ever written to (its val split generated when missing,
caches under ``<root>/.studio``). Any other data root (Cityscapes) is read only: its caches go to
``~/.cache/dida-studio/<hash of the root path>`` or the folder the user names.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
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
    SegDataset,
    build_dataset,
    class_pixel_totals,
    load_class_stats,
)
from dida.data.overlap import (
    NO_INSTANCES,
    OVERLAP_INDEX_VERSION,
    OverlapIndex,
    build_overlap_index,
)
from dida.data.pending import PendingSplit
from dida.data.synthcity import ensure_synthcity, read_manifest, synthcity_roots
from dida.studio.predictions import LRU
from dida.studio.uploads import load_upload, upload_key
from dida.studio.work import Tasks

log = logging.getLogger(__name__)

OVERLAP_FILE = "overlap_index.json"
ImageKey = int | str
"""A val image index or an upload key (``"upload:<hash>"``)."""


SYNTHCITY, CITYSCAPES = "synthcity", "cityscapes"
DATASET_TITLES = {SYNTHCITY: "SynthCity", CITYSCAPES: "Cityscapes"}
"""Display names of the data root kinds."""


@dataclass(frozen=True)
class DataRoot:
    """The data folder the app shows: its layout, its val images' root and where caches go."""

    kind: str
    """``"synthcity"`` (a tree the project generated) or ``"cityscapes"`` (read only)."""
    root: Path
    target: Path
    """The Cityscapes-layout root holding ``leftImg8bit/val`` (SynthCity: ``<root>/target``)."""
    cache_dir: Path
    """Where thumbnails, indexes, class statistics and per-image results are written."""
    writing: Callable[[], bool] | None = field(default=None, compare=False)
    """Set while this process's generator still writes the val split (first launch): the split
    is then read as it is written (``dida.data.pending.PendingSplit``)."""

    @property
    def owned(self) -> bool:
        """Whether the project created this tree (only then is anything written into it)."""
        return self.kind == SYNTHCITY

    @property
    def title(self) -> str:
        """The dataset's name for people: ``"SynthCity"`` or ``"Cityscapes"``."""
        return DATASET_TITLES[self.kind]


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/dida-studio`` (default ``~/.cache/dida-studio``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dida-studio"


def foreign_cache_dir(root: Path, base: Path | None = None) -> Path:
    """The cache folder of a data root the project does not own: ``<base>/<name>-<sha1 of path>``."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return (base or cache_home()) / f"{root.name}-{digest}"


def _is_new_folder(root: Path) -> bool:
    return not root.exists() or (root.is_dir() and not any(root.iterdir()))


def _own_cache(root: Path, cache: str | Path | None) -> Path:
    return Path(cache) if cache else root / ".studio"


def open_data_root(
    root: str | Path,
    preset: str = "default",
    cache: str | Path | None = None,
    writing: Callable[[], bool] | None = None,
) -> DataRoot:
    """Detect the layout of ``root``: a SynthCity tree (its manifest; a missing or empty folder
    becomes one, val split only) or a Cityscapes root (``leftImg8bit/val``).  ``cache`` replaces
    the default cache folder.  ``writing``: this process's generator is writing the val split of
    ``root`` while ``writing()`` is true; the root then opens without waiting for it.  Raises
    :class:`DatasetError` naming both layouts for anything else."""
    root = Path(root)
    if writing is not None and writing() and read_manifest(root) is not None:
        return DataRoot(SYNTHCITY, root, synthcity_roots(root)[1], _own_cache(root, cache), writing)
    if read_manifest(root) is not None or _is_new_folder(root):
        root = ensure_synthcity(root, preset, ("val",))
        return DataRoot(SYNTHCITY, root, synthcity_roots(root)[1], _own_cache(root, cache))
    if (root / "leftImg8bit" / "val").is_dir():
        return DataRoot(CITYSCAPES, root, root, Path(cache) if cache else foreign_cache_dir(root))
    raise DatasetError(
        f"{root} is neither a SynthCity root (synthcity.json; a missing or empty folder is "
        "generated) nor a Cityscapes root (leftImg8bit/val/CITY/*_leftImg8bit.png with "
        "gtFine/val/CITY/*_gtFine_labelIds.png or *_labelTrainIds.png); nothing was written"
    )


SOURCE_KINDS = {"gta5": "GTA5", "synthia": "SYNTHIA"}


def open_source(path: str | Path) -> tuple[str, Path, str]:
    """(dataset kind, root, display name) of a ``--source`` folder: a SynthCity root (its source
    split, GTA5 layout), a GTA5 root (``images/`` + ``labels/``) or SYNTHIA (``RGB/`` +
    ``GT/LABELS/``); raises :class:`DatasetError` for anything else."""
    path = Path(path)
    if "source" in (read_manifest(path) or {}).get("splits", {}):
        return "gta5", synthcity_roots(path)[0], f"SynthCity source split ({path})"
    for kind, folders in (("gta5", ("images", "labels")), ("synthia", ("RGB", "GT/LABELS"))):
        if all((path / f).is_dir() for f in folders):
            return kind, path, f"{SOURCE_KINDS[kind]} ({path})"
    raise DatasetError(
        f"{path} is not a source dataset: expected a SynthCity root with a source split, a GTA5 "
        "root (images/ + labels/) or a SYNTHIA root (RGB/ + GT/LABELS/)"
    )


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


def _val_split(data: DataRoot) -> SegDataset:
    """The val split of ``data``: as it is being written when this process's generator still
    writes it (``DataRoot.writing``), else the files found."""
    if data.writing is not None and data.writing():
        return PendingSplit(data.root, "val", data.writing)
    return CityscapesDataset(data.target, "val")


class ValImages:
    """The val split (int keys) and uploads (str keys) of a data root, with their indexes.

    ``source`` is the ``--source`` folder of the source statistics (default: the SynthCity root's
    own source split, if any); ``tasks`` runs the slow indexes in the background.
    """

    def __init__(self, data: DataRoot, tasks: Tasks, source: str | Path | None = None) -> None:
        self.data, self.data_root, self.tasks = data, data.root, tasks
        self.source = open_source(source) if source else self._own_source()
        self.val = _val_split(data)
        if not data.owned:  # class statistics go to the cache, never next to foreign labels
            self.val.stats_folder = data.cache_dir / "val-stats"
        self._val_item = functools.lru_cache(maxsize=64)(self.val.__getitem__)
        self._uploads = LRU(16)
        self._stats_lock, self._overlap_lock = threading.Lock(), threading.Lock()
        self._stats: list[dict] | None = None
        self._overlaps: OverlapIndex | bool | None = None

    @property
    def cache_dir(self) -> Path:
        """Where indexes and thumbnails are kept (``DataRoot.cache_dir``)."""
        return self.data.cache_dir

    def _own_source(self) -> tuple[str, Path, str] | None:
        if self.data.owned and "source" in (read_manifest(self.data_root) or {}).get("splits", {}):
            return open_source(self.data_root)
        return None

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
        return self.add_image(image), notes

    def add_image(self, image: np.ndarray) -> str:
        """Keep a uint8 RGB (H, W, 3) array like an upload (e.g. a bank slot's source image)."""
        key = upload_key(image)
        self._uploads.put(key, image)
        return key

    @property
    def thumbnail_dir(self) -> Path:
        """Where ``thumbnail`` writes (``<data>/.studio/thumbs``)."""
        return self.cache_dir / "thumbs"

    def thumbnail(self, index: int, width: int = 160) -> Path:
        """A small JPEG of val image ``index`` (written once under ``thumbnail_dir``)."""
        path = self.thumbnail_dir / f"{index:05d}_{width}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.val.wait(index)
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

    def known_rare_classes(self) -> list[int] | None:
        """``rare_classes`` without waiting: None while the val split is still being written and
        its statistics are not computed (they are then computed in the background)."""
        if self._stats is None and self.data.writing is not None and self.data.writing():
            self.tasks.submit("target-stats", self.target_stats)
            return None
        return self.rare_classes()

    def source_name(self) -> str | None:
        """The dataset behind the source statistics, e.g. ``GTA5 (/data/gta)``; None without one."""
        return None if self.source is None else self.source[2]

    def source_stats(self, wait: bool = False) -> ClassStats | None:
        """Class statistics of the source dataset (``--source``, else the SynthCity root's own
        source split; never another run's folder). Computed in the background (None until ready
        or without a source; ``source_stats_state`` tells which)."""
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
        if self.source is None:
            return None
        kind, root, _ = self.source
        dataset = build_dataset(kind, root)
        if not (self.data.owned and root == synthcity_roots(self.data_root)[0]):
            digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
            dataset.stats_folder = self.cache_dir / f"source-stats-{digest}"
        return load_class_stats(dataset)

    # --- overlaps --------------------------------------------------------------------------

    def overlap_state(self) -> str | None:
        """``NO_INSTANCES`` ("unavailable: ...") when the val split has no instance maps, else the
        background index's state (``Tasks.state``; "done" also when a saved index is read)."""
        if not self.val.has_instances:
            return NO_INSTANCES
        if self.overlap_flags() is not None:
            return "done"
        return self.tasks.state("overlap-index")

    def overlap_flags(self) -> list[bool] | None:
        """Per val image: touching entities of different thing classes? None until indexed or when
        the dataset has no instance maps (a saved index is read at once; building one runs in the
        background, see index_overlaps)."""
        index = self.overlap_index()
        return None if index is None else [bool(i.pairs) for i in index.images]

    def overlap_index(self) -> OverlapIndex | None:
        """The val split's overlap index: built, or saved and matching; None until indexed (and
        always without instance maps: see ``overlap_state``)."""
        if not self.val.has_instances:
            return None
        index = self.tasks.result("overlap-index")
        if index is None and (self.cache_dir / OVERLAP_FILE).is_file():
            index = self._saved_overlap_index()
        return index

    def _saved_overlap_index(self) -> OverlapIndex | None:
        """The saved index when it is of the current version (``OVERLAP_INDEX_VERSION``: an older
        one lacks same-class pairs) and lists exactly the val images, else None (rebuild it)."""
        with self._overlap_lock:
            if self._overlaps is None:
                index = OverlapIndex.load(self.cache_dir / OVERLAP_FILE)
                names = [s.name for s in self.val.samples]
                current = index.version == OVERLAP_INDEX_VERSION
                self._overlaps = (
                    index if current and [i.name for i in index.images] == names else False
                )
            return self._overlaps or None

    def index_overlaps(self, wait: bool = False) -> str:
        """Build (or load) the overlap index of the val split in the background; its state, or
        ``NO_INSTANCES`` without starting anything when the dataset has no instance maps."""
        if not self.val.has_instances:
            return NO_INSTANCES
        state = self.tasks.submit("overlap-index", self._overlap_index)
        if wait:
            self.tasks.wait("overlap-index", timeout=600)
        return state

    def _overlap_index(self) -> OverlapIndex:
        path = self.cache_dir / OVERLAP_FILE
        if path.is_file() and self._saved_overlap_index() is not None:
            return self._saved_overlap_index()
        items = ((s.name, self.val[i].get("instance")) for i, s in enumerate(self.val.samples))
        index = build_overlap_index(items)
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path)
        return index
