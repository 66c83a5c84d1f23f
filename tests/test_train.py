"""The one training loop: smoke runs per method, checkpoint round-trip, resume, stop, CLI overrides."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dida import runs
from dida.data.pipeline import infinite_batches
from dida.data.uda import build_uda_data
from dida.inference import predict
from dida.methods.base import MethodContext
from dida.methods.registry import METHODS, build_method
from dida.model import SegModel
from dida.optim import build_optimizer
from dida.presets import preset_config
from dida.train import (
    TrainConfig,
    build_parser,
    cli_args,
    config_from_args,
    parse_overrides,
    train,
)


def _cfg(root: Path, method: str, **kw) -> TrainConfig:
    cfg = preset_config("tiny", method)
    data = replace(cfg.data, source_root=str(root), target_root=str(root), rcs=False)
    options = {"bank_size": 38} if method == "dida" else {}
    return replace(cfg, data=data, **{"method_options": options, **kw})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_step_smoke_run_per_method(method: str, synthcity_tiny: Path, tmp_path: Path) -> None:
    cfg = _cfg(synthcity_tiny, method, iters=2, checkpoint_interval=0)
    events = list(train(cfg, tmp_path / method))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "eval" in kinds
    run = tmp_path / method
    assert runs.read_status(run)["state"] == "finished"
    train_records = runs.read_metrics(run, "train")
    assert [r["it"] for r in train_records] == [1, 2]
    assert all(v == v for r in train_records for k, v in r.items() if k.startswith("loss_"))
    ev = runs.read_metrics(run, "eval")[-1]
    assert 0.0 <= ev["mIoU"]["19"] <= 1.0 and len(ev["IoU"]) == 19
    assert (run / runs.CHECKPOINT).exists() and (run / "README.md").exists()
    config = json.loads((run / runs.CONFIG).read_text())
    assert TrainConfig.from_dict(config).to_dict() == cfg.to_dict()


def test_checkpoint_reload_gives_identical_predictions(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    cfg = _cfg(synthcity_tiny, "source_only", iters=2)
    events = list(train(cfg, tmp_path / "r"))
    state, meta = runs.load_state(tmp_path / "r" / runs.MODEL)
    assert meta["it"] == 2
    fresh = SegModel(cfg.model)
    fresh.load_state_dict(state)
    x = torch.randn(1, 3, 64, 96)
    trained = events[-1]  # the loop's model is gone; rebuild it from checkpoint.safetensors instead
    full, _ = runs.load_state(trained.run_dir / runs.CHECKPOINT)
    other = SegModel(cfg.model)
    other.load_state_dict(full["model"])
    assert torch.equal(predict(fresh, x).logits, predict(other, x).logits)


@pytest.mark.parametrize("method", ["source_only", "dida"])
def test_a_resumed_run_trains_exactly_as_the_uninterrupted_one(
    method: str, synthcity_tiny: Path, tmp_path: Path
) -> None:
    """Same batches (draw-addressed data stream), same dropout / drop-path draws (the global RNG
    in the checkpoint), same mixing and augmentation (the method's generator): same losses and
    weights, bit for bit, whether or not the run was stopped at its checkpoint."""
    cfg = _cfg(synthcity_tiny, method, iters=4, checkpoint_interval=2)
    straight = [e for e in train(cfg, tmp_path / "a") if e.kind == "train"]
    calls = iter(range(100))
    stop = lambda: next(calls) >= 2  # noqa: E731  (stop before iteration index 2)
    first = list(train(cfg, tmp_path / "b", stop=stop))
    assert first[-1].kind == "stopped" and runs.read_status(tmp_path / "b")["state"] == "stopped"
    resumed = [e for e in train(cfg, tmp_path / "b") if e.kind == "train"]
    assert [e.it for e in resumed] == [3, 4]
    assert [e.lr for e in resumed] == pytest.approx([e.lr for e in straight[2:]])
    assert [e.losses for e in resumed] == [e.losses for e in straight[2:]]
    assert [r["it"] for r in runs.read_metrics(tmp_path / "b", "train")] == [1, 2, 3, 4]
    a, _ = runs.load_state(tmp_path / "a" / runs.MODEL)
    b, _ = runs.load_state(tmp_path / "b" / runs.MODEL)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_without_rng_state_still_resumes(synthcity_tiny: Path, tmp_path: Path) -> None:
    """Checkpoints written before session 18 hold no global RNG state: the run resumes on the
    seed's state (the same batches; other dropout draws)."""
    cfg = _cfg(synthcity_tiny, "source_only", iters=4, checkpoint_interval=2)
    calls = iter(range(100))
    list(train(cfg, tmp_path / "b", stop=lambda: next(calls) >= 2))
    path = tmp_path / "b" / runs.CHECKPOINT
    state, meta = runs.load_state(path)
    assert set(state["rng"]) == {"cpu"}
    runs.save_state(path, {k: v for k, v in state.items() if k != "rng"}, meta)
    resumed = [e.it for e in train(cfg, tmp_path / "b") if e.kind == "train"]
    assert resumed == [3, 4] and runs.read_status(tmp_path / "b")["state"] == "finished"


def test_a_run_started_from_weights_resumes_without_the_weights_file(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    base = _cfg(synthcity_tiny, "source_only", iters=2, checkpoint_interval=0)
    list(train(base, tmp_path / "init"))
    init = tmp_path / "init.safetensors"
    (tmp_path / "init" / runs.MODEL).rename(init)
    cfg = replace(base, iters=4, checkpoint_interval=2)
    cfg = replace(cfg, model=replace(cfg.model, init_weights=str(init)))
    calls = iter(range(100))
    list(train(cfg, tmp_path / "b", stop=lambda: next(calls) >= 2))
    init.unlink()  # the start weights are gone: the checkpoint is all a resume needs
    resumed = [e.it for e in train(cfg, tmp_path / "b") if e.kind == "train"]
    assert resumed == [3, 4] and runs.read_status(tmp_path / "b")["state"] == "finished"


def test_dida_run_writes_a_bank_history_that_round_trips(
    synthcity_tiny: Path, tmp_path: Path
) -> None:
    from dida.bank import BankHistory

    cfg = _cfg(synthcity_tiny, "dida", iters=3)
    list(train(cfg, tmp_path / "d"))
    history = BankHistory.load(tmp_path / "d" / "bank_history.safetensors")
    assert len(history) >= 1 and history.iterations[0] == 0
    snap = history[len(history) - 1]
    assert snap.features.shape == (38, cfg.model.embed_dim) and snap.labels.shape == (38,)


def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(synthcity_tiny: Path) -> None:
    cfg = _cfg(synthcity_tiny, "source_only", method_options={"photometric": False})
    torch.manual_seed(0)
    data = build_uda_data(cfg.data, seed=0)
    batch = next(data.batches())
    model = SegModel(cfg.model)
    method = build_method(
        "source_only", model, MethodContext(crop=(64, 64)), {"photometric": False}
    )
    opt = build_optimizer(model, replace(cfg.optim, lr=2e-3, warmup_iters=0))
    losses = []
    for it in range(15):
        loss = method.step(batch, it)["loss_source"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.8


def test_cli_overrides_reach_the_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--method", "dida", "--preset", "tiny", "--iters", "7", "--seed", "3", "--data", str(tmp_path),
         "--set", "method.tp=0.2", "--set", "model.embed_dim=64", "--set", "data.rcs=false"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.iters, cfg.seed, cfg.method_options["tp"], cfg.model.embed_dim) == (7, 3, 0.2, 64)
    assert cfg.data.source_root == str(tmp_path) and cfg.data.rcs is False
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["oops"])


def test_cli_args_rebuild_the_config_they_describe(tmp_path: Path) -> None:
    base = preset_config("tiny", "dida")
    data = replace(
        base.data, source_root=str(tmp_path / "my data"), target_root="123", crop=(64, 96)
    )
    options = {"tp": 0.2, "alignment": "labels", "ins_lambda": None}
    cfg = replace(base, data=data, iters=7, seed=3, method_options=options, eval_interval=0)
    args = cli_args(cfg, "tiny", "name", tmp_path)
    assert args[args.index("--runs") + 1] == str(tmp_path) and "--iters" in args
    assert 'data.target_root="123"' in args and "method.ins_lambda=null" in args
    assert config_from_args(build_parser().parse_args(args)).to_dict() == cfg.to_dict()
    unchanged = cli_args(base, "tiny", "name", tmp_path)
    assert "--set" not in unchanged


def test_ranks_draw_different_batches(synthcity_tiny: Path) -> None:
    cfg = _cfg(synthcity_tiny, "source_only")
    a = next(infinite_batches(build_uda_data(cfg.data, 0, 0, 2).source, 2, 0, 0, 2))
    b = next(infinite_batches(build_uda_data(cfg.data, 0, 1, 2).source, 2, 0, 1, 2))
    assert not torch.equal(a["image"], b["image"])


def test_oracle_crops_are_drawn_like_source_crops(synthcity_tiny: Path) -> None:
    cfg = replace(_cfg(synthcity_tiny, "oracle").data, rcs=True)
    plain = build_uda_data(cfg, target_labels=False)
    oracle = build_uda_data(cfg, target_labels=True)
    assert plain.target.sampler is None and plain.target.config.cat_max_ratio == 1.0
    assert oracle.target.sampler is not None
    assert oracle.target.config.cat_max_ratio == cfg.cat_max_ratio
    assert "label" in oracle.target[0]


def test_train_records_log_peak_memory(synthcity_tiny: Path, tmp_path: Path) -> None:
    cfg = _cfg(synthcity_tiny, "source_only", iters=2, checkpoint_interval=0)
    list(train(cfg, tmp_path / "run"))
    peaks = [r["peak_mem_mb"] for r in runs.read_metrics(tmp_path / "run", "train")]
    assert len(peaks) == 2 and 50 < peaks[0] <= peaks[1] < 24 * 1024
