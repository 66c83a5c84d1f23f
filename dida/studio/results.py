"""Per-image predictions kept on disk, and the progress of slow ones.

A full-resolution image under a large model takes seconds to minutes on a CPU, so every prediction
of a val image is written once under ``<cache>/predictions/`` and read back by later requests and
later processes. The file name is a hash of the checkpoint's identity (path, size and mtime of its
weights file, which segmentor of it) and the image's (path, size, mtime) plus the inference
settings: a new checkpoint, a changed image or other settings never read a stale result. Files are
compressed ``numpy.savez`` archives (read with ``allow_pickle=False``): labels uint8, probabilities
uint8 steps of 1/255, features float16, and (format 3) each pixel's three most probable classes and
their steps, so a label view reads only ``labels`` and a pixel readout only ``labels`` and the top
three — neither decompresses the whole probabilities (about 0.6 MB for a 512 x 256 SynthCity image,
against 6.2 MB before format 2). The folder is trimmed to ``max_bytes`` oldest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import zipfile
from collections.abc import Hashable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from dida import runs
from dida.inference import Progress
from dida.studio.predictions import (
    LRU,
    ImagePrediction,
    PixelReading,
    dequantize_probs,
    quantize_probs,
    stored_pixel_vectors,
    top_classes,
    top_reading,
)

DEFAULT_MAX_BYTES = 4 << 30
"""4 GiB: about 40 predictions of 2048 x 1024 images (at most 100 MB each: probabilities
19 x 2 MB x 1 B, features 256 x 512 x 256 x 2 B, both before compression), thousands of
SynthCity ones."""
MEMBER_MEMORY = 256 << 20
"""Bytes of member reads kept in memory: ≈ 70 tp reads of SynthCity images (3.5 MB: probabilities and
features), two of a 2048 × 1024 image (≈ 107 MB)."""
FORMAT = 3
"""Part of every file's key and folder name: files of an older layout are never read as this one
(format 2 had no top-3 members)."""


def file_identity(path: Path) -> str:
    """``path|size|mtime_ns`` of a file (changes whenever the file is rewritten)."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


class StoredTop(NamedTuple):
    """What a pixel readout needs of a stored prediction."""

    labels: np.ndarray
    """(H, W) uint8 train IDs."""
    classes: np.ndarray
    """(3, H, W) uint8: each pixel's most probable classes, most probable first."""
    steps: np.ndarray
    """(3, H, W) uint8: their probabilities in steps of 1/255."""

    def reading(self, source: str, x: int, y: int) -> PixelReading:
        """The readout at pixel (x, y): equal to ``pixel_reading`` on the whole prediction."""
        values = dequantize_probs(self.steps[:, y, x])
        return top_reading(source, int(self.labels[y, x]), self.classes[:, y, x], values)


