"""One Compare grid's parts on a few val images: disk reads, panels, Plotly grid, JSON
(docs/BENCHMARKS.md, "App under load").

    python -m scripts.profile_grid     # data/synthcity with the app's precomputed prediction cache
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from app.views import compare
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
    return f"image {index}: predictions {read:.2f} s, panels {panels:.2f} s, grid {grid:.2f} s, JSON {json:.2f} s"


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
