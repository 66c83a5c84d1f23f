"""Train tab: launch a short adaptation run from the browser and watch it.

One job trains at a time (``Studio.trainer``); later requests wait in a queue whose position is shown.
A timer polls the job: progress with ETA, live loss and mIoU curves, the bank's class counts (at
checkpoints, for DIDA), and a Stop button that ends the run after its current iteration. A finished
run appears in every other tab (runs are refreshed when a job ends and when a tab opens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.errors import client_text
from app.views.bank import counts_figure
from app.views.common import (
    CHEAP,
    RunPickers,
    Shared,
    bind,
    dropdown_update,
    message_figure,
    number,
    run_choices,
    style,
    user_errors,
)
from dida import runs
from dida.config import MAX_SEED
from dida.environment import command_line
from dida.methods.dida import (
    CHOICES,
    MAX_BANK_SIZE,
    MAX_LAMBDA,
    MAX_TP,
    MODE_DEFAULTS,
    MODES,
    DIDAConfig,
)
from dida.methods.mic import MICConfig
from dida.methods.registry import METHODS
from dida.presets import PRESETS
from dida.studio import METHOD_TITLES, Studio, TrainJob

JOB_HEADERS = ["job", "run", "method", "state", "iteration"]
SCRATCH = "scratch"
"""The start-from choice for random weights."""
MAX_ITERS = 10_000_000
"""Most iterations a run started here may ask for."""
PRESET_NOTES = {
    "tiny": "tiny: 64×64 crops on the tiny SynthCity (generated beside the data on first use) — seconds.",
    "quick": "quick: ~5 min for source-only on 2 CPU cores; the first run generates SynthCity's training splits.",
    "default": "default: the benchmark preset (long on a CPU).",
}


LOSS_INS_NOTE = (
    "*Why `loss_ins` (DIDA's L_ins) can rise while the model improves:* it is a cross-entropy "
    "against the teacher's instance target, spread over the bank slots of the pixel's class and "
    "nearly uniform among them. Its floor is that target's entropy, about log(written slots of the "
    "class): 0 while the bank is empty, higher as slots fill. A climbing L_ins mostly tracks the "
    "bank filling; judge the run by mIoU."
)
"""Caption under the live loss chart."""
MODE_CHOICES = [("paper", "paper"), ("released code", "released")]
MODE_INFO = (
    "paper: as the paper describes; released code: as the official repository trains (a bank "
    "precomputed from the start weights, sum-normalised scores instead of the tp-softmax: tp is "
    "unused), docs/METHODS.md"
)
WEIGHT_CHOICES = [("uniform (paper)", "uniform"), ("teacher confidence, like L_T", "confidence")]
WEIGHT_INFO = (
    "uniform: every aligned pixel counts 1; confidence: L_T's per-pixel weight (the teacher's "
    "pseudo-label confidence), which took DIDA paper from 40.8 to 43.0 mIoU on one fidelity seed "
    "(docs/BENCHMARKS.md)"
)
CURVE_COLORS = ("#0072B2", "#D55E00")
"""Run A and run B in the two-run chart (Okabe-Ito blue and vermillion)."""
DASHES = ("solid", "dot", "dash", "dashdot", "longdash")
"""One dash style per loss in the two-run chart."""


def method_choices() -> list[tuple[str, str]]:
    return [(METHOD_TITLES.get(m, m), m) for m in METHODS]


def has_options(method: str, config_cls: type) -> bool:
    """Whether ``method``'s config carries the options of ``config_cls`` (``DIDAConfig``: DIDA's
    instance level, for dida and dida_mic; ``MICConfig``: MIC's masking, for mic and dida_mic)."""
    return method in METHODS and issubclass(METHODS[method][1], config_cls)


def option_groups(method: str) -> tuple[dict, dict]:
    """(DIDA accordion update, MIC accordion update): each shown when the method has its options."""
    return (
        gr.update(visible=has_options(method, DIDAConfig)),
        gr.update(visible=has_options(method, MICConfig)),
    )


def mic_options(mask_ratio: Any, mask_patch: Any, mic_lambda: Any) -> dict[str, Any]:
    """MIC's options typed in the tab (cleared fields: MIC's defaults)."""
    defaults = MICConfig()
    return {
        "mask_ratio": number(mask_ratio, "mask ratio", 0, 0.99, False, defaults.mask_ratio),
        "mask_patch": number(mask_patch, "mask patch", 1, 4096, default=defaults.mask_patch),
        "mic_lambda": number(mic_lambda, "MIC λ", 0, MAX_LAMBDA, False, defaults.mic_lambda),
    }


