"""The façade the app calls: one :class:`Studio` per process, composed of the studio's rooms.

Heavy shared objects — loaded models, cached predictions, bank histories, projections — live here
keyed by run id, so every browser session shares them; the app keeps only ids and small values per
user. The rooms: ``catalog`` (runs and their models), ``images`` (val split and uploads), ``passes``
(whole-split passes), the prediction cache, ``gate`` (one forward at a time, requests first),
``worker`` / ``umap_worker`` (background tasks) and ``trainer`` (the training queue); the bank views
(provenance, explanations, projections) are the :class:`~dida.studio.bank_views.BankViews` mixin,
the cheap reads of predictions (labels, readouts, IoU) the :class:`~dida.studio.readings.Readings` one.
Who waits for whom is explained in :mod:`dida.studio.work`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dida import runs
from dida.analysis import ImageScores, Projector
from dida.bank import BankHistory, BankSnapshot
from dida.data.datasets import CityscapesDataset, ClassStats
from dida.inference import InferenceSettings, Progress, run_image
from dida.model import SegModel
from dida.presets import PRESETS
from dida.studio.bank_views import BankViews
from dida.studio.catalog import RunCatalog, RunSummary, resolve_device
from dida.studio.images import ImageKey, ValImages, ValItem, open_data_root
from dida.studio.jobs import TrainJob, TrainQueue, latest_snapshot, train_config, warm_start
from dida.studio.passes import ValPasses
from dida.studio.predictions import (
    LRU,
    ImagePrediction,
    ValPass,
    image_prediction,
)
from dida.studio.readings import Readings
from dida.studio.results import ProgressBoard, ResultStore, file_identity
from dida.studio.sources import dataset_source, mismatches, run_source
from dida.studio.work import InferenceGate, KeyedLocks, Tasks
from dida.train import cli_args

PREFETCH_WAIT_S = 300.0
"""Longest the background work waits for the start-up prefetch before starting anyway."""
PREDICTION_MEMORY = 2 << 30
"""Bytes the in-memory prediction cache may hold (full-resolution images: a few predictions)."""


def prediction_bytes(height: int, width: int, classes: int = 19, width_d: int = 256) -> int:
    """Memory of one ``ImagePrediction`` of an H x W image (labels, float16 probabilities, float32
    features of up to ``width_d`` channels at 1/4): about 220 MB at 2048 x 1024."""
    return height * width * (1 + 2 * classes) + -(-height // 4) * -(-width // 4) * width_d * 4


class Studio(BankViews, Readings):
    """Runs, models, predictions, bank histories, the val data and training jobs of one process."""

    def __init__(
        self,
        data_root: str | Path,
        runs_dirs: Sequence[str | Path] = ("runs",),
        assets_dir: str | Path | None = "assets",
        device: str = "cpu",
        data_preset: str = "default",
        cache_size: int = 32,
        checkpoints: Sequence[str] = (),
        source: str | Path | None = None,
        cache_dir: str | Path | None = None,
        writing: Callable[[], bool] | None = None,
    ) -> None:
        """Open the val split at ``data_root``: a SynthCity tree (generated when missing) or a
        Cityscapes root (read only; caches under ``cache_dir`` or ``~/.cache/dida-studio``).
        ``checkpoints``: ``--checkpoint`` entries (official ``.pth``, ``PATH:teacher``, run
        folders); ``source``: the source dataset of the long-tail statistics; ``writing``: this
        process's generator still writes the SynthCity val split (first launch) while true, and
        the split is read as it is written."""
        self.data = open_data_root(data_root, data_preset, cache_dir, writing)
        self.data_root, self.data_preset = self.data.root, data_preset
        self.runs_dirs = [Path(d) for d in runs_dirs] or [Path("runs")]
        self.assets_dir = None if assets_dir is None else Path(assets_dir)
        self.device = resolve_device(device)
        self.catalog = RunCatalog(self.runs_dirs, self.assets_dir, self.device, checkpoints)
        self.worker, self.umap_worker = Tasks("studio-batch"), Tasks("studio-umap")
        self.precomputing = Tasks("studio-precompute")
        self.images = ValImages(self.data, self.worker, source)
        self.results = ResultStore(self.data.cache_dir / "predictions")
        self.progress = ProgressBoard()
        self.gate = InferenceGate()
        self.computing = KeyedLocks()
        """Val predictions being computed now (``_stored_or_new``): nothing is computed twice."""
        self.passes = ValPasses(self.catalog, self.images, self.gate, self.worker)
        self._predictions = LRU(self._prediction_slots(cache_size))
        """(run id, model stamp, image key) → ImagePrediction"""
        self._projectors: dict[str, Projector] = {}
        self.trainer = TrainQueue(self.runs_dirs[0], on_done=lambda job: self.refresh())
        self.refresh()

    def _prediction_slots(self, cache_size: int) -> int:
        """``cache_size`` capped to what ``PREDICTION_MEMORY`` holds at the split's image size
        (9 at 2048 x 1024), at least 2."""
        val = self.images.val
        per_image = prediction_bytes(*val.image_size(0)) if len(val) else 1
        return max(2, min(cache_size, PREDICTION_MEMORY // per_image))

    # --- runs (the catalog) ----------------------------------------------------------------

    def refresh(self) -> list[RunSummary]:
        """Rediscover shipped checkpoints and run directories (new, finished or changed runs)."""
        found = self.catalog.refresh()
        self.images.retry_missing_source_stats()
        return found

    @property
    def problems(self) -> list[str]:
        """Folders that could not be listed, with the reason."""
        return self.catalog.problems

    def runs(self, with_model: bool = False, with_bank: bool = False) -> list[RunSummary]:
        """Known runs, shipped first; optionally only those that can predict / have a bank."""
        return self.catalog.runs(with_model, with_bank)

    def featured_runs(self, limit: int = 4) -> list[str]:
        """One run per method, DIDA first: what the Compare tab shows first."""
        return self.catalog.featured_runs(limit)

    def run(self, run_id: str) -> RunSummary:
        """The run's summary; a KeyError lists the known runs."""
        return self.catalog.run(run_id)

    def model(self, run_id: str) -> SegModel:
        """The run's model (reloaded when its weights change)."""
        return self.catalog.model(run_id)

    def model_stamp(self, run_id: str) -> int:
        """Modification time of the run's weights (cache keys change when a run checkpoints)."""
        return self.catalog.model_stamp(run_id)

    def model_card(self, run_id: str) -> str:
        """The shipped MODEL_CARD.md or the run's README.md (empty when neither exists)."""
        return self.catalog.model_card(run_id)

    def bank_note(self) -> str:
        """Why loaded official checkpoints show no bank, and what to choose ("" when none)."""
        return self.catalog.bank_note()

    def bank_history(self, run_id: str) -> BankHistory | None:
        """The run's bank snapshots (None for runs without a bank)."""
        return self.catalog.bank_history(run_id)

    def snapshot(self, run_id: str, index: int = -1) -> BankSnapshot:
        """Bank snapshot ``index`` (negative counts from the end) of a run."""
        return self.catalog.snapshot(run_id, index)

    def metrics(self, run_id: str, kind: str | None = None) -> list[dict]:
        """The run's metric records (``runs.read_metrics``)."""
        return self.catalog.metrics(run_id, kind)

    # --- images ----------------------------------------------------------------------------

    @property
    def val(self) -> CityscapesDataset:
        """The target val split (``dida.data.datasets.CityscapesDataset``)."""
        return self.images.val

    @property
    def thumbnail_dir(self) -> Path:
        """Where ``thumbnail`` writes (``<data>/.studio/thumbs``)."""
        return self.images.thumbnail_dir

    def item(self, key: ImageKey) -> dict:
        """``{"image", "label" (None for uploads), "name"}`` of a val index or an upload key."""
        return self.images.item(key)

    def add_upload(self, path: str | Path) -> tuple[str, list[str]]:
        """Validate and keep an uploaded image → (key, conversion notes); raises UploadError."""
        return self.images.add_upload(path)

    def thumbnail(self, index: int, width: int = 160) -> Path:
        """A small JPEG of val image ``index``."""
        return self.images.thumbnail(index, width)

    def val_items(self) -> list[ValItem]:
        """Every val image with its classes and (once indexed) its overlap flag."""
        return self.images.val_items()

    def target_stats(self) -> ClassStats:
        """Class statistics of the target val split."""
        return self.images.target_stats()

    def source_stats(self, wait: bool = False) -> ClassStats | None:
        """Class statistics of a source dataset (background; None until ready)."""
        return self.images.source_stats(wait)

    def source_stats_state(self) -> str | None:
        """State of the background source statistics."""
        return self.images.source_stats_state()

    def rare_classes(self) -> list[int]:
        """Classes below ``RARE_PIXEL_FRACTION`` of the val pixels, rarest first."""
        return self.images.rare_classes()

    def known_rare_classes(self) -> list[int] | None:
        """``rare_classes``, or None while the val split is still being written (first launch)."""
        return self.images.known_rare_classes()

    def overlap_flags(self) -> list[bool] | None:
        """Per val image: touching entities of different thing classes? None until indexed."""
        return self.images.overlap_flags()

    def overlap_state(self) -> str | None:
        """ "done", a background state, or "unavailable: this dataset has no instanceIds"."""
        return self.images.overlap_state()

    def source_name(self) -> str | None:
        """The dataset behind the long-tail source bars, e.g. ``SynthCity source split, preset
        default (data/synthcity)`` or ``GTA5 (/data/gta)`` (None when no source is known)."""
        source = self.images.source
        return None if source is None else dataset_source(source[0], source[1]).name

    def source_mismatches(self, run_ids: Sequence[str]) -> list[str]:
        """``"<run> trained on <its source>"`` for each run whose recorded source data (its
        config's source, SynthCity preset or folder) is not the data behind the long-tail source
        bars; [] without a source (official checkpoints record none)."""
        source = self.images.source
        if source is None:
            return []
        trained = [(self.run(r).short_title, run_source(self.run(r).path)) for r in run_ids]
        return mismatches(dataset_source(source[0], source[1]), trained)

    def index_overlaps(self, wait: bool = False) -> str:
        """Build (or load) the overlap index of the val split in the background."""
        return self.images.index_overlaps(wait)

    def class_pixels(self, key: ImageKey) -> np.ndarray:
        """(C,) int64 ground-truth pixels of each class in a labelled image."""
        return self.images.class_pixels(key)

    # --- predictions -----------------------------------------------------------------------

    def prefetch(self, run_ids: Sequence[str], key: ImageKey = 0, thumbnails: int = 120) -> str:
        """Load models, predict one image and write thumbnails in the background (app start)."""

        def work() -> None:
            for rid in run_ids:
                self.predict(rid, key, batch=True)
            for i in range(min(thumbnails, len(self.val))):
                self.thumbnail(i)

        return self.worker.submit(_prefetch_key(run_ids, key), work)

    def precompute(self, run_ids: Sequence[str], share: float = 0.5) -> str:
        """Write each run's prediction of every val image to the disk cache in the background, one
        image at a time and after any waiting request (Compare and readouts then read instead of
        computing); stops once the cache holds ``share`` of its budget. It starts once a start-up
        ``prefetch`` of the same runs has finished (the first page's predictions go first).
        Returns the task's state."""

        def work() -> None:
            self.wait_prefetch(run_ids)
            for index in range(len(self.val)):
                for rid in run_ids:
                    if self.precomputing.closing.is_set() or self.results.full(share):
                        return
                    self._stored_or_new(rid, index, batch=True, progress=None)

        return self.precomputing.submit(("precompute", tuple(run_ids)), work)

    def wait_prefetch(self, run_ids: Sequence[str], timeout: float = PREFETCH_WAIT_S) -> None:
        """Block until the start-up ``prefetch`` of ``run_ids`` (image 0) has finished, or
        ``timeout`` seconds; at once when none was started."""
        self.worker.wait(_prefetch_key(run_ids, 0), timeout=timeout)

    def precompute_state(self, run_ids: Sequence[str]) -> str | None:
        """``queued``, ``running``, ``done``, ``failed: ...`` or None (see ``precompute``)."""
        return self.precomputing.state(("precompute", tuple(run_ids)))

    def predict(
        self, run_id: str, key: ImageKey, batch: bool = False, progress: Progress | None = None
    ) -> ImagePrediction:
        """The run's prediction on an image (LRU-cached, val images also on disk; recomputed
        when the run checkpoints). ``batch``: a background task's forward, which yields to
        waiting requests; ``progress(done, total)`` is called per window of a slow image (also
        readable by any request as ``prediction_progress``)."""
        cache_key = self._memory_key(run_id, key)
        cached = self._predictions.get(cache_key)
        if cached is None:
            cached = self._stored_or_new(run_id, key, batch, progress)
            self._predictions.put(cache_key, cached)
        return cached

    def _memory_key(self, run_id: str, key: ImageKey) -> tuple:
        """Key of the in-memory prediction cache (changes when the run checkpoints)."""
        return (run_id, self.model_stamp(run_id), key)

    def _stored_or_new(
        self, run_id: str, key: ImageKey, batch: bool, progress: Progress | None
    ) -> ImagePrediction:
        """A val image's prediction from the disk cache, else computed (and stored)."""
        if isinstance(key, str):  # an upload: kept in memory only
            return self._compute(run_id, key, self.run(run_id).inference, batch, progress)
        ids = self._result_ids(run_id, key)
        with self.computing.hold(ids[:2]):  # a computation of it running now: wait, then read
            prediction = self.results.get(*ids)
            if prediction is None:
                prediction = self._compute(run_id, key, ids[2], batch, progress)
                self.results.put(*ids, prediction)
        return prediction

    def _result_ids(self, run_id: str, key: ImageKey) -> tuple[str, str, InferenceSettings]:
        """(checkpoint, image, settings) identities of a val image's prediction on disk."""
        settings = self.run(run_id).inference
        return self.catalog.checkpoint_identity(run_id), self._image_identity(key), settings

    def _compute(
        self,
        run_id: str,
        key: ImageKey,
        settings: InferenceSettings,
        batch: bool,
        progress: Progress | None,
    ) -> ImagePrediction:
        model, image = self.model(run_id), self.item(key)["image"]
        report = self.progress.reporter((run_id, key), progress)
        try:
            with self.gate.hold(batch):
                out = run_image(model, image, settings, report)
        finally:
            self.progress.finish((run_id, key))
        return image_prediction(out.probs[0], out.features[0])

    def _image_identity(self, key: ImageKey) -> str:
        self.val.wait(int(key))
        return file_identity(self.val.samples[int(key)].image)

    def prediction_progress(self, run_id: str, key: ImageKey) -> tuple[int, int] | None:
        """(windows done, windows in all) of the run's prediction on an image while it runs."""
        return self.progress.get((run_id, key))

    # --- whole-split passes ----------------------------------------------------------------

    def val_pass(self, run_id: str, start: bool = True) -> ValPass | None:
        """The run over every val image (None until computed; ``start`` queues it)."""
        return self.passes.get(run_id, start)

    def val_pass_progress(self, run_id: str) -> tuple[int, int]:
        """(images done, images in the val split) of the run's val pass."""
        return self.passes.progress(run_id)

    def val_metrics(self, run_id: str) -> dict | None:
        """Whole-val metrics: from a finished val pass, else the run's last evaluation record."""
        return self.passes.metrics(run_id)

    def val_metrics_origin(self, run_id: str) -> str | None:
        """None when ``val_metrics`` are this val split's, else where they come from."""
        return self.passes.metrics_origin(run_id)

    def image_scores(self, run_a: str, run_b: str) -> ImageScores | None:
        """Per-image mIoU of b minus a on every val image (None until both val passes are done)."""
        return self.passes.image_scores(run_a, run_b)

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
        the run ``init_from`` (a run id); returns the job (see ``trainer``). An unsafe run name
        raises ``runs.RunNameError`` (a ValueError naming the rule) before anything is written."""
        if not self.data.owned:  # a SynthCity training would be generated into or beside it
            raise ValueError(
                f"the app shows {self.data.root} ({self.data.kind}, read only) and trains only on "
                "SynthCity: start it with a SynthCity --data folder to train here, or train from "
                "a shell (python -m dida.train --help)"
            )
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
        name = runs.check_run_name(name or _default_name(method, preset, seed))
        cfg = train_config(
            preset, method, self.data_root, self.data_preset, iters, seed, method_options
        )
        if init_from:
            cfg = warm_start(cfg, self.run(init_from).path)
        cfg = replace(cfg, device=str(self.device))  # the device the app runs on, not "auto"
        command = ["python -m dida.train", *cli_args(cfg, preset, name, self.trainer.runs_dir)]
        return self.trainer.submit(cfg, name, command)

    def job_snapshot(self, job_id: str) -> BankSnapshot | None:
        """The last bank snapshot a training job has saved (at its checkpoints), if any."""
        return latest_snapshot(self.trainer.get(job_id).run_dir)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every training job and the background tasks, and wait (up to ``timeout`` s) until
        no job runs, so the process never exits with torch busy in a worker thread."""
        self.worker.close()
        self.umap_worker.close()
        self.precomputing.close()
        self.trainer.stop_all(timeout)


def _prefetch_key(run_ids: Sequence[str], key: ImageKey) -> tuple:
    return ("prefetch", tuple(run_ids), key)


def _default_name(method: str, preset: str, seed: int) -> str:
    return f"{method}_{preset}_s{seed}_{time.strftime('%Y%m%d-%H%M%S')}"
