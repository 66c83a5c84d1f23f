"""Compare shows "window i of n" progress while a slow (sliding-window) image is predicted: the grid
handler passes a progress tracker down to ``Studio.predict``, and Gradio injects ``gr.Progress``."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest

from app.views import compare
from app.views.common import bind
from dida.studio import Studio
from tests.test_official_checkpoints import save_mmcv_checkpoint, tiny_segmentor

STUDENT, TEACHER = "official:daformer_gta2cs", "official:daformer_gta2cs:teacher"


class Recorder:
    """A stand-in for ``gr.Progress``: records (fraction, desc) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, progress: float, desc: str | None = None, **_: object) -> None:
        self.calls.append((progress, desc or ""))


@pytest.fixture()
def studio(synthcity_tiny: Path, tmp_path: Path) -> Studio:
    """The tiny val split (128 x 64) and an official checkpoint run by 32 x 32 windows (stride 21)."""
    path = save_mmcv_checkpoint(
        tmp_path / "daformer_gta2cs.pth", tiny_segmentor(0), tiny_segmentor(1)
    )
    (tmp_path / "runs").mkdir()
    studio = Studio(
        synthcity_tiny, [tmp_path / "runs"], None, data_preset="tiny",
        checkpoints=[str(path), f"{path}:teacher"], cache_dir=tmp_path / "cache",
    )  # fmt: skip
    yield studio
    studio.shutdown()


def _grid(studio: Studio, progress: Recorder) -> None:
    args = ("overlay", 0.5, 0, "cityscapes", [], "", False)
    compare.grid(studio, 0, [STUDENT, TEACHER], *args, progress=progress)


def test_grid_reports_window_progress_with_increasing_fractions(studio: Studio) -> None:
    assert studio.run(STUDENT).inference.mode == "slide"
    recorder = Recorder()
    _grid(studio, recorder)
    fractions = [f for f, _ in recorder.calls]
    assert all(b > a for a, b in zip(fractions, fractions[1:], strict=False))
    assert 0 < fractions[0] < 0.5 and fractions[-1] == pytest.approx(1.0)
    found = [re.fullmatch(r"(.+): window (\d+) of (\d+)", d).groups() for _, d in recorder.calls]
    total = int(found[0][2])
    assert total == 18  # 3 rows x 6 columns of 32 x 32 windows over 128 x 64
    titles = [
        studio.run(r).short_title for r in compare.in_checkbox_order(studio, [STUDENT, TEACHER])
    ]
    expected = [(t, str(i), str(total)) for t in titles for i in range(1, total + 1)]
    assert found == expected
    assert fractions[total - 1] == pytest.approx(0.5)  # the first of two models done
    again = Recorder()
    _grid(studio, again)
    assert again.calls == []  # cached predictions: nothing to wait for


def test_gradio_passes_progress_to_the_grid_handler(studio: Studio) -> None:
    handler = bind(compare._grid_outputs, studio)
    _, progress_index, _, _ = gr.helpers.special_args(handler)
    assert progress_index == 9  # after the nine inputs of the grid event