def dida_options(
    bank_size: Any, tp: Any, ins_lambda: Any, mode: Any = "paper", ins_weight: Any = "uniform"
) -> dict[str, Any]:
    """DIDA's options typed in the tab (a cleared K: 300; a cleared lambda: the mode's default);
    the mode and the L_ins weight only when they differ from the paper's defaults."""
    lam = None if ins_lambda is None else number(ins_lambda, "lambda", 0, MAX_LAMBDA, False)
    mode = choice(mode, "DIDA mode", MODES, "paper")
    weight = choice(ins_weight, "L_ins pixel weight", CHOICES["ins_weight"], "uniform")
    return {
        "bank_size": number(bank_size, "bank size K", 1, MAX_BANK_SIZE, default=300),
        "tp": number(tp, "tp", 0, MAX_TP, integer=False),
        "ins_lambda": lam,
        **({"mode": mode} if mode != "paper" else {}),
        **({"ins_weight": weight} if weight != "uniform" else {}),
    }


def choice(value: Any, name: str, allowed: Sequence[str], default: str) -> str:
    """A UI choice checked against ``allowed`` (None: ``default``); anything else → ``gr.Error``."""
    value = default if value is None else value
    if value not in allowed:
        raise gr.Error(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def mode_lambda(mode: str) -> dict:
    """The λ box follows the chosen mode's default (paper 1.0, released 0.5)."""
    return gr.update(value=MODE_DEFAULTS["ins_lambda"][mode == "released"])


def method_options(method: str, dida: tuple, mic: tuple) -> dict[str, Any]:
    """The typed DIDA options for dida and dida_mic, the MIC options for mic and dida_mic."""
    options = dida_options(*dida) if has_options(method, DIDAConfig) else {}
    return options | (mic_options(*mic) if has_options(method, MICConfig) else {})


@user_errors
def start(
    studio: Studio,
    method: str,
    preset: str,
    iters: float | None,
    seed: float | None,
    name: str | None,
    bank_size: float | None,
    tp: float,
    ins_lambda: float | None,
    start_from: str | None = SCRATCH,
    mask_ratio: float | None = None,
    mask_patch: float | None = None,
    mic_lambda: float | None = None,
    dida_mode: str | None = "paper",
    ins_weight: str | None = "uniform",
) -> tuple[str, str, Any]:
    """Queue a run → (job id, status, timer update); the DIDA options go to dida and dida_mic, the
    MIC options to mic and dida_mic. A run name that is not a safe folder name is refused with
    the rule, in a warning and the status (the session's job, if any, stays shown)."""
    dida = (bank_size, tp, ins_lambda, dida_mode, ins_weight)
    options = method_options(method, dida, (mask_ratio, mask_patch, mic_lambda))
    try:
        job = studio.train(
            method,
            preset,
            number(iters, "iterations", 1, MAX_ITERS) if iters else None,
            number(seed, "seed", 0, MAX_SEED, default=0),
            options,
            (name or "").strip() or None,
            None if start_from in (None, "", SCRATCH) else start_from,
        )
    except runs.RunNameError as err:
        gr.Warning(client_text(err))
        return gr.update(), f"**Not started** — {client_text(err)}", gr.update()
    return job.job_id, status_text(studio, job), gr.Timer(active=True)


def status_text(studio: Studio, job: TrainJob, note: str = "") -> str:
    """The job's state (queued with position, running, or how it ended), ``note``, and the shell
    command that trains the same run."""
    state = _state_line(studio, job) + note
    return f"{state}\n\nSame run from a shell: `{command_line(job.command)}`"


def _state_line(studio: Studio, job: TrainJob) -> str:
    position = studio.trainer.position(job.job_id)
    head = f"**{job.job_id}** · run `{job.name}` · {METHOD_TITLES.get(job.config.method, job.config.method)}"
    if job.state == "queued":
        return f"{head} — queued, position {position} (one job trains at a time)"
    if job.state == "running":
        return f"{head} — running"
    if job.state == "failed":
        return f"{head} — **failed**: {client_text(job.error)}"
    return f"{head} — {job.state}; the run is listed in every tab now"


def progress_html(job: TrainJob) -> str:
    """A progress bar with iteration, speed and time left."""
    last = job.last
    it, total = (last.it, last.max_iters) if last else (0, job.config.iters)
    rate = next((e.it_per_s for e in reversed(job.events) if e.kind == "train"), 0.0)
    eta = next((e.eta_s for e in reversed(job.events) if e.kind == "train"), 0.0)
    eta_text = f"ETA {eta:.0f} s" if rate and not job.done else ""
    return (
        f'<div class="train-progress"><progress value="{it}" max="{total}"></progress>'
        f"<span>{it} / {total} iterations · {rate:.2f} it/s {eta_text}</span></div>"
    )


def loss_figure(job: TrainJob) -> go.Figure:
    """Every logged loss against the iteration."""
    events = [e for e in job.events if e.kind == "train"]
    if not events:
        return message_figure("losses appear after the first logged iteration")
    fig = go.Figure()
    for name in dict.fromkeys(k for e in events for k in e.losses):
        points = [(e.it, e.losses[name]) for e in events if name in e.losses]
        fig.add_scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=name
        )
    fig.update_layout(xaxis_title="iteration", yaxis_title="loss")
    return style(fig, 300, "Training losses")


