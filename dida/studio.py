"""The engine-side registry behind the app: runs, models, predictions, banks, data and jobs.

One :class:`Studio` per process. Heavy shared objects — loaded models, cached predictions, bank
histories, projections — live here keyed by run id, so every browser session shares them; the app keeps
only ids and small values per user. Nothing here imports the UI.

* Runs come from shipped checkpoints (``ASSETS/checkpoints/<name>/`` with ``model.safetensors`` and
  ``config.json``) and run directories (``runs/<name>/``, finished or in progress). A run id is
  ``"shipped:<name>"`` or ``"run:<name>"``.
* Images are the target val split of a SynthCity tree (int keys) or validated uploads (str keys).
* Slow work (a whole-val-set pass of one model, UMAP projections, the image index) runs in one
  background worker thread; training runs in another, one job at a time, with a visible queue.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import queue
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dida import runs
from dida.analysis import (
    MIN_UMAP_POINTS,
    ImageScores,
    Projector,
    per_image_scores,
    rare_classes,
)
from dida.bank import BankHistory, BankSnapshot
from dida.data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from dida.data.datasets import (
    CityscapesDataset,
    ClassStats,
    DatasetError,
    build_dataset,
    class_pixel_totals,
    load_class_stats,
)
from dida.data.imageio import ImageSizeError, open_image
from dida.data.overlap import OverlapIndex, build_overlap_index
from dida.data.synthcity import ensure_synthcity, read_manifest, synthcity_roots
from dida.evaluate import confusion_matrix, seg_metrics
from dida.explain import (
    ImageFeatureCache,
    PixelExplanation,
    TpSweep,
    distribution_over_tps,
    explain_pixel,
)
from dida.inference import predict_image
from dida.model import ModelConfig, SegModel
from dida.presets import PRESETS, preset_config
from dida.train import TrainConfig, TrainEvent, cli_args, train

log = logging.getLogger(__name__)

METHOD_TITLES: dict[str, str] = {
    "source_only": "source-only",
    "proda": "ProDA-style",
    "daformer": "DAFormer-style",
    "dida": "DIDA",
    "oracle": "oracle",
}
"""Display name of each method (the app's labels and legends)."""

SHIPPED, RUN = "shipped", "run"
MODEL_CARD = "MODEL_CARD.md"
OVERLAP_FILE = "overlap_index.json"
MAX_UPLOAD_PIXELS = 16_000_000
"""Uploads above this many pixels are refused (decompression bombs, memory)."""
MAX_UPLOAD_SIDE = 1024
"""Uploads are downscaled so their longer side is at most this (inference time)."""
MIN_UPLOAD_SIDE = 32
"""The encoder needs at least 32 x 32 pixels."""

ImageKey = int | str
"""A val image index or an upload key (``"upload:<hash>"``)."""


# ---------------------------------------------------------------------------------------------
# Small value types


@dataclass(frozen=True)
class RunSummary:
    """What the app lists about one run or shipped checkpoint."""

    run_id: str
    """``"shipped:<name>"`` or ``"run:<name>"``."""
    name: str
    """Folder name."""
    kind: str
    """``"shipped"`` or ``"run"``."""
    path: Path
    """The folder."""
    method: str
    """Method name (a key of ``METHOD_TITLES``)."""
    state: str
    """``finished``, ``running``, ``stopped``, ``created``, ``failed``, ``shipped`` or ``unknown``."""
    iteration: int
    """Last recorded iteration (0 when unknown)."""
    max_iters: int
    """Planned iterations."""
    miou: float | None
    """Last evaluated mIoU (19 classes, fraction) or None."""
    has_model: bool
    """Whether ``model.safetensors`` exists (the run can predict)."""
    has_bank: bool
    """Whether a bank history exists (DIDA runs)."""
    method_options: dict = field(default_factory=dict, compare=False)
    """The run's method options (tp, bank_size, ...)."""

    @property
    def short_title(self) -> str:
        """``DIDA · <name>`` (panel titles)."""
        return f"{METHOD_TITLES.get(self.method, self.method)} · {self.name}"

    @property
    def title(self) -> str:
        """Label for dropdowns and legends, e.g. ``DIDA · dida_quick_s0 (41.2)``."""
        score = "" if self.miou is None else f" ({100 * self.miou:.1f})"
        tag = " · shipped" if self.kind == SHIPPED else f" · {self.state}"
        return f"{METHOD_TITLES.get(self.method, self.method)} · {self.name}{score}{tag}"


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


@dataclass(frozen=True)
class ImagePrediction:
    """One model's output on one image, compact enough to keep many in memory."""

    labels: np.ndarray
    """(H, W) uint8 argmax train IDs."""
    probs: np.ndarray
    """(C, H, W) float16 softmax probabilities."""
    features: torch.Tensor
    """(D, ceil(H/4), ceil(W/4)) float32 decoder features E."""


@dataclass(frozen=True)
class PixelReading:
    """Ground truth or one model at one pixel."""

    source: str
    """Run title or ``"ground truth"``."""
    class_id: int
    """Train ID (255 = ignore)."""
    prob: float | None
    """Probability of ``class_id`` (None for the ground truth)."""
    top: tuple[tuple[int, float], ...] = ()
    """The three most probable (train ID, probability) pairs."""

    @property
    def class_name(self) -> str:
        return CLASSES[self.class_id] if self.class_id < NUM_CLASSES else "ignore"


@dataclass(frozen=True)
class ValPass:
    """One model over the whole val split: predicted labels and per-image confusion matrices."""

    labels: list[np.ndarray]
    """(H, W) uint8 prediction of every val image."""
    confusions: np.ndarray
    """(N, C, C) int64 per-image confusion matrices (rows = ground truth)."""

    def metrics(self) -> dict:
        """Metrics of the whole split (``SegMetrics.to_dict`` format)."""
        return seg_metrics(torch.from_numpy(self.confusions.sum(0))).to_dict()


class UploadError(ValueError):
    """An uploaded file cannot be used as an image; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Pure helpers


def run_id(kind: str, name: str) -> str:
    """``"shipped:<name>"`` or ``"run:<name>"``."""
    return f"{kind}:{name}"


def image_prediction(probs: torch.Tensor, features: torch.Tensor) -> ImagePrediction:
    """Compact prediction of one image from probs (C, H, W) and features (D, h, w)."""
    return ImagePrediction(
        labels=probs.argmax(0).to(torch.uint8).cpu().numpy(),
        probs=probs.to(torch.float16).cpu().numpy(),
        features=features.float().cpu(),
    )


def pixel_reading(source: str, prediction: ImagePrediction, x: int, y: int) -> PixelReading:
    """Class, probability and top-3 of ``prediction`` at pixel (x, y)."""
    p = prediction.probs[:, y, x].astype(np.float32)  # (C,)
    order = np.argsort(-p)[:3]
    top = tuple((int(c), float(p[c])) for c in order)
    return PixelReading(
        source, int(prediction.labels[y, x]), float(p[prediction.labels[y, x]]), top
    )


def image_confusion(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(C, C) int64 confusion matrix of one image (rows = ground truth)."""
    return confusion_matrix(
        torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(label.astype(np.int64))
    ).numpy()


def per_class_iou(pred: np.ndarray, label: np.ndarray) -> dict[str, float | None]:
    """Per-class IoU of one image (None where undefined), keyed by class name."""
    return seg_metrics(torch.from_numpy(image_confusion(pred, label))).to_dict()["IoU"]


def slot_rows(snapshot: BankSnapshot, changed_only: bool = False) -> list[dict[str, Any]]:
    """One dict per slot: slot, class, age, last write, changed, source image, box."""
    written = snapshot.ages.long()
    ages = torch.where(written >= 0, snapshot.iteration - written, -1)
    rows = []
    for k in range(len(snapshot.labels)):
        changed = bool(snapshot.changed[k])
        if changed_only and not changed:
            continue
        box = None if snapshot.boxes is None else [int(v) for v in snapshot.boxes[k]]
        rows.append(
            {
                "slot": k,
                "class": CLASSES[int(snapshot.labels[k])],
                "age": int(ages[k]),
                "written_at": int(snapshot.ages[k]),
                "changed": changed,
                "source_id": int(snapshot.source_ids[k]),
                "box": box if box and min(box) >= 0 else None,
            }
        )
    return rows


def sample_pixel_features(
    prediction: ImagePrediction, label: np.ndarray | None, count: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Up to ``count`` random feature-grid pixels of one image: ``features`` (n, D) float32,
    ``pred`` (n,) and ``gt`` (n,) train IDs at those pixels (gt = 255 without a label)."""
    feats = prediction.features  # (D, h, w)
    d, h, w = feats.shape
    rng = np.random.default_rng(seed)
    cells = rng.choice(h * w, size=min(count, h * w), replace=False)
    ys, xs = cells // w, cells % w
    full_h, full_w = prediction.labels.shape
    py = np.minimum(ys * 4 + 2, full_h - 1)
    px = np.minimum(xs * 4 + 2, full_w - 1)
    gt = np.full(len(cells), IGNORE_INDEX) if label is None else label[py, px].astype(np.int64)
    return {
        "features": feats.reshape(d, -1)[:, cells].T.numpy().astype(np.float32),
        "pred": prediction.labels[py, px].astype(np.int64),
        "gt": gt,
    }


@dataclass(frozen=True)
class PointSet:
    """Feature vectors to project, with what the UMAP view colours and hovers by."""

    features: np.ndarray
    """(N, D) float32."""
    domain: np.ndarray
    """(N,) str: ``"bank (source)"`` or ``"target pixel"``."""
    label: np.ndarray
    """(N,) int64 slot class / ground-truth class (255 = unknown)."""
    pred: np.ndarray
    """(N,) int64 class the model's classifier gives the feature."""
    age: np.ndarray
    """(N,) int64 iterations since a slot's last write (-1: never written, or a pixel)."""
    slot: np.ndarray
    """(N,) int64 slot index (-1 for pixels)."""

    @property
    def correct(self) -> np.ndarray:
        """(N,) str: classifier agrees with the label, disagrees, or no label."""
        known = self.label != IGNORE_INDEX
        return np.where(~known, "unlabelled", np.where(self.pred == self.label, "correct", "wrong"))


def classify_features(model: SegModel, features: torch.Tensor) -> np.ndarray:
    """The model's 1x1 classifier on decoder features (N, D) → (N,) train IDs."""
    head = model.decode_head.conv_seg
    with torch.no_grad():
        x = features.float().to(head.weight.device)[:, :, None, None]  # (N, D, 1, 1)
        return head(x)[:, :, 0, 0].argmax(1).cpu().numpy()


def bank_points(snapshot: BankSnapshot, model: SegModel) -> PointSet:
    """The K slots of a snapshot as points (pred = the classifier's class of each slot feature)."""
    ages = snapshot.ages.long()
    return PointSet(
        features=snapshot.features.float().numpy(),
        domain=np.full(len(ages), "bank (source)"),
        label=snapshot.labels.long().numpy(),
        pred=classify_features(model, snapshot.features),
        age=torch.where(ages >= 0, snapshot.iteration - ages, -1).numpy(),
        slot=np.arange(len(ages)),
    )


def pixel_points(sample: dict[str, np.ndarray]) -> PointSet:
    """Sampled target pixels (``sample_pixel_features``) as points."""
    n = len(sample["pred"])
    return PointSet(
        features=sample["features"],
        domain=np.full(n, "target pixel"),
        label=sample["gt"],
        pred=sample["pred"],
        age=np.full(n, -1),
        slot=np.full(n, -1),
    )


def join_points(a: PointSet, b: PointSet) -> PointSet:
    """Concatenate two point sets (same feature width)."""
    return PointSet(
        *(np.concatenate([getattr(a, f), getattr(b, f)]) for f in PointSet.__dataclass_fields__)
    )


def load_upload(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an uploaded file as uint8 RGB (H, W, 3) → (image, notes on the conversions made).

    Grayscale and palette images are converted to RGB, RGBA loses its alpha over black, images whose
    longer side exceeds ``MAX_UPLOAD_SIDE`` are downscaled. Raises :class:`UploadError` for a file that
    is not an image, is larger than ``MAX_UPLOAD_PIXELS`` or smaller than 32 x 32.
    """
    path = Path(path)
    try:
        with open_image(path, MAX_UPLOAD_PIXELS) as im:
            image, notes = _to_rgb(im, path.name)
    except ImageSizeError as err:
        raise UploadError(str(err)) from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, UploadError):
            raise
        raise UploadError(
            f"{path.name} is not a readable image ({type(err).__name__}: {err}); upload a PNG or JPEG"
        ) from err
    return image, notes


def _to_rgb(im: Image.Image, name: str) -> tuple[np.ndarray, list[str]]:
    w, h = im.size
    if min(w, h) < MIN_UPLOAD_SIDE:
        raise UploadError(f"{name} is {w}x{h}; the model needs at least 32x32 pixels")
    notes = []
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        notes.append(f"{name}: alpha channel dropped (transparent pixels shown over black)")
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    elif im.mode not in ("RGB",):
        notes.append(f"{name}: {im.mode} image converted to RGB")
    im = im.convert("RGB")
    if max(w, h) > MAX_UPLOAD_SIDE:
        scale = MAX_UPLOAD_SIDE / max(w, h)
        size = (max(MIN_UPLOAD_SIDE, round(w * scale)), max(MIN_UPLOAD_SIDE, round(h * scale)))
        im = im.resize(size, Image.Resampling.BILINEAR)
        notes.append(f"{name}: downscaled from {w}x{h} to {size[0]}x{size[1]}")
    return np.asarray(im, dtype=np.uint8).copy(), notes


def upload_key(image: np.ndarray) -> str:
    """``"upload:<hash>"`` of an image's pixels (the same picture gets the same key)."""
    digest = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()[:12]
    return f"upload:{digest}"


def train_config(
    preset: str,
    method: str,
    data_root: str | Path,
    data_preset: str,
    iters: int | None = None,
    seed: int = 0,
    method_options: dict[str, Any] | None = None,
) -> TrainConfig:
    """A preset's TrainConfig for the app: SynthCity roots point at ``data_root`` when the preset
    uses the same SynthCity preset as the app's data, else at ``<data_root>-<preset>`` beside it."""
    cfg = preset_config(preset, method)
    root = Path(data_root)
    if cfg.data.synthcity_preset != data_preset:
        root = root.with_name(f"{root.name.split('-')[0]}-{cfg.data.synthcity_preset}")
    data = replace(cfg.data, source_root=str(root), target_root=str(root))
    options = {**cfg.method_options, **(method_options or {})}
    return replace(cfg, data=data, iters=iters or cfg.iters, seed=seed, method_options=options)


def warm_start(cfg: TrainConfig, start: Path) -> TrainConfig:
    """``cfg`` started from the weights of the run (or shipped checkpoint) in ``start``: its
    ``model.safetensors`` and the model config they were trained with (the architecture must be
    the start's; data, method and schedule stay ``cfg``'s)."""
    weights = Path(start) / runs.MODEL
    if not weights.is_file():
        raise runs.RunError(f"{start} has no {runs.MODEL} to start from; pick a run that has one")
    model = runs.read_json(Path(start) / runs.CONFIG)["model"]
    model.update(init_weights=str(weights), backbone_weights=None)  # the whole model is replaced
    return replace(cfg, model=ModelConfig.from_dict(model))


# ---------------------------------------------------------------------------------------------
# Caches and the background worker


class LRU:
    """A thread-safe least-recently-used mapping with a size limit."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize, self._data, self._lock = maxsize, OrderedDict(), threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class Worker:
    """One daemon thread running keyed tasks in order; a key queued or done is not queued again."""

    def __init__(self, name: str = "studio-worker") -> None:
        self._tasks: queue.Queue = queue.Queue()
        self._state: dict[Hashable, str] = {}
        self._results: dict[Hashable, Any] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, fn: Callable[[], Any]) -> str:
        """Queue ``fn`` under ``key`` unless it is queued, running or done; returns its state."""
        with self._lock:
            if self._state.get(key) in ("queued", "running", "done"):
                return self._state[key]
            self._state[key] = "queued"
        self._tasks.put((key, fn))
        return "queued"

    def forget(self, key: Hashable) -> None:
        """Drop a finished key's state and result, so it can be submitted again."""
        with self._lock:
            if self._state.get(key) not in ("queued", "running"):
                self._state.pop(key, None)
                self._results.pop(key, None)

    def state(self, key: Hashable) -> str | None:
        """``queued``, ``running``, ``done``, ``failed: <message>`` or None (never submitted)."""
        with self._lock:
            return self._state.get(key)

    def result(self, key: Hashable) -> Any | None:
        with self._lock:
            return self._results.get(key)

    def wait(self, key: Hashable, timeout: float = 60.0) -> Any | None:
        """Block until ``key`` is done or failed (or ``timeout``); returns its result."""
        deadline = time.monotonic() + timeout
        while self.state(key) in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.result(key)

    def _loop(self) -> None:
        while True:
            key, fn = self._tasks.get()
            with self._lock:
                self._state[key] = "running"
            try:
                value, state = fn(), "done"
            except Exception as err:  # a failed task is reported, the worker lives on
                log.warning("background task %s failed: %s", key, traceback.format_exc())
                value, state = None, f"failed: {type(err).__name__}: {err}"
            with self._lock:
                self._results[key], self._state[key] = value, state


# ---------------------------------------------------------------------------------------------
# Training jobs


@dataclass
class TrainJob:
    """One training request of the app."""

    job_id: str
    name: str
    """Run name (folder under the first runs directory)."""
    config: TrainConfig
    run_dir: Path
    state: str = "queued"
    """``queued``, ``running``, ``finished``, ``stopped``, ``cancelled`` or ``failed``."""
    events: deque = field(default_factory=lambda: deque(maxlen=2000))
    """The latest TrainEvents (train/eval events drive the live curves)."""
    stop_flag: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    command: list[str] = field(default_factory=list)
    """The ``python -m dida.train`` command that trains the same run (recorded in its config)."""

    @property
    def last(self) -> TrainEvent | None:
        return self.events[-1] if self.events else None

    @property
    def done(self) -> bool:
        return self.state in ("finished", "stopped", "cancelled", "failed")


class TrainQueue:
    """Runs one training job at a time in a worker thread; the others wait in order."""

    def __init__(self, runs_dir: Path, on_done: Callable[[TrainJob], None] | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.on_done = on_done
        self.jobs: dict[str, TrainJob] = {}
        self._pending: deque[str] = deque()
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._loop, name="studio-train", daemon=True)
        self._thread.start()

    def submit(self, config: TrainConfig, name: str, command: list[str] | None = None) -> TrainJob:
        """Queue a job training ``config`` into ``runs_dir/name``; ``command`` is the equivalent
        command line recorded in the run's config."""
        if (self.runs_dir / name / runs.CONFIG).exists() or self._name_taken(name):
            raise ValueError(
                f"a run named {name!r} already exists in {self.runs_dir}; pick another name"
            )
        job = TrainJob(
            f"job{next(self._ids)}",
            name,
            config,
            self.runs_dir / name,
            command=command or ["studio"],
        )
        with self._lock:
            self.jobs[job.job_id] = job
            self._pending.append(job.job_id)
        self._wake.set()
        return job

    def _name_taken(self, name: str) -> bool:
        with self._lock:
            return any(j.name == name and not j.done for j in self.jobs.values())

    def position(self, job_id: str) -> int | None:
        """0 = running, n = n-th in the queue, None = finished or unknown."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.done:
                return None
            if job.state == "running":
                return 0
            return list(self._pending).index(job_id) + 1

    def stop(self, job_id: str) -> TrainJob:
        """Ask a running job to stop after its current iteration, or drop a queued one."""
        job = self.get(job_id)
        job.stop_flag.set()
        with self._lock:
            if job_id in self._pending:
                self._pending.remove(job_id)
                job.state = "cancelled"
        return job

    def get(self, job_id: str) -> TrainJob:
        with self._lock:
            if job_id not in self.jobs:
                raise KeyError(f"no training job {job_id!r}; known jobs: {sorted(self.jobs)}")
            return self.jobs[job_id]

    def active(self) -> TrainJob | None:
        with self._lock:
            return next((j for j in self.jobs.values() if j.state == "running"), None)

    def _next(self) -> TrainJob | None:
        with self._lock:
            if not self._pending:
                return None
            job = self.jobs[self._pending.popleft()]
            job.state = "running"
            return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: TrainJob) -> None:
        try:
            for event in train(
                job.config, job.run_dir, stop=job.stop_flag.is_set, argv=job.command
            ):
                job.events.append(event)
            job.state = "stopped" if job.last and job.last.kind == "stopped" else "finished"
        except Exception as err:  # reported in the Train tab; the queue goes on
            job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            log.warning("training job %s failed:\n%s", job.job_id, traceback.format_exc())
            if (job.run_dir / runs.CONFIG).exists():
                runs.write_status(job.run_dir, "failed", error=job.error)
        if self.on_done is not None:
            self.on_done(job)


# ---------------------------------------------------------------------------------------------
# The registry


class Studio:
    """Runs, models, predictions, bank histories, the val data and training jobs of one process."""

    def __init__(
        self,
        data_root: str | Path,
        runs_dirs: Sequence[str | Path] = ("runs",),
        assets_dir: str | Path | None = "assets",
        device: str = "cpu",
        data_preset: str = "default",
        cache_size: int = 32,
    ) -> None:
        """Open (generating when missing) the val split of the SynthCity tree at ``data_root``."""
        self.data_root = ensure_synthcity(data_root, data_preset, ("val",))
        self.data_preset = data_preset
        self.runs_dirs = [Path(d) for d in runs_dirs] or [Path("runs")]
        self.assets_dir = None if assets_dir is None else Path(assets_dir)
        self.device = torch.device(_device(device))
        self.val = CityscapesDataset(synthcity_roots(self.data_root)[1], "val")
        self.problems: list[str] = []
        self._runs: dict[str, RunSummary] = {}
        self._models: dict[str, tuple[int, SegModel]] = {}
        self._banks: dict[str, tuple[int, BankHistory]] = {}
        self._predictions, self._items = LRU(cache_size), LRU(64)
        self._uploads: LRU = LRU(16)
        self._lock, self._infer_lock = threading.RLock(), threading.Lock()
        self.worker, self.umap_worker = Worker(), Worker("studio-umap")
        self._features = ImageFeatureCache(capacity=8)
        self.trainer = TrainQueue(self.runs_dirs[0], on_done=lambda job: self.refresh())
        self._projectors: dict[str, Any] = {}
        self._stats: list[dict] | None = None
        self._overlaps: OverlapIndex | bool | None = None
        self._pass_progress: dict[str, int] = {}
        self.refresh()

    # --- runs ------------------------------------------------------------------------------

    def refresh(self) -> list[RunSummary]:
        """Rediscover shipped checkpoints and run directories (new, finished or changed runs)."""
        found, problems = {}, []
        for summary in self._discover(problems):
            found[summary.run_id] = summary
        with self._lock:
            self._runs, self.problems = found, problems
        if (
            self.worker.state("source-stats") == "done"
            and self.worker.result("source-stats") is None
        ):
            self.worker.forget("source-stats")
        return self.runs()

    def _discover(self, problems: list[str]) -> list[RunSummary]:
        folders = []
        if self.assets_dir is not None and (self.assets_dir / "checkpoints").is_dir():
            folders += [(SHIPPED, p) for p in sorted((self.assets_dir / "checkpoints").iterdir())]
        for runs_dir in self.runs_dirs:
            if runs_dir.is_dir():
                folders += [(RUN, p) for p in sorted(runs_dir.iterdir())]
        summaries = []
        for kind, folder in folders:
            if not (folder / runs.CONFIG).is_file():
                continue
            try:
                summaries.append(_summarize(kind, folder))
            except (runs.RunError, KeyError, TypeError, ValueError) as err:
                problems.append(f"{folder}: cannot be listed ({err})")
        return summaries

    def runs(self, with_model: bool = False, with_bank: bool = False) -> list[RunSummary]:
        """Known runs, shipped first; optionally only those that can predict / have a bank."""
        with self._lock:
            found = list(self._runs.values())
        return [
            r for r in found if (r.has_model or not with_model) and (r.has_bank or not with_bank)
        ]

    def featured_runs(self, limit: int = 4) -> list[str]:
        """One run per method (shipped first, then the best mIoU), DIDA, DAFormer, ProDA,
        source-only in that order: what the Compare tab shows first."""
        order = {"dida": 0, "daformer": 1, "proda": 2, "source_only": 3}
        ranked = sorted(
            self.runs(with_model=True),
            key=lambda r: (r.kind != SHIPPED, -(r.miou or 0.0), r.name),
        )
        chosen: dict[str, str] = {}
        for summary in ranked:
            chosen.setdefault(summary.method, summary.run_id)
        return [rid for _, rid in sorted(chosen.items(), key=lambda kv: order.get(kv[0], 9))][
            :limit
        ]

    def run(self, run_id: str) -> RunSummary:
        with self._lock:
            if run_id not in self._runs:
                known = ", ".join(sorted(self._runs)) or "none (train one in the Train tab)"
                raise KeyError(f"unknown run {run_id!r}; known runs: {known}")
            return self._runs[run_id]

    def model(self, run_id: str) -> SegModel:
        """The run's model, loaded once and reloaded when its weights file changes."""
        summary = self.run(run_id)
        path = summary.path / runs.MODEL
        if not path.exists():
            raise runs.RunError(f"{summary.name} has no {runs.MODEL} yet (no checkpoint written)")
        stamp = path.stat().st_mtime_ns
        with self._lock:
            cached = self._models.get(run_id)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            model = runs.load_run_model(summary.path, self.device)
            self._models[run_id] = (stamp, model)
            return model

    def model_stamp(self, run_id: str) -> int:
        """Modification time of the run's weights (cache keys change when a run checkpoints)."""
        path = self.run(run_id).path / runs.MODEL
        return path.stat().st_mtime_ns if path.exists() else 0

    def model_card(self, run_id: str) -> str:
        """The shipped MODEL_CARD.md or the run's README.md (empty when neither exists)."""
        folder = self.run(run_id).path
        for name in (MODEL_CARD, runs.SUMMARY):
            if (folder / name).is_file():
                return (folder / name).read_text()
        return ""

    def bank_history(self, run_id: str) -> BankHistory | None:
        """The run's bank snapshots (None for runs without a bank), reloaded when the file changes."""
        path = _bank_path(self.run(run_id).path)
        if path is None:
            return None
        stamp = path.stat().st_mtime_ns
        with self._lock:
            cached = self._banks.get(run_id)
            if cached is None or cached[0] != stamp:
                cached = (stamp, BankHistory.load(path))
                self._banks[run_id] = cached
            return cached[1]

    def snapshot(self, run_id: str, index: int = -1) -> BankSnapshot:
        """Bank snapshot ``index`` (negative counts from the end) of a run."""
        history = self.bank_history(run_id)
        if history is None or len(history) == 0:
            raise runs.RunError(f"{self.run(run_id).name} has no bank snapshots (not a DIDA run?)")
        if not -len(history) <= index < len(history):
            raise IndexError(f"snapshot {index} out of range: the run has {len(history)} snapshots")
        return history[index]

    def metrics(self, run_id: str, kind: str | None = None) -> list[dict]:
        """The run's metric records (``runs.read_metrics``)."""
        return runs.read_metrics(self.run(run_id).path, kind)

    # --- images ----------------------------------------------------------------------------

    def val_items(self) -> list[ValItem]:
        """Every val image with its classes and (once indexed) its overlap flag."""
        stats, overlaps = self._val_stats(), self.overlap_flags()
        return [
            ValItem(i, s.name, s.image, tuple(sorted(int(k) for k in stats[i] if k != "file")),
                    None if overlaps is None else overlaps[i])
            for i, s in enumerate(self.val.samples)
        ]  # fmt: skip

    def _val_stats(self) -> list[dict]:
        with self._lock:
            if self._stats is None:
                self._stats = load_class_stats(self.val, cache_dir=self.data_root / ".studio")
            return self._stats

    def target_stats(self) -> ClassStats:
        """DAFormer-format class statistics of the target val split (cached next to the data)."""
        return self._val_stats()

    def source_stats(self, wait: bool = False) -> ClassStats | None:
        """Class statistics of a source dataset: the data root's SynthCity source split, else the
        first run's source folder on disk. Computed in the background (None until ready or when
        no source data exists; ``source_stats_state`` tells which)."""
        self.worker.submit("source-stats", self._find_source_stats)
        if wait:
            self.worker.wait("source-stats", timeout=600)
        return self.worker.result("source-stats")

    def source_stats_state(self) -> str | None:
        return self.worker.state("source-stats")

    def _find_source_stats(self) -> ClassStats | None:
        for kind, root in self._source_roots():
            try:
                return load_class_stats(build_dataset(kind, root), self.data_root / ".studio")
            except DatasetError as err:
                log.info("no source statistics from %s: %s", root, err)
        return None

    def _source_roots(self) -> list[tuple[str, Path]]:
        roots = []
        if "source" in (read_manifest(self.data_root) or {}).get("splits", {}):
            roots.append(("gta5", synthcity_roots(self.data_root)[0]))
        for summary in self.runs():
            data = runs.read_json(summary.path / runs.CONFIG).get("data", {})
            kind, root = data.get("source", "synthcity"), Path(data.get("source_root", ""))
            if kind == "synthcity":
                kind, root = "gta5", synthcity_roots(root)[0]
            if root.is_dir() and (kind, root) not in roots:
                roots.append((kind, root))
        return roots

    def rare_classes(self) -> list[int]:
        """Classes below ``RARE_PIXEL_FRACTION`` of the val pixels, rarest first."""
        return rare_classes(class_pixel_totals(self._val_stats()))

    def overlap_flags(self) -> list[bool] | None:
        """Per val image: touching entities of different thing classes? None until indexed (a
        saved index is read at once; building one runs in the background, see index_overlaps)."""
        index = self.worker.result("overlap-index")
        if index is None and (self.data_root / ".studio" / OVERLAP_FILE).is_file():
            index = self._saved_overlap_index()
        return None if index is None else [bool(i.pairs) for i in index.images]

    def _saved_overlap_index(self) -> OverlapIndex | None:
        """The saved index when it lists exactly the val images, else None."""
        with self._lock:
            if self._overlaps is None:
                index = OverlapIndex.load(self.data_root / ".studio" / OVERLAP_FILE)
                names = [s.name for s in self.val.samples]
                self._overlaps = index if [i.name for i in index.images] == names else False
            return self._overlaps or None

    def index_overlaps(self, wait: bool = False) -> str:
        """Build (or load) the overlap index of the val split in the background."""
        state = self.worker.submit("overlap-index", self._overlap_index)
        if wait:
            self.worker.wait("overlap-index", timeout=600)
        return state

    def _overlap_index(self) -> OverlapIndex:
        path = self.data_root / ".studio" / OVERLAP_FILE
        if path.is_file() and self._saved_overlap_index() is not None:
            return self._saved_overlap_index()
        items = ((s.name, self.val[i]["instance"]) for i, s in enumerate(self.val.samples))
        index = build_overlap_index(items)
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path)
        return index

    def item(self, key: ImageKey) -> dict:
        """``{"image", "label" (None for uploads), "name"}`` of a val index or an upload key."""
        if isinstance(key, str):
            image = self._uploads.get(key)
            if image is None:
                raise KeyError(f"upload {key!r} is no longer cached; upload the image again")
            return {"image": image, "label": None, "name": key}
        if not 0 <= int(key) < len(self.val):
            raise IndexError(f"val image {key} out of range 0-{len(self.val) - 1}")
        item = self._items.get(int(key))
        if item is None:
            item = self.val[int(key)]
            self._items.put(int(key), item)
        return item

    def add_upload(self, path: str | Path) -> tuple[str, list[str]]:
        """Validate and keep an uploaded image → (key, conversion notes); raises UploadError."""
        image, notes = load_upload(path)
        key = upload_key(image)
        self._uploads.put(key, image)
        return key, notes

    @property
    def thumbnail_dir(self) -> Path:
        """Where ``thumbnail`` writes (``<data>/.studio/thumbs``)."""
        return self.data_root / ".studio" / "thumbs"

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

    def prefetch(self, run_ids: Sequence[str], key: ImageKey = 0, thumbnails: int = 120) -> str:
        """Load models, predict one image and write thumbnails in the background (app start)."""

        def work() -> None:
            for rid in run_ids:
                self.predict(rid, key)
            for i in range(min(thumbnails, len(self.val))):
                self.thumbnail(i)

        return self.worker.submit(("prefetch", tuple(run_ids), key), work)

    # --- predictions -----------------------------------------------------------------------

    def predict(self, run_id: str, key: ImageKey) -> ImagePrediction:
        """The run's prediction on an image (LRU-cached; recomputed when the run checkpoints)."""
        cache_key = (run_id, self.model_stamp(run_id), key)
        cached = self._predictions.get(cache_key)
        if cached is not None:
            return cached
        model, image = self.model(run_id), self.item(key)["image"]
        with self._infer_lock:
            out = predict_image(model, image)
        prediction = image_prediction(out.probs[0], out.features[0])
        self._predictions.put(cache_key, prediction)
        return prediction

    def readout(self, run_ids: Sequence[str], key: ImageKey, x: int, y: int) -> list[PixelReading]:
        """Ground truth (when labelled) and every run's class and probability at pixel (x, y)."""
        item = self.item(key)
        h, w = item["image"].shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"pixel ({x}, {y}) is outside the {w}x{h} image")
        readings = []
        if item["label"] is not None:
            readings.append(PixelReading("ground truth", int(item["label"][y, x]), None))
        for rid in run_ids:
            readings.append(pixel_reading(self.run(rid).title, self.predict(rid, key), x, y))
        return readings

    def image_iou(
        self, run_ids: Sequence[str], key: ImageKey
    ) -> dict[str, dict[str, float | None]]:
        """Per-class IoU of each run on one labelled image: ``{run_id: {class: IoU}}``."""
        label = self.item(key)["label"]
        if label is None:
            raise ValueError("an uploaded image has no ground truth, so no IoU")
        return {rid: per_class_iou(self.predict(rid, key).labels, label) for rid in run_ids}

    def class_pixels(self, key: ImageKey) -> np.ndarray:
        """(C,) int64 ground-truth pixels of each class in a labelled image."""
        label = self.item(key)["label"]
        if label is None:
            raise ValueError("an uploaded image has no ground truth")
        return np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES].astype(np.int64)

    # --- whole-split passes ----------------------------------------------------------------

    def val_pass(self, run_id: str, start: bool = True) -> ValPass | None:
        """The run over every val image (None until computed; ``start`` queues it)."""
        key = ("val-pass", run_id, self.model_stamp(run_id))
        result = self.worker.result(key)
        if result is None and start:
            self.worker.submit(key, lambda: self._val_pass(run_id))
        return result

    def _val_pass(self, run_id: str) -> ValPass:
        model, labels, confusions = self.model(run_id), [], []
        for i in range(len(self.val)):
            item = self.item(i)
            with self._infer_lock:
                pred = predict_image(model, item["image"]).labels[0].to(torch.uint8).numpy()
            labels.append(pred)
            confusions.append(image_confusion(pred, item["label"]))
            self._pass_progress[run_id] = i + 1
        return ValPass(labels, np.stack(confusions))

    def val_pass_progress(self, run_id: str) -> tuple[int, int]:
        """(images done, images in the val split) of the run's val pass."""
        done = (
            len(self.val)
            if self.val_pass(run_id, start=False)
            else self._pass_progress.get(run_id, 0)
        )
        return done, len(self.val)

    def val_metrics(self, run_id: str) -> dict | None:
        """Whole-val metrics: from a finished val pass, else the run's last evaluation record."""
        passed = self.val_pass(run_id, start=False)
        if passed is not None:
            return passed.metrics()
        evals = self.metrics(run_id, "eval")
        return evals[-1] if evals else None

    def image_scores(self, run_a: str, run_b: str) -> ImageScores | None:
        """Per-image mIoU of b minus a on every val image (None until both val passes are done)."""
        passes = [self.val_pass(run_a), self.val_pass(run_b)]
        if any(p is None for p in passes):
            return None
        labels = (self.item(i)["label"] for i in range(len(self.val)))
        return per_image_scores(passes[0].labels, passes[1].labels, labels)

    def source_crop(
        self, run_id: str, source_id: int, box: Sequence[int] | None
    ) -> np.ndarray | None:
        """The source image (cropped to ``box`` (x0, y0, x1, y1) when given) a slot was filled
        from, or None when the slot has no recorded source or the run's source data is gone."""
        if source_id < 0:
            return None
        data = runs.read_json(self.run(run_id).path / runs.CONFIG).get("data", {})
        kind, root = data.get("source", "synthcity"), Path(data.get("source_root", ""))
        if kind == "synthcity":
            kind, root = "gta5", synthcity_roots(root)[0]
        try:
            image = build_dataset(kind, root, require_labels=False)[source_id]["image"]
        except (DatasetError, IndexError):
            return None
        if box is None:
            return image
        x0, y0, x1, y1 = box
        return image[y0:y1, x0:x1]

    # --- explanation and projection --------------------------------------------------------

    def explain(
        self, run_id: str, key: ImageKey, x: int, y: int, tp: float, snapshot: int = -1
    ) -> PixelExplanation:
        """``dida.explain.explain_pixel`` with a run's model, options and bank snapshot; the image's
        features are cached, so a new pixel or tp costs only the K-way softmax."""
        options = self.run(run_id).method_options
        return explain_pixel(
            self.model(run_id),
            self.item(key)["image"],
            self.snapshot(run_id, snapshot),
            x,
            y,
            tp,
            alpha=_option(options, "scatter_alpha", 0.5),
            normalize=_option(options, "normalize", True),
            cache=self._features,
            model_key=(run_id, self.model_stamp(run_id)),
        )

    def tp_sweep(
        self, run_id: str, key: ImageKey, x: int, y: int, tps: Sequence[float], snapshot: int = -1
    ) -> TpSweep:
        """q at every tp of ``tps`` for one pixel (the common y-scale of the tp view)."""
        explanation = self.explain(run_id, key, x, y, tps[0], snapshot)
        normalize = _option(self.run(run_id).method_options, "normalize", True)
        return distribution_over_tps(
            explanation.feature, self.snapshot(run_id, snapshot), tps, normalize
        )

    # --- projections -----------------------------------------------------------------------

    def projector(self, run_id: str) -> Projector:
        """The run's Projector (one per run, so the layout stays put across snapshots)."""
        with self._lock:
            if run_id not in self._projectors:
                self._projectors[run_id] = Projector()
            return self._projectors[run_id]

    def points(
        self, run_id: str, snapshot: int = -1, pixels: ImageKey | None = None, count: int = 300
    ) -> PointSet:
        """Bank slots of a snapshot, plus ``count`` sampled pixel features of image ``pixels``."""
        snap, model = self.snapshot(run_id, snapshot), self.model(run_id)
        bank = bank_points(snap, model)
        if pixels is None:
            return bank
        item = self.item(pixels)
        sample = sample_pixel_features(self.predict(run_id, pixels), item["label"], count)
        return join_points(bank, pixel_points(sample))

    def projection(
        self,
        run_id: str,
        snapshot: int = -1,
        pixels: ImageKey | None = None,
        count: int = 300,
        method: str = "umap",
    ) -> tuple[np.ndarray, str]:
        """(N, 2) map of ``points(...)`` and the method used: UMAP when cached, else PCA at once
        while UMAP is computed in the background (poll ``projection_state``)."""
        points = self.points(run_id, snapshot, pixels, count)
        key = self._projection_key(run_id, snapshot, pixels, count)
        projector = self.projector(run_id)
        if method == "umap" and len(points.features) >= MIN_UMAP_POINTS:
            cached = projector.cached(key)
            if cached is not None:
                return cached, "umap"
            self.umap_worker.submit(("umap", key), lambda: self._fit_umap(run_id, points, key))
        return projector.pca(points.features, key), "pca"

    def projection_state(
        self, run_id: str, snapshot: int = -1, pixels: ImageKey | None = None, count: int = 300
    ) -> str | None:
        """State of the background UMAP of these points (None when never requested)."""
        return self.umap_worker.state(
            ("umap", self._projection_key(run_id, snapshot, pixels, count))
        )

    def _projection_key(
        self, run_id: str, snapshot: int, pixels: ImageKey | None, count: int
    ) -> tuple:
        iteration = self.snapshot(run_id, snapshot).iteration
        return (self.model_stamp(run_id), iteration, pixels, count if pixels is not None else 0)

    def _fit_umap(self, run_id: str, points: PointSet, key: tuple) -> np.ndarray:
        """Fit the run's map on its last snapshot once, then place ``points`` into it."""
        projector = self.projector(run_id)
        if not projector.fitted:
            last = self.snapshot(run_id, -1)
            projector.fit(last.features, (self.model_stamp(run_id), last.iteration, None, 0))
        return projector.transform(points.features, key)

    def warm_up(self) -> str:
        """Import umap and compile its numba code in the background (~10-20 s once per process)."""
        return self.umap_worker.submit("warm-up", lambda: Projector().warm_up())

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every training job and wait (up to ``timeout`` s) until none runs, so the process
        never exits with torch busy in the worker thread."""
        for job in list(self.trainer.jobs.values()):
            if not job.done:
                self.trainer.stop(job.job_id)
        deadline = time.monotonic() + timeout
        while self.trainer.active() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- training --------------------------------------------------------------------------

    def train(
        self,
        method: str,
        preset: str = "tiny",
        iters: int | None = None,
        seed: int = 0,
        method_options: dict[str, Any] | None = None,
        name: str | None = None,
        init_from: str | None = None,
    ) -> TrainJob:
        """Queue a training run of ``method`` with a preset, from random weights or from those of
        the run ``init_from`` (a run id); returns the job (see ``trainer``)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
        cfg = train_config(
            preset, method, self.data_root, self.data_preset, iters, seed, method_options
        )
        if init_from:
            cfg = warm_start(cfg, self.run(init_from).path)
        name = name or f"{method}_{preset}_s{seed}_{time.strftime('%Y%m%d-%H%M%S')}"
        command = ["python -m dida.train", *cli_args(cfg, preset, name, self.trainer.runs_dir)]
        return self.trainer.submit(cfg, name, command)

    def job_snapshot(self, job_id: str) -> BankSnapshot | None:
        """The last bank snapshot a training job has saved (at its checkpoints), if any."""
        path = _bank_path(self.trainer.get(job_id).run_dir)
        if path is None:
            return None
        try:
            history = BankHistory.load(path)
        except (OSError, ValueError) as err:  # being replaced right now: try at the next poll
            log.info("bank history %s not readable yet: %s", path, err)
            return None
        return history[len(history) - 1] if len(history) else None


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _option(options: dict, key: str, default: Any) -> Any:
    value = options.get(key)
    return default if value is None else value


def _bank_path(folder: Path) -> Path | None:
    path = folder / runs.BANK_HISTORY
    return path if path.is_file() else None


def _summarize(kind: str, folder: Path) -> RunSummary:
    """A RunSummary from a run directory or a shipped checkpoint folder."""
    config = runs.read_json(folder / runs.CONFIG)
    info = runs.run_info(folder)
    state = SHIPPED if kind == SHIPPED and info.state == "unknown" else info.state
    return RunSummary(
        run_id=run_id(kind, folder.name),
        name=folder.name,
        kind=kind,
        path=folder,
        method=info.method,
        state=state,
        iteration=info.iteration,
        max_iters=info.max_iters,
        miou=info.miou,
        has_model=(folder / runs.MODEL).is_file(),
        has_bank=_bank_path(folder) is not None,
        method_options=dict(config.get("method", {}).get("options", {})),
    )
