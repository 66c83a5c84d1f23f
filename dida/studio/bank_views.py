"""The bank views of the façade: slot provenance, the tp explanation of a pixel, and projections
(PCA at once, UMAP in the background) of bank slots and pixel features.

:class:`BankViews` is a mixin of :class:`dida.studio.studio.Studio`: it reads the host's runs
(``run``, ``model``, ``model_stamp``, ``snapshot``), images (``item``, ``images``) and predictions
(``predict``, ``pixel_vectors``), and owns the per-run projectors and the UMAP worker."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dida.analysis import MIN_UMAP_POINTS, Projector
from dida.explain import PixelExplanation, TpSweep, distribution_over_tps, explain_vector
from dida.studio.catalog import DIDAOptions, dida_options
from dida.studio.images import ImageKey
from dida.studio.points import (
    PointSet,
    bank_points,
    join_points,
    pixel_points,
    sample_pixel_features,
)
from dida.studio.provenance import (
    MAX_CROPS,
    Selection,
    SlotSource,
    list_selection,
    slot_source,
    source_image,
    with_crop,
)
from dida.studio.work import Tasks


class BankViews:
    """Slot provenance, explanations and projections; mixed into ``Studio``."""

    umap_worker: Tasks
    _projectors: dict[str, Projector]

    # --- slot provenance -------------------------------------------------------------------

    def slot_source(self, run_id: str, snapshot: int, slot: int) -> SlotSource:
        """Slot ``slot`` of snapshot ``snapshot``: its source image index, region box and the crop
        of that image around the box (the note says why when any is not recorded)."""
        source = slot_source(self.snapshot(run_id, snapshot), slot)
        return with_crop(source, source_image(self.run(run_id).path, source.source_id))

    def open_source_image(self, run_id: str, source_id: int) -> ImageKey:
        """Keep source image ``source_id`` of the run like an upload (no ground truth) → its key
        for Compare; raises when the run's source images are not available."""
        image = source_image(self.run(run_id).path, source_id)
        if image is None:
            raise FileNotFoundError(f"source image {source_id} of {run_id} is not available here")
        return self.images.add_image(image)

    # --- explanation -----------------------------------------------------------------------

    def dida_options(self, run_id: str) -> DIDAOptions:
        """The run's DIDA options (tp, scatter_alpha, normalize, centre) read through its method's
        config (``dida`` or ``dida_mic``; the mode's defaults filled in)."""
        return dida_options(self.run(run_id))

    def explain(
        self, run_id: str, key: ImageKey, x: int, y: int, tp: float, snapshot: int = -1
    ) -> PixelExplanation:
        """``dida.explain.explain_vector`` at pixel (x, y) of the run's cached prediction of the
        image (the Compare panel's, read from disk when precomputed: no forward pass), with its
        DIDA options (scatter_alpha, normalize, centre) and bank snapshot; a new pixel or tp costs
        only the K-way softmax. Teacher probabilities are the prediction's (1/255 steps)."""
        bank = self.snapshot(run_id, snapshot)  # first: a run without a bank says so
        options = self.dida_options(run_id)
        feature, p, cell = self.pixel_vectors(run_id, key, x, y)
        return explain_vector(
            feature, p, bank, (int(x), int(y)), cell, tp,
            alpha=options.scatter_alpha, normalize=options.normalize, centre=options.centre,
        )  # fmt: skip

    def tp_sweep(
        self, run_id: str, key: ImageKey, x: int, y: int, tps: Sequence[float], snapshot: int = -1
    ) -> TpSweep:
        """q at every tp of ``tps`` for one pixel (the common y-scale of the tp view)."""
        bank = self.snapshot(run_id, snapshot)
        options = self.dida_options(run_id)
        feature, _, _ = self.pixel_vectors(run_id, key, x, y)
        return distribution_over_tps(feature, bank, tps, options.normalize, options.centre)

    # --- projections -----------------------------------------------------------------------

    def projector(self, run_id: str) -> Projector:
        """The run's Projector (one per run, so the layout stays put across snapshots)."""
        projector = self._projectors.get(run_id)
        return projector or self._projectors.setdefault(run_id, Projector())

    def points(
        self, run_id: str, snapshot: int = -1, pixels: ImageKey | None = None, count: int = 300
    ) -> PointSet:
        """Bank slots of a snapshot, plus ``count`` sampled pixel features of image ``pixels``."""
        bank = bank_points(self.snapshot(run_id, snapshot), self.model(run_id))
        if pixels is None:
            return bank
        item = self.item(pixels)
        sample = sample_pixel_features(self.predict(run_id, pixels), item["label"], count)
        return join_points(bank, pixel_points(sample))

    def selection(
        self,
        run_id: str,
        snapshot: int,
        pixels: ImageKey | None,
        count: int,
        point_ids: Sequence[int],
        max_crops: int = MAX_CROPS,
    ) -> Selection:
        """The bank slots and target pixels among ``point_ids`` of ``points(run_id, snapshot,
        pixels, count)``, with crops of their source / target images."""
        points = self.points(run_id, snapshot, pixels, count)
        target = self.item(pixels)["image"] if pixels is not None else None
        run_dir = self.run(run_id).path
        return list_selection(
            points, point_ids, self.snapshot(run_id, snapshot), pixels, target,
            lambda source_id: source_image(run_dir, source_id), max_crops,
        )  # fmt: skip

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