class ResultStore:
    """Predictions on disk keyed by (checkpoint identity, image identity, settings)."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """Predictions live in ``folder/v<FORMAT>``; files of older formats (format 1 directly in
        ``folder``, later ones in ``folder/v<N>``) are removed: a stale cache of this project,
        never read again."""
        self.folder, self.max_bytes = Path(folder) / f"v{FORMAT}", max_bytes
        self._lock = threading.Lock()
        self._read = LRU(MEMBER_MEMORY, weigh=lambda arrays: sum(a.nbytes for a in arrays))
        old_folders = [Path(folder), *(Path(folder) / f"v{n}" for n in range(2, FORMAT))]
        for old in (p for f in old_folders for p in f.glob("*.npz")):
            old.unlink(missing_ok=True)
        for old in old_folders[1:]:
            with contextlib.suppress(OSError):  # absent, or holding files not of this project
                old.rmdir()

    def path(self, checkpoint: str, image: str, settings: Hashable) -> Path:
        """The file of one prediction (hash of the three identities)."""
        key = "\n".join((f"format {FORMAT}", checkpoint, image, repr(settings))).encode()
        return self.folder / f"{hashlib.sha1(key).hexdigest()}.npz"

    def get(self, checkpoint: str, image: str, settings: Hashable) -> ImagePrediction | None:
        """The stored prediction, or None (also for an unreadable file, which is removed)."""
        path = self.path(checkpoint, image, settings)
        try:
            with np.load(path, allow_pickle=False) as data:
                labels, steps, features = data["labels"], data["probs"], data["features"]
                if steps.dtype != np.uint8:
                    raise ValueError(f"probabilities stored as {steps.dtype}, not uint8 steps")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)
            return None
        features = torch.from_numpy(features.astype(np.float32))
        return ImagePrediction(labels, dequantize_probs(steps), features)

    def labels(self, checkpoint: str, image: str, settings: Hashable) -> np.ndarray | None:
        """Only the stored prediction's labels (H, W) uint8 — the probabilities and features stay
        compressed (about 0.4 ms instead of 26 ms for a SynthCity image) — or None (also for an
        unreadable file, which is removed)."""
        found = self._members(self.path(checkpoint, image, settings), ("labels",))
        return None if found is None else found[0]

    def top(self, checkpoint: str, image: str, settings: Hashable) -> StoredTop | None:
        """The stored labels and each pixel's three most probable classes and probabilities (what a
        pixel readout shows), without the whole probabilities; None as ``labels``."""
        path = self.path(checkpoint, image, settings)
        found = self._members(path, ("labels", "top_classes", "top_probs"))
        return None if found is None else StoredTop(*found)

    def pixel(
        self, checkpoint: str, image: str, settings: Hashable, x: int, y: int
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]] | None:
        """What the tp explanation reads at pixel (x, y) (``pixel_vectors``) from the stored
        probabilities and features, without converting the whole image; None as ``labels``."""
        path = self.path(checkpoint, image, settings)
        found = self._members(path, ("probs", "features"), (np.uint8, np.float16))
        return None if found is None else stored_pixel_vectors(*found, x, y)

    def _members(
        self, path: Path, names: tuple[str, ...], dtypes: tuple[type, ...] | None = None
    ) -> tuple[np.ndarray, ...] | None:
        """Some arrays of a stored file, of ``dtypes`` (uint8 by default), read-only and kept in an
        in-memory LRU of ``MEMBER_MEMORY`` bytes keyed by the file's path, modification time and size
        (the views of one image read the same members in turn; a file rewritten since is read
        again); None when absent, and for a damaged or foreign file, which is removed."""
        try:
            stamp = path.stat()
            key = (path, stamp.st_mtime_ns, stamp.st_size, names)
            found = self._read.get(key)
            if found is None:
                found = _read_members(path, names, dtypes or (np.uint8,) * len(names))
                self._read.put(key, found)
            return found
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)
            return None

    def put(
        self, checkpoint: str, image: str, settings: Hashable, prediction: ImagePrediction
    ) -> Path:
        """Write one prediction atomically, then trim the folder to ``max_bytes``."""
        steps = quantize_probs(prediction.probs)
        top_classes_, top_probs = top_classes(steps)
        data = npz_bytes(
            labels=prediction.labels,
            probs=steps,
            features=prediction.features.numpy().astype(np.float16),
            top_classes=top_classes_,
            top_probs=top_probs,
        )
        path = self.path(checkpoint, image, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_bytes(path, data)
        self._trim()
        return path

    def total_bytes(self) -> int:
        """Bytes the stored predictions take now."""
        return sum(_size(p) for p in self.folder.glob("*.npz"))

    def full(self, share: float = 1.0) -> bool:
        """The stored predictions take at least ``share`` of ``max_bytes``."""
        return self.total_bytes() >= share * self.max_bytes

    def _trim(self) -> None:
        with self._lock:
            files = sorted(self.folder.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
            total = sum(p.stat().st_size for p in files)
            for old in files[:-1]:
                if total <= self.max_bytes:
                    break
                total -= old.stat().st_size
                old.unlink(missing_ok=True)


NPZ_LEVEL = 1
"""zlib level of the stored files: level 1 writes a SynthCity prediction in less than half the time
of ``np.savez_compressed``'s level 6, for files about 10 % larger (``python -m scripts.bench_io``)."""


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """What ``np.savez_compressed`` writes (one ``<name>.npy`` member per array, read by
    ``np.load``), compressed at ``NPZ_LEVEL``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=NPZ_LEVEL) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _read_members(
    path: Path, names: tuple[str, ...], dtypes: tuple[type, ...]
) -> tuple[np.ndarray, ...]:
    """The named arrays of a stored file, read-only; raises for an absent, damaged or foreign
    file."""
    with np.load(path, allow_pickle=False) as data:
        arrays = tuple(data[name] for name in names)
    if any(a.dtype != dtype for a, dtype in zip(arrays, dtypes, strict=True)):
        raise ValueError(f"{path.name}: {names} are not of types {dtypes}")
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _size(path: Path) -> int:
    """A file's size; 0 when it was removed meanwhile (another thread trimming)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class ProgressBoard:
    """(done, total) of the predictions running now, keyed by (run id, image key); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, tuple[int, int]] = {}

    def reporter(self, key: Hashable, also: Progress | None = None) -> Progress:
        """A ``dida.inference.Progress`` callback recording under ``key`` (and calling ``also``)."""

        def report(done: int, total: int) -> None:
            with self._lock:
                self._running[key] = (done, total)
            if also is not None:
                also(done, total)

        return report

    def get(self, key: Hashable) -> tuple[int, int] | None:
        """(windows done, windows in all) of a running prediction, None when none runs."""
        with self._lock:
            return self._running.get(key)

    def finish(self, key: Hashable) -> None:
        """Forget a finished (or failed) prediction."""
        with self._lock:
            self._running.pop(key, None)
