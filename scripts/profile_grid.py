"""One Compare grid's parts on a few val images — disk reads, panels, Plotly grid, JSON — and the
tp view's handler (explanation + figure) at a pixel of each (docs/BENCHMARKS.md, "App under load").

    python -m scripts.profile_grid     # data/synthcity with the app's precomputed prediction cache

Only public handler functions are called, so the same file also times an older checkout:
``PYTHONPATH=<old checkout> python scripts/profile_grid.py`` (from this repository's root).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from app.views import compare, temperature
from dida.studio import Studio


def timed(fn) -> tuple[object, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def profile_image(studio: Studio, runs: list[str], index: int) -> str:
    """One line: seconds of each part of a labels-view grid of val image ``index``."""
    _, read = timed(lambda: [studio.predict(r, index) for r in runs])
    args = ("labels", 0.6, 0.0, "cityscapes", [], None)
    shown, panels = timed(lambda: compare.panels(studio, index, runs, *args))
    figure, grid = timed(lambda: compare.image_grid(shown))
    _, json = timed(figure.to_json)
    tp_args = (index, 120, 90, 0.1, -1, "cityscapes")
    bank_run = next((r for r in runs if studio.bank_history(r) is not None), None)
    tp = timed(lambda: temperature.explain(studio, bank_run, *tp_args))[1] if bank_run else 0.0
    return (
        f"image {index}: predictions {read:.3f} s, panels {panels:.3f} s, grid {grid:.3f} s, "
        f"JSON {json:.3f} s, tp handler {tp:.3f} s"
    )


def main() -> None:
    torch.set_num_threads(1)
    Path("/tmp/empty_runs").mkdir(exist_ok=True)
    studio = Studio("data/synthcity", ["/tmp/empty_runs"], "assets")
    runs = studio.featured_runs()
    print(f"featured runs: {runs}")
    for index in (3, 4, 5):
        print(profile_image(studio, runs, index))
    studio.shutdown()


if __name__ == "__main__":
    main()
