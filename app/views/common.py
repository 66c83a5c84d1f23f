"""Pieces every tab uses: run choices, plotly styling that survives dark mode, image grids with
synced zoom, legends, and turning engine errors into ``gr.Error`` messages.

Nothing here computes on tensors: images arrive as uint8 RGB arrays from ``dida.visualize`` and
numbers from ``dida.studio``; this module only places them.
"""

from __future__ import annotations

import base64
import functools
import inspect
import io
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.basedatatypes import BaseTraceType

from app.errors import client_text
from dida import runs
from dida.studio import Studio, UploadError

EMPTY_RUNS = (
    "**No trained runs yet** — start one in the **Train** tab, or run "
    "`python -m dida.train --preset quick --method dida` and press *Refresh runs*."
)
PALETTE_CHOICES = [("Cityscapes", "cityscapes"), ("Colour-blind safe", "cvd")]
TEXT_GREY = "#8a8a8a"
"""Mid-grey text reads on both the light and the dark theme."""
GRID_GREY = "rgba(128,128,128,0.25)"
CHEAP: dict[str, Any] = {"concurrency_id": "interactive", "concurrency_limit": None}
"""Event settings of cheap requests (pixel readouts, explain / tp, bank steps, pickers): their own
Gradio queue group without a limit, so they start at once and never wait behind a heavy event. The
engine side of the same rule (batch work yields to requests) is ``dida.studio.work``."""
HEAVY: dict[str, Any] = {"concurrency_id": "heavy", "concurrency_limit": 2}
"""Event settings of expensive requests (the Compare panels, fixed/broke map, IoU table, gallery
scores, uploads, UMAP, long tail): one shared group, two at a time (one per core of a 2-core host)."""
USER_ERRORS = (ValueError, KeyError, IndexError, runs.RunError, UploadError, FileNotFoundError)
"""Engine exceptions whose message is meant for the user (shown as gr.Error)."""


@dataclass
class Shared:
    """Components every tab reads: the palette choice and the current image."""

    demo: gr.Blocks
    palette: gr.Radio
    image_key: gr.State
    """A val image index (int) or an upload key (str), shared by Compare and Temperature."""
    tabs: gr.Tabs | None = None
    """The tab bar (a view switches to Compare by returning ``gr.Tabs(selected="compare")``)."""


@dataclass
class RunPickers:
    """Run dropdowns of a tab that must follow ``Studio.refresh``."""

    components: list[gr.components.Component]
    """Inputs and outputs of ``refresh``."""
    refresh: Callable[..., Any]
    """Current values of ``components`` → one update per component (after ``Studio.refresh``)."""
    on_select: tuple[Callable, list, list] | None = None
    """(fn, inputs, outputs) run when the tab is opened (tabs render lazily)."""
    select_lane: dict[str, Any] = field(default_factory=lambda: CHEAP)
    """``CHEAP`` or ``HEAVY``: the queue group of ``on_select``."""


def bind(fn: Callable, *bound: Any) -> Callable:
    """``fn`` with its first arguments fixed (like functools.partial) but keeping a real function
    signature, name and type hints, which Gradio reads to pass ``gr.SelectData`` and name the API."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*bound, *args, **kwargs)

    params = list(inspect.signature(fn).parameters.values())[len(bound) :]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper


def user_errors(fn: Callable) -> Callable:
    """Turn engine errors meant for the user into ``gr.Error`` (shown as a toast in the page)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:  # already the page's message (gr.Error is a ValueError)
            raise
        except USER_ERRORS as err:
            raise gr.Error(client_text(err)) from err  # the full text goes to the server log

    return wrapper


MAX_INDEX = 2**31 - 1
"""Upper bound of typed indexes and pixel coordinates the engine then checks against its data."""


