"""Per-image predictions kept on disk, and the progress of slow ones.

A full-resolution image under a large model takes seconds to minutes on a CPU, so every prediction
of a val image is written once under ``<cache>/predictions/`` and read back by later requests and
later processes. The file name is a hash of the checkpoint's identity (path, size and mtime of its
weights file, which segmentor of it) and the image's (path, size, mtime) plus the inference
settings: a new checkpoint, a changed image or other settings never read a stale result. Files are
``numpy.savez`` archives (read with ``allow_pickle=False``): labels uint8, probabilities and
features float16. The folder is trimmed to ``max_bytes`` oldest first.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch

from dida import runs
from dida.inference import Progress
from dida.studio.predictions import ImagePrediction

DEFAULT_MAX_BYTES = 4 << 30
"""4 GiB: about 27 predictions of 2048 x 1024 images (150 MB each: probabilities 19 x 2 MB x 2 B,
features 256 x 256 x 512 x 2 B), thousands of SynthCity ones."""


def file_identity(path: Path) -> str:
    """``path|size|mtime_ns`` of a file (changes whenever the file is rewritten)."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


class ResultStore:
    """Predictions on disk keyed by (checkpoint identity, image identity, settings)."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder, self.max_bytes = Path(folder), max_bytes
        self._lock = threading.Lock()

    def path(self, checkpoint: str, image: str, settings: Hashable) -> Path:
        """The file of one prediction (hash of the three identities)."""
        key = "\n".join((checkpoint, image, repr(settings))).encode()
        return self.folder / f"{hashlib.sha1(key).hexdigest()}.npz"

    def get(self, checkpoint: str, image: str, settings: Hashable) -> ImagePrediction | None:
        """The stored prediction, or None (also for an unreadable file, which is removed)."""
        path = self.path(checkpoint, image, settings)
        try:
            with np.load(path, allow_pickle=False) as data:
                labels, probs, features = data["labels"], data["probs"], data["features"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
            return None
        return ImagePrediction(labels, probs, torch.from_numpy(features.astype(np.float32)))

    def put(
        self, checkpoint: str, image: str, settings: Hashable, prediction: ImagePrediction
    ) -> Path:
        """Write one prediction atomically, then trim the folder to ``max_bytes``."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            labels=prediction.labels,
            probs=prediction.probs.astype(np.float16),
            features=prediction.features.numpy().astype(np.float16),
        )
        path = self.path(checkpoint, image, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_bytes(path, buffer.getvalue())
        self._trim()
        return path

    def _trim(self) -> None:
        with self._lock:
            files = sorted(self.folder.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
            total = sum(p.stat().st_size for p in files)
            for old in files[:-1]:
                if total <= self.max_bytes:
                    break
                total -= old.stat().st_size
                old.unlink(missing_ok=True)


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
