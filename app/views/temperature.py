"""Temperature tab: what DIDA's instance level does at one pixel, and how tp shapes it.

Click a pixel of the target image: q over the K bank slots at the chosen tp (sorted bars coloured by
slot class, on one y-scale for every tp of the slider), its entropy, the gathered / calibrated
distribution, the teacher's semantic probabilities, the scattered class scores, and the regenerated
pseudo-label next to the semantic-only one, under the run's own DIDA options (its config's tp,
normalize, centre and scatter_alpha, read through ``method_config`` for ``dida`` and ``dida_mic`` runs).
The maths is ``dida.explain``; this tab only draws it.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from app.views.common import (
    CHEAP,
    MAX_INDEX,
    RunPickers,
    Shared,
    axis_refs,
    bind,
    dropdown_update,
    grid_domains,
    message_figure,
    number,
    run_choices,
    subplots,
    user_errors,
)
from dida import visualize as V
from dida.data.classes import CLASSES
from dida.explain import PixelExplanation
from dida.methods.dida import MAX_TP
from dida.studio import ImageKey, Studio
from dida.studio.catalog import DIDAOptions

TP_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Temperatures whose largest q sets the common y-scale (the slider's range)."""
NO_BANK = "No run with an instance bank yet: train a DIDA run in the Train tab."

FORMULAS = r"""
#### What you are looking at

For the clicked pixel, **E** is its decoder feature and **M₁…M_K** the bank slots (class *y_k*).

1. **Similarity** $s_k = \langle E, M_k\rangle$ as the run trained: with *centre* the bank mean
   is first subtracted from E and every slot; with *normalize* both are L2-normalised (cosine).
2. **Instance distribution** $q_k = \dfrac{\exp(s_k/t_p)}{\sum_j \exp(s_j/t_p)}$ — small *tp*
   sharpens it toward the nearest slot, large *tp* flattens it toward uniform (entropy → log K).
3. **Gathering** (semantic → instance) $g_k = p_{y_k}$: each slot gets the teacher's probability
   of its class; **calibrated** $\hat q_k = q_k g_k / \sum_j q_j g_j$.
4. **Scattering** (instance → semantic) $a_c = \sum_{k:\,y_k=c} \hat q_k$.
5. **Regenerated** scores $\alpha\,p + (1-\alpha)\,a$; the pseudo-label is their argmax, the
   semantic-only one is $\arg\max p$.

The bars share one y-axis for every tp of the slider, so sharpening is not hidden by rescaling.
"""


def explanation_figure(
    e: PixelExplanation, y_max: float, palette: str, slots: int = 60
) -> go.Figure:
    """Sorted q (top ``slots``) with q̂, and p / a / regenerated per class."""
    colors = [c for _, c in V.legend_entries(palette)]
    q, calibrated = e.q.numpy(), e.calibrated.numpy()
    order = np.argsort(-q)[:slots]
    labels = e.slot_labels.numpy()[order]
    hover = [f"slot {k} · {CLASSES[c]}" for k, c in zip(order, labels, strict=True)]
    x = list(range(len(order)))
    traces = [
        {"type": "bar", "x": x, "y": q[order], "marker": {"color": [colors[c] for c in labels]},
         "name": "q (instance)", "hovertext": hover},
        {"type": "scatter", "x": x, "y": calibrated[order], "mode": "markers",
         "name": "q̂ (calibrated)", "hovertext": hover,
         "marker": {"symbol": "diamond", "color": "#D55E00", "size": 7}},
    ] + [
        {"type": "bar", "x": list(CLASSES), "y": values.numpy(), "marker": {"color": colors},
         "showlegend": False, **axis_refs(i)}
        for i, values in enumerate((e.teacher_probs, e.scattered, e.regenerated_probs), start=1)
    ]  # fmt: skip
    top = grid_domains(2, 1, 0, 0.18)[0]
    titles = [f"q over bank slots at tp = {e.tp:g} (top {len(order)} of {len(q)}, sorted)",
              "teacher p", "scattered a", f"regenerated α·p + (1−α)·a (α = {e.alpha:g})"]  # fmt: skip
    layout = {
        "height": 620,
        "xaxis": {"title": {"text": "slots, most probable first"}},
        "yaxis": {"range": [0, y_max * 1.05], "title": {"text": "probability"}},
        **{f"xaxis{i}": {"tickangle": -60, "tickfont": {"size": 9}} for i in (2, 3, 4)},
        **{f"yaxis{i}": {"range": [0, 1]} for i in (2, 3, 4)},
    }
    domains = [top, *grid_domains(2, 3, 0.2 / 3, 0.18)[3:]]
    return subplots(domains, titles, traces, layout)


def similarity_text(options: DIDAOptions) -> str:
    """The run's similarity in words, e.g. "cosine after centring on the bank mean"."""
    kind = "cosine" if options.normalize else "dot product (not normalised)"
    return kind + (" after centring on the bank mean" if options.centre else "")


def training_differences(options: DIDAOptions) -> str:
    """Where the run's training computed the instance level otherwise than this view (the paper's
    formulas with the teacher's p), as markdown list lines; empty for a paper-mode run."""
    lines = []
    if options.mode == "released":
        lines.append("\n- trained in **released** mode: its instance distribution was s / Σ s "
                     "(no temperature); this view shows the paper's softmax at tp")  # fmt: skip
    if options.gather_from == "student":
        lines.append("\n- its L_ins target was calibrated with the **student's raw logits** (the "
                     "released code), not with p as shown; with mostly negative logits that target "
                     "flips sign (docs/METHODS.md, released mode)")  # fmt: skip
    return "".join(lines)