def number(
    value: Any, name: str, lo: float, hi: float, integer: bool = True, default: float | None = None
) -> int | float:
    """A typed UI value as a finite number in [lo, hi] (an int with ``integer``); ``default``
    stands in for a cleared box (None). Anything else (text, None, nan, inf) → ``gr.Error``."""
    if value is None and default is not None:
        return default
    try:
        x = float(value) if isinstance(value, numbers.Real) else math.nan
    except OverflowError:  # an int beyond float
        x = math.nan
    if not lo <= x <= hi:  # also false for nan
        raise gr.Error(f"{name} must be a number between {lo} and {hi} (got {value!r})")
    return int(x) if integer else x


# --- run choices -----------------------------------------------------------------------------


def run_choices(
    studio: Studio, with_model: bool = True, with_bank: bool = False
) -> list[tuple[str, str]]:
    """(title, run id) of the runs a dropdown offers."""
    return [(r.title, r.run_id) for r in studio.runs(with_model, with_bank)]


def default_runs(studio: Studio, limit: int = 4) -> list[str]:
    """The runs the Compare tab starts with (``Studio.featured_runs``)."""
    return studio.featured_runs(limit)


def pick(
    choices: list[tuple[str, str]], value: str | None, fallback: str | None = None
) -> str | None:
    """``value`` when still offered, else ``fallback`` when offered, else the first choice."""
    ids = [rid for _, rid in choices]
    for candidate in (value, fallback):
        if candidate in ids:
            return candidate
    return ids[0] if ids else None


def dropdown_update(
    choices: list[tuple[str, str]], value: str | None = None, fallback: str | None = None
) -> dict:
    """New choices; the value is only sent when it must change (so no needless change events)."""
    chosen = pick(choices, value, fallback)
    if chosen == value:
        return gr.update(choices=choices)
    return gr.update(choices=choices, value=chosen)


# --- plotly ----------------------------------------------------------------------------------


def style_layout(height: int = 360, title: str | None = None) -> dict[str, Any]:
    """The layout ``style`` sets (without the axes): transparent backgrounds, mid-grey text."""
    return {
        "height": height,
        "title": title,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"color": TEXT_GREY, "size": 12},
        "margin": {"l": 50, "r": 20, "t": 40 if title else 24, "b": 40},
        "legend": {"bgcolor": "rgba(0,0,0,0)"},
    }


AXIS_STYLE = {"gridcolor": GRID_GREY, "zerolinecolor": GRID_GREY}
"""The axis colours ``style`` sets."""


def style(fig: go.Figure, height: int = 360, title: str | None = None) -> go.Figure:
    """Transparent backgrounds and mid-grey text: readable in light and dark mode."""
    fig.update_layout(**style_layout(height, title))
    fig.update_xaxes(**AXIS_STYLE)
    fig.update_yaxes(**AXIS_STYLE)
    return fig


def message_figure(text: str, height: int = 240) -> go.Figure:
    """An empty plot that shows ``text`` (empty states)."""
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, height)


