"""``python -m dida.bench.ship``: a finished run becomes a shipped checkpoint folder the app can open."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dida import runs
from dida.bank import BankHistory
from dida.bench.scores import recorded_cost
from dida.bench.ship import EXPECTED, half_state, ship_run, slice_miou
from dida.data.uda import target_val_images
from dida.presets import preset_config
from dida.train import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_dida_run(synthcity_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = preset_config("tiny", "dida", method_options={"bank_size": 38})
    data = replace(
        cfg.data, source_root=str(synthcity_tiny), target_root=str(synthcity_tiny), rcs=False
    )
    run = tmp_path_factory.mktemp("runs") / "dida_s0"
    list(train(replace(cfg, data=data, iters=3, checkpoint_interval=0), run))
    return run


def test_ship_exports_half_weights_card_bank_and_expected_score(
    tiny_dida_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """... and the bank history thinned to the shipped number of snapshots (2 here: first and last)."""
    monkeypatch.setattr("dida.bench.ship.SHIPPED_SNAPSHOTS", 2)
    folder = ship_run(tiny_dida_run, tmp_path, "dida")
    state, _ = runs.load_state(folder / runs.MODEL)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    run_history = BankHistory.load(tiny_dida_run / runs.BANK_HISTORY)
    shipped = BankHistory.load(folder / runs.BANK_HISTORY)
    assert len(run_history) > 2 and shipped.iterations == run_history.thinned(2).iterations
    last = run_history[-1]
    assert torch.equal(shipped[-1].features, last.features) and shipped[0].iteration == 0
    val = target_val_images(TrainConfig.from_dict(runs.read_json(folder / runs.CONFIG)).data)
    expected = runs.read_json(folder / EXPECTED)
    assert slice_miou(folder, val) == pytest.approx(expected["mIoU"], abs=1e-9)
    miou = runs.run_info(folder).miou
    text = (folder / "MODEL_CARD.md").read_text()
    assert f"**{100 * miou:.1f}**" in text
    cost = recorded_cost(tiny_dida_run)
    assert cost is not None and cost["train_cpu_s"] > 0
    hardware = runs.read_json(tiny_dida_run / runs.CONFIG)["environment"]["hardware"]
    assert f"- Training cost: {cost['train_cpu_s'] / 3600:.2f} CPU-hours" in text
    assert f"on {hardware}" in text and hardware.endswith("threads)")
    fp32 = runs.load_run_model(tiny_dida_run)
    fp16 = runs.load_run_model(folder)
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(fp16(x).logits, fp32(x).logits, atol=0.05, rtol=0.05)


def test_half_state_keeps_integer_buffers(tiny_dida_run: Path) -> None:
    state = half_state(tiny_dida_run / runs.MODEL)
    ints = [k for k, v in state.items() if not v.is_floating_point()]
    assert ints and all(state[k].dtype == torch.int64 for k in ints)  # BN num_batches_tracked


def test_an_unfinished_run_is_refused(tiny_dida_run: Path, tmp_path: Path) -> None:
    runs.write_status(tiny_dida_run, "running")
    try:
        with pytest.raises(runs.RunError, match="not a finished run"):
            ship_run(tiny_dida_run, tmp_path, "dida")
    finally:
        runs.write_status(tiny_dida_run, "finished")


def test_ship_finds_the_showcase_models_and_the_main_suite_runs() -> None:
    from dida.bench.ship import SHOWCASE_SHIPPED, _sources, parse_args, showcase_runs
    from dida.bench.showcase import SHOWCASE_RECIPE

    found = showcase_runs(Path("/b"))
    assert list(found) == list(SHOWCASE_SHIPPED)
    assert found["mic"] == Path("/b/showcase/mic_s0")
    assert found["source_only"] == Path(f"/b/curves/source_only_{SHOWCASE_RECIPE}")
    assert found["oracle"] == Path(f"/b/curves/oracle_{SHOWCASE_RECIPE}")
    assert found["dida"] == Path("/b/showcase/dida_s0")
    assert _sources(parse_args(["--suite", "showcase"])) == showcase_runs(Path("runs/bench"))
    main = _sources(parse_args(["--names", "dida_s0", "dida_released_s0", "other_s3"]))
    assert main == {"dida": Path("runs/bench/main/dida_s0"),
                    "dida_released": Path("runs/bench/main/dida_released_s0"),
                    "other_s3": Path("runs/bench/main/other_s3")}  # fmt: skip
    some = _sources(parse_args(["--suite", "showcase", "--names", "oracle", "dida"]))
    assert some == {"oracle": Path(f"runs/bench/curves/oracle_{SHOWCASE_RECIPE}"),
                    "dida": Path("runs/bench/showcase/dida_s0")}  # fmt: skip
    assert set(_sources(parse_args(["--names", "daformer_s0"]))) == {"daformer"}
    with pytest.raises(ValueError, match="not a shipped showcase model: \\['dida_mic'\\]"):
        showcase_runs(Path("/b"), ["oracle", "dida_mic"])


def test_a_warm_started_models_card_counts_its_starting_models_hours(tiny_dida_run: Path) -> None:
    from dida.bench.ship import card, init_cost

    cost = recorded_cost(tiny_dida_run)
    assert init_cost(tiny_dida_run / runs.MODEL) == cost
    records = [r for r in runs.read_metrics(tiny_dida_run, "train") if r["it"] <= 2]
    at_two = init_cost(tiny_dida_run / "snapshots" / "model_000002.safetensors")
    assert at_two == {k: records[-1][k] for k in ("train_cpu_s", "train_wall_s")}
    assert init_cost(Path("/nowhere/model.safetensors")) is None

    config = runs.read_json(tiny_dida_run / runs.CONFIG)
    config["model"]["init_weights"] = str(tiny_dida_run / runs.MODEL)
    metrics = {"mIoU": {"19": 0.5}, "IoU": {"road": 0.9}}
    text = card("dida", config, "dida_s0", metrics, 0.4, cost, suite="showcase")
    total = 2 * cost["train_cpu_s"] / 3600
    assert f"**{total:.2f} CPU-hours in all**" in text
    assert "- Trained by: `python -m dida.bench --suite showcase` (run `dida_s0`)" in text


def test_a_model_started_from_a_shipped_checkpoint_counts_the_hours_its_card_states(
    tmp_path: Path,
) -> None:
    """A shipped folder keeps no train records: the start's cost is the one its card states, and
    a start inside the repository is shown relative to it."""
    from dida.bench.ship import REPO, _init_line, card_cost, init_cost, reproduce_command

    shipped = tmp_path / "source_only"
    shipped.mkdir()
    assert init_cost(shipped / runs.MODEL) is None  # no card yet
    (shipped / "MODEL_CARD.md").write_text(
        "# source_only\n\n- Training cost: 3.04 CPU-hours (5.46 h wall), on AMD EPYC\n"
    )
    assert card_cost(shipped) == {"train_cpu_s": pytest.approx(3.04 * 3600)}
    assert init_cost(shipped / runs.MODEL) == card_cost(shipped)
    assert init_cost(shipped / "snapshots" / "model_000002.safetensors") is None
    line = _init_line(str(shipped / runs.MODEL), {"train_cpu_s": 3.01 * 3600})[0]
    assert "3.04 CPU-hours of training" in line and "**6.05 CPU-hours in all**" in line
    inside = REPO / "assets" / "checkpoints" / "source_only" / runs.MODEL
    shown = _init_line(str(inside), None)[0]
    assert shown.startswith("- Starts from `assets/checkpoints/source_only/model.safetensors` (")
    command = f"python -m dida.train --method mic --set model.init_weights={inside}"
    assert reproduce_command(command).endswith(
        "model.init_weights=assets/checkpoints/source_only/model.safetensors"
    )


def test_the_card_names_the_suite_that_trained_the_runs() -> None:
    from dida.bench.ship import _suite, parse_args

    assert _suite(parse_args([])) == "main"
    assert _suite(parse_args(["--suite", "showcase"])) == "showcase"
    assert _suite(parse_args(["--runs", "runs/bench/fidelity"])) == "fidelity"
    assert _suite(parse_args(["--runs", "/somewhere/else"])) == "main"


def test_the_card_gives_the_whole_schedules_command_when_a_budget_stopped_a_part() -> None:
    from dida.bench.ship import card, reproduce_command

    base = "python -m dida.train --method oracle --seed 0 --set iters=27000"
    assert reproduce_command(f"{base} --stop-cpu-h 0.5") == base
    assert reproduce_command(f"{base} --stop-cpu-h=1") == base
    assert reproduce_command(base) == base
    config = {
        "method": {"name": "oracle", "options": {}},
        "command": f"{base} --stop-cpu-h 0.5",
        "seed": 0,
        "iters": 27000,
        "data": {"synthcity_preset": "default", "crop": [256, 256], "batch_size": 2},
        "model": {"backbone": "mit_b0", "embed_dim": 32},
    }
    text = card("oracle", config, "oracle_d32", {"mIoU": {"19": 0.7}, "IoU": {}}, 0.6)
    assert f"i.e. `{base}` (recorded with `--stop-cpu-h 0.5`" in text
    config["command"] = base
    assert f"i.e. `{base}`\n" in card(
        "oracle", config, "oracle_d32", {"mIoU": {"19": 0.7}, "IoU": {}}, 0.6
    )
