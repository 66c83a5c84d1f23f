"""The app follows a run's DIDA config: the Temperature (explain) view reads ``centre``,
``normalize``, ``scatter_alpha`` and ``tp`` through ``method_config`` for dida and dida_mic runs and
computes the tp-softmax as the method does; the Train tab shows DIDA's options for dida and
dida_mic and MIC's for mic and dida_mic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from app.views import temperature, train
from dida.methods.base import MethodContext
from dida.methods.common import temperature_softmax
from dida.methods.registry import build_method, method_config
from dida.studio import Studio

SHIPPED_DIDA = Path("assets/checkpoints/dida")
X, Y, TP = 40, 20, 0.1


def _run(runs: Path, name: str, method: str, **options: object) -> None:
    """A copy of the shipped DIDA checkpoint whose config names ``method`` with ``options``."""
    folder = runs / name
    shutil.copytree(SHIPPED_DIDA, folder, ignore=shutil.ignore_patterns("scores.npz"))
    config = json.loads((folder / "config.json").read_text())
    config["method"] = {"name": method, "options": {**config["method"]["options"], **options}}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def studio(synthcity_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Studio:
    runs = tmp_path_factory.mktemp("runs")
    _run(runs, "centred", "dida", centre=True)
    _run(runs, "plain", "dida", centre=False)
    _run(runs, "mic_centred", "dida_mic", centre=True, mic_lambda=0.5)
    _run(runs, "released", "dida", mode="released")
    studio = Studio(synthcity_tiny, [runs], None, data_preset="tiny", cache_dir=runs / "cache")
    yield studio
    studio.shutdown()


def _method_q(
    studio: Studio, run_id: str, feature: torch.Tensor, bank: torch.Tensor
) -> torch.Tensor:
    """The method's own tp-softmax: DIDA built from the run's config, ``DIDA.scores`` on the
    pixel's feature (1, D, 1, 1) and the bank, then ``temperature_softmax``."""
    run = studio.run(run_id)
    method = build_method(run.method, studio.model(run_id), MethodContext(), run.method_options)
    with torch.no_grad():
        scores = method.scores(feature[None, :, None, None], bank)
    return temperature_softmax(scores, TP)[0, :, 0, 0]


def test_options_come_from_the_method_config() -> None:
    assert method_config("dida", {"centre": True}).normalize is True
    assert method_config("dida", {"mode": "released"}).normalize is False


@pytest.mark.parametrize("run_id", ["run:centred", "run:mic_centred", "run:plain"])
def test_explain_q_equals_the_methods_computation(studio: Studio, run_id: str) -> None:
    options = studio.dida_options(run_id)
    assert options.centre == (run_id != "run:plain") and options.normalize
    explanation = studio.explain(run_id, 0, X, Y, TP)
    bank = studio.snapshot(run_id).features.float()
    assert bool((studio.snapshot(run_id).ages >= 0).all())  # a full bank: K' = K
    expected = _method_q(studio, run_id, explanation.feature, bank)
    torch.testing.assert_close(explanation.q, expected)
    sweep = studio.tp_sweep(run_id, 0, X, Y, (0.05, TP, 1.0))
    torch.testing.assert_close(sweep.q[1], expected)


def test_centre_changes_the_distribution(studio: Studio) -> None:
    centred = studio.explain("run:centred", 0, X, Y, TP)
    plain = studio.explain("run:plain", 0, X, Y, TP)
    torch.testing.assert_close(centred.feature, plain.feature)  # same model, same pixel
    assert (centred.q - plain.q).abs().max() > 1e-3
    mic = studio.explain("run:mic_centred", 0, X, Y, TP)
    torch.testing.assert_close(mic.q, centred.q)


def test_a_partly_written_bank_is_centred_on_its_written_slots(studio: Studio) -> None:
    explanation = studio.explain("run:centred", 0, X, Y, TP, snapshot=0)
    snapshot = studio.snapshot("run:centred", 0)
    written = snapshot.ages >= 0
    assert 0 < int(written.sum()) < len(written)
    method = build_method("dida", studio.model("run:centred"), MethodContext(), {"centre": True})
    active = snapshot.features.float()[written]  # the method's active slots
    with torch.no_grad():
        expected = method.scores(explanation.feature[None, :, None, None], active)[0, :, 0, 0]
    torch.testing.assert_close(explanation.similarities[written], expected)


