"""What a new user tripped over (issue 16, section 5), checked on the view handlers with a Studio over
the tiny fixture runs: bank play from the last snapshot, the UMAP tab telling what it draws, the
IoU-vs-frequency scatter and its run choice, the Train tab's Stop, device, L_ins caption and two-run
chart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_studio import private_studio

from app.main import build_app
from app.views import bank, longtail, train, umap
from dida.studio import Studio

DEADLINE_S = 180


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path) -> Studio:
    made = private_studio(tmp_path_factory, synthcity_tiny)
    yield made
    made.shutdown()


def _wait(predicate, what: str) -> None:
    """Poll ``predicate`` until true (fails naming ``what`` after DEADLINE_S; not a timing test)."""
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


# --- Instance bank: play ------------------------------------------------------------------------


def test_play_at_the_last_snapshot_rewinds_and_starts(studio: Studio) -> None:
    last = len(studio.bank_history("run:dida")) - 1
    assert last == 2
    index, timer = bank.play(studio, "run:dida", last)
    assert index == 0 and timer.active is True
    index, timer = bank.play(studio, "run:dida", 1)
    assert index == 1 and timer.active is True
    index, timer = bank.play(studio, None, 0)
    assert index == 0 and timer.active is False


def test_play_advances_then_stops_or_loops(studio: Studio) -> None:
    assert [bank.play_tick(studio, "run:dida", i)[0] for i in (0, 1)] == [1, 2]
    assert bank.play_tick(studio, "run:dida", 0)[1].active is True
    assert bank.play_tick(studio, "run:dida", 1)[1].active is False  # reached the last one
    index, timer = bank.play_tick(studio, "run:dida", 2, True)
    assert index == 0 and timer.active is True  # loop: start over
    index, timer = bank.play_tick(studio, "run:dida", 1, True)
    assert index == 2 and timer.active is True


# --- UMAP: the label tells what is drawn ----------------------------------------------------


def _project(studio: Studio, method: str = "UMAP", color_by: str = "class"):
    return umap.project(studio, "run:dida", 2, color_by, False, 300, method, 0, "cityscapes")


def test_projection_label_says_pca_while_umap_computes(studio: Studio) -> None:
    figure, status, timer, _, label = _project(studio)
    if timer.active:  # UMAP queued or running: PCA is drawn and the label says so
        assert label["label"] == "projection — showing PCA (UMAP computing…)"
        assert figure.layout.title.text.startswith("PCA of 38 points")
    _wait(lambda: studio.projection_state("run:dida", 2) == "done", "the background UMAP")
    figure, _, timer, _, label = _project(studio)
    assert label["label"] == "projection — showing UMAP" and timer.active is False
    assert figure.layout.title.text.startswith("UMAP of 38 points")
    assert _project(studio, "PCA")[4]["label"] == "projection — showing PCA"
    failed = umap.method_label("pca", "UMAP", "failed: boom")
    assert failed["label"] == "projection — showing PCA"


def test_correct_colouring_is_explained(studio: Studio) -> None:
    _, status, *_ = _project(studio, color_by="correct")
    assert "classifier" in status and "agrees" in status and "ground truth" in status
    _, status, *_ = _project(studio, color_by="class")
    assert "agrees" not in status


def test_selection_table_has_real_headers(studio: Studio) -> None:
    text, table, csv = umap.selection(studio, "run:dida", 2, False, 300, 0, [])
    assert list(table.columns) == ["class", "bank (source)", "target pixel"] and csv is None
    text, table, _ = umap.selection(studio, "run:dida", 2, False, 300, 0, [0, 1, 2])
    assert list(table.columns) == ["class", "bank (source)", "target pixel"]
    assert table["bank (source)"].sum() == 3 and table["target pixel"].sum() == 0
    assert text.startswith("**3 points selected**")


# --- Long tail: a labelled scatter of chosen runs --------------------------------------------


def test_iou_vs_frequency_is_a_labelled_scatter(studio: Studio) -> None:
    figure, table, *_ = longtail.iou_frequency(studio, ["run:dida", "run:daformer"], False)
    assert len(figure.data) == 2
    rarest = set(table.sort_values("pixel_fraction")["class"].unique()[: longtail.LABELLED_RARE])
    for trace in figure.data:
        assert trace.mode == "markers+text"  # no lines joining classes
        assert {t for t in trace.text if t} <= rarest and any(trace.text)
        scored = table[(table["run"] == trace.name) & table["iou"].notna()]
        assert list(trace.customdata) == list(scored["class"])
        assert "%{customdata}" in trace.hovertemplate


def test_runs_are_chosen_not_auto_ticked(studio: Studio) -> None:
    assert longtail.default_runs(studio) == studio.featured_runs()
    (update,) = longtail._refresh(studio, ["run:dida"])
    assert "value" not in update  # new runs are offered, not ticked
    assert {rid for _, rid in update["choices"]} >= {"run:dida", "run:daformer"}
    (update,) = longtail._refresh(studio, ["run:gone", "run:dida"])
    assert update["value"] == ["run:dida"]


# --- Train: Stop, device, L_ins caption, two runs -------------------------------------------


def test_stop_on_a_finished_job_says_so_and_is_disabled(studio: Studio) -> None:
    assert train.stop_button(studio, None)["interactive"] is False
    job_id, _, _ = train.start(studio, "source_only", "tiny", 1, 0, "stop_done", None, 0.1, None)
    job = studio.trainer.get(job_id)
    _wait(lambda: job.done, "the one-iteration job")
    status = train.stop(studio, job_id)
    assert "already finished, nothing to stop" in status and "stop requested" not in status
    assert job.state == "finished"
    assert train.stop_button(studio, job_id)["interactive"] is False


def test_shell_command_names_the_device_the_app_used(studio: Studio) -> None:
    _, status, _ = train.start(studio, "source_only", "tiny", 1, 0, "dev_cpu", None, 0.1, None)
    assert "--device cpu" in status and "--device auto" not in status
    job = studio.trainer.get(status.split("**")[1])
    assert job.config.device == "cpu"
    _wait(lambda: job.done, "the device job")


def test_loss_chart_explains_a_rising_l_ins(studio: Studio) -> None:
    demo = build_app(studio)
    notes = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "train-loss-note"]
    assert len(notes) == 1 and "loss_ins" in notes[0].value and "log(" in notes[0].value


def test_two_runs_on_one_chart(studio: Studio) -> None:
    figure = train.two_runs_figure(studio, "run:dida", "run:daformer")
    names = [t.name for t in figure.data]
    assert "DIDA · dida · mIoU" in names and "DAFormer-style · daformer · mIoU" in names
    assert "DIDA · dida · loss_ins" in names and "DAFormer-style · daformer · loss_source" in names
    colours = {t.line.color for t in figure.data if t.name.startswith("DIDA")}
    assert colours == {train.CURVE_COLORS[0]}
    evals = studio.metrics("run:dida", "eval")
    mine = next(t for t in figure.data if t.name == "DIDA · dida · mIoU")
    assert list(mine.x) == [r["it"] for r in evals]
    assert list(mine.y) == pytest.approx([100 * r["mIoU"]["19"] for r in evals])
    empty = train.two_runs_figure(studio, None, None)
    assert "pick two runs" in empty.layout.annotations[0].text
    update = train._refresh(studio, train.SCRATCH, "run:gone", None)
    assert update[1]["value"] is None and "value" not in update[2]
    assert update[0]["choices"][0] == ("random weights (from scratch)", train.SCRATCH)