def png_data_uri(rgb: np.ndarray) -> str:
    """A uint8 RGB array as a ``data:image/png`` URI (lossless: label colours stay exact)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


PHOTO_QUALITY = 95
"""JPEG quality of photo panels (``jpeg_data_uri``)."""


def jpeg_data_uri(rgb: np.ndarray, quality: int = PHOTO_QUALITY) -> str:
    """A photo as a ``data:image/jpeg`` URI (full chroma resolution, so a thin overlap band drawn
    over it keeps its colour): about a fifth of its PNG (a 512 x 256 SynthCity image: 46 KB base64
    instead of 213 KB), for panels that show the input image itself, never labels."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def grid_domains(
    rows: int, cols: int, h_space: float, v_space: float
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(x domain, y domain) of every cell of a rows x cols grid, row by row from the top left,
    placed as ``make_subplots`` places them."""
    width, height = (1 - h_space * (cols - 1)) / cols, (1 - v_space * (rows - 1)) / rows
    return [
        ((_unit(c * (width + h_space)), _unit(c * (width + h_space) + width)),
         (_unit(1 - r * (height + v_space) - height), _unit(1 - r * (height + v_space))))
        for r in range(rows) for c in range(cols)
    ]  # fmt: skip


def _unit(value: float) -> float:
    """``value`` clipped to [0, 1] (float rounding leaves -1e-16 at a grid's bottom edge)."""
    return min(max(value, 0.0), 1.0)


def axis_refs(index: int) -> dict[str, str]:
    """The axis pair of subplot ``index`` (from 0): ``{"xaxis": "x", "yaxis": "y"}``, then x2/y2..."""
    n = "" if index == 0 else str(index + 1)
    return {"xaxis": f"x{n}", "yaxis": f"y{n}"}


def subplots(
    domains: Sequence[tuple[tuple[float, float], tuple[float, float]]],
    titles: Sequence[str],
    data: Sequence[BaseTraceType | dict[str, Any]] = (),
    layout: dict[str, Any] | None = None,
    axes: dict[str, Any] | None = None,
    link: bool = False,
) -> go.Figure:
    """A styled figure (``style``'s look) with one axis pair per domain, a title above each, the
    traces ``data`` (placed with ``axis_refs``) and ``layout`` on top: what ``make_subplots``
    plus ``update_*axes`` build, in one construction without their cost (about 0.1 s a figure,
    most of a Compare grid's or a tp figure's time on a loaded 2-core host). ``axes`` applies to
    every axis; ``link``: every axis follows the first (zoom one panel, all follow). Traces may be
    plain dicts (``{"type": "bar", ...}``): the figure is built without plotly's per-property
    validation, which took most of a tp figure's remaining time (the tests validate every figure
    the views build by constructing it again, validated)."""
    full: dict[str, Any] = {**style_layout(), **(layout or {})}
    every = {**AXIS_STYLE, **(axes or {})}
    for i, (x_domain, y_domain) in enumerate(domains):
        n, linked = axis_refs(i)["xaxis"][1:], link and i > 0
        for axis, domain in (("x", x_domain), ("y", y_domain)):
            other = "y" if axis == "x" else "x"
            full[f"{axis}axis{n}"] = {**every, **full.get(f"{axis}axis{n}", {}), "domain": domain,
                                      "anchor": f"{other}{n}", **({"matches": axis} if linked else {})}  # fmt: skip
    full["annotations"] = [
        {"text": title, "x": sum(xd) / 2, "y": yd[1], "xref": "paper", "yref": "paper",
         "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 16}}
        for title, (xd, yd) in zip(titles, domains, strict=False)
    ]  # fmt: skip
    return go.Figure(data=list(data), layout=full, _validate=False)


GRID_LABEL_PX = 28
"""Room above the first row of panels for the plot's own label (else it covers the first title)."""


def image_grid(
    panels: Sequence[tuple[str, np.ndarray]],
    columns: int = 3,
    panel_height: int = 230,
    photos: int = 0,
) -> go.Figure:
    """Images side by side with linked axes: zooming or panning one panel moves them all. The
    first ``photos`` panels (the input image) are sent as JPEG, the others losslessly as PNG."""
    rows = max(1, -(-len(panels) // columns))
    cols = min(columns, max(1, len(panels)))
    images = [
        {"type": "image", "source": (jpeg_data_uri if i < photos else png_data_uri)(rgb),
         "name": title, "hovertemplate": "x %{x}, y %{y}", **axis_refs(i)}
        for i, (title, rgb) in enumerate(panels)
    ]  # fmt: skip
    layout = {"height": rows * panel_height + 40 + GRID_LABEL_PX,
              "margin": {"l": 4, "r": 4, "t": 28 + GRID_LABEL_PX, "b": 4},
              "uirevision": "grid", "dragmode": "zoom"}  # fmt: skip
    return subplots(
        grid_domains(rows, cols, 0.01, 0.06)[: len(panels)], [t for t, _ in panels], images,
        layout, {"showticklabels": False, "showgrid": False, "zeroline": False}, link=True,
    )  # fmt: skip


# --- legends and tables ----------------------------------------------------------------------


def legend_html(entries: Sequence[tuple[str, str]]) -> str:
    """Colour swatches with names (never colour alone)."""
    items = "".join(
        f'<span class="swatch"><i style="background:{color}"></i>{name}</span>'
        for name, color in entries
    )
    return f'<div class="legend">{items}</div>'


def percent(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f}"