def miou_figure(job: TrainJob) -> go.Figure:
    """Target val mIoU (19 classes) at every evaluation."""
    events = [e for e in job.events if e.kind == "eval"]
    if not events:
        return message_figure("mIoU appears after the first evaluation")
    values = [100 * (e.metrics.get("mIoU", {}).get("19") or 0.0) for e in events]
    fig = go.Figure(
        go.Scatter(x=[e.it for e in events], y=values, mode="lines+markers", name="mIoU")
    )
    fig.update_layout(xaxis_title="iteration", yaxis_title="mIoU (%)")
    return style(fig, 300, "Target val mIoU")


def jobs_table(studio: Studio) -> pd.DataFrame:
    rows = [
        [
            j.job_id,
            j.name,
            j.config.method,
            j.state,
            f"{j.last.it if j.last else 0}/{j.config.iters}",
        ]
        for j in studio.trainer.jobs.values()
    ]
    return pd.DataFrame(rows, columns=JOB_HEADERS)


@user_errors
def poll(studio: Studio, job_id: str | None, palette: str) -> tuple[Any, ...]:
    """(status, progress, losses, mIoU, bank counts, jobs, timer update) of the session's job."""
    if not job_id:
        empty = message_figure("start a run to see its curves")
        idle = "No job started in this session."
        return idle, "", empty, empty, empty, jobs_table(studio), gr.Timer(active=False)
    job = studio.trainer.get(job_id)
    done = job.done  # read first: a job ending during this poll gets one more tick to show it
    snapshot = studio.job_snapshot(job_id)
    bank = (
        message_figure("bank counts appear at checkpoints of DIDA runs")
        if snapshot is None
        else counts_figure(snapshot, palette)
    )
    return (
        status_text(studio, job), progress_html(job), loss_figure(job), miou_figure(job), bank,
        jobs_table(studio), gr.Timer(active=not done),
    )  # fmt: skip


@user_errors
def stop(studio: Studio, job_id: str | None) -> str:
    """Stop the session's job after its current iteration (or drop it from the queue); a job that
    has already ended is left alone and the status says so."""
    if not job_id:
        raise gr.Error("no job to stop: start one first")
    job = studio.trainer.get(job_id)
    if job.done:
        return status_text(studio, job, f" — already {job.state}, nothing to stop")
    return status_text(studio, studio.trainer.stop(job_id), " — stop requested")


def stop_button(studio: Studio, job_id: str | None) -> dict:
    """Stop is enabled only while the session's job is queued or running."""
    job = studio.trainer.jobs.get(job_id) if job_id else None
    return gr.update(interactive=job is not None and not job.done)


def _curves(studio: Studio, run_id: str) -> tuple[list, list, dict[str, list]]:
    """(eval iterations, mIoU %, {loss name: [(it, value)]}) of a run's metric records."""
    evals = studio.metrics(run_id, "eval")
    miou = [100 * (r.get("mIoU", {}).get("19") or 0.0) for r in evals]
    losses: dict[str, list] = {}
    for record in studio.metrics(run_id, "train"):
        for name in (k for k in record if k.startswith("loss")):
            losses.setdefault(name, []).append((record["it"], record[name]))
    return [r["it"] for r in evals], miou, losses