def summary_text(e: PixelExplanation, slots: int, options: DIDAOptions | None = None) -> str:
    semantic, regenerated = CLASSES[e.pseudo_label_semantic], CLASSES[e.pseudo_label_regenerated]
    change = "same" if semantic == regenerated else "**changed by the instance level**"
    similarity = (
        ""
        if options is None
        else f"\n- similarity (the run's config): {similarity_text(options)}"
        + training_differences(options)
    )
    nearest = ", ".join(
        f"{int(k)} ({CLASSES[int(c)]}, s={float(s):.2f})"
        for k, c, s in zip(
            e.nearest.indices[:5], e.nearest.labels[:5], e.nearest.similarities[:5], strict=True
        )
    )
    return (
        f"**Pixel (x={e.x}, y={e.y})**, feature cell {e.cell} · tp = {e.tp:g}\n\n"
        f"- entropy H(q) = {e.entropy:.3f} nats (uniform over K = {slots}: {math.log(slots):.3f})\n"
        f"- pseudo-label, semantic only: **{semantic}** → regenerated: **{regenerated}** ({change})\n"
        f"- nearest slots: {nearest}{similarity}"
    )


@user_errors
def explain(
    studio: Studio,
    run_id: str | None,
    key: ImageKey,
    x: float | None,
    y: float | None,
    tp: float,
    snapshot: float,
    palette: str,
) -> tuple[Any, str]:
    """(figure, summary) of the explanation at pixel (x, y) and temperature tp."""
    if not run_id:
        return message_figure(NO_BANK), NO_BANK
    if x is None or y is None:
        return message_figure("Click a pixel of the image"), "Click a pixel of the image."
    index = number(snapshot, "snapshot", -1, MAX_INDEX, default=-1)
    x, y = number(x, "x", 0, MAX_INDEX), number(y, "y", 0, MAX_INDEX)
    e = studio.explain(run_id, key, x, y, number(tp, "tp", 0, MAX_TP, integer=False), index)
    sweep = studio.tp_sweep(run_id, key, x, y, TP_GRID, index)
    y_max = max(sweep.y_max, float(e.q.max()))
    options = studio.dida_options(run_id)
    return explanation_figure(e, y_max, palette), summary_text(e, len(e.q), options)


def click(
    studio: Studio, run_id, key, tp, snapshot, palette, evt: gr.SelectData
) -> tuple[int, int, Any, str]:
    """A click on the image → x, y and the explanation there."""
    x, y = int(evt.index[0]), int(evt.index[1])
    return (x, y, *explain(studio, run_id, key, x, y, tp, snapshot, palette))


@user_errors
def select_run(studio: Studio, run_id: str | None) -> tuple[dict, dict]:
    """(snapshot slider over the run's history, tp slider at the run's tp)."""
    history = studio.bank_history(run_id) if run_id else None
    last = max(len(history) - 1, 0) if history else 0
    tp = studio.dida_options(run_id).tp if run_id else 0.1
    return gr.update(maximum=max(last, 1), value=last), gr.update(value=tp)


@user_errors
def show_image(studio: Studio, key: ImageKey) -> np.ndarray:
    return studio.item(key)["image"]


def build(studio: Studio, shared: Shared) -> RunPickers:
    choices = run_choices(studio, with_bank=True)
    gr.Markdown(studio.bank_note(), visible=bool(studio.bank_note()))  # official: no bank
    with gr.Row():
        run = gr.Dropdown(
            choices, value=choices[0][1] if choices else None, label="DIDA run", scale=2
        )
        snapshot = gr.Slider(0, 1, value=0, step=1, label="bank snapshot", scale=2)
        tp = gr.Slider(
            0.01, 1.0, value=0.1, step=0.01, label="temperature tp", elem_id="tp-slider", scale=2
        )
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(label="target image (from Compare) — click a pixel", format="png",
                             interactive=False, elem_id="tp-image", height=300)  # fmt: skip
            with gr.Row():
                x = gr.Number(label="x", precision=0, minimum=0)
                y = gr.Number(label="y", precision=0, minimum=0)
                go_button = gr.Button("Explain pixel")
            summary = gr.Markdown(
                NO_BANK if not choices else "Click a pixel of the image.", elem_id="tp-summary"
            )
        with gr.Column(scale=1):
            gr.Markdown(FORMULAS, latex_delimiters=[{"left": "$", "right": "$", "display": False}])
    figure = gr.Plot(label="instance distribution and cross-level interaction")
    inputs = [run, shared.image_key, x, y, tp, snapshot, shared.palette]
    image.select(bind(click, studio), [run, shared.image_key, tp, snapshot, shared.palette],
                 [x, y, figure, summary], api_name="tp_click", **CHEAP)  # fmt: skip
    gr.on([go_button.click, tp.change, snapshot.change, shared.palette.change], bind(explain, studio),
          inputs, [figure, summary], api_name="tp_explain", trigger_mode="always_last",
          **CHEAP)  # fmt: skip
    run.change(bind(select_run, studio), run, [snapshot, tp], api_visibility="private", **CHEAP)
    shared.image_key.change(
        bind(show_image, studio), shared.image_key, image, api_visibility="private", **CHEAP
    )
    on_open = (bind(_open, studio), [run, shared.image_key], [image, snapshot, tp])
    return RunPickers([run], bind(_refresh, studio), on_select=on_open)


def _refresh(studio: Studio, run_id: str | None) -> list[Any]:
    return [dropdown_update(run_choices(studio, with_bank=True), run_id)]


def _open(studio: Studio, run_id: str | None, key: ImageKey) -> list[Any]:
    return [show_image(studio, key), *select_run(studio, run_id)]
