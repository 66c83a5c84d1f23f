"""Property-based fuzzing of the numbers users type or send to the app: image index, pixel x / y,
opacity, confidence threshold, tp, bank snapshot and slot, UMAP point count, and the Train tab's
iterations, seed, bank size K, tp and lambda.

Handlers are called as Gradio calls them (plain functions with the studio bound) with floats
including nan, huge and negative values, None and strings; each call ends in a result or a
``gr.Error`` (the message the page shows) — never another exception, never a hang. The Train tab
starts jobs on a queue that trains nothing.

The values that once ended in a raw exception (inf, nan, None, text) are generated again and
stay pinned as regression ``@example``s.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_fuzz import fuzz, settle
from test_studio import private_studio

from app.views import bank, compare, temperature, train, umap
from dida.studio import Studio, TrainJob, TrainQueue

EXAMPLES = {"compare": 120, "grid": 30, "bank": 120, "explain": 40, "umap": 25, "train": 80}
"""Generated cases per test of this file."""

INF = float("inf")

REAL = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**12), 10**12),
    st.sampled_from([0, -1, 0.5, 1e308, -0.0, 2**63, -(2**63), INF, -INF]),
)
"""Numbers a Gradio Number or Slider may deliver: negative, fractional, huge, infinite."""
NUMBERS = REAL | st.just(float("nan"))
"""Also nan (valid JSON for Python's parser, so an API client can send it)."""
TYPED = st.one_of(NUMBERS, st.none(), st.text(max_size=6))
"""Also a cleared box (None) and text sent through the API."""


RUN_NUMBERS = itertools.count()


class NoTrainQueue(TrainQueue):
    """The app's training queue with every check, but a job is cancelled instead of trained."""

    def _run(self, job: TrainJob) -> None:
        job.state = "cancelled"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> Studio:
    studio = private_studio(tmp_path_factory, synthcity_tiny)
    studio.trainer = NoTrainQueue(studio.trainer.runs_dir)
    return studio


def call(fn: Any, *args: Any) -> Any:
    """The handler's result, or its ``gr.Error`` (after checking it says something)."""
    result = settle(lambda: fn(*args), gr.Error)
    assert not isinstance(result, gr.Error) or str(result).strip(" '\"")
    return result


# --- Compare tab -----------------------------------------------------------------------------


@fuzz(EXAMPLES["compare"])
@given(index=TYPED, x=TYPED, y=TYPED)
@example(index=INF, x=0, y=0)
@example(index=0, x=INF, y=0)
def test_image_index_and_pixel_readout(studio: Studio, index: Any, x: Any, y: Any) -> None:
    chosen = call(compare.choose_index, studio, index)
    assert isinstance(chosen, gr.Error) or 0 <= chosen < len(studio.val)
    read = call(compare.readout, studio, 0, ["run:dida", "run:source_only"], x, y)
    if not isinstance(read, gr.Error):
        heading, rows = read
        assert heading == f"**Pixel (x={int(x)}, y={int(y)})**" and len(rows) == 3


@fuzz(EXAMPLES["grid"])
@given(
    view=st.sampled_from(["overlay", "labels", "confidence", "entropy", "errors"]),
    opacity=TYPED,
    threshold=TYPED,
)
@example(view="overlay", opacity=None, threshold=0)
@example(view="confidence", opacity=0.5, threshold="x")
def test_grid_opacity_and_confidence_threshold(
    studio: Studio, view: str, opacity: Any, threshold: Any
) -> None:
    result = call(compare.grid, studio, 1, ["run:dida"], view, opacity, threshold, "cvd", [], "")
    if not isinstance(result, gr.Error):
        _, legend, image = result
        assert isinstance(legend, str) and image.shape == studio.item(1)["image"].shape


# --- Bank tab --------------------------------------------------------------------------------


@fuzz(EXAMPLES["bank"])
@given(index=TYPED, slot=TYPED, delta=st.integers(-3, 3))
@example(index=INF, slot=0, delta=1)
@example(index="x", slot=0, delta=1)
def test_bank_snapshot_index_and_slot(studio: Studio, index: Any, slot: Any, delta: int) -> None:
    last = len(studio.bank_history("run:dida")) - 1
    shown = call(bank.show, studio, "run:dida", index, "cityscapes")
    assert isinstance(shown, gr.Error) or shown[0].startswith("**Snapshot")
    stepped = call(bank.step, studio, "run:dida", index, delta)
    assert isinstance(stepped, gr.Error) or 0 <= stepped <= last
    ticked = call(bank.play_tick, studio, "run:dida", index)
    assert isinstance(ticked, gr.Error) or 0 <= ticked[0] <= last
    detail = call(bank.slot_detail, studio, "run:dida", index, slot)
    assert isinstance(detail, gr.Error) or isinstance(detail[0], str)


# --- Temperature tab -------------------------------------------------------------------------


@fuzz(EXAMPLES["explain"])
@given(x=TYPED, y=TYPED, tp=TYPED, snapshot=TYPED)
@example(x=3, y=3, tp=None, snapshot=-1)
@example(x=3, y=3, tp=float("nan"), snapshot=-1)
@example(x=3, y=3, tp=0.1, snapshot=INF)
def test_explain_pixel_tp_and_snapshot(
    studio: Studio, x: Any, y: Any, tp: Any, snapshot: Any
) -> None:
    result = call(temperature.explain, studio, "run:dida", 0, x, y, tp, snapshot, "cityscapes")
    if not isinstance(result, gr.Error):
        _, summary = result
        assert isinstance(summary, str) and (x is None or f"x={int(x)}" in summary)
        assert "nan" not in summary


# --- UMAP tab --------------------------------------------------------------------------------


@fuzz(EXAMPLES["umap"])
@given(snapshot=TYPED, count=TYPED, with_pixels=st.booleans())
@example(snapshot=-1, count=None, with_pixels=True)
def test_projection_snapshot_and_point_count(
    studio: Studio, snapshot: Any, count: Any, with_pixels: bool
) -> None:
    args = ("run:dida", snapshot, "class", with_pixels, count, "PCA", 0, "cityscapes")
    result = call(umap.project, studio, *args)
    assert isinstance(result, gr.Error) or isinstance(result[1], str)
    picked = call(umap.selection, studio, "run:dida", snapshot, with_pixels, count, 0, [0, 1, 99])
    assert isinstance(picked, gr.Error) or picked[0].startswith("**")


# --- Train tab -------------------------------------------------------------------------------


@fuzz(EXAMPLES["train"])
@given(
    iters=TYPED,
    seed=TYPED,
    bank_size=TYPED,
    tp=TYPED,
    ins_lambda=TYPED,
)
@example(iters=INF, seed=0, bank_size=8, tp=0.1, ins_lambda=1.0)
@example(iters=2, seed=0, bank_size=8, tp=None, ins_lambda=1.0)
@example(iters=2, seed=0, bank_size=8, tp=float("nan"), ins_lambda=1.0)
@example(iters=2, seed=0, bank_size=8, tp=0.1, ins_lambda=float("nan"))
def test_train_start_numbers(
    studio: Studio, iters: Any, seed: Any, bank_size: Any, tp: Any, ins_lambda: Any
) -> None:
    name = f"fuzz_{next(RUN_NUMBERS)}"  # the default name holds the time: two in a second clash
    args = ("dida", "tiny", iters, seed, name, bank_size, tp, ins_lambda, train.SCRATCH)
    started = call(train.start, studio, *args)
    if isinstance(started, gr.Error):
        return
    job = studio.trainer.get(started[0])
    options = job.config.method_options
    assert all(np.isfinite(v) for v in options.values() if isinstance(v, float))
    assert options["tp"] == float(tp) and options["bank_size"] == int(bank_size or 300)
    assert job.config.iters >= 1 and job.config.seed == int(seed or 0)