@user_errors
def two_runs_figure(studio: Studio, run_a: str | None, run_b: str | None) -> go.Figure:
    """mIoU (left) and losses (right) of two runs or shipped checkpoints on shared axes."""
    chosen = [(rid, color) for rid, color in zip((run_a, run_b), CURVE_COLORS, strict=True) if rid]
    if not chosen:
        return message_figure("pick two runs (or a run and a shipped checkpoint)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("target val mIoU (%)", "training losses"))
    for rid, color in chosen:
        title = studio.run(rid).short_title
        its, miou, losses = _curves(studio, rid)
        fig.add_scatter(x=its, y=miou, mode="lines+markers", name=f"{title} · mIoU",
                        line={"color": color}, row=1, col=1)  # fmt: skip
        for i, (name, points) in enumerate(losses.items()):
            fig.add_scatter(
                x=[p[0] for p in points], y=[p[1] for p in points], mode="lines",
                name=f"{title} · {name}", line={"color": color, "dash": DASHES[i % len(DASHES)]},
                row=1, col=2,
            )  # fmt: skip
    fig.update_xaxes(title_text="iteration")
    return style(
        fig, 340, "Two runs on one chart (shipped checkpoints record their final mIoU only)"
    )


def start_choices(studio: Studio) -> list[tuple[str, str]]:
    """Random weights, or any run or shipped checkpoint with weights."""
    return [("random weights (from scratch)", SCRATCH), *run_choices(studio)]


def refresh_start(studio: Studio, value: str | None) -> list[dict]:
    return [dropdown_update(start_choices(studio), value, SCRATCH)]


def preset_changed(preset: str) -> tuple[dict, str]:
    return gr.update(value=PRESETS[preset]["iters"]), PRESET_NOTES.get(preset, "")


def _inputs(studio: Studio) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    with gr.Row():
        ui["method"] = gr.Dropdown(method_choices(), value="dida", label="method")
        ui["preset"] = gr.Dropdown(sorted(PRESETS), value="tiny", label="preset")
        ui["iters"] = gr.Number(
            value=PRESETS["tiny"]["iters"], precision=0, minimum=1, label="iterations"
        )
        ui["seed"] = gr.Number(value=0, precision=0, minimum=0, label="seed")
        ui["name"] = gr.Textbox(
            label="run name (optional)", placeholder="<method>_<preset>_s<seed>_<time>"
        )
    ui["start_from"] = gr.Dropdown(
        start_choices(studio), value=SCRATCH, label="start from", elem_id="train-start-from",
        info="the weights (and model config) of a run or shipped checkpoint; on SynthCity, "
        "adaptation started from a trained source-only model gains over source-only, from scratch "
        "it does not at CPU budgets (docs/BENCHMARKS.md)",
    )  # fmt: skip
    ui["note"] = gr.Markdown(PRESET_NOTES["tiny"])
    _dida_inputs(ui)
    mic = MICConfig()
    mic_box = gr.Accordion("MIC masked consistency", open=True, visible=False)
    with mic_box as ui["mic_options"], gr.Row():
        ui["mask_ratio"] = gr.Slider(
            0, 0.95, value=mic.mask_ratio, step=0.05, label="mask ratio (patches masked)"
        )
        ui["mask_patch"] = gr.Number(
            value=mic.mask_patch, precision=0, minimum=1, label="mask patch (pixels)"
        )
        ui["mic_lambda"] = gr.Number(value=mic.mic_lambda, minimum=0, label="λ_M (weight of L_M)")
    with gr.Row():
        ui["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
        ui["stop"] = gr.Button("Stop", variant="stop", elem_id="train-stop", interactive=False)
    return ui


def _dida_inputs(ui: dict[str, Any]) -> None:
    """The DIDA accordion's inputs, added to ``ui``."""
    with gr.Accordion("DIDA instance level", open=True) as ui["dida_options"]:
        with gr.Row():
            ui["bank_size"] = gr.Number(value=300, precision=0, minimum=19, label="K (bank slots)")
            ui["tp"] = gr.Slider(0.01, 1.0, value=0.1, step=0.01, label="tp (temperature)")
            ui["ins_lambda"] = gr.Number(value=1.0, minimum=0, label="λ (weight of L_ins)")
        with gr.Row():
            ui["dida_mode"] = gr.Radio(
                MODE_CHOICES, value="paper", label="DIDA mode", info=MODE_INFO
            )
            ui["ins_weight"] = gr.Radio(
                WEIGHT_CHOICES, value="uniform", label="L_ins pixel weight", info=WEIGHT_INFO
            )


def _outputs() -> list[Any]:
    """status, progress, losses, mIoU, bank counts, jobs (``poll``'s outputs without the timer)."""
    status = gr.Markdown("No job started in this session.", elem_id="train-status")
    progress = gr.HTML(elem_id="train-progress")
    with gr.Row():
        with gr.Column():
            losses = gr.Plot(label="losses")
            gr.Markdown(LOSS_INS_NOTE, elem_id="train-loss-note")
        miou = gr.Plot(label="mIoU")
    bank = gr.Plot(label="bank class counts")
    jobs = gr.Dataframe(headers=JOB_HEADERS, interactive=False, label="jobs of this app")
    return [status, progress, losses, miou, bank, jobs]


def build(studio: Studio, shared: Shared) -> RunPickers:
    """Lay out and wire the tab (it has no run picker; opening it polls the session's job)."""
    ui, shown = _inputs(studio), _outputs()
    job_id, timer, status, private = (
        gr.State(None),
        gr.Timer(1.0, active=False),
        shown[0],
        "private",
    )
    ui["preset"].change(
        preset_changed, ui["preset"], [ui["iters"], ui["note"]], api_visibility=private, **CHEAP
    )
    ui["dida_mode"].change(
        mode_lambda, ui["dida_mode"], ui["ins_lambda"], api_visibility=private, **CHEAP
    )
    ui["method"].change(option_groups, ui["method"], [ui["dida_options"], ui["mic_options"]],
                        api_visibility=private, **CHEAP)  # fmt: skip
    names = ("method", "preset", "iters", "seed", "name", "bank_size", "tp", "ins_lambda",
             "start_from", "mask_ratio", "mask_patch", "mic_lambda", "dida_mode",
             "ins_weight")  # fmt: skip
    enable = (bind(stop_button, studio), job_id, ui["stop"])
    ui["start"].click(bind(start, studio), [ui[n] for n in names], [job_id, status, timer],
                      api_name="train_start", **CHEAP).then(*enable, **CHEAP)  # fmt: skip
    polled = [*shown, timer]
    timer.tick(
        bind(poll, studio), [job_id, shared.palette], polled, api_name="train_poll", queue=False
    ).then(*enable, queue=False)
    ui["stop"].click(bind(stop, studio), job_id, status, api_name="train_stop", queue=False).then(
        *enable, queue=False
    )
    pair = _two_runs(studio)
    return RunPickers(
        [ui["start_from"], *pair],
        bind(_refresh, studio),
        on_select=(bind(poll, studio), [job_id, shared.palette], polled),
    )


def _two_runs(studio: Studio) -> list[gr.Dropdown]:
    """The two-run chart: two pickers (runs and shipped checkpoints) and their overlaid curves."""
    choices = run_choices(studio)
    with gr.Accordion("Two runs on one chart", open=False):
        with gr.Row():
            run_a = gr.Dropdown(choices, value=None, label="run A", elem_id="train-run-a")
            run_b = gr.Dropdown(choices, value=None, label="run B", elem_id="train-run-b")
        chart = gr.Plot(label="two runs", elem_id="train-two-runs")
    gr.on([run_a.change, run_b.change], bind(two_runs_figure, studio), [run_a, run_b], chart,
          api_name="train_two_runs", **CHEAP)  # fmt: skip
    return [run_a, run_b]


def _refresh(studio: Studio, start_from: str | None, run_a: str | None, run_b: str | None):
    """The start-from picker and the two-run pickers after ``Studio.refresh``."""
    choices = run_choices(studio)
    ids = {rid for _, rid in choices}
    kept = [gr.update(choices=choices, **({} if v in ids or v is None else {"value": None}))
            for v in (run_a, run_b)]  # fmt: skip
    return [*refresh_start(studio, start_from), *kept]