def test_released_runs_are_explained_without_normalising(studio: Studio) -> None:
    options = studio.dida_options("run:released")
    assert (options.normalize, options.centre, options.scatter_alpha) == (False, False, 1.0)
    assert (options.mode, options.gather_from) == ("released", "student")
    assert studio.dida_options("run:plain")[4:] == ("paper", "teacher")
    explanation = studio.explain("run:released", 0, X, Y, TP)
    assert explanation.alpha == 1.0 and float(explanation.similarities.abs().max()) > 1.0


def test_temperature_view_names_the_runs_similarity(studio: Studio) -> None:
    _, summary = temperature.explain(studio, "run:centred", 0, X, Y, TP, -1, "cityscapes")
    assert "similarity (the run's config): cosine after centring on the bank mean" in summary
    assert "released" not in summary and "raw logits" not in summary  # paper mode: as shown
    _, summary = temperature.explain(studio, "run:released", 0, X, Y, TP, -1, "cityscapes")
    assert "dot product (not normalised)" in summary
    assert "trained in **released** mode" in summary and "**student's raw logits**" in summary
    _, tp_update = temperature.select_run(studio, "run:centred")
    assert tp_update["value"] == method_config("dida", {"centre": True}).tp


@pytest.mark.parametrize(
    "method, shown",
    [("dida", (True, False)), ("dida_mic", (True, True)), ("mic", (False, True)),
     ("daformer", (False, False)), ("source_only", (False, False))],
)  # fmt: skip
def test_train_tab_shows_the_option_groups_of_the_method(method: str, shown: tuple) -> None:
    dida, mic = train.option_groups(method)
    assert (dida["visible"], mic["visible"]) == shown


class _Started(Exception):
    """Raised by the fake ``Studio.train`` with the options it was given."""


@pytest.mark.parametrize(
    "method, expected",
    [
        ("dida_mic", {"bank_size": 38, "tp": 0.2, "ins_lambda": 0.5, "mask_ratio": 0.5,
                      "mask_patch": 8, "mic_lambda": 2.0}),
        ("mic", {"mask_ratio": 0.5, "mask_patch": 8, "mic_lambda": 2.0}),
        ("dida", {"bank_size": 38, "tp": 0.2, "ins_lambda": 0.5}),
        ("daformer", {}),
    ],
)  # fmt: skip
def test_train_start_passes_the_methods_options(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, method: str, expected: dict
) -> None:
    def fake_train(method, preset, iters, seed, options, *_):
        raise _Started(options)

    monkeypatch.setattr(studio, "train", fake_train)
    with pytest.raises(_Started) as started:
        train.start(studio, method, "tiny", 2, 0, "x", 38, 0.2, 0.5, train.SCRATCH, 0.5, 8, 2.0)
    options = started.value.args[0]
    assert options == expected
    method_config(method, options)  # valid options of that method's config


@pytest.mark.parametrize(
    "mode, weight, extra",
    [
        ("released", "confidence", {"mode": "released", "ins_weight": "confidence"}),
        ("paper", "confidence", {"ins_weight": "confidence"}),
        ("released", "uniform", {"mode": "released"}),
        (None, None, {}),  # cleared radios: the paper's defaults
    ],
)
def test_train_start_passes_the_mode_and_the_l_ins_weight(
    studio: Studio, monkeypatch: pytest.MonkeyPatch, mode, weight, extra: dict
) -> None:
    def fake_train(method, preset, iters, seed, options, *_):
        raise _Started(options)

    monkeypatch.setattr(studio, "train", fake_train)
    args = ("dida", "tiny", 2, 0, "x", 38, 0.2, 0.5, train.SCRATCH, 0.5, 8, 2.0, mode, weight)
    with pytest.raises(_Started) as started:
        train.start(studio, *args)
    options = started.value.args[0]
    assert options == {"bank_size": 38, "tp": 0.2, "ins_lambda": 0.5, **extra}
    config = method_config("dida", options)
    assert config.mode == (mode or "paper") and config.ins_weight == (weight or "uniform")


def test_an_unknown_mode_or_weight_is_refused_with_the_choices(studio: Studio) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match="DIDA mode must be one of paper, released"):
        train.dida_options(300, 0.1, 1.0, "official", "uniform")
    with pytest.raises(gr.Error, match="L_ins pixel weight must be one of uniform, confidence"):
        train.dida_options(300, 0.1, 1.0, "paper", 3)


def test_the_lambda_box_follows_the_modes_default() -> None:
    assert train.mode_lambda("released")["value"] == 0.5
    assert train.mode_lambda("paper")["value"] == 1.0
